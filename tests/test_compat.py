"""ctipc.compat, the node_ipc addon's flat API, with real separate processes.

"A" is this test process, using ``compat`` itself; "B" and the workers are
separate interpreters (``Child``) that know nothing of A but the names.  A's
compat state is per process, so every test ends with ``process_exit()`` (the
``here`` fixture) and the autouse leak checks then find no object, fd or
listener thread left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest
from helpers import DEADLINE, HAVE_DEV_SHM, Child, entries_of

import ctipc
from ctipc import compat


@pytest.fixture
def here() -> Iterator[None]:
    """compat in this process; whatever a test left open is closed after it."""
    try:
        yield
    finally:
        compat.process_exit()


def assert_no_entries(*names: str) -> None:
    if HAVE_DEV_SHM:
        left = {n: entries_of(n) for n in names if entries_of(n)}
        assert not left, f"/dev/shm entries remain: {left}"


def assert_entries(*names: str) -> None:
    if HAVE_DEV_SHM:
        for n in names:
            assert entries_of(n), f"{n!r} has no /dev/shm entry"


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``condition`` (another thread's progress) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        time.sleep(0.005)


# -- semaphores ----------------------------------------------------------------------

SEM_B = """
from ctipc import compat
n = sys.argv[1]
for call in (compat.sem_open, compat.sem_release, compat.sem_require):
    try:
        call(n)
    except FileNotFoundError:
        out("missing")
    else:
        out("found?!")
inp()
compat.sem_release(n)  # B never created it: opens it by name
out("released")
inp()
compat.sem_release(n)
out("released")
inp()
compat.process_exit()
out("closed")
"""


def test_semaphore_released_by_a_process_that_never_created_it(here: None, name: str) -> None:
    with pytest.raises(FileNotFoundError):
        compat.sem_open(name)
    with pytest.raises(FileNotFoundError):
        compat.sem_release(name)
    with Child(SEM_B, name) as b:
        for _ in range(3):  # exists nowhere yet: B can neither open, release nor take it
            b.expect("missing")

        compat.sem_create(name)
        compat.sem_create(name)  # already open here: nothing changes
        assert compat.sem_require(name) is True  # the only permit
        assert compat.sem_require(name, timeout=0.05) is False

        results: list[bool] = []
        waiter = threading.Thread(
            target=lambda: results.append(compat.sem_require(name, timeout=5)), daemon=True
        )
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not results, "require did not wait for a permit"
        b.send()
        b.expect("released")
        waiter.join(DEADLINE)
        assert results == [True], "A's second require did not get B's permit"
        assert compat.sem_require(name, timeout=0.05) is False  # B released only one

        # sem_close forgets the handle; the next call reopens the same
        # semaphore by name (B still has it open, so it lives).
        compat.sem_close(name)
        compat.sem_close(name)  # idempotent
        compat.sem_close("never-opened-here")
        assert_entries(name)
        b.send()
        b.expect("released")
        assert compat.sem_require(name, timeout=5) is True  # reopened: B's permit
        assert compat.sem_require(name, timeout=0.05) is False
        compat.sem_open(name)  # open already: nothing changes

        b.send()
        b.expect("closed")
        b.finish()
    assert_entries(name)  # A still has it
    compat.sem_close(name)  # last one out: removed
    assert_no_entries(name)
    with pytest.raises(FileNotFoundError):
        compat.sem_open(name)
    with pytest.raises(FileNotFoundError):
        compat.sem_require(name, timeout=0)


def test_sem_create_opens_an_existing_semaphore(here: None, name: str) -> None:
    code = """
    from ctipc import compat
    compat.sem_create(sys.argv[1])
    out("created")
    inp()
    compat.process_exit()
    """
    with Child(code, name) as b:
        b.expect("created")
        compat.sem_create(name)  # B's, with its one permit
        assert compat.sem_require(name, timeout=5) is True
        assert compat.sem_require(name, timeout=0.05) is False
        compat.sem_release(name)
        b.send()
        b.finish()
    compat.process_exit()
    assert_no_entries(name)


# -- shared memory -------------------------------------------------------------------

SHM_B = """
from ctipc import compat
n, other = sys.argv[1:3]
try:
    compat.shm_create(n, 64)  # A created it
except FileExistsError:
    out("exists")
# never shm_open: the reads open it by name
out(repr(compat.shm_read_str(n, 0, 64)))
out(repr(compat.shm_read_buf(n, 0, 5)))
out(repr(compat.shm_read_buf(n, 64, 0)))
for offset, length in ((60, 5), (0, 65), (65, 0), (-1, 1), (0, -1)):
    try:
        compat.shm_read_buf(n, offset, length)
    except ValueError:
        out("ValueError")
    else:
        out(f"read {offset} {length}?!")
try:
    compat.shm_read_str(n, 1, 64)
except ValueError:
    out("ValueError")
try:
    compat.shm_read_buf(other, 0, 1)
except FileNotFoundError:
    out("missing")
out(compat.shm_write_str(n, 8, "wörld"))
inp()
compat.process_exit()
"""


def test_shared_memory_read_by_name_in_another_process(
    here: None, new_name: Callable[..., str]
) -> None:
    n, missing = new_name(), new_name()
    compat.shm_create(n, 64)
    assert compat.shm_write_str(n, 0, "hello") == 6  # UTF-8 + NUL
    with Child(SHM_B, n, missing) as b:
        b.expect("exists")
        b.expect("'hello'")
        b.expect("b'hello'")
        b.expect("b''")
        for _ in range(6):
            b.expect("ValueError")
        b.expect("missing")
        b.expect("7")
        assert compat.shm_read_str(n, 8, 56) == "wörld"  # B's write, seen here
        assert compat.shm_read_buf(n, 0, 6) == b"hello\0"
        b.send()
        b.finish()
    assert_entries(n)  # A still has it
    assert_no_entries(missing)  # a read of a missing name created nothing
    compat.shm_close(n)
    compat.shm_close(n)
    assert_no_entries(n)
    with pytest.raises(FileNotFoundError):
        compat.shm_read_str(n, 0, 1)


SHM_OPEN = """
from ctipc import compat
n, fresh = sys.argv[1:3]
compat.shm_open(n, 64)  # exists: opened
out(compat.shm_read_str(n, 0, 64))
compat.shm_open(fresh, 32)  # missing: created
compat.shm_write_str(fresh, 0, "made by C")
out("ready")
inp()
compat.process_exit()
"""


def test_shm_open_opens_or_creates(here: None, new_name: Callable[..., str]) -> None:
    n, fresh = new_name(), new_name()
    compat.shm_open(n, 64)  # missing: created here
    compat.shm_write_str(n, 0, "made by A")
    with Child(SHM_OPEN, n, fresh) as c:
        assert c.readline() == "made by A"
        c.expect("ready")
        with pytest.raises(FileExistsError):
            compat.shm_create(fresh, 32)  # C created it
        with pytest.raises(ctipc.IncompatibleError):
            compat.shm_open(fresh, 128)  # exists with 32 bytes
        compat.shm_open(fresh, 32)
        assert compat.shm_read_str(fresh, 0, 32) == "made by C"
        c.send()
        c.finish()
    assert_entries(n, fresh)  # A has both open
    compat.process_exit()
    assert_no_entries(n, fresh)


# -- message queues ----------------------------------------------------------------

MQ_WORKER = """
from ctipc import compat
n, number, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    compat.mq_publish(0, "x")  # nothing established here yet
except ValueError:
    out("no index")
index = compat.mq_establish(n)
assert compat.mq_establish(n) == index  # the same queue: the same index
out("established")
inp()
for i in range(count):
    text = f"worker {number} message {i} héllo ✓"
    compat.mq_publish(index, text if i % 2 else text.encode("utf-8"))
compat.process_exit()
out("done")
"""

WORKERS = 3
MESSAGES = 25


def test_workers_publish_master_listens(here: None, name: str) -> None:
    index = compat.mq_create(name)
    assert compat.mq_create(name) == index
    assert compat.mq_establish(name) == index
    received: list[object] = []
    arrived = threading.Event()

    def on_message(text: str) -> None:
        received.append(text)
        if len(received) == WORKERS * MESSAGES:
            arrived.set()

    listener = compat.mq_listen(on_message, index)
    assert listener.running
    workers = [Child(MQ_WORKER, name, i, MESSAGES) for i in range(WORKERS)]
    try:
        for w in workers:
            w.expect("no index")
            w.expect("established")
        for w in workers:  # all publish at once
            w.send()
        for w in workers:
            w.expect("done")
            w.finish()
    finally:
        for w in workers:
            w.close()
    assert arrived.wait(DEADLINE), f"{len(received)} of {WORKERS * MESSAGES} messages arrived"
    assert all(type(m) is str for m in received), "the callback must get str"
    for number in range(WORKERS):
        mine = [m for m in received if isinstance(m, str) and m.startswith(f"worker {number} ")]
        assert mine == [f"worker {number} message {i} héllo ✓" for i in range(MESSAGES)]
    assert len(received) == WORKERS * MESSAGES


def test_mq_errors(here: None, name: str, new_name: Callable[..., str]) -> None:
    missing = new_name()
    with pytest.raises(FileNotFoundError):
        compat.mq_establish(missing)
    with pytest.raises(ValueError):
        compat.mq_publish(0, "x")
    with pytest.raises(ValueError):
        compat.mq_listen(lambda text: None, 0)
    index = compat.mq_create(name)
    for unknown in (index + 1, -1, 99):
        with pytest.raises(ValueError):
            compat.mq_publish(unknown, "x")
        with pytest.raises(ValueError):
            compat.mq_listen(lambda text: None, unknown)
    code = """
    from ctipc import compat
    try:
        compat.mq_establish(sys.argv[1])
    except FileNotFoundError:
        out("missing")
    """
    with Child(code, missing) as c:
        c.expect("missing")
        c.finish()
    compat.process_exit()
    assert_no_entries(name, missing)


# -- process_exit ----------------------------------------------------------------------

HOLDER = """
from ctipc import compat
sem, shm, mq = sys.argv[1:4]
compat.sem_open(sem)
out(compat.shm_read_str(shm, 0, 64))
index = compat.mq_establish(mq)
compat.mq_publish(index, "from B")
out("opened")
inp()
compat.sem_release(sem)
compat.shm_write_str(shm, 0, "B was here")
compat.mq_publish(index, "after A left")
compat.process_exit()
out("closed")
"""


@pytest.mark.parametrize("last", ["this process", "the other process"])
def test_process_exit_closes_everything(
    here: None, new_name: Callable[..., str], last: str
) -> None:
    sem, shm, mq = new_name(), new_name(), new_name()
    compat.sem_create(sem)
    compat.shm_create(shm, 64)
    compat.shm_write_str(shm, 0, "from A")
    index = compat.mq_create(mq)
    got: list[str] = []
    listener = compat.mq_listen(got.append, index)
    with Child(HOLDER, sem, shm, mq) as b:
        b.expect("from A")
        b.expect("opened")
        wait_for(lambda: len(got) == 1)
        assert got == ["from B"]
        if last == "this process":  # B leaves first: A's process_exit removes them
            b.send()
            b.expect("closed")
            b.finish()
            assert_entries(sem, shm, mq)
            wait_for(lambda: len(got) == 2)  # B's last message, still listened to
            assert compat.shm_read_str(shm, 0, 64) == "B was here"
            compat.process_exit()
            assert not listener.running
            assert_no_entries(sem, shm, mq)
        else:  # A leaves first: B still has them, they live and work
            compat.process_exit()
            assert not listener.running
            assert_entries(sem, shm, mq)
            b.send()  # B uses them after A left: nobody listens any more
            b.expect("closed")
            b.finish()
            assert_no_entries(sem, shm, mq)
    # This process's state is gone too: the index is unknown, names are
    # looked up afresh (and exist nowhere now).
    with pytest.raises(ValueError):
        compat.mq_publish(index, "x")
    with pytest.raises(FileNotFoundError):
        compat.sem_require(sem, timeout=0)
    with pytest.raises(FileNotFoundError):
        compat.shm_read_buf(shm, 0, 1)
    with pytest.raises(FileNotFoundError):
        compat.mq_establish(mq)
    assert got == (["from B", "after A left"] if last == "this process" else ["from B"])
    compat.process_exit()  # nothing open: nothing to do


IN_CALLBACK = """
import threading
from ctipc import compat
n, s = sys.argv[1:3]
index = compat.mq_create(n)
compat.sem_create(s)
called = threading.Event()
errors = []

def on_message(text):
    try:
        compat.process_exit()  # e.g. on a "quit" message
    except Exception as e:
        errors.append(repr(e))
    finally:
        called.set()

compat.mq_listen(on_message, index)
compat.mq_publish(index, "quit")
out("called" if called.wait(10) else "no callback")
out(repr(errors))
inp()
"""


def test_process_exit_from_a_listener_callback(new_name: Callable[..., str]) -> None:
    # In a child: if it fails, what it abandons dies with it, not with pytest.
    n, s = new_name(), new_name()
    with Child(IN_CALLBACK, n, s, warnings_error=False) as child:
        child.expect("called")
        errors = child.readline()
        left = {x: entries_of(x) for x in (n, s)} if HAVE_DEV_SHM else {}
        child.send()
        child.finish()
    assert errors == "[]", f"process_exit() in a callback raised {errors}"
    assert not any(left.values()), f"process_exit() in a callback left {left} open"
