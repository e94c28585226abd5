"""The named objects that gunicorn's master, its workers and the aggregator share.

Every process opens them by name; nothing is inherited.  The names start with
``$EXAMPLE_IPC_PREFIX`` (default ``gunicorn-app``), so that two servers on one
machine can keep apart (or share, if they are given the same prefix):

========================  =========================================================
``<prefix>-stats``        SharedMemory: the counters below, 8 bytes each
``<prefix>-stats``        Lock: guards the counters (a Lock and a SharedMemory may
                          share a name: each kind has its own namespace)
``<prefix>-expensive``    Semaphore: permits for ``/expensive``, across all workers
``<prefix>-events``       MessageQueue: one JSON event per request, to the aggregator
========================  =========================================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator

import ctipc

log = logging.getLogger("gunicorn.error")  # gunicorn's own log, in every process

#: how many ``/expensive`` requests may run at once, in all workers together
EXPENSIVE_LIMIT = 2
#: seconds a request waits for the stats lock before it answers 503
LOCK_TIMEOUT = 15.0
#: the events queue: room for thousands of small JSON events
QUEUE_CAPACITY = 1 << 20
QUEUE_MAX_MESSAGE = 4096

#: the counters in the stats block, in order
FIELDS = (
    "requests",  # every request to /hit or /expensive, counted once
    "expensive_now",  # /expensive requests holding a permit right now
    "expensive_peak",  # the most that ever held one at the same time
    "expensive_rejected",  # /expensive requests that got no permit in time (503)
    "takeovers",  # times a worker took the lock over from a holder that died
    "holder_pid",  # the process holding the lock in a slow request (work=S), else 0
    "holder_request",  # the id of the request it is handling
)
_STATS = struct.Struct(f"<{len(FIELDS)}Q")


class Busy(Exception):
    """The stats lock stayed held for LOCK_TIMEOUT seconds."""


def prefix() -> str:
    return os.environ.get("EXAMPLE_IPC_PREFIX", "gunicorn-app")


def names(prefix: str) -> dict[str, str]:
    return {
        "stats": f"{prefix}-stats",
        "expensive": f"{prefix}-expensive",
        "events": f"{prefix}-events",
    }


class Shared:
    """This process's handles on the shared objects (open or create each)."""

    def __init__(self, prefix: str) -> None:
        n = names(prefix)
        self.pid = os.getpid()
        with contextlib.ExitStack() as opened:  # closes what was opened if one fails
            self.lock = opened.enter_context(contextlib.closing(ctipc.Lock(n["stats"])))
            self.stats = opened.enter_context(ctipc.SharedMemory(n["stats"], size=_STATS.size))
            self.expensive = opened.enter_context(
                contextlib.closing(ctipc.Semaphore(n["expensive"], initial=EXPENSIVE_LIMIT))
            )
            self.events = opened.enter_context(
                ctipc.MessageQueue(
                    n["events"], capacity=QUEUE_CAPACITY, max_message=QUEUE_MAX_MESSAGE
                )
            )
            self._opened = opened.pop_all()

    def close(self) -> None:
        """Detach; the last process out removes the objects (docs/lifetime.md)."""
        self._opened.close()

    # -- the counters, only ever changed under the lock --

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, int]]:
        """The counters as a dict, written back when the block ends.

        The block is written back with one ``write``.  A holder killed outside
        that write leaves a consistent state; one killed in the middle of it
        could leave some counters old and some new.  ``owner_died`` cannot tell
        which: this example counts the takeover and goes on with what it finds.
        """
        if not self.lock.acquire(timeout=LOCK_TIMEOUT):
            raise Busy(f"the stats lock stayed held for {LOCK_TIMEOUT} s")
        try:
            values = dict(zip(FIELDS, _STATS.unpack(self.stats.read(0, _STATS.size))))
            if self.lock.owner_died:
                log.warning("took the stats lock over from a holder that died")
                values["takeovers"] += 1
                values["holder_pid"] = values["holder_request"] = 0
            yield values
            self.store(values)
        finally:
            self.lock.release()

    def store(self, values: dict[str, int]) -> None:
        """Write ``values`` to the stats block (the caller holds the lock)."""
        self.stats.write(_STATS.pack(*(values[f] for f in FIELDS)), 0)

    def snapshot(self) -> dict[str, int]:
        """The counters as they are now, under the lock."""
        with self.locked() as values:
            return dict(values)


def read_stats(shm: ctipc.SharedMemory) -> dict[str, int]:
    """The counters read without the lock (a snapshot, for monitoring)."""
    return dict(zip(FIELDS, _STATS.unpack(shm.read(0, _STATS.size))))
