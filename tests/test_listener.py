"""Listener: ``MessageQueue.listen(callback)`` delivers every message to a thread.

In order and exactly once, including messages of another process; a failing
callback is logged and skipped; ``stop()`` and ``close()`` end it promptly
without losing or repeating a message.  ``ctipc.compat.mq_listen`` is tested
in test_compat.py.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from helpers import DEADLINE, Child, drain

import ctipc

MQ = ctipc.MessageQueue


def elapsed(start: float) -> float:
    return time.monotonic() - start


def test_listener_delivers_in_order_messages_of_another_process(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        for i in range(0, 1000, 10):
            q.put_many([b"%d" % j for j in range(i, i + 10)], timeout=15)
        out("done")
    """
    got: list[bytes] = []
    all_there = threading.Event()

    def callback(m: bytes) -> None:
        got.append(m)
        if len(got) == 1000:
            all_there.set()

    with MQ(name, capacity=8192, max_message=100) as q:
        listener = q.listen(callback)
        try:
            assert isinstance(listener, ctipc.Listener)
            assert listener.running
            with Child(code, name) as child:
                child.expect("done")
                child.finish()
            assert all_there.wait(DEADLINE)
            assert got == [b"%d" % i for i in range(1000)]
        finally:
            start = time.monotonic()
            assert listener.stop(timeout=DEADLINE)
            assert elapsed(start) < 2
        assert not listener.running
        assert listener.stop(timeout=1)  # idempotent


def test_listener_logs_a_failing_callback_and_goes_on(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []
    done = threading.Event()

    def callback(m: bytes) -> None:
        got.append(m)
        if m == b"end":
            done.set()
        if m.startswith(b"bad"):
            raise RuntimeError(f"callback refuses {m!r}")

    with caplog.at_level(logging.ERROR, logger="ctipc"):
        with MQ(name, capacity=8192, max_message=100) as q:
            with q.listen(callback) as listener:
                q.put_many([b"one", b"bad 1", b"two"])
                q.put(b"bad 2")
                q.put(b"end")
                assert done.wait(DEADLINE)
            assert not listener.running
    assert got == [b"one", b"bad 1", b"two", b"bad 2", b"end"]
    failures = [r for r in caplog.records if r.name == "ctipc" and r.levelno >= logging.ERROR]
    assert len(failures) == 2
    for record, text in zip(failures, ["bad 1", "bad 2"]):
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        assert text in str(record.exc_info[1])
        assert name in record.getMessage()


def test_listener_stop_is_prompt_and_leaves_messages_it_did_not_take(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        listener = q.listen(lambda m: None)
        assert listener.running
        start = time.monotonic()
        assert listener.stop(timeout=DEADLINE) is True
        assert elapsed(start) < 2
        assert not listener.running
        q.put(b"for someone else")
        assert q.get(timeout=DEADLINE) == b"for someone else"
        with pytest.raises(TypeError):
            q.listen("not callable")  # type: ignore[arg-type]


def test_listener_stopped_during_a_busy_callback_loses_and_repeats_nothing(name: str) -> None:
    """Messages the listener took are all delivered even after stop(); the
    others stay in the queue."""
    delivered: list[bytes] = []
    inside = threading.Event()
    release = threading.Event()

    def callback(m: bytes) -> None:
        delivered.append(m)
        inside.set()
        assert release.wait(DEADLINE)

    sent = [b"%d" % i for i in range(300)]
    with MQ(name, capacity=1 << 16, max_message=100) as q:
        listener = q.listen(callback)
        try:
            q.put_many(sent)
            assert inside.wait(DEADLINE)
            assert listener.stop(timeout=0.2) is False  # busy in the callback
            assert listener.running
        finally:
            release.set()
        assert listener.stop(timeout=DEADLINE) is True
        assert not listener.running
        left = drain(q)
    assert delivered + left == sent


def test_closing_the_queue_ends_its_listener(name: str) -> None:
    got: list[bytes] = []
    first = threading.Event()

    def callback(m: bytes) -> None:
        got.append(m)
        first.set()

    q = MQ(name, capacity=8192, max_message=100)
    try:
        listener = q.listen(callback)
        q.put(b"before close")
        assert first.wait(DEADLINE)
    finally:
        q.close()
    deadline = time.monotonic() + DEADLINE
    while listener.running and time.monotonic() < deadline:
        time.sleep(0.01)  # polls a condition, with a deadline
    assert not listener.running
    assert listener.stop(timeout=1)
    assert got == [b"before close"]
