"""A semaphore's bound calls (``semaphore_bind``) through the C semaphore
object of the standard library, ``_multiprocessing.SemLock`` (POSIX and
Windows), for the OS modules, where the interpreter closes it with its last
user (``DROPPED_AT_ONCE``: CPython).

Why it, and not ctypes: its ``acquire(False)`` and ``release()`` are each
one C call on the OS semaphore with nothing converted, some 40 ns here where
a ctypes call costs 150-200 ns; and it holds a reference of its own to the OS
semaphore (``sem_open`` again by name, or a duplicated handle), closed when
the last user lets go of it, so a bound call that another thread's close
overtakes still uses an open semaphore.  Only these two non-blocking calls
go through it: the waits stay ctipc's own (slices, a close that wakes them,
monotonic deadlines).

The calls are handed over as endless iterators, each ``next`` one call from
C, so that the caller can store a result with no signal handler run in
between (``for took in tries: break``, see ``_signals``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from itertools import repeat, starmap
from operator import not_
from typing import Any, Callable

__all__ = ["DROPPED_AT_ONCE", "NOT_BOUND", "Binding", "bind"]

try:
    _SemLock: Any = importlib.import_module("_multiprocessing").SemLock
    _SemLock._rebuild  # noqa: B018 (absent: no binding)
except (ImportError, AttributeError):  # an interpreter built without it
    _SemLock = None

_SEMAPHORE = 1  # SemLock's kind for a counting semaphore (multiprocessing.synchronize)

#: Whether a SemLock's reference goes the moment its last user lets go of
#: it (CPython's reference counts), not at a later collection (PyPy, where
#: closed Semaphores would keep their mappings or handles until then).
DROPPED_AT_ONCE = sys.implementation.name == "cpython"

Binding = tuple[Iterator[bool], Iterator[bool], Callable[[], None]]


def _nothing_to_drop() -> None:
    pass  # (a SemLock's reference goes with its last user)


#: What ``semaphore_bind`` returns where nothing binds: every call takes the
#: general path (a try that never takes, a post that never posts).
NOT_BOUND: Binding = (repeat(False), repeat(False), _nothing_to_drop)


def bind(handle: int, os_name: str | None, maxvalue: int) -> Binding:
    """``(tries, posts, drop)`` on a SemLock of the semaphore: ``os_name`` (POSIX:
    opened again by that name, which the caller must hold the segment lock
    for, so that the name still leads to the same semaphore), or ``handle``
    (Windows: a duplicate, which the SemLock owns).  ``next(tries)`` is True
    when it took a permit; ``next(posts)`` is True when it posted one, and
    raises ValueError where the value is at ``maxvalue`` (OSError for any
    other failure); ``drop`` does nothing (the reference goes with the last
    user of the iterators).  Without SemLock: ``NOT_BOUND``."""
    if _SemLock is None:
        return NOT_BOUND
    lock = _SemLock._rebuild(handle, _SEMAPHORE, maxvalue, os_name)
    tries = map(lock.acquire, repeat(False))
    return tries, map(not_, starmap(lock.release, repeat(()))), _nothing_to_drop
