r"""Portability: the code paths of other systems, restricted hosts, fork, threads.

* macOS's paths on Linux: children started with ``CTIPC_EMULATE=macos`` take
  the POSIX backend's macOS code paths (polled timed waits, no semaphore
  value, the flock()+owner-record Lock, segment lock files in /tmp, no
  listing).  Every process of such a scenario is emulated: emulated and
  ordinary processes never share an object (their Locks differ), so this
  test process only looks at the files in /dev/shm and /tmp.
* Embedded and restricted hosts: ``python -I -S`` with no ``HOME`` and a
  ``TMPDIR`` that does not exist, every primitive used from a non-main
  thread, and processes that end with ``os._exit`` (no atexit).
* fork: a forked child uses, or closes, the objects it inherited.
* Threads: one object of each kind used from 8 threads at once.
* Windows names: ``Global\`` / ``Local\`` namespaces (``_names``, checked here
  with the backend's ``NAMESPACES`` set as on Windows), and an ordinary name elsewhere.

Cross-process parts run in separate interpreters (``helpers.Child``) and
synchronise over lines on stdin/stdout or pipes, each wait with a deadline.
"""

from __future__ import annotations

import glob
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from helpers import (
    _PRELUDE,
    ALL_KINDS,
    DEADLINE,
    HAVE_DEV_SHM,
    HAVE_FORK,
    HAVE_SIGKILL,
    PACKAGE_ROOT,
    Child,
    child_env,
    entries_of,
    exists,
)

import ctipc
from ctipc import _names
from ctipc._backend import os_backend

needs_posix = pytest.mark.skipif(
    sys.platform == "win32", reason="CTIPC_EMULATE emulates macOS in the POSIX backend"
)
needs_fork = pytest.mark.skipif(not HAVE_FORK, reason="no os.fork here")
needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")
needs_sigint = pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="no SIGINT here")
needs_dev_shm = pytest.mark.skipif(not HAVE_DEV_SHM, reason="no /dev/shm to look at")

#: the environment that makes a child take macOS's code paths
EMULATE = {"CTIPC_EMULATE": "macos"}
#: where emulated processes keep their lock files (ctipc._posix_ffi._LOCK_DIR)
LOCK_DIR = "/tmp"
#: emulated or not, for scenarios whose processes are all started here
MODES = pytest.mark.parametrize("mode", ["native", "macos"])

#: /dev/shm entries of one name with every kind open: four header segments,
#: the Semaphore's OS semaphore and the queue's two wake-up semaphores
ALL_ENTRIES = 7

#: child code that opens one object of each kind called ``sys.argv[1]``
OPEN_ALL = """
    name = sys.argv[1]
    sem = ctipc.Semaphore(name, initial=1)
    lock = ctipc.Lock(name)
    shm = ctipc.SharedMemory(name, 64)
    q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
    objs = [sem, lock, shm, q]
"""


def env_of(mode: str) -> dict[str, str]:
    if mode == "macos" and sys.platform == "win32":
        pytest.skip("CTIPC_EMULATE emulates macOS in the POSIX backend")
    return dict(EMULATE) if mode == "macos" else {}


def digest(name: str) -> str:
    """The part every OS name of objects called ``name`` ends with."""
    return _names.os_name("s", "h", name).rsplit("-", 1)[1]


def lock_dir_files(name: str, suffix: str) -> list[str]:
    """Files ending in ``suffix`` that emulated processes keep in /tmp for
    objects called ``name`` (``.lock``: segment locks, ``.mutex``: Locks)."""
    pattern = os.path.join(LOCK_DIR, f"ctipc-??-{digest(name)}.*")
    return sorted(p for p in glob.glob(pattern) if p.endswith(suffix))


def assert_gone_everywhere(name: str) -> None:
    """No /dev/shm entry and no /tmp mutex file of ``name`` is left."""
    if HAVE_DEV_SHM:
        assert entries_of(name) == []
    assert lock_dir_files(name, ".mutex") == []


@pytest.fixture
def emulated_names(new_name: Callable[..., str]) -> Iterator[Callable[[], str]]:
    """``make()`` → a unique name for an emulated scenario.  Afterwards the
    /tmp lock files of those names are removed: emulated processes never
    remove their ``.lock`` files (by design), and a failed test may leave
    ``.mutex`` files."""
    made: list[str] = []

    def make() -> str:
        made.append(new_name())
        return made[-1]

    yield make
    for n in made:
        for path in lock_dir_files(n, ""):
            if path.endswith((".lock", ".mutex")):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


@pytest.fixture
def ename(emulated_names: Callable[[], str]) -> str:
    """A unique name whose /tmp lock files are removed after the test."""
    return emulated_names()


def emulated(code: str, *args: object) -> Child:
    """A child interpreter that takes macOS's code paths."""
    return Child(code, *args, **EMULATE)


def seconds(text: str) -> float:
    return float(text)


def done(child: Child) -> None:
    """Let a child that waits for a last line go, and require exit code 0."""
    child.send()
    child.finish()


# ======================================================================================
# 1. macOS's code paths on Linux (CTIPC_EMULATE=macos)


@needs_posix
def test_emulated_child_has_none_of_the_linux_capabilities(ename: str) -> None:
    code = """
        from ctipc._backend import os_backend
        out(ctipc.TIMED_WAIT_NATIVE, ctipc.SEMAPHORE_VALUE_READABLE, ctipc.ROBUST_LOCK,
            os_backend.CAN_LIST, os_backend.MUTEX_ABI)
    """
    with emulated(code) as child:
        child.expect("False False False False flock-v1")
        child.finish()


@needs_posix
@pytest.mark.parametrize("command", ["ls", "gc"])
def test_emulated_command_line_cannot_list(command: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "ctipc", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(**EMULATE),
        timeout=DEADLINE,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot list" in proc.stderr


@needs_posix
def test_emulated_semaphore_times_out_by_polling_and_has_no_value(ename: str) -> None:
    code = """
        sem = ctipc.Semaphore(sys.argv[1], initial=0)
        out(sem.value)
        start = time.monotonic()
        ok = sem.acquire(timeout=0.3)
        out(ok, time.monotonic() - start)
        sem.release()
        out(sem.acquire(timeout=0.3), sem.acquire(blocking=False), sem.value)
        out(repr(sem))
        sem.close()
    """
    with emulated(code, ename) as child:
        child.expect("None")
        ok, took = child.readline().split()
        assert ok == "False"
        assert 0.25 <= seconds(took) < 5
        child.expect("True False None")
        child.expect(f"<ctipc.Semaphore name={ename!r} open>")
        child.finish()
    assert_gone_everywhere(ename)


SEM_WAITER = """
    sem = ctipc.Semaphore(sys.argv[1], initial=0)
    out("waiting")
    ok = sem.acquire({args})
    out(f"acquired {{ok}} {{sem.value}}")
    sem.close()
"""

SEM_RELEASER = """
    sem = ctipc.Semaphore(sys.argv[1], create=False)
    out(f"attached {sem.value}")
    inp()
    sem.release()
    out("released")
    sem.close()
"""


@needs_posix
@pytest.mark.parametrize("args", ["", "timeout=60"])
def test_emulated_blocked_acquire_is_woken_by_another_emulated_process(
    ename: str, args: str
) -> None:
    with emulated(SEM_WAITER.format(args=args), ename) as waiter:
        waiter.expect("waiting")
        with emulated(SEM_RELEASER, ename) as releaser:
            releaser.expect("attached None")
            assert waiter.silent_for(0.3), "acquire() did not block"
            releaser.send()
            releaser.expect("released")
            waiter.expect("acquired True None")
            releaser.finish()
        waiter.finish()
    assert_gone_everywhere(ename)


COUNT_UNDER_LOCK = """
    shm = ctipc.SharedMemory(sys.argv[1], 16)
    lock = ctipc.Lock(sys.argv[1])
    rounds = int(sys.argv[2])
    out("ready")
    inp()
    buf = shm.buf
    for i in range(rounds):
        with lock:
            if buf[8]:
                raise SystemExit("another process is inside the lock")
            buf[8] = 1
            value = int.from_bytes(buf[0:8], "little")
            if i % 4 == 0:
                time.sleep(0)  # widen the window a lost update needs
            buf[0:8] = (value + 1).to_bytes(8, "little")
            buf[8] = 0
    out("done")
    inp()
    with lock:
        out(int.from_bytes(buf[0:8], "little"))
    inp()
    lock.close()
    shm.close()
"""


@needs_posix
def test_emulated_lock_excludes_three_emulated_processes(ename: str) -> None:
    rounds, procs = 300, 3
    children = [emulated(COUNT_UNDER_LOCK, ename, rounds) for _ in range(procs)]
    try:
        for c in children:
            c.expect("ready")
        for c in children:
            c.send()
        for c in children:
            c.expect("done", timeout=60)
        for c in children:
            c.send()
            c.expect(str(procs * rounds))
        for c in children:
            done(c)
    finally:
        for c in children:
            c.close()
    assert_gone_everywhere(ename)


LOCK_HOLDER = """
    lock = ctipc.Lock(sys.argv[1])
    lock.acquire()
    out("held")
    inp()
    lock.release()
    out("released")
    inp()
    lock.close()
"""


@needs_posix
@needs_sigkill
def test_emulated_lock_of_a_sigkilled_holder_is_taken_over(ename: str) -> None:
    taker_code = """
        lock = ctipc.Lock(sys.argv[1], create=False)
        out(lock.acquire(timeout=0.1))
        inp()
        start = time.monotonic()
        ok = lock.acquire(timeout=5)
        out(ok, lock.owner_died, time.monotonic() - start)
        lock.release()
        ok = lock.acquire(timeout=5)
        out(ok, lock.owner_died)
        lock.release()
        lock.close()
    """
    with emulated(LOCK_HOLDER, ename) as holder:
        holder.expect("held")
        with emulated(taker_code, ename) as taker:
            taker.expect("False")  # held by the other process
            holder.kill()  # SIGKILL, reaped
            taker.send()
            ok, died, took = taker.readline().split()
            assert (ok, died) == ("True", "True")
            assert seconds(took) < 3
            taker.expect("True False")
            taker.finish()
    assert_gone_everywhere(ename)


@needs_posix
def test_emulated_release_of_a_lock_not_held_raises_runtime_error(ename: str) -> None:
    code = """
        import threading
        lock = ctipc.Lock(sys.argv[1])
        second = ctipc.Lock(sys.argv[1], create=False)

        def release(obj):
            try:
                obj.release()
            except RuntimeError:
                return "RuntimeError"
            return "released"

        results = [release(lock)]  # never taken
        lock.acquire()
        lock.release()
        results.append(release(lock))  # released already
        lock.acquire()
        other = []
        t = threading.Thread(target=lambda: other.append(release(lock)))
        t.start()
        t.join(15)
        results += other  # held by another thread
        results.append(release(second))  # another Lock object of this process
        results.append(str(lock.acquire(blocking=False)))  # not reentrant
        results.append(str(second.acquire(blocking=False)))  # excluded in-process too
        lock.release()
        results.append(str(second.acquire(timeout=5)))
        second.release()
        out(*results)
        second.close()
        lock.close()
    """
    with emulated(code, ename) as child:
        child.expect(" ".join(["RuntimeError"] * 4 + ["False", "False", "True"]))
        child.finish()
    assert_gone_everywhere(ename)


MQ_CONSUMER = """
    q = ctipc.MessageQueue(sys.argv[1], capacity=4096, max_message=100)
    start = time.monotonic()
    try:
        out("got", q.get(timeout=0.3))
    except ctipc.Empty:
        out("Empty", time.monotonic() - start)
    inp()
    out(q.get(timeout=15).decode(), q.get(timeout=15).decode())
    out("getting")
    out(q.get().decode())  # blocks until the producer puts
    inp()
    out(len(q.get(timeout=15)))  # makes room for the producer's blocked put
    inp()
    rest = []
    while True:
        try:
            rest.append(q.get_nowait())
        except ctipc.Empty:
            break
    out("drained", len(rest), rest[-1].rstrip(b".").decode())
    q.close()
"""

MQ_PRODUCER = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    out("attached", q.capacity, q.max_message)
    inp()
    q.put(b"one")
    q.put(b"two")
    inp()
    q.put(b"wake")
    inp()
    n = 0
    while True:  # messages of the largest size: no smaller gap is left
        try:
            q.put_nowait(b"x" * 100)
        except ctipc.Full:
            break
        n += 1
    start = time.monotonic()
    try:
        q.put(b"x" * 100, timeout=0.3)
        out("put anyway")
    except ctipc.Full:
        out("Full", n, time.monotonic() - start)
    out("putting")
    q.put(b"late".ljust(100, b"."))  # blocks until the consumer gets
    out("put late")
    q.close()
"""


@needs_posix
def test_emulated_message_queue_between_emulated_processes(ename: str) -> None:
    with emulated(MQ_CONSUMER, ename) as consumer:
        what, took = consumer.readline().split()
        assert what == "Empty"
        assert 0.25 <= seconds(took) < 5
        with emulated(MQ_PRODUCER, ename) as producer:
            producer.expect("attached 4096 100")
            producer.send()
            consumer.send()
            consumer.expect("one two")
            consumer.expect("getting")
            assert consumer.silent_for(0.3), "get() did not block"
            producer.send()
            consumer.expect("wake")
            producer.send()
            full, n, took = producer.readline().split()
            assert full == "Full"
            assert 0.25 <= seconds(took) < 5
            assert int(n) >= 10
            producer.expect("putting")
            assert producer.silent_for(0.3), "put() into a full queue did not block"
            consumer.send()
            consumer.expect("100")
            producer.expect("put late")
            consumer.send()
            consumer.expect(f"drained {n} late")
            producer.finish()
        consumer.finish()
    assert_gone_everywhere(ename)


@needs_posix
@needs_sigkill
def test_emulated_receive_of_a_sigkilled_consumer_is_redelivered(ename: str) -> None:
    """The queue's get mutex on macOS is flock() plus an owner record: a
    consumer killed inside ``receive`` leaves the message for the next one,
    flagged, and a producer killed inside ``reserve`` publishes nothing."""
    holder_code = """
        q = ctipc.MessageQueue(sys.argv[1], capacity=4096, max_message=100)
        q.put_many([b"first", b"second"])
        with q.receive() as m:
            out("holding", bytes(m.data).decode())
            inp()
    """
    taker_code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("attached")
        inp()
        with q.reserve(4, timeout=5) as slot:
            slot.data[:] = b"gone"
            out("reserving")
            inp()
    """
    reader_code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("attached")
        inp()
        got = []
        for _ in range(2):
            with q.receive(timeout=5) as m:
                got.append(f"{bytes(m.data).decode()}:{m.redelivered}")
        out(*got)
        try:
            q.get(timeout=0.2)
            out("more")
        except ctipc.Empty:
            out("empty")
        q.close()
    """
    with emulated(holder_code, ename) as holder:
        holder.expect("holding first")
        with emulated(taker_code, ename) as taker:
            taker.expect("attached")
            holder.kill()
            taker.send()
            taker.expect("reserving")
            with emulated(reader_code, ename) as reader:
                reader.expect("attached")  # before the last other user dies
                taker.kill()
                reader.send()
                reader.expect("first:True second:False")
                reader.expect("empty")
                reader.finish()
    assert_gone_everywhere(ename)


HOLD_ALL = (
    OPEN_ALL
    + """
    out("open")
    how = inp()
    if how == "close":
        for o in objs:
            o.close()
        out("closed")
        inp()
    elif how == "exit":
        sys.exit(0)
    elif how == "os._exit":
        os._exit(0)
"""
)

CHECK_GONE = """
    inp()
    for cls in (ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory, ctipc.MessageQueue):
        try:
            cls(sys.argv[1], create=False)
            out("found", cls.__name__)
        except FileNotFoundError:
            out("gone")
"""


@needs_posix
@needs_dev_shm
@pytest.mark.parametrize("ending", ["close", "exit", "os._exit", "SIGKILL"])
def test_emulated_objects_leave_with_their_last_process(ename: str, ending: str) -> None:
    if ending == "SIGKILL" and not HAVE_SIGKILL:
        pytest.skip("no SIGKILL here")
    # The checker starts first, so that the dead process's objects are opened
    # (and cleaned) at once: a `python -m ctipc gc` of another, ordinary
    # process (a test session running alongside) would remove them without
    # their /tmp mutex files, as it does not use them.
    checker = emulated(CHECK_GONE, ename)
    with checker, emulated(HOLD_ALL, ename) as first, emulated(HOLD_ALL, ename) as last:
        first.expect("open")
        last.expect("open")
        assert len(entries_of(ename)) == ALL_ENTRIES
        assert len(lock_dir_files(ename, ".mutex")) == 3  # the Lock's, the queue's two
        first.send("close")
        first.expect("closed")
        assert len(entries_of(ename)) == ALL_ENTRIES  # the other one still has them
        assert len(lock_dir_files(ename, ".mutex")) == 3
        if ending == "close":
            last.send("close")
            last.expect("closed")
            assert_gone_everywhere(ename)  # while the process still runs
            done(last)
        elif ending == "SIGKILL":
            last.kill()
        else:
            last.send(ending)
            assert last.wait() == 0, last.stderr
        if ending in ("os._exit", "SIGKILL"):
            # Nothing closed: the next (emulated) open by name notices.
            assert len(entries_of(ename)) == ALL_ENTRIES
        checker.send()
        for _ in ALL_KINDS:
            checker.expect("gone")
        checker.finish()
        assert_gone_everywhere(ename)
        done(first)


BLOCKED = """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    obj = ctipc.{cls}(sys.argv[1]{open_args})
    try:
        out("blocking")
        ok = obj.acquire({args})
        out(f"acquired {{ok}}")
    except KeyboardInterrupt:
        out("interrupted")
    inp()
    {after}
    obj.close()
"""


def _interrupt(child: Child) -> None:
    child.expect("blocking")
    assert child.silent_for(0.3), "acquire() did not block"
    child.signal(signal.SIGINT)
    start = time.monotonic()
    child.expect("interrupted", timeout=5)
    assert time.monotonic() - start < 2


@needs_posix
@needs_sigint
@pytest.mark.parametrize("args", ["", "timeout=60"])
def test_ctrl_c_interrupts_emulated_semaphore_acquire(ename: str, args: str) -> None:
    after = "obj.release(); out(obj.acquire(blocking=False), obj.acquire(blocking=False))"
    code = BLOCKED.format(cls="Semaphore", open_args=", initial=0", args=args, after=after)
    with emulated(code, ename) as child:
        _interrupt(child)
        child.send()
        child.expect("True False")  # the interrupted wait took no permit
        child.finish()
    assert_gone_everywhere(ename)


@needs_posix
@needs_sigint
@pytest.mark.parametrize("args", ["", "timeout=60"])
def test_ctrl_c_interrupts_emulated_lock_acquire(ename: str, args: str) -> None:
    after = "out(obj.acquire(timeout=5), obj.owner_died); obj.release()"
    code = BLOCKED.format(cls="Lock", open_args=", create=False", args=args, after=after)
    with emulated(LOCK_HOLDER, ename) as holder:
        holder.expect("held")
        with emulated(code, ename) as waiter:
            _interrupt(waiter)
            holder.send()
            holder.expect("released")
            waiter.send()
            waiter.expect("True False")  # the interrupted process can take it
            waiter.finish()
        done(holder)
    assert_gone_everywhere(ename)


# ======================================================================================
# 2. Embedded and restricted hosts


class BareChild(Child):
    """A Child whose interpreter runs with ``flags`` in exactly ``env``.  The
    script puts ``PACKAGE_ROOT`` (its ``sys.argv[1]``) on ``sys.path`` itself
    before the usual prelude imports ctipc."""

    def __init__(self, code: str, *args: object, flags: list[str], env: dict[str, str]) -> None:
        source = "import sys\nsys.path.insert(0, sys.argv[1])\n" + _PRELUDE
        cmd = [sys.executable, *flags, "-c", source + textwrap.dedent(code)]
        self._start([*cmd, PACKAGE_ROOT, *map(str, args)], env)


RESTRICTED = """
    assert sys.flags.isolated and sys.flags.no_site, sys.flags
    assert "site" not in sys.modules
    assert "HOME" not in os.environ
    assert not os.path.exists(os.environ["TMPDIR"])
    name = sys.argv[2]
    sem = ctipc.Semaphore(name, initial=0, create=True)
    lock = ctipc.Lock(name, create=True)
    shm = ctipc.SharedMemory(name, 64, create=True)
    q = ctipc.MessageQueue(name, capacity=4096, max_message=64, create=True)
    # cross-checks through second objects of this process
    with ctipc.SharedMemory(name, create=False) as again:
        again.write_str("from the child")
    assert shm.read_str() == "from the child"
    lock.acquire()
    other = ctipc.Lock(name, create=False)
    assert not other.acquire(blocking=False)
    other.close()
    with ctipc.MessageQueue(name, create=False) as again:
        again.put(b"from the child")
    out("ready")
    inp()
    # the parent released the semaphore, wrote at 16 and answered on the queue
    assert sem.acquire(timeout=15)
    out(shm.read_str(16), q.get(timeout=15).decode())
    lock.release()
    for o in (sem, lock, shm, q):
        o.close()
    out("closed")
    inp()
"""


def test_isolated_interpreter_without_home_or_tmpdir_uses_every_primitive(name: str) -> None:
    env = child_env()
    for var in ("HOME", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(var, None)
    env["TMPDIR"] = os.path.join(PACKAGE_ROOT, "no-such-dir", "tmp")
    assert not os.path.exists(env["TMPDIR"])
    flags = ["-I", "-S", "-u", "-W", "error"]
    with BareChild(RESTRICTED, name, flags=flags, env=env) as child:
        child.expect("ready")
        # an ordinary interpreter (this one) sees what the restricted one made
        sem = ctipc.Semaphore(name, create=False)
        lock = ctipc.Lock(name, create=False)
        shm = ctipc.SharedMemory(name, create=False)
        q = ctipc.MessageQueue(name, create=False)
        try:
            assert shm.size == 64 and (q.capacity, q.max_message) == (4096, 64)
            assert shm.read_str() == "from the child"
            assert q.get(timeout=5) == b"from the child"
            assert lock.acquire(timeout=0.1) is False
            shm.write_str("from the parent", 16)
            q.put(b"reply")
            sem.release()
        finally:
            for o in (sem, lock, shm, q):
                o.close()
        child.send()
        child.expect("from the parent reply")
        child.expect("closed")
        if HAVE_DEV_SHM:
            assert entries_of(name) == []
        done(child)
    for cls in ALL_KINDS:
        assert not exists(cls, name)


IN_A_THREAD = """
    import threading, traceback

    def work():
        try:
            name = sys.argv[1]
            sem = ctipc.Semaphore(name, initial=0)
            lock = ctipc.Lock(name)
            shm = ctipc.SharedMemory(name, 64)
            q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
            assert sem.acquire(timeout=0.05) is False
            sem.release()
            assert sem.acquire(timeout=5) is True
            with lock:
                second = ctipc.Lock(name, create=False)
                assert second.acquire(blocking=False) is False
                second.close()
            assert lock.acquire(timeout=5) and not lock.owner_died
            lock.release()
            shm.write_str("in a thread")
            with ctipc.SharedMemory(name, create=False) as again:
                assert again.read_str() == "in a thread"
            q.put(b"a")
            q.put_many([b"b", b"c"])
            assert q.get(timeout=5) == b"a"
            assert q.get_many(10, timeout=5) == [b"b", b"c"]
            try:
                q.get(timeout=0.05)
                raise AssertionError("a message from nowhere")
            except ctipc.Empty:
                pass
            for o in (sem, lock, shm, q):
                o.close()
            result.append("ok")
        except BaseException:
            result.append(traceback.format_exc())

    result = []
    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    out("ok" if result == ["ok"] else repr(result))
    inp()
"""


@MODES
def test_every_primitive_from_a_non_main_thread(
    emulated_names: Callable[[], str], mode: str
) -> None:
    name = emulated_names()
    with Child(IN_A_THREAD, name, **env_of(mode)) as child:
        child.expect("ok")
        assert_gone_everywhere(name)  # closed in the thread, not by atexit
        done(child)


OS_EXIT_WITHOUT_CLOSE = """
    name = sys.argv[1]
    sem = ctipc.Semaphore(name, initial=3)
    lock = ctipc.Lock(name)
    lock.acquire()
    lock.release()  # (a Lock still held is kept for owner_died: test_lock_death)
    shm = ctipc.SharedMemory(name, 64)
    shm.write(b"stale")
    q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
    q.put(b"stale")
    out("ready")
    inp()
    os._exit(0)
"""


@pytest.mark.parametrize("cleanup", ["attach", "reopen", "gc"])
def test_objects_of_a_process_ended_by_os_exit_are_cleaned_without_atexit(
    name: str, cleanup: str
) -> None:
    if cleanup == "gc" and not os_backend.CAN_LIST:
        pytest.skip("python -m ctipc gc needs listing")
    if os_backend.KERNEL_LIFETIME:
        pytest.skip("the kernel removes objects with their last handle here")
    with Child(OS_EXIT_WITHOUT_CLOSE, name) as child:
        child.expect("ready")
        child.send()
        assert child.wait() == 0, child.stderr
    if HAVE_DEV_SHM:
        assert len(entries_of(name)) == ALL_ENTRIES  # nothing closed them
    if cleanup == "attach":
        for cls in ALL_KINDS:
            with pytest.raises(FileNotFoundError):
                cls(name, create=False)
    elif cleanup == "reopen":
        # New objects, none of the dead process's state
        sem = ctipc.Semaphore(name, initial=0)
        lock = ctipc.Lock(name)
        shm = ctipc.SharedMemory(name, 64)
        q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
        try:
            assert sem.acquire(blocking=False) is False
            assert lock.acquire(blocking=False) is True
            assert lock.owner_died is False
            lock.release()
            assert shm.read(0, 5) == bytes(5)
            assert len(q) == 0
        finally:
            for o in (sem, lock, shm, q):
                o.close()
    else:
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-m", "ctipc", "gc"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=DEADLINE,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # (Another test session's gc, running alongside, may have removed them first.)
        ours = [x for x in proc.stdout.splitlines() if f" {name!r} (" in x]
        kinds = sorted(x.split()[1] for x in ours)
        assert kinds in ([], sorted(cls.__name__ for cls in ALL_KINDS)), proc.stdout
    assert_gone_everywhere(name)
    for cls in ALL_KINDS:
        assert not exists(cls, name)


# ======================================================================================
# 3. fork


def run_forked(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child that ends with ``os._exit``; fail with
    its traceback if it raises.  A pipe carries the outcome; the child is
    reaped (killed first if it overstays) whatever happens."""
    r, w = os.pipe()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            pid = os.fork()
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            try:
                body()
                report = b"ok"
                code = 0
            except BaseException:
                report = traceback.format_exc().encode()
            os.write(w, report)
        finally:
            os._exit(code)
    os.close(w)
    report = b""
    status = None
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the forked child did not finish within {DEADLINE} s")
            ready, _, _ = select.select([r], [], [], remaining)
            if ready:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                report += chunk
    finally:
        os.close(r)
        try:
            deadline = time.monotonic() + DEADLINE
            while status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                elif time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    status = os.waitpid(pid, 0)[1]
                else:
                    time.sleep(0.005)  # polling for the exit, not ordering events
        except ChildProcessError:
            pass
    assert report == b"ok", report.decode("utf-8", "replace")
    assert status is not None and os.waitstatus_to_exitcode(status) == 0


def open_all(name: str) -> list[Any]:
    return [
        ctipc.Semaphore(name, initial=1),
        ctipc.Lock(name),
        ctipc.SharedMemory(name, 64),
        ctipc.MessageQueue(name, capacity=4096, max_message=64),
    ]


@needs_fork
def test_forked_child_uses_the_objects_it_inherited(name: str) -> None:
    objs = open_all(name)
    sem, lock, shm, q = objs
    try:

        def child() -> None:
            assert sem.acquire(timeout=5)
            sem.release()
            assert lock.acquire(timeout=5)
            lock.release()
            shm.write(b"written by the child")
            q.put(b"put by the child", timeout=5)

        run_forked(child)
        assert shm.read(0, 20) == b"written by the child"
        assert q.get(timeout=5) == b"put by the child"
        assert sem.acquire(blocking=False) and not sem.acquire(blocking=False)
        sem.release()
        assert lock.acquire(timeout=5) and lock.owner_died is False
        lock.release()
        if HAVE_DEV_SHM:
            assert len(entries_of(name)) == ALL_ENTRIES
        for cls in ALL_KINDS:
            assert exists(cls, name)
    finally:
        for o in objs:
            o.close()
    assert_gone_everywhere(name)
    for cls in ALL_KINDS:
        assert not exists(cls, name)


@needs_fork
def test_forked_child_that_closes_what_it_inherited_removes_nothing(name: str) -> None:
    objs = open_all(name)
    sem, lock, shm, q = objs
    try:
        q.put(b"before the fork")

        def child() -> None:
            for o in objs:
                o.close()
            ctipc._lifetime._close_all()  # what an exiting interpreter runs
            with ctipc.SharedMemory(name, create=False) as again:  # by name, afresh
                again.write(b"again")

        run_forked(child)
        for cls in ALL_KINDS:
            assert exists(cls, name)
        assert shm.read(0, 5) == b"again"
        assert q.get(timeout=5) == b"before the fork"
        q.put(b"after")
        assert q.get(timeout=5) == b"after"
        assert sem.acquire(blocking=False)
        sem.release()
        with lock:
            assert lock.owner_died is False
    finally:
        for o in objs:
            o.close()
    assert_gone_everywhere(name)


FORK_SCENARIO = (
    OPEN_ALL
    + """
    import traceback
    ending = sys.argv[2]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            try:
                assert sem.acquire(timeout=5)
                sem.release()
                assert lock.acquire(timeout=5)
                lock.release()
                shm.write(b"child")
                q.put(b"from the child", timeout=5)
                os.write(w, b"ok")
            except BaseException:
                os.write(w, traceback.format_exc().encode())
                os._exit(1)
        finally:
            if ending == "os._exit":
                os._exit(0)
        sys.exit(0)  # a normal exit: atexit handlers and finalizers run
    os.close(w)
    report = b""
    try:
        while True:
            chunk = os.read(r, 65536)  # EOF when the child exits
            if not chunk:
                break
            report += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    out(report.decode(), os.waitstatus_to_exitcode(status))
    out(shm.read(0, 5).decode(), q.get(timeout=5).decode())
    out(sem.acquire(blocking=False), sem.acquire(blocking=False))
    sem.release()
    out(lock.acquire(timeout=5), lock.owner_died)
    lock.release()
    inp()
    for o in objs:
        o.close()
    out("closed")
    inp()
"""
)


@needs_fork
@needs_posix
@MODES
@pytest.mark.parametrize("ending", ["os._exit", "sys.exit"])
def test_fork_in_a_fresh_interpreter(
    emulated_names: Callable[[], str], mode: str, ending: str
) -> None:
    name = emulated_names()
    with Child(FORK_SCENARIO, name, ending, **env_of(mode)) as child:
        child.expect("ok 0")
        child.expect("child from the child")
        child.expect("True False")
        child.expect("True False")
        if HAVE_DEV_SHM:
            assert len(entries_of(name)) == ALL_ENTRIES  # the child removed nothing
        child.send()
        child.expect("closed")
        assert_gone_everywhere(name)
        done(child)


LOCK_ACROSS_FORK = """
    lock = ctipc.Lock(sys.argv[1])
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(res_r)
            os.read(go_r, 1)  # the parent holds the lock now (or died: EOF)
            got = lock.acquire(timeout=0.3)
            if got:
                lock.release()
            os.write(res_w, b"1" if got else b"0")
            os.read(go_r, 1)  # the parent released it
            got = lock.acquire(timeout=5)
            if got:
                lock.release()
            os.write(res_w, b"1" if got else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(res_w)
    try:
        lock.acquire()
        os.write(go_w, b"g")
        while_held = os.read(res_r, 1)
        lock.release()
        os.write(go_w, b"g")
        after = os.read(res_r, 1)
    finally:
        os.close(go_w)
        os.close(res_r)
        _, status = os.waitpid(pid, 0)
    out(while_held.decode(), after.decode(), os.waitstatus_to_exitcode(status))
    lock.close()
"""


@needs_fork
@needs_posix
@MODES
def test_lock_excludes_a_forked_child(emulated_names: Callable[[], str], mode: str) -> None:
    """A Lock opened before fork() is one lock for parent and child: the child
    cannot take it while the parent holds it, and can once it is released.
    (A forked worker of a gunicorn --preload master is such a child.)"""
    name = emulated_names()
    with Child(LOCK_ACROSS_FORK, name, **env_of(mode)) as child:
        line = child.readline()
        child.finish()
    assert line == "0 1 0", (
        f"child acquired while the parent held the lock: {line!r} (want '0 1 0')"
        if line.startswith("1")
        else line
    )
    assert_gone_everywhere(name)


# ======================================================================================
# 4. Threads (tests/test_threads.py and tests/test_mq.py cover each kind on its
#    own with native paths; here all four at once, shared memory counted under
#    the Lock, and the emulated paths: the flock mutex and polled waits)

THREAD_MIX = """
    import threading
    name = sys.argv[1]
    THREADS, ROUNDS = 8, int(sys.argv[2])
    sem = ctipc.Semaphore(name, initial=2)
    lock = ctipc.Lock(name)
    shm = ctipc.SharedMemory(name, 8 + 8 * THREADS)
    q = ctipc.MessageQueue(name, capacity=1 << 16, max_message=64)
    barrier = threading.Barrier(THREADS)
    guard = threading.Lock()
    inside, most = [0], [0]
    errors = []
    got = [[] for _ in range(THREADS)]

    def work(i):
        try:
            barrier.wait(15)
            buf = shm.buf
            for k in range(ROUNDS):
                if not sem.acquire(timeout=15):
                    raise RuntimeError("no permit within 15 s")
                try:
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    if i % 2:
                        if not lock.acquire(timeout=15):
                            raise RuntimeError("no lock within 15 s")
                    else:
                        lock.acquire()
                    try:
                        value = int.from_bytes(buf[0:8], "little")
                        if k % 3 == 0:
                            time.sleep(0)
                        buf[0:8] = (value + 1).to_bytes(8, "little")
                    finally:
                        lock.release()
                    with guard:
                        inside[0] -= 1
                finally:
                    sem.release()
                q.put(f"{i}:{k}".encode(), timeout=15)
                if k % 2:
                    got[i] += [m.decode() for m in q.get_many(1, timeout=15)]
                else:
                    got[i].append(q.get(timeout=15).decode())
                shm.write(k.to_bytes(8, "little"), 8 + 8 * i)
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    out("hung" if any(t.is_alive() for t in threads) else "joined", errors)
    everything = sorted(m for g in got for m in g)
    expected = sorted(f"{i}:{k}" for i in range(THREADS) for k in range(ROUNDS))
    out(int.from_bytes(shm.read(0, 8), "little"), everything == expected, len(q))
    mine = [int.from_bytes(shm.read(8 + 8 * i, 8), "little") for i in range(THREADS)]
    out(1 <= most[0] <= 2, mine == [ROUNDS - 1] * THREADS)
    out(sem.acquire(blocking=False), sem.acquire(blocking=False), sem.acquire(blocking=False))
    sem.release(2)
    for o in (sem, lock, shm, q):
        o.close()
    out("closed")
"""


@MODES
def test_one_object_of_each_kind_used_by_eight_threads(
    emulated_names: Callable[[], str], mode: str
) -> None:
    name = emulated_names()
    rounds = 150
    with Child(THREAD_MIX, name, rounds, **env_of(mode)) as child:
        child.expect("joined []", timeout=150)
        child.expect(f"{8 * rounds} True 0")
        child.expect("True True")
        child.expect("True True False")
        child.expect("closed")
        child.finish()
    assert_gone_everywhere(name)


# ======================================================================================
# 5. Windows names (the naming rules run anywhere)


@pytest.mark.parametrize("namespace", ["Global\\", "Local\\"])
def test_windows_namespace_prefix_selects_the_namespace(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setattr(_names._os, "NAMESPACES", ("Global\\", "Local\\"))  # as Windows
    for kind in "slmq":
        got = _names.os_name(kind, "h", namespace + "jobs")
        assert got.startswith(namespace + "ctipc-" + kind + "h-"), got
        base = got[len(namespace) :]
        assert "\\" not in base and _names.is_ctipc_os_name(base)
        # the digest covers the whole user name, namespace included
        assert base != _names.os_name(kind, "h", "jobs")
        for role in "hvrw":
            assert _names.sibling(got, role) == _names.os_name(kind, role, namespace + "jobs")


def test_windows_plain_name_has_no_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_names._os, "NAMESPACES", ("Global\\", "Local\\"))  # as Windows
    for user_name in ("jobs", "Session\\1\\jobs", "back\\slash", "global-jobs", "Globaljobs"):
        got = _names.os_name("q", "h", user_name)
        assert "\\" not in got and got.startswith("ctipc-qh-"), (user_name, got)
        assert _names.sibling(got, "r") == _names.os_name("q", "r", user_name)


def test_global_prefix_is_an_ordinary_name_off_windows(new_name: Callable[..., str]) -> None:
    if sys.platform == "win32":
        pytest.skip("Global\\ is a namespace on Windows")
    plain = new_name()
    spaced = new_name("Global\\" + plain)
    local = new_name("Local\\" + plain)
    for n in (spaced, local):
        got = _names.os_name("m", "h", n)
        assert "\\" not in got and _names.is_ctipc_os_name(got)
        assert got != _names.os_name("m", "h", plain)
    # three different objects
    shms = [ctipc.SharedMemory(n, 16, create=True) for n in (plain, spaced, local)]
    sems = [ctipc.Semaphore(n, initial=0, create=True) for n in (plain, spaced, local)]
    try:
        for i, shm in enumerate(shms):
            shm.write(bytes([i + 1]) * 4)
        sems[1].release()
        assert [s.acquire(blocking=False) for s in sems] == [False, True, False]
        code = """
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                out(shm.name, shm.read(0, 4).hex())
        """
        with Child(code, spaced) as child:  # another process finds it by that name
            child.expect(f"{spaced} 02020202")
            child.finish()
    finally:
        for o in shms + sems:
            o.close()
    for n in (plain, spaced, local):
        assert not exists(ctipc.SharedMemory, n)
        if HAVE_DEV_SHM:
            assert entries_of(n) == []
