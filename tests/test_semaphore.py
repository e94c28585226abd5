"""ctipc.Semaphore: open modes, counting, blocking across processes, close."""

from __future__ import annotations

import os
import time

import pytest
from helpers import DEADLINE, Child, exists, semaphore_path

import ctipc
from ctipc._semlock import NOT_BOUND
from ctipc.semaphore import RELEASE_MAX, SEM_VALUE_MAX

needs_value = pytest.mark.skipif(
    not ctipc.SEMAPHORE_VALUE_READABLE, reason="the OS cannot report a semaphore's value"
)


def permits(sem: ctipc.Semaphore) -> int:
    """Count the permits by taking them all (works where ``value`` does not),
    then give them back."""
    n = 0
    while sem.acquire(blocking=False):
        n += 1
    if n:
        sem.release(n)
    return n


# -- open modes -----------------------------------------------------------------------


def test_create_none_creates_then_attaches(name: str) -> None:
    a = ctipc.Semaphore(name, initial=2)
    try:
        b = ctipc.Semaphore(name, initial=5)  # attaches: initial only counts at create
        try:
            assert permits(b) == 2
            assert b.acquire(blocking=False)
            assert permits(a) == 1
            b.release()
        finally:
            b.close()
    finally:
        a.close()


def test_create_true_on_existing_raises_file_exists(name: str) -> None:
    with_sem = ctipc.Semaphore(name, create=True)
    try:
        with pytest.raises(FileExistsError) as info:
            ctipc.Semaphore(name, create=True)
        assert info.value.filename == name
        # the existing object is untouched by the failed create
        assert permits(with_sem) == 1
    finally:
        with_sem.close()


def test_create_false_on_missing_raises_file_not_found(name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ctipc.Semaphore(name, create=False)
    assert info.value.filename == name
    assert not exists(ctipc.Semaphore, name)  # and did not create it


def test_create_false_attaches(name: str) -> None:
    a = ctipc.Semaphore(name, create=True, initial=0)
    b = ctipc.Semaphore(name, create=False)
    try:
        b.release()
        assert a.acquire(timeout=DEADLINE)
    finally:
        b.close()
        a.close()


@pytest.mark.parametrize("initial", [0, 1, 3, 100])
def test_initial_value(name: str, initial: int) -> None:
    sem = ctipc.Semaphore(name, initial=initial)
    try:
        for _ in range(initial):
            assert sem.acquire(blocking=False)
        assert not sem.acquire(blocking=False)
    finally:
        sem.close()


def test_default_initial_is_one(name: str) -> None:
    sem = ctipc.Semaphore(name)
    try:
        assert permits(sem) == 1
    finally:
        sem.close()


def test_initial_at_the_maximum(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=SEM_VALUE_MAX)
    try:
        assert sem.acquire(blocking=False)
        sem.release()
        with pytest.raises(ValueError):
            sem.release()  # would exceed SEM_VALUE_MAX
        assert sem.acquire(blocking=False)
        sem.release()
    finally:
        sem.close()


@needs_value
def test_release_n_past_the_maximum_changes_nothing(name: str) -> None:
    """release(n) that would overflow raises ValueError and posts nothing
    (Windows' ReleaseSemaphore is all-or-nothing; POSIX must match)."""
    sem = ctipc.Semaphore(name, initial=SEM_VALUE_MAX - 1)
    try:
        with pytest.raises(ValueError):
            sem.release(3)
        assert sem.value == SEM_VALUE_MAX - 1
    finally:
        sem.close()


# -- acquire / release ----------------------------------------------------------------


def test_acquire_blocks_across_processes_until_released(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        code = """
            sem = ctipc.Semaphore(sys.argv[1], create=False)
            out("waiting")
            ok = sem.acquire()
            out("acquired" if ok else "failed")
            inp()
            sem.close()
        """
        with Child(code, name) as child:
            child.expect("waiting")
            assert child.silent_for(0.3), "acquire returned without a permit"
            sem.release()
            child.expect("acquired")
            child.send()
            child.finish()
        assert not sem.acquire(blocking=False)  # the child took the one permit
    finally:
        sem.close()


def test_timed_acquire_succeeds_when_released_by_another_process(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        code = """
            sem = ctipc.Semaphore(sys.argv[1], create=False)
            out("waiting")
            start = time.monotonic()
            ok = sem.acquire(timeout=30)
            out(f"{ok} {time.monotonic() - start < 30}")
            sem.close()
        """
        with Child(code, name) as child:
            child.expect("waiting")
            sem.release()
            child.expect("True True")
            child.finish()
    finally:
        sem.close()


def test_release_wakes_the_other_process_acquire_with_many(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        code = """
            sem = ctipc.Semaphore(sys.argv[1], create=False)
            out("waiting")
            for i in range(3):
                assert sem.acquire(timeout=30)
            out("got 3")
            sem.close()
        """
        with Child(code, name) as child:
            child.expect("waiting")
            sem.release(3)
            child.expect("got 3")
            child.finish()
        assert not sem.acquire(blocking=False)
    finally:
        sem.close()


@pytest.mark.parametrize("timeout", [0.3, 1])
def test_acquire_timeout_returns_false_after_about_the_timeout(name: str, timeout: float) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        start = time.monotonic()
        assert sem.acquire(timeout=timeout) is False
        elapsed = time.monotonic() - start
        assert 0.8 * timeout <= elapsed < timeout + 5
    finally:
        sem.close()


def test_acquire_timeout_zero_and_nonblocking_do_not_wait(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        start = time.monotonic()
        assert sem.acquire(blocking=False) is False
        assert sem.acquire(timeout=0) is False
        assert time.monotonic() - start < 5
        sem.release()
        assert sem.acquire(blocking=False) is True
        sem.release()
        assert sem.acquire(timeout=0) is True
    finally:
        sem.close()


def test_acquire_timeout_minus_one_means_forever(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=1)
    try:
        assert sem.acquire(timeout=-1) is True  # as threading.Semaphore
        sem.release()
        assert sem.acquire(True, None) is True  # positional form, as threading
    finally:
        sem.close()


def test_acquire_returns_true_with_a_permit(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=2)
    try:
        assert sem.acquire() is True
        assert sem.acquire(True, 5) is True
        assert sem.acquire(blocking=False) is False
    finally:
        sem.close()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"timeout": -0.5}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"blocking": False, "timeout": 1}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"timeout": True}, TypeError),
    ],
)
def test_acquire_bad_timeout(name: str, kwargs: dict, error: type) -> None:
    sem = ctipc.Semaphore(name, initial=1)
    try:
        with pytest.raises(error):
            sem.acquire(**kwargs)
        assert permits(sem) == 1  # nothing taken
    finally:
        sem.close()


def test_release_n(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        sem.release(5)
        assert permits(sem) == 5
        sem.release()
        assert permits(sem) == 6
    finally:
        sem.close()


def test_release_n_up_to_the_limit_at_once_beyond_it_refused(name: str) -> None:
    """release(n) is bounded (POSIX posts one by one: 2**31 posts would take
    half an hour): RELEASE_MAX at most, refused before anything is posted."""
    sem = ctipc.Semaphore(name, initial=0)
    try:
        with pytest.raises(ValueError, match="at most"):
            sem.release(RELEASE_MAX + 1)
        with pytest.raises(ValueError):
            sem.release(2**31)
        assert not sem.acquire(blocking=False)  # nothing posted
        sem.release(RELEASE_MAX)
        assert permits(sem) == RELEASE_MAX
    finally:
        sem.close()


@pytest.mark.parametrize(
    "n, error", [(0, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)]
)
def test_release_bad_n(name: str, n: object, error: type) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        with pytest.raises(error):
            sem.release(n)  # type: ignore[arg-type]
        assert permits(sem) == 0
    finally:
        sem.close()


@needs_value
def test_value(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=3)
    try:
        assert sem.value == 3
        sem.acquire()
        assert sem.value == 2
        sem.release(4)
        assert sem.value == 6
        other = ctipc.Semaphore(name, create=False)
        try:
            assert other.value == 6
        finally:
            other.close()
        assert "value=6" in repr(sem)
    finally:
        sem.close()


@needs_value
def test_value_seen_by_another_process(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=7)
    try:
        code = """
            with_sem = ctipc.Semaphore(sys.argv[1], create=False)
            out(with_sem.value)
            with_sem.acquire()
            with_sem.close()
        """
        with Child(code, name) as child:
            child.expect("7")
            child.finish()
        assert sem.value == 6
    finally:
        sem.close()


def test_context_manager_acquires_and_releases(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=1)
    try:
        with sem as entered:
            assert entered is sem
            assert not sem.acquire(blocking=False)
        assert permits(sem) == 1
        with pytest.raises(KeyError):
            with sem:
                raise KeyError("released on the way out")
        assert permits(sem) == 1
    finally:
        sem.close()


# -- close / unlink -----------------------------------------------------------------


def test_close_and_unlink_are_idempotent(name: str) -> None:
    sem = ctipc.Semaphore(name)
    assert not sem.closed
    sem.close()
    sem.close()
    assert sem.closed
    sem.unlink()
    sem.unlink()
    assert not exists(ctipc.Semaphore, name)


def test_unlink_then_close(name: str) -> None:
    sem = ctipc.Semaphore(name)
    try:
        sem.unlink()
        sem.unlink()
        assert not exists(ctipc.Semaphore, name)
        # still usable by whoever has it open
        sem.release()
        assert sem.acquire(blocking=False)
    finally:
        sem.close()
        sem.close()


@pytest.mark.parametrize(
    "use",
    [
        lambda s: s.acquire(),
        lambda s: s.acquire(blocking=False),
        lambda s: s.release(),
        lambda s: s.value,
        lambda s: s.__enter__(),
    ],
)
def test_use_after_close_raises_value_error(name: str, use) -> None:
    sem = ctipc.Semaphore(name)
    sem.close()
    with pytest.raises(ValueError):
        use(sem)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="no /proc/self/maps here")
def test_close_unmaps_the_os_semaphore(name: str) -> None:
    """The bound calls' own reference to the OS semaphore goes with close()
    (also for an object that stays referenced), as the general handle does."""
    sem = ctipc.Semaphore(name)
    # (by inode: the creator's mapping is of the file glibc made and renamed)
    inode = str(os.stat(semaphore_path(name)).st_ino)

    def mapped() -> bool:
        with open("/proc/self/maps") as maps:
            return any(len(f) > 5 and f[4] == inode for f in map(str.split, maps))

    try:
        assert sem.acquire(blocking=False)
        sem.release()
        assert mapped()
    finally:
        sem.close()
    assert not mapped()


@pytest.mark.parametrize("initial", [0, 1])
def test_the_general_calls_alone_keep_every_promise(name: str, initial: int) -> None:
    """Where nothing binds (an interpreter without the stdlib's C semaphore),
    every call takes the general path: white box, with the binding gone."""
    sem = ctipc.Semaphore(name, initial=initial)
    sem._tries, sem._posts, _ = NOT_BOUND
    try:
        assert sem.acquire(blocking=False) is bool(initial)
        assert sem.acquire(timeout=0.01) is False
        sem.release()
        assert sem.acquire(timeout=DEADLINE)
        sem.release(2)
        assert sem.acquire(blocking=False) and sem.acquire(blocking=False)
        assert sem.acquire(blocking=False) is False
    finally:
        sem.close()
    with pytest.raises(ValueError):
        sem.release()


def test_name_and_repr(name: str) -> None:
    sem = ctipc.Semaphore(name)
    try:
        assert sem.name == name
        assert name in repr(sem)
    finally:
        sem.close()
    assert "closed" in repr(sem)
