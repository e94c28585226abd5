"""MessageQueue: the API, exactly-once delivery between real processes,
batches, timeouts, bad input, lifetime and threads.  The Listener has
test_listener.py; a corrupted queue, test_corrupt.py.

Cross-process tests run their other side in separate interpreters
(``helpers.Child``) that know nothing of the test process but the queue's
name; producers and consumers there use the workers of ``_mp_workers``
(each message carries its producer, sequence number and a CRC-32 of its
payload).  Every wait has a deadline; nothing is ordered by sleeping.
The asyncio adapters are tested in test_mq_aio.py.
"""

from __future__ import annotations

import array
import json
import os
import queue
import random
import signal
import stat
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _mp_workers import mq_message, mq_parse
from helpers import (
    DEADLINE,
    DEV_SHM,
    HAVE_DEV_SHM,
    HAVE_SIGKILL,
    MQ_IMPORT,
    Child,
    drain,
    exists,
    run_threads,
)

import ctipc
from ctipc import _names

MQ = ctipc.MessageQueue
needs_dev_shm = pytest.mark.skipif(not HAVE_DEV_SHM, reason="objects are not files in /dev/shm")
needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")
needs_persistent = pytest.mark.skipif(
    not ctipc.PERSISTENT_SUPPORTED, reason="persistent objects are not supported here"
)

#: the stress tests' queue: messages up to 8 KiB in a 256 KiB ring
CAPACITY, MAX_MESSAGE = 256 << 10, 8 << 10
PRODUCERS, PER_PRODUCER = 4, 3000


def mq_child(code: str, *args: object) -> Child:
    """A Child that has the MessageQueue workers imported as ``w`` (and json, random)."""
    return Child(MQ_IMPORT + "import json, random\n" + textwrap.dedent(code), *args)


def q_entries(name: str) -> list[str]:
    """The /dev/shm entries of queue ``name`` (segment, semaphores, any lock files)."""
    digest = _names.os_name("q", "h", name).rsplit("-", 1)[1]
    return sorted(e for e in os.listdir(DEV_SHM) if digest in e)


def assert_queue_gone(name: str) -> None:
    if HAVE_DEV_SHM:
        assert q_entries(name) == []
    with pytest.raises(FileNotFoundError):
        MQ(name, create=False)


def fill(q: ctipc.MessageQueue, size: int) -> list[bytes]:
    """Put distinct ``size``-byte messages until the queue is full; return them."""
    put = []
    while True:
        m = len(put).to_bytes(4, "little") * (size // 4) + bytes(size % 4)
        try:
            q.put_nowait(m)
        except ctipc.Full:
            return put
        put.append(m)


def check_per_producer_order(got: list[tuple[int, int]]) -> None:
    """Within one consumer's stream, each producer's sequence numbers rise."""
    last: dict[int, int] = {}
    for producer, seq in got:
        assert seq > last.get(producer, -1), f"producer {producer}: {seq} after {last[producer]}"
        last[producer] = seq


def elapsed(start: float) -> float:
    return time.monotonic() - start


# -- API -----------------------------------------------------------------------------


def test_put_get_len_properties_and_close(name: str) -> None:
    q = MQ(name, capacity=64 << 10, max_message=1024)
    with q:
        assert (q.name, q.capacity, q.max_message, len(q)) == (name, 64 << 10, 1024, 0)
        q.put(b"one")
        q.put_nowait(b"two")
        q.put(b"three", block=False)
        q.put(b"four", timeout=1)
        assert len(q) == 4
        got = [q.get(), q.get_nowait(), q.get(block=False), q.get(timeout=1)]
        assert got == [b"one", b"two", b"three", b"four"]
        assert all(type(m) is bytes for m in got)
        assert len(q) == 0
    assert q.closed  # ``with`` closes
    for call in (q.get_nowait, lambda: q.put_nowait(b"x"), lambda: len(q), q.get_many):
        with pytest.raises(ValueError):
            call()
    q.close()  # idempotent
    q.unlink()
    assert_queue_gone(name)


def test_defaults_apply_when_creating(name: str) -> None:
    with MQ(name) as q:
        assert (q.capacity, q.max_message) == (1 << 20, 64 << 10)
        q.put(bytes(64 << 10))
        assert q.get(timeout=DEADLINE) == bytes(64 << 10)


def test_unlink_removes_the_name_but_not_the_open_queue(name: str) -> None:
    q = MQ(name, capacity=8192, max_message=100)
    try:
        q.put(b"kept")
        q.unlink()
        q.unlink()  # idempotent
        if HAVE_DEV_SHM:
            assert q_entries(name) == []
        with pytest.raises(FileNotFoundError):
            MQ(name, create=False)
        assert q.get(timeout=DEADLINE) == b"kept"  # this handle goes on working
        with MQ(name, capacity=4096, max_message=100) as fresh:  # a new queue by that name
            assert (fresh.capacity, len(fresh)) == (4096, 0)
    finally:
        q.close()
    assert_queue_gone(name)


def test_empty_and_bytes_like_messages(name: str) -> None:
    with MQ(name, capacity=64 << 10, max_message=1024) as q:
        words = array.array("I", [1, 2, 0xDEADBEEF])
        grid = memoryview(bytes(range(12))).cast("B", (3, 4))
        sent: list[Any] = [
            b"",
            bytearray(b"bytearray"),
            memoryview(b"memoryview"),
            memoryview(b"--slice--")[2:-2],
            memoryview(words),
            grid,
            words,
            bytes(1024),  # exactly max_message
            b"",
        ]
        q.put_many(sent)
        q.put(b"")
        assert len(q) == len(sent) + 1
        got = q.get_many(100, timeout=DEADLINE)
        expected = [bytes(memoryview(m).cast("B")) for m in sent] + [b""]
        assert got == expected
        assert got[4] == words.tobytes()
        assert all(type(m) is bytes for m in got)


def test_non_contiguous_buffer_is_sent_as_bytes_or_refused_before_writing(name: str) -> None:
    """A strided memoryview: either its bytes are sent, or a TypeError/
    ValueError (a bad argument) comes before anything is written."""
    strided = memoryview(b"abcdef")[::2]
    with MQ(name, capacity=8192, max_message=100) as q:
        for call in (lambda: q.put(strided), lambda: q.put_many([b"first", strided])):
            try:
                call()
            except (TypeError, ValueError):
                assert len(q) == 0
            else:
                assert b"ace" in drain(q)
        q.put(b"still works")
        assert drain(q) == [b"still works"]


@pytest.mark.parametrize("capacity", [2016, 4100, 10007, 1 << 16])
def test_ring_wraps_around_correctly_with_any_capacity(name: str, capacity: int) -> None:
    """Random sizes and batches against a model (a list): the ring wraps
    many times, at every kind of position, and ``len`` follows."""
    rng = random.Random(capacity)
    model: list[bytes] = []
    seq = 0
    with MQ(name, capacity=capacity, max_message=1000) as q:
        for _ in range(3000):
            if rng.random() < 0.5:
                batch = []
                for _ in range(rng.choice([1, 1, 2, 5])):
                    n = rng.choice([0, 1, 7, 8, 9, 1000, rng.randrange(1001)])
                    batch.append(seq.to_bytes(4, "little") * (n // 4) + b"\xee" * (n % 4))
                    seq += 1
                try:
                    if len(batch) == 1:
                        q.put_nowait(batch[0])
                    else:
                        q.put_many(batch, block=False)
                    model.extend(batch)
                except ctipc.Full:
                    model.extend(batch[: len(q) - len(model)])  # the prefix that fit
            else:
                try:
                    got = q.get_many(rng.choice([1, 1, 3, 50]), block=False)
                except ctipc.Empty:
                    got = []
                    assert model == []
                assert got == model[: len(got)]
                del model[: len(got)]
            assert len(q) == len(model)
        assert drain(q) == model


# -- bad input ---------------------------------------------------------------------


def test_too_large_message_is_refused_and_nothing_is_written(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        q.put(b"before")
        for call in (
            lambda: q.put(bytes(101)),
            lambda: q.put_nowait(bytearray(101)),
            lambda: q.put(memoryview(array.array("I", range(26)))),  # 104 bytes
            lambda: q.put_many([b"ok", b"fine", bytes(101)]),
            lambda: q.put_many([bytes(101), b"ok"]),
        ):
            with pytest.raises(ValueError):
                call()
            assert len(q) == 1
        q.put(bytes(100))
        assert drain(q) == [b"before", bytes(100)]


@pytest.mark.parametrize(
    "bad", ["text", "", 5, None, 1.5, [b"a"], object()], ids=lambda v: type(v).__name__
)
def test_message_that_is_not_bytes_like_is_a_type_error(name: str, bad: object) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        with pytest.raises(TypeError):
            q.put(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.put_nowait(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.put_many([b"good", b"also good", bad])  # type: ignore[list-item]
        assert len(q) == 0
        with pytest.raises(ctipc.Empty):
            q.get_nowait()


def test_put_many_of_a_non_iterable_or_of_text_is_a_type_error(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        for bad in (None, 5, "text", b"bytes iterate as ints"):
            with pytest.raises(TypeError):
                q.put_many(bad)  # type: ignore[arg-type]
        assert len(q) == 0
        q.put_many([])  # nothing to do
        q.put_many(iter([b"a", b"b"]))
        assert drain(q) == [b"a", b"b"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"capacity": 0}, ValueError),
        ({"capacity": -4096}, ValueError),
        ({"max_message": 0}, ValueError),
        ({"max_message": -1}, ValueError),
        ({"capacity": True}, TypeError),
        ({"max_message": False}, TypeError),
        ({"max_message": True}, TypeError),
        ({"capacity": 65536.0}, TypeError),
        ({"max_message": "1024"}, TypeError),
        ({"max_message": 0xFFFFFFFF, "capacity": 1 << 40}, ValueError),  # creates nothing
        ({"create": "yes"}, TypeError),
        ({"permissions": True}, TypeError),
        ({"permissions": 0o1000}, ValueError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_constructor_arguments(name: str, kwargs: dict[str, Any], error: type) -> None:
    for create in (None, True):
        with pytest.raises(error):
            MQ(name, **{"create": create, **kwargs})
    assert_queue_gone(name)
    # also when a queue by that name exists: the arguments are wrong either way
    with MQ(name, capacity=8192, max_message=100):
        with pytest.raises(error):
            MQ(name, **kwargs)


def test_max_message_must_fit_twice_in_capacity(name: str) -> None:
    # a record is 8 bytes + the message rounded up to 8: 1000 -> 1008
    for capacity, max_message in [(4096, 4096), (2015, 1000), (1000, None), (None, 1 << 20)]:
        kwargs = {"capacity": capacity, "max_message": max_message}
        for create in (None, True):
            with pytest.raises(ValueError):
                MQ(name, create=create, **kwargs)
            assert_queue_gone(name)
    with MQ(name, capacity=2016, max_message=1000) as q:  # just fits
        q.put_many([bytes(1000), b"x" * 1000])
        assert q.get_many(2, timeout=DEADLINE) == [bytes(1000), b"x" * 1000]
    assert_queue_gone(name)


def test_attaching_gets_the_creators_sizes_and_refuses_contradicting_ones(name: str) -> None:
    with MQ(name, capacity=1 << 22, max_message=1 << 20) as q:
        for kwargs in (
            {},
            {"create": False},
            {"capacity": 1 << 22},
            {"max_message": 1 << 20},  # would not fit in the default capacity
            {"capacity": 1 << 22, "max_message": 1 << 20, "create": False},
        ):
            with MQ(name, **kwargs) as again:
                assert (again.capacity, again.max_message) == (1 << 22, 1 << 20)
        for kwargs in (
            {"capacity": 1 << 21},
            {"max_message": 1 << 19},
            {"capacity": 1 << 23, "max_message": 1 << 20},
            {"capacity": 1 << 22, "max_message": 1000, "create": False},
        ):
            with pytest.raises(ctipc.IncompatibleError) as info:
                MQ(name, **kwargs)
            assert info.value.name == name
        q.put(b"unharmed")
        assert q.get(timeout=DEADLINE) == b"unharmed"


def test_another_process_attaches_with_the_creators_sizes(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out(q.capacity, q.max_message, len(q))
        for kwargs in ({"capacity": 4096}, {"max_message": 500}):
            try:
                ctipc.MessageQueue(sys.argv[1], **kwargs)
            except ctipc.IncompatibleError:
                out("IncompatibleError")
        out(q.get(timeout=15).decode())
        q.put(b"reply")
    """
    with MQ(name, capacity=12345, max_message=999) as q, Child(code, name) as child:
        q.put(b"hello")
        assert child.readline() == "12345 999 1"
        child.expect("IncompatibleError")
        child.expect("IncompatibleError")
        child.expect("hello")
        child.finish()
        assert q.get(timeout=DEADLINE) == b"reply"


def test_create_flags(name: str) -> None:
    with pytest.raises(FileNotFoundError):
        MQ(name, create=False)
    assert_queue_gone(name)
    with MQ(name, create=True, capacity=8192, max_message=100) as q:
        with pytest.raises(FileExistsError):
            MQ(name, create=True)
        with pytest.raises(FileExistsError):
            MQ(name, create=True, capacity=8192, max_message=100)
        with MQ(name, create=False) as again:
            again.put(b"x")
        assert q.get(timeout=DEADLINE) == b"x"
    assert_queue_gone(name)


def test_bad_call_arguments(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        for bad, error in ((0, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)):
            with pytest.raises(error):
                q.get_many(bad)  # type: ignore[arg-type]
        for bad, error in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
            with pytest.raises(error):
                q.get(timeout=bad)  # type: ignore[arg-type]
            with pytest.raises(error):
                q.put(b"x", timeout=bad)  # type: ignore[arg-type]
        assert len(q) == 0
        # Refused, with nothing taken, when the call could be made at once
        # too (put and get make that call without the general entry).
        q.put(b"kept")
        for bad, error in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError),
                           (True, TypeError)):  # fmt: skip
            with pytest.raises(error):
                q.get(timeout=bad)  # type: ignore[arg-type]
            with pytest.raises(error):
                q.put(b"x", timeout=bad)  # type: ignore[arg-type]
        assert len(q) == 1
        assert q.get_nowait() == b"kept"


@needs_dev_shm
def test_permissions_apply_to_every_file_of_the_queue(name: str) -> None:
    code = """
        os.umask(0o077)
        q = ctipc.MessageQueue(sys.argv[1], create=True, capacity=8192, max_message=100,
                               permissions=int(sys.argv[2], 8))
        out("created")
        inp()
    """
    for permissions in (0o640, 0o600):
        with Child(code, name, oct(permissions)[2:]) as child:
            child.expect("created")
            entries = q_entries(name)
            assert len(entries) >= 3  # the segment and two semaphores
            modes = {e: stat.S_IMODE(os.stat(os.path.join(DEV_SHM, e)).st_mode) for e in entries}
            assert modes == dict.fromkeys(entries, permissions)
            child.send()
            child.finish()
        assert_queue_gone(name)


# -- exactly once, in order per producer, between processes ---------------------------

PRODUCE = """
    out("ready")
    inp()
    w.mq_produce(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                 sys.argv[5] == "batches")
    out("done")
"""

CONSUME = """
    out("ready")
    got = w.mq_consume(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "batches")
    out(json.dumps(got))
"""


@contextmanager
def producers(name: str, seed: int) -> Iterator[list[Child]]:
    """PRODUCERS children putting PER_PRODUCER messages each once told to:
    even ones one by one, odd ones with put_many."""
    children: list[Child] = []
    try:
        for p in range(PRODUCERS):
            mode = "batches" if p % 2 else "single"
            children.append(mq_child(PRODUCE, name, p, PER_PRODUCER, seed + p, mode))
        for c in children:
            c.expect("ready")
        yield children
    finally:
        for c in children:
            c.close()


def test_producers_in_four_processes_one_consumer_exactly_once_in_order(name: str) -> None:
    expected_next = [0] * PRODUCERS
    with MQ(name, capacity=CAPACITY, max_message=MAX_MESSAGE) as q:
        with producers(name, seed=1) as children:
            for c in children:
                c.send()
            for _ in range(PRODUCERS * PER_PRODUCER):
                producer, seq = mq_parse(q.get(timeout=DEADLINE))
                assert seq == expected_next[producer], f"producer {producer}"
                expected_next[producer] += 1
            for c in children:
                c.expect("done")
                c.finish()
        assert expected_next == [PER_PRODUCER] * PRODUCERS
        assert len(q) == 0
        with pytest.raises(ctipc.Empty):
            q.get_nowait()
    assert_queue_gone(name)


def test_producers_and_consumers_in_separate_processes_union_is_exact(name: str) -> None:
    consumers: list[Child] = []
    with MQ(name, capacity=CAPACITY, max_message=MAX_MESSAGE) as q:
        try:
            for i, mode in enumerate(["single", "batches", "batches"]):
                consumers.append(mq_child(CONSUME, name, 100 + i, mode))
            for c in consumers:
                c.expect("ready")
            with producers(name, seed=10) as children:
                for c in children:
                    c.send()
                for c in children:
                    c.expect("done")
                    c.finish()
            # Every message is in the ring before the stop sentinels.
            q.put_many([b""] * len(consumers), timeout=DEADLINE)
            results = [json.loads(c.readline()) for c in consumers]
            for c in consumers:
                c.finish()
        finally:
            for c in consumers:
                c.close()
        everything = [tuple(pair) for got in results for pair in got]
        assert len(everything) == PRODUCERS * PER_PRODUCER
        expected = {(p, s) for p in range(PRODUCERS) for s in range(PER_PRODUCER)}
        assert set(everything) == expected
        for got in results:
            check_per_producer_order([(p, s) for p, s in got])
        assert len(q) == 0
    assert_queue_gone(name)


# -- batches ---------------------------------------------------------------------------


def test_put_many_larger_than_the_ring_blocks_until_another_process_drains(name: str) -> None:
    code = """
        rng = random.Random(7)
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        batch = [w.mq_message(0, i, q.max_message, rng) for i in range(int(sys.argv[2]))]
        out("ready")
        inp()
        q.put_many(batch, timeout=30)
        out("done")
    """
    count = 150  # about 300 KiB of messages for a 64 KiB ring
    with MQ(name, capacity=64 << 10, max_message=4 << 10) as q:
        with mq_child(code, name, count) as child:
            child.expect("ready")
            child.send()
            # Cannot return before a drain: the batch is larger than the ring.
            assert child.silent_for(0.3)
            assert len(q) < count
            got: list[tuple[int, int]] = []
            while len(got) < count:
                batch = q.get_many(7, timeout=DEADLINE)
                assert 1 <= len(batch) <= 7
                got.extend(mq_parse(m) for m in batch)
            child.expect("done")
            child.finish()
        assert got == [(0, i) for i in range(count)]


def test_blocking_put_many_is_drained_by_get_many_in_another_process(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        sizes = []
        got = []
        out("ready")
        while len(got) < int(sys.argv[2]):
            batch = q.get_many(max_messages=10, timeout=15)
            sizes.append(len(batch))
            got.extend(w.mq_parse(m) for m in batch)
        out(json.dumps([got, sizes]))
    """
    count = 200
    rng = random.Random(3)
    with MQ(name, capacity=32 << 10, max_message=2 << 10) as q:
        batch = [mq_message(1, i, q.max_message, rng) for i in range(count)]
        with mq_child(code, name, count) as child:
            child.expect("ready")
            q.put_many(batch, timeout=DEADLINE)  # returns once the child made room
            got, sizes = json.loads(child.readline())
            child.finish()
        assert [tuple(pair) for pair in got] == [(1, i) for i in range(count)]
        assert all(1 <= n <= 10 for n in sizes)


def test_get_many_returns_at_least_one_and_at_most_max_messages(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        q.put(b"only")
        assert q.get_many(100, timeout=DEADLINE) == [b"only"]
        q.put_many([b"a", b"b", b"c"])
        assert q.get_many(2, timeout=DEADLINE) == [b"a", b"b"]
        assert q.get_many(timeout=DEADLINE) == [b"c"]
        with pytest.raises(ctipc.Empty):
            q.get_many(block=False)
        start = time.monotonic()
        with pytest.raises(ctipc.Empty):
            q.get_many(timeout=0.2)
        assert 0.15 <= elapsed(start) < 5


def test_get_many_takes_what_was_put_since_this_handle_last_looked(name: str) -> None:
    """A batch takes whatever is there when it is taken, not only what the
    consumer's last look at the tail covered."""
    with MQ(name, capacity=8192, max_message=100) as q, MQ(name, create=False) as producer:
        producer.put_many([b"a", b"b"])
        assert q.get(timeout=DEADLINE) == b"a"  # this handle has seen the tail after b
        producer.put_many([b"c", b"d"])
        assert q.get_many(10, block=False) == [b"b", b"c", b"d"]


def test_put_many_that_does_not_fit_puts_a_prefix_then_raises_full(name: str) -> None:
    with MQ(name, capacity=16 << 10, max_message=1016) as q:  # 16 records of 1 KiB
        batch = [bytes([i]) * 1016 for i in range(40)]
        with pytest.raises(ctipc.Full):
            q.put_many(batch, block=False)
        n = len(q)
        assert 0 < n < 40
        start = time.monotonic()
        with pytest.raises(ctipc.Full):
            q.put_many(batch[n:], timeout=0.2)
        assert 0.15 <= elapsed(start) < 5
        assert len(q) == n
        assert drain(q) == batch[:n]


def test_put_nowait_is_not_refused_while_another_thread_puts(name: str) -> None:
    """Full means no room: a queue with room for every message never
    refuses one because another thread happens to be putting."""
    threads, per_thread = 4, 2000
    full = [0] * threads
    with MQ(name, capacity=8 << 20, max_message=1000) as q:

        def put(i: int) -> None:
            for _ in range(per_thread):
                try:
                    q.put_nowait(b"p" * 500)
                except ctipc.Full:
                    full[i] += 1

        run_threads(put, threads)
        assert full == [0] * threads, f"refused with {len(q)} messages in a ring for all"
        assert len(q) == threads * per_thread


def test_get_nowait_is_not_refused_while_another_thread_puts(name: str) -> None:
    """Empty means no message: a queue that holds messages all along never
    answers Empty because another thread happens to be putting."""
    count = 3000
    empty = [0]
    stop = threading.Event()
    with MQ(name, capacity=8 << 20, max_message=1000) as q:
        q.put_many([b"old"] * count)

        def work(i: int) -> None:
            if i:
                while not stop.is_set():  # more messages, all the time
                    q.put(b"new" * 30, timeout=DEADLINE)
                return
            try:
                for _ in range(count):  # never more gets than old messages
                    try:
                        q.get_nowait()
                    except ctipc.Empty:
                        empty[0] += 1
            finally:
                stop.set()

        run_threads(work, 4)
        assert empty[0] == 0, f"{empty[0]} of {count} get_nowait calls found the queue empty"


# -- timeouts and wake-ups ----------------------------------------------------------------


def test_get_times_out_on_an_empty_queue(name: str) -> None:
    with MQ(name, capacity=8192, max_message=100) as q:
        start = time.monotonic()
        with pytest.raises(ctipc.Empty) as info:
            q.get(timeout=0.2)
        assert 0.15 <= elapsed(start) < 5
        assert isinstance(info.value, queue.Empty)
        assert issubclass(ctipc.Empty, queue.Empty)
        for call in (q.get_nowait, lambda: q.get(block=False), lambda: q.get(False, 10)):
            start = time.monotonic()
            with pytest.raises(queue.Empty):
                call()
            assert elapsed(start) < 1


def test_put_times_out_on_a_full_queue(name: str) -> None:
    with MQ(name, capacity=8192, max_message=1016) as q:  # 8 records of 1 KiB
        put = fill(q, 1016)
        assert len(put) == 8
        start = time.monotonic()
        with pytest.raises(ctipc.Full) as info:
            q.put(bytes(1016), timeout=0.2)
        assert 0.15 <= elapsed(start) < 5
        assert isinstance(info.value, queue.Full)
        assert issubclass(ctipc.Full, queue.Full)
        for call in (
            lambda: q.put_nowait(b"x" * 1016),
            lambda: q.put(b"x" * 1016, block=False),
            lambda: q.put(b"x" * 1016, False, 10),
        ):
            start = time.monotonic()
            with pytest.raises(queue.Full):
                call()
            assert elapsed(start) < 1
        assert drain(q) == put


def test_consumer_blocked_in_another_process_wakes_on_put(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("waiting")
        out(q.get().decode())  # no timeout: the parent's deadline applies
        out(q.get_many(1, timeout=15)[0].decode())
    """
    with MQ(name, capacity=8192, max_message=100) as q, Child(code, name) as child:
        child.expect("waiting")
        assert child.silent_for(0.2)
        start = time.monotonic()
        q.put(b"wake up")
        child.expect("wake up")
        assert elapsed(start) < 5
        assert child.silent_for(0.1)
        start = time.monotonic()
        q.put_many([b"again", b"more"])
        child.expect("again")
        assert elapsed(start) < 5
        child.finish()
        assert drain(q) == [b"more"]


def test_producer_blocked_in_another_process_wakes_on_get(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        n = 0
        while True:
            try:
                q.put_nowait(n.to_bytes(4, "little") * 254)
            except ctipc.Full:
                break
            n += 1
        out(n)
        q.put(b"last")  # no timeout: the parent's deadline applies
        out("put")
    """
    with MQ(name, capacity=16 << 10, max_message=1016) as q, Child(code, name) as child:
        n = int(child.readline())
        assert n == 16
        assert child.silent_for(0.2)
        start = time.monotonic()
        assert q.get(timeout=DEADLINE) == bytes(1016)
        child.expect("put")
        assert elapsed(start) < 5
        child.finish()
        assert drain(q) == [i.to_bytes(4, "little") * 254 for i in range(1, n)] + [b"last"]


def test_len_counts_the_messages_of_every_process(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        q.put_many([b"a", b"b", b"c"])
        q.put(b"d")
        out(len(q))
        inp()
        out(len(q))
    """
    with MQ(name, capacity=8192, max_message=100) as q, Child(code, name) as child:
        assert child.readline() == "4"
        assert len(q) == 4
        assert q.get_many(3, timeout=DEADLINE) == [b"a", b"b", b"c"]
        child.send()
        assert child.readline() == "1"
        child.finish()


@pytest.mark.parametrize("call", ["get", "get_many", "put", "put_many"])
def test_close_wakes_a_call_blocked_in_another_thread(name: str, call: str) -> None:
    """A call blocked (no timeout) in another thread raises ValueError
    within a fraction of a second of close(), and nothing crashes."""
    outcome: list[BaseException | None] = []
    q = MQ(name, capacity=8192, max_message=1016)
    try:
        if call.startswith("put"):
            fill(q, 1016)

        def blocked() -> None:
            try:
                if call == "get":
                    q.get()
                elif call == "get_many":
                    q.get_many(10)
                elif call == "put":
                    q.put(bytes(1016))
                else:
                    q.put_many([bytes(1016)] * 3)
                outcome.append(None)
            except BaseException as e:
                outcome.append(e)

        thread = threading.Thread(target=blocked)
        thread.start()
        thread.join(0.2)  # an assertion that it blocks, not a way to order events
        assert thread.is_alive(), f"{call} did not block: {outcome}"
    finally:
        start = time.monotonic()
        q.close()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert elapsed(start) < 5
    assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="no SIGINT here")
@pytest.mark.parametrize("call", ["q.get()", "q.get_many(timeout=60)", "q.put(bytes(1016))"])
def test_ctrl_c_interrupts_a_blocked_call(name: str, call: str) -> None:
    code = """
        signal.signal(signal.SIGINT, signal.default_int_handler)
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        try:
            out("blocking")
            CALL
            out("returned")
        except KeyboardInterrupt:
            out("interrupted")
        q.put_nowait(b"after") if "put" not in "CALL" else q.get_nowait()
        q.close()
    """.replace("CALL", call)
    with MQ(name, capacity=8192, max_message=1016) as q:
        put = fill(q, 1016) if "put" in call else []
        with Child(code, name) as child:
            child.expect("blocking")
            assert child.silent_for(0.3), f"{call} did not block"
            child.signal(signal.SIGINT)
            start = time.monotonic()
            child.expect("interrupted")
            assert elapsed(start) < 5
            child.finish()
        # the interrupted call took or put nothing; the queue still works
        assert drain(q) == (put[1:] if put else [b"after"])


# -- lifetime ------------------------------------------------------------------------------


@pytest.mark.parametrize("creator", ["test process", "producer"])
@pytest.mark.parametrize("ending", ["close", "exit", "os._exit", "SIGKILL"])
def test_messages_outlive_their_producer(name: str, creator: str, ending: str) -> None:
    if ending == "SIGKILL" and not HAVE_SIGKILL:
        pytest.skip("no SIGKILL here")
    code = """
        q = ctipc.MessageQueue(sys.argv[1], capacity=1 << 16, max_message=1000,
                               create=sys.argv[2] == "producer" or None)
        q.put_many([b"m%d" % i for i in range(50)])
        q.put(b"last")
        out("put")
        inp()
        if sys.argv[3] == "close":
            q.close()
        elif sys.argv[3] == "os._exit":
            os._exit(0)
        elif sys.argv[3] == "SIGKILL":
            inp()
    """
    q = MQ(name, capacity=1 << 16, max_message=1000) if creator == "test process" else None
    try:
        with Child(code, name, creator, ending) as child:
            child.expect("put")
            if q is None:
                q = MQ(name, create=False)
            if ending == "SIGKILL":
                child.kill()
            else:
                child.send()
                assert child.wait() == 0
        assert q.get_many(1000, timeout=DEADLINE) == [b"m%d" % i for i in range(50)] + [b"last"]
        q.put(b"usable")
        assert q.get(timeout=DEADLINE) == b"usable"
    finally:
        if q is not None:
            q.close()
    assert_queue_gone(name)


@needs_dev_shm
@pytest.mark.parametrize("ending", ["close", "exit", "SIGKILL"])
def test_queue_whose_processes_all_left_is_removed(name: str, ending: str) -> None:
    if ending == "SIGKILL" and not HAVE_SIGKILL:
        pytest.skip("no SIGKILL here")
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=True, capacity=1 << 16, max_message=1000)
        q.put_many([b"stale"] * 10)
        again = ctipc.MessageQueue(sys.argv[1], create=False)  # two handles, one process
        out("put")
        inp()
        if sys.argv[2] == "close":
            q.close()
            again.close()
    """
    with Child(code, name, ending) as child:
        child.expect("put")
        entries = q_entries(name)
        digest = _names.os_name("q", "h", name).rsplit("-", 1)[1]
        for prefix in ("ctipc-qh-", "sem.ctipc-qr-", "sem.ctipc-qw-"):
            assert prefix + digest in entries
        with MQ(name, create=False) as q:
            assert len(q) == 10
        if ending == "SIGKILL":
            child.kill()
        else:
            child.send()
            assert child.wait() == 0
    if ending == "SIGKILL":
        # Nobody could clean up; the next open by name notices everyone died.
        with MQ(name, capacity=8192, max_message=100) as q:
            assert (q.capacity, q.max_message, len(q)) == (8192, 100, 0)
            with pytest.raises(ctipc.Empty):
                q.get_nowait()
    assert_queue_gone(name)


@needs_persistent
def test_persistent_queue_keeps_its_messages_for_a_later_process(name: str) -> None:
    produce = """
        q = ctipc.MessageQueue(sys.argv[1], create=True, persistent=True,
                               capacity=1 << 16, max_message=1000)
        q.put_many([b"kept %d" % i for i in range(20)])
        out("put")
    """
    consume = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out(json.dumps([m.decode() for m in q.get_many(15, timeout=15)]))
    """
    with Child(produce, name) as child:
        child.expect("put")
        child.finish()
    assert exists(MQ, name)  # nobody has it open now
    with mq_child(consume, name) as child:
        assert json.loads(child.readline()) == [f"kept {i}" for i in range(15)]
        child.finish()
    assert exists(MQ, name)
    with MQ(name, create=False) as q:
        assert (q.capacity, q.max_message) == (1 << 16, 1000)
        assert q.get_many(100, timeout=DEADLINE) == [b"kept %d" % i for i in range(15, 20)]
        q.unlink()
        q.put(b"this handle still works")
        assert q.get(timeout=DEADLINE) == b"this handle still works"
    assert_queue_gone(name)


KEEP_PUTTING = """
    rng = random.Random(int(sys.argv[2]))
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    for seq in range(1 << 30):
        q.put(w.mq_message(0, seq, q.max_message, rng), timeout=15)
        if seq == 20:
            out("putting")
"""


@needs_sigkill
@pytest.mark.parametrize("round_", range(3))
def test_producer_killed_while_putting_leaves_no_partial_message(name: str, round_: int) -> None:
    with MQ(name, capacity=64 << 10, max_message=4 << 10) as q:
        with mq_child(KEEP_PUTTING, name, round_) as child:
            child.expect("putting")
            got = [mq_parse(q.get(timeout=DEADLINE)) for _ in range(50 + 37 * round_)]
            child.kill()  # most likely while it copies a message under the put mutex
        got += [mq_parse(m) for m in drain(q)]
        assert got == [(0, i) for i in range(len(got))]  # intact, none missing
        q.put(b"after")  # the dead producer's mutex was recovered
        assert q.get(timeout=DEADLINE) == b"after"


@needs_sigkill
def test_consumer_killed_while_getting_leaves_the_queue_usable(name: str) -> None:
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("ready")
        while True:
            w.mq_parse(q.get_many(5, timeout=15)[0])
    """
    rng = random.Random(5)
    with MQ(name, capacity=64 << 10, max_message=4 << 10) as q, mq_child(code, name) as child:
        child.expect("ready")
        seq = 0
        while seq < 300:  # the child consumes meanwhile
            q.put(mq_message(0, seq, q.max_message, rng), timeout=DEADLINE)
            seq += 1
        child.kill()
        left = [mq_parse(m) for m in drain(q)]  # whatever the child did not take
        check_per_producer_order(left)
        assert all(s < seq for _, s in left)
        more = [mq_message(0, seq + i, q.max_message, rng) for i in range(5)]
        q.put_many(more, timeout=DEADLINE)
        assert q.get_many(10, timeout=DEADLINE) == more


@needs_sigkill
@pytest.mark.skipif(not ctipc.SEMAPHORE_VALUE_READABLE, reason="semaphore values unreadable")
def test_consumer_killed_while_waiting_leaves_no_wake_ups_behind(name: str) -> None:
    """Wake-ups are posted only while someone sleeps (mq.py): a consumer
    killed while it slept must not make every later put post one, which
    piles them up in the OS semaphore without bound (spurious wake-ups, and
    sem_post fails with EOVERFLOW after 2**31 puts).  White box: reads the
    OS semaphore's value."""
    from ctipc._backend import os_backend

    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("waiting")
        q.get()
    """
    with MQ(name, capacity=1 << 16, max_message=100) as q:
        with Child(code, name) as child:
            child.expect("waiting")
            assert child.silent_for(0.2)  # asleep in get() (and registered), most likely
            child.kill()
        for _ in range(20):
            q.put_many([b"m"] * 50)
            assert len(q.get_many(100, timeout=DEADLINE)) == 50
        stale = os_backend.semaphore_value(q._data_sem)
        assert stale is not None and stale <= 2, f"{stale} wake-ups posted for a dead consumer"


@pytest.mark.skipif(not ctipc.SEMAPHORE_VALUE_READABLE, reason="semaphore values unreadable")
def test_waiting_producers_are_woken_once_the_ring_is_half_empty(name: str) -> None:
    """A get wakes waiting producers only once the ring is at most half full
    (docs/FORMAT.md, "Wake-ups"), and then all of them, not one per message
    taken.  White box: this process registers as a waiting producer without
    waiting, and reads the OS semaphore's value after each get."""
    from ctipc._backend import os_backend
    from ctipc._ring import PRODUCERS_WAITING

    with MQ(name, capacity=1024, max_message=56) as q:  # 16 records of 64 bytes
        q.put_many([b"m" * 56] * 16)
        with pytest.raises(ctipc.Full):
            q.put_nowait(b"m")
        assert q._refresh_head(None, 1) and q._refresh_head(None, 1)  # two producers
        try:
            assert q._w[PRODUCERS_WAITING] == 2
            for taken in range(1, 8):
                q.get_nowait()
                assert os_backend.semaphore_value(q._room_sem) == 0, f"woken after {taken}"
            q.get_nowait()  # 8 of 16 left
            assert os_backend.semaphore_value(q._room_sem) == 2
            q.get_nowait()
            assert os_backend.semaphore_value(q._room_sem) == 2  # no more than waiting
        finally:
            q._refresh_head(None, -1)
            q._refresh_head(None, -1)
            while os_backend.semaphore_trywait(q._room_sem):
                pass


def test_waiting_producer_gets_through_when_less_than_half_is_taken(name: str) -> None:
    """A producer waiting on a full ring is not woken by a get that leaves
    it more than half full, but its own next look finds the room: its put
    returns, well within its timeout."""
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        out("waiting")
        q.put(b"late", timeout=60)
        out("put")
    """
    with MQ(name, capacity=1024, max_message=56) as q:
        q.put_many([b"m" * 56] * 16)
        with Child(code, name) as child:
            child.expect("waiting")
            assert q.get(timeout=DEADLINE) == b"m" * 56
            child.expect("put")
            child.wait()
        assert q.get_many(100, block=False) == [b"m" * 56] * 15 + [b"late"]


@needs_sigkill
def test_the_common_call_finishes_a_takeover_from_a_dead_holder_itself(name: str) -> None:
    """A process killed holding both mutexes: the bound try of the next put
    and get takes each over from it, which leaves the mutex held; the
    common call (put's and get's one pass) finishes the takeover there and
    then, rather than leaving a held mutex to the general path.  White box:
    the one-pass steps are called on their own, and must not fall back."""
    code = """
        q = ctipc.MessageQueue(sys.argv[1], create=False)
        assert q._put_intact() and q._try_put() == 0
        assert q._get_intact() and q._try_get() == 0
        out("holding")
        inp()
    """
    with MQ(name, capacity=8192, max_message=100) as q:
        q.put(b"before")
        with Child(code, name) as child:
            child.expect("holding")
            child.kill()
        assert q._append([b"after"], None, True) == 1
        if not q._ordered:
            # (where stores are not ordered, the one pass goes only as far as a
            # tail read under the put mutex: the general path reads it)
            assert q._refresh_tail(None)
        carry: list[bytes] = []
        assert q._take_one(carry) and carry == [b"before"]
        assert q.get(timeout=DEADLINE) == b"after"
        assert len(q) == 0


# -- threads ------------------------------------------------------------------------------


def test_threads_putting_and_getting_on_one_queue_object(name: str) -> None:
    putters, per_putter, getters = 4, 1500, 4
    results: list[list[tuple[int, int]]] = [[] for _ in range(getters)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(putters + getters)

    with MQ(name, capacity=32 << 10, max_message=1024) as q:

        def put(p: int) -> None:
            rng = random.Random(p)
            seq = 0
            while seq < per_putter:
                if p % 2:
                    k = min(per_putter - seq, rng.randint(1, 20))
                    q.put_many(
                        [mq_message(p, seq + i, 200, rng) for i in range(k)], timeout=DEADLINE
                    )
                    seq += k
                else:
                    q.put(mq_message(p, seq, 200, rng), timeout=DEADLINE)
                    seq += 1

        def get(g: int) -> None:
            rng = random.Random(100 + g)
            while True:
                if g % 2:
                    batch = q.get_many(rng.randint(1, 30), timeout=DEADLINE)
                else:
                    batch = [q.get(timeout=DEADLINE)]
                for i, m in enumerate(batch):
                    if m == b"":
                        for _ in batch[i + 1 :]:  # the other getters' stop sentinels
                            q.put(b"", timeout=DEADLINE)
                        return
                    results[g].append(mq_parse(m))

        def body(target: Any, i: int) -> None:
            try:
                barrier.wait(DEADLINE)
                target(i)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=body, args=(put, p)) for p in range(putters)]
        threads += [threading.Thread(target=body, args=(get, g)) for g in range(getters)]
        for t in threads:
            t.start()
        try:
            for t in threads[:putters]:
                t.join(60)
        finally:
            q.put_many([b""] * getters, timeout=DEADLINE)  # one stop sentinel per getter
            for t in threads[putters:]:
                t.join(60)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        if errors:
            raise errors[0]
        everything = [pair for got in results for pair in got]
        assert len(everything) == putters * per_putter
        assert set(everything) == {(p, s) for p in range(putters) for s in range(per_putter)}
        for got in results:
            check_per_producer_order(got)
        assert len(q) == 0
