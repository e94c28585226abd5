"""``python -m ctipc demo``: worker processes that share nothing but names.

The parent creates a Lock, a Semaphore and a SharedMemory; it starts worker
interpreters (``multiprocessing`` with the "spawn" method, so each is a fresh
process that inherits no handle) that open them by name.  Each worker does
``rounds`` jobs: it takes one of ``slots`` permits of the Semaphore (at most
that many workers are "busy" at once), increments a shared counter under the
Lock, records the highest concurrency it saw, and gives the permit back.  At
the end the parent checks the counter is exact and concurrency never passed
the limit.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import time
from contextlib import closing
from typing import TextIO

from .semaphore import Lock, Semaphore
from .shm import SharedMemory

# counter, busy now, highest busy seen, per-worker done counts follow
_STATE = struct.Struct("=QQQ")


def _worker(prefix: str, index: int, rounds: int) -> None:
    # `with lock:` and `with slots:` acquire and release; closing() closes.
    with (
        SharedMemory(f"{prefix}-state", create=False) as shm,
        closing(Lock(f"{prefix}-lock", create=False)) as lock,
        closing(Semaphore(f"{prefix}-slots", create=False)) as slots,
    ):
        for _ in range(rounds):
            with slots:
                with lock:
                    counter, busy, peak = _STATE.unpack_from(shm.buf)
                    busy += 1
                    _STATE.pack_into(shm.buf, 0, counter, busy, max(peak, busy))
                with lock:
                    counter, busy, peak = _STATE.unpack_from(shm.buf)
                    _STATE.pack_into(shm.buf, 0, counter + 1, busy - 1, peak)
            done_at = _STATE.size + 8 * index
            with lock:
                (done,) = struct.unpack_from("=Q", shm.buf, done_at)
                struct.pack_into("=Q", shm.buf, done_at, done + 1)
        shm.write_str(f"worker {index} (pid {os.getpid()}) finished", 64 + 64 * index)


def run(workers: int = 4, rounds: int = 2000, slots: int = 2, out: TextIO | None = None) -> int:
    write = (out or sys.stdout).write
    prefix = f"demo{os.getpid()}"
    write(
        f"ctipc demo: {workers} worker processes, {rounds} jobs each, "
        f"at most {slots} busy at once\n"
    )
    size = 64 + 64 * workers + 64
    with (
        SharedMemory(f"{prefix}-state", size, create=True) as shm,
        closing(Lock(f"{prefix}-lock", create=True)),
        closing(Semaphore(f"{prefix}-slots", create=True, initial=slots)),
    ):
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(prefix, i, rounds)) for i in range(workers)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        elapsed = time.perf_counter() - start
        failed = [p.pid for p in procs if p.exitcode != 0]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        counter, busy, peak = _STATE.unpack_from(shm.buf)
        for i in range(workers):
            (done,) = struct.unpack_from("=Q", shm.buf, _STATE.size + 8 * i)
            write(f"  {shm.read_str(64 + 64 * i) or f'worker {i} did not finish'}: {done} jobs\n")
    expected = workers * rounds
    write(
        f"shared counter: {counter} (expected {expected}); highest concurrency: {peak} "
        f"(limit {slots}); {expected / elapsed:,.0f} jobs/s including start-up\n"
    )
    ok = not failed and counter == expected and busy == 0 and 1 <= peak <= slots
    write("OK: the processes coordinated through names only\n" if ok else "FAILED\n")
    return 0 if ok else 1
