"""Closing while other threads use the object, and exiting with busy daemon
threads: other calls raise ValueError, nothing touches unmapped memory, the
interpreter never crashes, and the object stays usable for other processes.

The failures these guard against are races, so each child repeats its round
many times (within a deadline) and a crash shows as the child's exit status.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

import pytest
from helpers import Child, drain, entries_of, run_child

import ctipc

ROUNDS = 40
EXITS = 20

_CLOSE_WHILE_USED = """\
import threading
name, kind, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
end = time.monotonic() + 60
for r in range(rounds):
    if time.monotonic() > end:
        break
    if kind == "Lock":
        obj = ctipc.Lock(name)
        def step():
            if obj.acquire(timeout=0.01):
                obj.release()
    elif kind == "Semaphore":
        obj = ctipc.Semaphore(name, initial=2)
        def step():
            if obj.acquire(timeout=0.01):
                obj.release()
    elif kind == "SharedMemory":
        obj = ctipc.SharedMemory(name, 4096)
        def step():
            obj.write(b"x", 1)
            obj.read(0, 2)
    else:
        obj = ctipc.MessageQueue(name, capacity=4096, max_message=64)
        def step():
            try:
                obj.put(b"x", timeout=0.01)
                obj.get(timeout=0.01)
            except (ctipc.Full, ctipc.Empty):
                pass
    started = threading.Barrier(5)
    def work():
        started.wait()
        try:
            while True:
                step()
        except ValueError:
            pass  # closed: what every call must raise
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.002 * (r % 5))  # close at different points of the calls
    obj.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a thread did not see the close"
out("ok", r + 1)
"""


@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "SharedMemory", "MessageQueue"])
def test_close_while_other_threads_use_the_object(kind: str, name: str) -> None:
    out = run_child(_CLOSE_WHILE_USED, name, kind, ROUNDS, timeout=120)
    assert out.split()[0] == "ok"
    assert entries_of(name) == []


_EXIT_WITH_DAEMONS = """\
import threading
names = sys.argv[1:4]
lock = ctipc.Lock(names[0])
queue = ctipc.MessageQueue(names[1], capacity=4096, max_message=64)
sem = ctipc.Semaphore(names[2])
ready = threading.Barrier(7)

def locker():
    ready.wait()
    while True:
        with lock:
            pass

def producer():
    ready.wait()
    while True:
        try:
            queue.put(b"m", timeout=0.01)
        except ctipc.Full:
            pass

def consumer():
    ready.wait()
    while True:
        try:
            queue.get(timeout=0.01)
        except ctipc.Empty:
            pass

def semaphore():
    ready.wait()
    while True:
        if sem.acquire(timeout=0.01):
            sem.release()

for target in (locker, locker, producer, consumer, semaphore, semaphore):
    threading.Thread(target=target, daemon=True).start()
ready.wait()
time.sleep(0.01)
sys.exit(0)
"""


def test_exit_with_busy_daemon_threads_never_crashes_nor_wedges(
    new_name: Callable[..., str],
) -> None:
    names = [new_name() for _ in range(3)]
    # This process keeps the objects open, as another user of them.
    lock = ctipc.Lock(names[0])
    queue = ctipc.MessageQueue(names[1], capacity=4096, max_message=64)
    sem = ctipc.Semaphore(names[2])
    try:
        end = time.monotonic() + 60
        for i in range(EXITS):
            if time.monotonic() > end:
                break
            with Child(_EXIT_WITH_DAEMONS, *names) as child:
                child.close_stdin()
                rc = child.wait()
                assert rc == 0, f"exit {i}: {signal_name(rc)}\n{child.stderr}"
            # Still usable by another process, whatever the child died holding.
            assert lock.acquire(timeout=5), f"the Lock is wedged after exit {i}"
            lock.release()
            drain(queue)  # what the child's producer left
            queue.put(b"check", timeout=5)
            assert queue.get(timeout=5) == b"check", f"the queue is broken after exit {i}"
            if sem.acquire(timeout=5):
                sem.release()
    finally:
        for obj in (lock, queue, sem):
            obj.close()
    assert all(entries_of(n) == [] for n in names)


_PARK_AT_EXIT = """\
import atexit, threading
from ctipc import _lifetime
names = sys.argv[1:5]
lock = ctipc.Lock(names[0])
queue = ctipc.MessageQueue(names[1], capacity=4096, max_message=64)
sem = ctipc.Semaphore(names[2])
shm = ctipc.SharedMemory(names[3], 4096)
raised = []
calls = {
    "lock": lambda: lock.acquire(timeout=0.01) and lock.release(),
    "get": lambda: queue.get(timeout=0.01),
    "put": lambda: queue.put(b"m", timeout=0.01),
    "sem": lambda: sem.acquire(timeout=0.01) and sem.release(),
    "shm": lambda: shm.write(b"x"),
}
ready = threading.Barrier(len(calls) + 1)

def loop(name):
    call = calls[name]
    ready.wait()
    while True:
        try:
            call()
        except (ctipc.Empty, ctipc.Full):
            pass
        except ValueError:
            raised.append(name)
            return

threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in calls]

def observe():
    # Runs after ctipc's exit-time close, as a handler registered before
    # ctipc was imported would: every daemon thread must be parked there.
    deadline = time.monotonic() + 30
    parked = []
    while time.monotonic() < deadline and not raised:
        frames = sys._current_frames()
        parked = [t for t in threads if t.ident in frames and any(
            f.f_code.co_name == "park_if_exiting" for f in walk(frames[t.ident]))]
        if len(parked) == len(threads):
            break
    out("parked", len(parked), "raised", *raised)

def walk(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back

atexit.unregister(_lifetime._close_all)
atexit.register(observe)
atexit.register(_lifetime._close_all)  # runs first
for t in threads:
    t.start()
ready.wait()
sys.exit(0)
"""


def test_daemon_threads_park_at_exit_instead_of_raising(new_name: Callable[..., str]) -> None:
    """At exit no daemon thread runs on into its caller's code with a
    ValueError (PyPy crashed when they printed it while C's exit handlers
    ran): each parks where its call on the closed object ends, as CPython
    parks daemon threads at exit."""
    names = [new_name() for _ in range(4)]
    # Kept open here too: a Lock in a call at exit is left to the next user
    # (the process may die holding it), which this process then is.
    objs = [ctipc.Lock(names[0]), ctipc.MessageQueue(names[1], capacity=4096, max_message=64),
            ctipc.Semaphore(names[2]), ctipc.SharedMemory(names[3], 4096)]  # fmt: skip
    try:
        with Child(_PARK_AT_EXIT, *names) as child:
            line = child.readline(timeout=60)
            rc = child.wait()
        assert line.split() == ["parked", "5", "raised"], line
        assert rc == 0, signal_name(rc)
        assert objs[0].acquire(timeout=5), "the Lock is wedged after the exit"
        objs[0].release()
    finally:
        for obj in objs:
            obj.close()
    assert all(entries_of(n) == [] for n in names)


def signal_name(rc: int) -> str:
    return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"


def test_a_received_view_raises_after_another_thread_closes_the_queue(name: str) -> None:
    """On every interpreter (PyPy's slices outlive a released parent, and
    its mmap unmaps under them: reads gave b"")."""
    q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
    q.put(b"payload", timeout=5)
    read_after_close: object = None
    try:
        with q.receive(timeout=5) as msg:
            data = msg.data
            assert bytes(data) == b"payload"
            closer = threading.Thread(target=q.close)
            closer.start()
            closer.join(10)
            assert not closer.is_alive()
            try:
                read_after_close = bytes(data)
            except ValueError as e:
                read_after_close = e
    except ValueError:
        pass  # the block itself: closed inside it, nothing removed
    finally:
        q.close()
    assert isinstance(read_after_close, ValueError), read_after_close
    assert entries_of(name) == []


def test_a_lock_closed_by_another_thread_while_held_stays_usable_by_its_holder(
    name: str,
) -> None:
    lock = ctipc.Lock(name)
    assert lock.acquire(timeout=5)
    closer = threading.Thread(target=lock.close)
    closer.start()
    closer.join(10)
    with pytest.raises(ValueError):
        lock.acquire(timeout=0)
    assert entries_of(name) != []  # still held here: its memory stays
    lock.release()
    assert entries_of(name) == []  # the last use ended: closed for good


def test_closing_a_queue_while_an_aget_waits_keeps_the_loop_responsive(name: str) -> None:
    """The waiter sees the one closed flag at once and leaves, so close()
    does not wait out the queue's mutex patience (1 s) on the loop."""
    import asyncio

    async def main() -> float:
        q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
        task = asyncio.ensure_future(q.aget())
        await asyncio.sleep(0.1)  # (the aget is waiting in its thread by now, or soon)
        start = time.monotonic()
        q.close()
        took = time.monotonic() - start
        with pytest.raises(ValueError):
            await task
        return took

    assert asyncio.run(main()) < 0.8
    assert entries_of(name) == []
