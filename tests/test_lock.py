"""ctipc.Lock: mutual exclusion between processes, and survival of a dead holder."""

from __future__ import annotations

import multiprocessing
import textwrap
import threading
import time

import pytest
from _mp_workers import count_under_lock, hold_lock_until
from helpers import DEADLINE, HAVE_SIGKILL, Child, exists, reap_process

import ctipc

spawn = multiprocessing.get_context("spawn")

needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")

HOLD = textwrap.dedent(
    """
    lock = ctipc.Lock(sys.argv[1], create=False)
    assert lock.acquire(timeout=30)
    out("held")
    """
)


def test_mutual_exclusion_across_four_spawned_processes(name: str) -> None:
    workers, n = 4, 1500
    with ctipc.SharedMemory(name, 64) as shm:
        lock = ctipc.Lock(name)
        try:
            ready = [spawn.Event() for _ in range(workers)]
            go = spawn.Event()
            errors = spawn.Queue()
            procs = [
                spawn.Process(target=count_under_lock, args=(name, n, ready[i], go, errors))
                for i in range(workers)
            ]
            try:
                for p in procs:
                    p.start()
                for event in ready:
                    assert event.wait(DEADLINE), "a worker did not start"
                go.set()
                for p in procs:
                    p.join(60)
                    assert p.exitcode == 0, (
                        f"worker failed: {errors.get(timeout=1) if p.exitcode else p}"
                    )
            finally:
                for p in procs:
                    reap_process(p)
                errors.close()
                errors.join_thread()
            assert int.from_bytes(shm.read(0, 8), "little") == workers * n
            assert lock.acquire(blocking=False)  # nobody holds it any more
            assert not lock.owner_died
            lock.release()
        finally:
            lock.close()


def test_acquire_times_out_while_a_spawned_process_holds_it(name: str) -> None:
    lock = ctipc.Lock(name)
    held, release = spawn.Event(), spawn.Event()
    p = spawn.Process(target=hold_lock_until, args=(name, held, release))
    try:
        p.start()
        assert held.wait(DEADLINE)
        start = time.monotonic()
        assert lock.acquire(timeout=0.5) is False
        assert 0.4 <= time.monotonic() - start < 5
        assert lock.acquire(blocking=False) is False
        with pytest.raises(RuntimeError):
            lock.release()  # held by the other process, not us
        release.set()
        assert lock.acquire(timeout=DEADLINE) is True
        assert lock.owner_died is False
        lock.release()
    finally:
        release.set()
        reap_process(p)
        lock.close()


def test_acquire_times_out_while_another_process_holds_it(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with Child(HOLD + "inp()\nlock.release()\nout('released')\nlock.close()", name) as child:
            child.expect("held")
            start = time.monotonic()
            assert lock.acquire(timeout=0.3) is False
            assert 0.25 <= time.monotonic() - start < 5
            child.send()
            child.expect("released")
            assert lock.acquire(timeout=DEADLINE) is True
            assert lock.owner_died is False
            lock.release()
            child.finish()
    finally:
        lock.close()


def test_blocked_acquire_proceeds_when_the_other_process_releases(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        assert lock.acquire()
        code = """
            lock = ctipc.Lock(sys.argv[1], create=False)
            out("waiting")
            lock.acquire()
            out(f"acquired {lock.owner_died}")
            lock.release()
            lock.close()
        """
        with Child(code, name) as child:
            child.expect("waiting")
            assert child.silent_for(0.3), "acquired a lock that is held"
            lock.release()
            child.expect("acquired False")
            child.finish()
    finally:
        lock.close()


def test_release_of_a_lock_not_held_raises_runtime_error(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with pytest.raises(RuntimeError):
            lock.release()
        lock.acquire()
        lock.release()
        with pytest.raises(RuntimeError):
            lock.release()  # twice
    finally:
        lock.close()


def test_release_from_another_thread_raises_runtime_error(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        lock.acquire()
        caught: list[BaseException] = []

        def other() -> None:
            try:
                lock.release()
            except BaseException as e:
                caught.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(DEADLINE)
        assert len(caught) == 1 and isinstance(caught[0], RuntimeError)
        lock.release()
    finally:
        lock.close()


def test_not_reentrant_like_threading_lock(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        assert lock.acquire()
        assert lock.acquire(blocking=False) is False
        start = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert time.monotonic() - start < 5
        lock.release()
    finally:
        lock.close()


def test_two_lock_objects_in_one_process_exclude_each_other(name: str) -> None:
    a = ctipc.Lock(name)
    b = ctipc.Lock(name, create=False)
    try:
        assert a.acquire()
        assert b.acquire(timeout=0.1) is False
        a.release()
        assert b.acquire(blocking=False)
        b.release()
    finally:
        b.close()
        a.close()


@needs_sigkill
def test_sigkilled_holder_is_taken_over_with_owner_died(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with Child(HOLD + "inp()", name) as child:
            child.expect("held")
            assert lock.acquire(timeout=0.1) is False
            child.kill()  # SIGKILL, and reaped
        start = time.monotonic()
        assert lock.acquire(timeout=5) is True
        assert time.monotonic() - start < 4
        assert lock.owner_died is True
        lock.release()
        assert lock.acquire(timeout=5) is True
        assert lock.owner_died is False
        lock.release()
    finally:
        lock.close()


@pytest.mark.parametrize(
    "ending",
    ["os._exit(0)", "sys.exit(0)", "raise SystemExit(3)"],
)
def test_holder_that_exits_without_releasing(name: str, ending: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with Child(HOLD + ending, name) as child:
            child.expect("held")
            child.close_stdin()
            child.wait()
        start = time.monotonic()
        assert lock.acquire(timeout=5) is True
        assert time.monotonic() - start < 4
        assert lock.owner_died is True
        lock.release()
        with lock:
            assert lock.owner_died is False
    finally:
        lock.close()


@needs_sigkill
def test_owner_died_in_another_process_after_the_creator_died(name: str) -> None:
    """Creator takes the lock and is killed; a third process is told."""
    holder_code = """
        lock = ctipc.Lock(sys.argv[1], create=True)
        lock.acquire()
        out("held")
        inp()
    """
    taker_code = """
        lock = ctipc.Lock(sys.argv[1], create=False)
        out("attached")
        inp()
        ok = lock.acquire(timeout=10)
        out(f"{ok} {lock.owner_died}")
        lock.release()
        lock.close()
    """
    with Child(holder_code, name) as holder:
        holder.expect("held")
        with Child(taker_code, name) as taker:
            taker.expect("attached")
            holder.kill()
            taker.send()
            taker.expect("True True")
            taker.finish()
    assert not exists(ctipc.Lock, name)  # the last one out removed it


def test_close_releases_a_lock_this_thread_holds(name: str) -> None:
    lock = ctipc.Lock(name)
    other = ctipc.Lock(name, create=False)
    try:
        lock.acquire()
        lock.close()
        assert other.acquire(timeout=DEADLINE)
        assert other.owner_died is False
        other.release()
    finally:
        lock.close()
        other.close()


def test_context_manager(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with lock as entered:
            assert entered is lock
            assert "held" in repr(lock)
            with pytest.raises(RuntimeError):
                threading_release_elsewhere(lock)
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        lock.close()


def threading_release_elsewhere(lock: ctipc.Lock) -> None:
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(lock.release, errors))
    t.start()
    t.join(DEADLINE)
    if errors:
        raise errors[0]


def _catch(fn, errors: list) -> None:
    try:
        fn()
    except BaseException as e:
        errors.append(e)


def test_create_modes(name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ctipc.Lock(name, create=False)
    assert info.value.filename == name
    lock = ctipc.Lock(name, create=True)
    try:
        with pytest.raises(FileExistsError) as info2:
            ctipc.Lock(name, create=True)
        assert info2.value.filename == name
        again = ctipc.Lock(name)
        again.close()
    finally:
        lock.close()


@pytest.mark.parametrize(
    "use", [lambda k: k.acquire(), lambda k: k.acquire(blocking=False), lambda k: k.release()]
)
def test_use_after_close_raises_value_error(name: str, use) -> None:
    lock = ctipc.Lock(name)
    lock.close()
    lock.close()
    with pytest.raises(ValueError):
        use(lock)
    lock.unlink()
    lock.unlink()


def test_acquire_bad_timeout(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        with pytest.raises(ValueError):
            lock.acquire(timeout=-2)
        with pytest.raises(ValueError):
            lock.acquire(blocking=False, timeout=1)
        with pytest.raises(TypeError):
            lock.acquire(timeout="1")  # type: ignore[arg-type]
        assert lock.acquire(blocking=False)  # nothing was taken
        lock.release()
    finally:
        lock.close()


def test_last_close_removes_the_lock(name: str) -> None:
    lock = ctipc.Lock(name)
    lock.acquire()
    lock.release()
    lock.close()
    assert not exists(ctipc.Lock, name)


@needs_sigkill
@pytest.mark.skipif(not ctipc.PERSISTENT_SUPPORTED, reason="no persistent objects here")
def test_persistent_lock_remembers_a_holder_that_died_alone(name: str) -> None:
    """The holder was the only process with the lock open when it was killed;
    the persistent lock outlives it, and the next taker is told."""
    code = """
        lock = ctipc.Lock(sys.argv[1], create=True, persistent=True)
        lock.acquire()
        out("held")
        inp()
    """
    with Child(code, name) as child:
        child.expect("held")
        child.kill()
    lock = ctipc.Lock(name, create=False)
    try:
        assert lock.acquire(timeout=5)
        assert lock.owner_died is True
        lock.release()
    finally:
        lock.close()
        lock.unlink()
    assert not exists(ctipc.Lock, name)
