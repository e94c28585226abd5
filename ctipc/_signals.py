"""OS calls that an exception from a signal handler cannot split from their
record.

CPython runs a Python signal handler (Ctrl-C's KeyboardInterrupt, an alarm
that raises) where its eval loop checks for pending work: at a function's
start, after every call, at a backward jump.  A Lock or Semaphore call that
changes OS state (takes a permit or the mutex, gives one back) must never be
interrupted between the change and the record of it, or a live thread holds
what it believes free.  The tools:

* ``results += call`` with ``call = map(CALL, (bound,))`` runs a bound
  zero-argument OS call from C and stores its result with no such check in
  between (an in-place add is no call).  The ``map`` object, made before
  anything changes, also marks the call in the object's in-flight list
  (``inflight += (call,)``), so that an ``except`` clause can tell whether
  this call still counts as in flight (``Core.leave_call``).
* ``calm()`` / ``uncalm()`` block the asynchronous signals around a few
  steps that must not be split (a repair, a queue block's bookkeeping), at
  about 1.5 µs a pair.
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

import _signal  # type: ignore[import-not-found,unused-ignore]  # (no stubs)
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from operator import methodcaller
from typing import Any, Callable

__all__ = ["CALL", "calm", "calmed", "held", "pending", "uncalm"]

CALL = methodcaller("__call__")

# (Probed by name: signal masks are a POSIX feature.)  The C-level call: the
# wrapper in ``signal`` turns each number of the old mask into an enum
# member, which costs more than the system call.
_sigmask: Callable[[int, Any], Any] | None = getattr(_signal, "pthread_sigmask", None)
_sigpending: Callable[[], Any] | None = getattr(signal, "sigpending", None)
_SIG_BLOCK: int = getattr(signal, "SIG_BLOCK", 0)
_SIG_SETMASK: int = getattr(signal, "SIG_SETMASK", 2)
# The asynchronous signals, which a Python handler may turn into an exception
# (faults such as SIGSEGV must never be blocked).
_ASYNC = {int(s) for s in signal.valid_signals()} - {
    getattr(signal, s, None) for s in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP")
}
_MAIN = threading.main_thread().ident
# The mask ``calm`` replaced, until ``uncalm`` puts it back.
_CALMED: list[Any] = [None]


def calm() -> Any:
    """Block the asynchronous signals in this thread, if it is the main
    thread (Python runs signal handlers there only), so that no handler's
    exception interrupts the steps until ``uncalm``; a signal that arrives
    meanwhile is handled right after.  The mask to restore is kept here: a
    signal handled between this and the caller's ``try`` would otherwise
    leave signals blocked, and the next call that checks ``calmed()``
    restores it."""
    if _sigmask is None or threading.get_ident() != _MAIN:
        return None
    if _CALMED[0] is None:
        # the mask to restore is recorded before anything is blocked: an
        # exception right after this call leaves nothing unrecorded
        _CALMED[0] = _sigmask(_SIG_BLOCK, ())
    _sigmask(_SIG_BLOCK, _ASYNC)
    return _CALMED[0]


def uncalm(old: Any = None) -> None:
    """Restore the signal mask ``calm`` changed (if it did)."""
    if _sigmask is not None and _CALMED[0] is not None and threading.get_ident() == _MAIN:
        mask, _CALMED[0] = _CALMED[0], None
        _sigmask(_SIG_SETMASK, mask)


def calmed() -> bool:
    """Are signals still blocked by a ``calm`` that was not undone?"""
    return _CALMED[0] is not None


# (get_ident, not current_thread: that would register a dummy Thread for a
# thread started by _thread)


@contextmanager
def held() -> Iterator[None]:
    """Hold back the asynchronous signals for the block (in the main thread:
    Python runs signal handlers there only)."""
    if _sigmask is None or threading.get_ident() != _MAIN:
        yield
        return
    old = _sigmask(_SIG_BLOCK, _ASYNC)
    try:
        yield
    finally:
        _sigmask(_SIG_SETMASK, old)


def pending() -> bool:
    """Inside ``held()``: whether a signal arrived, now held back, whose
    Python handler may raise (not one the OS ignores, such as SIGCHLD)."""
    if _sigpending is None or threading.get_ident() != threading.main_thread().ident:
        return False
    return any(callable(signal.getsignal(s)) for s in _sigpending())
