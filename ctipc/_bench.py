"""``python -m ctipc bench``: how fast ctipc is on this machine, in seconds.

Four figures, each between processes that share nothing but names (the
workers are fresh interpreters, multiprocessing's "spawn" method):

- put/get of 64-byte messages from one producer process to this one;
- the same with put_many/get_many in batches;
- the round trip of a 64-byte message to an echoing process and back
  (median and 99th percentile);
- an uncontended Lock acquire + release, in this process.

Every message is checked (its length and its sequence number), so a figure
is never that of a broken queue.  The machine's load average is printed
before and after the figures: on a busy machine they are lower.  The
comparison with other libraries is the benchmark suite's job
(``benchmarks/suite.py`` in the source tree: it runs the peers in the same
run, so their ratios hold on any machine).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import struct
import sys
import time
from contextlib import ExitStack
from typing import Any, Callable, TextIO

from ._errors import Empty
from .lock import Lock
from .mq import MessageQueue

_SIZE = 64
_SEQ = struct.Struct("<Q")
_FILL = bytes(_SIZE - _SEQ.size)
_BATCH = 64
_WAIT = 60.0  # seconds any one get may wait (a worker's start-up included)


class BenchError(Exception):
    """A worker failed or a message arrived wrong."""


def _message(seq: int) -> bytes:
    return _SEQ.pack(seq) + _FILL


def _check(message: bytes, seq: int) -> None:
    if len(message) != _SIZE or _SEQ.unpack_from(message)[0] != seq:
        raise BenchError(f"message {seq} arrived wrong: {message[:16]!r}... ({len(message)} B)")


def _produce(name: str, count: int, batch: int) -> None:
    with MessageQueue(name, create=False) as q:
        if batch:
            for first in range(0, count, batch):
                q.put_many([_message(s) for s in range(first, min(first + batch, count))],
                           timeout=_WAIT)  # fmt: skip
        else:
            for seq in range(count):
                q.put(_message(seq), timeout=_WAIT)


def _echo(there: str, back: str, rounds: int) -> None:
    with MessageQueue(there, create=False) as ping, MessageQueue(back, create=False) as pong:
        for _ in range(rounds):
            pong.put(ping.get(timeout=_WAIT), timeout=_WAIT)


def _worker(ctx: Any, target: Callable[..., None], *args: object) -> Any:
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _reap(p: Any) -> None:
    p.join(_WAIT)
    if p.is_alive():
        p.kill()
        p.join()
        raise BenchError("a worker process did not finish")
    if p.exitcode != 0:
        raise BenchError(f"a worker process failed (exit code {p.exitcode})")


def _throughput(ctx: Any, prefix: str, count: int, batch: int) -> float:
    """Messages per second from a producer process to this one, timed from
    the first message to the last (the worker's start-up is not timed)."""
    name = f"{prefix}-{'b' if batch else 'p'}"
    with MessageQueue(name, create=True) as q:
        p = _worker(ctx, _produce, name, count, batch)
        try:
            _check(q.get(timeout=_WAIT), 0)
            seq = 1
            start = time.perf_counter()
            if batch:
                while seq < count:
                    for message in q.get_many(1000, timeout=_WAIT):
                        _check(message, seq)
                        seq += 1
            else:
                get = q.get
                for seq in range(1, count):
                    _check(get(timeout=_WAIT), seq)
            elapsed = time.perf_counter() - start
        finally:
            _reap(p)
    return (count - 1) / elapsed


def _pingpong(ctx: Any, prefix: str, rounds: int) -> tuple[float, float]:
    """Median and 99th percentile of the round trip, in microseconds."""
    warmup = max(10, rounds // 10)
    with ExitStack() as stack:
        ping = stack.enter_context(MessageQueue(f"{prefix}-ping", create=True))
        pong = stack.enter_context(MessageQueue(f"{prefix}-pong", create=True))
        p = _worker(ctx, _echo, ping.name, pong.name, warmup + rounds)
        try:
            times = []
            clock = time.perf_counter_ns
            for seq in range(warmup + rounds):
                t0 = clock()
                ping.put(_message(seq), timeout=_WAIT)
                _check(pong.get(timeout=_WAIT), seq)
                times.append(clock() - t0)
        finally:
            _reap(p)
    times = sorted(times[warmup:])
    return times[len(times) // 2] / 1000, times[min(len(times) - 1, len(times) * 99 // 100)] / 1000


def _lock_ns(prefix: str, n: int) -> float:
    lock = Lock(f"{prefix}-lock", create=True)
    try:
        acquire, release = lock.acquire, lock.release
        acquire()  # the first acquire maps the mutex: not timed
        release()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            acquire()
            release()
        return (time.perf_counter_ns() - t0) / n
    finally:
        lock.close()


def run(quick: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the four figures; 0 if every check passed, 1 otherwise."""
    out = out or sys.stdout
    err = err or sys.stderr
    show_progress = out.isatty()

    def progress(what: str) -> None:
        if show_progress:
            print(f"  measuring {what}...", file=err, flush=True)

    from . import __version__

    scale = 0.1 if quick else 1.0
    count, batched = int(200_000 * scale), int(500_000 * scale)
    rounds, lock_ops = int(5_000 * scale), int(200_000 * scale)
    ctx = multiprocessing.get_context("spawn")
    prefix = f"bench{os.getpid()}"
    print(f"ctipc {__version__} bench: {platform.python_implementation()} "
          f"{platform.python_version()}, {platform.system()} {platform.release()}, "
          f"{os.cpu_count()} CPUs{' (quick)' if quick else ''}", file=out, flush=True)  # fmt: skip
    print(f"load average before: {_load()}", file=out, flush=True)

    def line(label: str, value: str) -> None:
        print(f"{label + ':':<38} {value}", file=out, flush=True)

    try:
        progress("put/get")
        rate = _throughput(ctx, prefix, count, 0)
        line("put/get, 64 B, 1 -> 1 process", f"{rate:,.0f} msg/s")
        progress("put_many/get_many")
        rate = _throughput(ctx, prefix, batched, _BATCH)
        line(f"put_many/get_many, 64 B, batch {_BATCH}", f"{rate:,.0f} msg/s")
        progress("ping-pong")
        p50, p99 = _pingpong(ctx, prefix, rounds)
        line("ping-pong round trip, 64 B", f"p50 {p50:,.1f} us, p99 {p99:,.1f} us")
        progress("Lock")
        ns = _lock_ns(prefix, lock_ops)
        line("Lock acquire + release, uncontended", f"{ns:,.0f} ns")
    except (BenchError, Empty) as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=out, flush=True)
        return 1
    finally:
        print(f"load average after:  {_load()}", file=out, flush=True)
    return 0


def _load() -> str:
    """The 1, 5 and 15 minute load averages: beside the figures, they say how
    busy the machine was (a load above the CPU count slows every figure)."""
    getloadavg = getattr(os, "getloadavg", None)  # Windows has none
    try:
        loads = getloadavg() if getloadavg is not None else None
    except OSError:  # no load figures readable (a restricted host)
        loads = None
    if loads is None:
        return "not available here"
    one, five, fifteen = loads
    busy = " (busier than its CPUs: expect lower figures)" if one > (os.cpu_count() or 1) else ""
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min){busy}"
