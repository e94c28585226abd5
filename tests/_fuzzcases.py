"""The seeded fuzz of headers and rings: cases, and a child that runs them.

Shared by ``tests/test_hostile.py`` (2,000 cases) and ``benchmarks/fuzz.py``
(as many as asked).  Case ``index`` of seed ``seed`` depends on nothing
else (its own ``random.Random``), so any case can be run again alone.  A
case creates an object with some content, closes it (it is persistent), and
corrupts bytes of its segment in ``/dev/shm``: header fields, the attach
table, the name, the ABI tag, the mutexes, the queue's control words and
records.  A child interpreter (``helpers.Child``) then opens and uses each
object and reports one line per case, each awaited with a deadline: a
crash (negative exit code) or a hang is noticed, the child replaced, and
the rest of the batch goes on.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
from dataclasses import dataclass, field

from helpers import DEV_SHM, Child, ChildFailed, entries_of, header_path

import ctipc
from ctipc import _header, _ring, _segment

#: a single case may legitimately wait out a corrupt mutex (1 s patience per
#: queue call) but never this long
CASE_DEADLINE = 8.0

HS = _header.HEADER_SIZE
# (name, offset, width) of every header field, from the struct itself
_FIELD_NAMES = _header.Header._fields
_FIELD_FORMATS = ["8s", "I", "I", "I", "I", "Q", "Q", "Q", "I", "I", "I", "I", "Q"]
FIELDS: list[tuple[str, int, int]] = []
_off = 0
for _n, _f in zip(_FIELD_NAMES, _FIELD_FORMATS):
    _w = struct.calcsize("=" + _f)
    FIELDS.append((_n, _off, _w))
    _off += _w
assert _off == _header.HEADER_FORMAT.size
STATE_OFFSET = dict((n, o) for n, o, _ in FIELDS)["state"]

LETTER = {"s": ctipc.Semaphore, "l": ctipc.Lock, "m": ctipc.SharedMemory, "q": ctipc.MessageQueue}
Q_CAPACITY = 4096
Q_MAX = 512


def _extremes(rng: random.Random, width: int, file_size: int) -> int:
    bits = 8 * width
    pool = [
        0,
        1,
        2,
        (1 << bits) - 1,
        1 << (bits - 1),
        (1 << 31) - 1,
        file_size,
        file_size + 1,
        file_size - 1,
        HS,
        HS - 1,
        _header.NAME_CAPACITY,
        _header.NAME_CAPACITY + 1,
        12288,
        16384,
        65536,
        1 << 62,
        (1 << 62) + 1,
        rng.getrandbits(bits),
        rng.randrange(0, 1 << 16),
    ]
    return rng.choice(pool) & ((1 << bits) - 1)


def _fill(rng: random.Random, n: int) -> bytes:
    style = rng.randrange(4)
    if style == 0:
        return bytes(n)
    if style == 1:
        return b"\xff" * n
    return bytes(rng.getrandbits(8) for _ in range(n))


def _put_at(buf: bytearray, offset: int, data: bytes) -> None:
    end = min(len(buf), offset + len(data))
    if offset < end:
        buf[offset:end] = data[: end - offset]


def _set_word(buf: bytearray, offset: int, width: int, value: int) -> None:
    _put_at(buf, offset, value.to_bytes(width, sys.byteorder))


def _mutate(rng: random.Random, letter: str, buf: bytearray, my_ns: int) -> list[str]:
    """Corrupt the segment's bytes in ``buf``; return what was done."""
    size = len(buf)
    done = []
    choices = ["field", "field", "fields", "bytes", "bytes", "slots", "name", "tag"]
    if letter in "lq":
        choices += ["area", "area", "mutex word"]
    if letter == "q":
        choices += ["control", "control", "control", "ring", "ring", "sleepers"]
    if letter == "m":
        choices += ["area"]
    what = rng.choice(choices)
    if what in ("field", "fields"):
        for _ in range(1 if what == "field" else rng.randrange(2, 5)):
            fname, off, width = rng.choice(FIELDS[1:])  # magic: "bytes" covers it
            value = _extremes(rng, width, size)
            _set_word(buf, off, width, value)
            done.append(f"{fname}={value}")
    elif what == "bytes":
        limit = rng.choice([_header.NAME_OFFSET, _header.SLOT_OFFSET, HS])
        off = rng.randrange(0, limit)
        data = _fill(rng, rng.randrange(1, 65))
        _put_at(buf, off, data)
        done.append(f"bytes@{off}={data.hex()}")
    elif what == "slots":
        count = rng.choice([1, 3, 16, _header.SLOT_COUNT])
        for _ in range(count):
            i = rng.randrange(_header.SLOT_COUNT)
            pid = rng.choice([1, os.getpid(), rng.getrandbits(32), rng.randrange(2, 1 << 22)])
            slot = (
                pid,
                rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32)]),
                rng.choice([0, rng.getrandbits(64)]),
                rng.choice([my_ns, 0, rng.getrandbits(64)]),
                rng.choice([0, rng.getrandbits(64)]),
            )
            _put_at(buf, _header.SLOT_OFFSET + i * _header.SLOT.size, _header.SLOT.pack(*slot))
        done.append(f"{count} slots")
    elif what == "name":
        name_len = rng.choice([0, _header.NAME_CAPACITY, _header.NAME_CAPACITY + 1,
                               0xFFFFFFFF, rng.getrandbits(32), rng.randrange(1, 300)])  # fmt: skip
        _set_word(buf, dict((n, o) for n, o, _ in FIELDS)["name_len"], 4, name_len)
        data = _fill(rng, rng.randrange(1, 64))
        _put_at(buf, _header.NAME_OFFSET + rng.randrange(0, 64), data)
        done.append(f"name_len={name_len} name bytes {data.hex()}")
    elif what == "tag":
        data = _fill(rng, rng.randrange(1, _header.TAG_CAPACITY + 1))
        _put_at(buf, _header.TAG_OFFSET, data)
        done.append(f"tag={data.hex()}")
    elif what == "area":
        if letter == "q":
            base = rng.choice([_ring.PUT_MUTEX, _ring.GET_MUTEX])
            n = 48
        elif letter == "l":
            base, n = HS, 48
        else:
            base, n = HS, 256
        off = base + rng.randrange(0, n)
        data = _fill(rng, rng.randrange(1, n + 1))
        _put_at(buf, off, data)
        done.append(f"area@{off}={data.hex()}")
    elif what == "mutex word":
        # one aligned word of a pthread mutex (lock, count, owner, users, kind,
        # ...), set to a flag a real mutex may carry or to garbage
        base = HS if letter == "l" else rng.choice([_ring.PUT_MUTEX, _ring.GET_MUTEX])
        off = base + 4 * rng.randrange(0, 10)
        value = rng.choice([0, 1, 0x10, 0x20, 0x40, 0x80, 0x90, 0xD0, 0xFFFFFFFF,
                            os.getpid(), rng.getrandbits(32)])  # fmt: skip
        _set_word(buf, off, 4, value)
        done.append(f"mutex word@{off}={value:#x}")
    elif what == "control":
        words = [
            _ring.TAIL,
            _ring.PUTS,
            _ring.CONSUMERS_WAITING,
            _ring.HEAD,
            _ring.GETS,
            _ring.PRODUCERS_WAITING,
            _ring.SCAN,
        ]
        for _ in range(rng.randrange(1, 4)):
            w = rng.choice(words)
            value = rng.choice([0, 1, 4, 7, 8, 12, Q_CAPACITY, Q_CAPACITY - 4, Q_CAPACITY + 4,
                                Q_CAPACITY + 8, 2**62, 2**62 + 8,
                                2**63, 2**64 - 1, 2**64 - 8, rng.getrandbits(64),
                                rng.randrange(0, 3 * Q_CAPACITY)])  # fmt: skip
            _set_word(buf, _ring.CONTROL + 8 * w, 8, value)
            done.append(f"control[{w}]={value}")
    elif what == "sleepers":
        # the tables of who waits and who holds records in a block: a
        # slot's pid, count, token or namespace
        table = rng.choice([_ring.CONSUMER_SLOTS, _ring.PRODUCER_SLOTS, _ring.HOLDERS])
        slots = _ring.HOLDER_SLOTS if table == _ring.HOLDERS else _ring.SLEEPER_SLOTS
        slot = table + 32 * rng.randrange(0, slots)
        field, width = rng.choice([(0, 4), (4, 4), (8, 8), (16, 8)])
        value = rng.choice([0, 1, os.getpid(), 2**31, 2**32 - 1, my_ns, rng.getrandbits(width * 8)])
        _set_word(buf, slot + field, width, value)
        done.append(f"sleepers@{slot}+{field}={value}")
    elif what == "ring":
        ring_len = size - _ring.RING
        if rng.random() < 0.6:
            # a record length: at a record boundary, with an extreme length
            off = _ring.RING + 8 * rng.randrange(0, ring_len // 8)
            n = rng.choice([0, 1, Q_MAX, Q_MAX + 1, _ring.WRAP, _ring.WRAP - 1, Q_CAPACITY,
                            rng.getrandbits(32)])  # fmt: skip
            _set_word(buf, off, 4, n)
            done.append(f"record@{off - _ring.RING}={n}")
            if rng.random() < 0.5:
                # its state: ready, taken, held by a block (a slot in the
                # table or beyond it), or garbage
                state = rng.choice([_ring.READY, _ring.RETRY, _ring.TAKEN, 3,
                                    _ring.HELD_BY_RECEIVE | rng.randrange(0, 256),
                                    _ring.HELD_BY_RESERVE | rng.randrange(0, 256),
                                    rng.getrandbits(32)])  # fmt: skip
                _set_word(buf, off + 4, 4, state)
                done.append(f"state@{off - _ring.RING}={state:#x}")
        else:
            off = _ring.RING + rng.randrange(0, ring_len)
            data = _fill(rng, rng.randrange(1, 65))
            _put_at(buf, off, data)
            done.append(f"ring@{off - _ring.RING}={data.hex()}")
    # A header left "being created" (0) or "removed" (2) only makes an open
    # wait (1 s, or the 10 s open timeout): not what this fuzz is after.
    state = int.from_bytes(buf[STATE_OFFSET : STATE_OFFSET + 4], sys.byteorder)
    if state in (_header.STATE_INIT, _header.STATE_REMOVED):
        _set_word(buf, STATE_OFFSET, 4, _header.STATE_READY)
    return done


def _make(rng: random.Random, letter: str, name: str) -> None:
    """Create a persistent object called ``name`` with some content, closed."""
    if letter == "s":
        ctipc.Semaphore(name, initial=rng.randrange(0, 3), persistent=True).close()
    elif letter == "l":
        ctipc.Lock(name, persistent=True).close()
    elif letter == "m":
        size = rng.choice([1, 64, 4096, 5000])
        ctipc.SharedMemory(name, size, persistent=True).close()
    else:
        with ctipc.MessageQueue(name, capacity=Q_CAPACITY, max_message=Q_MAX, persistent=True) as q:
            # move the positions so that records wrap around the ring
            for _ in range(rng.randrange(0, 12)):
                q.put_nowait(b"x" * rng.randrange(0, Q_MAX))
                if len(q) > 3:
                    q.get_nowait()


_FUZZ_CHILD = """\
import json
cases = json.loads(sys.argv[1])
ACCEPTED = (ctipc.CorruptedError, ctipc.IncompatibleError, FileNotFoundError,
            ValueError, ctipc.Empty, ctipc.Full, TimeoutError)

def use(letter, name):
    if letter == "s":
        obj = ctipc.Semaphore(name, create=False)
        try:
            if obj.acquire(timeout=0.05):
                obj.release()
            obj.value
        finally:
            obj.close()
    elif letter == "l":
        obj = ctipc.Lock(name, create=False)
        try:
            if obj.acquire(timeout=0.05):
                obj.release()
        finally:
            obj.close()
    elif letter == "m":
        obj = ctipc.SharedMemory(name, create=False)
        try:
            obj.read(0, min(16, obj.size))
            obj.write(b"x", obj.size - 1)
            obj.read_str(0)
        finally:
            obj.close()
    else:
        obj = ctipc.MessageQueue(name, create=False)
        try:
            len(obj)
            outcomes = []
            def receive():
                with obj.receive(block=False) as m:
                    bytes(m.data)

            def reserve():
                with obj.reserve(3, block=False) as r:
                    r.data[:] = b"abc"

            for op in (obj.get_nowait, lambda: obj.put_nowait(b"hello"), obj.get_nowait,
                       receive, reserve, receive, lambda: obj.get(timeout=0.01)):
                try:
                    op()
                    outcomes.append("ok")
                except ACCEPTED as e:
                    outcomes.append(type(e).__name__)
            return "/".join(outcomes)
        finally:
            obj.close()
    return "OK"

for i, (letter, name) in enumerate(cases):
    try:
        result = use(letter, name)
    except ACCEPTED as e:
        result = type(e).__name__
    except BaseException as e:
        result = "UNEXPECTED " + repr(e)
    out(i, result)
out("done")
"""


# -- running cases ----------------------------------------------------------------------

#: outcomes by class: what a case ended with, as the child reports it
CORRECT, CORRUPTED, REFUSED, UNEXPECTED, CRASH, HANG = (
    "correct behaviour", "CorruptedError", "other ctipc error", "unexpected exception",
    "crash", "hang")  # fmt: skip
_REFUSALS = ("IncompatibleError", "FileNotFoundError", "ValueError", "TimeoutError")


def outcome_class(result: str) -> str:
    """The class of a child's result ("OK", "ok/Empty/ok", "CorruptedError", ...)."""
    if result.startswith("UNEXPECTED"):
        return UNEXPECTED
    if "CorruptedError" in result:
        return CORRUPTED
    if any(r in result for r in _REFUSALS):
        return REFUSED
    return CORRECT  # OK, or a queue's ok / Empty / Full


@dataclass
class Tally:
    """What the cases ended with: exact results, classes, and the failures."""

    outcomes: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    cases: int = 0

    def add(self, result: str, cls: str) -> None:
        self.cases += 1
        self.outcomes[result] = self.outcomes.get(result, 0) + 1
        self.classes[cls] = self.classes.get(cls, 0) + 1

    def merge(self, other: Tally) -> None:
        self.cases += other.cases
        for mine, theirs in ((self.outcomes, other.outcomes), (self.classes, other.classes)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.failures += other.failures


def _cleanup(letter: str, name: str) -> None:
    _segment.unlink_by_name(_segment.KINDS[letter], name)
    # what a corrupt header kept unlink_by_name from removing
    for entry in entries_of(name):
        try:
            os.unlink(os.path.join(DEV_SHM, entry))
        except FileNotFoundError:
            pass


def _run_fuzz_child(batch: list[tuple[str, str, str]], pos: int, tally: Tally) -> int:
    """Run ``batch[pos:]`` in one child; return where the next child starts."""
    with Child(_FUZZ_CHILD, json.dumps([(c[0], c[1]) for c in batch[pos:]])) as child:
        for i in range(pos, len(batch)):
            desc = batch[i][2]
            try:
                line = child.readline(CASE_DEADLINE)
            except ChildFailed:
                rc = child.proc.poll()
                if rc is None:
                    tally.failures.append(f"{desc} -> hung (no answer within {CASE_DEADLINE} s)")
                    tally.add("hang", HANG)
                else:
                    tail = child.stderr.strip().splitlines()[-1:] or [""]
                    tally.failures.append(f"{desc} -> child died, exit code {rc}: {tail[0]}")
                    tally.add(f"crash {rc}", CRASH)
                return i + 1
            index, _, result = line.partition(" ")
            assert index == str(i - pos), line
            cls = outcome_class(result)
            if cls == UNEXPECTED:
                tally.failures.append(f"{desc} -> {result}")
            tally.add(result.split(" ")[0], cls)
        child.expect("done")
        child.finish()
    return len(batch)


def build_case(seed: int, index: int, name: str, my_ns: int) -> tuple[str, str, str]:
    """Make case ``index`` of ``seed`` as object ``name``: (letter, name, description)."""
    rng = random.Random(f"{seed}:{index}")
    letter = "slmq"[index % 4]
    _make(rng, letter, name)
    with open(header_path(LETTER[letter], name), "r+b") as f:
        buf = bytearray(f.read())
        done = _mutate(rng, letter, buf, my_ns)
        f.seek(0)
        f.write(buf)
    return letter, name, f"seed {seed} case {index} ({LETTER[letter].__name__}): {done}"


def run_batch(seed: int, indices: range, names: list[str], tally: Tally) -> None:
    """Build and run the cases ``indices`` (object names ``names``), then
    remove every object they made."""
    my_ns = _header.this_process()[2]
    batch: list[tuple[str, str, str]] = []
    try:
        for index, name in zip(indices, names):
            batch.append(build_case(seed, index, name, my_ns))
        pos = 0
        while pos < len(batch):
            # a crash is recorded and the rest of the batch runs in a new child
            pos = _run_fuzz_child(batch, pos, tally)
    finally:
        for index, name in zip(indices, names):
            _cleanup("slmq"[index % 4], name)
