"""Long fuzz of headers and rings: the seeded cases of tests/test_hostile.py, many more.

    python benchmarks/fuzz.py [--cases N] [--seed S] [--start I] [--batch B] [--jobs J] [--json]

Each case creates an object, corrupts bytes of its segment in /dev/shm, and
has a child interpreter open and use it (tests/_fuzzcases.py).  The cases
run in batches, one child per batch: a child that crashes (a segfault, a
SIGBUS, an abort) or does not answer within 8 s is reported with the seed
and the case, replaced, and the batch goes on.  Case I of seed S depends on
nothing else, so ``--seed S --start I --cases 1`` runs it again alone.

Prints the cases run, their outcomes by class (correct behaviour,
CorruptedError, another of ctipc's errors, an unexpected exception), the
crashes and the hangs.  Exit status 0 when there was no crash, hang or
unexpected exception.  Linux only (the segments are files in /dev/shm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
try:
    import ctipc  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, os.path.dirname(HERE))

from _fuzzcases import CRASH, HANG, UNEXPECTED, Tally, run_batch  # type: ignore[import-not-found]  # noqa: E402


def run(args: argparse.Namespace) -> dict[str, Any]:
    total = Tally()
    guard = threading.Lock()
    started = time.monotonic()
    prefix = f"fz{os.getpid()}x"
    end = args.start + args.cases

    def batch(first: int) -> None:
        indices = range(first, min(first + args.batch, end))
        tally = Tally()
        run_batch(args.seed, indices, [f"{prefix}{i}" for i in indices], tally)
        with guard:
            total.merge(tally)
            if not args.quiet:
                rate = total.cases / (time.monotonic() - started)
                print(f"{total.cases} cases, {rate:.0f}/s, {total.classes}", file=sys.stderr)

    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(batch, i) for i in range(args.start, end, args.batch)]:
            future.result()
    failures = sorted(total.failures, key=lambda f: "died" not in f and "hung" not in f)
    return {
        "seed": args.seed,
        "start": args.start,
        "cases": total.cases,
        "seconds": round(time.monotonic() - started, 1),
        "classes": total.classes,
        "outcomes": dict(sorted(total.outcomes.items(), key=lambda kv: -kv[1])),
        "crashes": total.classes.get(CRASH, 0),
        "hangs": total.classes.get(HANG, 0),
        "unexpected": total.classes.get(UNEXPECTED, 0),
        "failures": failures,
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"fuzz: seed {r['seed']}, cases {r['start']}..{r['start'] + r['cases'] - 1}: "
        f"{r['cases']} cases in {r['seconds']} s",
        "by class: " + ", ".join(f"{k} {v}" for k, v in sorted(r["classes"].items())),
        f"crashes: {r['crashes']}, hangs: {r['hangs']}, unexpected exceptions: {r['unexpected']}",
        "most frequent outcomes: "
        + ", ".join(f"{k} {v}" for k, v in list(r["outcomes"].items())[:12]),
    ]
    lines += r["failures"][:50]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--batch", type=int, default=200, help="cases per child")
    parser.add_argument("--jobs", type=int, default=1, help="batches run at once")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("fuzz: needs Linux (segments as files in /dev/shm)", file=sys.stderr)
        return 2
    r = run(args)
    print(json.dumps(r) if args.json else report(r), flush=True)
    return 0 if not (r["crashes"] or r["hangs"] or r["unexpected"]) else 1


if __name__ == "__main__":
    sys.exit(main())
