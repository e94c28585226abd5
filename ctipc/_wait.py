"""The one blocking-wait recipe every primitive uses: deadlines, the wait
loop in slices, and polling before a sleep."""

from __future__ import annotations

import time
from typing import Callable

from ._args import check_queue_timeout
from ._backend import SPIN, WAIT_SLICE
from ._backend import os_backend as _os


class Spinner:
    """Polling before a sleep, adapted to whether it pays off.

    A partner that answers within microseconds is seen by polling without a
    sleep and a wake-up through the kernel (tens of microseconds each way).
    But on a machine with more runnable processes than CPUs the partner
    often cannot run while we poll, and polling only delays our own sleep:
    so each poll that fails halves the next one's length, down to none, and
    one that succeeds restores it to ``SPIN``.  With no polling, every 16th
    wait polls for the whole ``SPIN`` again (a shorter probe could never
    see a partner that needs longer), to notice that the machine calmed
    down: at most ``SPIN`` / 16 per wait on a machine that stays busy.

    ``yields``: what is polled is a mutex, whose holder may be a process
    that was preempted inside its critical section and waits for a CPU.
    Between polls this CPU is offered to whoever waits for one (at once
    back if nobody does), where spinning would keep the holder off it: on
    2 CPUs, about 12% more messages per second in 4 -> 1 put, and 10-15%
    more acquires per second of a Lock four processes take in turn.
    """

    __slots__ = ("budget", "skipped", "yields")

    def __init__(self, yields: bool = False) -> None:
        self.budget = SPIN
        self.skipped = 0
        self.yields = yields

    def spin(self, ready: Callable[[], bool]) -> bool:
        budget = self.budget
        if budget <= 0.0:
            self.skipped += 1
            if self.skipped < 16:
                return False
            self.skipped = 0
            budget = SPIN
        end = time.perf_counter() + budget
        while time.perf_counter() < end:
            if ready():
                self.budget = SPIN
                return True
            if self.yields:
                _os.yield_cpu()
        # (a failed probe, from a budget of 0, leaves it at 0)
        self.budget = budget / 2 if self.budget > SPIN / 16 else 0.0
        return False


# How long a call that does not wait for messages or room (put_nowait,
# get_nowait) still waits for the other processes' critical sections, which
# last microseconds unless a holder is stopped (a dead one is taken over).
MUTEX_PATIENCE = 1.0
_monotonic = time.monotonic


def next_slice(deadline: float | None) -> float:
    """How long the next blocking OS call may last: at most ``WAIT_SLICE``,
    less when the monotonic ``deadline`` (None: never) is nearer; 0.0 once
    it has passed."""
    if deadline is None:
        return WAIT_SLICE
    remaining = deadline - time.monotonic()
    return min(WAIT_SLICE, remaining) if remaining > 0 else 0.0


def deadlines(block: bool, timeout: float | None) -> tuple[float | None, float | None]:
    """(deadline for the awaited event, deadline for a mutex), monotonic: a
    short or no timeout still waits out another process's critical section."""
    if block:
        if timeout is None:
            return None, None  # the common case, without reading the clock
        kind = type(timeout)
        if (kind is float or kind is int) and timeout >= 0:
            # A plain valid timeout (once per put or get, so without the
            # general check, which says what is wrong with any other value).
            now = _monotonic()
            return now + timeout, now + (timeout if timeout > MUTEX_PATIENCE else MUTEX_PATIENCE)
    seconds = check_queue_timeout(block, timeout)
    now = _monotonic()
    if not block:
        return now, now + MUTEX_PATIENCE
    if seconds is None:
        return None, None
    return now + seconds, now + (seconds if seconds > MUTEX_PATIENCE else MUTEX_PATIENCE)


def patience_deadline() -> float:
    return time.monotonic() + MUTEX_PATIENCE


def wait(
    attempt: Callable[[float], bool],
    blocking: bool,
    timeout: float | None,
    check_open: Callable[[], object],
    spinner: Spinner | None = None,
    *,
    deadline: float | None = None,
    first_try: bool = True,
) -> bool:
    """Call ``attempt(seconds)`` until it returns True or the deadline passes.

    ``attempt(0)`` tries without blocking; later calls block for at most
    ``WAIT_SLICE``, so that Python runs signal handlers (Ctrl-C raises
    KeyboardInterrupt within a slice), notices ``close()`` from another thread
    (``check_open`` raises), and honours the monotonic deadline: ``deadline``
    if given, else ``timeout`` seconds from now (both None: no deadline).
    With a ``spinner``, the first wait polls ``attempt(0)`` for a while
    first.  ``first_try=False``: the caller has just tried, so the first
    call is a wait (or the spinner's polling).
    """
    if first_try and attempt(0.0):
        return True
    if not blocking:
        return False
    if spinner is not None and spinner.spin(lambda: attempt(0.0)):
        return True
    if deadline is None and timeout is not None:
        deadline = time.monotonic() + timeout
    while True:
        slice_ = next_slice(deadline)
        if slice_ <= 0.0:
            return False
        check_open()
        if attempt(slice_):
            return True
