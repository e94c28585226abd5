"""What the public objects share: Closable (name, close, the one "closed"
flag, calls in flight) and Acquirable (``with`` acquires)."""

from __future__ import annotations

import errno
from types import TracebackType
from typing import NoReturn, TypeVar

from ._errors import CorruptedError
from ._lifetime import track
from ._segment import Core, park_if_exiting

__all__ = ["AcquireInWith", "Acquirable", "Closable", "ClosesOnExit"]


_T = TypeVar("_T", bound="ClosesOnExit")
_A = TypeVar("_A", bound="AcquireInWith")


class ClosesOnExit:
    """``with obj:`` returns the object and closes it when the block ends
    (the named objects, the Redis ones, and a backend)."""

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class Closable(ClosesOnExit):
    """What every named object shares: name, close, unlink, repr, ``with`` closes.

    "Closed" has one source, the core's ``closing`` flag, checked in one
    place (``_check_open``, which ``_enter`` and the waits use)."""

    _core: Core | None = None  # class default: nothing held, even after a failed __init__
    _inflight: list[object]  # the core's calls in flight (set by _start)

    @property
    def name(self) -> str:
        assert self._core is not None
        return self._core.name

    @property
    def closed(self) -> bool:
        core = self._core
        return core is None or core.closing

    def _start(self, core: Core) -> None:
        """End of a successful ``__init__``: the object is usable."""
        self._core = core
        #: the core's list of calls in flight, for the hot paths that mark
        #: themselves in it (Lock, Semaphore)
        self._inflight = core.inflight
        track(self, core)

    def close(self) -> None:
        """Close this process's handle (idempotent).  The object itself is
        removed when the last process that has it open closes it, unless it
        is persistent.  A call blocked in another thread raises ValueError
        within a fraction of a second; the handles are released when the
        last call in progress has ended."""
        core = self._core
        if core is not None:
            core.close()

    def _begin_close(self) -> None:
        """Make every call, in any thread, see the object as closed from now
        on (then ``close()`` finishes the job): for a close that first waits
        for other threads to leave."""
        core = self._core
        if core is not None:
            core.begin_close()

    def _enter(self) -> None:
        """Start of a call that uses OS handles or shared memory: pair with
        ``_leave``.  ValueError if the object is closed."""
        core = self._core
        if core is None:
            raise ValueError(f"{type(self).__name__} is closed")
        try:
            core.enter()
        except ValueError:
            raise ValueError(f"{type(self).__name__} is closed") from None

    def _leave(self) -> None:
        core = self._core
        if core is not None:
            core.leave()

    def _calls_in_flight(self) -> int:
        """Calls in progress in any thread (and Locks held), now."""
        core = self._core
        return 0 if core is None else len(core.inflight)

    def _pin(self) -> None:
        """Keep the handles past this call, until one more ``_leave`` (a Lock
        held by a thread keeps its mutex mapped even after ``close()``)."""
        core = self._core
        if core is not None:
            core.hold()

    def unlink(self) -> None:
        """Remove the object's name now (idempotent).  Processes that have it
        open keep using it; a later open by name creates a new object.  On
        Windows this does nothing: an object lives while any handle does."""
        if self._core is not None:
            self._core.unlink()

    def _check_open(self, first: bool = False) -> None:
        """ValueError if closed.  ``first``: the call has nothing to undo
        (no mark in flight, no registration), so at exit a thread other than
        the main one parks here instead (``park_if_exiting``)."""
        if self.closed:
            if first:
                park_if_exiting()
            raise ValueError(f"{type(self).__name__} is closed")

    def __reduce__(self) -> NoReturn:
        # What pickle, copy and multiprocessing call: the OS handles and the
        # mapping cannot travel, a name can.
        kind = type(self).__name__
        raise TypeError(
            f"a ctipc.{kind} cannot be pickled or sent to another process: pass its name "
            f"and open it there with ctipc.{kind}(name)"
        )

    def __repr__(self) -> str:
        core = self._core
        if core is None:
            return f"<ctipc.{type(self).__name__} (not open)>"
        state = "closed" if core.closing else self._state()
        return f"<ctipc.{type(self).__name__} name={core.name!r} {state}>"

    def _state(self) -> str:
        return "open"


def mutex_error(error: OSError, name: str) -> Exception:
    """The error to raise for an OSError from a mutex call: EINVAL means the
    mutex's bytes in shared memory are not a mutex (any more)."""
    if error.errno == errno.EINVAL:
        return CorruptedError(f"the mutex of {name!r} is corrupt", name)
    return error


class AcquireInWith:
    """``with obj:`` acquires and releases, as with ``threading`` (the Lock
    and Semaphore of every backend); ``contextlib.closing`` closes instead."""

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


class Acquirable(AcquireInWith, Closable):
    """Semaphore and Lock: named objects that ``with`` acquires and releases."""
