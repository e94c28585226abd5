"""Named counting semaphores."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Callable

from . import _names
from ._args import check_open_args, check_timeout
from ._backend import SemaphoreHandle
from ._backend import os_backend as _os
from ._base import Acquirable
from ._errors import CorruptedError
from ._segment import Core, Kind, Resources, register_kind
from ._signals import held, pending
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
        #: the bound calls and their drop, made under the segment lock (see _backend)
        self.bound: tuple[Iterator[bool], Iterator[bool], Callable[[], None]] | None = None

    def on_create(self, core: Core) -> None:
        os_name = _names.sibling(core.os_name, "v")
        core.resources["sem"] = _os.semaphore_open(os_name, True, self.initial, core.mode)
        self._bind(core, os_name)

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
        self._bind(core, os_name)

    def _bind(self, core: Core, os_name: str) -> None:
        try:
            self.bound = _os.semaphore_bind(core.resources["sem"], os_name)
        except BaseException:
            self.release(core.resources)
            raise

    def release(self, resources: Resources) -> None:
        bound, self.bound = self.bound, None
        if bound is not None:
            bound[2]()
        handle = resources.pop("sem", None)
        if handle is not None:
            _os.semaphore_close(handle)

    def remove_extras(self, seg_os_name: str) -> None:
        _os.semaphore_unlink(_names.sibling(seg_os_name, "v"))


register_kind(_SemaphoreKind())

_NOTHING: Iterator[bool] = iter(())  # the bound calls of a closed Semaphore


def _past_the_maximum() -> ValueError:
    return ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}")


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
        kind = _SemaphoreKind(initial)
        core = Core(kind, name)
        core.open(create, bool(persistent), mode, (initial, None))
        self._handle: SemaphoreHandle = core.resources["sem"]
        assert kind.bound is not None
        self._tries, self._posts, _ = kind.bound
        self._spinner = Spinner()
        self._start(core)

    # The common calls make one bound call (see _backend): ``for took in
    # self._tries: break`` stores its result with no signal handler run in
    # between (see _signals), so an ``except`` clause knows whether this
    # call took or posted.  They mark nothing in flight: the bound calls
    # hold their own reference to the OS semaphore.

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit, like ``threading.Semaphore.acquire``.  Returns False
        if none came before ``timeout`` seconds (or at once if not blocking).
        An acquire that raised (e.g. KeyboardInterrupt) took no permit."""
        # Arguments are checked and the general wait built only when the
        # first try fails: the common call finds a permit free.
        seconds = None if blocking is True and timeout is None else check_timeout(blocking, timeout)
        if self._core.closing:
            self._check_open(first=True)
        posts = self._posts  # (for the repair: a close may drop the attribute)
        took = False
        taken: list[int] | None = None  # the general call's record: 0 once it took one
        try:
            for took in self._tries:  # noqa: B007 (read after it)
                break
            if took:
                return True
            taken = []
            return self._acquire_slow(blocking, seconds, taken)
        except BaseException:
            if took or taken:  # what the caller never got, given back
                took = False
                for took in posts:  # noqa: B007 (read after it)
                    break
                if not took:
                    self._release_slow(1)
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

        self._enter()
        try:
            return wait(attempt, blocking, seconds, self._check_open, self._spinner)
        finally:
            self._leave()

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits (at most ``RELEASE_MAX``), waking up to ``n``
        waiters.  A ``release()`` that raised (e.g. KeyboardInterrupt) gave
        nothing back.  ``release(n)`` posts one by one where the OS has no
        post of n (POSIX): an interrupted one may have posted some."""
        if n.__class__ is not int or n != 1:  # (bool is not int here)
            self._check_count(n)
        if self._core.closing:
            self._check_open(first=True)
        tries = self._tries  # (for the repair: a close may drop the attribute)
        posted = False
        try:
            if n == 1:
                for posted in self._posts:  # noqa: B007 (read after it)
                    break
        except BaseException as e:
            if posted:
                # Interrupted after the post: taken back, as the caller sees
                # a release that raised.
                for posted in tries:  # noqa: B007 (read after it)
                    break
            elif isinstance(e, ValueError) or (
                isinstance(e, OSError) and e.errno == errno.EOVERFLOW
            ):  # the bound post's: at the maximum
                raise _past_the_maximum() from None
            raise
        if not posted:
            self._release_slow(n)

    def _release_slow(self, n: int) -> None:
        self._enter()
        try:
            _os.semaphore_post(self._handle, n)
        except OSError as e:
            if e.errno == errno.EOVERFLOW:
                raise _past_the_maximum() from None
            raise
        finally:
            self._leave()

    def close(self) -> None:
        """Close (idempotent); see :meth:`Closable.close`."""
        super().close()
        # The bound calls' own reference to the OS semaphore goes too (a
        # call under way keeps it until it returns; a later one finds no
        # bound call and raises in the general path).
        self._tries = self._posts = _NOTHING

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
            raise _past_the_maximum()

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
