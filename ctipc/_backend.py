"""The one seam between the portable layer and the operating system.

It picks the OS module at import (``_posix`` for Linux, macOS and the BSDs,
``_windows`` for Windows) and defines, as a ``typing.Protocol``, the interface
both implement with the same signatures and the same semantics.  mypy checks
each OS module against it (``_os: Backend = ...`` below, once per
``--platform``).  The portable modules import ``os_backend`` from here and
never ``ctypes``.

Conventions every implementation keeps:

* OS failures are ``OSError`` subclasses carrying errno (or winerror), the OS
  message and the OS object name as ``filename``.
* Expected outcomes are return values: a wait that times out returns False.
* A wait never blocks longer than the ``timeout`` it is given (the portable
  layer calls it in slices of at most ``WAIT_SLICE`` seconds, so Ctrl-C and
  deadlines are honoured between slices).  It may return False early, e.g. on
  EINTR; callers loop against their own deadline.
* Handles are ints or small backend objects; nothing returned is a ctypes
  object, and buffers are ``mmap.mmap`` objects.
"""

from __future__ import annotations

import mmap
import sys
from typing import Any, Protocol

__all__ = [
    "MUTEX_ACQUIRED",
    "MUTEX_OWNER_DIED",
    "MUTEX_TIMEOUT",
    "WAIT_SLICE",
    "Backend",
    "Mutex",
    "Segment",
    "os_backend",
]

from ._consts import MUTEX_ACQUIRED, MUTEX_OWNER_DIED, MUTEX_TIMEOUT, WAIT_SLICE

# Handles are the OS module's own small objects.  They are typed Any here: a
# Protocol parameter may not be narrowed by an implementation, and the
# portable layer only passes them back (plus ``.os_name`` and ``.size`` on a
# segment: the OS name, and its size in bytes or None where the OS cannot
# tell).
Segment = Any
Mutex = Any


class Backend(Protocol):
    """What an OS module provides.  Every function is module-level."""

    #: short platform tag for diagnostics ("linux", "darwin", "win32", ...)
    PLATFORM: str
    #: True where the kernel removes an object with its last handle (Windows);
    #: then the portable layer keeps no attach registry and ``*_unlink`` are no-ops.
    KERNEL_LIFETIME: bool
    #: True where ``persistent=True`` can be honoured (objects outlive handles)
    PERSISTENT: bool
    #: True where semaphore waits with a timeout are a kernel wait; False where
    #: they are emulated by bounded polling (macOS has no sem_timedwait).
    TIMED_WAIT_NATIVE: bool
    #: True where ``semaphore_value`` can report a value (macOS has no sem_getvalue).
    SEM_VALUE: bool
    #: True where the Lock's owner-death detection is done by the kernel
    #: (robust pthread mutex, Windows abandoned mutex); False: emulated.
    ROBUST_MUTEX: bool
    #: identifies the mutex's in-memory layout; processes whose tags differ
    #: (glibc vs musl) must not share a Lock.
    MUTEX_ABI: str
    #: True where ``segment_list`` can enumerate ctipc objects.
    CAN_LIST: bool
    #: True where this CPU makes stores visible to other CPUs in program
    #: order (x86-64), so an aligned 8-byte position stored after the bytes
    #: it covers may be read without a barrier; False elsewhere (ARM64) and
    #: under ``CTIPC_EMULATE=weak-memory``.
    STORES_ORDERED: bool

    # -- shared memory -------------------------------------------------------
    def segment_create(self, os_name: str, size: int, mode: int, timeout: float) -> Segment:
        """Create a new object of ``size`` bytes (memory reserved up front where
        the OS allows, so a full ``/dev/shm`` fails here with ENOSPC, not with
        SIGBUS later).  Raises FileExistsError.  Returns with the segment lock
        held (see ``segment_lock``); TimeoutError if that takes over ``timeout``."""
        ...

    def segment_attach(self, os_name: str) -> Segment:
        """Open an existing object; FileNotFoundError if there is none."""
        ...

    def segment_map(self, seg: Segment, offset: int, length: int) -> mmap.mmap:
        """Map ``length`` bytes at ``offset`` (a multiple of
        ``mmap.ALLOCATIONGRANULARITY``) read-write."""
        ...

    def segment_close(self, seg: Segment) -> None:
        """Close the handle(s).  Mappings are closed by the caller first."""
        ...

    def segment_unlink(self, os_name: str) -> bool:
        """Remove the name; False if it did not exist.  No-op on Windows."""
        ...

    def segment_list(self) -> list[str]:
        """OS names of the ctipc shared-memory objects on this machine."""
        ...

    def segment_lock(self, seg: Segment, timeout: float) -> bool:
        """Take the segment's lock, which serialises creation, attach and
        detach between processes and is released by the kernel when its holder
        dies.  Polls until ``timeout``; False if it could not be taken."""
        ...

    def segment_unlock(self, seg: Segment) -> None: ...

    # -- semaphores ----------------------------------------------------------
    def semaphore_open(self, os_name: str, create: bool, initial: int, mode: int) -> int:
        """create=True: create, FileExistsError if it exists; False: attach,
        FileNotFoundError if missing."""
        ...

    def semaphore_close(self, handle: int) -> None: ...

    def semaphore_unlink(self, os_name: str) -> bool: ...

    def semaphore_trywait(self, handle: int) -> bool: ...

    def semaphore_wait(self, handle: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds (one slice)."""
        ...

    def semaphore_post(self, handle: int, n: int) -> None: ...

    def semaphore_value(self, handle: int) -> int | None: ...

    # -- crash-safe mutex (Lock) ---------------------------------------------
    def mutex_create(self, seg: Segment, mm: mmap.mmap, offset: int) -> Mutex:
        """Initialise a mutex in ``mm`` at ``offset`` (64 bytes, 64-aligned)."""
        ...

    def mutex_open(self, seg: Segment, mm: mmap.mmap, offset: int) -> Mutex: ...

    def mutex_acquire(self, mutex: Mutex, timeout: float) -> int:
        """One wait of at most ``timeout`` (0: try).  Returns ``MUTEX_TIMEOUT``,
        ``MUTEX_ACQUIRED`` or ``MUTEX_OWNER_DIED`` (acquired from a holder that
        died; the mutex is already made consistent)."""
        ...

    def mutex_release(self, mutex: Mutex) -> None:
        """PermissionError if the calling thread does not hold it."""
        ...

    def mutex_close(self, mutex: Mutex) -> None:
        """Drop the mutex's handles/references to the mapping (not held)."""
        ...

    def mutex_unlink(self, seg_os_name: str, offset: int) -> None:
        """Remove whatever the mutex at ``offset`` of that segment keeps
        outside it (a lock file where flock() stands in for it)."""
        ...

    # -- processes -----------------------------------------------------------
    def process_token(self, pid: int) -> int | None:
        """None if ``pid`` is not a live process; else a number that tells
        this process apart from an earlier one with the same pid (its start
        time), or 0 where the OS cannot tell."""
        ...

    def pid_namespace(self) -> int:
        """An id of this process's pid namespace (0 where there are none):
        pids recorded from another namespace cannot be checked from here."""
        ...


if sys.platform == "win32":
    from . import _windows as _os
else:
    from . import _posix as _os

os_backend: Backend = _os
