"""Constants shared by the backend interface and the OS modules."""

from __future__ import annotations

from typing import Final

# Results of Backend.mutex_acquire
MUTEX_TIMEOUT: Final = 0
MUTEX_ACQUIRED: Final = 1
MUTEX_OWNER_DIED: Final = 2

# Longest single blocking OS call.  Between slices Python runs signal handlers
# (Ctrl-C) -- PEP 475 does not cover ctypes calls, and on Windows ctypes has no
# supported way to wait on CPython's SIGINT event.
WAIT_SLICE: Final = 0.05

# How long a blocking call polls before it sleeps in the kernel: a partner
# that answers within microseconds is then seen without a sleep and a
# wake-up (tens of microseconds each), and an idle waiter still sleeps.
SPIN: Final = 50e-6
