"""What each step of a MessageQueue call costs, in one process, in ns: the
figures behind "Where the time goes" in docs/benchmarks.md.

    PYTHONPATH=. python benchmarks/mq_steps.py [--n N] [--repeats R]

Each line is the best of R runs of N calls (the best, not the median: on a
shared machine every other figure is the same step plus someone else's
load), the loop's own cost taken off.  The whole calls come first, then the
steps they are made of, as often as a call takes them: ``put`` and ``get``
one mutex pair, two kind checks and one enter/leave each (and a deadline
only once they wait); a ``receive`` or ``reserve`` block two mutex pairs,
two signal-mask pairs and a deadline.
The steps reach into the engine's private attributes: this script measures
the steps the engine takes today, and follows it when they change.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ctipc  # noqa: E402
from ctipc._signals import calm, uncalm  # noqa: E402
from ctipc._wait import deadlines  # noqa: E402

MESSAGE = b"x" * 64


def _best(run: Callable[[int], int], n: int, repeats: int) -> float:
    """ns per call: the best of ``repeats`` runs of ``run(n)``, which returns
    the ns its timed part took."""
    return min(run(n) for _ in range(repeats)) / n


def _timed(call: Callable[[], object], *, then: Callable[[], object] | None = None
           ) -> Callable[[int], int]:  # fmt: skip
    """A run of ``call()`` (and ``then()``) n times, minus the empty loop."""

    def run(n: int) -> int:
        clock = time.perf_counter_ns
        start = clock()
        if then is None:
            for _ in range(n):
                call()
        else:
            for _ in range(n):
                call()
                then()
        middle = clock()
        for _ in range(n):
            pass
        return (middle - start) - (clock() - middle)

    return run


def _in_rounds(q: ctipc.MessageQueue, step: Callable[[], object], put_first: bool
               ) -> Callable[[int], int]:  # fmt: skip
    """``step`` timed alone, in rounds of 1,000 (the ring holds no more): puts
    with the round drained untimed after them, or gets of a round put untimed
    before them."""

    def run(n: int) -> int:
        clock, total = time.perf_counter_ns, 0
        for _ in range(n // 1000):
            if not put_first:
                q.put_many([MESSAGE] * 1000)
            start = clock()
            for _ in range(1000):
                step()
            total += clock() - start
            if put_first:
                while q.get_many(1000, block=False):
                    if len(q) == 0:
                        break
        return total

    return run


def _steps(q: ctipc.MessageQueue, lock: ctipc.Lock, sem: ctipc.Semaphore
           ) -> list[tuple[str, Callable[[int], int]]]:  # fmt: skip
    def receive_block() -> None:
        with q.receive(timeout=60.0):
            pass

    def reserve_block() -> None:
        with q.reserve(64, timeout=60.0) as slot:
            slot.data[:] = MESSAGE

    return [
        ("put, timeout=60", _in_rounds(q, lambda: q.put(MESSAGE, timeout=60.0), True)),
        ("put", _in_rounds(q, lambda: q.put(MESSAGE), True)),
        ("get, timeout=60", _in_rounds(q, lambda: q.get(timeout=60.0), False)),
        ("get", _in_rounds(q, q.get, False)),
        ("reserve block, timeout=60", _in_rounds(q, reserve_block, True)),
        ("receive block, timeout=60", _in_rounds(q, receive_block, False)),
        ("Lock acquire + release", _timed(lock.acquire, then=lock.release)),
        ("Semaphore acquire + release", _timed(sem.acquire, then=sem.release)),
        ("bound try_lock + unlock (ctypes)", _timed(q._try_put, then=q._unlock_put)),
        ("mutex kind check (2 per section)", _timed(q._put_intact)),
        ("_enter + _leave (1 per call)", _timed(q._enter, then=q._leave)),
        ("deadlines(True, 60.0) (1 per block)", _timed(partial(deadlines, True, 60.0))),
        ("signal mask block + restore (2 per block)", _timed(lambda: uncalm(calm()))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = max(1000, args.n - args.n % 1000)
    tag = f"st{os.getpid()}"
    q = ctipc.MessageQueue(tag + "q", capacity=1 << 20, max_message=64)
    lock = ctipc.Lock(tag + "l")
    sem = ctipc.Semaphore(tag + "s", initial=1)
    try:
        print(f"{sys.implementation.name} {sys.version.split()[0]}, 64 B, best of "
              f"{args.repeats} x {n}")  # fmt: skip
        for label, run in _steps(q, lock, sem):
            print(f"{label:42s} {_best(run, n, args.repeats):8.0f} ns")
    finally:
        for obj in (q, lock, sem):
            obj.unlink()
            obj.close()


if __name__ == "__main__":
    main()
