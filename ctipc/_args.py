"""Argument checks shared by the constructors and the blocking calls.

Each raises TypeError or ValueError, in ctipc's words, before any state
changes.
"""

from __future__ import annotations

from threading import TIMEOUT_MAX

from ._names import validate_name

__all__ = [
    "MAX_SIZE",
    "check_open_args",
    "check_permissions",
    "check_queue_timeout",
    "check_size",
    "check_span",
    "check_timeout",
    "encode_text",
]

#: Largest size, capacity or message accepted (256 TiB): beyond any machine's
#: memory, and far below what the OS calls and ctypes convert without
#: overflowing.
MAX_SIZE = 1 << 48


def check_timeout(blocking: bool, timeout: float | None) -> float | None:
    """Validate ``(blocking, timeout)`` like ``threading.Lock.acquire``;
    return the timeout in seconds, or None for "forever"."""
    if timeout is None or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 or timeout != timeout:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > TIMEOUT_MAX:  # as threading's
        raise OverflowError("timeout value is too large")
    return float(timeout)


def check_queue_timeout(block: bool, timeout: float | None) -> float | None:
    """Like queue.Queue: timeout only matters when blocking; None waits forever."""
    if not block or timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if timeout < 0 or timeout != timeout:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


def check_open_args(name: object, create: object, persistent: object, permissions: object) -> int:
    """The checks every constructor starts with; returns the mode."""
    validate_name(name)
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {create!r}")
    if not isinstance(persistent, bool):
        raise TypeError(f"persistent must be True or False, not {persistent!r}")
    return check_permissions(permissions)


def check_permissions(permissions: object) -> int:
    if isinstance(permissions, bool) or not isinstance(permissions, int):
        raise TypeError(f"permissions must be an int such as 0o600, not {permissions!r}")
    if not 0 <= permissions <= 0o777:
        raise ValueError(f"permissions must be within 0o000..0o777, got {permissions:#o}")
    return permissions


def check_size(value: object, what: str) -> int | None:
    """None (use the object's own, or the default) or a size in bytes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 < value <= MAX_SIZE:
        raise ValueError(f"{what} must be within 1..{MAX_SIZE} (2**48), got {value}")
    return value


# SharedMemory's bounds and text checks (the local and the Redis SharedMemory)


def check_span(offset: object, length: object, size: int) -> tuple[int, int]:
    """(offset, length) of a read or write of a SharedMemory's ``size``
    bytes, checked; ``length`` None means to the end."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int, not {type(offset).__name__}")
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} is outside 0..{size}")
    if length is None:
        return offset, size - offset
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(f"length must be an int or None, not {type(length).__name__}")
    if length < 0 or offset + length > size:
        raise ValueError(f"{length} bytes at offset {offset} do not fit in {size}")
    return offset, length


def encode_text(text: object) -> bytes:
    """What ``SharedMemory.write_str`` writes: UTF-8 and the NUL that ends it."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if "\0" in text:
        raise ValueError("text must not contain NUL, which ends it")
    return text.encode("utf-8") + b"\0"
