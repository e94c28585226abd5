"""Signals: a process blocked in acquire() gets KeyboardInterrupt promptly on
Ctrl-C; SIGTERM closes a process's objects only with the documented handler."""

from __future__ import annotations

import signal
import textwrap
import time

import pytest
from helpers import ALL_KINDS, HAVE_DEV_SHM, Child, entries_of, exists

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


# -- SIGTERM ------------------------------------------------------------------------------
# Python has no handler of its own for SIGTERM: the default action ends the interpreter
# at once, atexit and all, which leaves objects stale as SIGKILL does (docs/lifetime.md).
# The handler docs/lifetime.md gives turns it into a normal exit, which closes them.

TERM_HANDLER = "signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))\n"

HOLD_THEN_WAIT = """
    lock, shm = ctipc.Lock(sys.argv[1]), ctipc.SharedMemory(sys.argv[1], 64)
    sem = ctipc.Semaphore(sys.argv[1])
    q = ctipc.MessageQueue(sys.argv[1], capacity=8192, max_message=64)
    out("waiting")
    q.get()  # a worker waiting for its next job when it is told to stop
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no POSIX signals here")
@pytest.mark.parametrize("handler", [True, False], ids=["with the handler", "without"])
def test_sigterm_removes_the_objects_only_with_a_handler(name: str, handler: bool) -> None:
    code = (TERM_HANDLER if handler else "") + textwrap.dedent(HOLD_THEN_WAIT)
    with Child(code, name) as child:
        child.expect("waiting")
        child.signal(signal.SIGTERM)
        status = child.wait()
    if handler:
        assert status == 128 + signal.SIGTERM  # sys.exit(143), as a shell reports it
        assert entries_of(name) == []  # the last process out removed them
    else:
        assert status == -signal.SIGTERM  # killed: no atexit, no close
        if HAVE_DEV_SHM:
            assert entries_of(name) != []  # left behind, stale
    # Either way an open by name finds nothing alive (it clears what was left).
    for cls in ALL_KINDS:
        assert not exists(cls, name)
    assert entries_of(name) == []
