"""``python -m ctipc demo``: worker processes that share nothing but names.

The parent creates a Lock, a Semaphore, a SharedMemory and a MessageQueue;
it starts worker interpreters (``multiprocessing`` with the "spawn" method,
so each is a fresh process that inherits no handle) that open them by name.
Each worker does ``rounds`` jobs: it takes one of ``slots`` permits of the
Semaphore (at most that many workers are "busy" at once), increments a
shared counter under the Lock, records the highest concurrency it saw, gives
the permit back and reports the job on the queue, where the parent counts
the reports.  Then each worker streams ``burst`` small messages through the
queue in batches, to show its speed.  At the end the parent checks that the
counter and the reports are exact, that every streamed message arrived in
order, and that concurrency never passed the limit.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import time
from contextlib import ExitStack, closing
from typing import Any, Callable, TextIO

from ._errors import Empty
from .lock import Lock
from .mq import MessageQueue
from .semaphore import Semaphore
from .shm import SharedMemory

# counter, busy now, highest busy seen; per-worker done counts follow
_STATE = struct.Struct("=QQQ")
_JOB = struct.Struct("=II")  # worker, job number: one report per job
_BURST = struct.Struct("=II56x")  # worker, sequence number: 64-byte messages


def _open(stack: ExitStack, prefix: str, create: bool, slots: int = 1, size: int = 0) -> tuple:
    # `with lock:` and `with sem:` acquire and release: closing() closes them.
    shm = stack.enter_context(
        SharedMemory(f"{prefix}-state", size, create=True)
        if create
        else SharedMemory(f"{prefix}-state", create=False)
    )
    lock = stack.enter_context(closing(Lock(f"{prefix}-lock", create=create)))
    sem = stack.enter_context(closing(Semaphore(f"{prefix}-slots", create=create, initial=slots)))
    events = stack.enter_context(MessageQueue(f"{prefix}-events", create=create))
    return shm, lock, sem, events


def _worker(prefix: str, index: int, rounds: int, burst: int) -> None:
    with ExitStack() as stack:
        shm, lock, slots, events = _open(stack, prefix, create=False)
        done_at = _STATE.size + 8 * index
        for job in range(1, rounds + 1):
            with slots:
                with lock:
                    counter, busy, peak = _STATE.unpack_from(shm.buf)
                    busy += 1
                    _STATE.pack_into(shm.buf, 0, counter, busy, max(peak, busy))
                with lock:
                    counter, busy, peak = _STATE.unpack_from(shm.buf)
                    _STATE.pack_into(shm.buf, 0, counter + 1, busy - 1, peak)
                    struct.pack_into("=Q", shm.buf, done_at, job)
            events.put(_JOB.pack(index, job))
        shm.write_str(f"worker {index} (pid {os.getpid()}) finished", 64 + 64 * index)
        for start in range(0, burst, 256):
            events.put_many(_BURST.pack(index, i) for i in range(start, min(start + 256, burst)))


def _collect(
    events: MessageQueue,
    workers: int,
    rounds: int,
    burst: int,
    procs: list[Any],
    progress: Callable[[str], object] | None = None,
) -> tuple[int, int, float]:
    """Receive every job report and streamed message, checking the order per
    worker; return (reports, streamed, seconds the stream took).  With
    ``progress`` (a terminal's write), show the counts as they grow."""
    reports = streamed = 0
    next_seq = [0] * workers
    first = last = shown = time.perf_counter()
    while reports < workers * rounds or streamed < workers * burst:
        if progress is not None and last - shown > 0.2:
            shown = last
            progress(
                f"\r  {reports:,}/{workers * rounds:,} job reports, "
                f"{streamed:,}/{workers * burst:,} messages "
            )
        try:
            batch = events.get_many(1000, timeout=5)
        except Empty:
            if not any(p.is_alive() for p in procs):
                break  # a worker failed: report what arrived
            continue
        for message in batch:
            if len(message) == _JOB.size:
                reports += 1
                continue
            worker, seq = _BURST.unpack(message)
            if seq != next_seq[worker]:
                raise RuntimeError(f"worker {worker}: message {seq} came before {next_seq[worker]}")
            if streamed == 0:
                first = time.perf_counter()
            next_seq[worker] += 1
            streamed += 1
        last = time.perf_counter()
    if progress is not None:
        progress("\r" + " " * 60 + "\r")
    return reports, streamed, last - first


def run(
    workers: int = 4,
    rounds: int = 2000,
    slots: int = 2,
    burst: int = 50_000,
    out: TextIO | None = None,
) -> int:
    stream = out or sys.stdout
    write = stream.write
    prefix = f"demo{os.getpid()}"
    write(
        f"ctipc demo: {_plural(workers, 'worker process', 'worker processes')}, "
        f"{_plural(rounds, 'job')} each, at most {slots} busy at once; "
        f"then {_plural(burst, 'message')} each through the queue\n"
    )
    with ExitStack() as stack:
        shm, _, _, events = _open(stack, prefix, True, slots, 64 + 64 * workers + 64)
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(prefix, i, rounds, burst)) for i in range(workers)
        ]
        start = time.perf_counter()
        for p in procs:
            p.start()
        try:
            progress = _terminal_write(stream)
            reports, streamed, seconds = _collect(events, workers, rounds, burst, procs, progress)
        finally:
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()
                    p.join()
        elapsed = time.perf_counter() - start
        failed = [p.pid for p in procs if p.exitcode != 0]
        counter, busy, peak = _STATE.unpack_from(shm.buf)
        for i in range(workers):
            (done,) = struct.unpack_from("=Q", shm.buf, _STATE.size + 8 * i)
            write(f"  {shm.read_str(64 + 64 * i) or f'worker {i} did not finish'}: {done} jobs\n")
    expected = workers * rounds
    write(
        f"shared counter: {counter} (expected {expected}); job reports on the queue: "
        f"{reports}; highest concurrency: {peak} (limit {slots})\n"
        + (
            f"queue: {streamed:,} of {workers * burst:,} messages of 64 B arrived, in order per "
            f"worker, at {streamed / max(seconds, 1e-9):,.0f} messages/s"
            if burst
            else "queue: no messages streamed (--messages 0)"
        )
        + f"; {elapsed:.1f} s in all\n"
    )
    ok = (
        not failed
        and counter == expected
        and reports == expected
        and streamed == workers * burst
        and busy == 0
        and 1 <= peak <= slots
    )
    write("OK: the processes coordinated through names only\n" if ok else "FAILED\n")
    return 0 if ok else 1


def _plural(n: int, one: str, many: str = "") -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _terminal_write(stream: TextIO) -> Callable[[str], object] | None:
    """``stream``'s write, flushed, if it is a terminal: progress shown in
    place (carriage returns) would only clutter a file or a pipe."""
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write
