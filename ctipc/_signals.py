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
* ``held()`` blocks the asynchronous signals around one slow-path attempt
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
from operator import methodcaller
from typing import Any, Callable

__all__ = ["CALL", "held", "pending"]

CALL = methodcaller("__call__")

# (Probed by name: signal masks are a POSIX feature.)
_sigmask: Callable[[int, Any], Any] | None = getattr(signal, "pthread_sigmask", None)
_sigpending: Callable[[], Any] | None = getattr(signal, "sigpending", None)
_SIG_BLOCK: int = getattr(signal, "SIG_BLOCK", 0)
_SIG_SETMASK: int = getattr(signal, "SIG_SETMASK", 2)
# The asynchronous signals, which a Python handler may turn into an exception
# (faults such as SIGSEGV must never be blocked).
_ASYNC = signal.valid_signals() - {
    getattr(signal, s, None) for s in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP")
}


# (get_ident, not current_thread: that would register a dummy Thread for a
# thread started by _thread)


@contextmanager
def held() -> Iterator[None]:
    """Hold back the asynchronous signals for the block (in the main thread:
    Python runs signal handlers there only)."""
    if _sigmask is None or threading.get_ident() != threading.main_thread().ident:
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
