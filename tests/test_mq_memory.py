"""The two ways of reading the other side's position (docs/FORMAT.md §11,
"Memory ordering"): a plain load where the CPU keeps stores in order, the
other side's mutex elsewhere; ``CTIPC_EMULATE=weak-memory`` selects the
second on any CPU.  Both speak one protocol, so they share a queue.  (The
whole queue suite runs on the second path with
``CTIPC_EMULATE=weak-memory python -m pytest tests/test_mq*.py ...``.)"""

from __future__ import annotations

import sys
from typing import Callable

import pytest
from helpers import Child

import ctipc
from ctipc._backend import os_backend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="CTIPC_EMULATE is POSIX's")

REPORT = """
    from ctipc._backend import os_backend
    out(os_backend.STORES_ORDERED, getattr(os_backend, "EMULATING", None))
"""


@pytest.mark.parametrize(
    "setting, emulating", [("weak-memory", False), ("macos,weak-memory", True)]
)
def test_weak_memory_emulation_flips_stores_ordered(setting: str, emulating: bool) -> None:
    with Child(REPORT, CTIPC_EMULATE=setting) as child:
        assert child.readline() == f"False {emulating}"
        child.finish()


ECHO = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    r = ctipc.MessageQueue(sys.argv[2], create=False)
    out("ready")
    for i in range(int(sys.argv[3])):
        r.put(q.get(timeout=10))
    q.close(); r.close()
"""


@pytest.mark.skipif(not os_backend.STORES_ORDERED, reason="this CPU reads under the mutex anyway")
def test_a_weak_memory_process_and_an_ordinary_one_share_a_queue(
    name: str, new_name: Callable[[], str]
) -> None:
    n = 3000
    other = new_name()
    with (
        ctipc.MessageQueue(name, capacity=4096, max_message=64) as q,
        ctipc.MessageQueue(other, capacity=4096, max_message=64) as r,
    ):
        with Child(ECHO, name, other, n, CTIPC_EMULATE="weak-memory") as child:
            child.expect("ready")
            sent = got = 0
            back = []
            while got < n:  # keep the ring wrapping: several in flight
                while sent < n and sent - got < 40:
                    q.put(b"%d" % sent * (1 + sent % 7), timeout=10)
                    sent += 1
                back += r.get_many(100, timeout=10)
                got = len(back)
            child.finish()
        assert back == [b"%d" % i * (1 + i % 7) for i in range(n)]


HOLD_PUT = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    assert q._put_intact() and q._try_put() == 0  # a producer stopped in its section
    out("holding")
    inp()
    assert q._unlock_put() == 0
    q.close()
"""

GET_NOWAIT = """
    q = ctipc.MessageQueue(sys.argv[1], create=False)
    try:
        out("got", q.get_nowait().decode())
    except ctipc.Empty:
        out("Empty")
    q.close()
"""


def test_a_weak_memory_get_that_cannot_read_the_tail_takes_nothing(name: str) -> None:
    """Other consumers went past the tail this process saw, and the put mutex
    it must read the tail under stays held: the get takes nothing and says
    Empty (once the mutex's second of patience is over), with the queue
    unchanged.  (It stored a head of -1 instead, refused as a ValueError.)"""
    with ctipc.MessageQueue(name, capacity=4096, max_message=64) as q:
        q.put(b"first")
        q.put(b"second")
        assert q.get(timeout=10) == b"first"  # the head is past a fresh process's tail
        with Child(HOLD_PUT, name) as holder:
            holder.expect("holding")
            with Child(GET_NOWAIT, name, CTIPC_EMULATE="weak-memory") as child:
                assert child.readline() == "Empty"
                child.finish()
            holder.send()
            holder.finish()
        assert q.get(timeout=10) == b"second"
        assert len(q) == 0
