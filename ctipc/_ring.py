"""The message queue's shared layout and the helpers that read it.

One shared-memory segment holds two crash-safe mutexes (*put* guards
``tail``, *get* guards ``head`` and the records' states), a page of control
words, a page recording which processes hold records inside a receive or
reserve block, and a byte ring of variable-length records.
``MessageQueue`` (mq.py) drives it; this module knows the layout
(docs/FORMAT.md), the kind's create/attach/remove steps and the checks of
its sizes; _queue_core.py is the engine that reads and writes it.
"""

from __future__ import annotations

import mmap
import struct

from . import _names
from ._backend import Segment
from ._backend import os_backend as _os
from ._errors import CorruptedError, IncompatibleError
from ._segment import HEADER_SIZE, Core, Header, Kind, Resources, register_kind

DEFAULT_CAPACITY = 1 << 20
DEFAULT_MAX_MESSAGE = 64 << 10

PAGE = max(4096, mmap.PAGESIZE)  # each mutex is mapped a page at a time
PUT_MUTEX = HEADER_SIZE  # offsets in the segment
GET_MUTEX = HEADER_SIZE + PAGE
CONTROL = HEADER_SIZE + 2 * PAGE
HOLDERS = HEADER_SIZE + 3 * PAGE
RING = HEADER_SIZE + 4 * PAGE
# Control page: native unsigned 64-bit words, by index.  Each is written by
# one item assignment through a memoryview cast to "Q": a single aligned
# 8-byte store, which a reader never sees half-done (struct.pack_into would
# zero the bytes first, then fill them in).
TAIL, PUTS, CONSUMERS_WAITING = 0, 1, 2  # under the put mutex
HEAD, GETS, PRODUCERS_WAITING = 8, 9, 10  # under the get mutex (another cache line)
# Under the get mutex: where a consumer starts looking for a ready record.
# Every record in [head, scan) is held by a block or already taken, so
# consumers behind a long-held receive do not walk the records they already
# took, again and again.  A hint: outside [head, tail], a consumer starts at
# the head.
SCAN = 11
CONTROL_WORDS = 16
# Who is registered in CONSUMERS_WAITING / PRODUCERS_WAITING (byte offsets
# in the segment): SLEEPER_SLOTS slots each, in the attach table's format
# (pid, count, start token, pid namespace, reserved), so that the
# registrations of a process that died are removed (docs/FORMAT.md §11).
# Written under the mutex of the count they belong to.
SLEEPER_SLOTS = 32
CONSUMER_SLOTS = CONTROL + 1024
PRODUCER_SLOTS = CONTROL + 2048
# The processes holding records in a receive or reserve block (docs/FORMAT.md
# §11): HOLDER_SLOTS slots in the attach table's format, the count being the
# records the process holds.  Under the get mutex.  A record's state names
# its holder's slot, so that the records of a process that died come back.
HOLDER_SLOTS = 64
RECORD = struct.Struct("=II")  # payload length, state
STATE = struct.Struct("=I")  # the state alone, at offset 4 of a record
WRAP = 0xFFFFFFFF  # a record length meaning "continue at the start of the ring"
# Record states.  A producer writes READY, or HELD_BY_RESERVE with its slot,
# before it publishes the tail; every later change is made under the get
# mutex.  HELD_BY_*: the low byte is the holder's slot in HOLDERS.
READY = 0
RETRY = 1  # ready, after a receive of it that did not end normally
TAKEN = 2  # taken out of order, behind a held record: the head passes it
HELD_BY_RECEIVE = 0x100
HELD_BY_RESERVE = 0x200
HOLDER_MASK = 0xFF
U64_MASK = (1 << 64) - 1  # counters wrap; positions never get near (see below)
# Positions count bytes ever written: 2**62 is 146 years at 1 TB/s.  A larger
# one is corrupt, and refusing it keeps every sum below 2**64.
POSITION_MAX = 1 << 62


def record_size(n: int) -> int:
    return RECORD.size + ((n + 7) & ~7)


class QueueKind(Kind):
    letter = "q"
    label = "MessageQueue"

    def __init__(self, capacity: int | None = None, max_message: int | None = None) -> None:
        self.given = (capacity, max_message)  # what the caller asked for

    def area_size(self, params: tuple[int, int]) -> int:
        return 4 * PAGE + (params[0] & ~7)

    def check_attach(self, name: str, header: Header) -> None:
        for given, stored, what in (
            (self.given[0], header.param0, "capacity"),
            (self.given[1], header.param1, "max_message"),
        ):
            if given is not None and given != stored:
                raise IncompatibleError(
                    f"MessageQueue {name!r} has {what}={stored}, not {given}", name
                )
        ring = header.param0 & ~7
        if (
            header.total != RING + ring
            or header.param1 >= WRAP
            or record_size(header.param1) > ring // 2
        ):
            raise CorruptedError(f"MessageQueue {name!r} has inconsistent sizes", name)

    def check_create(self, params: tuple[int, int]) -> None:
        check_sizes(*params)

    def tag(self) -> bytes:
        # the queue's two mutexes, and the ring's protocol: 2 since records
        # carry a state (a process of protocol 1 would ignore it)
        return (_os.MUTEX_ABI + " ring-2").encode("ascii")

    def count(self, seg: Segment) -> int | None:
        mm = _os.segment_map(seg, 0, CONTROL + PAGE)
        try:
            words = memoryview(mm)[CONTROL : CONTROL + 8 * CONTROL_WORDS].cast("Q")
            try:
                return queued(words[PUTS], words[GETS])
            finally:
                words.release()
        finally:
            mm.close()

    def on_create(self, core: Core) -> None:
        assert core.mm is not None and core.seg is not None
        r = core.resources
        r["put"] = _os.mutex_create(core.seg, PUT_MUTEX)
        r["get"] = _os.mutex_create(core.seg, GET_MUTEX)
        for key, role in (("data", "r"), ("room", "w")):
            r[key] = _os.semaphore_open(_names.sibling(core.os_name, role), True, 0, core.mode)

    def on_attach(self, core: Core) -> None:
        assert core.mm is not None and core.seg is not None
        r = core.resources
        r["put"] = _os.mutex_open(core.seg, PUT_MUTEX)
        r["get"] = _os.mutex_open(core.seg, GET_MUTEX)
        for key, role in (("data", "r"), ("room", "w")):
            try:
                r[key] = _os.semaphore_open(_names.sibling(core.os_name, role), False, 0, 0)
            except FileNotFoundError:
                raise CorruptedError(f"a semaphore of queue {core.name!r} is missing") from None

    def release(self, resources: Resources) -> None:
        for key in ("put", "get"):
            if key in resources:
                _os.mutex_close(resources.pop(key))
        for key in ("data", "room"):
            if key in resources:
                _os.semaphore_close(resources.pop(key))

    def remove_extras(self, seg_os_name: str) -> None:
        _os.semaphore_unlink(_names.sibling(seg_os_name, "r"))
        _os.semaphore_unlink(_names.sibling(seg_os_name, "w"))
        _os.mutex_unlink(seg_os_name, PUT_MUTEX)
        _os.mutex_unlink(seg_os_name, GET_MUTEX)


register_kind(QueueKind())


def queued(puts: int, gets: int) -> int:
    # Both counters wrap at 2**64; a "negative" difference is a snapshot
    # taken between a get and its put, or corrupt counters: 0.
    count = (puts - gets) & U64_MASK
    return count if count <= POSITION_MAX else 0


def check_sizes(capacity: int, max_message: int) -> None:
    if max_message >= WRAP:
        raise ValueError("max_message must be below 4 GiB")
    if record_size(max_message) > (capacity & ~7) // 2:
        raise ValueError(
            f"max_message={max_message} does not fit twice in capacity={capacity}: "
            f"capacity must be at least {2 * record_size(max_message)}"
        )
