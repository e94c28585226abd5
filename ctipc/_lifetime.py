"""This process's register of the objects it has open: each is closed when
its public object is collected (with a ResourceWarning), and everything
still open is closed when the interpreter exits, so that the last process
out removes its objects.  (Hosts that never run atexit are covered too:
their slots are reaped by the next open or by gc.)"""

from __future__ import annotations

import atexit
import weakref

from ._segment import EXITING, Core

__all__ = ["track"]


def track(owner: object, core: Core) -> None:
    """Tie ``core`` to the public object ``owner``.

    When ``owner`` is collected while still open, the core is closed with a
    ResourceWarning: no thread can then be inside one of ``owner``'s methods
    (CPython's SemLock closes its semaphore in dealloc for the same reason),
    though a thread may still hold a Lock, whose handles then stay.  The
    callback holds the core, never ``owner``.
    """
    core.finalizer = weakref.finalize(owner, core.close, True)
    # At exit _close_all closes instead, without warnings.  (typeshed gives
    # finalize empty __slots__; the atexit property does exist.)
    core.finalizer.atexit = False  # type: ignore[misc]
    _LIVE.add(core)


_LIVE: weakref.WeakSet[Core] = weakref.WeakSet()


def _close_all() -> None:
    # Interpreter exit: detach everything this process still has open.
    # Daemon threads may still be inside calls: close(at_exit=True) leaves
    # their handles and mappings alone (the OS frees them with the process),
    # and each such thread parks where its call ends (EXITING).
    EXITING.append(True)
    for core in list(_LIVE):
        try:
            core.close(at_exit=True)
        except Exception:  # never raise at exit
            pass


atexit.register(_close_all)
