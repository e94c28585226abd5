"""ctipc.MessageQueue next to multiprocessing.Queue, one run, interleaved.

    python benchmarks/mq_vs_mp.py [--messages N] [--size BYTES] [--repeats R]

One producer process sends N messages of SIZE bytes to the consumer (this
process), which checks each one.  Every repeat runs both transports, in
alternating order, and the report gives each rate and the ratio ctipc / mp
(median, min, max over the repeats): these machines are shared and noisy, so
only ratios measured side by side mean anything.  benchmarks/suite.py is
the full comparison with the other peers; this is the quick check.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time


def _payload(i: int, size: int) -> bytes:
    return i.to_bytes(8, "little") * (size // 8) + bytes(size % 8)


def _produce_ctipc(name: str, n: int, size: int, batch: int) -> None:
    import ctipc

    with ctipc.MessageQueue(name, create=False) as q:
        if batch:
            for start in range(0, n, batch):
                q.put_many([_payload(i, size) for i in range(start, min(start + batch, n))])
        else:
            for i in range(n):
                q.put(_payload(i, size))


def _produce_mp(q: multiprocessing.Queue, n: int, size: int, batch: int) -> None:
    for i in range(n):
        q.put(_payload(i, size))


def run_ctipc(ctx: object, n: int, size: int, batch: int) -> float:
    import ctipc

    name = f"bench{os.getpid()}"
    with ctipc.MessageQueue(name, capacity=4 << 20, max_message=max(size, 64)) as q:
        p = ctx.Process(target=_produce_ctipc, args=(name, n, size, batch))  # type: ignore[attr-defined]
        start = time.perf_counter()
        p.start()
        i = 0
        while i < n:
            for m in q.get_many(1000, timeout=30) if batch else [q.get(timeout=30)]:
                assert m == _payload(i, size), i
                i += 1
        elapsed = time.perf_counter() - start
        p.join()
    return n / elapsed


def run_mp(ctx: object, n: int, size: int, batch: int) -> float:
    q = ctx.Queue()  # type: ignore[attr-defined]
    p = ctx.Process(target=_produce_mp, args=(q, n, size, batch))  # type: ignore[attr-defined]
    start = time.perf_counter()
    p.start()
    for i in range(n):
        assert q.get(timeout=30) == _payload(i, size), i
    elapsed = time.perf_counter() - start
    p.join()
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="ctipc put_many/get_many batch")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
          f"{platform.python_implementation()} {platform.python_version()}")  # fmt: skip
    rates: dict[str, list[float]] = {"ctipc": [], "mp": []}
    for r in range(args.repeats):
        order = ["ctipc", "mp"] if r % 2 == 0 else ["mp", "ctipc"]
        for which in order:
            fn = run_ctipc if which == "ctipc" else run_mp
            rates[which].append(fn(ctx, args.messages, args.size, args.batch))
    ratios = [c / m for c, m in zip(rates["ctipc"], rates["mp"])]
    for which, values in rates.items():
        print(f"{which:6} {statistics.median(values):>12,.0f} msg/s (median of {len(values)})")
    print(
        f"ratio ctipc/mp: median {statistics.median(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f}  "
        f"({args.messages} x {args.size} B, batch {args.batch or 'off'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
