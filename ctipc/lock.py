"""Crash-safe named locks: a mutex any process can take by name, whose
holder's death is reported to the next holder (``owner_died``)."""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from typing import Any

from ._args import check_open_args, check_timeout
from ._backend import MUTEX_OWNER_DIED, MUTEX_TIMEOUT
from ._backend import os_backend as _os
from ._base import Acquirable, mutex_error
from ._header import HEADER_SIZE, Header
from ._segment import Core, Kind, register_kind
from ._wait import Spinner, wait

__all__ = ["Lock"]

_get_ident = threading.get_ident
# Every open Lock of this process: a forked child holds none of them (its
# thread idents repeat the parent's, so the record of the holder is cleared).
_LOCKS: weakref.WeakSet[Lock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_LOCKS):
        lock._holder = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _LockKind(Kind):
    letter = "l"
    label = "Lock"

    def area_size(self, params: tuple[int, int]) -> int:
        return max(4096, mmap.PAGESIZE)  # the mutex is mapped a page at a time

    def tag(self) -> bytes:
        return _os.MUTEX_ABI.encode("ascii")

    def on_create(self, core: Core) -> None:
        core.resources["mutex"] = _os.mutex_create(core.seg, HEADER_SIZE)

    def on_attach(self, core: Core) -> None:
        core.resources["mutex"] = _os.mutex_open(core.seg, HEADER_SIZE)

    def release(self, resources: dict[str, Any]) -> None:
        mutex = resources.pop("mutex", None)
        if mutex is not None:
            _os.mutex_close(mutex)

    def abandoned_held(self, seg: Any) -> bool:
        # Its holder died holding it: the Lock is about something that
        # outlives it (a database, a file), and the next acquire must
        # report owner_died, so the object is kept for it.
        return _os.mutex_abandoned(seg, HEADER_SIZE)

    def remove_extras(self, seg_os_name: str) -> None:
        _os.mutex_unlink(seg_os_name, HEADER_SIZE)


register_kind(_LockKind())


class Lock(Acquirable):
    """A mutex any process can take by name, that survives its holder's crash.

    Interface of ``threading.Lock``, except that the lock is owned by the
    thread that acquired it: only that thread may release it.  If the holder
    dies (even by SIGKILL), the next ``acquire`` takes the lock over and sets
    :attr:`owner_died`, so the caller can repair what the holder left
    half-done -- also when nobody else had the Lock open (it is kept, not
    removed, until that acquire; not on Windows, see docs/locks.md).  On
    Linux this is a robust process-shared pthread mutex; on Windows a named
    mutex (WAIT_ABANDONED); elsewhere flock() on a lock file.

    An exception raised by a signal handler inside ``acquire`` or
    ``release`` (Ctrl-C) leaves the lock as the caller believes: an
    ``acquire`` that raised holds nothing, a ``release`` that raised has
    released it.
    """

    def __init__(
        self,
        name: str,
        *,
        create: bool | None = None,
        persistent: bool = False,
        permissions: int = 0o600,
    ) -> None:
        mode = check_open_args(name, create, persistent, permissions)
        core = Core(_LockKind(), name)
        core.open(create, persistent, mode, (None, None), _no_check)
        self._mutex = core.resources["mutex"]
        try:
            self._try_lock, self._unlock = _os.mutex_bind(self._mutex)
        except BaseException:
            core.kind.release(core.resources)
            core.close()
            raise
        self._holder: int | None = None  # the thread of this process holding it
        #: True after an ``acquire`` that took the lock over from a dead holder
        self.owner_died = False
        self._spinner = Spinner()
        self._start(core)
        _LOCKS.add(self)

    # While held, the Lock counts as a call in progress (``_inflight``): its
    # OS resources are closed only after the holder released it, since a
    # robust mutex unmapped by its holder could never be taken over.

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Take the lock, like ``threading.Lock.acquire``; False if it stayed
        held until ``timeout`` seconds passed (or at once if not blocking)."""
        # The general wait is built only when the first try fails: the
        # common call finds the lock free.
        seconds = (
            None
            if blocking is True and (timeout is None or timeout == -1)
            else check_timeout(blocking, timeout)
        )
        self._enter()  # (before the try: if it raises, nothing is in flight)
        try:
            if self._try_lock() == 0:
                self.owner_died = False
                self._holder = _get_ident()
                return True
            return self._acquire_slow(blocking, seconds)
        except BaseException as e:
            self._interrupted_acquire()
            if isinstance(e, OSError):
                raise mutex_error(e, self.name) from None
            raise

    def _acquire_slow(self, blocking: bool, seconds: float | None) -> bool:
        mutex = self._mutex
        outcome = [MUTEX_TIMEOUT]

        def attempt(s: float) -> bool:
            outcome[0] = _os.mutex_acquire(mutex, s)
            return outcome[0] != MUTEX_TIMEOUT

        if not wait(attempt, blocking, seconds, self._check_open, self._spinner):
            self._leave()
            return False
        self.owner_died = outcome[0] == MUTEX_OWNER_DIED
        self._holder = _get_ident()
        return True

    def _interrupted_acquire(self) -> None:
        # An exception ended the acquire (a signal handler's at any point,
        # or an OS error): what this call took is given back.  A thread that
        # held the Lock before the call keeps it.
        if self._holder != _get_ident():
            try:
                if _os.mutex_held(self._mutex):
                    _os.mutex_release(self._mutex)
            finally:
                self._leave()
        else:
            self._leave()

    def release(self) -> None:
        """Release the lock; RuntimeError if this thread does not hold it.
        The holder may release it after another thread closed the Lock."""
        if self._holder != _get_ident():
            self._check_open()  # a closed Lock: ValueError, like every other call
            raise RuntimeError("release of a ctipc.Lock this thread does not hold")
        # Cleared before the OS release: once that returns, another thread
        # may already hold the lock and have set itself as holder.
        self._holder = None
        try:
            if self._unlock() != 0:
                _os.mutex_release(self._mutex)  # raises why, or finishes a close
        except PermissionError:
            self._leave()
            raise RuntimeError("release of a ctipc.Lock this thread does not hold") from None
        except OSError as e:
            self._holder = _get_ident()
            raise mutex_error(e, self.name) from None
        except BaseException:
            # Interrupted (a signal handler's exception): the release is
            # completed, so that no live thread holds what it believes free.
            if _os.mutex_held(self._mutex):
                _os.mutex_release(self._mutex)
            self._leave()
            raise
        self._leave()

    def locked(self) -> bool:
        """True while any thread of any process holds the lock (a snapshot,
        as ``threading.Lock.locked``).  A lock whose holder died holding it
        is not locked: the next ``acquire`` takes it at once."""
        self._enter()
        try:
            return _os.mutex_locked(self._mutex)
        except OSError as e:
            raise mutex_error(e, self.name) from None
        finally:
            self._leave()

    def close(self) -> None:
        """Close (idempotent); a lock this thread holds is released first.
        A lock held by another thread of this process stays held until that
        thread releases it or the process exits."""
        me = _get_ident()
        if self._core is not None and not self._core.closed and self._holder == me:
            self.release()
        super().close()

    def _state(self) -> str:
        return "held" if self._holder is not None else "open"


def _no_check(core: Core, header: Header) -> None:
    pass
