"""Threads of one process sharing one Semaphore, Lock or SharedMemory object."""

from __future__ import annotations

import threading
import time

from helpers import DEADLINE, run_threads

import ctipc

THREADS = 8


def test_lock_is_a_mutex_between_threads(name: str) -> None:
    lock = ctipc.Lock(name)
    counter = [0]
    inside = [0]
    rounds = 500
    try:

        def work(i: int) -> None:
            for _ in range(rounds):
                with lock:
                    inside[0] += 1
                    assert inside[0] == 1
                    value = counter[0]
                    if i % 2:
                        time.sleep(0)  # let another thread run
                    counter[0] = value + 1
                    inside[0] -= 1

        run_threads(work)
        assert counter[0] == THREADS * rounds
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        lock.close()


def test_lock_timeouts_between_threads(name: str) -> None:
    lock = ctipc.Lock(name)
    got = []
    try:
        assert lock.acquire()

        def work(i: int) -> None:
            got.append(lock.acquire(timeout=0.2))

        run_threads(work)
        assert got == [False] * THREADS
        lock.release()
    finally:
        lock.close()


def test_semaphore_bounds_concurrency_between_threads(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=2)
    guard = threading.Lock()
    inside = [0]
    most = [0]
    try:

        def work(i: int) -> None:
            for _ in range(200):
                assert sem.acquire(timeout=DEADLINE)
                try:
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0)
                    with guard:
                        inside[0] -= 1
                finally:
                    sem.release()

        run_threads(work)
        assert 1 <= most[0] <= 2
        assert [sem.acquire(blocking=False) for _ in range(3)] == [True, True, False]
        sem.release(2)
    finally:
        sem.close()


def test_semaphore_release_wakes_threads(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    results: list[bool] = []
    try:
        started = threading.Barrier(THREADS + 1)

        def waiter() -> None:
            started.wait(DEADLINE)
            results.append(sem.acquire(timeout=DEADLINE))

        threads = [threading.Thread(target=waiter) for _ in range(THREADS)]
        for t in threads:
            t.start()
        started.wait(DEADLINE)
        sem.release(THREADS)
        for t in threads:
            t.join(DEADLINE)
        assert results == [True] * THREADS
    finally:
        sem.close()


def test_shared_memory_between_threads(name: str) -> None:
    with ctipc.SharedMemory(name, THREADS * 64) as shm:

        def work(i: int) -> None:
            for k in range(300):
                text = f"thread {i} round {k}"
                shm.write_str(text, i * 64)
                assert shm.read_str(i * 64) == text
                shm.buf[i * 64 + 60] = k % 256
                assert shm.read(i * 64 + 60, 1) == bytes([k % 256])

        run_threads(work)
        for i in range(THREADS):
            assert shm.read_str(i * 64) == f"thread {i} round 299"


def test_close_wakes_a_thread_blocked_in_acquire(name: str) -> None:
    """A thread waiting on an object another thread closes gets ValueError
    (between wait slices), not a hang or a crash."""
    sem = ctipc.Semaphore(name, initial=0)
    lock = ctipc.Lock(name)
    holder = ctipc.Lock(name, create=False)
    outcome: list[object] = []
    holder.acquire()
    waiting = threading.Barrier(3)

    def wait_on(obj: object) -> None:
        waiting.wait(DEADLINE)
        try:
            outcome.append(obj.acquire(timeout=30))  # type: ignore[attr-defined]
        except ValueError as e:
            outcome.append(e)

    threads = [threading.Thread(target=wait_on, args=(o,)) for o in (sem, lock)]
    try:
        for t in threads:
            t.start()
        waiting.wait(DEADLINE)
        time.sleep(0.2)  # not synchronisation: let the waits start, either way is correct
        start = time.monotonic()
        sem.close()
        lock.close()
        for t in threads:
            t.join(DEADLINE)
        assert time.monotonic() - start < 5
        assert len(outcome) == 2 and all(isinstance(e, ValueError) for e in outcome), outcome
    finally:
        holder.release()
        holder.close()
        sem.close()
        lock.close()
        for t in threads:
            t.join(DEADLINE)


def test_lock_held_by_a_thread_when_another_closes_it_can_still_be_released(name: str) -> None:
    """Lock.close() documents that a lock held by another thread "stays held
    until that thread releases it": so that thread's release() must work (and
    free the lock for other processes), not raise."""
    lock = ctipc.Lock(name)
    other = ctipc.Lock(name, create=False)
    held, closed = threading.Event(), threading.Event()
    outcome: list[object] = []

    def holder() -> None:
        lock.acquire()
        held.set()
        closed.wait(DEADLINE)
        try:
            lock.release()
            outcome.append("released")
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(DEADLINE)
        lock.close()
        closed.set()
        t.join(DEADLINE)
        assert outcome == ["released"]
        assert other.acquire(timeout=2)  # free again for everyone else
        other.release()
    finally:
        closed.set()
        t.join(DEADLINE)
        other.close()
