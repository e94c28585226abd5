"""What the POSIX backend's modules share: the C libraries, the quirks
block, the error checks and small helpers.  Part of ``_posix``; nothing
outside the backend imports it."""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover - guarded by _backend
    raise ImportError("ctipc._posix_ffi is for POSIX systems, not win32")

import ctypes
import ctypes.util
import errno
import fcntl
import os
import time
from ctypes import c_long, c_void_p
from typing import Any, Callable

# --------------------------------------------------------------------------
# Libraries.  Private instances (never the shared ctypes.cdll), errno kept.
# glibc < 2.34 keeps sem_*/shm_* in librt and pthread_* in libpthread; load
# those by soname through find_library, never by absolute path (gh-52008).

_libc = ctypes.CDLL(None, use_errno=True)


def _library_with(symbol: str, *fallbacks: str) -> ctypes.CDLL:
    if hasattr(_libc, symbol):
        return _libc
    for short in fallbacks:
        path = ctypes.util.find_library(short)
        if path:
            lib = ctypes.CDLL(path, use_errno=True)
            if hasattr(lib, symbol):
                return lib
    raise ImportError(f"ctipc: the C library of {sys.platform} has no {symbol}()")


_sem_lib = _library_with("sem_open", "rt", "pthread")
_shm_lib = _library_with("shm_open", "rt")
_pthread_lib = _library_with("pthread_mutex_init", "pthread")
# The same libraries with the GIL kept across calls, for the calls that never
# block (PyPy has no PyDLL: a private CDLL there)
_PyDLL = getattr(ctypes, "PyDLL", ctypes.CDLL)
_pthread_pydll = _PyDLL(_pthread_lib._name, use_errno=True)
_sem_pydll = _PyDLL(_sem_lib._name, use_errno=True)

# --------------------------------------------------------------------------
# Quirks, settled here once.

PLATFORM = sys.platform
KERNEL_LIFETIME = False
PERSISTENT = True
# CTIPC_EMULATE=macos makes this backend take the paths that macOS takes
# where Linux has better ones (polled timed waits, no semaphore value, the
# flock mutex, segment lock files, no listing), so that the test suite runs
# them on Linux.  A testing aid: ctipc never needs the variable, and such a
# process must not share objects with ordinary ones (their locks differ).
_EMULATE = set(os.environ.get("CTIPC_EMULATE", "").split(","))
EMULATING = "macos" in _EMULATE
# Stores become visible to other CPUs in program order (x86-64's TSO): the
# queue then reads the other side's position without its mutex.  Elsewhere
# (ARM64), or with CTIPC_EMULATE=weak-memory (combinable: "macos,weak-memory"),
# it takes the mutex, whose acquire/release pair is a full barrier.
STORES_ORDERED = os.uname().machine in ("x86_64", "amd64", "i686", "i386") and (
    "weak-memory" not in _EMULATE
)
# macOS has no sem_timedwait/sem_clockwait: timed waits poll sem_trywait.
_HAS_CLOCKWAIT = hasattr(_sem_lib, "sem_clockwait") and not EMULATING  # glibc >= 2.30
TIMED_WAIT_NATIVE = _HAS_CLOCKWAIT or (hasattr(_sem_lib, "sem_timedwait") and not EMULATING)
# macOS exports sem_getvalue but it always fails with ENOSYS; probe by a
# symbol that only systems with a working one have alongside it.
SEM_VALUE = TIMED_WAIT_NATIVE and hasattr(_sem_lib, "sem_getvalue")
# Robust process-shared mutexes: glibc and musl.  macOS and OpenBSD lack the
# API; FreeBSD has it but cannot use it in shm mapped independently by each
# process (dotnet/runtime#10519), so only Linux takes this path.
ROBUST_MUTEX = (
    hasattr(_pthread_lib, "pthread_mutexattr_setrobust")
    and sys.platform.startswith("linux")
    and not EMULATING
)
# The pthread_mutex_t layout differs between C libraries: processes with
# different tags must not share a Lock.
_LIBC_NAME = "glibc" if hasattr(_libc, "gnu_get_libc_version") else "libc"
MUTEX_ABI = (
    f"pthread-{_LIBC_NAME}-{os.uname().machine}-{ctypes.sizeof(c_void_p) * 8}"
    if ROBUST_MUTEX
    else "flock-v1"
)
# Where shm objects are visible as files (Linux tmpfs); elsewhere no listing.
_SHM_DIR = "/dev/shm"
CAN_LIST = os.path.isdir(_SHM_DIR) and not EMULATING
# macOS: flock() on a shm_open descriptor fails (EINVAL/ENOTSUP: not a vnode),
# so the segment lock falls back to a lock file beside the segment.
_LOCK_DIR = _SHM_DIR if CAN_LIST else "/tmp"
# SEM_FAILED is (sem_t *)0 on glibc/musl and (sem_t *)-1 on macOS and BSD.
_SEM_FAILED = (None, ctypes.c_void_p(-1).value)
_HAS_CLOCKLOCK = hasattr(_pthread_lib, "pthread_mutex_clocklock")  # glibc >= 2.30
_HAS_FALLOCATE = hasattr(_libc, "posix_fallocate")  # not on macOS
# macOS tells a process's start time through proc_pidinfo (libproc);
# elsewhere /proc/PID/stat does.
_HAS_PROC_PIDINFO = hasattr(_libc, "proc_pidinfo")
_PTHREAD_PROCESS_SHARED = 1  # glibc, musl
_PTHREAD_MUTEX_ROBUST = 1  # glibc, musl
# The robust mutex's lock word (the first int of pthread_mutex_t on glibc and
# musl) holds the owner's thread id, with the kernel's FUTEX_OWNER_DIED bit
# once the owner died holding it; glibc keeps the owner in a second word
# (__owner, the third int), PTHREAD_MUTEX_INCONSISTENT between EOWNERDEAD
# and pthread_mutex_consistent.
_FUTEX_TID_MASK = 0x3FFFFFFF
_FUTEX_OWNER_DIED = 0x40000000
_OWNER_WORD = 2
_PTHREAD_MUTEX_INCONSISTENT = 0x7FFFFFFF
# Largest value of a semaphore: SEM_VALUE_MAX is 32767 on macOS (and the
# POSIX minimum), 2**31 - 1 on Linux and the BSDs.
SEM_VALUE_MAX = 32767 if sys.platform == "darwin" else 2**31 - 1
# sem_post adds one permit a call: release(n) posts at most this many (about
# 50 ms), so that no call spends minutes in a loop of posts.
RELEASE_MAX = 2**16
# /proc/PID/stat's flags field: PF_EXITING is set when a process's exit
# begins, before the kernel releases its robust mutexes.
_PF_EXITING = 0x4
# Polling of emulated timed waits: start short, grow to this many seconds.
_POLL_MAX = 0.005

_CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", 1)

# --------------------------------------------------------------------------
# Error checks.  Each builds the exception from errno at once.


class _timespec(ctypes.Structure):
    # time_t and long are both `long` on the LP64 and ILP32 ABIs ctipc runs on
    _fields_ = [("tv_sec", c_long), ("tv_nsec", c_long)]


def _name_of(args: tuple[Any, ...]) -> str | None:
    first = args[0] if args else None
    return first.decode("utf-8", "replace").lstrip("/") if isinstance(first, bytes) else None


def _errno_error(args: tuple[Any, ...], code: int | None = None) -> OSError:
    e = ctypes.get_errno() if code is None else code
    return OSError(e, os.strerror(e), _name_of(args))


def _check_minus1(result: int, func: Any, args: tuple[Any, ...]) -> Any:
    if result == -1:
        raise _errno_error(args)
    return args


def _check_wait(result: int, func: Any, args: tuple[Any, ...]) -> bool:
    # Expected outcomes are return values: EAGAIN (trywait), ETIMEDOUT and
    # EINTR (the caller loops against its own deadline) give False.
    if result == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
        return False
    raise _errno_error(args, e)


def _check_pthread(*expected: int) -> Callable[[int, Any, tuple[Any, ...]], Any]:
    # pthread functions return the error number instead of setting errno.
    def check(result: int, func: Any, args: tuple[Any, ...]) -> Any:
        if result == 0 or result in expected:
            return result
        raise OSError(result, os.strerror(result))

    return check


def _declare(lib: ctypes.CDLL, name: str, argtypes: list[Any], restype: Any, errcheck: Any) -> Any:
    fn = getattr(lib, name)
    fn.argtypes = argtypes
    fn.restype = restype
    if errcheck is not None:  # None: the caller reads the result inline
        fn.errcheck = errcheck
    return fn


# --------------------------------------------------------------------------
# Helpers


def _os_bytes(os_name: str) -> bytes:
    return ("/" + os_name).encode("ascii")


def _abs_timespec(clock: int, timeout: float) -> _timespec:
    t = time.clock_gettime(clock) + timeout
    sec = int(t)
    return _timespec(sec, int((t - sec) * 1e9))


def _poll(attempt: Callable[[], bool], timeout: float) -> bool:
    """Call ``attempt`` until it succeeds or ``timeout`` passes, sleeping a
    little longer each time (20 us .. _POLL_MAX)."""
    if attempt():
        return True
    deadline = time.monotonic() + timeout
    delay = 2e-5
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        if attempt():
            return True
        delay = min(delay * 2, _POLL_MAX)


def _lock_file(os_name: str, suffix: str, mode: int) -> int:
    fd = os.open(os.path.join(_LOCK_DIR, os_name + suffix), os.O_RDWR | os.O_CREAT, mode)
    return fd


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
