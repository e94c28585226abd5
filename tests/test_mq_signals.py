"""Exceptions raised by a signal handler at any bytecode of a queue call.

A child process runs put, put_many, reserve, get, get_many and receive on
one queue while an ITIMER_REAL alarm, re-armed at random intervals, raises
from its handler thousands of times.  Another process (the test) then
checks that no mutex was left held (its own put and get finish within a
deadline while the child is still alive) and that every message whose put
returned was delivered exactly once: to the child, to a later get of the
child (the carry-over of an interrupted get), or to the test's drain.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest
from helpers import Child, drain

import ctipc

pytestmark = [
    pytest.mark.skipif(
        not hasattr(signal, "setitimer") or sys.platform == "win32", reason="needs setitimer"
    ),
    # Before 3.11 CPython checks for signals at nearly every instruction, and
    # PyPy runs handlers at any bytecode, not only at calls and jumps as
    # CPython 3.11 does: the hand-over of a taken message to the caller (and
    # this test's own ledger) then has windows that Python code cannot close
    # (docs/crash.md).
    pytest.mark.skipif(
        sys.implementation.name != "cpython" or sys.version_info < (3, 11),
        reason="the signal promise holds on CPython >= 3.11",
    ),
]

HAMMER = """
    import json, random

    class Alarm(Exception):
        pass

    rng = random.Random(int(sys.argv[2]))
    interrupts = 0
    armed = False  # raise only inside the try below (the loop's own jumps are not ctipc's)

    def handler(signum, frame):
        global interrupts
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(200e-6, 1e-3))
        if armed:
            interrupts += 1
            raise Alarm

    q = ctipc.MessageQueue(sys.argv[1], create=False)
    committed, maybe, got, received = [], [], [], []
    seq = 0
    r = m = None

    def msg(i):
        return b"%08d" % i

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001)
    target = int(sys.argv[3])
    ops = 0
    while interrupts < target:
        ops += 1
        op = ops % 6
        try:
            try:
                armed = True
                if op == 0:
                    seq += 1
                    n = seq
                    maybe.append(n)
                    q.put(msg(n), timeout=5)
                    committed.append(n)  # (then maybe.pop: both, never neither)
                    maybe.pop()
                elif op == 1:
                    batch = list(range(seq + 1, seq + 5))
                    seq += 4
                    maybe.extend(batch)
                    q.put_many([msg(i) for i in batch], timeout=5)
                    committed.extend(batch)
                    del maybe[-4:]
                elif op == 2:
                    seq += 1
                    n = seq
                    maybe.append(n)
                    with q.reserve(8, timeout=5) as r:
                        r.data[:] = msg(n)
                    committed.append(n)
                    maybe.pop()
                # (no call between a get's return and the ledger's append: no
                # signal handler runs in between)
                elif op == 3:
                    got.append(q.get(timeout=0.01))
                elif op == 4:
                    got += q.get_many(10, timeout=0.01)
                else:
                    with q.receive(timeout=0.01) as m:
                        received.append(bytes(m.data))
                armed = False
            except (Alarm, ctipc.Empty):
                armed = False
                # An exception at the very entry of a block's __exit__ leaves
                # the block open until the block object is let go.
                r = m = None
        except Alarm:  # (PyPy runs handlers at any bytecode: in the except above too)
            armed = False
            r = m = None
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    # What an interrupted get kept for this thread's next get.
    carried = len(q._carry())
    while True:
        try:
            got.append(q.get_nowait())
            carried -= 1
        except ctipc.Empty:
            break
    out(json.dumps({"committed": committed, "maybe": maybe, "got": [int(m) for m in got],
                    "received": [int(m) for m in received], "interrupts": interrupts, "ops": ops,
                    "carried_left": max(carried, 0)}))
    inp()  # stays alive (and holds whatever it holds) while the test checks
    q.close()
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_alarm_exceptions_inside_queue_calls_lose_nothing_and_leave_no_mutex_held(
    name: str, seed: int
) -> None:
    with ctipc.MessageQueue(name, capacity=64 << 10, max_message=64) as q:
        with Child(HAMMER, name, seed, 3000) as child:
            report = json.loads(child.readline(timeout=120))
            assert report["interrupts"] >= 3000
            # The child is alive: no mutex of the queue may be held by it.
            q.put(b"%08d" % 0, timeout=5)
            rest = [int(m) for m in drain(q)]
            assert 0 in rest
            rest.remove(0)
            q.put(b"x", timeout=5)
            assert q.get(timeout=5) == b"x"
            child.send()
            child.finish()
    delivered = report["got"] + rest
    committed = set(report["committed"])
    maybe = set(report["maybe"])
    received = set(report["received"])
    # exactly once, for get and get_many (at least once for receive)
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert not (set(delivered) - committed - maybe), "a message nobody put"
    missing = committed - set(delivered) - received
    assert not missing, f"{len(missing)} committed messages lost"
