"""The one blocking-wait recipe every primitive uses, and polling before a sleep."""

from __future__ import annotations

import time
from typing import Callable

from ._backend import SPIN, WAIT_SLICE


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
    """

    __slots__ = ("budget", "skipped")

    def __init__(self) -> None:
        self.budget = SPIN
        self.skipped = 0

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
        # (a failed probe, from a budget of 0, leaves it at 0)
        self.budget = budget / 2 if self.budget > SPIN / 16 else 0.0
        return False


def wait(
    attempt: Callable[[float], bool],
    blocking: bool,
    timeout: float | None,
    check_open: Callable[[], object],
    spinner: Spinner | None = None,
) -> bool:
    """Call ``attempt(seconds)`` until it returns True or the deadline passes.

    ``attempt(0)`` tries without blocking; later calls block for at most
    ``WAIT_SLICE``, so that Python runs signal handlers (Ctrl-C raises
    KeyboardInterrupt within a slice), notices ``close()`` from another thread
    (``check_open`` raises), and honours the monotonic deadline.  With a
    ``spinner``, the first wait polls ``attempt(0)`` for a while first.
    """
    if attempt(0.0):
        return True
    if not blocking:
        return False
    if spinner is not None and spinner.spin(lambda: attempt(0.0)):
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            slice_ = WAIT_SLICE
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            slice_ = min(WAIT_SLICE, remaining)
        check_open()
        if attempt(slice_):
            return True
