"""ctipc alone: cost as a queue fills, and what each object costs a process.

Both run in one worker process (a fresh interpreter): they measure ctipc's
own behaviour, not a transfer between processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from _msgs import Checker, Payload
from _run import Ready, run, tag


def _depth_worker(ready: Ready, name: str, depth: int, rounds: int) -> dict:
    import ctipc

    size = 64
    payload, checker = Payload(size), Checker(size)
    with ctipc.MessageQueue(name, create=False) as q:
        for first in range(0, depth, 1000):
            q.put_many([payload.make(s) for s in range(first, min(first + 1000, depth))])
        ready()
        put, get, make, check = q.put, q.get, payload.make, checker.check
        t0 = time.perf_counter_ns()
        for seq in range(depth, depth + rounds):
            put(make(seq), timeout=10)
            check(get(timeout=10))
        ns = (time.perf_counter_ns() - t0) / rounds
        while len(q):
            for m in q.get_many(1000, timeout=10):
                check(m)
        checker.done(depth + rounds)
    return {"ns_op": ns}


def measure_depth(ctx: Any, depth: int, rounds: int, timeout: float) -> dict:
    """One put + one get (64 B) while ``depth`` messages wait in the queue."""
    import ctipc

    name = tag()
    capacity = max(1 << 20, 2 * 72 * (depth + 1000))
    with ctipc.MessageQueue(name, capacity=capacity, max_message=64, create=True):
        (r,) = run(ctx, [(_depth_worker, (name, depth, rounds))], timeout)
    return dict(r)


def _status() -> tuple[int, int, int]:
    """(mapped bytes, resident bytes, open fds) of this process (Linux)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    fds = len(os.listdir("/proc/self/fd"))
    return int(fields["VmSize"][0]) * 1024, int(fields["VmRSS"][0]) * 1024, fds


def _memory_worker(ready: Ready, kind: str, count: int) -> dict:
    import ctipc

    ready()
    prefix = tag()
    objs: list[Any] = []
    before = _status()
    try:
        for i in range(count):
            name = f"{prefix}-{i}"
            if kind == "MessageQueue":
                objs.append(ctipc.MessageQueue(name, create=True))
            elif kind == "Semaphore":
                objs.append(ctipc.Semaphore(name, create=True))
            else:
                objs.append(ctipc.Lock(name, create=True))
        opened = _status()
        for obj in objs:  # use each once: the pages a first use touches
            if kind == "MessageQueue":
                obj.put(b"x" * 64)
                obj.get(timeout=10)
            else:
                obj.acquire(timeout=10)
                obj.release()
        used = _status()
    finally:
        for obj in objs:
            obj.close()
    return {
        "mapped_KiB": (opened[0] - before[0]) / count / 1024,
        "rss_KiB": (used[1] - before[1]) / count / 1024,
        "fds": (opened[2] - before[2]) / count,
    }


def measure_memory(ctx: Any, kind: str, count: int, timeout: float) -> dict:
    """What one more ctipc object of ``kind`` (default sizes) costs a process."""
    (r,) = run(ctx, [(_memory_worker, (kind, count))], timeout)
    return dict(r)


MEMORY_KINDS = ("MessageQueue", "Semaphore", "Lock")
