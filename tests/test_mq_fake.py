"""MessageQueue against the in-memory fake backend (tests/fake_backend.py),
which checks the backend contract on every call (one wait slice at most,
handles used only while open, mutexes released by their holder), in both
lifetime modes, the Windows-like one included."""

from __future__ import annotations

import threading

import pytest
from fake_backend import FakeBackend
from test_fake_backend import B, crash, fake  # noqa: F401  (the fixture)

import ctipc


def test_queue_put_get_between_processes(fake: FakeBackend) -> None:  # noqa: F811
    q = ctipc.MessageQueue("q", capacity=4096, max_message=100)
    with fake.as_process(B):
        other = ctipc.MessageQueue("q", create=False)
    try:
        q.put_many([b"a", b"bb", b"c" * 100])
        with fake.as_process(B):
            assert other.get() == b"a"
            with other.receive() as m:
                assert bytes(m.data) == b"bb"
            assert other.get_many(10) == [b"c" * 100]
            with other.reserve(3) as r:
                r.data[:] = b"xyz"
        assert q.get(timeout=1) == b"xyz"
        with pytest.raises(ctipc.Empty):
            q.get(timeout=0.12)  # waits in slices on the fake's semaphore
        for i in range(100):  # wrap the ring many times
            q.put(bytes([i]) * (i % 97))
            with fake.as_process(B):
                assert other.get() == bytes([i]) * (i % 97)
    finally:
        with fake.as_process(B):
            other.close()
        q.close()
    assert fake.segment_list() == []


def test_queue_wakes_a_consumer_in_another_process(fake: FakeBackend) -> None:  # noqa: F811
    q = ctipc.MessageQueue("q", capacity=4096, max_message=100)
    got: list[bytes] = []

    def other() -> None:
        with fake.as_process(B):
            o = ctipc.MessageQueue("q", create=False)
            try:
                got.append(o.get(timeout=10))
            finally:
                o.close()

    t = threading.Thread(target=other)
    t.start()
    try:
        while not q._w[2]:  # CONSUMERS_WAITING: the other process sleeps
            t.join(0.01)
        q.put(b"wake")
        t.join(10)
        assert got == [b"wake"]
    finally:
        t.join(10)
        q.close()


def test_a_dead_consumer_inside_receive_leaves_the_message(fake: FakeBackend) -> None:  # noqa: F811
    q = ctipc.MessageQueue("q", capacity=4096, max_message=100)
    try:
        q.put(b"m")
        with fake.as_process(B):
            other = ctipc.MessageQueue("q", create=False)
            block = other.receive()
            block.__enter__()
            block._inside = False  # the process dies: no ctipc code runs
            block.data.release()
            other._txn_thread = None
            other._core.kind.release(other._core.resources)  # the OS closes its handles
            crash(fake, other, B)
        with q.receive(timeout=1) as m:
            assert bytes(m.data) == b"m"
            assert m.redelivered
    finally:
        q.close()
