"""Several processes opening, creating and closing one name at the same time."""

from __future__ import annotations

import pytest
from helpers import Child, exists

import ctipc

N = 6

OPEN_TOGETHER = """
    out("ready")
    inp()
    if sys.argv[2] == "Semaphore":
        obj = ctipc.Semaphore(sys.argv[1], initial=0)
        obj.release()
    else:
        obj = ctipc.SharedMemory(sys.argv[1], 64)
        obj.buf[int(sys.argv[3])] = 1
    out("opened")
    inp()
    obj.close()
"""


@pytest.mark.parametrize("kind", ["Semaphore", "SharedMemory"])
def test_simultaneous_open_or_create_gives_one_object(name: str, kind: str) -> None:
    children = [Child(OPEN_TOGETHER, name, kind, i) for i in range(N)]
    try:
        for c in children:
            c.expect("ready")
        for c in children:
            c.send()
        for c in children:
            c.expect("opened")
        if kind == "Semaphore":
            sem = ctipc.Semaphore(name, create=False)
            try:
                n = 0
                while sem.acquire(blocking=False):
                    n += 1
                assert n == N  # every child released the same semaphore
            finally:
                sem.close()
        else:
            with ctipc.SharedMemory(name, create=False) as shm:
                assert shm.read(0, N) == b"\x01" * N
        for c in children:
            c.send()
            c.finish()
    finally:
        for c in children:
            c.close()
    assert not exists(getattr(ctipc, kind), name)


CHURN = """
    cls = getattr(ctipc, sys.argv[2])
    kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
    out("ready")
    inp()
    deadline = time.monotonic() + 1.0
    rounds = 0
    while time.monotonic() < deadline:
        obj = cls(sys.argv[1], **kwargs)
        if sys.argv[2] == "Lock":
            assert obj.acquire(timeout=10)
            obj.release()
        elif sys.argv[2] == "Semaphore":
            assert obj.acquire(timeout=10)
            obj.release()
        else:
            obj.buf[0] = 1
        obj.close()
        rounds += 1
    out(f"done {rounds}")
"""


@pytest.mark.parametrize("kind", ["Semaphore", "Lock", "SharedMemory"])
def test_processes_creating_and_removing_one_name_concurrently(name: str, kind: str) -> None:
    """Objects are created, attached and removed over and over by 4
    processes at once: no process sees an error, and nothing is left."""
    children = [Child(CHURN, name, kind) for _ in range(4)]
    try:
        for c in children:
            c.expect("ready")
        for c in children:
            c.send()
        for c in children:
            line = c.readline(timeout=30)
            assert line.startswith("done "), line
            assert int(line.split()[1]) > 0
            c.finish()
    finally:
        for c in children:
            c.close()
    assert not exists(getattr(ctipc, kind), name)
