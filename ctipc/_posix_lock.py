"""The POSIX crash-safe mutex behind ``ctipc.Lock`` (part of ``_posix``).

Linux: a robust process-shared pthread mutex inside the segment; when its
holder dies the kernel marks it, and the next locker gets EOWNERDEAD.
Elsewhere (macOS, the BSDs): flock() on a lock file, which the kernel releases
when its holder dies, plus an owner record in the segment (the holder's pid,
cleared on release) that tells the next holder the last one died holding it.
docs/locks.md has the measured facts behind this choice and its pitfalls.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover - guarded by _backend
    raise ImportError("ctipc._posix_lock is for POSIX systems, not win32")

import ctypes
import errno
import fcntl
import mmap
import operator
import os
import threading
import time
from ctypes import POINTER, byref, c_int, c_void_p
from functools import partial
from typing import Any, Callable, Union

from ._backend import MUTEX_ACQUIRED, MUTEX_OWNER_DIED, MUTEX_TIMEOUT, WAIT_SLICE
from ._posix_ffi import (
    _CLOCK_MONOTONIC,
    _FUTEX_OWNER_DIED,
    _FUTEX_TID_MASK,
    _HAS_CLOCKLOCK,
    _LOCK_DIR,
    _OWNER_WORD,
    _PTHREAD_MUTEX_INCONSISTENT,
    _PTHREAD_MUTEX_ROBUST,
    _PTHREAD_PROCESS_SHARED,
    MUTEX_ABI,
    ROBUST_MUTEX,
    _abs_timespec,
    _check_minus1,
    _check_pthread,
    _declare,
    _errno_error,
    _libc,
    _lock_file,
    _poll,
    _pthread_lib,
    _pthread_pydll,
    _timespec,
    _try_flock,
)

_MAP_FAILED = ctypes.c_void_p(-1).value


def _check_mmap(result: int | None, func: Any, args: tuple[Any, ...]) -> Any:
    if result is None or result == _MAP_FAILED:
        raise _errno_error(args)
    return args


# void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
# (mmap64 where it exists: a 64-bit off_t on 32-bit glibc)
libc_mmap = _declare(
    _libc,
    "mmap64" if hasattr(_libc, "mmap64") else "mmap",
    [c_void_p, ctypes.c_size_t, c_int, c_int, c_int, ctypes.c_int64],
    c_void_p,
    _check_mmap,
)
# int munmap(void *addr, size_t length);
libc_munmap = _declare(_libc, "munmap", [c_void_p, ctypes.c_size_t], c_int, _check_minus1)

if ROBUST_MUTEX:
    _P = c_void_p
    # int pthread_mutexattr_init(pthread_mutexattr_t *attr);  (and _destroy)
    pthread_mutexattr_init = _declare(
        _pthread_lib, "pthread_mutexattr_init", [_P], c_int, _check_pthread()
    )
    pthread_mutexattr_destroy = _declare(
        _pthread_lib, "pthread_mutexattr_destroy", [_P], c_int, _check_pthread()
    )
    # int pthread_mutexattr_setpshared(pthread_mutexattr_t *attr, int pshared);
    pthread_mutexattr_setpshared = _declare(
        _pthread_lib, "pthread_mutexattr_setpshared", [_P, c_int], c_int, _check_pthread()
    )
    # int pthread_mutexattr_setrobust(pthread_mutexattr_t *attr, int robustness);
    pthread_mutexattr_setrobust = _declare(
        _pthread_lib, "pthread_mutexattr_setrobust", [_P, c_int], c_int, _check_pthread()
    )
    # int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr);
    pthread_mutex_init = _declare(
        _pthread_lib, "pthread_mutex_init", [_P, _P], c_int, _check_pthread()
    )
    # int pthread_mutex_trylock(pthread_mutex_t *m);  EBUSY, EOWNERDEAD are outcomes
    pthread_mutex_trylock = _declare(
        _pthread_lib,
        "pthread_mutex_trylock",
        [_P],
        c_int,
        _check_pthread(errno.EBUSY, errno.EOWNERDEAD),
    )
    _LOCK_OUTCOMES = (errno.ETIMEDOUT, errno.EOWNERDEAD, errno.EINTR)
    if _HAS_CLOCKLOCK:
        # int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clk,
        #                             const struct timespec *abs);
        pthread_mutex_clocklock = _declare(
            _pthread_lib,
            "pthread_mutex_clocklock",
            [_P, c_int, POINTER(_timespec)],
            c_int,
            _check_pthread(*_LOCK_OUTCOMES),
        )
    else:
        # int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *abs);  // REALTIME
        pthread_mutex_timedlock = _declare(
            _pthread_lib,
            "pthread_mutex_timedlock",
            [_P, POINTER(_timespec)],
            c_int,
            _check_pthread(*_LOCK_OUTCOMES),
        )
    # int pthread_mutex_unlock(pthread_mutex_t *m);  EPERM: not the owner
    pthread_mutex_unlock = _declare(
        _pthread_lib, "pthread_mutex_unlock", [_P], c_int, _check_pthread()
    )
    # int pthread_mutex_consistent(pthread_mutex_t *m);
    pthread_mutex_consistent = _declare(
        _pthread_lib, "pthread_mutex_consistent", [_P], c_int, _check_pthread()
    )
    # The bound calls of mutex_bind: the same two functions without an
    # errcheck (the caller reads the error number inline), loaded through a
    # PyDLL, which keeps the GIL across a call that never blocks instead of
    # releasing and retaking it.
    # int pthread_mutex_trylock(pthread_mutex_t *m);
    _raw_trylock = _declare(_pthread_pydll, "pthread_mutex_trylock", [_P], c_int, None)
    # int pthread_mutex_unlock(pthread_mutex_t *m);
    _raw_unlock = _declare(_pthread_pydll, "pthread_mutex_unlock", [_P], c_int, None)


# --------------------------------------------------------------------------
# Crash-safe mutex.  Linux: a robust process-shared pthread mutex inside the
# segment.  Elsewhere: flock() on a lock file (released by the kernel when its
# holder dies) plus an owner record in the segment (pid, cleared on release),
# which tells the next holder that the last one died holding it.


# sizeof(pthread_mutex_t), and where glibc keeps the robust-list links
# (``__list.__prev``, ``__list.__next``) in it: 64-bit glibc only; elsewhere a
# garbled mutex is never unlocked (see _repair).
_MUTEX_SIZE = 40 if ctypes.sizeof(c_void_p) == 8 else 24
_GLIBC = "-glibc-" in MUTEX_ABI
_LIST_OFFSET = 24 if _MUTEX_SIZE == 40 and _GLIBC else -1


class _RobustMutex:
    # The mutex lives in a mapping of its own, made with libc's mmap() and not
    # Python's: Python unmaps its mappings when they are collected, including
    # during interpreter shutdown, and a holder that unmaps the mutex and then
    # dies leaves it locked for good (the kernel can no longer walk its robust
    # list entry).  This mapping is never unmapped while the mutex is held.
    __slots__ = ("addr", "closing", "pinned", "ptr", "seg", "tail", "words")

    def __init__(self, seg: Any, offset: int) -> None:
        self.addr: int = libc_mmap(
            None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, seg.fd, offset
        )
        self.closing = False  # closed while held: unmap at release
        self.words: Any = (ctypes.c_int32 * 16).from_address(self.addr)
        self.ptr = c_void_p(self.addr)  # passed as is by the bound calls
        self.seg = seg  # its segment lock serialises a re-initialisation
        # The mutex's bytes after its lock word (mutex_state): while held,
        # only the holder's thread changes them, so a difference between
        # acquire and release is garbage written by another process (see
        # _release_garbled).  The lock word is left out: a waiter sets its
        # FUTEX_WAITERS bit.
        self.tail: Any = (ctypes.c_char * (_MUTEX_SIZE - 4)).from_address(self.addr + 4)
        self.pinned = False  # left locked in this thread's robust list: never unmapped


class _FlockMutex:
    __slots__ = ("closing", "died", "fd", "local", "mm", "mode", "owner", "path", "pid")

    def __init__(self, seg: Any, offset: int) -> None:
        self.path = (seg.os_name, f".{offset}.mutex")
        self.mode = os.fstat(seg.fd).st_mode & 0o777
        self.fd = _lock_file(*self.path, self.mode)
        self.pid = os.getpid()
        self.local = threading.Lock()  # flock() does not exclude threads sharing fd
        # The owner record (the holder's pid; 0: free), in a mapping of its
        # own so that it outlives the object's header mapping while held.
        self.mm = mmap.mmap(seg.fd, mmap.PAGESIZE, offset=offset)
        self.owner = 0  # thread ident of the holder in this process
        self.died = False  # taken over from a dead holder by the bound try_lock
        self.closing = False  # closed while held: close the fd at release


Mutex = Union[_RobustMutex, _FlockMutex]


def _init(addr: Any) -> None:
    attr = (ctypes.c_uint64 * 8)()  # 64 bytes covers every pthread_mutexattr_t
    pthread_mutexattr_init(attr)
    try:
        pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED)
        pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST)
        pthread_mutex_init(addr, attr)
    finally:
        pthread_mutexattr_destroy(attr)


def _static_words() -> tuple[tuple[int, int], ...]:
    # A mutex initialised in private memory shows which 32-bit words of a
    # fresh one are not zero: those are its static words.
    reference = (ctypes.c_int32 * 16)()
    _init(reference)
    return tuple((i, v) for i, v in enumerate(reference) if v)


_STATIC_WORDS = _static_words() if ROBUST_MUTEX else ()
# The first static word (the kind; on glibc the only one) is checked
# without a loop, since this check runs twice per queue operation.
_KIND_INDEX, _KIND_VALUE = _STATIC_WORDS[0] if _STATIC_WORDS else (0, 0)
_MORE_WORDS = _STATIC_WORDS[1:]


def _changed(words: Any) -> bool:
    return any(words[i] != v for i, v in _MORE_WORDS)


def mutex_create(seg: Any, offset: int) -> Mutex:
    if not ROBUST_MUTEX:
        fm = _FlockMutex(seg, offset)
        fm.mm[0:8] = bytes(8)
        return fm
    m = _RobustMutex(seg, offset)
    try:
        _init(m.addr)
    except BaseException:
        mutex_close(m)
        raise
    return m


def mutex_open(seg: Any, offset: int) -> Mutex:
    return _RobustMutex(seg, offset) if ROBUST_MUTEX else _FlockMutex(seg, offset)


def _check_static(m: _RobustMutex) -> None:
    # The words that pthread_mutex_init sets and locking never changes (the
    # mutex's kind on glibc, its type on musl) must still hold what they
    # held: glibc asserts, aborting the process, on some garbage there.  Any
    # other corruption gives EINVAL from the call itself.
    if not m.addr:  # closed (unmapped): never touch the old address
        raise OSError(errno.EBADF, "the mutex is closed")
    words = m.words
    if _STATIC_WORDS and (words[_KIND_INDEX] != _KIND_VALUE or (_MORE_WORDS and _changed(words))):
        raise OSError(errno.EINVAL, "the mutex's bytes are corrupt")


def mutex_acquire(m: Mutex, timeout: float) -> int:
    if isinstance(m, _FlockMutex):
        return _flock_mutex_acquire(m, timeout)
    if _garbled_and_free(m):
        return _reinit(m)
    _check_static(m)
    words = m.words
    if words[_OWNER_WORD] == _PTHREAD_MUTEX_INCONSISTENT and _mine(words):
        # A bound try_lock took it over from a dead owner (EOWNERDEAD) and
        # left the rest to this call.
        pthread_mutex_consistent(m.addr)
        return MUTEX_OWNER_DIED
    if timeout <= 0:
        rc = pthread_mutex_trylock(m.addr)
    elif _HAS_CLOCKLOCK:
        rc = pthread_mutex_clocklock(
            m.addr, _CLOCK_MONOTONIC, byref(_abs_timespec(_CLOCK_MONOTONIC, timeout))
        )
    else:
        rc = pthread_mutex_timedlock(m.addr, byref(_abs_timespec(time.CLOCK_REALTIME, timeout)))
    if rc == 0:
        return MUTEX_ACQUIRED
    if rc == errno.EOWNERDEAD:
        # Made consistent at once: unlocking without it, or dying before it,
        # would leave the mutex ENOTRECOVERABLE (and glibc's trylock then
        # wedges it).
        pthread_mutex_consistent(m.addr)
        return MUTEX_OWNER_DIED
    return MUTEX_TIMEOUT


def _garbled_and_free(m: _RobustMutex) -> bool:
    # Garbage written into the mutex by a process with access, and no
    # holder: its static words are wrong while no thread holds it (or the
    # kernel marked its holder's death), or its lock word names a thread
    # that is gone, is not the owner the holder records next to it, and has
    # no FUTEX_OWNER_DIED mark (the kernel marks only a lock word that holds
    # the dying thread's id).  A thread whose liveness cannot be seen (a
    # hidden /proc, another pid namespace whose holder also records itself
    # as owner) counts as a holder.
    if not m.addr:
        return False
    words = m.words
    word = words[0]
    tid = word & _FUTEX_TID_MASK
    no_holder = not tid or word & _FUTEX_OWNER_DIED
    static_ok = not _STATIC_WORDS or (
        words[_KIND_INDEX] == _KIND_VALUE and not (_MORE_WORDS and _changed(words))
    )
    if no_holder:
        return not static_ok  # (else a mutex the pthread calls handle)
    # (glibc only: where it keeps the owner next to the lock word)
    return _GLIBC and words[_OWNER_WORD] != tid and not _thread_alive(tid)


def _thread_alive(tid: int) -> bool:
    # /proc/<tid> exists for every thread of the pid namespace; EACCES (a
    # hidden /proc) or no /proc at all: not proof of death.
    try:
        os.stat(f"/proc/{tid}")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:
        return True
    return True


def _reinit(m: _RobustMutex) -> int:
    # Under the segment lock, which every process that re-initialises takes,
    # the test is made again: a process that re-initialised it first has
    # taken it since (its live id in the lock word), so the mutex is never
    # initialised twice nor under a live holder.
    from ._posix import segment_lock, segment_unlock  # (imports this module)

    if not segment_lock(m.seg, WAIT_SLICE):
        return MUTEX_TIMEOUT
    try:
        if not _garbled_and_free(m):
            return MUTEX_TIMEOUT  # the caller's next slice takes it as usual
        ctypes.memset(m.addr, 0, _MUTEX_SIZE)
        _init(m.addr)
        rc = pthread_mutex_trylock(m.addr)
    finally:
        segment_unlock(m.seg)
    # Taken: the holder's work is as suspect as after a death (owner_died).
    return MUTEX_OWNER_DIED if rc == 0 else MUTEX_TIMEOUT


def _mine(words: Any) -> bool:
    # The lock word names the owner thread (its id as the kernel knows it).
    return bool(words[0] & _FUTEX_TID_MASK == threading.get_native_id())


def _flock_mutex_acquire(m: _FlockMutex, timeout: float) -> int:
    if m.pid != os.getpid():
        _after_fork(m)
    if m.died and m.owner == threading.get_ident():
        # taken by the bound try_lock, which left the outcome to this call
        m.died = False
        return MUTEX_OWNER_DIED
    timeout = min(timeout, WAIT_SLICE)  # one slice, polled (flock has no timed wait)
    start = time.monotonic()
    if not m.local.acquire(timeout=timeout) if timeout > 0 else not m.local.acquire(False):
        return MUTEX_TIMEOUT
    try:
        if not _poll(lambda: _try_flock(m.fd), max(0.0, timeout - (time.monotonic() - start))):
            m.local.release()
            return MUTEX_TIMEOUT
    except BaseException:
        m.local.release()
        raise
    died = m.mm[0:4] != bytes(4)
    m.mm[0:4] = os.getpid().to_bytes(4, sys.byteorder)
    m.owner = threading.get_ident()
    return MUTEX_OWNER_DIED if died else MUTEX_ACQUIRED


def _after_fork(m: _FlockMutex) -> None:
    # A forked child shares the parent's open file description, and flock()
    # does not exclude two holders of one description: the child takes the
    # lock through a descriptor of its own (and a fresh thread lock; a lock
    # the parent held at fork is the parent's to release).
    inherited, m.fd = m.fd, _lock_file(*m.path, m.mode)
    os.close(inherited)
    m.local = threading.Lock()
    m.owner = 0
    m.died = False
    m.pid = os.getpid()


def mutex_state(m: Mutex) -> Callable[[], bytes]:
    if isinstance(m, _RobustMutex) and _LIST_OFFSET >= 0:
        return partial(getattr, m.tail, "raw")  # (a call from C, as the bound calls)
    return bytes  # (b"": nothing to compare)


def mutex_release(m: Mutex, state: bytes = b"") -> None:
    if isinstance(m, _RobustMutex):
        if m.pinned:
            raise OSError(errno.EINVAL, "the mutex's bytes were overwritten while held")
        if state and m.addr and (m.tail.raw != state or not _mine(m.words)):
            _release_garbled(m, state)
        _check_static(m)
        pthread_mutex_unlock(m.addr)
    else:
        if m.owner != threading.get_ident():
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        m.owner = 0
        m.died = False
        m.mm[0:4] = bytes(4)
        fcntl.flock(m.fd, fcntl.LOCK_UN)
        m.local.release()
    if m.closing:
        mutex_close(m)


def _release_garbled(m: _RobustMutex, snap: bytes) -> None:
    # The holder's own bytes changed while it held the mutex: garbage.
    # glibc's unlock would follow garbage robust-list links (SIGSEGV), and
    # the kernel's exit-time walk of this thread's list too.  With links
    # proven to be this thread's list, the mutex is taken off that list as
    # glibc would, and left as the kernel leaves a dead holder's (owner died,
    # no owner): the next acquire takes it over and reports owner_died,
    # since what it guards may be half-done.  Links that cannot be proven:
    # the mutex is never unlocked nor unmapped (the kernel's walk stops at
    # a bad link without harm; glibc may still write to its links).
    tid = threading.get_native_id()
    if int.from_bytes(snap[4:8], sys.byteorder) != tid:
        return  # not taken by this thread: the unlock says EPERM
    links = _proven_links(m, snap)
    head = _LIST_OFFSET - 4  # the snapshot's bytes before the links
    if links is not None and _mine(m.words) and m.tail.raw[:head] == snap[:head]:
        if links == ctypes.string_at(m.addr + _LIST_OFFSET, 16):
            return  # only the links moved: another mutex taken or released out of order
    if links is None:
        m.pinned = True
    else:
        prev = int.from_bytes(links[:8], sys.byteorder) & ~1
        nxt = int.from_bytes(links[8:], sys.byteorder) & ~1
        ctypes.memmove(nxt - 8, links, 8)  # next->__prev = our prev
        ctypes.memmove(prev, links[8:], 8)  # prev->__next = our next
        ctypes.memmove(m.addr + 4, snap[:head], head)
        ctypes.memset(m.addr + _LIST_OFFSET, 0, 16)
        m.words[0] = _FUTEX_OWNER_DIED  # last: free for the next taker, as after a death
    raise OSError(errno.EINVAL, "the mutex's bytes were overwritten while held")


def _proven_links(m: _RobustMutex, snap: bytes) -> bytes | None:
    # The robust list is doubly linked through each mutex's ``__list``:
    # ``prev`` points at the ``next`` word of the entry before, whose value
    # is this entry; ``next`` (minus 8) at the ``prev`` word of the entry
    # after, which points back here.  Each candidate (the links now, or as
    # they were when taken: another mutex of this thread taken or released
    # out of order changes them legitimately) is read through /proc/self/mem,
    # where a bad address is an error, not a crash.
    entry = m.addr + _LIST_OFFSET + 8
    now = ctypes.string_at(m.addr + _LIST_OFFSET, 16)
    then = snap[_LIST_OFFSET - 4 : _LIST_OFFSET + 12]
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        for links in (now, then):
            prev = int.from_bytes(links[:8], sys.byteorder)
            nxt = int.from_bytes(links[8:], sys.byteorder) & ~1
            if _peek(fd, prev) & ~1 == entry and _peek(fd, nxt - 8) == entry:
                return links
        return None
    finally:
        os.close(fd)


def _peek(fd: int, addr: int) -> int:
    try:
        return int.from_bytes(os.pread(fd, 8, addr), sys.byteorder) if addr > 0 else -1
    except (OSError, OverflowError, ValueError):
        return -1


def mutex_bind(m: Mutex) -> tuple[Callable[[], int], Callable[[], int]]:
    if isinstance(m, _RobustMutex):
        return _robust_bind(m)
    return _flock_bind(m)


def _robust_bind(m: _RobustMutex) -> tuple[Callable[[], int], Callable[[], int]]:
    # (The caller asks mutex_intact first: glibc aborts on some garbage in
    # the words pthread_mutex_init set.)
    return partial(_raw_trylock, m.ptr), partial(_raw_unlock, m.ptr)


def mutex_intact(m: Mutex) -> Callable[[], bool]:
    if not isinstance(m, _RobustMutex) or not _STATIC_WORDS:
        return _always
    # glibc asserts, aborting the process, on some garbage in the words
    # pthread_mutex_init set (a priority-protect bit in the kind, a kind that
    # is not robust any more): the bound calls are made only after this
    # said True, and a False sends the caller to the general call, which
    # says CorruptedError or re-initialises a garbled free mutex.  Asked
    # before anything is taken, so a signal handler's exception in it finds
    # nothing to repair.
    raw = memoryview(m.words).cast("B")
    if not _MORE_WORDS:
        kind = raw[4 * _KIND_INDEX : 4 * _KIND_INDEX + 4]
        return partial(operator.eq, kind, _KIND_VALUE.to_bytes(4, sys.byteorder, signed=True))
    words = m.words

    def intact() -> bool:
        return bool(words[_KIND_INDEX] == _KIND_VALUE and not _changed(words))

    return intact


def _always() -> bool:
    return True


def _flock_bind(m: _FlockMutex) -> tuple[Callable[[], int], Callable[[], int]]:
    def try_lock() -> int:
        outcome = _flock_mutex_acquire(m, 0.0)
        if outcome == MUTEX_OWNER_DIED:
            m.died = True  # held; mutex_acquire reports it
        return 0 if outcome == MUTEX_ACQUIRED else 1

    def unlock() -> int:
        if m.owner != threading.get_ident() or m.closing:
            return 1  # mutex_release raises or finishes the close
        mutex_release(m)
        return 0

    return try_lock, unlock


def mutex_locked(m: Mutex) -> bool:
    if isinstance(m, _RobustMutex):
        _check_static(m)
        # Read, never locked: a trylock would take over a dead owner's mutex
        # and lose what the next acquire must report.  A dead owner's mutex
        # (FUTEX_OWNER_DIED, no owner thread) can be taken at once: not locked.
        return bool(m.words[0] & _FUTEX_TID_MASK)
    if m.owner or not m.local.acquire(False):
        return True  # a thread of this process holds it or is taking it
    try:
        if not _try_flock(m.fd):
            return True
        fcntl.flock(m.fd, fcntl.LOCK_UN)
        return False
    finally:
        m.local.release()


def mutex_abandoned(seg: Any, offset: int) -> bool:
    # Read, not mapped: no descriptor or mapping to make (close runs this,
    # also where descriptors ran out).
    word = int.from_bytes(os.pread(seg.fd, 4, offset).ljust(4, b"\0"), sys.byteorder)
    if not ROBUST_MUTEX:
        return word != 0  # the owner record of a holder that never released it
    # The kernel marked the owner's death and nobody took it over since; or
    # garbage names a thread that is gone (the next acquire re-initialises it).
    tid = word & _FUTEX_TID_MASK
    return bool(word & _FUTEX_OWNER_DIED and not tid) or bool(tid and not _thread_alive(tid))


def mutex_held(m: Mutex) -> bool:
    if isinstance(m, _RobustMutex):
        return bool(m.addr) and _mine(m.words)
    return bool(m.owner == threading.get_ident())


def mutex_close(m: Mutex) -> None:
    # A held mutex stays usable until its holder releases it: unmapping it
    # would wedge it for good (see _RobustMutex), and closing the lock file
    # would hand the lock to another process behind the holder's back.  The
    # lock word tells whether a thread of this process holds it.
    if isinstance(m, _RobustMutex):
        if m.addr and _held_here(m.words):
            m.closing = True
        elif m.pinned:
            m.addr = 0  # (mapped for good: glibc may still write to its links)
        elif m.addr:
            addr, m.addr = m.addr, 0
            libc_munmap(addr, mmap.PAGESIZE)
    elif m.owner:
        m.closing = True
    elif m.fd >= 0:
        fd, m.fd = m.fd, -1
        os.close(fd)
        m.mm.close()


def _held_here(words: Any) -> bool:
    tid = words[0] & _FUTEX_TID_MASK
    return bool(tid) and os.path.exists(f"/proc/self/task/{tid}")


def mutex_unlink(seg_os_name: str, offset: int) -> None:
    if not ROBUST_MUTEX:
        try:
            os.unlink(os.path.join(_LOCK_DIR, f"{seg_os_name}.{offset}.mutex"))
        except FileNotFoundError:
            pass
