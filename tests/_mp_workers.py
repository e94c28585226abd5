"""Worker functions for ``multiprocessing.get_context("spawn")`` tests.

They live in a plain module (not a test module) so that a spawned child
imports them without importing pytest's test modules.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

import ctipc

#: seconds a worker waits for the parent's go-ahead before giving up
WAIT = 15.0


def count_under_lock(name: str, n: int, ready: Any, go: Any, errors: Any) -> None:
    """Add 1 to the 8-byte counter at offset 0 of SharedMemory ``name`` ``n``
    times, each under Lock ``name``; a read-modify-write that loses updates
    without mutual exclusion."""
    try:
        with ctipc.SharedMemory(name, create=False) as shm:
            lock = ctipc.Lock(name, create=False)
            try:
                ready.set()
                if not go.wait(WAIT):
                    raise RuntimeError("no go-ahead from the parent")
                buf = shm.buf
                for _ in range(n):
                    with lock:
                        value = int.from_bytes(buf[0:8], "little")
                        # widen the window in which a lost update would happen
                        for _ in range(3):
                            pass
                        buf[0:8] = (value + 1).to_bytes(8, "little")
                        # the lock's own state: nobody else is inside
                        inside = int.from_bytes(buf[8:16], "little")
                        if inside != 0:
                            raise RuntimeError(f"{inside} other holder(s) inside the lock")
                        buf[8:16] = (1).to_bytes(8, "little")
                        buf[8:16] = (0).to_bytes(8, "little")
                del buf
            finally:
                lock.close()
    except BaseException as e:
        errors.put(repr(e))
        raise


def hold_lock_until(name: str, held: Any, release: Any) -> None:
    """Take Lock ``name``, report it, and keep it until told to release."""
    lock = ctipc.Lock(name, create=False)
    try:
        with lock:
            held.set()
            release.wait(WAIT)
    finally:
        lock.close()


# -- MessageQueue workers -------------------------------------------------------
# Run in a separate interpreter (``helpers.Child``) that imports this module
# (``helpers.MQ_IMPORT``): a producer knows nothing of the test process but the
# queue's name, and the consumer checks what it got with the same codec.

#: producer id, sequence number, payload length, CRC-32 of the payload
MQ_HEADER = struct.Struct("=IIII")


def mq_message(producer: int, seq: int, max_message: int, rng: random.Random) -> bytes:
    """A checkable message of MQ_HEADER.size .. ``max_message`` bytes: the
    payload is empty or as long as fits now and then, random otherwise."""
    limit = max_message - MQ_HEADER.size
    r = rng.random()
    n = 0 if r < 0.05 else limit if r < 0.1 else rng.randrange(limit + 1)
    payload = rng.randbytes(n)
    return MQ_HEADER.pack(producer, seq, n, zlib.crc32(payload)) + payload


def mq_parse(message: bytes) -> tuple[int, int]:
    """(producer, seq) of a message made by ``mq_message``; ValueError if damaged."""
    if len(message) < MQ_HEADER.size:
        raise ValueError(f"a message of {len(message)} bytes is too short")
    producer, seq, n, crc = MQ_HEADER.unpack_from(message)
    payload = message[MQ_HEADER.size :]
    if len(payload) != n or zlib.crc32(payload) != crc:
        raise ValueError(f"message {producer}:{seq} is damaged ({len(payload)} of {n} bytes)")
    return producer, seq


def mq_produce(name: str, producer: int, count: int, seed: int, batches: bool) -> None:
    """Put ``count`` messages ``producer:0..count-1`` on queue ``name``, one
    by one or (``batches``) with put_many in batches of 1..40."""
    rng = random.Random(seed)
    with ctipc.MessageQueue(name, create=False) as q:
        seq = 0
        while seq < count:
            if batches:
                k = min(count - seq, rng.randint(1, 40))
                q.put_many(
                    [mq_message(producer, seq + i, q.max_message, rng) for i in range(k)],
                    timeout=WAIT,
                )
                seq += k
            else:
                q.put(mq_message(producer, seq, q.max_message, rng), timeout=WAIT)
                seq += 1


def mq_consume(name: str, seed: int, batches: bool) -> list[tuple[int, int]]:
    """Get messages from queue ``name`` until an empty one (the stop
    sentinel); return the (producer, seq) of each, in the order got.  With
    ``batches``, get_many of 1..50; sentinels got beyond the first are put
    back for the other consumers."""
    rng = random.Random(seed)
    got: list[tuple[int, int]] = []
    with ctipc.MessageQueue(name, create=False) as q:
        while True:
            if batches:
                limit = rng.randint(1, 50)
                messages = q.get_many(limit, timeout=WAIT)
                if not 1 <= len(messages) <= limit:
                    raise AssertionError(f"get_many({limit}) returned {len(messages)} messages")
            else:
                messages = [q.get(timeout=WAIT)]
            for i, m in enumerate(messages):
                if m == b"":
                    rest = messages[i + 1 :]
                    if any(rest):
                        raise AssertionError("a message came after a stop sentinel")
                    for _ in rest:
                        q.put(b"", timeout=WAIT)
                    return got
                got.append(mq_parse(m))
