"""ctipc's own exceptions (OS failures are plain OSError subclasses)."""

from __future__ import annotations

import queue
from typing import Any

__all__ = ["CorruptedError", "CtipcError", "Empty", "Full", "IncompatibleError"]


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
