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


class Skipped(Exception):
    """A peer cannot run this cell here (a limit of the OS or of the peer):
    the message says why, and the report shows it in the row."""


def tag() -> str:
    """A short name, unique on this machine for this run of the suite."""
    return f"cb{os.getpid()}x{next(_tags)}"


class Ready:
    """What a worker calls once set up, and (a producer) before it closes."""

    def __init__(self, report: Any, go: Any, finish: Any, index: int) -> None:
        self.report, self.go, self.finish, self.index = report, go, finish, index

    def __call__(self) -> None:
        self.report.put(("ready", self.index, None))
        if not self.go.wait(START_TIMEOUT):
            raise RunFailed("no start signal")

    def wait_finish(self, timeout: float) -> None:
        """Wait until the first worker (the consumer) is done.  A producer
        that closed its end earlier could lose messages still in flight
        (pyzmq drops those a disconnected PUSH peer left in a full PULL
        pipe); an application would wait for an acknowledgement too."""
        self.finish.wait(timeout)


def _entry(report: Any, go: Any, finish: Any, index: int, fn: Callable[..., Any],
           args: tuple) -> None:  # fmt: skip
    ready = Ready(report, go, finish, index)
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
    their results in order.  ``ready`` is a :class:`Ready`.  ``timeout``:
    seconds from the start signal."""
    report = ctx.Queue()
    go, finish = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=_entry, args=(report, go, finish, i, fn, args), daemon=True)
        for i, (fn, args) in enumerate(jobs)
    ]
    results: list[Any] = [None] * len(jobs)
    try:
        for p in procs:
            p.start()
        waiting = set(range(len(jobs)))
        deadline = time.monotonic() + START_TIMEOUT
        _collect(report, procs, waiting, "ready", results, deadline, finish)
        go.set()
        waiting = set(range(len(jobs)))
        _collect(report, procs, waiting, "done", results, time.monotonic() + timeout, finish)
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
    deadline: float, finish: Any,
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
                if index == 0:
                    finish.set()
