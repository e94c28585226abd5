"""The benchmark's messages, and the check every received message passes.

A message of SIZE bytes (16 at least) carries its sequence number, its
producer and its size in the first 16 bytes, and the sequence number mixed
with a constant in the last 8; the bytes between are a fixed filler.  The
consumer checks each message's length, that its sequence number is the next
one expected from that producer (so nothing was lost, duplicated or
reordered), that the size in the header is right, and the trailer: a torn or
stale message, or one of another size, fails.  The check reads 24 bytes, so
it costs the same for every size and every transport.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<QII")  # sequence, producer, size
TRAILER = struct.Struct("<Q")
MIX = 0x9E3779B97F4A7C15
MIN_SIZE = HEADER.size + TRAILER.size
FILLER = 0xA5


class DataError(Exception):
    """A message arrived wrong: the transport (or the benchmark) is broken."""


class Payload:
    """Builds producer ``producer``'s messages of ``size`` bytes."""

    def __init__(self, size: int, producer: int = 0) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"messages are at least {MIN_SIZE} bytes")
        self.size = size
        self.producer = producer
        self._middle = bytes([FILLER]) * (size - MIN_SIZE)
        self._template = bytearray(self._middle.join([bytes(HEADER.size), bytes(TRAILER.size)]))
        # small messages: one join of three short bytes objects is the
        # cheapest way to a new bytes object; large ones: two small packs
        # into a template, then one copy
        self._small = size <= 4096

    def make(self, seq: int) -> bytes:
        """A new bytes object: what an application hands to a transport."""
        if self._small:
            return b"".join(
                (HEADER.pack(seq, self.producer, self.size), self._middle,
                 TRAILER.pack(seq ^ MIX))
            )  # fmt: skip
        t = self._template
        HEADER.pack_into(t, 0, seq, self.producer, self.size)
        TRAILER.pack_into(t, self.size - TRAILER.size, seq ^ MIX)
        return bytes(t)

    def write_into(self, buf: memoryview, seq: int) -> None:
        """Fill a writable buffer of exactly ``size`` bytes (zero-copy sends)."""
        t = self._template
        HEADER.pack_into(t, 0, seq, self.producer, self.size)
        TRAILER.pack_into(t, self.size - TRAILER.size, seq ^ MIX)
        buf[:] = t


class Checker:
    """Checks messages from ``producers`` producers of ``size`` bytes, each
    numbering its own from 0, and counts them."""

    def __init__(self, size: int, producers: int = 1) -> None:
        self.size = size
        self.expected = [0] * producers
        self.received = 0

    def check(self, msg: bytes | memoryview) -> int:
        """Check one message; return its sequence number."""
        size = self.size
        if len(msg) != size:
            raise DataError(f"message {self.received}: {len(msg)} bytes, expected {size}")
        seq, producer, stated = HEADER.unpack_from(msg)
        if producer >= len(self.expected) or stated != size:
            raise DataError(f"message {self.received}: bad header {(seq, producer, stated)}")
        if seq != self.expected[producer]:
            raise DataError(
                f"producer {producer}: got message {seq}, expected {self.expected[producer]}"
            )
        if TRAILER.unpack_from(msg, size - TRAILER.size)[0] != seq ^ MIX:
            raise DataError(f"producer {producer}, message {seq}: torn (trailer mismatch)")
        self.expected[producer] = seq + 1
        self.received += 1
        return seq  # type: ignore[no-any-return]

    def done(self, per_producer: int) -> None:
        """Every producer's messages all arrived."""
        if any(e != per_producer for e in self.expected):
            raise DataError(f"received {self.expected} per producer, expected {per_producer}")
