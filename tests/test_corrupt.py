"""Corrupt headers give clear errors, never a crash or a hang.

The header of a live object is overwritten through its file in /dev/shm, as a
buggy or hostile process could; opening the object by name must then raise
``ctipc.CorruptedError`` (bytes that are not a valid object) or
``ctipc.IncompatibleError`` (another layout version or ABI), and the damage
is repaired before the test closes the object.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import HAVE_DEV_SHM, exists, header_path, semaphore_path

import ctipc
from ctipc import _header
from ctipc._backend import os_backend

pytestmark = pytest.mark.skipif(not HAVE_DEV_SHM, reason="objects are not files in /dev/shm here")

KINDS = [ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory]
kinds = pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)

# Offsets in the header (docs/FORMAT.md; struct "=8s4I3Q4IQ")
MAGIC, VERSION, STATE, HEADER_SIZE, FLAGS, TOTAL, PARAM0 = 0, 8, 12, 16, 20, 24, 32
SLOTS, SLOT_OFFSET, NAME_LEN = 48, 52, 56


def make(cls: type, name: str, **kwargs: Any) -> Any:
    if cls is ctipc.SharedMemory:
        kwargs.setdefault("size", 64)
    return cls(name, **kwargs)


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
