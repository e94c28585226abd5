"""MessageQueue.receive and MessageQueue.reserve: messages read and written
in place, removed or published only when the ``with`` block ends normally.

Crash tests kill a separate interpreter inside a block and check what the
survivors see: a receive that did not end leaves its message first in the
queue, flagged ``redelivered``; a reserve that did not end publishes nothing.
"""

from __future__ import annotations

import random
import threading

import pytest
from _mp_workers import mq_message, mq_parse
from helpers import DEADLINE, HAVE_SIGKILL, MQ_IMPORT, Child, run_threads

import ctipc

MQ = ctipc.MessageQueue
needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")


def test_reserve_writes_in_place_and_receive_reads_in_place(name: str) -> None:
    with MQ(name, capacity=4096, max_message=1000) as q:
        with q.reserve(5) as slot:
            assert isinstance(slot.data, memoryview) and not slot.data.readonly
            assert slot.data.nbytes == 5
            slot.data[:] = b"hello"
        q.put(b"world")
        with q.receive() as msg:
            assert msg.data.readonly
            assert bytes(msg.data) == b"hello" and not msg.redelivered
        assert q.get(timeout=DEADLINE) == b"world"
        with q.reserve(0) as slot:
            assert slot.data.nbytes == 0
        with q.receive() as msg:
            assert bytes(msg.data) == b""
        assert len(q) == 0


@pytest.mark.parametrize("capacity", [4096, 4104, 5000])
def test_blocks_and_plain_calls_interleave_in_order_across_the_wrap(
    name: str, capacity: int
) -> None:
    """Sizes that end records at every offset of the ring, so that records
    wrap (a wrap marker, then the record at the start) through both paths."""
    rng = random.Random(capacity)
    with MQ(name, capacity=capacity, max_message=1000) as q:
        for i in range(600):
            payload = bytes([i % 251]) * rng.randrange(0, 1001)
            if i % 2:
                with q.reserve(len(payload), timeout=DEADLINE) as slot:
                    slot.data[:] = payload
            else:
                q.put(payload, timeout=DEADLINE)
            if i % 3:
                with q.receive(timeout=DEADLINE) as msg:
                    assert bytes(msg.data) == payload
            else:
                assert q.get(timeout=DEADLINE) == payload
        assert len(q) == 0


def test_an_exception_in_receive_leaves_the_message_first_and_flags_it(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many([b"one", b"two"])
        with pytest.raises(KeyError):
            with q.receive() as msg:
                assert bytes(msg.data) == b"one"
                raise KeyError
        with q.receive() as msg:
            assert bytes(msg.data) == b"one" and msg.redelivered
        with q.receive() as msg:
            assert bytes(msg.data) == b"two" and not msg.redelivered
        assert msg.redelivered is False  # still readable after the block


def test_a_plain_get_takes_a_message_a_receive_gave_up_and_clears_the_flag(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many([b"one", b"two"])
        with pytest.raises(KeyError), q.receive():
            raise KeyError
        assert q.get_nowait() == b"one"
        with q.receive(block=False) as msg:
            assert bytes(msg.data) == b"two" and not msg.redelivered


def test_an_exception_in_reserve_publishes_nothing(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        with pytest.raises(KeyError), q.reserve(3) as slot:
            slot.data[:] = b"abc"
            raise KeyError
        assert len(q) == 0
        with pytest.raises(ctipc.Empty):
            q.get_nowait()
        q.put(b"next")
        assert q.get_nowait() == b"next"


def test_views_are_unusable_after_the_block(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        with q.reserve(2) as slot:
            slot.data[:] = b"ab"
        with pytest.raises(ValueError):
            slot.data[0]  # type: ignore[index]
        with q.receive() as msg:
            kept = msg.data
        with pytest.raises(ValueError):
            bytes(kept)  # type: ignore[arg-type]


def test_a_view_the_caller_keeps_does_not_break_close(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put(b"abcdef")
        with q.receive() as msg:
            part = msg.data[1:3]  # a slice outlives the block's own view
            assert bytes(part) == b"bc"
    assert q.closed
    del part


def test_bad_arguments_raise_before_anything_happens(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put(b"kept")
        for bad, error in ((-1, ValueError), (101, ValueError), (1.5, TypeError),
                           (True, TypeError), ("3", TypeError)):  # fmt: skip
            with pytest.raises(error):
                q.reserve(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            q.receive(timeout=-1)
        with pytest.raises(TypeError):
            q.reserve(1, timeout="soon")  # type: ignore[arg-type]
        assert len(q) == 1 and q.get_nowait() == b"kept"


def test_empty_and_full_like_get_and_put(name: str) -> None:
    with MQ(name, capacity=4096, max_message=1000) as q:
        with pytest.raises(ctipc.Empty), q.receive(timeout=0.05):
            pass
        with pytest.raises(ctipc.Empty), q.receive(block=False):
            pass
        while True:
            try:
                q.put_nowait(bytes(1000))
            except ctipc.Full:
                break
        with pytest.raises(ctipc.Full), q.reserve(1000, timeout=0.05):
            pass
        with pytest.raises(ctipc.Full), q.reserve(1000, block=False):
            pass
        q.get_nowait()  # room again
        with q.reserve(1000, block=False) as slot:
            slot.data[:] = bytes(range(250)) * 4


def test_calls_on_the_same_handle_inside_a_block_raise(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put(b"x")
        with q.receive() as msg:
            for call in (lambda: q.put(b"y"), q.get_nowait, lambda: q.reserve(1).__enter__()):
                with pytest.raises(RuntimeError):
                    call()
            assert bytes(msg.data) == b"x"
        with q.reserve(1) as slot:
            with pytest.raises(RuntimeError), q.receive():
                pass
            slot.data[:] = b"z"
        assert q.get_nowait() == b"z"
        block = q.receive(block=False)
        with pytest.raises(ctipc.Empty), block:
            pass
        q.put(b"again")
        with pytest.raises(RuntimeError):  # a block object is used once
            with block:
                pass
        assert q.get_nowait() == b"again"


def test_threads_receiving_from_one_handle_each_get_distinct_messages(name: str) -> None:
    with MQ(name, capacity=1 << 16, max_message=100) as q:
        q.put_many([i.to_bytes(4, "little") for i in range(400)])
        seen: list[int] = []
        lock = threading.Lock()

        def consume(_: int) -> None:
            for _ in range(100):
                with q.receive(timeout=DEADLINE) as msg:
                    value = int.from_bytes(msg.data, "little")
                with lock:
                    seen.append(value)

        run_threads(consume, 4)
        assert sorted(seen) == list(range(400))


def test_a_receive_in_another_process_wakes_on_put(name: str) -> None:
    code = MQ_IMPORT + (
        "q = ctipc.MessageQueue(sys.argv[1], create=False)\n"
        "out('ready')\n"
        "with q.receive(timeout=15) as m:\n"
        "    out(bytes(m.data).decode())\n"
    )
    with MQ(name, capacity=4096, max_message=100) as q, Child(code, name) as child:
        child.expect("ready")
        with q.reserve(5) as slot:
            slot.data[:] = b"hello"
        child.expect("hello")
        child.finish()
        assert len(q) == 0


_RECEIVE_AND_HANG = (
    MQ_IMPORT
    + """
q = ctipc.MessageQueue(sys.argv[1], create=False)
with q.receive(timeout=15) as m:
    out("holding " + str(w.mq_parse(bytes(m.data))[1]))
    sys.stdin.readline()  # killed here
"""
)

_RESERVE_AND_HANG = (
    MQ_IMPORT
    + """
q = ctipc.MessageQueue(sys.argv[1], create=False)
with q.reserve(64, timeout=15) as slot:
    slot.data[:] = b"p" * 64
    out("holding")
    sys.stdin.readline()  # killed here
"""
)


@needs_sigkill
@pytest.mark.parametrize("round_", range(2))
def test_consumer_killed_inside_receive_leaves_the_message_flagged(name: str, round_: int) -> None:
    rng = random.Random(round_)
    with MQ(name, capacity=1 << 16, max_message=1000) as q:
        q.put_many([mq_message(0, i, q.max_message, rng) for i in range(5)])
        with Child(_RECEIVE_AND_HANG, name) as child:
            child.expect("holding 0")
            child.kill()
        got = []
        for _ in range(5):
            with q.receive(timeout=DEADLINE) as msg:  # the dead holder's mutex is taken over
                got.append((mq_parse(bytes(msg.data)), msg.redelivered))
        assert got == [((0, 0), True)] + [((0, i), False) for i in range(1, 5)]


@needs_sigkill
def test_producer_killed_inside_reserve_publishes_nothing(name: str) -> None:
    with MQ(name, capacity=1 << 16, max_message=1000) as q:
        q.put(b"before")
        with Child(_RESERVE_AND_HANG, name) as child:
            child.expect("holding")
            child.kill()
        q.put(b"after", timeout=DEADLINE)  # the dead producer's mutex is taken over
        assert q.get_many(10, timeout=DEADLINE) == [b"before", b"after"]


@pytest.mark.parametrize("kind", ["receive", "reserve"])
def test_closing_inside_the_block_commits_nothing_and_says_so(name: str, kind: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as keeper:  # keeps the queue alive
        keeper.put(b"first")
        q = MQ(name, create=False)
        block = q.receive() if kind == "receive" else q.reserve(3)
        with pytest.raises(ValueError, match="closed inside the block"):
            with block:
                q.close()  # no wait for this thread's own block
        assert q.closed
        assert keeper.get_many(10, timeout=DEADLINE) == [b"first"]  # nothing taken or added
        keeper.put(b"next")  # the mutex was released
        assert keeper.get_nowait() == b"next"
