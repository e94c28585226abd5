"""ctipc's own exceptions (OS failures are plain OSError subclasses)."""

from __future__ import annotations

import queue
from typing import Any

__all__ = [
    "BackendUnavailable",
    "CorruptedError",
    "CtipcError",
    "Empty",
    "Full",
    "IncompatibleError",
    "LeaseLost",
    "UnsupportedError",
]


class CtipcError(Exception):
    """Base class of the errors that ctipc raises itself (not OS errors)."""

    __module__ = "ctipc"

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        #: the user's object name the error is about, when there is one
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.name))


class CorruptedError(CtipcError):
    """Bytes in shared memory that are not a valid ctipc object of the kind."""

    __module__ = "ctipc"


class IncompatibleError(CtipcError):
    """An object exists with another layout version, or with sizes that
    contradict the ones passed to the constructor."""

    __module__ = "ctipc"


def waited(block: bool, timeout: float | None) -> str:
    """How long a call that raised Full or Empty waited, for its message."""
    if not block:
        return "at once (block=False)"
    return "in time" if timeout is None else f"within timeout={timeout:g} s"


class Full(queue.Full):
    """Raised by ``MessageQueue.put`` when no room appeared before the timeout."""

    __module__ = "ctipc"


class Empty(queue.Empty):
    """Raised by ``MessageQueue.get`` when no message arrived before the timeout."""

    __module__ = "ctipc"


class UnsupportedError(CtipcError, NotImplementedError):
    """What the backend cannot give, for example ``SharedMemory.buf``
    (zero-copy) on a server in another host."""

    __module__ = "ctipc"


class BackendUnavailable(CtipcError, ConnectionError):
    """The server of a ``ctipc.connect`` backend could not be reached within
    the call's timeout (never a plain False or Empty: contended and
    unreachable must differ)."""

    __module__ = "ctipc"


class LeaseLost(CtipcError):
    """A Lock, a Semaphore permit or a received message was held by a lease
    that ran out (the holder stalled, or the server could not be reached):
    another process may have taken it over."""

    __module__ = "ctipc"
