"""kernel32 bindings: Windows.

Every foreign function is declared once, below, under its C name (the ``...W``
forms), with argtypes, restype and an errcheck that raises the right OSError
subclass at once (LastError is read straight after the call through
``use_last_error=True``).  Windows settles most of what POSIX needs emulating:
named objects die with their last handle, waits take a timeout, and a mutex
whose owner died is reported as WAIT_ABANDONED.  The rest of ctipc sees only
the functions at the bottom, which implement ``_backend.Backend``.
"""

from __future__ import annotations

import platform
import sys

if sys.platform != "win32":  # pragma: no cover - guarded by _backend
    raise ImportError(f"ctipc._windows is for win32, not {sys.platform}")

import _winapi
import ctypes
import errno
import math
import mmap
import os
import threading
import time
from collections.abc import Iterable
from ctypes import byref
from ctypes.wintypes import (
    BOOL,
    DWORD,
    FILETIME,
    HANDLE,
    LONG,
    LPCWSTR,
    LPDWORD,
    LPFILETIME,
    LPLONG,
    LPVOID,
)
from typing import Any, Callable

from . import _semlock
from ._backend import MUTEX_ACQUIRED, MUTEX_OWNER_DIED, MUTEX_TIMEOUT, WAIT_SLICE

# --------------------------------------------------------------------------
# Library.  A private instance (never the shared ctypes.windll, whose
# prototypes other libraries overwrite: pywinauto #769), LastError kept.

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

# --------------------------------------------------------------------------
# Capabilities and quirks, settled here once.

PLATFORM = "win32"
# The kernel removes a named object when its last handle is closed, also when
# the process holding it dies: no attach registry, *_unlink are no-ops.
KERNEL_LIFETIME = True
# ... and nothing can outlive its handles, so persistent=True is refused by
# the portable layer.
PERSISTENT = False
TIMED_WAIT_NATIVE = True  # WaitForSingleObject takes a timeout
SEM_VALUE = False  # no documented way to read a semaphore's count
SEM_VALUE_MAX = 2**31 - 1  # lMaximumCount is a LONG
RELEASE_MAX = SEM_VALUE_MAX  # ReleaseSemaphore posts n at once
#: kernel namespaces a user's name may start with (the default is Local\)
NAMESPACES = ("Global\\", "Local\\")
ROBUST_MUTEX = True  # a mutex whose owner died is returned as WAIT_ABANDONED
MUTEX_ABI = "win32-mutex"  # a named kernel mutex: nothing lives in the segment
CAN_LIST = False  # enumerating named objects needs the native NT API
# x86/x64 make stores visible in program order; ARM64 Windows does not.
STORES_ORDERED = platform.machine().upper() in ("AMD64", "X86", "I386", "I686")

# Namespace of an object name that names none.  Local\ is the caller's
# session; Global\ (visible to services and other sessions; creating a file
# mapping there needs SeCreateGlobalPrivilege) is chosen by a user name that
# starts with "Global\" (see _names.os_name).
NAMESPACE = "Local\\"

_INVALID_HANDLE_VALUE = -1  # (HANDLE)-1: CreateFileMappingW backs the mapping by the paging file
_PAGE_READWRITE = 0x04  # without SEC_RESERVE: SEC_COMMIT, the whole size is committed at create
_FILE_MAP_ALL_ACCESS = 0x000F001F
_SEMAPHORE_ALL_ACCESS = 0x001F0003
_SYNCHRONIZE = 0x00100000
_MUTEX_MODIFY_STATE = 0x0001
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_SEM_MAX = 0x7FFFFFFF  # LONG lMaximumCount

_WAIT_OBJECT_0 = 0x000
_WAIT_ABANDONED = 0x080
_WAIT_TIMEOUT = 0x102
_WAIT_FAILED = 0xFFFFFFFF
_INFINITE = 0xFFFFFFFF  # never passed: every wait is bounded

_ERROR_ACCESS_DENIED = 5
_ERROR_INVALID_PARAMETER = 87
_ERROR_ALREADY_EXISTS = 183
_ERROR_TOO_MANY_POSTS = 298

# --------------------------------------------------------------------------
# Error checks.  Each builds the exception from LastError at once.


def _win_error(code: int, name: str | None) -> OSError:
    # OSError(None, msg, filename, winerror) is what ctypes.WinError builds,
    # plus the name: on Windows the constructor derives errno from winerror
    # and picks the subclass (ERROR_FILE_NOT_FOUND -> FileNotFoundError,
    # ERROR_ACCESS_DENIED -> PermissionError, ERROR_ALREADY_EXISTS ->
    # FileExistsError).
    return OSError(None, ctypes.FormatError(code).strip(), name, code)


def _name_of(args: tuple[Any, ...]) -> str | None:
    # The object name is the one LPCWSTR argument; report it without the
    # namespace, as _posix reports it without the leading "/".
    return next((a.rpartition("\\")[2] for a in args if isinstance(a, str)), None)


def _check_nonzero(result: int | None, func: Any, args: tuple[Any, ...]) -> Any:
    # HANDLE functions return NULL (None through c_void_p) on failure, BOOL
    # functions FALSE.  None of those used here returns INVALID_HANDLE_VALUE.
    if not result:
        raise _win_error(ctypes.get_last_error(), _name_of(args))
    return args


def _check_wait(result: int, func: Any, args: tuple[Any, ...]) -> Any:
    # WAIT_OBJECT_0, WAIT_ABANDONED and WAIT_TIMEOUT are outcomes; the caller
    # tells them apart.
    if result == _WAIT_FAILED:
        raise _win_error(ctypes.get_last_error(), None)
    return args


def _declare(fn_name: str, argtypes: list[Any], restype: Any, errcheck: Any) -> Any:
    fn = getattr(_kernel32, fn_name)
    fn.argtypes = argtypes
    fn.restype = restype
    if errcheck is not None:  # None: the result is no error report
        fn.errcheck = errcheck
    return fn


# --------------------------------------------------------------------------
# Declarations (MSDN names).  Security attributes are always NULL: the
# default security descriptor of the caller's token.

# BOOL CloseHandle(HANDLE hObject);
CloseHandle = _declare("CloseHandle", [HANDLE], BOOL, _check_nonzero)
# BOOL SwitchToThread(void): FALSE only says no thread was ready to run
SwitchToThread = _declare("SwitchToThread", [], BOOL, None)
# DWORD WaitForSingleObject(HANDLE hHandle, DWORD dwMilliseconds);
WaitForSingleObject = _declare("WaitForSingleObject", [HANDLE, DWORD], DWORD, _check_wait)

# HANDLE CreateFileMappingW(HANDLE hFile, LPSECURITY_ATTRIBUTES lpAttributes, DWORD flProtect,
#                           DWORD dwMaximumSizeHigh, DWORD dwMaximumSizeLow, LPCWSTR lpName);
CreateFileMappingW = _declare(
    "CreateFileMappingW", [HANDLE, LPVOID, DWORD, DWORD, DWORD, LPCWSTR], HANDLE, _check_nonzero
)
# HANDLE OpenFileMappingW(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCWSTR lpName);
OpenFileMappingW = _declare("OpenFileMappingW", [DWORD, BOOL, LPCWSTR], HANDLE, _check_nonzero)

# HANDLE CreateSemaphoreW(LPSECURITY_ATTRIBUTES lpAttributes, LONG lInitialCount,
#                         LONG lMaximumCount, LPCWSTR lpName);
CreateSemaphoreW = _declare(
    "CreateSemaphoreW", [LPVOID, LONG, LONG, LPCWSTR], HANDLE, _check_nonzero
)
# HANDLE OpenSemaphoreW(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCWSTR lpName);
OpenSemaphoreW = _declare("OpenSemaphoreW", [DWORD, BOOL, LPCWSTR], HANDLE, _check_nonzero)
# BOOL ReleaseSemaphore(HANDLE hSemaphore, LONG lReleaseCount, LPLONG lpPreviousCount);
ReleaseSemaphore = _declare("ReleaseSemaphore", [HANDLE, LONG, LPLONG], BOOL, _check_nonzero)

# HANDLE CreateMutexW(LPSECURITY_ATTRIBUTES lpMutexAttributes, BOOL bInitialOwner, LPCWSTR lpName);
CreateMutexW = _declare("CreateMutexW", [LPVOID, BOOL, LPCWSTR], HANDLE, _check_nonzero)
# HANDLE OpenMutexW(DWORD dwDesiredAccess, BOOL bInheritHandle, LPCWSTR lpName);
OpenMutexW = _declare("OpenMutexW", [DWORD, BOOL, LPCWSTR], HANDLE, _check_nonzero)
# BOOL ReleaseMutex(HANDLE hMutex);  ERROR_NOT_OWNER if the caller does not own it
ReleaseMutex = _declare("ReleaseMutex", [HANDLE], BOOL, _check_nonzero)

# HANDLE OpenProcess(DWORD dwDesiredAccess, BOOL bInheritHandle, DWORD dwProcessId);
OpenProcess = _declare("OpenProcess", [DWORD, BOOL, DWORD], HANDLE, _check_nonzero)
# BOOL GetExitCodeProcess(HANDLE hProcess, LPDWORD lpExitCode);
GetExitCodeProcess = _declare("GetExitCodeProcess", [HANDLE, LPDWORD], BOOL, _check_nonzero)
# BOOL GetProcessTimes(HANDLE hProcess, LPFILETIME lpCreationTime, LPFILETIME lpExitTime,
#                      LPFILETIME lpKernelTime, LPFILETIME lpUserTime);
GetProcessTimes = _declare("GetProcessTimes", [HANDLE] + [LPFILETIME] * 4, BOOL, _check_nonzero)

# --------------------------------------------------------------------------
# Helpers


def _win_name(os_name: str) -> str:
    return os_name if "\\" in os_name else NAMESPACE + os_name


def _ms(timeout: float) -> int:
    """``timeout`` seconds as a WaitForSingleObject argument: 0 polls.  Rounded
    up, so a short wait does not turn into a poll that the caller spins on
    (the wait ends on a timer tick anyway, ~15.6 ms by default).  Always below
    INFINITE, which would never time out."""
    if not timeout > 0:  # also NaN
        return 0
    if timeout >= (_INFINITE - 1) / 1000:
        return _INFINITE - 1
    return math.ceil(timeout * 1000)


def _new_handle(handle: int, os_name: str) -> int:
    """Called right after CreateFileMappingW/CreateSemaphoreW, which succeed
    with ERROR_ALREADY_EXISTS and a handle to the existing object (STYLE 10,
    as CPython's shared_memory): close that handle and raise FileExistsError."""
    code = ctypes.get_last_error()  # before CloseHandle overwrites it
    if code == _ERROR_ALREADY_EXISTS:
        CloseHandle(handle)
        raise _win_error(code, os_name)
    return handle


def _close_handles(*handles: int) -> None:
    """Close every handle given, also when closing one of them fails."""
    for i, h in enumerate(handles):
        if h:
            try:
                CloseHandle(h)
            except BaseException:
                _close_handles(*handles[i + 1 :])
                raise


# --------------------------------------------------------------------------
# Shared memory


class Segment:
    """An open file mapping and, once ``segment_lock`` has run, a handle to
    its lock mutex."""

    __slots__ = ("handle", "lock", "lock_owner", "os_name")

    def __init__(self, os_name: str, handle: int) -> None:
        self.os_name = os_name
        self.handle = handle  # the file mapping; 0 once closed
        self.lock = 0  # the segment lock's mutex, opened lazily
        self.lock_owner = 0  # ident of the thread holding the lock through this object

    @property
    def size(self) -> int | None:
        # Windows only tells a view's page-rounded size (VirtualQuery), not
        # the size given at create; the portable layer reads its own header.
        return None

    # Names die with their last handle here (KERNEL_LIFETIME): the portable
    # layer never unlinks, so it needs no identity, and the ACL decides
    # who may open a name.
    identity = None
    other_owner = None
    age = 0.0


def segment_create(os_name: str, size: int, mode: int, timeout: float) -> Segment:
    # `mode` is not used: POSIX permission bits have no faithful translation
    # into an ACL.  The default security descriptor (the creator's token:
    # its user, SYSTEM, Administrators) in the session-local namespace is the
    # closest to ctipc's 0o600 default.
    ctypes.set_last_error(0)  # success reports ERROR_ALREADY_EXISTS only through LastError
    handle = CreateFileMappingW(
        _INVALID_HANDLE_VALUE,
        None,
        _PAGE_READWRITE,  # committed now: a full commit limit fails here, not on a later write
        (size >> 32) & 0xFFFFFFFF,
        size & 0xFFFFFFFF,
        _win_name(os_name),
    )
    seg = Segment(os_name, _new_handle(handle, os_name))
    try:
        # The lock straight after: an attacher that opens the mapping before
        # then finds all-zero pages (never a partial header) or waits here.
        if not segment_lock(seg, timeout):
            raise TimeoutError(errno.ETIMEDOUT, "timed out locking a new segment", os_name)
        return seg
    except BaseException:
        # Closing our handles is all the undoing there is: the mapping dies
        # with its last handle, and no other process can hold one it needs.
        segment_close(seg)
        raise


def segment_attach(os_name: str) -> Segment:
    handle: int = OpenFileMappingW(_FILE_MAP_ALL_ACCESS, False, _win_name(os_name))
    return Segment(os_name, handle)


def segment_map(seg: Segment, offset: int, length: int) -> mmap.mmap:
    # mmap opens the mapping by name (CreateFileMappingW on an existing name
    # returns it, whatever the size passed) and maps a view, as CPython's
    # multiprocessing.shared_memory does.  It must exist: seg.handle keeps it
    # alive, or mmap would silently create a new, empty one.
    return mmap.mmap(
        -1, length, tagname=_win_name(seg.os_name), access=mmap.ACCESS_WRITE, offset=offset
    )


def segment_close(seg: Segment) -> None:
    try:
        if seg.lock_owner == threading.get_ident():
            # Closing a handle does not release a mutex: ownership belongs to
            # the thread, not the handle.  Release it, as closing an flock()ed
            # descriptor does on POSIX.  A lock held by another thread is
            # abandoned when that thread exits; the next holder gets it.
            segment_unlock(seg)
    finally:
        lock, handle = seg.lock, seg.handle
        seg.lock = seg.handle = 0
        _close_handles(lock, handle)


def segment_unlink(os_name: str) -> bool:
    # Nothing to remove: a name dies with the last handle to its object.
    return False


def segment_named(seg: Segment) -> bool:
    return True  # a name is never unlinked: it leads to its object while any handle does


def segment_list() -> list[str]:
    return []


def segment_lock(seg: Segment, timeout: float) -> bool:
    # A named mutex beside the mapping; the kernel releases it (abandoned)
    # if its holder dies.  WAIT_ABANDONED counts as acquired: the portable
    # layer re-checks the header it protects.  Windows mutexes are recursive
    # per thread, so two Segment objects of one name used by one thread would
    # not exclude each other; the portable layer serialises each object with
    # a threading lock and never nests these short sections, and other
    # threads and processes are excluded by the kernel.  Lock and unlock
    # must come from the same thread (ERROR_NOT_OWNER otherwise).
    if not seg.lock:
        # Creates the mutex or, with ERROR_ALREADY_EXISTS, opens the existing one.
        seg.lock = CreateMutexW(None, False, _win_name(seg.os_name + "-lock"))
    deadline = time.monotonic() + timeout
    while True:
        # Slices of WAIT_SLICE: Python runs signal handlers (Ctrl-C) between them.
        rc = WaitForSingleObject(seg.lock, _ms(min(deadline - time.monotonic(), WAIT_SLICE)))
        if rc in (_WAIT_OBJECT_0, _WAIT_ABANDONED):
            seg.lock_owner = threading.get_ident()
            return True
        if time.monotonic() >= deadline:
            return False


def segment_unlock(seg: Segment) -> None:
    seg.lock_owner = 0
    ReleaseMutex(seg.lock)


# --------------------------------------------------------------------------
# Semaphores


def semaphore_open(os_name: str, create: bool, initial: int, mode: int) -> int:
    # `mode` is not used, as in segment_create.
    name = _win_name(os_name)
    if not create:
        handle: int = OpenSemaphoreW(_SEMAPHORE_ALL_ACCESS, False, name)
        return handle
    if not 0 <= initial <= _SEM_MAX:  # ctypes would truncate it silently
        raise _win_error(_ERROR_INVALID_PARAMETER, os_name)
    ctypes.set_last_error(0)
    return _new_handle(CreateSemaphoreW(None, initial, _SEM_MAX, name), os_name)


def semaphore_close(handle: int) -> None:
    CloseHandle(handle)


def semaphore_unlink(os_name: str) -> bool:
    # Nothing to remove, as in segment_unlink.
    return False


def semaphore_trywait(handle: int) -> bool:
    return bool(WaitForSingleObject(handle, 0) == _WAIT_OBJECT_0)


def semaphore_wait(handle: int, timeout: float) -> bool:
    return bool(WaitForSingleObject(handle, _ms(timeout)) == _WAIT_OBJECT_0)


def semaphore_post(handle: int, n: int) -> None:
    # All n at once or none: past lMaximumCount ReleaseSemaphore changes
    # nothing and fails with ERROR_TOO_MANY_POSTS, given to the caller as
    # the contract's EOVERFLOW.
    if n > _SEM_MAX:  # ctypes would truncate it silently
        raise _overflow()
    try:
        ReleaseSemaphore(handle, n, None)
    except OSError as e:
        if e.winerror == _ERROR_TOO_MANY_POSTS:
            raise _overflow() from None
        raise


def _overflow() -> OSError:
    # The contract's error for a value that would pass SEM_VALUE_MAX.
    return OSError(errno.EOVERFLOW, "the semaphore's value would exceed its maximum")


def semaphore_value(handle: int) -> int | None:
    return None


def semaphore_bind(handle: int, os_name: str) -> _semlock.Binding:
    # The SemLock owns a duplicate of the handle (CloseHandle when it goes),
    # which keeps the named semaphore alive: bound only where it goes with
    # the last user, not at a collection some time after close().
    if not _semlock.DROPPED_AT_ONCE:
        return _semlock.NOT_BOUND
    me = _winapi.GetCurrentProcess()
    own = _winapi.DuplicateHandle(me, handle, me, 0, False, _winapi.DUPLICATE_SAME_ACCESS)
    try:
        return _semlock.bind(own, None, _SEM_MAX)
    except BaseException:
        CloseHandle(own)
        raise


# --------------------------------------------------------------------------
# Crash-safe mutex: a named kernel mutex beside the segment (`offset` only
# names it: nothing of it lives in shared memory).
#
# A Windows mutex is recursive per thread, but a Lock must behave like
# threading.Lock: the holder's second acquire must not succeed.  So this
# process records which thread holds each mutex, by name (two Lock objects of
# one name share the kernel mutex), and refuses a holder's acquire without
# asking the kernel.  The record is the Thread object, not its ident: Windows
# reuses thread ids, and a thread that died holding the mutex must not make
# a new thread with its id time out forever.  Only the kernel owner writes
# its entry, so the dict needs no lock of its own.

_holders: dict[str, threading.Thread] = {}
# Mutexes this process found abandoned without taking them for the caller
# (locked() had to take one to look): the next acquire here reports it.
_abandoned: set[str] = set()
# Mutexes a bound try_lock took from a dead owner: held, and the caller's
# next mutex_acquire reports OWNER_DIED.
_died_pending: set[str] = set()


class _Mutex:
    __slots__ = ("closing", "handle", "name")

    def __init__(self, name: str, handle: int) -> None:
        self.name = name  # the Windows name, with namespace
        self.handle = handle  # 0 once closed
        self.closing = False  # closed while held: close the handle at release


Mutex = _Mutex


def _mutex_name(seg_os_name: str, offset: int) -> str:
    # One segment may hold several mutexes (a queue has two): the offset
    # tells them apart.
    return _win_name(f"{seg_os_name}-mutex{offset}")


def mutex_create(seg: Segment, offset: int) -> Mutex:
    # Creates the mutex, or opens one of that name (ERROR_ALREADY_EXISTS is
    # not an error here): it can only be held open by processes that use the
    # same segment name, which pthread_mutex_init would not undo either.
    name = _mutex_name(seg.os_name, offset)
    return _Mutex(name, CreateMutexW(None, False, name))


def mutex_open(seg: Segment, offset: int) -> Mutex:
    name = _mutex_name(seg.os_name, offset)
    return _Mutex(name, OpenMutexW(_SYNCHRONIZE | _MUTEX_MODIFY_STATE, False, name))


def mutex_acquire(m: Mutex, timeout: float) -> int:
    me = threading.current_thread()
    if _holders.get(m.name) is me and m.name in _died_pending:
        _died_pending.discard(m.name)
        return MUTEX_OWNER_DIED
    if _holders.get(m.name) is me:
        # The kernel would grant it again.  Sleep the slice instead, so a
        # blocking acquire by the holder waits (as on threading.Lock) rather
        # than spins, and time out.
        time.sleep(min(max(timeout, 0.0), WAIT_SLICE))
        return MUTEX_TIMEOUT
    rc = WaitForSingleObject(m.handle, _ms(timeout))
    if rc == _WAIT_OBJECT_0 and m.name not in _abandoned:
        result = MUTEX_ACQUIRED
    elif rc == _WAIT_ABANDONED:
        # Its owner thread ended without releasing it; it is ours now and
        # needs no repair (no pthread_mutex_consistent here).
        result = MUTEX_OWNER_DIED
    elif rc == _WAIT_OBJECT_0:
        _abandoned.discard(m.name)
        result = MUTEX_OWNER_DIED
    else:
        return MUTEX_TIMEOUT
    _holders[m.name] = me
    return result


def mutex_intact(m: Mutex) -> Callable[[], bool]:
    # A kernel object, outside the shared memory: nothing there to garble.
    return _always


def _always() -> bool:
    return True


def mutex_bind(m: Mutex) -> tuple[Callable[[], int], Callable[[], int]]:
    # The general calls: the per-process holder record is needed anyway.
    def try_lock() -> int:
        if mutex_acquire(m, 0.0) == MUTEX_ACQUIRED:
            return 0
        if _holders.get(m.name) is threading.current_thread():
            _died_pending.add(m.name)  # taken from a dead owner: mutex_acquire says so
        return 1

    def unlock() -> int:
        if _holders.get(m.name) is not threading.current_thread() or m.closing:
            return 1
        mutex_release(m)
        return 0

    return try_lock, unlock


def mutex_locked(m: Mutex) -> bool:
    if m.name in _holders:
        return True
    rc = WaitForSingleObject(m.handle, 0)
    if rc == _WAIT_TIMEOUT:
        return True
    if rc == _WAIT_ABANDONED:
        _abandoned.add(m.name)
    ReleaseMutex(m.handle)
    return False


def mutex_held(m: Mutex) -> bool:
    return _holders.get(m.name) is threading.current_thread()


def mutex_abandoned(seg: Segment, offset: int) -> bool:
    # Never asked (KERNEL_LIFETIME): a mutex dies with its last handle, and
    # with it the fact that its owner died holding it.
    return False


def mutex_state(m: Mutex) -> Callable[[], bytes]:
    return bytes  # a kernel object: no bytes of it in shared memory to check


def mutex_release(m: Mutex, state: bytes = b"") -> None:
    if _holders.get(m.name) is not threading.current_thread():
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), m.name.rpartition("\\")[2])
    # Forget the holder first: once ReleaseMutex returns, another thread of
    # this process may take it and record itself.
    del _holders[m.name]
    ReleaseMutex(m.handle)
    if m.closing:
        mutex_close(m)


def mutex_close(m: Mutex) -> None:
    # Closed while a thread of this process holds it, the handle stays open
    # until that thread releases it (with its last handle gone the thread
    # could not release it at all), as on POSIX.
    if m.name in _holders:
        m.closing = True
        return
    handle, m.handle = m.handle, 0
    _close_handles(handle)


def mutex_unlink(seg_os_name: str, offset: int) -> None:
    # Nothing to remove: the mutex dies with its last handle.
    pass


# --------------------------------------------------------------------------
# Processes


def process_token(pid: int) -> int | None:
    if not 0 < pid <= 0xFFFFFFFF:  # a DWORD; 0 is the System Idle Process
        return None
    try:
        handle: int = OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    except OSError as e:
        if e.winerror == _ERROR_INVALID_PARAMETER:  # no process with that id
            return None
        if e.winerror == _ERROR_ACCESS_DENIED:  # alive, identity unknown
            return 0
        raise
    try:
        # A process that exited stays openable while anyone has a handle to
        # it.  (One that exited with code 259 looks alive: MSDN's caveat.)
        code = DWORD()
        GetExitCodeProcess(handle, byref(code))
        if code.value != _STILL_ACTIVE:
            return None
        # The creation time (100 ns since 1601) tells it from an earlier
        # process with the same id; the other three times are not used.
        created, exited, kernel, user = FILETIME(), FILETIME(), FILETIME(), FILETIME()
        GetProcessTimes(handle, byref(created), byref(exited), byref(kernel), byref(user))
        return (created.dwHighDateTime << 32) | created.dwLowDateTime
    finally:
        CloseHandle(handle)


def signal_mask_bind(signums: Iterable[int]) -> tuple[Callable[[], int], ...] | None:
    return None  # Windows threads have no signal masks


def yield_cpu() -> None:
    SwitchToThread()


def process_exists(pid: int) -> bool:
    # OpenProcess and GetExitCodeProcess are the cheapest look Windows has
    return process_token(pid) is not None


def pid_namespace() -> int:
    return 0
