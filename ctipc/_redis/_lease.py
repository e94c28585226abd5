"""The renewer: one daemon thread per connection extends every lease that
this process holds (Lock holders, Semaphore permits, messages inside a
``receive`` block) a third of the way through it.

The server alone decides whether a lease still holds (the renew scripts
compare tokens and read its clock); a lease it reports gone is marked lost,
and its holder gets ``ctipc.LeaseLost`` at its next check or release.  A
process that is killed or stopped renews nothing, so its leases run out on
the server.  The thread runs only while leases exist (it ends shortly after
the last one goes), and a forked child starts its own.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable

import redis

if TYPE_CHECKING:
    from ._conn import Conn

__all__ = ["Lease", "Renewer"]

#: How long the thread waits for new leases before it ends.
IDLE_EXIT = 0.5


class Lease:
    """One held lease.  ``renew()`` asks the server to extend it and returns
    False when the server says it is gone; ``alive()`` False drops it without
    a word (a Lock whose holder thread ended: its lease runs out, and the next
    holder sees owner_died)."""

    __slots__ = ("alive", "due", "lost", "renew", "seconds")

    def __init__(
        self, seconds: float, renew: Callable[[], bool], alive: Callable[[], bool] | None = None
    ) -> None:
        self.seconds = seconds
        self.renew = renew
        self.alive = alive
        self.due = time.monotonic() + seconds / 3
        self.lost = False


class Renewer:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._stopped = False
        self._forked()
        _RENEWERS.add(self)

    def _forked(self) -> None:
        """The state of a process that holds no lease (also a forked child's:
        its parent's thread and leases are not its own, and the lock may
        have been held by that thread at the fork)."""
        self._cond = threading.Condition(threading.Lock())
        self._leases: set[Lease] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wake_at = 0.0  # when the thread wakes next (monotonic); 0: it is busy

    def add(self, lease: Lease) -> None:
        if self._pid != os.getpid():  # (where fork has no hook)
            self._forked()
        with self._cond:
            if self._stopped:
                return
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ctipc-renewer", daemon=True)
                self._thread.start()
            elif lease.due < self._wake_at:
                # (only then: waking the thread for every acquire would cost
                # each one a thread switch)
                self._cond.notify()

    def discard(self, lease: Lease) -> None:
        with self._cond:
            self._leases.discard(lease)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._leases.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                idle_until = time.monotonic() + IDLE_EXIT
                while not self._leases:
                    left = idle_until - time.monotonic()
                    if self._stopped or left <= 0:
                        self._thread = None
                        return
                    self._wake_at = 0.0  # a new lease must wake it
                    self._cond.wait(left)
                now = time.monotonic()
                first = min(lease.due for lease in self._leases)
                if first > now:
                    self._wake_at = first
                    self._cond.wait(first - now)
                    self._wake_at = 0.0
                    continue
                due = [lease for lease in self._leases if lease.due <= now]
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        if lease.alive is not None and not lease.alive():
            self.discard(lease)
            return
        try:
            held = lease.renew()
        except (redis.ConnectionError, redis.TimeoutError):
            # Try again soon: the server decides at the next renewal (or at
            # release) whether the lease ran out meanwhile.
            lease.due = time.monotonic() + min(0.1, lease.seconds / 10)
            return
        except Exception:  # a bug or a server error must not end the renewals of others
            lease.due = time.monotonic() + lease.seconds / 3
            return
        if held:
            lease.due = time.monotonic() + lease.seconds / 3
        else:
            lease.lost = True
            self.discard(lease)


_RENEWERS: weakref.WeakSet[Renewer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for renewer in list(_RENEWERS):
        renewer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
