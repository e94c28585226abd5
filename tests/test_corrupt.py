"""Corrupt headers give clear errors, never a crash or a hang.

The header of a live object is overwritten through its file in /dev/shm, as a
buggy or hostile process could; opening the object by name must then raise
``ctipc.CorruptedError`` (bytes that are not a valid object) or
``ctipc.IncompatibleError`` (another layout version or ABI), and the damage
is repaired before the test closes the object.  A MessageQueue whose ring,
header or counters were overwritten makes a child's calls raise
``CorruptedError`` (or refuse to open), never return garbage.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import HAVE_DEV_SHM, Child, exists, header_path, kinds, make, semaphore_path

import ctipc
from ctipc import _header
from ctipc._backend import os_backend
from ctipc._ring import CONTROL, RING

pytestmark = pytest.mark.skipif(not HAVE_DEV_SHM, reason="objects are not files in /dev/shm here")


# Offsets in the header (docs/FORMAT.md; struct "=8s4I3Q4IQ")
MAGIC, VERSION, STATE, HEADER_SIZE, FLAGS, TOTAL, PARAM0 = 0, 8, 12, 16, 20, 24, 32
SLOTS, SLOT_OFFSET, NAME_LEN = 48, 52, 56


@contextmanager
def patched(path: str, offset: int, data: bytes) -> Iterator[None]:
    """Overwrite ``data`` at ``offset`` of the file, and put the old bytes back."""
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(len(data))
        f.seek(offset)
        f.write(data)
    try:
        yield
    finally:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(old)


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def u64(v: int) -> bytes:
    return struct.pack("=Q", v)


CASES = [
    ("bad magic", MAGIC, b"NOTCTIPC", ctipc.CorruptedError),
    ("zero magic", MAGIC, bytes(8), ctipc.CorruptedError),
    ("magic of another kind", MAGIC, b"CTIPC\0q\0", ctipc.CorruptedError),
    ("newer version", VERSION, u32(2), ctipc.IncompatibleError),
    ("version 0", VERSION, u32(0), ctipc.IncompatibleError),
    ("huge version", VERSION, u32(0xFFFFFFFF), ctipc.IncompatibleError),
    ("header size 0", HEADER_SIZE, u32(0), ctipc.CorruptedError),
    ("header size huge", HEADER_SIZE, u32(0xFFFFFFFF), ctipc.CorruptedError),
    ("unknown state", STATE, u32(7), ctipc.CorruptedError),
    ("total below the header", TOTAL, u64(16), ctipc.CorruptedError),
    ("total beyond the file", TOTAL, u64(1 << 40), ctipc.CorruptedError),
    ("slot count huge", SLOTS, u32(1 << 30), ctipc.CorruptedError),
    ("slot offset outside", SLOT_OFFSET, u32(0xFFFFFF00), ctipc.CorruptedError),
    ("name length huge", NAME_LEN, u32(0xFFFFFFF0), ctipc.CorruptedError),
]


@kinds
@pytest.mark.parametrize("what, offset, data, error", CASES, ids=[c[0] for c in CASES])
def test_corrupt_header_gives_a_clean_error(
    name: str, cls: type, what: str, offset: int, data: bytes, error: type
) -> None:
    obj = make(cls, name)
    try:
        with patched(header_path(cls, name), offset, data):
            for create in (None, False):
                start = time.monotonic()
                with pytest.raises(error) as info:
                    make(cls, name, create=create)
                assert time.monotonic() - start < 5
                assert info.value.name == name
                assert name in str(info.value)
            with pytest.raises(FileExistsError):
                make(cls, name, create=True)
        # the failed opens did not remove or damage the object
        assert exists(cls, name)
    finally:
        obj.close()
    assert not exists(cls, name)


def test_shared_memory_size_that_contradicts_the_total_is_corrupt(name: str) -> None:
    """param0 (the size) must agree with total: bytes that are not a valid
    SharedMemory are CorruptedError, not IncompatibleError (which means
    another version, or sizes that contradict the caller's)."""
    shm = ctipc.SharedMemory(name, 64)
    try:
        with patched(header_path(ctipc.SharedMemory, name), PARAM0, u64(65)):
            with pytest.raises(ctipc.CorruptedError):
                ctipc.SharedMemory(name)
            with pytest.raises(ctipc.CorruptedError):
                ctipc.SharedMemory(name, create=False)
    finally:
        shm.close()


@pytest.mark.parametrize("tag", [b"pthread-musl-x86_64-64", b"flock-v1", b"\xff" * 8])
def test_lock_of_another_mutex_abi_is_incompatible(name: str, tag: bytes) -> None:
    lock = ctipc.Lock(name)
    try:
        field = tag + bytes(_header.TAG_CAPACITY - len(tag))
        with patched(header_path(ctipc.Lock, name), _header.TAG_OFFSET, field):
            with pytest.raises(ctipc.IncompatibleError) as info:
                ctipc.Lock(name)
            assert info.value.name == name
        with lock:  # still fine for its own kind of process
            pass
    finally:
        lock.close()
    assert not exists(ctipc.Lock, name)


def test_garbage_in_the_slot_table_is_reaped(name: str) -> None:
    shm = ctipc.SharedMemory(name, 16)
    path = header_path(ctipc.SharedMemory, name)
    ns = os_backend.pid_namespace()
    # Processes that cannot exist (pids above any pid_max), in our namespace.
    garbage = b"".join(
        struct.pack("=IIQQQ", 0xFFFFFF00 + i, 3, 0xDEADBEEF + i, ns, 0xFFFF) for i in range(1, 200)
    )
    offset = _header.SLOT_OFFSET + _header.SLOT.size * 8
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(garbage)
    try:
        with ctipc.SharedMemory(name) as again:
            assert again.size == 16
    finally:
        shm.close()
    # the dead "processes" did not keep it alive
    assert not os.path.exists(path)
    assert not exists(ctipc.SharedMemory, name)


def test_semaphore_whose_os_semaphore_vanished_is_corrupt(name: str) -> None:
    sem = ctipc.Semaphore(name)
    try:
        os.unlink(semaphore_path(name))
        with pytest.raises(ctipc.CorruptedError) as info:
            ctipc.Semaphore(name, create=False)
        assert info.value.name == name
        assert sem.acquire(blocking=False)  # the opened one still works
        sem.release()
    finally:
        sem.close()
    assert not exists(ctipc.Semaphore, name)


# -- truncated or uninitialised segments ------------------------------------------------
# Observed behaviour: a segment shorter than a header, or still in the
# "initialising" state with its lock free for over a second, is taken for the
# remains of a creator that died half-way; the next open removes it (after
# ``STALE_INIT_AFTER``) and creates a fresh object, or raises
# FileNotFoundError with create=False.  A segment with a whole header but
# shorter than its recorded total is corrupt.


def persistent_remains(name: str, size: int = 64) -> str:
    """A SharedMemory that no process has open (nothing is mapped, so the
    file can be damaged without SIGBUS in this process); its path."""
    shm = ctipc.SharedMemory(name, size, persistent=True)
    shm.write(b"old")
    shm.close()
    return header_path(ctipc.SharedMemory, name)


needs_persistent = pytest.mark.skipif(
    not ctipc.PERSISTENT_SUPPORTED, reason="no persistent objects"
)


@needs_persistent
@pytest.mark.parametrize("length", [0, 5, 100])
def test_truncated_segment_is_replaced_by_a_fresh_object(name: str, length: int) -> None:
    os.truncate(persistent_remains(name), length)
    start = time.monotonic()
    with ctipc.SharedMemory(name, 32) as shm:
        assert time.monotonic() - start < 5
        assert shm.size == 32
        assert shm.read() == bytes(32)


@needs_persistent
@pytest.mark.parametrize("length", [0, 5])
def test_truncated_segment_is_not_found_by_attach(name: str, length: int) -> None:
    os.truncate(persistent_remains(name), length)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError):
        ctipc.SharedMemory(name, create=False)
    assert time.monotonic() - start < 5


@needs_persistent
def test_segment_shorter_than_its_total_is_corrupt(name: str) -> None:
    path = persistent_remains(name, size=100_000)
    os.truncate(path, _header.HEADER_SIZE + 10)
    start = time.monotonic()
    with pytest.raises(ctipc.CorruptedError):
        ctipc.SharedMemory(name)
    assert time.monotonic() - start < 5
    os.unlink(path)


def test_zero_filled_segment_left_by_a_dead_creator_is_replaced(name: str) -> None:
    path = header_path(ctipc.SharedMemory, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, _header.HEADER_SIZE)
    finally:
        os.close(fd)
    start = time.monotonic()
    with ctipc.SharedMemory(name, 16) as shm:
        assert time.monotonic() - start < 5
        assert shm.read() == bytes(16)


# -- MessageQueue: ring, header and counters ------------------------------------------------

MQ = ctipc.MessageQueue

# The queue's control page and records, as docs/FORMAT.md documents them
# (section 7): byte offsets of the u64 fields in the segment, and the u32
# record length that means "continue at the start of the ring".
TAIL, PUTS, HEAD = CONTROL + 0, CONTROL + 8, CONTROL + 64
WRAP = 0xFFFFFFFF


PROBE_CORRUPT = """
    try:
        q = ctipc.MessageQueue(sys.argv[1], create=False)
    except Exception as e:
        out("open", type(e).__name__)
        raise SystemExit(0)
    for what, call in [
        ("get_nowait", q.get_nowait),
        ("get", lambda: q.get(timeout=1)),
        ("get_many", lambda: q.get_many(10, timeout=1)),
    ]:
        try:
            got = call()
        except Exception as e:
            out(what, type(e).__name__)
        else:
            out(what, "returned", repr(got)[:60])
    try:
        q.put_nowait(b"x" * 50)
    except Exception as e:
        out("put", type(e).__name__)
    else:
        out("put", "ok")
    out("len", type(len(q)).__name__)
"""


def corruptions(ring: int, head: int, tail: int, max_message: int) -> dict[str, list[Any]]:
    """name -> [(offset, bytes), ...] for a queue whose ring of ``ring``
    bytes holds records between ``head`` and ``tail`` (both < ring)."""
    return {
        "tail beyond the ring": [(TAIL, u64(head + ring + 64))],
        "head beyond the tail": [(HEAD, u64(tail + 64))],
        "huge tail": [(TAIL, u64(2**64 - 8))],
        "huge head": [(HEAD, u64(2**64 - 8))],
        "record longer than max_message": [(RING + head, u32(max_message + 1))],
        "record length 0xFFFFFFFE": [(RING + head, u32(WRAP - 1))],
        "record beyond the tail": [(RING + head, u32(tail - head))],
        "wrap marker with nothing after it": [(RING + head, u32(WRAP))],
        "record across the end of the ring": [
            (HEAD, u64(ring - 16)),
            (TAIL, u64(ring + 64)),
            (RING + ring - 16, u32(48)),
        ],
    }


CORRUPTION_NAMES = list(corruptions(1 << 16, 0, 64, 1000))


@pytest.mark.parametrize("what", CORRUPTION_NAMES)
def test_corrupt_ring_makes_get_raise_corrupted_error(name: str, what: str) -> None:
    with MQ(name, capacity=1 << 16, max_message=1000) as q:
        q.put_many([b"a" * 100, b"b" * 200, b"c" * 10])
        path = header_path(MQ, name)
        with open(path, "r+b") as f:
            f.seek(HEAD)
            head = struct.unpack("=Q", f.read(8))[0]
            f.seek(TAIL)
            tail = struct.unpack("=Q", f.read(8))[0]
            assert (head, tail) == (0, 8 + 104 + 8 + 200 + 8 + 16)
            for offset, data in corruptions(q.capacity, head, tail, q.max_message)[what]:
                f.seek(offset)
                f.write(data)
        with Child(PROBE_CORRUPT, name) as child:
            for call in ("get_nowait", "get", "get_many"):
                assert child.readline() == f"{call} CorruptedError"
            assert child.readline() in ("put ok", "put Full", "put CorruptedError")
            assert child.readline() in ("len int", "len CorruptedError")
            child.finish()


@pytest.mark.parametrize(
    "offset, data, error",
    [
        (32, u64(1 << 17), "CorruptedError"),
        (32, u64(4096), "CorruptedError"),
        (40, u64(1 << 15), "CorruptedError"),
        (40, u64(0xFFFFFFFF), "CorruptedError"),
        (40, u64(1 << 40), "CorruptedError"),
        (8, u32(2), "IncompatibleError"),
        (6, b"m", "CorruptedError"),
    ],
    ids=[
        "capacity grown",
        "capacity shrunk",
        "max_message half",
        "max_message WRAP",
        "max_message huge",
        "newer version",
        "kind letter",
    ],
)
def test_corrupt_header_refuses_to_open(name: str, offset: int, data: bytes, error: str) -> None:
    # header fields (docs/FORMAT.md): magic 0, version 8, param0 (capacity)
    # 32, param1 (max_message) 40
    with MQ(name, capacity=1 << 16, max_message=1000) as q:
        q.put(b"x")
        with open(header_path(MQ, name), "r+b") as f:
            f.seek(offset)
            f.write(data)
        with Child(PROBE_CORRUPT, name) as child:
            assert child.readline() == f"open {error}"
            child.finish()


def test_corrupt_counters_do_not_break_len(name: str) -> None:
    with MQ(name, capacity=1 << 16, max_message=1000) as q:
        q.put(b"x")
        with open(header_path(MQ, name), "r+b") as f:
            f.seek(PUTS)
            f.write(u64(2**64 - 1))
        code = """
            q = ctipc.MessageQueue(sys.argv[1], create=False)
            try:
                n = len(q)
            except Exception as e:
                out(type(e).__name__)
            else:
                out("int" if n >= 0 else "negative")
            out(q.get(timeout=15).decode())
        """
        with Child(code, name) as child:
            assert child.readline() in ("int", "CorruptedError")
            child.expect("x")
            child.finish()
