"""Lock and Semaphore against CPython's own tests of threading.Lock and
threading.Semaphore (``test.lock_tests``), through a thin adapter, plus the
interface details those tests do not cover.

What differs, by design: a ctipc Lock belongs to the thread that acquired it,
so only that thread may release it (``test_different_thread`` is skipped);
the repr is ctipc's own; a Lock is closed explicitly rather than by ``del``.
"""

from __future__ import annotations

import itertools
import os
import threading
import unittest
from typing import Any

import pytest
from helpers import Child

import ctipc

lock_tests = pytest.importorskip("test.lock_tests", reason="CPython's test package is absent")

_counter = itertools.count()


class _Made:
    """Every object one test made, closed at its end."""

    objects: list[Any] = []

    @classmethod
    def name(cls) -> str:
        return f"lt{os.getpid()}x{next(_counter)}"

    @classmethod
    def close_all(cls) -> None:
        for obj in cls.objects:
            if not obj.closed:
                # (a thread of a failed test may still hold it)
                try:
                    obj.close()
                except RuntimeError:
                    pass
        cls.objects.clear()


def _lock() -> ctipc.Lock:
    lock = ctipc.Lock(_Made.name())
    _Made.objects.append(lock)
    return lock


def _semaphore(value: int = 1) -> ctipc.Semaphore:
    sem = ctipc.Semaphore(_Made.name(), initial=value)
    _Made.objects.append(sem)
    return sem


_NOT_OURS = {
    "test_different_thread": "only the holder thread releases a ctipc.Lock",
    "test_reacquire": "only the holder thread releases a ctipc.Lock",
    "test_weakref_deleted": "an open object dropped unclosed warns (ResourceWarning)",
    "test_repr": "ctipc's repr names the object",
    "test_locked_repr": "ctipc's repr names the object",
    "test_at_fork_reinit": "a private hook of threading.Lock",
    "test_acquire_destroy": "a ctipc.Lock is closed, not dropped while held",
}


def _adapt(base: type, factory_attr: str, factory: Any) -> type:
    body: dict[str, Any] = {factory_attr: staticmethod(factory)}
    for attr, why in _NOT_OURS.items():
        if hasattr(base, attr):
            body[attr] = unittest.skip(why)(lambda self: None)

    def tearDown(self: Any) -> None:  # noqa: N802 - unittest's name
        _Made.close_all()
        base.tearDown(self)

    body["tearDown"] = tearDown
    return type(f"Ctipc{base.__name__}", (base,), body)


CtipcLockTests = _adapt(lock_tests.LockTests, "locktype", _lock)
CtipcSemaphoreTests = _adapt(lock_tests.SemaphoreTests, "semtype", _semaphore)


def test_locked_is_seen_by_another_process(name: str) -> None:
    code = """
        lock = ctipc.Lock(sys.argv[1], create=False)
        out(lock.locked())
        inp()
        out(lock.locked())
        lock.close()
    """
    lock = ctipc.Lock(name)
    try:
        assert lock.acquire()
        with Child(code, name) as child:
            assert child.readline() == "True"
            lock.release()
            child.send()
            assert child.readline() == "False"
            child.finish()
    finally:
        lock.close()


def test_locked_after_a_thread_holds_it(name: str) -> None:
    lock = ctipc.Lock(name)
    try:
        got = threading.Event()
        done = threading.Event()

        def hold() -> None:
            assert lock.acquire()
            got.set()
            done.wait(10)
            lock.release()

        t = threading.Thread(target=hold)
        t.start()
        assert got.wait(10)
        assert lock.locked()
        assert not lock.acquire(timeout=0.01)  # CPython's test_state_after_timeout
        done.set()
        t.join(10)
        assert not lock.locked()
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        lock.close()


@pytest.mark.parametrize("cls", [ctipc.Lock, ctipc.Semaphore])
def test_acquire_arguments_as_threading(name: str, cls: type) -> None:
    obj = cls(name)
    try:
        assert obj.acquire(True, -1) if cls is ctipc.Lock else obj.acquire(True, None)
        obj.release()
        with pytest.raises(ValueError):
            obj.acquire(False, 1)
        with pytest.raises(ValueError):
            obj.acquire(timeout=-5)
        with pytest.raises(TypeError):
            obj.acquire(timeout="1")
        with pytest.raises(OverflowError):
            obj.acquire(timeout=threading.TIMEOUT_MAX * 2)
        assert obj.acquire(timeout=threading.TIMEOUT_MAX)
        obj.release()
    finally:
        obj.close()


def test_locked_on_a_closed_lock_raises(name: str) -> None:
    lock = ctipc.Lock(name)
    lock.close()
    with pytest.raises(ValueError):
        lock.locked()
