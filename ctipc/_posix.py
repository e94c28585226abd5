"""libc/librt bindings: Linux (glibc, musl), macOS and the BSDs.

Every foreign function is declared once, under its C name, with argtypes,
restype and an errcheck that raises the right OSError subclass at once (errno
is read straight after the call through ``use_errno=True``).  Platform quirks
are settled in one constants block (``_posix_ffi``); the Lock's mutex is in
``_posix_lock``.  This module implements ``_backend.Backend``.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover - guarded by _backend
    raise ImportError("ctipc._posix is for POSIX systems, not win32")

import ctypes
import errno
import fcntl
import mmap
import os
import signal as _signal
import threading
import time
from collections.abc import Iterable
from ctypes import POINTER, byref, c_char_p, c_int, c_uint, c_void_p
from functools import partial
from typing import Callable

from . import _semlock
from ._backend import WAIT_SLICE
from ._errors import CorruptedError
from ._posix_ffi import (
    _CLOCK_MONOTONIC,
    _HAS_CLOCKWAIT,
    _HAS_FALLOCATE,
    _HAS_PROC_PIDINFO,
    _PF_EXITING,
    _SEM_FAILED,
    _SHM_DIR,
    EMULATING,
    _abs_timespec,
    _check_minus1,
    _check_wait,
    _declare,
    _errno_error,
    _libc,
    _lock_file,
    _os_bytes,
    _poll,
    _pthread_pydll,
    _sem_lib,
    _sem_pydll,
    _shm_lib,
    _timespec,
    _try_flock,
)
from ._posix_ffi import CAN_LIST as CAN_LIST
from ._posix_ffi import KERNEL_LIFETIME as KERNEL_LIFETIME
from ._posix_ffi import MUTEX_ABI as MUTEX_ABI
from ._posix_ffi import PERSISTENT as PERSISTENT
from ._posix_ffi import PLATFORM as PLATFORM
from ._posix_ffi import RELEASE_MAX as RELEASE_MAX
from ._posix_ffi import ROBUST_MUTEX as ROBUST_MUTEX
from ._posix_ffi import SEM_VALUE as SEM_VALUE
from ._posix_ffi import SEM_VALUE_MAX as SEM_VALUE_MAX
from ._posix_ffi import STORES_ORDERED as STORES_ORDERED
from ._posix_ffi import TIMED_WAIT_NATIVE as TIMED_WAIT_NATIVE
from ._posix_lock import Mutex as Mutex
from ._posix_lock import mutex_abandoned as mutex_abandoned
from ._posix_lock import mutex_acquire as mutex_acquire
from ._posix_lock import mutex_bind as mutex_bind
from ._posix_lock import mutex_close as mutex_close
from ._posix_lock import mutex_create as mutex_create
from ._posix_lock import mutex_held as mutex_held
from ._posix_lock import mutex_intact as mutex_intact
from ._posix_lock import mutex_locked as mutex_locked
from ._posix_lock import mutex_open as mutex_open
from ._posix_lock import mutex_release as mutex_release
from ._posix_lock import mutex_state as mutex_state
from ._posix_lock import mutex_unlink as mutex_unlink

#: Windows' kernel namespaces; POSIX names have none
NAMESPACES: tuple[str, ...] = ()


def _returns_errno(result: int, func: object, args: tuple[object, ...]) -> int:
    # The function returns an error number (0: success); the caller decides
    # which ones are outcomes.
    return result


def _check_sem_open(result: int | None, func: object, args: tuple[object, ...]) -> object:
    if result in _SEM_FAILED:
        raise _errno_error(args)
    return args


# --------------------------------------------------------------------------
# Declarations.  Variadic functions list their fixed parameters only; the
# rest are passed as explicit ctypes values (Apple arm64, gh-92892).

# sem_t *sem_open(const char *name, int oflag, ...);  /* mode_t mode, unsigned value */
sem_open = _declare(_sem_lib, "sem_open", [c_char_p, c_int], c_void_p, _check_sem_open)
# int sem_close(sem_t *sem);
sem_close = _declare(_sem_lib, "sem_close", [c_void_p], c_int, _check_minus1)
# int sem_unlink(const char *name);
sem_unlink = _declare(_sem_lib, "sem_unlink", [c_char_p], c_int, _check_minus1)
# int sem_trywait(sem_t *sem);
sem_trywait = _declare(_sem_lib, "sem_trywait", [c_void_p], c_int, _check_wait)
# int sem_post(sem_t *sem);
sem_post = _declare(_sem_lib, "sem_post", [c_void_p], c_int, _check_minus1)
if _HAS_CLOCKWAIT:
    # int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime);
    sem_clockwait = _declare(
        _sem_lib, "sem_clockwait", [c_void_p, c_int, POINTER(_timespec)], c_int, _check_wait
    )
elif TIMED_WAIT_NATIVE:
    # int sem_timedwait(sem_t *sem, const struct timespec *abstime);  /* CLOCK_REALTIME */
    sem_timedwait = _declare(
        _sem_lib, "sem_timedwait", [c_void_p, POINTER(_timespec)], c_int, _check_wait
    )
# The bound calls of semaphore_bind where no SemLock is used, without an
# errcheck (the caller reads the result inline), through a PyDLL (neither
# call blocks: the GIL is kept).
# int sem_trywait(sem_t *sem);
_raw_sem_trywait = _declare(_sem_pydll, "sem_trywait", [c_void_p], c_int, None)
# int sem_post(sem_t *sem);
_raw_sem_post = _declare(_sem_pydll, "sem_post", [c_void_p], c_int, None)
# int pthread_sigmask(int how, const sigset_t *set, sigset_t *oset);
# (the GIL kept: it never blocks; the result, an error number, read inline)
_raw_sigmask = _declare(_pthread_pydll, "pthread_sigmask", [c_int, c_void_p, c_void_p], c_int, None)
# int sigemptyset(sigset_t *set);
_sigemptyset = _declare(_libc, "sigemptyset", [c_void_p], c_int, _check_minus1)
# int sigaddset(sigset_t *set, int signo);
_sigaddset = _declare(_libc, "sigaddset", [c_void_p, c_int], c_int, _check_minus1)
_SIGSET_SIZE = 128  # glibc's and musl's sigset_t; macOS's is 4 bytes
if SEM_VALUE:
    # int sem_getvalue(sem_t *sem, int *sval);
    sem_getvalue = _declare(
        _sem_lib, "sem_getvalue", [c_void_p, POINTER(c_int)], c_int, _check_minus1
    )

if _HAS_FALLOCATE:
    # int posix_fallocate(int fd, off_t offset, off_t len);  returns the error number
    # (posix_fallocate64 where it exists: a 64-bit off_t on 32-bit glibc)
    posix_fallocate = _declare(
        _libc,
        "posix_fallocate64" if hasattr(_libc, "posix_fallocate64") else "posix_fallocate",
        [c_int, ctypes.c_int64, ctypes.c_int64],
        c_int,
        _returns_errno,
    )

# int shm_open(const char *name, int oflag, ...);  /* mode_t mode; variadic on macOS */
shm_open = _declare(_shm_lib, "shm_open", [c_char_p, c_int], c_int, _check_minus1)
# int shm_unlink(const char *name);
shm_unlink = _declare(_shm_lib, "shm_unlink", [c_char_p], c_int, _check_minus1)

if _HAS_PROC_PIDINFO:
    # int proc_pidinfo(int pid, int flavor, uint64_t arg, void *buffer, int buffersize);
    # (libproc.h; returns the bytes written, 0 with errno ESRCH for no such process)
    proc_pidinfo = _declare(
        _libc, "proc_pidinfo", [c_int, c_int, ctypes.c_uint64, c_void_p, c_int], c_int, None
    )
    _PROC_PIDTBSDINFO = 3
    _BSDINFO_SIZE = 136  # sizeof(struct proc_bsdinfo)
    _SZOMB = 5  # pbi_status of a zombie


# --------------------------------------------------------------------------
# Shared memory


# macOS: flock() on a shm descriptor fails (not a vnode); switched on by the
# first refusal, after which segment locks are lock files.
_seg_lock_files = EMULATING


class Segment:
    """An open shm object: its descriptor and, where flock() cannot lock a
    shm descriptor, the descriptor of its lock file."""

    __slots__ = ("fd", "lock_fd", "os_name")

    def __init__(self, os_name: str, fd: int) -> None:
        self.os_name = os_name
        self.fd = fd
        self.lock_fd = -1

    @property
    def size(self) -> int | None:
        return os.fstat(self.fd).st_size

    @property
    def identity(self) -> object:
        """What tells this segment apart from a later one under its name."""
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    @property
    def other_owner(self) -> int | None:
        """The uid that owns it if that is not this process's user, else None."""
        uid = os.fstat(self.fd).st_uid
        return None if uid == os.geteuid() else uid

    @property
    def age(self) -> float:
        """Seconds since it was made (its size set, its mode changed)."""
        return time.time() - os.fstat(self.fd).st_ctime


def _shm_fd(os_name: str, flags: int, mode: int) -> int:
    # O_CLOEXEC is not passed to shm_open (macOS 26.4 rejects it with EINVAL);
    # the descriptor is made non-inheritable right after.
    fd: int = shm_open(_os_bytes(os_name), flags, c_uint(mode))
    os.set_inheritable(fd, False)
    return fd


def segment_create(os_name: str, size: int, mode: int, timeout: float) -> Segment:
    fd = _shm_fd(os_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    seg = Segment(os_name, fd)
    try:
        # The lock first: an attacher that opens the name before the size is
        # set finds it locked, or sees size 0 and retries.
        if not segment_lock(seg, timeout):
            raise TimeoutError(errno.ETIMEDOUT, "timed out locking a new segment", os_name)
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        except OSError as e:
            if e.errno != errno.EINVAL:  # macOS: no chmod for shm (iceoryx2#156)
                raise
        os.ftruncate(fd, size)
        if _HAS_FALLOCATE:
            # Reserve the pages now: a full /dev/shm is ENOSPC here, never
            # SIGBUS on a later write.  (Bound through ctypes: PyPy 7.3's
            # os.posix_fallocate drops the error.)
            rc = posix_fallocate(fd, 0, size)
            if rc not in (0, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(rc, os.strerror(rc), os_name)
        return seg
    except BaseException:
        # Undo only what this call created: the name is ours (O_EXCL) while
        # we hold its lock, so unlink before closing (which drops the lock).
        segment_unlink(os_name)
        segment_close(seg)
        raise


def segment_attach(os_name: str) -> Segment:
    return Segment(os_name, _shm_fd(os_name, os.O_RDWR, 0))


def segment_map(seg: Segment, offset: int, length: int) -> mmap.mmap:
    return mmap.mmap(
        seg.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
    )


def segment_close(seg: Segment) -> None:
    for attr in ("lock_fd", "fd"):
        fd = getattr(seg, attr)
        if fd >= 0:
            setattr(seg, attr, -1)
            os.close(fd)


def segment_unlink(os_name: str) -> bool:
    try:
        shm_unlink(_os_bytes(os_name))
    except FileNotFoundError:
        return False
    return True


def segment_named(seg: Segment) -> bool:
    # Where shm objects are files (CAN_LIST) a stat by path needs no
    # descriptor: closing must work even when the process has none to spare.
    try:
        if CAN_LIST:
            st = os.stat(os.path.join(_SHM_DIR, seg.os_name), follow_symlinks=False)
        else:
            fd = _shm_fd(seg.os_name, os.O_RDONLY, 0)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == seg.identity


def segment_list() -> list[str]:
    if not CAN_LIST:
        return []
    return sorted(n for n in os.listdir(_SHM_DIR) if n.startswith("ctipc-") and "." not in n)


def segment_lock(seg: Segment, timeout: float) -> bool:
    global _seg_lock_files
    if not _seg_lock_files and seg.lock_fd < 0:
        try:
            return _poll(lambda: _try_flock(seg.fd), timeout)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            _seg_lock_files = True
    if seg.lock_fd < 0:
        # Lock files are never removed: unlinking one that another process
        # has open would let two processes hold "the" lock at once.
        seg.lock_fd = _lock_file(seg.os_name, ".lock", os.fstat(seg.fd).st_mode & 0o777)
    return _poll(lambda: _try_flock(seg.lock_fd), timeout)


def segment_unlock(seg: Segment) -> None:
    fcntl.flock(seg.lock_fd if seg.lock_fd >= 0 else seg.fd, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Semaphores


# sizeof(sem_t) on glibc and musl (16 on 32-bit glibc): what sem_open maps
_SEM_SIZE = 4 * ctypes.sizeof(c_void_p)


def semaphore_open(os_name: str, create: bool, initial: int, mode: int) -> int:
    flags = os.O_CREAT | os.O_EXCL if create else 0
    if not create and CAN_LIST:
        # sem_open maps the file /dev/shm/sem.NAME without checking its size:
        # a truncated one would kill this process by SIGBUS at the first use.
        try:
            size = os.stat(os.path.join(_SHM_DIR, "sem." + os_name)).st_size
        except FileNotFoundError:
            size = None  # sem_open says so
        if size is not None and size < _SEM_SIZE:
            raise CorruptedError(
                f"the OS semaphore {os_name!r} is truncated ({size} bytes)", os_name
            )
    handle: int = sem_open(_os_bytes(os_name), flags, c_uint(mode), c_uint(initial))
    if create and CAN_LIST:
        # sem_open applies the umask; where the semaphore is a file (Linux:
        # /dev/shm/sem.NAME) give it exactly `mode`, like the segment.
        try:
            os.chmod(os.path.join(_SHM_DIR, "sem." + os_name), mode)
        except FileNotFoundError:
            pass
    return handle


def semaphore_close(handle: int) -> None:
    sem_close(handle)


def semaphore_unlink(os_name: str) -> bool:
    try:
        sem_unlink(_os_bytes(os_name))
    except FileNotFoundError:
        return False
    return True


def semaphore_trywait(handle: int) -> bool:
    return bool(sem_trywait(handle))


def semaphore_wait(handle: int, timeout: float) -> bool:
    if timeout <= 0:
        return bool(sem_trywait(handle))
    if _HAS_CLOCKWAIT:
        return bool(
            sem_clockwait(handle, _CLOCK_MONOTONIC, byref(_abs_timespec(_CLOCK_MONOTONIC, timeout)))
        )
    if TIMED_WAIT_NATIVE:
        return bool(sem_timedwait(handle, byref(_abs_timespec(time.CLOCK_REALTIME, timeout))))
    # macOS: polled, and like every wait one slice at most
    return _poll(lambda: bool(sem_trywait(handle)), min(timeout, WAIT_SLICE))


def semaphore_post(handle: int, n: int) -> None:
    # One permit a call (POSIX has no sem_post of n); EOVERFLOW past
    # SEM_VALUE_MAX.
    sem_post(handle)
    for _ in range(n - 1):
        sem_post(handle)


def semaphore_bind(handle: int, os_name: str) -> _semlock.Binding:
    # A reference of its own, by name: glibc and musl hand back the mapping
    # this process has (one more reference), macOS a new descriptor.
    if _semlock.DROPPED_AT_ONCE:
        return _semlock.bind(0, "/" + os_name, SEM_VALUE_MAX)
    # Where a SemLock would close only at a later collection (PyPy), its
    # mappings would pile up: the reference is ctypes' here, closed by
    # ``drop``, under a lock that every bound call takes too.
    own = _OwnReference(sem_open(_os_bytes(os_name), 0))
    return _Guarded(own, _raw_sem_trywait), _Guarded(own, _raw_sem_post), own.drop


class _OwnReference:
    __slots__ = ("guard", "ptr")

    def __init__(self, ptr: int) -> None:
        self.guard = threading.Lock()
        self.ptr: int | None = ptr

    def drop(self) -> None:
        with self.guard:
            ptr, self.ptr = self.ptr, None
        if ptr is not None:
            sem_close(ptr)


class _Guarded:
    """One of a semaphore's bound calls on an ``_OwnReference``: True when
    it took or posted, False when it did not or the reference is dropped."""

    __slots__ = ("call", "own")

    def __init__(self, own: _OwnReference, call: Callable[[int], int]) -> None:
        self.own, self.call = own, call

    def __iter__(self) -> _Guarded:
        return self

    def __next__(self) -> bool:
        own = self.own
        with own.guard:
            return own.ptr is not None and self.call(own.ptr) == 0


# (sched_yield(2), through the os module: every POSIX system has it)
yield_cpu = os.sched_yield


def signal_mask_bind(signums: Iterable[int]) -> tuple[Callable[[], int], ...] | None:
    blocked = ctypes.create_string_buffer(_SIGSET_SIZE)
    _sigemptyset(blocked)
    for signum in signums:
        _sigaddset(blocked, signum)
    saved = ctypes.create_string_buffer(_SIGSET_SIZE)
    # (what a restore restores until the first record: the mask now)
    if _raw_sigmask(_signal.SIG_BLOCK, None, saved) != 0:
        raise OSError(errno.EINVAL, "pthread_sigmask refused to report the signal mask")
    return (
        partial(_raw_sigmask, _signal.SIG_BLOCK, blocked, saved),
        partial(_raw_sigmask, _signal.SIG_BLOCK, blocked, None),
        partial(_raw_sigmask, _signal.SIG_SETMASK, saved, None),
    )


def semaphore_value(handle: int) -> int | None:
    if not SEM_VALUE:
        return None
    value = c_int()
    sem_getvalue(handle, byref(value))
    # Linux may report -(number of waiters) on some systems; clamp to 0.
    return max(value.value, 0)


# --------------------------------------------------------------------------
# Processes


def process_token(pid: int) -> int | None:
    if _HAS_PROC_PIDINFO:
        info = ctypes.create_string_buffer(_BSDINFO_SIZE)
        if proc_pidinfo(pid, _PROC_PIDTBSDINFO, 0, info, _BSDINFO_SIZE) != _BSDINFO_SIZE:
            return _kill_token(pid)
        raw = info.raw
        if int.from_bytes(raw[4:8], sys.byteorder) == _SZOMB:
            return None
        return int.from_bytes(raw[120:128], sys.byteorder) * 1_000_000 + int.from_bytes(
            raw[128:136], sys.byteorder
        )
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        # Missing or unreadable: /proc may hide other users' processes
        # (hidepid=2, ProtectProc=invisible).  Only proof of death counts.
        return _kill_token(pid)
    # Fields after the command name, which may itself contain ") ".
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X", b"x"):  # a zombie has its stat file still
        return None
    if int(fields[6]) & _PF_EXITING:
        # Exiting: its robust mutexes may already be released (a waiter got
        # EOWNERDEAD), and it will never close what it has open.
        return None
    return int(fields[19])  # field 22: start time in clock ticks since boot


def process_exists(pid: int) -> bool:
    return _kill_token(pid) is not None


def _kill_token(pid: int) -> int | None:
    # Alive, its start time unknown (0), unless the kernel says there is no
    # such process; EPERM (another user's) means it exists.  (A number that
    # is no pid at all, from a corrupt slot, is no live process; kill() must
    # never see 0 or a negative number, which name process groups.)
    if not 0 < pid <= 0x7FFFFFFF:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0
