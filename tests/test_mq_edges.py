"""MessageQueue edge cases: positions next to the ring's end, put_many of a
refilled buffer, a Listener whose callback raises SystemExit, listen() on a
closed queue, close() from the event loop while an aget waits."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from typing import Callable

import pytest
from helpers import Child, drain, header_path

import ctipc
from ctipc._ring import CONSUMERS_WAITING, CONTROL, HEAD, PRODUCERS_WAITING, TAIL

MQ = ctipc.MessageQueue

PROBE = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    for call in ("get_nowait", "put_nowait"):
        try:
            getattr(q, call)(*((b"x",) if call.startswith("put") else ()))
            out(call, "ok")
        except Exception as e:
            out(call, type(e).__name__)
    q.close()
"""


def _poke(name: str, words: dict[int, int]) -> None:
    with open(header_path(MQ, name), "r+b") as f:
        for index, value in words.items():
            f.seek(CONTROL + 8 * index)
            f.write(struct.pack("=Q", value))


@pytest.mark.parametrize(
    "where", ["head 4 bytes before the end", "tail 4 bytes before the end", "both"]
)
def test_positions_just_before_the_end_of_the_ring_are_corrupt(name: str, where: str) -> None:
    """Not a multiple of 8: a record header read there would cross the end
    of the mapping (struct.error before); CorruptedError for get and put."""
    with MQ(name, capacity=1 << 12, max_message=100) as q:
        ring = q.capacity
        q.put(b"abc")
        head, tail = {
            "head 4 bytes before the end": (ring - 4, ring + 12),
            "tail 4 bytes before the end": (8, ring - 4),
            "both": (ring - 4, ring - 4),
        }[where]
        _poke(name, {HEAD: head, TAIL: tail})
        with Child(PROBE, name) as child:
            got = child.readline(), child.readline()
            child.finish()
        assert got[0] == "get_nowait CorruptedError"
        assert got[1] in ("put_nowait CorruptedError", "put_nowait Full")
        if where != "head 4 bytes before the end":
            assert got[1] == "put_nowait CorruptedError"


def test_put_many_takes_each_message_as_it_was_when_yielded(name: str) -> None:
    buffer = bytearray(1)

    def refill():  # type: ignore[no-untyped-def]
        for letter in b"ABC":
            buffer[0] = letter
            yield buffer

    with MQ(name, capacity=1 << 12, max_message=100) as q:
        q.put_many(refill())
        q.put_many(memoryview(buffer) for _ in range(1))
        assert drain(q) == [b"A", b"B", b"C", b"C"]


def test_listen_on_a_closed_queue_raises_value_error(name: str) -> None:
    q = MQ(name, capacity=1 << 12, max_message=100)
    q.close()
    with pytest.raises(ValueError):
        q.listen(lambda m: None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_listener_whose_callback_raises_system_exit_takes_nothing_more(name: str) -> None:
    delivered: list[bytes] = []
    ended = threading.Event()

    def callback(message: bytes) -> None:
        delivered.append(message)
        ended.set()
        raise SystemExit

    with MQ(name, capacity=1 << 12, max_message=16) as q:
        q.put_many([b"%d" % i for i in range(50)])
        listener = q.listen(callback)
        assert ended.wait(10)
        listener.stop(10)
        assert not listener.running
        assert delivered == [b"0"]
        with MQ(name) as other:  # another handle sees the rest in the queue
            assert len(other) == 49
            assert drain(other) == [b"%d" % i for i in range(1, 50)]


def test_close_from_the_event_loop_while_an_aget_waits_is_prompt(name: str) -> None:
    """Before: close() waited the full mutex patience (1.0 s), the loop
    frozen meanwhile.  The pending aget ends with ValueError; a second task
    keeps ticking around the close."""

    async def main(q: ctipc.MessageQueue) -> tuple[float, float, BaseException | None]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        tick_task = asyncio.ensure_future(ticker())
        waiter = asyncio.ensure_future(q.aget())
        await asyncio.sleep(0.3)  # the aget is waiting in its thread
        assert not waiter.done()
        start = time.monotonic()
        q.close()
        took = time.monotonic() - start
        error: BaseException | None = None
        try:
            await asyncio.wait_for(waiter, 5)
        except BaseException as e:  # the documented error
            error = e
        await asyncio.sleep(0.05)
        tick_task.cancel()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        return took, max(gaps), error

    q = MQ(name, capacity=1 << 12, max_message=100)
    try:
        took, worst_gap, error = asyncio.run(main(q))
    finally:
        q.close()
    assert took < 0.5, f"close() took {took:.3f} s"
    assert worst_gap < 0.5, f"the loop stood still for {worst_gap:.3f} s"
    assert isinstance(error, ValueError)


SLEEP_IN = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    out("ready")
    if sys.argv[2] == "get":
        q.get()
    else:
        q.put(b"x" * 100)
"""


def _until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("side", ["get", "put"])
def test_wake_up_registrations_of_killed_processes_are_reaped(name: str, side: str) -> None:
    """A process killed while it slept in get (put) stays counted as a
    sleeper: every later put (get) would post a semaphore nobody waits on.
    The next process that registers removes the dead one's count."""
    index = CONSUMERS_WAITING if side == "get" else PRODUCERS_WAITING
    with MQ(name, capacity=256, max_message=100) as q:
        if side == "put":
            q.put_many([b"f" * 100] * 2)  # full
        children = [Child(SLEEP_IN, name, side) for _ in range(3)]
        try:
            for child in children:
                child.expect("ready")
            assert _until(lambda: q._w[index] == 3)
            for child in children:
                child.kill()
                child.wait()
        finally:
            for child in children:
                child.close()
        assert q._w[index] == 3  # what they left behind
        with pytest.raises(ctipc.Empty if side == "get" else ctipc.Full):
            if side == "get":
                q.get(timeout=0.1)
            else:
                q.put(b"y" * 100, timeout=0.1)
        assert q._w[index] == 0
