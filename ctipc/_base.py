"""What Semaphore, Lock, SharedMemory and MessageQueue share."""

from __future__ import annotations

import atexit
import errno
import weakref
from types import TracebackType
from typing import TypeVar

from ._errors import CorruptedError
from ._segment import Core

__all__ = ["Acquirable", "Closable"]


_T = TypeVar("_T", bound="Closable")
_A = TypeVar("_A", bound="Acquirable")


class Closable:
    """What every named object shares: name, close, unlink, repr, ``with`` closes."""

    _core: Core | None = None  # class default: nothing held, even after a failed __init__
    # One entry per call in progress in any thread (list.append/pop are
    # atomic).  close() frees the OS handles those calls use only when none
    # is in progress; otherwise the last call to finish frees them.
    _inflight: list[object] = []  # replaced per instance by _start()

    @property
    def name(self) -> str:
        assert self._core is not None
        return self._core.name

    @property
    def closed(self) -> bool:
        return self._core is None or self._core.closed

    def _start(self, core: Core) -> None:
        """End of a successful ``__init__``: the object is usable."""
        self._inflight = []
        self._core = core
        track(self, core)

    def close(self) -> None:
        """Close this process's handle (idempotent).  The object itself is
        removed when the last process that has it open closes it, unless it
        is persistent.  A call blocked in another thread raises ValueError
        within a fraction of a second."""
        core = self._core
        if core is not None:
            core.close()
            if not self._inflight:
                core.kind.release(core.resources)

    def _enter(self) -> None:
        """Start of a call that uses OS handles: pair with ``_leave``."""
        self._inflight.append(None)
        core = self._core
        if core is None or core.closed:
            self._leave()
            raise ValueError(f"{type(self).__name__} is closed")

    def _leave(self) -> None:
        inflight = self._inflight
        inflight.remove(None)  # (not another call's own mark: see _signals)
        core = self._core
        if not inflight and core is not None and core.closed:
            core.kind.release(core.resources)

    def unlink(self) -> None:
        """Remove the object's name now (idempotent).  Processes that have it
        open keep using it; a later open by name creates a new object.  On
        Windows this does nothing: an object lives while any handle does."""
        if self._core is not None:
            self._core.unlink()

    def _check_open(self) -> None:
        if self._core is None or self._core.closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def __repr__(self) -> str:
        core = self._core
        if core is None:
            return f"<ctipc.{type(self).__name__} (not open)>"
        state = "closed" if core.closed else self._state()
        return f"<ctipc.{type(self).__name__} name={core.name!r} {state}>"

    def _state(self) -> str:
        return "open"

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def mutex_error(error: OSError, name: str) -> Exception:
    """The error to raise for an OSError from a mutex call: EINVAL means the
    mutex's bytes in shared memory are not a mutex (any more)."""
    if error.errno == errno.EINVAL:
        return CorruptedError(f"the mutex of {name!r} is corrupt", name)
    return error


class Acquirable(Closable):
    """Semaphore and Lock: ``with obj:`` acquires and releases (as with
    ``threading``); use ``contextlib.closing`` to close with ``with``."""

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self: _A) -> _A:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def track(owner: object, core: Core) -> None:
    """Tie ``core`` to the public object ``owner``.

    When ``owner`` is collected while still open, the core is closed with a
    ResourceWarning.  The kind's OS handles (a semaphore, a mutex mapping),
    which ``owner``'s methods use without a lock, are released only once
    ``owner`` is collected, when no thread can still be inside one of its
    methods: a ``close()`` racing another thread's call never frees memory
    that call is using (CPython's SemLock closes its semaphore in dealloc for
    the same reason).  The callbacks hold the core, never ``owner``.
    """
    core.finalizer = weakref.finalize(owner, core.close, True)
    # At exit _close_all closes instead, without warnings.  (typeshed gives
    # finalize empty __slots__; the atexit property does exist.)
    core.finalizer.atexit = False  # type: ignore[misc]
    weakref.finalize(owner, core.kind.release, core.resources).atexit = False  # type: ignore[misc]
    _LIVE.add(core)


_LIVE: weakref.WeakSet[Core] = weakref.WeakSet()


def _close_all() -> None:
    # Interpreter exit: detach everything this process still has open, so the
    # last process out removes its objects.  (Hosts that never run atexit are
    # covered too: their slots are reaped by the next open or by gc.)
    for core in list(_LIVE):
        try:
            core.close()
        except Exception:  # never raise at exit
            pass


atexit.register(_close_all)
