"""OS calls that an exception from a signal handler cannot split from their
record.

CPython runs a Python signal handler (Ctrl-C's KeyboardInterrupt, an alarm
that raises) where its eval loop checks for pending work: at a function's
start, after every call, at a backward jump.  A Lock or Semaphore call that
changes OS state (takes a permit or the mutex, gives one back) must never be
interrupted between the change and the record of it, or a live thread holds
what it believes free.  The tools:

* ``for rc in calls: break``, with ``calls`` an endless iterator made once
  whose every ``next`` is one bound OS call from C (``starmap`` of a ctypes
  function with its handle pre-bound, or a SemLock method): ``FOR_ITER``
  stores the result in a local with no such check in between, so the
  ``except`` clause of the same frame reads what the call did.  Before the
  call, the object's in-flight list gets a mark of the call's own
  (``inflight += (mark,)``, no call either), so that an ``except`` clause
  can tell whether this call still counts as in flight
  (``Core.leave_call``).
* ``calm()`` / ``uncalm()`` block the asynchronous signals around a few
  steps that must not be split (a repair, a queue block's bookkeeping), at
  about 0.5 µs a pair.
* ``held()`` blocks them around one slow-path attempt
  (one wait slice, so Ctrl-C still comes within a slice), and ``pending()``
  tells whether one arrived meanwhile: the attempt then gives back what it
  took, so that the exception raised when signals are let in finds nothing
  done.

This holds on CPython 3.11 and later.  Where the eval loop checks at nearly
every instruction (CPython 3.9/3.10, PyPy) the callers' ``except`` clauses
repair most interruptions, but a few instructions between an OS call and its
record stay open (docs/locks.md).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from ._backend import os_backend as _os

__all__ = ["CALMED", "calm", "held", "pending", "uncalm"]

_sigpending: Callable[[], Any] | None = getattr(signal, "sigpending", None)
# The asynchronous signals, which a Python handler may turn into an exception
# (faults such as SIGSEGV must never be blocked).
_ASYNC = {int(s) for s in signal.valid_signals()} - {
    getattr(signal, s, None) for s in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP")
}
_MAIN = threading.main_thread().ident
# (record_and_block, block, restore): C-level calls made once (the Python
# wrappers convert a set of some sixty signals at each call, about 1.4 µs,
# where the bound call costs a few hundred ns).  None: no signal masks.
_MASK = _os.signal_mask_bind(_ASYNC)
# Non-empty while ``calm`` has blocked signals and not yet restored them: a
# list, so that the queue's every call can test it without a call.
CALMED: list[bool] = []


def calm() -> bool | None:
    """Block the asynchronous signals in this thread, if it is the main
    thread (Python runs signal handlers there only), so that no handler's
    exception interrupts the steps until ``uncalm``; a signal that arrives
    meanwhile is handled right after.  Returns True for the outermost call,
    whose ``uncalm`` restores the mask (False: already calm; None: nothing
    to do here).

    The mask to restore is recorded by the blocking call itself, inside C,
    so no handler can run between the two.  The flag is set first: an
    exception right after setting it leaves a flag whose ``uncalm`` restores
    the mask recorded last, the same one; and a flag left behind by an
    interrupted ``uncalm`` is seen in ``CALMED``, which the next call
    checks."""
    if _MASK is None or threading.get_ident() != _MAIN:
        return None
    if CALMED:
        _MASK[1]()  # (blocked again: an interrupted uncalm may have let them in)
        return False
    CALMED.append(True)
    _MASK[0]()
    return True


def uncalm(outermost: bool | None = True) -> None:
    """Restore the signal mask the outermost ``calm`` replaced."""
    if outermost and _MASK is not None and CALMED and threading.get_ident() == _MAIN:
        _MASK[2]()
        CALMED.clear()


# (get_ident, not current_thread: that would register a dummy Thread for a
# thread started by _thread)


@contextmanager
def held() -> Iterator[None]:
    """Hold back the asynchronous signals for the block (in the main thread:
    Python runs signal handlers there only)."""
    outermost = calm()
    try:
        yield
    finally:
        uncalm(outermost)


def pending() -> bool:
    """Inside ``held()``: whether a signal arrived, now held back, whose
    Python handler may raise (not one the OS ignores, such as SIGCHLD)."""
    if _sigpending is None or threading.get_ident() != threading.main_thread().ident:
        return False
    return any(callable(signal.getsignal(s)) for s in _sigpending())
