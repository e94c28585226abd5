"""An exception raised by a signal handler at any point inside a Lock or
Semaphore call (Ctrl-C, an alarm-based timeout) leaves the object as the
caller can know it: an acquire that raised holds nothing; a Semaphore
release that raised gave nothing back; a Lock release that raised released
it or (raised at its very first instruction) left it held, which calling
release() again settles (RuntimeError once it is released).

A child process arms an interval timer at random short intervals; its
SIGALRM handler raises whenever the interrupted frame is ctipc's own code
(an exception in the caller's code, after a call returned, is the caller's
to handle, as with threading's locks).  After thousands of such exceptions
another process checks the Lock is free and the Semaphore holds exactly
what the child's own count says.
"""

from __future__ import annotations

import signal
import sys

import pytest
from helpers import Child

import ctipc
from ctipc._backend import os_backend

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer here"),
    # Where the eval loop checks for signals at nearly every instruction
    # (CPython < 3.11, PyPy), a second signal inside a repair can still get
    # through (docs/locks.md): the promise is tested where it holds.
    pytest.mark.skipif(
        sys.implementation.name != "cpython" or sys.version_info < (3, 11),
        reason="the signal promise holds on CPython >= 3.11",
    ),
]

HARNESS = """
    import os, random, signal
    PACKAGE = os.path.dirname(ctipc.__file__)
    raised = [0]

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, random.uniform(2e-5, 4e-4))
        if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
            raised[0] += 1
            raise Alarm

    random.seed(int(sys.argv[3]))
    signal.signal(signal.SIGALRM, handler)
    goal = int(sys.argv[2])
"""

LOCK = (
    HARNESS
    + """
    def settle():
        # after a release or a with-block that raised: release until done
        while True:
            try:
                lock.release()
            except Alarm:
                continue
            except RuntimeError:
                return
            return

    lock = ctipc.Lock(sys.argv[1], create=False)
    signal.setitimer(signal.ITIMER_REAL, 1e-4)
    rounds = 0
    while raised[0] < goal:
        rounds += 1
        mine = False
        try:
            mine = lock.acquire(timeout=0.01) if rounds % 3 else lock.acquire()
        except Alarm:
            pass
        if mine:
            try:
                lock.release()
            except Alarm:
                settle()
        if rounds % 5 == 0:
            try:
                with lock:
                    pass
            except Alarm:
                settle()
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    out("done", raised[0], rounds, lock.locked())
    inp()
    lock.close()
"""
)

SEMAPHORE = (
    HARNESS
    + """
    sem = ctipc.Semaphore(sys.argv[1], create=False)
    signal.setitimer(signal.ITIMER_REAL, 1e-4)
    rounds = held = 0
    while raised[0] < goal:
        rounds += 1
        try:
            if sem.acquire(timeout=0.01):
                held += 1
        except Alarm:
            pass
        if held and rounds % 4 == 0:
            try:
                if sem.acquire(timeout=0.0005):  # the wait path (usually none left)
                    held += 1
            except Alarm:
                pass
        while held:
            try:
                sem.release()
                held -= 1
            except Alarm:
                pass
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    out("done", raised[0], rounds, held)
    inp()
    sem.close()
"""
)

GOAL = 2000


@pytest.mark.skipif(
    not os_backend.ROBUST_MUTEX or os_backend.KERNEL_LIFETIME,
    reason="the flock and Windows mutexes take several Python steps (docs/locks.md)",
)
@pytest.mark.parametrize("seed", [1, 2])
def test_exceptions_inside_lock_calls_never_leave_it_held(name: str, seed: int) -> None:
    lock = ctipc.Lock(name)
    try:
        with Child(LOCK, name, GOAL, seed) as child:
            word, raised, rounds, locked = child.readline(timeout=120).split()
            assert word == "done" and int(raised) >= GOAL
            assert locked == "False", f"held after {raised} exceptions in {rounds} rounds"
            # another process takes it at once, while the victim lives
            assert lock.acquire(blocking=False), "the live victim still holds the OS mutex"
            lock.release()
            child.send()
            child.finish()
    finally:
        lock.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_exceptions_inside_semaphore_calls_take_and_add_no_permit(name: str, seed: int) -> None:
    sem = ctipc.Semaphore(name, initial=2)
    try:
        with Child(SEMAPHORE, name, GOAL, seed) as child:
            word, raised, rounds, held = child.readline(timeout=120).split()
            assert word == "done" and int(raised) >= GOAL and held == "0"
            n = 0
            while sem.acquire(blocking=False):
                n += 1
            assert n == 2, f"{n} permits after {raised} exceptions in {rounds} rounds, not 2"
            sem.release(n)
            child.send()
            child.finish()
    finally:
        sem.close()
