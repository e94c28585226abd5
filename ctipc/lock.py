"""Crash-safe named locks: a mutex any process can take by name, whose
holder's death is reported to the next holder (``owner_died``)."""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from itertools import repeat, starmap

from ._args import check_open_args, check_timeout
from ._backend import MUTEX_OWNER_DIED, MUTEX_TIMEOUT, Segment
from ._backend import os_backend as _os
from ._base import Acquirable, mutex_error
from ._header import HEADER_SIZE
from ._segment import Core, Kind, Resources, register_kind
from ._signals import held, pending
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
        assert core.seg is not None
        core.resources["mutex"] = _os.mutex_create(core.seg, HEADER_SIZE)

    def on_attach(self, core: Core) -> None:
        assert core.seg is not None
        core.resources["mutex"] = _os.mutex_open(core.seg, HEADER_SIZE)

    def release(self, resources: Resources) -> None:
        mutex = resources.pop("mutex", None)
        if mutex is not None:
            _os.mutex_close(mutex)

    def abandoned_held(self, seg: Segment) -> bool:
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

    An exception raised by a signal handler inside ``acquire`` (Ctrl-C)
    leaves nothing held; see ``release`` for an interrupted release.
    """

    # Set by _start, before any method can run (the hot paths rely on it).
    _core: Core

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
        core.open(create, persistent, mode, (None, None))
        self._mutex = core.resources["mutex"]
        try:
            try_lock, unlock = _os.mutex_bind(self._mutex)
        except BaseException:
            core.kind.release(core.resources)
            core.close()
            raise
        self._intact = _os.mutex_intact(self._mutex)  # asked before each bound try
        # The bound calls as endless iterators, made once: ``for rc in
        # self._tries: break`` makes one and stores its result with no
        # signal handler run in between (see _signals).
        self._tries: Iterator[int] = starmap(try_lock, repeat(()))
        self._unlocks: Iterator[int] = starmap(unlock, repeat(()))
        # The mutex's holder-only bytes, taken at each acquire and compared
        # before the release: garbage written meanwhile is CorruptedError,
        # never a crash in the OS release (docs/locks.md).
        self._words_now = _os.mutex_state(self._mutex)
        self._snap = b""
        self._holder: int | None = None  # the thread of this process holding it
        self._held: object = None  # its mark in _inflight while held
        #: True after an ``acquire`` that took the lock over from a dead holder
        self.owner_died = False
        self._spinner = Spinner(yields=True)
        self._start(core)
        _LOCKS.add(self)

    # While held, the Lock counts as a call in progress (``_inflight``, marked
    # by ``_held``): its OS resources are closed only after the holder
    # released it, since a robust mutex unmapped by its holder could never
    # be taken over.  The OS call and its record cannot be split by a
    # signal handler's exception (see _signals).

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Take the lock, like ``threading.Lock.acquire``; False if it stayed
        held until ``timeout`` seconds passed (or at once if not blocking).
        An acquire that raised (e.g. KeyboardInterrupt) holds nothing."""
        # The general wait is built only when the first try fails: the
        # common call finds the lock free.
        seconds = (
            None
            if blocking is True and (timeout is None or timeout == -1)
            else check_timeout(blocking, timeout)
        )
        me = _get_ident()
        had = self._holder == me  # (then this acquire blocks, as threading's)
        rc = -1  # the bound try's result: 0 once it took the mutex
        got: list[int] | None = None  # the wait's record: [rc, MUTEX_*] once it took it
        # Past the closed check: only then are the mutex's words mapped for
        # the repair below (a close that finished before this call's mark
        # has unmapped them; one that begins after it waits for the call).
        opened = False
        mark = object()  # this call's own, in flight
        inflight = self._inflight
        inflight += (mark,)
        core = self._core
        try:
            if core is None or core.closed:
                raise ValueError("Lock is closed")
            opened = True
            if self._intact():  # (else not tried: the general call says why, or repairs)
                for rc in self._tries:  # noqa: B007 (read after it)
                    break
            if rc == 0:
                self.owner_died = False
            else:
                got = [rc]
                if not self._acquire_slow(blocking, seconds, got):
                    core.leave_call(mark)
                    return False
                self.owner_died = got[-1] == MUTEX_OWNER_DIED
            self._snap = self._words_now()
            self._holder = me
            self._held = mark  # stays in flight while held
            return True
        except BaseException as e:
            if opened and not had:
                # Taken by this call, whose caller sees it raise: given back.
                # (Not taken: another thread may hold it, and stays the holder.)
                if rc == 0 or (got is not None and len(got) > 1):
                    self._holder = None
                    for rc in self._unlocks:  # noqa: B007 (made once: the repair makes no call)
                        break
                elif _os.mutex_held(self._mutex):
                    # (a takeover the try began, or a bound try interrupted
                    # after it took the mutex)
                    self._holder = None
                    _os.mutex_release(self._mutex)
            core.leave_call(mark)
            if isinstance(e, OSError):
                raise mutex_error(e, self.name) from None
            raise

    def _acquire_slow(self, blocking: bool, seconds: float | None, got: list[int]) -> bool:
        mutex = self._mutex

        def attempt(s: float) -> bool:
            with held():
                outcome = _os.mutex_acquire(mutex, s)
                if outcome != MUTEX_TIMEOUT and pending():
                    # A signal came: its handler runs when the block ends,
                    # and an exception from it must find the lock not taken.
                    _os.mutex_release(mutex)
                    return False
                if outcome != MUTEX_TIMEOUT:
                    got.append(outcome)
            return outcome != MUTEX_TIMEOUT

        return wait(attempt, blocking, seconds, self._check_open, self._spinner)

    def release(self) -> None:
        """Release the lock; RuntimeError if this thread does not hold it.
        The holder may release it after another thread closed the Lock.  A
        release interrupted by an exception (e.g. KeyboardInterrupt) is
        completed, unless the exception came at its very first instruction,
        before anything was done: calling release() again settles it
        (RuntimeError once it is released)."""
        me = _get_ident()
        if self._holder != me:
            self._check_open(first=True)  # a closed Lock: ValueError, like every other call
            raise RuntimeError("release of a ctipc.Lock this thread does not hold")
        done: int | None = None  # the OS release's result, once made
        held_call, core, snap = self._held, self._core, self._snap
        # Cleared before the OS release: once that returns, another thread
        # may already hold the lock and have set itself as holder.
        self._holder = None
        try:
            if self._words_now() == snap:
                for done in self._unlocks:  # noqa: B007 (read after it)
                    break
            else:  # garbage written into it (raises), or links moved by others
                _os.mutex_release(self._mutex, snap)
                done = 0
            if done != 0:
                _os.mutex_release(self._mutex)  # raises why, or finishes a close
            inflight = self._inflight
            inflight.remove(held_call)  # (``leave``, inline on the hot path)
            if not inflight and core is not None and core.close_started:
                core.finish()
        except PermissionError:
            core.leave_call(held_call)
            raise RuntimeError("release of a ctipc.Lock this thread does not hold") from None
        except OSError as e:
            if _os.mutex_held(self._mutex):
                self._holder = me
            else:  # released (a garbled mutex repaired) or no longer this thread's
                core.leave_call(held_call)
            raise mutex_error(e, self.name) from None
        except BaseException:
            # Interrupted before the OS release: it is completed.
            # (No call between the test and the release: the compare with
            # the snapshot is not made again here, docs/locks.md.)
            if done is None:
                for done in self._unlocks:  # noqa: B007
                    break
            core.leave_call(held_call)
            raise

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
