"""Many open/close cycles leave no descriptors, mappings or /dev/shm entries.

(psutil's memleak tests, posix_ipc's 10k loops.)  The autouse fixtures of
conftest.py check fds, threads and /dev/shm after each test as well.
"""

from __future__ import annotations

import errno
import gc
import os
import platform

import pytest
from helpers import HAVE_DEV_SHM, HAVE_PROC_FD, header_path, semaphore_path

import ctipc
from ctipc import _header, _lifetime
from ctipc._backend import os_backend

# Measured: ~0.25 ms per SharedMemory cycle and ~0.4 ms per Semaphore cycle
# on CPython; PyPy's ctypes calls are slower until warmed up.
CPYTHON = platform.python_implementation() == "CPython"
CYCLES = 10_000 if CPYTHON else 3_000
SEM_CYCLES = 5_000 if CPYTHON else 2_000


def fds() -> int:
    return len(os.listdir("/proc/self/fd")) if HAVE_PROC_FD else 0


def maps() -> int:
    """Mappings of this process of shm objects: ctipc segments and OS
    semaphores (glibc maps a semaphore it creates under a temporary name)."""
    if not os.path.exists("/proc/self/maps"):
        return 0
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "/dev/shm/" in line)


def state() -> tuple:
    # Handles are released when their object is collected; on PyPy a core
    # kept by a finalizer's closure is only freed by a later collection.
    for _ in range(3):
        gc.collect()
    return (fds(), maps(), len(_lifetime._LIVE), len(_header._THIS))


def leftovers(name: str) -> list[str]:
    """/dev/shm entries of any kind of object called ``name``."""
    if not HAVE_DEV_SHM:
        return []
    paths = [header_path(c, name) for c in (ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory)]
    paths.append(semaphore_path(name))
    return [p for p in paths if os.path.exists(p)]


def check_cycles(make, n: int, name: str | None = None) -> None:
    make().close()  # warm-up: caches, lazy imports
    before = state()
    for _ in range(n):
        make().close()
    assert state() == before
    if name is not None:
        assert leftovers(name) == []


def test_shared_memory_open_close_cycles(name: str) -> None:
    check_cycles(lambda: ctipc.SharedMemory(name, 4096), CYCLES, name)


def test_semaphore_open_close_cycles(name: str) -> None:
    check_cycles(lambda: ctipc.Semaphore(name), SEM_CYCLES, name)


def test_lock_open_close_cycles(name: str) -> None:
    def cycle() -> ctipc.Lock:
        lock = ctipc.Lock(name)
        lock.acquire()
        lock.release()
        return lock

    check_cycles(cycle, CYCLES // 4, name)


@pytest.mark.parametrize(
    "cls", [ctipc.SharedMemory, ctipc.Semaphore, ctipc.Lock], ids=lambda c: c.__name__
)
def test_attach_detach_cycles_while_held_open(name: str, cls: type) -> None:
    kwargs = {"size": 64} if cls is ctipc.SharedMemory else {}
    holder = cls(name, **kwargs)
    try:
        check_cycles(lambda: cls(name, create=False), CYCLES // 4)
    finally:
        holder.close()
    assert leftovers(name) == []


def test_failed_opens_leak_nothing(name: str) -> None:
    holder = ctipc.SharedMemory(name, 64)
    try:
        before = state()
        for _ in range(1000):
            with pytest.raises(ctipc.IncompatibleError):
                ctipc.SharedMemory(name, 65)
            with pytest.raises(FileExistsError):
                ctipc.SharedMemory(name, 64, create=True)
            with pytest.raises(FileNotFoundError):
                ctipc.Semaphore(name, create=False)
        assert state() == before
    finally:
        holder.close()


def _inodes(cls: type, name: str) -> set[int]:
    """Inodes of the files behind an object (glibc maps a semaphore it
    creates under a temporary name, so names alone do not find it)."""
    paths = [header_path(cls, name)]
    if cls is ctipc.Semaphore:
        paths.append(semaphore_path(name))
    return {os.stat(p).st_ino for p in paths}


def _mappings_of(inodes: set[int]) -> list[str]:
    with open("/proc/self/maps") as f:
        return [
            line
            for line in f
            if len(line.split()) >= 6 and int(line.split()[4]) in inodes and "/dev/shm/" in line
        ]


@pytest.mark.skipif(
    not (HAVE_DEV_SHM and os.path.exists("/proc/self/maps")),
    reason="needs /dev/shm and /proc/self/maps",
)
@pytest.mark.parametrize(
    "cls", [ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory], ids=lambda c: c.__name__
)
def test_attach_to_a_full_table_releases_what_it_opened(name: str, cls: type) -> None:
    """An attach refused because the attach table is full (EUSERS) must not
    keep the OS semaphore or the mutex mapping it opened on the way."""
    kwargs = {"size": 64} if cls is ctipc.SharedMemory else {}
    holder = cls(name, **kwargs)
    path = header_path(cls, name)
    inodes = _inodes(cls, name)
    assert _mappings_of(inodes) != []
    ns = os_backend.pid_namespace()
    table = _header.SLOT_OFFSET
    # Processes in another pid namespace: alive as far as this one can tell.
    # They take every slot, also the holder's (so that this process's attach
    # needs a slot of its own); the table is put back afterwards.
    others = b"".join(
        _header.SLOT.pack(100_000 + i, 1, 1, ns + 1, 0) for i in range(_header.SLOT_COUNT)
    )
    with open(path, "r+b") as f:
        f.seek(table)
        saved = f.read(len(others))
        f.seek(table)
        f.write(others)
    try:
        with pytest.raises(OSError) as info:
            cls(name, create=False)
        assert info.value.errno == errno.EUSERS
        assert info.value.filename == name
    finally:
        with open(path, "r+b") as f:
            f.seek(table)
            f.write(saved)
        holder.close()
    del holder
    gc.collect()
    assert not os.path.exists(path)
    assert _mappings_of(inodes) == []
