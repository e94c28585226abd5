"""Runs one measurement in worker processes, with a deadline.

Every worker is a fresh interpreter (multiprocessing's "spawn" method), so
it shares nothing with the others but what it opens by name, or what is
handed to it as an argument (multiprocessing's own queues and pipes, which
can travel no other way).  Each worker sets up its endpoint, reports
"ready", and waits for the start signal; once every worker is ready the
suite gives the signal, so start-up (interpreter, imports, attaching) is
never timed.  The suite then waits for every worker's result until the
deadline; a worker still running then is killed and the run reported as
failed.  A worker whose received data is wrong raises DataError, and the
suite stops.
"""

from __future__ import annotations

import itertools
import os
import queue
import time
import traceback
from typing import Any, Callable

from _msgs import DataError

START_TIMEOUT = 120.0  # seconds for all workers to start and attach (noisy machine)
_tags = itertools.count()


class RunFailed(Exception):
    """A run did not complete: a worker crashed, timed out or refused."""


def tag() -> str:
    """A short name, unique on this machine for this run of the suite."""
    return f"cb{os.getpid()}x{next(_tags)}"


def _entry(report: Any, go: Any, index: int, fn: Callable[..., Any], args: tuple) -> None:
    def ready() -> None:
        report.put(("ready", index, None))
        if not go.wait(START_TIMEOUT):
            raise RunFailed("no start signal")

    try:
        result = fn(ready, *args)
    except DataError as e:
        report.put(("data", index, f"{e}\n{traceback.format_exc()}"))
        raise SystemExit(3) from None
    except BaseException as e:  # noqa: BLE001 - reported to the suite, which decides
        report.put(("error", index, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise SystemExit(2) from None
    report.put(("done", index, result))


def run(ctx: Any, jobs: list[tuple[Callable[..., Any], tuple]], timeout: float) -> list[Any]:
    """Run ``fn(ready, *args)`` for each job in its own process; return
    their results in order.  ``timeout``: seconds from the start signal."""
    report = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(target=_entry, args=(report, go, i, fn, args), daemon=True)
        for i, (fn, args) in enumerate(jobs)
    ]
    results: list[Any] = [None] * len(jobs)
    try:
        for p in procs:
            p.start()
        waiting = set(range(len(jobs)))
        _collect(report, procs, waiting, "ready", results, time.monotonic() + START_TIMEOUT)
        go.set()
        waiting = set(range(len(jobs)))
        _collect(report, procs, waiting, "done", results, time.monotonic() + timeout)
        for p in procs:
            p.join(START_TIMEOUT)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
        report.close()
        report.join_thread()
    return results


def _collect(
    report: Any, procs: list[Any], waiting: set[int], what: str, results: list[Any],
    deadline: float,
) -> None:  # fmt: skip
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailed(f"timed out waiting for worker(s) {sorted(waiting)} ({what})")
        try:
            kind, index, value = report.get(timeout=min(left, 1.0))
        except queue.Empty:
            dead = [i for i in waiting if procs[i].exitcode not in (None, 0)]
            if dead:
                raise RunFailed(f"worker {dead[0]} exited with {procs[dead[0]].exitcode}") from None
            continue
        if kind == "data":
            raise DataError(f"worker {index}: {value}")
        if kind == "error":
            raise RunFailed(f"worker {index}: {value.strip().splitlines()[0]}\n{value}")
        if kind == what:
            waiting.discard(index)
            if what == "done":
                results[index] = value
