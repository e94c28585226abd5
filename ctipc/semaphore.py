"""Named counting semaphores."""

from __future__ import annotations

import errno
from typing import Callable

from . import _names
from ._args import check_open_args, check_timeout
from ._backend import SemaphoreHandle
from ._backend import os_backend as _os
from ._base import Acquirable
from ._errors import CorruptedError
from ._segment import Core, Kind, Resources, register_kind
from ._signals import CALL, held, pending
from ._wait import Spinner, wait

__all__ = ["Semaphore"]

#: Largest value a semaphore can hold (32767 on macOS, 2**31 - 1 elsewhere)
SEM_VALUE_MAX = _os.SEM_VALUE_MAX
#: Most permits one ``release(n)`` gives back (posts go one by one on POSIX:
#: 2**16 take about 50 ms; Windows posts n at once)
RELEASE_MAX = min(_os.RELEASE_MAX, SEM_VALUE_MAX)


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
        except CorruptedError as e:
            raise CorruptedError(f"the OS semaphore of {core.name!r}: {e}", core.name) from None

    def release(self, resources: Resources) -> None:
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

    # Set by _start, before any method can run (the hot paths rely on it).
    _core: Core

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
        self._handle: SemaphoreHandle = core.resources["sem"]
        try_wait, post = _os.semaphore_bind(self._handle)
        self._try_wait: tuple[Callable[[], int]] = (try_wait,)
        self._post: tuple[Callable[[], int]] = (post,)
        self._spinner = Spinner()
        self._start(core)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit, like ``threading.Semaphore.acquire``.  Returns False
        if none came before ``timeout`` seconds (or at once if not blocking).
        An acquire that raised (e.g. KeyboardInterrupt) took no permit."""
        # Arguments are checked and the general wait built only when a first
        # try fails: the common call finds a permit free.  The OS call and
        # its record in ``taken`` cannot be split by a signal handler's
        # exception (see _signals); ``call`` also marks this call in flight.
        seconds = None if blocking is True and timeout is None else check_timeout(blocking, timeout)
        call = map(CALL, self._try_wait)
        give_back = map(CALL, self._post)  # made now: the repair below makes no call
        taken: list[int] = []  # holds 0 once this call has a permit
        inflight = self._inflight
        inflight += (call,)
        core = self._core
        try:
            if core is None or core.closed:
                raise ValueError("Semaphore is closed")
            taken += call
            ok = taken[0] == 0 or self._acquire_slow(blocking, seconds, taken)
            inflight.remove(call)  # (``leave``, inline on the hot path)
            if not inflight and core.close_started:
                core.finish()
            return ok
        except BaseException:
            if 0 in taken:
                taken += give_back  # what the caller never got
            core.leave_call(call)
            raise

    def _acquire_slow(self, blocking: bool, seconds: float | None, taken: list[int]) -> bool:
        handle = self._handle

        def attempt(s: float) -> bool:
            with held():
                ok = _os.semaphore_wait(handle, s) if s else _os.semaphore_trywait(handle)
                if ok and pending():
                    # A signal came: its handler runs when the block ends,
                    # and an exception from it must find no permit taken.
                    _os.semaphore_post(handle, 1)
                    return False
                if ok:
                    taken.append(0)
            return ok

        return wait(attempt, blocking, seconds, self._check_open, self._spinner)

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits (at most ``RELEASE_MAX``), waking up to ``n``
        waiters.  A ``release()`` that raised (e.g. KeyboardInterrupt) gave
        nothing back.  ``release(n)`` posts one by one where the OS has no
        post of n (POSIX): an interrupted one may have posted some."""
        if n.__class__ is not int or n != 1:  # (bool is not int here)
            self._check_count(n)
        call = map(CALL, self._post)
        take_back = map(CALL, self._try_wait)  # made now: the repair below makes no call
        posted: list[int] = []
        inflight = self._inflight
        inflight += (call,)
        core = self._core
        try:
            if core is None or core.closed:
                raise ValueError("Semaphore is closed")
            if n == 1:
                posted += call
            if not posted or posted[0] != 0:
                posted.append(1)  # (the general call's work: not undone)
                _os.semaphore_post(self._handle, n)  # or raises why the bound post failed
            inflight.remove(call)  # (``leave``, inline on the hot path)
            if not inflight and core.close_started:
                core.finish()
        except OSError as e:
            core.leave_call(call)
            if e.errno == errno.EOVERFLOW:
                raise ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}") from None
            raise
        except BaseException:
            if posted == [0]:
                # Interrupted after the post: taken back, as the caller sees
                # a release that raised.
                posted += take_back
            core.leave_call(call)
            raise

    def _check_count(self, n: object) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 1:
            raise ValueError("n must be one or more")
        if n > RELEASE_MAX:
            raise ValueError(f"release(n) gives back at most {RELEASE_MAX} permits, not {n}")
        # Refused before the first post where the value can be read (a race
        # with other processes can still stop it half-way).
        value = self.value
        if value is not None and value + n > SEM_VALUE_MAX:
            raise ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}")

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
