"""Uncontended acquire + release, in one process: ctipc's Lock and Semaphore
beside posix_ipc's semaphore (and threading.Lock for scale).

    PYTHONPATH=. python benchmarks/lock_micro.py [--pairs N] [--repeats R]

Runs are interleaved (A B C D, A B C D, ...) so that a busy machine slows
every contender alike; the figure is the median of the repeats, in ns per
acquire + release pair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ctipc  # noqa: E402


def _pairs(acquire: Callable[[], object], release: Callable[[], object], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter_ns() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tag = f"bench{os.getpid()}"
    lock = ctipc.Lock(tag + "l")
    sem = ctipc.Semaphore(tag + "s", initial=1)
    contenders: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "ctipc.Lock": (lock.acquire, lock.release),
        "ctipc.Semaphore": (sem.acquire, sem.release),
    }
    tl = threading.Lock()
    contenders["threading.Lock"] = (tl.acquire, tl.release)
    peer = None
    try:
        import posix_ipc  # type: ignore[import-not-found]

        peer = posix_ipc.Semaphore(f"/{tag}p", posix_ipc.O_CREX, initial_value=1)
        contenders["posix_ipc.Semaphore"] = (peer.acquire, peer.release)
    except ImportError:
        print("(posix_ipc is not installed: no peer figure)")
    try:
        results: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.repeats):
            for key, (acquire, release) in contenders.items():
                results[key].append(_pairs(acquire, release, args.pairs))
        version = f"{sys.implementation.name} {sys.version.split()[0]}"
        print(f"{version}, {args.pairs} pairs x {args.repeats}")
        base = statistics.median(results["posix_ipc.Semaphore"]) if peer else None
        for key, values in results.items():
            median = statistics.median(values)
            ratio = f"  {median / base:.2f}x posix_ipc" if base else ""
            print(f"{key:22s} {median:8.0f} ns/pair{ratio}")
    finally:
        lock.close()
        sem.close()
        if peer is not None:
            peer.unlink()
            peer.close()


if __name__ == "__main__":
    main()
