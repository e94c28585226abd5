"""The workloads: what each worker process does, and how a run is measured.

Each ``measure_*`` function runs one transport once (in fresh worker
processes, see _run.py) and returns a dict of figures; the first key is
the one the report compares.  Times come from ``time.perf_counter``, the
same monotonic clock in every process on the supported OSes, so a
producer's start and the consumer's end can be subtracted.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from typing import Any, Callable

from _msgs import Checker, DataError, Payload
from _peers import WAIT, Rx, Transport, Tx
from _run import Ready, RunFailed, run, tag
from _sems import Sem

# -- message workers -------------------------------------------------------------------------


def _producer(ready: Ready, t: Transport, handle: Any, size: int,
              producer: int, count: int, batch: int, delay: float) -> dict:  # fmt: skip
    tx = t.tx(handle, size)
    payload = Payload(size, producer)
    try:
        ready()
        tx.start()
        if delay:
            time.sleep(delay)  # the idle workload: the consumer waits this long
        start = time.perf_counter()
        if batch:
            for first in range(0, count, batch):
                tx.send_batch(payload, first, min(first + batch, count))
        else:
            send = tx.send
            for seq in range(count):
                send(payload, seq)
        end = time.perf_counter()
        ready.wait_finish(WAIT)
        return {"start": start, "end": end}
    finally:
        tx.close()


def _consumer(ready: Ready, t: Transport, handle: Any, size: int,
              producers: int, count: int) -> dict:  # fmt: skip
    rx = t.rx(handle, size)
    checker = Checker(size, producers)
    total = producers * count
    try:
        ready()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        recv = rx.recv
        n = 0
        try:
            while n < total:
                n += recv(checker)
        except TimeoutError:
            got = ", ".join(map(str, checker.expected))
            msg = f"nothing came for {WAIT:.0f} s: got {got} of {count} per producer"
            raise RunFailed(msg) from None
        end = time.perf_counter()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        checker.done(count)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return {"end": end, "cpu": cpu, "wall": end - wall0}
    finally:
        rx.close()


def _pinger(ready: Ready, t: Transport, handle: Any, size: int,
            rounds: int, warmup: int) -> dict:  # fmt: skip
    tx, rx = t.duplex(handle, 0, size)
    payload, checker = Payload(size, 0), Checker(size, 1)
    times = []
    try:
        ready()
        tx.start()
        clock = time.perf_counter_ns
        for seq in range(rounds + warmup):
            t0 = clock()
            tx.send(payload, seq)
            rx.recv(checker)
            times.append(clock() - t0)
        checker.done(rounds + warmup)
        return {"rtt_ns": times[warmup:]}
    finally:
        _close_duplex(tx, rx)


def _ponger(ready: Ready, t: Transport, handle: Any, size: int,
            rounds: int) -> dict:  # fmt: skip
    tx, rx = t.duplex(handle, 1, size)
    payload, checker = Payload(size, 0), Checker(size, 1)
    try:
        ready()
        tx.start()
        for seq in range(rounds):
            rx.recv(checker)
            tx.send(payload, seq)
        checker.done(rounds)
        return {}
    finally:
        _close_duplex(tx, rx)


def _close_duplex(tx: Tx, rx: Rx) -> None:
    tx.close()
    if id(rx) != id(tx):  # a two-way transport's one end is both
        rx.close()


def _percentiles(ns: list[int]) -> tuple[float, float]:
    s = sorted(ns)
    return s[len(s) // 2] / 1000, s[min(len(s) - 1, int(len(s) * 0.99))] / 1000


# -- message measurements ------------------------------------------------------------------------


def measure_throughput(ctx: Any, t: Transport, size: int, producers: int, count: int,
                       timeout: float, batch: int = 64) -> dict:  # fmt: skip
    """``producers`` processes each send ``count // producers`` messages of
    ``size`` bytes to one consumer process, which checks every one."""
    per = max(1, count // producers)
    ch = t.open(ctx, size, tag())
    try:
        jobs: list[tuple[Callable[..., Any], tuple]] = [
            (_consumer, (t, ch.handle, size, producers, per))
        ]
        jobs += [
            (_producer, (t, ch.handle, size, p, per, batch if t.batch else 0, 0.0))
            for p in range(producers)
        ]
        results = run(ctx, jobs, timeout)
    finally:
        t.close(ch)
    start = min(r["start"] for r in results[1:])
    seconds = results[0]["end"] - start
    rate = per * producers / seconds
    return {"msg_s": rate, "MB_s": rate * size / 1e6, "seconds": seconds}


def measure_pingpong(ctx: Any, t: Transport, size: int, rounds: int, timeout: float) -> dict:
    """Round trips of one ``size``-byte message between two processes."""
    warmup = min(500, rounds // 5)
    ch = t.open_duplex(ctx, size, tag())
    try:
        results = run(
            ctx,
            [(_pinger, (t, ch.handle, size, rounds, warmup)),
             (_ponger, (t, ch.handle, size, rounds + warmup))],
            timeout,
        )  # fmt: skip
    finally:
        t.close_duplex(ch)
    p50, p99 = _percentiles(results[0]["rtt_ns"])
    return {"p50_us": p50, "p99_us": p99}


def measure_idle(ctx: Any, t: Transport, size: int, seconds: float, timeout: float) -> dict:
    """CPU time a consumer blocked in a receive uses while nothing comes for
    ``seconds``; then one message arrives (and is checked)."""
    ch = t.open(ctx, size, tag())
    try:
        results = run(
            ctx,
            [(_consumer, (t, ch.handle, size, 1, 1)),
             (_producer, (t, ch.handle, size, 0, 1, 0, seconds))],
            timeout + seconds,
        )  # fmt: skip
    finally:
        t.close(ch)
    r = results[0]
    return {"cpu_ms_per_s": 1000 * r["cpu"] / r["wall"], "waited_s": r["wall"]}


# -- semaphores --------------------------------------------------------------------------------


def _sem_pinger(ready: Ready, s: Sem, there: Any, back: Any, rounds: int,
                warmup: int) -> dict:  # fmt: skip
    ping, pong = s.attach(there), s.attach(back)
    ready()
    clock = time.perf_counter_ns
    times = []
    for _ in range(rounds + warmup):
        t0 = clock()
        ping.release()
        if not pong.acquire(True, WAIT):
            raise RunFailed("no pong")
        times.append(clock() - t0)
    if ping.acquire(False) or pong.acquire(False):
        raise DataError("a semaphore holds a permit nobody released")
    return {"rtt_ns": times[warmup:]}


def _sem_ponger(ready: Ready, s: Sem, there: Any, back: Any, rounds: int) -> dict:
    ping, pong = s.attach(there), s.attach(back)
    ready()
    for _ in range(rounds):
        if not ping.acquire(True, WAIT):
            raise RunFailed("no ping")
        pong.release()
    return {}


def measure_sem_pingpong(ctx: Any, s: Sem, rounds: int, timeout: float) -> dict:
    """Two processes pass a permit back and forth through two semaphores."""
    warmup = min(500, rounds // 5)
    a, b = s.open(ctx, tag()), s.open(ctx, tag())
    try:
        results = run(
            ctx,
            [(_sem_pinger, (s, a.handle, b.handle, rounds, warmup)),
             (_sem_ponger, (s, a.handle, b.handle, rounds + warmup))],
            timeout,
        )  # fmt: skip
    finally:
        s.close(a)
        s.close(b)
    p50, p99 = _percentiles(results[0]["rtt_ns"])
    return {"p50_us": p50, "p99_us": p99}


def _sem_loop(ready: Ready, s: Sem, handle: Any, n: int) -> dict:
    obj = s.attach(handle)
    if s.pingpong:
        obj.release()  # a semaphore opened at 0: one permit to take and give back
    ready()
    acquire, release = s.calls(obj)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    ns = (time.perf_counter_ns() - t0) / n
    if not obj.acquire(False):
        raise DataError("the permit was lost")
    if s.pingpong and obj.acquire(False):
        raise DataError("a permit appeared")
    return {"ns_op": ns}


def measure_sem_uncontended(ctx: Any, s: Sem, n: int, timeout: float) -> dict:
    """acquire() + release() in one process, nobody else using the object."""
    ch = s.open(ctx, tag())
    try:
        (r,) = run(ctx, [(_sem_loop, (s, ch.handle, n))], timeout)
    finally:
        s.close(ch)
    return {"ns_op": r["ns_op"]}


def _lock_holder(ready: Ready, s: Sem, handle: Any, seconds: float) -> dict:
    obj = s.attach(handle)
    if not obj.acquire(True, WAIT):
        raise RunFailed("could not take the lock")
    ready()
    time.sleep(seconds)  # the waiter stays blocked this long
    obj.release()
    return {}


def _sem_waiter(ready: Ready, s: Sem, handle: Any, holds: bool) -> dict:
    obj = s.attach(handle)
    ready()
    if holds:
        time.sleep(0.05)  # the holder took it before "ready"; this only lets it settle
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    if not obj.acquire(True, WAIT):
        raise RunFailed("never woken")
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    obj.release()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"cpu": cpu, "wall": wall}


def _sem_poster(ready: Ready, s: Sem, handle: Any, seconds: float) -> dict:
    obj = s.attach(handle)
    ready()
    time.sleep(seconds)  # the waiter stays blocked this long
    obj.release()
    return {}


def measure_sem_idle(ctx: Any, s: Sem, seconds: float, timeout: float) -> dict:
    """CPU time of a process blocked in acquire() for ``seconds``."""
    ch = s.open(ctx, tag())
    other = _sem_poster if s.pingpong else _lock_holder
    try:
        results = run(
            ctx,
            [(_sem_waiter, (s, ch.handle, not s.pingpong)), (other, (s, ch.handle, seconds))],
            timeout + seconds,
        )
    finally:
        s.close(ch)
    r = results[0]
    return {"cpu_ms_per_s": 1000 * r["cpu"] / r["wall"], "waited_s": r["wall"]}


# -- shared memory ---------------------------------------------------------------------------------


def _copier(ready: Ready, kind: str, name: str, size: int, reps: int) -> dict:
    src = bytearray(os.urandom(4096)) * (size // 4096)
    dst = bytearray(src)  # touched, like the mapping below: no page faults timed
    with contextlib.ExitStack() as stack:
        if kind == "ctipc.SharedMemory":
            import ctipc

            shm = stack.enter_context(ctipc.SharedMemory(name, create=False))
            buf = shm.buf[:size]
        elif kind == "mp.shared_memory":
            from multiprocessing import shared_memory

            mshm = shared_memory.SharedMemory(name)
            stack.callback(mshm.close)
            mapped = mshm.buf  # typed Optional: None only once closed
            assert mapped is not None
            buf = mapped[:size]
        else:
            buf = memoryview(bytearray(size))  # private memory: the limit
        stack.callback(buf.release)
        buf[:] = src  # touch every page before timing
        # memoryview to memoryview: one memcpy (a bytearray slice assignment
        # would go through a temporary copy)
        out = memoryview(dst)
        stack.callback(out.release)
        ready()
        t0 = time.perf_counter()
        for _ in range(reps):
            buf[:] = src
        t1 = time.perf_counter()
        for _ in range(reps):
            out[:] = buf
        t2 = time.perf_counter()
        if dst != src:
            raise DataError(f"{kind}: the bytes read back differ from the bytes written")
    gb = size * reps / 1e9
    return {"write_GB_s": gb / (t1 - t0), "read_GB_s": gb / (t2 - t1)}


SHM_KINDS = ("ctipc.SharedMemory", "mp.shared_memory", "bytearray")


def measure_shm_copy(ctx: Any, kind: str, size: int, reps: int, timeout: float) -> dict:
    """Copy ``size`` bytes into and out of a mapping another process created."""
    name = tag()
    with contextlib.ExitStack() as stack:
        if kind == "ctipc.SharedMemory":
            import ctipc

            seg = stack.enter_context(ctipc.SharedMemory(name, size, create=True))
            stack.callback(seg.unlink)
        elif kind == "mp.shared_memory":
            from multiprocessing import shared_memory

            mseg = shared_memory.SharedMemory(name, create=True, size=size)
            stack.callback(mseg.unlink)
            stack.callback(mseg.close)
        (r,) = run(ctx, [(_copier, (kind, name, size, reps))], timeout)
    return {"copy_GB_s": (r["write_GB_s"] + r["read_GB_s"]) / 2, **r}
