"""Ctrl-C: a process blocked in acquire() gets KeyboardInterrupt promptly."""

from __future__ import annotations

import signal
import time

import pytest
from helpers import Child

import ctipc

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="no SIGINT here")

# The child restores Python's own SIGINT handler in case it inherited SIG_IGN
# (a background job of a non-interactive shell).
BLOCKED = """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    obj = ctipc.{cls}(sys.argv[1], create=False)
    try:
        out("blocking")
        ok = obj.acquire({args})
        out(f"acquired {{ok}}")
    except KeyboardInterrupt:
        out("interrupted")
    obj.close()
"""


def _interrupt(name: str, cls: str, args: str) -> None:
    with Child(BLOCKED.format(cls=cls, args=args), name) as child:
        child.expect("blocking")
        assert child.silent_for(0.3), "acquire() did not block"
        child.signal(signal.SIGINT)
        start = time.monotonic()
        child.expect("interrupted", timeout=5)
        assert time.monotonic() - start < 2
        child.finish()


@pytest.mark.parametrize("args", ["", "timeout=60"])
def test_ctrl_c_interrupts_lock_acquire(name: str, args: str) -> None:
    lock = ctipc.Lock(name)
    try:
        assert lock.acquire()
        _interrupt(name, "Lock", args)
        lock.release()
    finally:
        lock.close()


@pytest.mark.parametrize("args", ["", "timeout=60"])
def test_ctrl_c_interrupts_semaphore_acquire(name: str, args: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        _interrupt(name, "Semaphore", args)
        # the interrupted wait took no permit
        sem.release()
        assert sem.acquire(blocking=False)
        assert not sem.acquire(blocking=False)
    finally:
        sem.close()
