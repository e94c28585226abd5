"""An in-memory implementation of the ``ctipc._backend.Backend`` protocol.

It lets the portable layer (``_segment``, ``semaphore``, ``shm``) run without
the OS, and checks that the portable layer keeps the backend's contract: a
call with a closed or unknown handle, a mapping at an offset that is not a
multiple of ``mmap.ALLOCATIONGRANULARITY`` or beyond the segment, an unlock
of a segment lock that is not held, a nested lock, a handle closed while its
mappings are still open, or a wait longer than one ``WAIT_SLICE`` raises
:class:`ContractError`.

Processes are simulated: :meth:`FakeBackend.getpid` is what the portable layer
sees as ``os.getpid()`` (per thread, so a thread can play another process);
:meth:`FakeBackend.kill` makes a pid dead for :meth:`process_token`.

With ``kernel_lifetime=True`` it behaves like Windows: an object dies with its
last handle, ``*_unlink`` do nothing, ``persistent`` is unsupported, and a
segment's size is unknown (``None``).

Shared memory is a real temporary file per segment, mapped with
``mmap.mmap(fd, length, offset=offset)`` so that every mapping of a segment
shares the same memory.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from ctipc._backend import MUTEX_ACQUIRED, MUTEX_OWNER_DIED, MUTEX_TIMEOUT, WAIT_SLICE

if TYPE_CHECKING:
    from ctipc._backend import Backend

#: largest value of a fake semaphore (as Linux and Windows)
SEM_MAX = 2**31 - 1
_SLICE_SLACK = 1e-6


class ContractError(AssertionError):
    """The portable layer called the backend in a way its contract forbids."""


def _oserror(code: int, name: str | None) -> OSError:
    return OSError(code, os.strerror(code), name)


class _SegmentObject:
    """The OS object behind a name (outlives its name once unlinked)."""

    def __init__(self, os_name: str, path: str, size: int, mode: int) -> None:
        self.os_name = os_name
        self.path = path
        self.size = size
        self.mode = mode
        self.handles: set[FakeSegment] = set()
        self.lock_owner: FakeSegment | None = None
        self.mutexes: dict[int, _MutexState] = {}
        self.named = True
        self.owner = os.geteuid() if hasattr(os, "geteuid") else 0
        self.created = time.time()


class FakeSegment:
    """A handle to a segment (what ``segment_create``/``segment_attach`` return)."""

    def __init__(self, backend: FakeBackend, obj: _SegmentObject) -> None:
        self._backend = backend
        self.obj = obj
        self.os_name = obj.os_name
        self.closed = False
        self.maps: list[mmap.mmap] = []
        self.pid = backend.getpid()

    @property
    def size(self) -> int | None:
        if self.closed:
            raise ContractError("size of a closed segment handle")
        return None if self._backend.KERNEL_LIFETIME else self.obj.size

    @property
    def identity(self) -> object:
        return None if self._backend.KERNEL_LIFETIME else id(self.obj)

    @property
    def other_owner(self) -> int | None:
        owner = self.obj.owner
        mine = os.geteuid() if hasattr(os, "geteuid") else 0
        return None if self._backend.KERNEL_LIFETIME or owner == mine else owner

    @property
    def age(self) -> float:
        return time.time() - self.obj.created


class _Semaphore:
    def __init__(self, os_name: str, value: int) -> None:
        self.os_name = os_name
        self.value = value
        self.handles = 0
        self.named = True


class _MutexState:
    def __init__(self) -> None:
        self.owner: tuple[int, int] | None = None  # (pid, thread ident)
        # a bound try_lock took it from a dead owner: the next acquire says so
        self.died_pending: tuple[int, int] | None = None


class FakeMutex:
    def __init__(self, seg: FakeSegment, state: _MutexState) -> None:
        self.seg_obj = seg.obj
        self.state = state
        self.closed = False


class FakeBackend:
    """One fake machine: its namespaces, processes and clock-free waits."""

    MUTEX_ABI = "fake-mutex-v1"
    TIMED_WAIT_NATIVE = True
    SEM_VALUE = True
    ROBUST_MUTEX = True
    CAN_LIST = True
    SEM_VALUE_MAX = SEM_MAX
    RELEASE_MAX = 2**16
    NAMESPACES: tuple[str, ...] = ()
    STORES_ORDERED = True

    def __init__(self, directory: str, kernel_lifetime: bool = False, pid: int = 1000) -> None:
        self.PLATFORM = "fake-win" if kernel_lifetime else "fake-posix"
        self.KERNEL_LIFETIME = kernel_lifetime
        self.PERSISTENT = not kernel_lifetime
        self._dir = directory
        self._cond = threading.Condition(threading.RLock())
        self._files = itertools.count()
        self._handles = itertools.count(1000)
        self.segments: dict[str, _SegmentObject] = {}
        self.semaphores: dict[str, _Semaphore] = {}
        self._sem_handles: dict[int, _Semaphore] = {}
        self._mutexes: list[FakeMutex] = []
        self._all_segment_handles: list[FakeSegment] = []
        self.calls: dict[str, int] = {}
        # processes: pid -> start token of the live ones
        self._tokens: dict[int, int] = {}
        self._token_counter = itertools.count(1)
        self._thread_pid: dict[int, int] = {}
        self.main_pid = pid
        self.spawn(pid)

    # -- simulated processes -------------------------------------------------------
    def spawn(self, pid: int) -> int:
        """Make ``pid`` a live process (a new one, if the pid is reused)."""
        with self._cond:
            self._tokens[pid] = next(self._token_counter)
            self._cond.notify_all()
        return pid

    def kill(self, pid: int) -> None:
        """``pid`` dies: mutexes it holds become owner-died for the next taker."""
        with self._cond:
            self._tokens.pop(pid, None)
            self._cond.notify_all()

    def getpid(self) -> int:
        return self._thread_pid.get(threading.get_ident(), self.main_pid)

    @contextmanager
    def as_process(self, pid: int) -> Iterator[None]:
        """Make the calling thread act as process ``pid`` (spawned if new)."""
        if pid not in self._tokens:
            self.spawn(pid)
        me = threading.get_ident()
        old = self._thread_pid.get(me)
        self._thread_pid[me] = pid
        try:
            yield
        finally:
            if old is None:
                del self._thread_pid[me]
            else:
                self._thread_pid[me] = old

    def process_token(self, pid: int) -> int | None:
        self._count("process_token")
        return self._tokens.get(pid)

    def signal_mask_bind(self, signums: Any) -> None:
        return None  # the portable layer's tests run no signal handlers through it

    def yield_cpu(self) -> None:
        time.sleep(0)  # (the fake's threads share the GIL: give it up)

    def process_exists(self, pid: int) -> bool:
        self._count("process_exists")
        return pid in self._tokens

    def pid_namespace(self) -> int:
        return 4026531836

    # -- accounting ---------------------------------------------------------------------
    def _count(self, fn: str) -> None:
        self.calls[fn] = self.calls.get(fn, 0) + 1

    def open_handles(self) -> dict[str, int]:
        """What is still open: segment handles, mappings, semaphore handles, mutexes."""
        return {
            "segments": sum(1 for h in self._all_segment_handles if not h.closed),
            "maps": sum(1 for h in self._all_segment_handles for m in h.maps if not m.closed),
            "semaphores": len(self._sem_handles),
            "mutexes": sum(1 for m in self._mutexes if not m.closed),
        }

    def locks_held(self) -> list[str]:
        return [o.os_name for o in self.segments.values() if o.lock_owner is not None]

    # -- shared memory ------------------------------------------------------------------
    def _segment(self, seg: object) -> FakeSegment:
        if not isinstance(seg, FakeSegment) or seg._backend is not self:
            raise ContractError(f"not a segment handle of this backend: {seg!r}")
        if seg.closed:
            raise ContractError(f"segment handle {seg.os_name} used after segment_close")
        return seg

    def _new_handle(self, obj: _SegmentObject) -> FakeSegment:
        handle = FakeSegment(self, obj)
        obj.handles.add(handle)
        self._all_segment_handles.append(handle)
        return handle

    def segment_create(self, os_name: str, size: int, mode: int, timeout: float) -> FakeSegment:
        self._count("segment_create")
        if not isinstance(size, int) or size <= 0:
            raise ContractError(f"segment_create size {size!r}")
        if not isinstance(os_name, str) or not os_name:
            raise ContractError(f"segment_create os_name {os_name!r}")
        if not 0 <= timeout <= WAIT_SLICE + _SLICE_SLACK:
            raise ContractError(
                f"segment_create waits {timeout} s for its lock: must be one slice"
            )
        with self._cond:
            if os_name in self.segments:
                raise _oserror(errno.EEXIST, os_name)
            path = os.path.join(self._dir, f"{os_name}.{next(self._files)}")
            with open(path, "wb") as f:
                f.truncate(size)
            obj = self.segments[os_name] = _SegmentObject(os_name, path, size, mode)
            handle = self._new_handle(obj)
            obj.lock_owner = handle  # returned with the lock held
            return handle

    def segment_attach(self, os_name: str) -> FakeSegment:
        self._count("segment_attach")
        with self._cond:
            obj = self.segments.get(os_name)
            if obj is None:
                raise _oserror(errno.ENOENT, os_name)
            return self._new_handle(obj)

    def segment_map(self, seg: FakeSegment, offset: int, length: int) -> mmap.mmap:
        self._count("segment_map")
        seg = self._segment(seg)
        if offset % mmap.ALLOCATIONGRANULARITY:
            raise ContractError(
                f"segment_map offset {offset} is not a multiple of ALLOCATIONGRANULARITY"
            )
        if length <= 0 or offset < 0 or offset + length > seg.obj.size:
            raise ContractError(
                f"segment_map {length} bytes at {offset} of a {seg.obj.size}-byte segment"
            )
        fd = os.open(seg.obj.path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, length, offset=offset)
        finally:
            os.close(fd)
        seg.maps.append(mm)
        return mm

    def segment_close(self, seg: FakeSegment) -> None:
        self._count("segment_close")
        with self._cond:
            seg = self._segment(seg)
            if any(not m.closed for m in seg.maps):
                raise ContractError(f"segment_close of {seg.os_name} with mappings still open")
            obj = seg.obj
            if obj.lock_owner is seg:  # as closing an flock()ed descriptor
                obj.lock_owner = None
                self._cond.notify_all()
            seg.closed = True
            obj.handles.discard(seg)
            if not obj.handles:
                if self.KERNEL_LIFETIME and obj.named:
                    obj.named = False
                    del self.segments[obj.os_name]
                if not obj.named:
                    self._forget(obj)

    def _forget(self, obj: _SegmentObject) -> None:
        try:
            os.unlink(obj.path)
        except FileNotFoundError:
            pass

    def segment_unlink(self, os_name: str) -> bool:
        self._count("segment_unlink")
        if self.KERNEL_LIFETIME:
            return False
        with self._cond:
            obj = self.segments.pop(os_name, None)
            if obj is None:
                return False
            obj.named = False
            if not obj.handles:
                self._forget(obj)
            return True

    def segment_named(self, seg: FakeSegment) -> bool:
        self._count("segment_named")
        with self._cond:
            seg = self._segment(seg)
            return self.KERNEL_LIFETIME or self.segments.get(seg.os_name) is seg.obj

    def segment_list(self) -> list[str]:
        return sorted(self.segments)

    def segment_lock(self, seg: FakeSegment, timeout: float) -> bool:
        self._count("segment_lock")
        with self._cond:
            seg = self._segment(seg)
            if seg.obj.lock_owner is seg:
                raise ContractError(f"segment_lock of {seg.os_name}: this handle holds it already")
            if not 0 <= timeout <= WAIT_SLICE + _SLICE_SLACK:
                raise ContractError(
                    f"segment_lock for {timeout} s: must be one slice (0 <= t <= {WAIT_SLICE})"
                )
            ok = self._cond.wait_for(lambda: seg.obj.lock_owner is None or seg.closed, timeout)
            if seg.closed:
                raise ContractError("segment closed while waiting for its lock")
            if not ok:
                return False
            seg.obj.lock_owner = seg
            return True

    def segment_unlock(self, seg: FakeSegment) -> None:
        self._count("segment_unlock")
        with self._cond:
            seg = self._segment(seg)
            if seg.obj.lock_owner is not seg:
                raise ContractError(f"segment_unlock of {seg.os_name} without holding its lock")
            seg.obj.lock_owner = None
            self._cond.notify_all()

    # -- semaphores --------------------------------------------------------------------
    def _sem(self, handle: int) -> _Semaphore:
        sem = self._sem_handles.get(handle)
        if sem is None:
            raise ContractError(f"unknown or closed semaphore handle {handle!r}")
        return sem

    def _check_slice(self, timeout: float) -> None:
        if not 0 < timeout <= WAIT_SLICE + _SLICE_SLACK:
            raise ContractError(f"a wait of {timeout} s: must be one slice (0 < t <= {WAIT_SLICE})")

    def semaphore_open(self, os_name: str, create: bool, initial: int, mode: int) -> int:
        self._count("semaphore_open")
        with self._cond:
            if create:
                if not 0 <= initial <= SEM_MAX:
                    raise _oserror(errno.EINVAL, os_name)
                if os_name in self.semaphores:
                    raise _oserror(errno.EEXIST, os_name)
                sem = self.semaphores[os_name] = _Semaphore(os_name, initial)
            else:
                sem = self.semaphores.get(os_name)  # type: ignore[assignment]
                if sem is None:
                    raise _oserror(errno.ENOENT, os_name)
            handle = next(self._handles)
            self._sem_handles[handle] = sem
            sem.handles += 1
            return handle

    def semaphore_close(self, handle: int) -> None:
        self._count("semaphore_close")
        with self._cond:
            sem = self._sem(handle)
            del self._sem_handles[handle]
        self._drop_reference(sem)

    def semaphore_unlink(self, os_name: str) -> bool:
        self._count("semaphore_unlink")
        if self.KERNEL_LIFETIME:
            return False
        with self._cond:
            sem = self.semaphores.pop(os_name, None)
            if sem is None:
                return False
            sem.named = False
            return True

    def semaphore_trywait(self, handle: int) -> bool:
        with self._cond:
            return self._take_permit(self._sem(handle))

    def _take_permit(self, sem: _Semaphore) -> bool:
        with self._cond:
            if sem.value > 0:
                sem.value -= 1
                return True
            return False

    def semaphore_wait(self, handle: int, timeout: float) -> bool:
        self._check_slice(timeout)
        with self._cond:
            sem = self._sem(handle)
            if not self._cond.wait_for(lambda: sem.value > 0, timeout):
                return False
            sem.value -= 1
            return True

    def semaphore_post(self, handle: int, n: int) -> None:
        if not isinstance(n, int) or not 1 <= n <= self.RELEASE_MAX:
            raise ContractError(f"semaphore_post n={n!r}")
        with self._cond:
            sem = self._sem(handle)
            if sem.value + n > SEM_MAX:  # all or nothing
                raise _oserror(errno.EOVERFLOW, sem.os_name)
            sem.value += n
            self._cond.notify_all()

    def semaphore_value(self, handle: int) -> int | None:
        with self._cond:
            return self._sem(handle).value

    def semaphore_bind(
        self, handle: int, os_name: str
    ) -> tuple[Iterator[bool], Iterator[bool], Callable[[], None]]:
        # Like the OS modules': a reference of its own to the semaphore
        # (counted as a handle), so the bound calls stay valid after
        # semaphore_close, until ``drop`` (after which they say False).
        sem = self._sem(handle)
        if sem.os_name != os_name:
            raise ContractError(f"semaphore_bind of {sem.os_name!r} by the name {os_name!r}")
        with self._cond:
            sem.handles += 1
        own = [sem]  # emptied by drop

        def take(_: object) -> bool:
            with self._cond:
                return bool(own) and self._take_permit(sem)

        def post(_: object) -> bool:
            with self._cond:
                if not own:
                    return False
                if sem.value >= SEM_MAX:
                    raise ValueError("semaphore or lock released too many times")
                sem.value += 1
                self._cond.notify_all()
                return True

        def drop() -> None:
            with self._cond:
                if own:
                    own.clear()
                    self._drop_reference(sem)

        return map(take, itertools.repeat(None)), map(post, itertools.repeat(None)), drop

    def _drop_reference(self, sem: _Semaphore) -> None:
        with self._cond:
            sem.handles -= 1
            if self.KERNEL_LIFETIME and sem.handles == 0 and sem.named:
                sem.named = False
                del self.semaphores[sem.os_name]

    # -- mutex ---------------------------------------------------------------------------
    def _mutex(self, m: object) -> FakeMutex:
        if not isinstance(m, FakeMutex) or m not in self._mutexes:
            raise ContractError(f"not a mutex of this backend: {m!r}")
        if m.closed:
            raise ContractError("mutex used after mutex_close")
        return m

    def _check_mutex_place(self, seg: FakeSegment, offset: int) -> None:
        size = self._segment(seg).obj.size
        if offset % 64 or offset < 0 or offset + 64 > size:
            raise ContractError(f"mutex at offset {offset} of a {size}-byte segment")

    def mutex_create(self, seg: FakeSegment, offset: int) -> FakeMutex:
        self._count("mutex_create")
        with self._cond:
            self._check_mutex_place(seg, offset)
            if seg.obj.lock_owner is not seg:
                raise ContractError("mutex_create without the segment lock")
            state = seg.obj.mutexes[offset] = _MutexState()
            m = FakeMutex(seg, state)
            self._mutexes.append(m)
            return m

    def mutex_open(self, seg: FakeSegment, offset: int) -> FakeMutex:
        self._count("mutex_open")
        with self._cond:
            self._check_mutex_place(seg, offset)
            state = seg.obj.mutexes.get(offset)
            if state is None:
                raise ContractError(f"mutex_open at {offset}: no mutex was created there")
            m = FakeMutex(seg, state)
            self._mutexes.append(m)
            return m

    def mutex_acquire(self, m: FakeMutex, timeout: float) -> int:
        if timeout:
            self._check_slice(timeout)
        me = (self.getpid(), threading.get_ident())
        with self._cond:
            state = self._mutex(m).state
            if state.died_pending == me and state.owner == me:
                state.died_pending = None
                return MUTEX_OWNER_DIED

            def free() -> bool:
                owner = state.owner
                return owner is None or owner[0] not in self._tokens

            if state.owner == me or not free():
                # not reentrant: the holder waits like anyone else
                if not timeout or not self._cond.wait_for(
                    lambda: state.owner != me and free(), timeout
                ):
                    return MUTEX_TIMEOUT
            died = state.owner is not None
            state.owner = me
            return MUTEX_OWNER_DIED if died else MUTEX_ACQUIRED

    def mutex_state(self, m: FakeMutex) -> Callable[[], bytes]:
        return bytes

    def mutex_release(self, m: FakeMutex, state: bytes = b"") -> None:
        me = (self.getpid(), threading.get_ident())
        with self._cond:
            state = self._mutex(m).state
            if state.owner != me:
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
            state.owner = None
            self._cond.notify_all()

    def mutex_intact(self, m: FakeMutex) -> Callable[[], bool]:
        self._mutex(m)
        return lambda: True  # (the fake's mutexes are Python objects)

    def mutex_bind(self, m: FakeMutex) -> tuple[Callable[[], int], Callable[[], int]]:
        self._mutex(m)

        def try_lock() -> int:
            me = (self.getpid(), threading.get_ident())
            with self._cond:
                outcome = self.mutex_acquire(m, 0.0)
                if outcome == MUTEX_OWNER_DIED:
                    m.state.died_pending = me  # held; mutex_acquire reports it
                return 0 if outcome == MUTEX_ACQUIRED else 1

        def unlock() -> int:
            with self._cond:
                if m.state.owner != (self.getpid(), threading.get_ident()):
                    return 1
                self.mutex_release(m)
                return 0

        return try_lock, unlock

    def mutex_locked(self, m: FakeMutex) -> bool:
        with self._cond:
            owner = self._mutex(m).state.owner
            return owner is not None and owner[0] in self._tokens

    def mutex_held(self, m: FakeMutex) -> bool:
        with self._cond:
            return self._mutex(m).state.owner == (self.getpid(), threading.get_ident())

    def mutex_abandoned(self, seg: FakeSegment, offset: int) -> bool:
        with self._cond:
            if seg.obj.lock_owner is not self._segment(seg):
                raise ContractError("mutex_abandoned without the segment lock")
            state = seg.obj.mutexes.get(offset)
            return state is not None and state.owner is not None

    def mutex_close(self, m: FakeMutex) -> None:
        self._count("mutex_close")
        with self._cond:
            self._mutex(m).closed = True

    def mutex_unlink(self, seg_os_name: str, offset: int) -> None:
        self._count("mutex_unlink")
        if not isinstance(seg_os_name, str) or not seg_os_name.startswith("ctipc-"):
            raise ContractError(f"mutex_unlink({seg_os_name!r}): not a segment name")
        if not isinstance(offset, int) or offset < 0 or offset % 64:
            raise ContractError(f"mutex_unlink offset {offset!r}")


if TYPE_CHECKING:
    # (mypy: it implements the backend interface; its handles satisfy the
    # handle Protocols the portable layer uses)
    def _implements(fake: FakeBackend) -> Backend[FakeSegment, FakeMutex, int]:
        return fake


class OsProxy:
    """Stands in for the ``os`` module inside ctipc's portable modules, with
    ``getpid`` answered by the fake backend (the process being simulated)."""

    def __init__(self, backend: FakeBackend) -> None:
        self._backend = backend

    def getpid(self) -> int:
        return self._backend.getpid()

    def __getattr__(self, attr: str) -> Any:
        return getattr(os, attr)
