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
import os
import threading
import time
from ctypes import POINTER, byref, c_int, c_void_p
from typing import Any

from ._consts import MUTEX_ACQUIRED, MUTEX_OWNER_DIED, MUTEX_TIMEOUT
from ._posix_ffi import (
    _CLOCK_MONOTONIC,
    _LOCK_DIR,
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
    _timespec,
    _try_flock,
)

_HAS_CLOCKLOCK = hasattr(_pthread_lib, "pthread_mutex_clocklock")  # glibc >= 2.30
_PTHREAD_PROCESS_SHARED = 1  # glibc, musl
_PTHREAD_MUTEX_ROBUST = 1  # glibc, musl

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


# --------------------------------------------------------------------------
# Crash-safe mutex.  Linux: a robust process-shared pthread mutex inside the
# segment.  Elsewhere: flock() on a lock file (released by the kernel when its
# holder dies) plus an owner record in the segment (pid, cleared on release),
# which tells the next holder that the last one died holding it.


class _RobustMutex:
    # The mutex lives in a mapping of its own, made with libc's mmap() and not
    # Python's: Python unmaps its mappings when they are collected, including
    # during interpreter shutdown, and a holder that unmaps the mutex and then
    # dies leaves it locked for good (the kernel can no longer walk its robust
    # list entry).  This mapping is never unmapped while the mutex is held.
    __slots__ = ("addr", "closing", "held", "words")

    def __init__(self, seg: Any, offset: int) -> None:
        self.addr: int = libc_mmap(
            None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, seg.fd, offset
        )
        self.held = False
        self.closing = False  # closed while held: unmap at release
        self.words: Any = (ctypes.c_int32 * 16).from_address(self.addr)


class _FlockMutex:
    __slots__ = ("closing", "fd", "local", "mm", "mode", "offset", "owner", "path", "pid")

    def __init__(self, seg: Any, mm: mmap.mmap, offset: int) -> None:
        self.path = (seg.os_name, f".{offset}.mutex")
        self.mode = os.fstat(seg.fd).st_mode & 0o777
        self.fd = _lock_file(*self.path, self.mode)
        self.pid = os.getpid()
        self.local = threading.Lock()  # flock() does not exclude threads sharing fd
        # The owner record, in a mapping of its own so that it outlives the
        # object's header mapping while the mutex is held.
        self.mm = mmap.mmap(seg.fd, mmap.PAGESIZE, offset=offset)
        self.offset = 0
        self.owner = 0  # thread ident of the holder in this process
        self.closing = False  # closed while held: close the fd at release


Mutex = Any  # _RobustMutex | _FlockMutex


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


def mutex_create(seg: Any, mm: mmap.mmap, offset: int) -> Mutex:
    if not ROBUST_MUTEX:
        fm = _FlockMutex(seg, mm, offset)
        fm.mm[0:8] = bytes(8)
        return fm
    m = _RobustMutex(seg, offset)
    try:
        _init(m.addr)
    except BaseException:
        mutex_close(m)
        raise
    return m


def mutex_open(seg: Any, mm: mmap.mmap, offset: int) -> Mutex:
    return _RobustMutex(seg, offset) if ROBUST_MUTEX else _FlockMutex(seg, mm, offset)


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
    _check_static(m)
    if timeout <= 0:
        rc = pthread_mutex_trylock(m.addr)
    elif _HAS_CLOCKLOCK:
        rc = pthread_mutex_clocklock(
            m.addr, _CLOCK_MONOTONIC, byref(_abs_timespec(_CLOCK_MONOTONIC, timeout))
        )
    else:
        rc = pthread_mutex_timedlock(m.addr, byref(_abs_timespec(time.CLOCK_REALTIME, timeout)))
    if rc == 0:
        m.held = True
        return MUTEX_ACQUIRED
    if rc == errno.EOWNERDEAD:
        m.held = True
        # Made consistent at once: unlocking without it, or dying before it,
        # would leave the mutex ENOTRECOVERABLE (and glibc's trylock then
        # wedges it).
        pthread_mutex_consistent(m.addr)
        return MUTEX_OWNER_DIED
    return MUTEX_TIMEOUT


def _flock_mutex_acquire(m: _FlockMutex, timeout: float) -> int:
    if m.pid != os.getpid():
        _after_fork(m)
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
    died = m.mm[m.offset : m.offset + 4] != bytes(4)
    m.mm[m.offset : m.offset + 4] = os.getpid().to_bytes(4, sys.byteorder)
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
    m.pid = os.getpid()


def mutex_release(m: Mutex) -> None:
    if isinstance(m, _RobustMutex):
        _check_static(m)
        pthread_mutex_unlock(m.addr)
        m.held = False
    else:
        if m.owner != threading.get_ident():
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        m.owner = 0
        m.mm[m.offset : m.offset + 4] = bytes(4)
        fcntl.flock(m.fd, fcntl.LOCK_UN)
        m.local.release()
    if m.closing:
        mutex_close(m)


def mutex_close(m: Mutex) -> None:
    # A held mutex stays usable until its holder releases it: unmapping it
    # would wedge it for good (see _RobustMutex), and closing the lock file
    # would hand the lock to another process behind the holder's back.
    if isinstance(m, _RobustMutex):
        if m.held:
            m.closing = True
        elif m.addr:
            addr, m.addr = m.addr, 0
            libc_munmap(addr, mmap.PAGESIZE)
    elif m.owner:
        m.closing = True
    elif m.fd >= 0:
        fd, m.fd = m.fd, -1
        os.close(fd)
        m.mm.close()


def mutex_unlink(seg_os_name: str, offset: int) -> None:
    if not ROBUST_MUTEX:
        try:
            os.unlink(os.path.join(_LOCK_DIR, f"{seg_os_name}.{offset}.mutex"))
        except FileNotFoundError:
            pass
