"""Participants of the crash tests and the soak, and the tables they keep.

Producers, consumers and Lock users run as separate interpreters
(``python _crashkit.py ROLE BASE INDEX MODE SEED``) on one MessageQueue, one
Lock and one SharedMemory, all called BASE.  The SharedMemory holds what the
parent (``_crashrig.Rig``) needs to account for every message exactly, after
any participant was SIGKILLed at any instruction.  Every field below has a
single writer (one process at a time) and is written with one aligned
8-byte or 1-byte store, so a kill leaves it old or new, never torn:

* the header words: how many participants of each kind, the stop flags, and
  the Lock's protected state (two copies of a counter, the recoveries);
* per producer a ledger: ``claimed = s`` is stored before the put of the
  messages up to ``s`` and ``committed = s`` after that put returned.  A
  message with ``seq <= committed`` must be delivered; one in
  ``(committed, claimed]`` when the producer died may or may not be (it
  died during that put); one beyond ``claimed`` cannot exist;
* per consumer slot its counters, a high-water mark per producer, and a
  table of one byte per (producer, seq): the low nibble counts plain
  deliveries, the high nibble deliveries flagged ``redelivered``.  Only that
  slot's consumer writes them, so two consumers never race on a count; the
  parent adds the tables up at the end;
* per Lock user its counters.

A restarted participant takes over its slot: a producer goes on from
``claimed + 1``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ctipc

try:
    from _mp_workers import mq_message, mq_parse
except ImportError:  # run by a parent that put only this file's directory first
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _mp_workers import mq_message, mq_parse

#: how long a participant's call may block before it counts as wedged
WAIT = 10.0

# -- layout (u64 word indices) ---------------------------------------------------------

H_PRODUCERS, H_CONSUMERS, H_LOCKERS, H_CAP = 0, 1, 2, 3
H_STOP_PRODUCERS, H_STOP_CONSUMERS, H_STOP_LOCKERS = 4, 5, 6
# the Lock's protected state: both copies agree outside the critical section
H_COPY_A, H_COPY_B, H_RECOVERIES, H_TORN_REPAIRED, H_TORN = 7, 8, 9, 10, 11
HEADER_WORDS = 16

# every slot starts with the pid of the process that runs it, once it is ready
READY = 0
P_CLAIMED, P_COMMITTED = 1, 2
PRODUCER_WORDS = 4
C_DELIVERED, C_REDELIVERED, C_CORRUPT, C_REORDERED, C_EMPTIES = 1, 2, 3, 4, 5
C_HWM = 8  # then one high-water mark per producer
L_INCREMENTS, L_MAX_WAIT_US, L_TIMEOUTS, L_HOLDING, L_ACQUIRES = 1, 2, 3, 4, 5
LOCKER_WORDS = 6

PLAIN, REDELIVERED = 0x01, 0x10  # nibbles of a table byte

#: how participants put, get, or use the Lock ("mixed": any way of putting)
PRODUCER_MODES = ("put", "put_many", "reserve", "mixed")
CONSUMER_MODES = ("get", "get_many", "receive", "receive_slow")
LOCKER_MODES = ("lock", "hold")
#: the largest batch a get_many consumer takes (what one kill may take with it)
GET_MANY_MAX = 8
PUT_MANY_MAX = 8


class Layout:
    """Where everything is in the SharedMemory, from the four header words."""

    def __init__(self, producers: int, consumers: int, lockers: int, cap: int) -> None:
        self.producers, self.consumers, self.lockers, self.cap = producers, consumers, lockers, cap
        self.consumer_words = C_HWM + producers
        self.producer_base = HEADER_WORDS
        # one more consumer slot than consumers: the parent's final drain
        self.consumer_base = self.producer_base + producers * PRODUCER_WORDS
        self.locker_base = self.consumer_base + (consumers + 1) * self.consumer_words
        self.words = self.locker_base + lockers * LOCKER_WORDS
        self.table_base = 8 * self.words
        self.table_size = producers * cap
        self.size = self.table_base + (consumers + 1) * self.table_size

    def slot(self, role: str, index: int) -> int:
        """The first word of a participant's slot."""
        if role == "producer":
            return self.producer_base + index * PRODUCER_WORDS
        if role == "consumer":
            return self.consumer_base + index * self.consumer_words
        return self.locker_base + index * LOCKER_WORDS

    def table(self, index: int) -> int:
        """Byte offset of consumer slot ``index``'s delivery table."""
        return self.table_base + index * self.table_size


class Tables:
    """A process's views of the SharedMemory (released before it closes)."""

    def __init__(self, shm: ctipc.SharedMemory, layout: Layout | None = None) -> None:
        self.shm = shm
        self.raw = shm.buf
        head = self.raw[: 8 * HEADER_WORDS].cast("Q")
        if layout is None:
            layout = Layout(head[H_PRODUCERS], head[H_CONSUMERS], head[H_LOCKERS], head[H_CAP])
        head.release()
        self.layout = layout
        self.w = self.raw[: 8 * layout.words].cast("Q")

    def table(self, index: int) -> memoryview:
        start = self.layout.table(index)
        return self.raw[start : start + self.layout.table_size]

    def release(self) -> None:
        self.w.release()
        self.raw.release()


class Recorder:
    """Checks and records each message one consumer slot gets."""

    def __init__(self, tables: Tables, index: int) -> None:
        self.t = tables
        self.lay = tables.layout
        self.base = self.lay.slot("consumer", index)
        self.seen = tables.table(index)
        self.last: dict[int, int] = {}  # FIFO per producer, within this process

    def record(self, data: Any, redelivered: bool) -> None:
        w, lay, base = self.t.w, self.lay, self.base
        try:
            producer, seq = mq_parse(data)
        except ValueError as e:
            w[base + C_CORRUPT] += 1
            print(f"corrupt message: {e}", file=sys.stderr, flush=True)
            return
        if producer >= lay.producers or not 1 <= seq <= lay.cap:
            w[base + C_CORRUPT] += 1
            print(f"corrupt message {producer}:{seq}", file=sys.stderr, flush=True)
            return
        if seq > w[lay.slot("producer", producer) + P_CLAIMED]:
            # (the parent counts it from the table: beyond the final claim)
            print(f"message {producer}:{seq} was never put", file=sys.stderr, flush=True)
        k = producer * lay.cap + seq - 1
        v = self.seen[k]
        if redelivered:
            self.seen[k] = v + REDELIVERED if v < 0xF0 else v
            w[base + C_REDELIVERED] += 1
        else:
            self.seen[k] = v + PLAIN if v & 0x0F != 0x0F else v
            if seq <= self.last.get(producer, 0):
                w[base + C_REORDERED] += 1
                print(f"{producer}:{seq} after {self.last[producer]}", file=sys.stderr, flush=True)
            self.last[producer] = seq
        if seq > w[base + C_HWM + producer]:
            w[base + C_HWM + producer] = seq
        w[base + C_DELIVERED] += 1

    def release(self) -> None:
        self.seen.release()


@contextmanager
def attached(base: str) -> Iterator[tuple[ctipc.MessageQueue, ctipc.Lock, Tables]]:
    """The three objects of a rig, opened by a participant."""
    with ctipc.SharedMemory(base, create=False) as shm:
        tables = Tables(shm)
        try:
            with ctipc.MessageQueue(base, create=False) as q:
                lock = ctipc.Lock(base, create=False)
                try:
                    yield q, lock, tables
                finally:
                    lock.close()
        finally:
            tables.release()


# -- the participants ------------------------------------------------------------------


def produce(q: ctipc.MessageQueue, t: Tables, index: int, mode: str, rng: random.Random) -> None:
    w, base, cap = t.w, t.layout.slot("producer", index), t.layout.cap
    seq = w[base + P_CLAIMED] + 1  # what the previous run claimed may be half-put
    w[base + READY] = os.getpid()
    while not w[H_STOP_PRODUCERS] and seq <= cap:
        how = rng.choice(PRODUCER_MODES[:3]) if mode == "mixed" else mode
        k = min(rng.randint(1, PUT_MANY_MAX) if how == "put_many" else 1, cap - seq + 1)
        batch = [mq_message(index, seq + j, q.max_message, rng) for j in range(k)]
        w[base + P_CLAIMED] = seq + k - 1
        if how == "put_many":
            q.put_many(batch, timeout=WAIT)
        elif how == "reserve":
            with q.reserve(len(batch[0]), timeout=WAIT) as slot:
                slot.data[:] = batch[0]  # published when the block ends
        else:
            q.put(batch[0], timeout=WAIT)
        w[base + P_COMMITTED] = seq + k - 1
        seq += k


def consume(q: ctipc.MessageQueue, t: Tables, index: int, mode: str, rng: random.Random) -> None:
    w, base = t.w, t.layout.slot("consumer", index)
    recorder = Recorder(t, index)
    try:
        w[base + READY] = os.getpid()
        while not w[H_STOP_CONSUMERS]:
            try:
                if mode.startswith("receive"):
                    with q.receive(timeout=0.5) as m:
                        recorder.record(m.data, m.redelivered)
                        if mode == "receive_slow":  # handling that takes a while
                            _busy(rng.uniform(0.0002, 0.001))
                elif mode == "get_many":
                    for data in q.get_many(rng.randint(1, GET_MANY_MAX), timeout=0.5):
                        recorder.record(data, False)
                else:
                    recorder.record(q.get(timeout=0.5), False)
            except ctipc.Empty:
                w[base + C_EMPTIES] += 1
    finally:
        recorder.release()


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def use_lock(lock: ctipc.Lock, t: Tables, index: int, mode: str, rng: random.Random) -> None:
    """Add 1 to the counter under the Lock, in two stores with work between
    them: a holder killed in between leaves the copies apart, which only the
    next holder, told ``owner_died``, may find (and repair).  Mode ``hold``
    works longer under the Lock (so that a kill most likely finds it held)."""
    w, base = t.w, t.layout.slot("locker", index)
    # seconds of work under the Lock, at most (busy: an empty loop is no
    # work at all under PyPy's JIT)
    inside = 0.001 if mode == "hold" else 0.00005
    w[base + READY] = os.getpid()
    while not w[H_STOP_LOCKERS]:
        start = time.monotonic()
        if not lock.acquire(timeout=WAIT):
            w[base + L_TIMEOUTS] += 1
            print("Lock not had in time", file=sys.stderr, flush=True)
            continue
        waited = int((time.monotonic() - start) * 1e6)
        try:
            w[base + L_HOLDING] = 1
            w[base + L_ACQUIRES] += 1
            if waited > w[base + L_MAX_WAIT_US]:
                w[base + L_MAX_WAIT_US] = waited
            a, b = w[H_COPY_A], w[H_COPY_B]
            if lock.owner_died:
                w[H_RECOVERIES] += 1
                if a != b:
                    w[H_TORN_REPAIRED] += 1
            elif a != b:
                w[H_TORN] += 1  # a half-done update nobody was told about
                print(f"torn counter {a} != {b} without owner_died", file=sys.stderr, flush=True)
            w[H_COPY_A] = a + 1
            _busy(rng.uniform(0.000002, inside))  # the window between the copies
            w[H_COPY_B] = a + 1
            w[base + L_INCREMENTS] += 1
            w[base + L_HOLDING] = 0
        finally:
            lock.release()
        _busy(rng.uniform(0, 0.00002))  # time outside the Lock


def main(argv: list[str]) -> int:
    role, base, index, mode, seed = argv[0], argv[1], int(argv[2]), argv[3], int(argv[4])
    rng = random.Random(seed)
    with attached(base) as (q, lock, tables):
        if role == "producer":
            produce(q, tables, index, mode, rng)
        elif role == "consumer":
            consume(q, tables, index, mode, rng)
        else:
            use_lock(lock, tables, index, mode, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
