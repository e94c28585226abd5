"""SharedMemory on Redis: a string of ``size`` bytes (fixed at create), read
with GETRANGE and written by a script around SETRANGE (one atomic command
each, bounds checked here first).  There is nothing to map across hosts, so
``buf`` raises :class:`ctipc.UnsupportedError`."""

from __future__ import annotations

from typing import cast

from .._args import check_size, check_span, encode_text
from .._errors import IncompatibleError, LeaseLost, UnsupportedError
from ._base import RedisObject

__all__ = ["SharedMemory"]

#: Redis's largest string
MAX_SIZE = 512 << 20


class SharedMemory(RedisObject):
    """``ctipc.SharedMemory`` on Redis: ``read``/``write``/``read_str``/
    ``write_str`` as locally.  ``write(..., fence=lock.fence)`` is refused
    (:class:`ctipc.LeaseLost`, nothing written) once a write with a higher
    fence came: a holder whose lock lease ran out cannot overwrite the data
    of the holder after it."""

    kind = "shm"
    label = "SharedMemory"
    parts = ("data",)

    def __init__(
        self,
        name: str,
        size: int | None = None,
        *,
        create: bool | None = None,
        persistent: bool = True,
        permissions: int = 0o600,
    ) -> None:
        check_size(size, "size")
        if size is not None and size > MAX_SIZE:
            raise ValueError(f"size must be at most {MAX_SIZE} (Redis's largest string)")
        if create is True and size is None:
            raise ValueError("size is needed to create a SharedMemory")
        super().__init__(name, False if size is None else create, persistent, permissions)
        stored = self._open({"size": size or 0, "fence": 0}, "data")
        self._size = int(stored[b"size"])
        if size is not None and size != self._size:
            raise IncompatibleError(
                f"SharedMemory {name!r} has size {self._size}, not {size}", name
            )

    @property
    def size(self) -> int:
        """The size in bytes given when the object was created."""
        return self._size

    @property
    def buf(self) -> memoryview:
        raise UnsupportedError(
            "SharedMemory.buf is zero-copy and exists only for local objects; "
            "on Redis use read() and write()",
            self._name,
        )

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0, *,
              fence: int | None = None) -> int:  # fmt: skip
        """Copy ``data`` to ``offset``; return its length.  ValueError, with
        nothing written, if it does not fit."""
        if fence is not None and (isinstance(fence, bool) or not isinstance(fence, int)):
            raise TypeError(f"fence must be an int or None, not {type(fence).__name__}")
        with memoryview(data) as view:
            raw = view.tobytes()
        offset, n = check_span(offset, len(raw), self._size)
        self._check_open()
        conn = self._conn
        keys = [self._key("meta"), self._key("data")]
        args = [offset, raw, "" if fence is None else fence]
        done = conn.run(conn.scripts.shm_write, keys=keys, args=args)
        if done == -1:
            raise self._gone()
        if done == -2:
            raise LeaseLost(
                f"write with fence {fence} to SharedMemory {self._name!r} refused: a holder "
                "with a higher fence wrote since",
                self._name,
            )
        return n

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Copy ``length`` bytes from ``offset`` (default: to the end)."""
        offset, n = check_span(offset, length, self._size)
        self._check_open()
        if n == 0:
            return b""
        conn, key = self._conn, self._key("data")
        data = cast(bytes, conn.run(conn.client.getrange, key, offset, offset + n - 1))
        if len(data) != n:
            raise self._gone()
        return data

    def write_str(self, text: str, offset: int = 0) -> int:
        """Write ``text`` as UTF-8 followed by a NUL; return the bytes written."""
        return self.write(encode_text(text), offset)

    def read_str(self, offset: int = 0) -> str:
        """The UTF-8 text at ``offset`` up to the first NUL (or the end)."""
        data = self.read(offset)
        end = data.find(b"\0")
        return (data if end < 0 else data[:end]).decode("utf-8", "replace")

    def _state(self) -> str:
        return f"size={self._size}"
