"""ctipc: named semaphores, locks, shared memory and message queues for
unrelated processes.

Pure Python: ``ctypes`` calls into the OS's own C library (libc/librt on
Linux, macOS and the BSDs; kernel32 on Windows).  Any process can open an
object by name; an object lives while any process has it open.
"""

from __future__ import annotations

from ._backend import os_backend as _os
from ._connect import connect
from ._errors import (
    BackendUnavailable,
    CorruptedError,
    CtipcError,
    Empty,
    Full,
    IncompatibleError,
    LeaseLost,
    UnsupportedError,
)
from .listener import Listener
from .lock import Lock
from .mq import MessageQueue, Received, Reservation
from .semaphore import Semaphore
from .shm import SharedMemory

__version__ = "0.1.0"

#: True where timed semaphore waits are a kernel wait; False where they are
#: emulated by polling (macOS).
TIMED_WAIT_NATIVE: bool = _os.TIMED_WAIT_NATIVE
#: True where ``Semaphore.value`` can report a number (not macOS, Windows).
SEMAPHORE_VALUE_READABLE: bool = _os.SEM_VALUE
#: True where ``Lock`` owner death is detected by the kernel for certain.
ROBUST_LOCK: bool = _os.ROBUST_MUTEX
#: True where ``persistent=True`` is supported (not Windows).
PERSISTENT_SUPPORTED: bool = _os.PERSISTENT

__all__ = [
    "PERSISTENT_SUPPORTED",
    "ROBUST_LOCK",
    "SEMAPHORE_VALUE_READABLE",
    "TIMED_WAIT_NATIVE",
    "BackendUnavailable",
    "CorruptedError",
    "CtipcError",
    "Empty",
    "Full",
    "IncompatibleError",
    "LeaseLost",
    "Listener",
    "Lock",
    "MessageQueue",
    "Received",
    "Reservation",
    "Semaphore",
    "SharedMemory",
    "UnsupportedError",
    "__version__",
    "connect",
]
