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
* Every wait is ONE slice: it is given a ``timeout`` of at most
  ``WAIT_SLICE`` seconds and never blocks longer (polling inside it where the
  OS has no timed wait).  The portable layer loops over slices against its
  own deadline, so that Ctrl-C, ``close()`` from another thread and deadlines
  are honoured between them.  A wait may return False early, e.g. on EINTR.
  The fake backend of the tests checks this on every call.
* Handles are ints or small backend objects; nothing returned is a ctypes
  object, and buffers are ``mmap.mmap`` objects.

Bound calls (the hot path).  ``mutex_bind(mutex)`` returns ``(try_lock,
unlock)``: two zero-argument callables made once when the object opens,
whose call is a single C-level call where the OS allows (the foreign
function with its handle pre-bound: ``functools.partial`` of a ctypes
function, through a ``ctypes.PyDLL`` where the call never blocks, keeping
the GIL); they are called only after the mutex's ``mutex_intact`` callable
said True (glibc's robust mutex: garbage in its kind aborts the process).
Each returns 0 on success; anything else means "not done: call the general
checked function" -- ``mutex_acquire(mutex, t)`` (which also reports a
takeover from a dead owner that ``try_lock`` began: EOWNERDEAD), or
``mutex_release(mutex)`` (which raises the right error).  The bound calls
skip the general calls' bookkeeping, so a caller that uses them must not
call ``mutex_close`` while it holds the mutex (the portable layer closes a
Lock's resources only when no call and no holder uses them), and must not
use them after ``mutex_close``.  Typical use::

    try_lock, unlock = _os.mutex_bind(m)
    if try_lock() != 0:
        outcome = _os.mutex_acquire(m, 0.0)  # or the general wait
    ...
    if unlock() != 0:
        _os.mutex_release(m)  # raises why

``semaphore_bind(handle, os_name)`` returns ``(tries, posts, drop)``: two
endless iterators, each ``next`` one call from C where the interpreter
allows (the stdlib's C semaphore object, ``_semlock``), so that ``for took
in tries: break`` stores the result with no signal handler run in between
(``_signals``).  ``next(tries)`` is True when it took a permit;
``next(posts)`` is True when it posted one (and may raise where the general
``semaphore_post`` would fail).  False: not done, call the general function
(``semaphore_trywait``, ``semaphore_wait``, ``semaphore_post``).  Unlike the
mutex's, they hold a reference of their own to the OS semaphore, valid
after ``semaphore_close``, so the portable layer calls them without marking
a call in flight; ``drop()`` gives it up at once where collection would
not (after it the iterators say False), else it goes with the iterators.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Callable, Final, Protocol, TypeVar, cast

__all__ = [
    "MUTEX_ACQUIRED",
    "MUTEX_OWNER_DIED",
    "MUTEX_TIMEOUT",
    "SPIN",
    "WAIT_SLICE",
    "Backend",
    "Mutex",
    "Segment",
    "SemaphoreHandle",
    "os_backend",
]

# Results of Backend.mutex_acquire
MUTEX_TIMEOUT: Final = 0
MUTEX_ACQUIRED: Final = 1
MUTEX_OWNER_DIED: Final = 2

# Longest single blocking OS call.  Between slices Python runs signal handlers
# (Ctrl-C) -- PEP 475 does not cover ctypes calls, and on Windows ctypes has no
# supported way to wait on CPython's SIGINT event.
WAIT_SLICE: Final = 0.05

# How long a blocking call polls before it sleeps in the kernel: a partner
# that answers within microseconds is then seen without a sleep and a
# wake-up (tens of microseconds each), and an idle waiter still sleeps.
SPIN: Final = 50e-6

# Handles are the OS module's own small objects.  The portable layer sees
# each through a Protocol of what it may use: only these attributes of a
# segment, nothing of a mutex or a semaphore handle (it passes them back).
# ``Backend`` takes the OS module's concrete handle types as parameters
# (a Protocol's parameter may not be narrowed by an implementation), which
# must satisfy these Protocols; mypy checks both below, once per --platform.


class Segment(Protocol):
    """An open shared-memory object, as the portable layer reads it."""

    @property
    def os_name(self) -> str:
        """The OS name it was opened under."""
        ...

    @property
    def size(self) -> int | None:
        """Its size in bytes; None where the OS cannot tell."""
        ...

    @property
    def identity(self) -> object:
        """What tells it apart from a later segment under the same name
        (None where names are never unlinked)."""
        ...

    @property
    def other_owner(self) -> int | None:
        """The uid that owns it if that is another user, else None."""
        ...

    @property
    def age(self) -> float:
        """Seconds since it was made."""
        ...


class Mutex(Protocol):
    """A crash-safe mutex handle: opaque, only passed back."""


class SemaphoreHandle(Protocol):
    """A semaphore handle: opaque, only passed back."""


_Seg = TypeVar("_Seg", bound=Segment)
_Mutex = TypeVar("_Mutex", bound=Mutex)
_Sem = TypeVar("_Sem", bound=SemaphoreHandle)


class Backend(Protocol[_Seg, _Mutex, _Sem]):
    """What an OS module provides.  Every function is module-level.  The
    parameters are its handle types."""

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
    #: the largest value a semaphore can hold (32767 on macOS)
    SEM_VALUE_MAX: int
    #: the most permits one ``semaphore_post`` call may be given (POSIX posts
    #: one at a time; Windows all at once)
    RELEASE_MAX: int
    #: prefixes of a user's name that choose an OS namespace for the object
    #: (Windows: ``Global\\``, ``Local\\``); none elsewhere
    NAMESPACES: tuple[str, ...]
    #: True where this CPU makes stores visible to other CPUs in program
    #: order (x86-64), so an aligned 8-byte position stored after the bytes
    #: it covers may be read without a barrier; False elsewhere (ARM64) and
    #: under ``CTIPC_EMULATE=weak-memory``.
    STORES_ORDERED: bool

    # -- shared memory -------------------------------------------------------
    def segment_create(self, os_name: str, size: int, mode: int, timeout: float) -> _Seg:
        """Create a new object of ``size`` bytes (memory reserved up front where
        the OS allows, so a full ``/dev/shm`` fails here with ENOSPC, not with
        SIGBUS later).  Raises FileExistsError.  Returns with the segment lock
        held (see ``segment_lock``); TimeoutError if that takes over ``timeout``
        (one slice: the caller tries again), the new name removed again."""
        ...

    def segment_attach(self, os_name: str) -> _Seg:
        """Open an existing object; FileNotFoundError if there is none."""
        ...

    def segment_map(self, seg: _Seg, offset: int, length: int) -> mmap.mmap:
        """Map ``length`` bytes at ``offset`` (a multiple of
        ``mmap.ALLOCATIONGRANULARITY``) read-write."""
        ...

    def segment_close(self, seg: _Seg) -> None:
        """Close the handle(s).  Mappings are closed by the caller first."""
        ...

    def segment_unlink(self, os_name: str) -> bool:
        """Remove the name; False if it did not exist.  No-op on Windows."""
        ...

    def segment_named(self, seg: _Seg) -> bool:
        """True if ``seg``'s OS name still leads to ``seg`` (not to another
        segment created under the name since, nor to nothing).  Needs no
        new descriptor where the OS allows."""
        ...

    def segment_list(self) -> list[str]:
        """OS names of the ctipc shared-memory objects on this machine."""
        ...

    def segment_lock(self, seg: _Seg, timeout: float) -> bool:
        """Take the segment's lock, which serialises creation, attach and
        detach between processes and is released by the kernel when its holder
        dies.  One slice: waits at most ``timeout`` (<= ``WAIT_SLICE``; the
        caller loops); False if it could not be taken by then."""
        ...

    def segment_unlock(self, seg: _Seg) -> None: ...

    # -- semaphores ----------------------------------------------------------
    def semaphore_open(self, os_name: str, create: bool, initial: int, mode: int) -> _Sem:
        """create=True: create, FileExistsError if it exists; False: attach,
        FileNotFoundError if missing, ``CorruptedError`` if what is there
        cannot be a semaphore (a truncated file that mapping would turn into
        SIGBUS)."""
        ...

    def semaphore_close(self, handle: _Sem) -> None: ...

    def semaphore_unlink(self, os_name: str) -> bool: ...

    def semaphore_trywait(self, handle: _Sem) -> bool: ...

    def semaphore_wait(self, handle: _Sem, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds (one slice)."""
        ...

    def semaphore_post(self, handle: _Sem, n: int) -> None:
        """Add ``n`` (1..RELEASE_MAX) permits.  OSError with errno EOVERFLOW if
        the value would pass ``SEM_VALUE_MAX`` (where posts go one by one,
        those before it stay posted)."""
        ...

    def semaphore_bind(
        self, handle: _Sem, os_name: str
    ) -> tuple[Iterator[bool], Iterator[bool], Callable[[], None]]:
        """``(tries, posts, drop)``: see "Bound calls" above.  Called while
        the caller holds the segment lock (``os_name`` may be opened again)."""
        ...

    def semaphore_value(self, handle: _Sem) -> int | None: ...

    # -- crash-safe mutex (Lock) ---------------------------------------------
    def mutex_create(self, seg: _Seg, offset: int) -> _Mutex:
        """Initialise a mutex in the segment at ``offset`` (64 bytes, page-aligned)."""
        ...

    def mutex_open(self, seg: _Seg, offset: int) -> _Mutex: ...

    def mutex_intact(self, mutex: _Mutex) -> Callable[[], bool]:
        """A zero-argument callable, made once: True while the words of the
        mutex that the C library trusts hold what they must.  The bound
        ``try_lock`` is called only after it said True (glibc aborts the
        process on some garbage there); False: use the general call, which
        raises CorruptedError or re-initialises a garbled free mutex."""
        ...

    def mutex_bind(self, mutex: _Mutex) -> tuple[Callable[[], int], Callable[[], int]]:
        """``(try_lock, unlock)``: see "Bound calls" above."""
        ...

    def mutex_locked(self, mutex: _Mutex) -> bool:
        """True while any thread of any process holds it (a snapshot).  A
        mutex whose owner died holding it is not locked: the next acquire
        takes it at once (and reports the death)."""
        ...

    def mutex_held(self, mutex: _Mutex) -> bool:
        """True if the calling thread holds it, as the OS records it."""
        ...

    def mutex_abandoned(self, seg: _Seg, offset: int) -> bool:
        """With the segment lock held and no live process attached: True if
        the mutex at ``offset`` was held by a process that died holding it
        (so the next acquire must report it).  Reads only."""
        ...

    def mutex_acquire(self, mutex: _Mutex, timeout: float) -> int:
        """One wait of at most ``timeout`` (0: try).  Returns ``MUTEX_TIMEOUT``,
        ``MUTEX_ACQUIRED`` or ``MUTEX_OWNER_DIED`` (acquired from a holder that
        died; the mutex is already made consistent)."""
        ...

    def mutex_state(self, mutex: _Mutex) -> Callable[[], bytes]:
        """A zero-argument callable, called from C as the bound calls: the
        mutex's bytes that only its holder changes (b"" where there are
        none to check).  Taken right after an acquire and given back to
        ``mutex_release``, they tell garbage written into a held mutex."""
        ...

    def mutex_release(self, mutex: _Mutex, state: bytes = b"") -> None:
        """PermissionError if the calling thread does not hold it.  With the
        ``state`` taken after the acquire: if the mutex's bytes differ from
        it, OSError EINVAL (the portable layer's CorruptedError), after
        leaving the mutex to the next acquirer as a dead holder's where that
        can be done safely."""
        ...

    def mutex_close(self, mutex: _Mutex) -> None:
        """Drop the mutex's handles/references to the mapping (not held)."""
        ...

    def mutex_unlink(self, seg_os_name: str, offset: int) -> None:
        """Remove whatever the mutex at ``offset`` of that segment keeps
        outside it (a lock file where flock() stands in for it)."""
        ...

    # -- signals -------------------------------------------------------------
    def signal_mask_bind(self, signums: Iterable[int]) -> tuple[Callable[[], int], ...] | None:
        """``(record_and_block, block, restore)``, made once: zero-argument
        C-level calls (0 when done) that block ``signums`` in the calling
        thread, the first recording the mask it replaces in one place of its
        own, and that put the recorded mask back.  For one thread (the main
        thread: Python runs signal handlers there only).  None where threads
        have no signal masks."""
        ...

    # -- processes -----------------------------------------------------------
    def yield_cpu(self) -> None:
        """Let another runnable thread of the machine have this CPU, if any
        waits for one (else return at once): between the polls of a mutex
        whose holder may be waiting for a CPU."""
        ...

    def process_token(self, pid: int) -> int | None:
        """None if ``pid`` is not a live process (gone, a zombie, or exiting);
        else a number that tells this process apart from an earlier one with
        the same pid (its start time), or 0 where the OS cannot tell -- also
        when the process exists but cannot be inspected (another user's,
        /proc hidden): only proof of death gives None."""
        ...

    def process_exists(self, pid: int) -> bool:
        """A cheap look (one system call), for a pid ``process_token``
        judged alive moments ago: False once no process has that pid (a
        zombie still has it, so only ``process_token`` sees that death)."""
        ...

    def pid_namespace(self) -> int:
        """An id of this process's pid namespace (0 where there are none):
        pids recorded from another namespace cannot be checked from here."""
        ...


if sys.platform == "win32":
    from . import _windows as _os
else:
    from . import _posix as _os

if TYPE_CHECKING:
    # The OS module implements the interface, its handle types satisfy the
    # handle Protocols.
    _implemented: Backend[_os.Segment, _os.Mutex, int] = _os

# The portable layer sees the handles only through their Protocols: it gets
# each from this backend and gives it back to the same backend.
os_backend = cast("Backend[Segment, Mutex, SemaphoreHandle]", _os)
