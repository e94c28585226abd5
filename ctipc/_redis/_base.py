"""What the Redis Lock, Semaphore, SharedMemory and MessageQueue share:
the constructor's checks and the open script, name, close, unlink, repr,
``with``, and timeouts turned into deadlines."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .._args import check_open_args
from .._base import ClosesOnExit
from .._errors import CorruptedError
from ._conn import Conn

__all__ = ["RedisObject", "deadline_of", "lease_ms", "new_token"]


_MODES = {None: "n", True: "t", False: "f"}


def new_token() -> str:
    return uuid.uuid4().hex


def deadline_of(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def lease_ms(lease: object, default: float) -> int:
    """The ``lease=`` keyword in whole milliseconds (at least 10)."""
    if lease is None:
        return int(default * 1000)
    if isinstance(lease, bool) or not isinstance(lease, (int, float)):
        raise TypeError(f"lease must be a number of seconds, not {type(lease).__name__}")
    if not 0.01 <= lease <= 1e6:  # (also refuses NaN)
        raise ValueError(f"lease must be within 0.01..1e6 seconds, got {lease}")
    return int(lease * 1000)


class RedisObject(ClosesOnExit):
    """Base of the four classes: ``kind`` names their key namespace."""

    kind = ""
    label = ""
    _closed = True  # class default: also right after a failed __init__
    _conn: Conn  # set on the class that RedisBackend hands out

    def __init__(
        self, name: str, create: bool | None, persistent: object, permissions: object
    ) -> None:
        if check_open_args(name, create, persistent, permissions) != 0o600:
            raise ValueError(
                f"permissions are local file modes; on Redis, give access with Redis ACLs "
                f"(the {self.label} was not opened)"
            )
        if persistent is not True:
            raise ValueError(
                "objects on Redis live until unlink() (a queue must survive a restart of "
                "every process): persistent=False is not supported"
            )
        self._name = name
        self._create = create

    def _open(self, fields: dict[str, object], body: str = "meta") -> dict[bytes, bytes]:
        """Run the open script: the object's stored fields (``fields`` are
        stored when this call creates it)."""
        conn = self._conn
        conn.check_open()
        conn.first_contact()
        args: list[Any] = [_MODES[self._create], self.kind, new_token()]
        for key, value in fields.items():
            args += [key, value]
        keys = [self._key("meta"), self._key(body)]
        reply = conn.run(conn.scripts.open, keys=keys, args=args)
        status = reply[0]
        if status == b"exists":
            raise FileExistsError(f"{self.label} {self._name!r} exists (on Redis)")
        if status == b"missing":
            raise FileNotFoundError(f"{self.label} {self._name!r} does not exist (on Redis)")
        if status == b"corrupt":
            raise CorruptedError(f"the keys of {self.label} {self._name!r} are not one", self._name)
        flat = reply[1]
        self._closed = False
        return dict(zip(flat[::2], flat[1::2]))

    def _key(self, part: str) -> bytes:
        return self._conn.key(self.kind, self._name, part)

    def _gone(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.label} {self._name!r} is gone from the Redis server (unlinked, or lost by "
            "a restart without persistence)"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.label} is closed")
        self._conn.check_open()

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Forget this handle (idempotent).  The object stays on the server
        until ``unlink()``."""
        self._closed = True

    #: the object's keys besides meta, removed by unlink()
    parts: tuple[str, ...] = ()

    def unlink(self) -> None:
        """Delete the object from the server now (idempotent).  Handles that
        other processes have open get FileNotFoundError from their next call."""
        conn = self._conn
        keys = [self._key(part) for part in ("meta",) + self.parts]
        conn.run(conn.client.delete, *keys)

    def _state(self) -> str:
        return "open"

    def __repr__(self) -> str:
        try:
            state = "closed" if self._closed else self._state()
        except Exception:  # (repr asks the server for some states: never fail here)
            state = "open"
        return f"<ctipc.{self.label} name={self._name!r} on {self._conn.where} {state}>"
