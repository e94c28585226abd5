"""Named semaphores and crash-safe named locks."""

from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import Any

from . import _names
from ._args import check_open_args, check_timeout
from ._backend import MUTEX_OWNER_DIED, MUTEX_TIMEOUT
from ._backend import os_backend as _os
from ._base import Acquirable, mutex_error
from ._errors import CorruptedError
from ._segment import (
    HEADER_SIZE,
    Core,
    Kind,
    register_kind,
)
from ._wait import Spinner, wait

__all__ = ["Lock", "Semaphore"]

# Largest value a POSIX semaphore is guaranteed to hold (SEM_VALUE_MAX is
# 32767 on macOS and the POSIX minimum; Linux and Windows allow 2**31 - 1).
SEM_VALUE_MAX = 32767 if _os.PLATFORM == "darwin" else 2**31 - 1


class _SemaphoreKind(Kind):
    letter = "s"
    label = "Semaphore"

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def on_create(self, core: Core) -> None:
        os_name = _names.sibling(core.os_name, "v")
        core.resources["sem"] = _os.semaphore_open(os_name, True, self.initial, core.mode)

    def on_attach(self, core: Core) -> None:
        os_name = _names.sibling(core.os_name, "v")
        try:
            core.resources["sem"] = _os.semaphore_open(os_name, False, 0, 0)
        except FileNotFoundError:
            raise CorruptedError(
                f"the OS semaphore of {core.name!r} is missing", core.name
            ) from None

    def release(self, resources: dict[str, Any]) -> None:
        handle = resources.pop("sem", None)
        if handle is not None:
            _os.semaphore_close(handle)

    def remove_extras(self, seg_os_name: str) -> None:
        _os.semaphore_unlink(_names.sibling(seg_os_name, "v"))


register_kind(_SemaphoreKind())


class Semaphore(Acquirable):
    """A counting semaphore that any process can open by name.

    ``create=None`` opens the semaphore or creates it with ``initial``
    permits; ``True`` creates it (FileExistsError if it exists); ``False``
    attaches (FileNotFoundError if missing).  ``initial`` is used only when
    creating, as with ``sem_open``.  Permits that a process took and did not
    give back before it died stay taken: use :class:`Lock` where the holder
    may crash.
    """

    def __init__(
        self,
        name: str,
        *,
        create: bool | None = None,
        initial: int = 1,
        persistent: bool = False,
        permissions: int = 0o600,
    ) -> None:
        mode = check_open_args(name, create, persistent, permissions)
        if isinstance(initial, bool) or not isinstance(initial, int):
            raise TypeError(f"initial must be an int, not {type(initial).__name__}")
        if not 0 <= initial <= SEM_VALUE_MAX:
            raise ValueError(f"initial must be within 0..{SEM_VALUE_MAX}, got {initial}")
        core = Core(_SemaphoreKind(initial), name)
        core.open(create, bool(persistent), mode, (initial, None))
        self._handle: int = core.resources["sem"]
        self._spinner = Spinner()
        self._start(core)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit, like ``threading.Semaphore.acquire``.  Returns False
        if none came before ``timeout`` seconds (or at once if not blocking)."""
        # Arguments are checked and the general wait built only when a first
        # try fails: the common call finds a permit free.
        seconds = None if blocking is True and timeout is None else check_timeout(blocking, timeout)
        handle = self._handle
        self._enter()
        try:
            return _os.semaphore_trywait(handle) or wait(
                lambda s: _os.semaphore_wait(handle, s) if s else _os.semaphore_trywait(handle),
                blocking,
                seconds,
                self._check_open,
                self._spinner,
            )
        finally:
            self._leave()

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits, waking up to ``n`` waiters."""
        if n.__class__ is not int or n != 1:  # (bool is not int here)
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"n must be an int, not {type(n).__name__}")
            if n < 1:
                raise ValueError("n must be one or more")
        self._enter()
        try:
            if n > 1:
                # Posts go one by one on POSIX: refuse before the first one
                # where the value can be read (a race with other processes
                # can still stop it half-way; Windows posts all or none).
                value = _os.semaphore_value(self._handle)
                if value is not None and value + n > SEM_VALUE_MAX:
                    raise ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}")
            _os.semaphore_post(self._handle, n)
        except OSError as e:
            if e.errno in (errno.EOVERFLOW, errno.EINVAL) or getattr(e, "winerror", None) == 298:
                raise ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}") from None
            raise
        finally:
            self._leave()

    @property
    def value(self) -> int | None:
        """The current number of permits, or None where the OS cannot tell
        (macOS, Windows).  Another process may change it at any moment."""
        self._enter()
        try:
            return _os.semaphore_value(self._handle)
        finally:
            self._leave()

    def _state(self) -> str:
        value = self.value
        return "open" if value is None else f"value={value}"


class _LockKind(Kind):
    letter = "l"
    label = "Lock"

    def area_size(self, params: tuple[int, int]) -> int:
        return max(4096, mmap.PAGESIZE)  # the mutex is mapped a page at a time

    def tag(self) -> bytes:
        return _os.MUTEX_ABI.encode("ascii")

    def on_create(self, core: Core) -> None:
        assert core.mm is not None
        core.resources["mutex"] = _os.mutex_create(core.seg, core.mm, HEADER_SIZE)

    def on_attach(self, core: Core) -> None:
        assert core.mm is not None
        core.resources["mutex"] = _os.mutex_open(core.seg, core.mm, HEADER_SIZE)

    def release(self, resources: dict[str, Any]) -> None:
        mutex = resources.pop("mutex", None)
        if mutex is not None:
            _os.mutex_close(mutex)

    def remove_extras(self, seg_os_name: str) -> None:
        _os.mutex_unlink(seg_os_name, HEADER_SIZE)


register_kind(_LockKind())


class Lock(Acquirable):
    """A mutex any process can take by name, that survives its holder's crash.

    Interface of ``threading.Lock``, except that the lock is owned by the
    thread that acquired it: only that thread may release it.  If the holder
    dies (even by SIGKILL), the next ``acquire`` takes the lock over and sets
    :attr:`owner_died`, so the caller can repair what the holder left
    half-done.  On Linux this is a robust process-shared pthread mutex; on
    Windows a named mutex (WAIT_ABANDONED); elsewhere flock() on a lock file.
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
        core.open(create, bool(persistent), mode, (None, None))
        self._mutex = core.resources["mutex"]
        self._holder: tuple[int, int] | None = None  # (pid, thread) holding it
        #: True after an ``acquire`` that took the lock over from a dead holder
        self.owner_died = False
        self._spinner = Spinner()
        self._start(core)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; False if it stayed held until ``timeout``."""
        # As for Semaphore.acquire: the general wait only after a first try.
        seconds = None if blocking is True and timeout is None else check_timeout(blocking, timeout)
        mutex = self._mutex
        self._enter()
        try:
            outcome = _os.mutex_acquire(mutex, 0.0)
            if outcome == MUTEX_TIMEOUT:
                outcome = self._wait(mutex, blocking, seconds)
            if outcome != MUTEX_TIMEOUT:
                self._pin()  # the mutex stays mapped while held, even if closed
        except OSError as e:
            raise mutex_error(e, self.name) from None
        finally:
            self._leave()
        if outcome == MUTEX_TIMEOUT:
            return False
        self.owner_died = outcome == MUTEX_OWNER_DIED
        self._holder = _me()
        return True

    def _wait(self, mutex: Any, blocking: bool, seconds: float | None) -> int:
        outcome = [MUTEX_TIMEOUT]

        def attempt(s: float) -> bool:
            outcome[0] = _os.mutex_acquire(mutex, s)
            return outcome[0] != MUTEX_TIMEOUT

        wait(attempt, blocking, seconds, self._check_open, self._spinner)
        return outcome[0]

    def release(self) -> None:
        """Release the lock; RuntimeError if this thread does not hold it.
        The holder may release it after another thread closed the Lock."""
        if self._holder != _me():
            self._check_open()  # a closed Lock: ValueError, like every other call
            raise RuntimeError("release of a ctipc.Lock this thread does not hold")
        # Cleared before the OS release: once that returns, another thread
        # may already hold the lock and have set itself as holder.
        self._holder = None
        try:
            _os.mutex_release(self._mutex)
        except PermissionError:
            raise RuntimeError("release of a ctipc.Lock this thread does not hold") from None
        except OSError as e:
            self._holder = _me()
            raise mutex_error(e, self.name) from None
        except BaseException:
            self._holder = _me()
            raise
        self._leave()  # the hold taken by acquire: a closed Lock's handles go now

    def close(self) -> None:
        """Close (idempotent); a lock this thread holds is released first.
        A lock held by another thread of this process stays held until that
        thread releases it or the process exits."""
        if not self.closed and self._holder == _me():
            self.release()
        super().close()

    def _state(self) -> str:
        return "held" if self._holder is not None else "open"


def _me() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()

