"""MessageQueue.receive and reserve blocks that do not stop the other handles.

A message inside a receive block is taken but not yet acknowledged: other
handles (threads with their own handle, other processes) go on with the
next messages at once.  It is removed when the block ends normally, and
comes back first, flagged ``redelivered`` for the next receive, when the
block ends by an exception or its process dies in it.  A reservation does
not stop other producers either: their messages are put, and taken, while
it is open; it is published when its block ends normally, and on an
exception or a death nothing is published and its room comes back.

"At once" is shown without timing: the other side is still inside its
block because it has not been told to leave it yet, and the call that must
not wait for it has a deadline only as a guard.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import DEADLINE, HAVE_SIGKILL, Child, drain, run_threads

import ctipc

MQ = ctipc.MessageQueue
needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")

# A child inside a block on a handle of its own until the parent sends a
# line: "raise" leaves it by an exception, anything else normally.
_HOLD = """
q = ctipc.MessageQueue(sys.argv[1], create=False)
try:
    with {block} as b:
        {inside}
        if inp() == "raise":
            raise KeyError("left by an exception")
except KeyError:
    out("raised")
else:
    out("committed")
q.close()
"""
_RECEIVE_AND_HOLD = _HOLD.format(
    block="q.receive(timeout=15)",
    inside='out("holding " + bytes(b.data).decode() + (" redelivered" if b.redelivered else ""))',
)
# sys.argv[2]: the message it reserves and writes
_RESERVE_AND_HOLD = _HOLD.format(
    block="q.reserve(len(sys.argv[2]), timeout=15)",
    inside='b.data[:] = sys.argv[2].encode(); out("holding")',
)


def _messages(n: int) -> list[bytes]:
    return [b"m%d" % i for i in range(n)]


def _received(q: ctipc.MessageQueue) -> tuple[bytes, bool]:
    """(message, redelivered) of one receive on ``q`` that ends normally."""
    with q.receive(timeout=DEADLINE) as msg:
        return bytes(msg.data), msg.redelivered


def _leave(child: Child, by_exception: bool) -> None:
    """Tell a holding child to leave its block, normally or by an exception, and exit."""
    child.send("raise" if by_exception else "leave")
    child.expect("raised" if by_exception else "committed")
    child.finish()


def _assert_empty(q: ctipc.MessageQueue) -> None:
    with pytest.raises(ctipc.Empty):
        q.get_nowait()
    assert len(q) == 0


def _fill(q: ctipc.MessageQueue, message: bytes) -> int:
    """How many copies of ``message`` fit in ``q`` before Full."""
    for n in range(1 << 16):
        try:
            q.put_nowait(message)
        except ctipc.Full:
            return n
    raise AssertionError("the queue never became full")


class _GiveUp(Exception):
    """Raised inside a block to leave it by an exception."""


@contextlib.contextmanager
def _thread_inside(
    name: str,
    enter: Callable[[ctipc.MessageQueue], Any],
    act: Callable[[Any], Any],
    raises: bool = False,
) -> Iterator[Any]:
    """A thread with a handle of its own inside ``with enter(handle) as b:``,
    where it calls ``act(b)`` (its result is yielded), until this ``with``
    ends; then it leaves the block normally, or by an exception if ``raises``."""
    entered, leave = threading.Event(), threading.Event()
    result: list[Any] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with MQ(name, create=False) as h:
                with contextlib.suppress(_GiveUp), enter(h) as b:
                    result.append(act(b))
                    entered.set()
                    assert leave.wait(DEADLINE)
                    if raises:
                        raise _GiveUp
        except BaseException as e:
            errors.append(e)
            entered.set()  # no wait for a block that will never be entered

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(DEADLINE), "the thread did not enter its block"
        if result:  # (else the thread failed: its error is raised below)
            yield result[0]
    finally:
        leave.set()
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the thread hung"
        if errors:
            raise errors[0]


# -- receive ---------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["normally", "by_an_exception", "by_an_exception_then_get"])
def test_others_go_on_while_a_receive_in_another_process_is_open(name: str, end: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many(_messages(4))
        with Child(_RECEIVE_AND_HOLD, name) as child:
            child.expect("holding m0")
            # The child is still inside its block: it has not been told to leave.
            assert q.get(timeout=DEADLINE) == b"m1"
            assert _received(q) == (b"m2", False)
            _leave(child, end != "normally")
        if end == "by_an_exception":  # m0 is back, first, and a receive says so
            assert _received(q) == (b"m0", True)
        elif end == "by_an_exception_then_get":  # first again, and a plain get takes it
            assert q.get(timeout=DEADLINE) == b"m0"
        assert _received(q) == (b"m3", False)  # (after a normal end m0 is gone)
        _assert_empty(q)


@needs_sigkill
def test_a_consumer_killed_inside_receive_gives_its_message_back_once(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many(_messages(5))
        with Child(_RECEIVE_AND_HOLD, name) as child:
            child.expect("holding m0")
            assert q.get(timeout=DEADLINE) == b"m1"
            child.kill()
        got = [_received(q) for _ in range(4)]
        assert got == [(b"m0", True), (b"m2", False), (b"m3", False), (b"m4", False)]
        _assert_empty(q)


def test_two_processes_inside_receive_at_once(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many(_messages(4))
        with Child(_RECEIVE_AND_HOLD, name) as a:
            a.expect("holding m0")
            with Child(_RECEIVE_AND_HOLD, name) as b:  # started once a holds m0
                b.expect("holding m1")  # while a is inside its block
                assert q.get(timeout=DEADLINE) == b"m2"  # while both are
                _leave(b, True)
            _leave(a, False)
        assert _received(q) == (b"m1", True)
        assert _received(q) == (b"m3", False)
        _assert_empty(q)


def test_a_thread_with_its_own_handle_goes_on_while_another_receives(name: str) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        q.put_many(_messages(3))
        with _thread_inside(
            name,
            lambda h: h.receive(timeout=DEADLINE),
            lambda msg: (bytes(msg.data), msg.redelivered),
        ) as seen:
            assert seen == (b"m0", False)
            assert q.get_many(10, timeout=DEADLINE) == [b"m1", b"m2"]  # not m0: it is taken
        _assert_empty(q)


# -- reserve ---------------------------------------------------------------------------


@pytest.mark.parametrize("by_exception", [False, True], ids=["normally", "by_an_exception"])
def test_others_put_and_get_while_a_reserve_in_another_process_is_open(
    name: str, by_exception: bool
) -> None:
    with MQ(name, capacity=4096, max_message=100) as q:
        with Child(_RESERVE_AND_HOLD, name, "theirs") as child:
            child.expect("holding")
            q.put_many([b"a", b"b"], timeout=DEADLINE)  # while the child is inside its block
            assert q.get(timeout=DEADLINE) == b"a"
            assert q.get(timeout=DEADLINE) == b"b"
            with pytest.raises(ctipc.Empty):  # the reservation is not published yet
                q.get_nowait()
            _leave(child, by_exception)
        q.put(b"c", timeout=DEADLINE)
        # (two producers: no order between their messages is promised; and
        # get_many takes only what was there as far as this process last
        # looked, so one get per message)
        expected = [b"c"] if by_exception else [b"c", b"theirs"]
        got = sorted(q.get(timeout=DEADLINE) for _ in expected)
        assert got == expected
        _assert_empty(q)


def test_a_reserve_left_by_an_exception_while_another_handle_puts(name: str) -> None:
    def write(slot: ctipc.Reservation) -> None:
        slot.data[:] = b"theirs"

    with MQ(name, capacity=4096, max_message=100) as q:
        with _thread_inside(name, lambda h: h.reserve(6, timeout=DEADLINE), write, raises=True):
            q.put_many([b"a", b"b"], timeout=DEADLINE)
            assert q.get(timeout=DEADLINE) == b"a"
            with q.reserve(1, timeout=DEADLINE) as slot:  # a second reservation at once
                slot.data[:] = b"c"
            assert q.get(timeout=DEADLINE) == b"b"
        q.put(b"d", timeout=DEADLINE)
        assert q.get_many(10, timeout=DEADLINE) == [b"c", b"d"]  # nothing of theirs
        _assert_empty(q)


@needs_sigkill
def test_a_producer_killed_inside_reserve_publishes_nothing_and_gives_the_room_back(
    name: str, new_name: Callable[..., str]
) -> None:
    # Records of 8 + 56 bytes divide the ring: no wrap wastes room, wherever
    # the ring's positions are when the filling begins.
    message, sizes = b"\0" * 56, {"capacity": 4096, "max_message": 100}
    with MQ(new_name(), **sizes) as fresh:
        fits = _fill(fresh, message)
        assert fits > 1
    with MQ(name, **sizes) as q:
        with Child(_RESERVE_AND_HOLD, name, "p" * len(message)) as child:
            child.expect("holding")
            q.put(message, timeout=DEADLINE)  # while the child is inside its block
            assert q.get(timeout=DEADLINE) == message
            child.kill()
        with pytest.raises(ctipc.Empty):
            q.get_nowait()
        assert _fill(q, message) == fits
        for _ in range(fits):
            assert q.get_nowait() == message  # never the child's b"ppp..."
        _assert_empty(q)


# -- many threads, each with its own handle ----------------------------------------------

_THREADS = 4
_QUOTA = 60  # messages each thread puts
_STEPS = 160  # scripted steps each thread takes


def _message(producer: int, seq: int) -> bytes:
    return b"%d:%d:" % (producer, seq) + b"x" * ((producer * 7 + seq) % 40)


def _parse(message: bytes) -> tuple[int, int]:
    producer, seq, _ = message.split(b":")
    return int(producer), int(seq)


class _Mix:
    """What the threads of the mixed test share.  ``delivered[i]`` lists, in
    order, what consumer ``i`` took for good: ((producer, seq), how,
    redelivered); ``given_up`` holds the messages a receive gave back."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.seed = name, seed
        self.cond = threading.Condition()
        self.taken = 0  # messages taken for good by any thread (under cond)
        self.finished = 0  # threads done with their script (under cond)
        self.hold_token = threading.Lock()  # one holder at a time: the others never wait
        self.stop = threading.Event()  # set by a failing thread, so that the others end soon
        self.delivered: list[list[tuple[tuple[int, int], str, bool]]] = [
            [] for _ in range(_THREADS + 1)
        ]
        self.given_up: set[tuple[int, int]] = set()

    def took(self, i: int, messages: list[bytes], how: str = "get", again: bool = False) -> None:
        self.delivered[i].extend((_parse(m), how, again) for m in messages)
        with self.cond:
            self.taken += len(messages)
            self.cond.notify_all()

    def others_went_on(self, since: int) -> bool:
        """Whether another thread took a message after ``since`` messages
        were taken, or every other thread has ended its script (under cond)."""
        return self.taken > since or self.finished == _THREADS - 1

    def receive(self, i: int, h: ctipc.MessageQueue, give_up: bool, hold: bool) -> None:
        """One receive on ``h``: held open until another thread went on if
        ``hold``, given back by an exception if ``give_up``."""
        try:
            with h.receive(block=False) as msg:
                data, again = bytes(msg.data), msg.redelivered
                if hold:
                    with self.cond:
                        since = self.taken
                        assert self.cond.wait_for(lambda: self.others_went_on(since), DEADLINE), (
                            "no other thread went on while this block was open"
                        )
                if give_up:
                    self.given_up.add(_parse(data))
                    raise _GiveUp
        except (_GiveUp, ctipc.Empty):
            return
        self.took(i, [data], "receive", again)

    def work(self, i: int) -> None:
        """Thread ``i``'s script, on a handle of its own."""
        rng = random.Random(self.seed * 100 + i)
        with MQ(self.name, create=False) as h:
            seq = 0
            for _ in range(_STEPS):
                if self.stop.is_set():
                    return
                r = rng.random()
                if r < 0.35 and seq < _QUOTA:
                    h.put(_message(i, seq), timeout=DEADLINE)
                    seq += 1
                elif r < 0.65:
                    try:
                        if r < 0.55:
                            self.took(i, [h.get_nowait()])
                        else:
                            self.took(i, h.get_many(rng.randrange(1, 4), block=False))
                    except ctipc.Empty:
                        pass
                else:
                    give_up = rng.random() < 0.25
                    if rng.random() < 0.3 and self.hold_token.acquire(blocking=False):
                        try:
                            self.receive(i, h, give_up, True)
                        finally:
                            self.hold_token.release()
                    else:
                        self.receive(i, h, give_up, False)
            while seq < _QUOTA:  # the rest of its quota
                h.put(_message(i, seq), timeout=DEADLINE)
                seq += 1

    def worker(self, i: int) -> None:
        try:
            self.work(i)
        except BaseException:
            self.stop.set()
            raise
        finally:
            with self.cond:
                self.finished += 1
                self.cond.notify_all()


@pytest.mark.parametrize("seed", range(3))
def test_threads_mixing_blocks_and_plain_calls_deliver_each_message_once(
    name: str, seed: int
) -> None:
    """Each thread, with its own handle, follows a script drawn from the
    seed: puts of its own numbered messages, gets, get_manys and receives,
    some of which raise, and some of which hold their block until another
    thread has taken a message (so that blocks overlap other calls)."""
    mix = _Mix(name, seed)
    with MQ(name, capacity=1 << 16, max_message=100) as q:
        run_threads(mix.worker, _THREADS)
        so_far = sum(len(d) for d in mix.delivered)
        assert len(q) == _THREADS * _QUOTA - so_far  # every block has ended
        mix.took(_THREADS, drain(q))
        assert len(q) == 0

    every = collections.Counter(key for d in mix.delivered for key, _, _ in d)
    expected = collections.Counter((p, s) for p in range(_THREADS) for s in range(_QUOTA))
    assert every == expected, "a message was lost or delivered twice"
    for d in mix.delivered:
        for key, how, again in d:
            if how == "receive":  # flagged exactly when a receive gave it back
                assert again == (key in mix.given_up), key
        # Each consumer sees a producer's messages in order, but for one
        # that came back.
        last: dict[int, int] = {}
        for (producer, seq), _, _ in d:
            if (producer, seq) not in mix.given_up:
                assert seq > last.get(producer, -1), (producer, seq, last)
                last[producer] = seq


def test_get_many_behind_a_held_record_takes_no_more_than_asked(name: str) -> None:
    """A get_many that passes records taken before, takes ready ones at the
    head, and then steps over a held record takes ``max_messages`` in all,
    so that a receive after it gets the next message, in order."""
    with contextlib.ExitStack() as stack:
        q = stack.enter_context(MQ(name, capacity=1 << 12, max_message=16))
        a, b, c, d = (stack.enter_context(MQ(name, create=False)) for _ in range(4))
        for m in _messages(10):
            q.put(m)
        held_a = a.receive(block=False)
        assert bytes(held_a.__enter__().data) == b"m0"
        assert q.get_nowait() == b"m1"  # taken behind m0
        held = [h.receive(block=False) for h in (b, c, d)]
        assert [bytes(r.__enter__().data) for r in held] == [b"m2", b"m3", b"m4"]
        for r in (held[0], held[1], held_a):  # m2, m3, m0 come back
            assert r.__exit__(_GiveUp, _GiveUp(), None) is None
        assert q.get_nowait() == b"m0"  # now the head is m1's, taken before
        # m1 (taken) is passed, m2 and m3 are ready, m4 is held, m5.. are ready
        assert q.get_many(3, block=False) == [b"m2", b"m3", b"m5"]
        assert _received(q) == (b"m6", False)
        held[2].__exit__(None, None, None)  # m4 removed
        assert q.get_many(10, block=False) == [b"m7", b"m8", b"m9"]
        _assert_empty(q)
