"""MessageQueue under asyncio: ``aget``, ``aput`` and ``async for``.

The event loop must stay responsive while they wait (a ticker task keeps
ticking), and cancelling them must never lose or duplicate a message.  The
other side runs in a separate interpreter (``helpers.Child``); every wait has
a deadline.  Tests drive their own loop with ``asyncio.run``.

A coroutine that ends (cancelled, timed out) leaves its waiting thread to
finish its last wait slice.  Closing the queue during that slice is tested on
its own, in a child process (a crash there must not take pytest down); the
other tests let those threads end before they close the queue
(``aio_queue``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, Callable

import pytest
from helpers import DEADLINE, Child, drain

import ctipc

MQ = ctipc.MessageQueue


class Ticker:
    """A task that counts 10 ms ticks: it only ticks while the loop is free."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@contextmanager
def aio_queue(name: str, **kwargs: Any) -> Iterator[ctipc.MessageQueue]:
    """A queue that is closed only after the threads started meanwhile (the
    waiting threads of aget/aput) have ended."""
    before = set(threading.enumerate())
    q = MQ(name, **kwargs)
    try:
        yield q
    finally:
        deadline = time.monotonic() + DEADLINE
        for t in set(threading.enumerate()) - before:
            t.join(max(0.0, deadline - time.monotonic()))
        q.close()


#: a child that, once told (or after 5 s on its own, so that a test whose loop
#: is blocked fails instead of hanging), puts or gets ``sys.argv[3]`` messages
ACT_WHEN_TOLD = """
    import select
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    out("ready")
    select.select([sys.stdin], [], [], 5.0)
    if sys.argv[2] == "put":
        for i in range(int(sys.argv[3])):
            q.put(b"from the child %d" % i, timeout=15)
    else:
        for _ in range(int(sys.argv[3])):
            q.get(timeout=15)
    out("acted")
"""


def test_loop_stays_responsive_while_aget_waits(name: str) -> None:
    async def main(q: ctipc.MessageQueue, child: Child) -> None:
        ticker = Ticker()
        getter = asyncio.create_task(q.aget())
        await asyncio.sleep(0.3)
        assert not getter.done()
        assert ticker.ticks >= 5
        child.send()
        assert await asyncio.wait_for(getter, DEADLINE) == b"from the child 0"
        await ticker.stop()

    with aio_queue(name, capacity=8192, max_message=100) as q:
        with Child(ACT_WHEN_TOLD, name, "put", 1) as child:
            child.expect("ready")
            asyncio.run(main(q, child))
            child.expect("acted")
            child.finish()
        assert len(q) == 0


@pytest.mark.parametrize("waited", [False, True], ids=["at once", "while waiting"])
def test_cancelled_aget_loses_nothing(name: str, waited: bool) -> None:
    async def main(q: ctipc.MessageQueue) -> None:
        getter = asyncio.create_task(q.aget())
        if waited:
            await asyncio.sleep(0.1)  # let it reach its wait (either way must work)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter

    with aio_queue(name, capacity=8192, max_message=100) as q:
        asyncio.run(main(q))
        q.put(b"kept")
        assert q.get(timeout=DEADLINE) == b"kept"
        assert len(q) == 0


def test_aget_with_random_timeouts_gets_every_message_once(name: str) -> None:
    code = """
        import random
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        rng = random.Random(int(sys.argv[2]))
        out("ready")
        inp()
        for i in range(int(sys.argv[3])):
            time.sleep(rng.random() * 0.008)  # random arrival times, not synchronisation
            q.put(b"%d" % i, timeout=15)
        out("done")
    """
    count = 60
    rng = random.Random(11)
    got: list[bytes] = []

    async def main(q: ctipc.MessageQueue, child: Child) -> None:
        child.send()
        for _ in range(50):
            timeout = rng.choice([0.0, 0.001, rng.uniform(0.0, 0.02)])
            try:
                got.append(await asyncio.wait_for(q.aget(), timeout))
            except asyncio.TimeoutError:
                pass

    with aio_queue(name, capacity=8192, max_message=100) as q:
        with Child(code, name, 5, count) as child:
            child.expect("ready")
            asyncio.run(main(q, child))
            child.expect("done")
            child.finish()
        from_aget = len(got)
        got.extend(drain(q))
        assert sorted(got, key=int) == [b"%d" % i for i in range(count)], (
            f"{from_aget} by aget, the rest by get_nowait"
        )
        assert got == sorted(got, key=int)  # and in order


def test_aput_waits_for_room_without_blocking_the_loop(name: str) -> None:
    async def main(q: ctipc.MessageQueue, child: Child) -> None:
        ticker = Ticker()
        putter = asyncio.create_task(q.aput(b"L" * 1016))
        await asyncio.sleep(0.3)
        assert not putter.done()
        assert ticker.ticks >= 5
        child.send()  # the child gets one message: room for exactly one
        await asyncio.wait_for(putter, DEADLINE)
        await ticker.stop()

    with aio_queue(name, capacity=16 << 10, max_message=1016) as q:  # 16 records of 1 KiB
        put = [bytes([i]) * 1016 for i in range(16)]
        q.put_many(put)
        with pytest.raises(ctipc.Full):
            q.put_nowait(b"no room")
        with Child(ACT_WHEN_TOLD, name, "get", 1) as child:
            child.expect("ready")
            asyncio.run(main(q, child))
            child.expect("acted")
            child.finish()
        assert drain(q) == put[1:] + [b"L" * 1016]


def test_cancelled_aput_puts_nothing(name: str) -> None:
    async def main(q: ctipc.MessageQueue) -> None:
        putter = asyncio.create_task(q.aput(b"cancelled"))
        await asyncio.sleep(0.1)  # most likely waiting by now; correct either way
        assert not putter.done()
        putter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putter

    with aio_queue(name, capacity=16 << 10, max_message=1016) as q:
        put = [bytes([i]) * 1016 for i in range(16)]
        q.put_many(put)
        asyncio.run(main(q))
        assert drain(q) == put
        q.put(b"after")
        assert drain(q) == [b"after"]


def _racing(q: ctipc.MessageQueue, method: str, child: Child) -> Callable[..., bool]:
    """``q.<method>`` that lets the child act once, just before the first wait."""
    original = getattr(q, method)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            child.send()
            child.expect("acted")
        result: bool = original(*args, **kwargs)
        return result

    return wrapper


@pytest.mark.parametrize(
    "side",
    [
        pytest.param(("aput", "_wait_writable", "get"), id="aput, a consumer makes room"),
        pytest.param(("aget", "_wait_readable", "put"), id="aget, a producer puts"),
    ],
)
def test_room_or_message_that_comes_just_before_the_wait_is_seen(
    name: str, side: tuple[str, str, str]
) -> None:
    """The other process acts after the coroutine's non-blocking attempt
    failed but before its waiting thread started waiting (a window that real
    processes hit now and then; made certain here by acting from the first
    wait call).  No wake-up is posted then: nobody was registered as
    waiting.  The coroutine must still complete."""
    coro, method, act = side

    async def main(q: ctipc.MessageQueue) -> None:
        call: Awaitable[Any] = q.aput(b"N" * 1016) if coro == "aput" else q.aget()
        try:
            await asyncio.wait_for(call, 5)
        except asyncio.TimeoutError:
            pytest.fail(f"{coro} missed the {act} of the other process")

    with aio_queue(name, capacity=16 << 10, max_message=1016) as q:
        if coro == "aput":
            q.put_many([bytes([i]) * 1016 for i in range(16)])  # full
        with Child(ACT_WHEN_TOLD, name, act, 1) as child:
            child.expect("ready")
            setattr(q, method, _racing(q, method, child))
            asyncio.run(main(q))
            child.finish()
        if coro == "aput":
            assert drain(q) == [bytes([i]) * 1016 for i in range(1, 16)] + [b"N" * 1016]
        else:
            assert len(q) == 0


def test_async_for_yields_messages_and_ends_when_the_queue_is_closed(name: str) -> None:
    got: list[bytes] = []

    async def main(q: ctipc.MessageQueue, child: Child) -> None:
        async def consume() -> None:
            async for m in q:
                got.append(m)
                if len(got) == 3:
                    q.close()

        ticker = Ticker()
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        child.send()
        await asyncio.wait_for(consumer, DEADLINE)
        assert ticker.ticks >= 3
        await ticker.stop()

    q = MQ(name, capacity=8192, max_message=100)
    try:
        with Child(ACT_WHEN_TOLD, name, "put", 3) as child:
            child.expect("ready")
            asyncio.run(main(q, child))
            child.expect("acted")
            child.finish()
    finally:
        q.close()
    assert got == [b"from the child %d" % i for i in range(3)]


CLOSE_WHILE_WAITING = """
    import asyncio
    what = sys.argv[2]

    async def consume(q, got):
        async for m in q:
            got.append(m)

    async def round_(i):
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        got = []
        if what == "async for":
            task = asyncio.create_task(consume(q, got))
        elif what in ("aget", "cancelled aget"):
            task = asyncio.create_task(q.aget())
        else:
            task = asyncio.create_task(q.aput(bytes(100)))  # the queue is full
        # Most likely waiting by now (correct either way); each round closes
        # at another point of the waiting thread's 50 ms slices.
        await asyncio.sleep(0.1 + 0.013 * i)
        if what == "cancelled aget":
            task.cancel()
        start = time.monotonic()
        q.close()
        try:
            await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            out("cancelled")
        except ValueError:
            out("ValueError")
        else:
            out("ended", got)
        out("in time" if time.monotonic() - start < 5 else "late")
        await asyncio.sleep(0.1)  # the waiting thread's last slice ends meanwhile

    for i in range(int(sys.argv[3])):
        asyncio.run(round_(i))
        inp()
    out("exit")
"""


@pytest.mark.parametrize(
    "what, outcome",
    [
        ("async for", "ended [b'first']"),
        ("aget", "ValueError"),
        ("aput", "ValueError"),
        ("cancelled aget", "cancelled"),
    ],
)
def test_closing_the_queue_while_a_coroutine_waits(name: str, what: str, outcome: str) -> None:
    """``async for`` ends, a waiting aget/aput raises ValueError, and the
    process neither crashes nor hangs (run in a child: a crash is its exit
    code, with a traceback from faulthandler)."""
    rounds = 4
    with MQ(name, capacity=8192, max_message=100) as q:
        if what == "aput":
            while True:
                try:
                    q.put_nowait(bytes(100))
                except ctipc.Full:
                    break
        if what == "async for":
            q.put(b"first")
        with Child(CLOSE_WHILE_WAITING, name, what, rounds, PYTHONFAULTHANDLER="1") as child:
            for _ in range(rounds):
                child.expect(outcome)
                child.expect("in time")
                if what == "async for":
                    q.put(b"first")  # for the next round
                child.send()
            child.expect("exit")
            child.finish()


def test_aget_and_aput_on_a_closed_queue_raise_value_error(name: str) -> None:
    q = MQ(name, capacity=8192, max_message=100)
    q.close()

    async def main() -> None:
        with pytest.raises(ValueError):
            await asyncio.wait_for(q.aget(), DEADLINE)
        with pytest.raises(ValueError):
            await asyncio.wait_for(q.aput(b"x"), DEADLINE)

    asyncio.run(main())


def test_aput_refuses_bad_messages_before_waiting(name: str) -> None:
    async def main(q: ctipc.MessageQueue) -> None:
        with pytest.raises(TypeError):
            await asyncio.wait_for(q.aput("text"), DEADLINE)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await asyncio.wait_for(q.aput(bytes(101)), DEADLINE)  # even on a full queue

    with aio_queue(name, capacity=8192, max_message=100) as q:
        while True:
            try:
                q.put_nowait(bytes(100))
            except ctipc.Full:
                break
        n = len(q)
        asyncio.run(main(q))
        assert len(q) == n
