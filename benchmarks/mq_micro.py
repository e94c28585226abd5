"""One MessageQueue in one process, no contention: what each kind of call
costs on its own, in µs per message.

    PYTHONPATH=. python benchmarks/mq_micro.py [--messages N] [--repeats R] [--size B]

Cycles: ``put`` + ``get``; ``put`` + a ``receive`` block; a ``reserve``
block + ``get``; ``put_many`` + ``get_many`` in batches of 64.  Runs are
interleaved (A B C D, A B C D, ...) so that a busy machine slows every cycle
alike; the figure is the median of the repeats.  These are the engine's own
costs (no wake-ups, no other process): the suite (``suite.py``) compares
ctipc with its peers across processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ctipc  # noqa: E402

BATCH = 64


def _cycles(q: ctipc.MessageQueue, message: bytes) -> dict[str, Callable[[int], None]]:
    def put_get(n: int) -> None:
        put, get = q.put, q.get
        for _ in range(n):
            put(message)
            get()

    def put_receive(n: int) -> None:
        put, receive = q.put, q.receive
        for _ in range(n):
            put(message)
            with receive():
                pass

    def reserve_get(n: int) -> None:
        reserve, get, size = q.reserve, q.get, len(message)
        for _ in range(n):
            with reserve(size) as slot:
                slot.data[:] = message
            get()

    def batches(n: int) -> None:
        batch = [message] * BATCH
        for _ in range(max(1, n // BATCH)):
            q.put_many(batch)
            got = 0
            while got < BATCH:
                got += len(q.get_many(BATCH))

    return {
        "put + get": put_get,
        "put + receive": put_receive,
        "reserve + get": reserve_get,
        f"put_many + get_many ({BATCH})": batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="bytes per message")
    args = parser.parse_args()
    with ctipc.MessageQueue(
        f"bench{os.getpid()}q", capacity=1 << 20, max_message=max(args.size, 1)
    ) as q:
        try:
            cycles = _cycles(q, b"x" * args.size)
            results: dict[str, list[float]] = {k: [] for k in cycles}
            for _ in range(args.repeats):
                for key, run in cycles.items():
                    n = args.messages if not key.startswith("put_many") else args.messages * 4
                    n -= n % BATCH if key.startswith("put_many") else 0
                    start = time.perf_counter()
                    run(n)
                    results[key].append((time.perf_counter() - start) / n * 1e6)
            version = f"{sys.implementation.name} {sys.version.split()[0]}"
            print(f"{version}, {args.size} B, {args.messages} messages x {args.repeats}")
            for key, values in results.items():
                print(f"{key:28s} {statistics.median(values):7.2f} µs/message")
        finally:
            q.unlink()


if __name__ == "__main__":
    main()
