"""Named shared memory."""

from __future__ import annotations

import mmap
import threading

from ._args import check_open_args, check_size, check_span, encode_text
from ._backend import os_backend as _os
from ._base import Closable
from ._errors import CorruptedError, IncompatibleError
from ._segment import HEADER_SIZE, Core, Header, Kind, register_kind

__all__ = ["SharedMemory"]


def _mmap_tracks_views() -> bool:
    """Does mmap.close() refuse while a memoryview of it is alive?  CPython's
    does (BufferError); PyPy's unmaps under the view's feet."""
    probe = mmap.mmap(-1, mmap.PAGESIZE)
    view = memoryview(probe)
    try:
        probe.close()
    except BufferError:
        view.release()
        probe.close()
        return True
    view.release()
    return False


_MMAP_TRACKS_VIEWS = _mmap_tracks_views()


class _SharedMemoryKind(Kind):
    letter = "m"
    label = "SharedMemory"
    # The data is mapped apart from the header, so that close() can find out
    # that the caller still holds views of it (BufferError) before anything
    # else changes.
    core_maps_area = False

    def __init__(self, size: int | None = None) -> None:
        self.size = size  # what the caller asked for (None: whatever it is)

    def area_size(self, params: tuple[int, int]) -> int:
        return params[0]

    def check_attach(self, name: str, header: Header) -> None:
        if self.size is not None and self.size != header.param0:
            raise IncompatibleError(
                f"SharedMemory {name!r} has size {header.param0}, not {self.size}", name
            )
        if header.total != HEADER_SIZE + header.param0:
            raise CorruptedError(f"SharedMemory {name!r} has inconsistent sizes", name)


register_kind(_SharedMemoryKind())


class SharedMemory(Closable):
    """A block of memory that any process can map by name.

    ``size`` (bytes, > 0) is needed to create; a process that attaches gets
    the size the creator gave, and an explicit ``size`` that contradicts it
    raises :class:`ctipc.IncompatibleError`.  ``buf`` is a writable
    ``memoryview`` of exactly ``size`` bytes (zero-copy); ``read``/``write``
    and the ``*_str`` helpers check every offset and length first.  New memory
    is zero-filled.  ctipc does not synchronise access: guard multi-step
    updates with a :class:`Lock`.
    """

    _data: mmap.mmap | None = None
    _buf: memoryview | None = None
    # Held around each read/write's view of the mapping and around close():
    # a close racing another thread's copy would otherwise meet that copy's
    # view and refuse (BufferError) as if the caller held one.
    _io = threading.Lock()  # replaced per instance

    def __init__(
        self,
        name: str,
        size: int | None = None,
        *,
        create: bool | None = None,
        persistent: bool = False,
        permissions: int = 0o600,
    ) -> None:
        mode = check_open_args(name, create, persistent, permissions)
        size = check_size(size, "size")
        if create is True and size is None:
            raise ValueError("size is needed to create a SharedMemory")
        if size is None:
            create = False  # nothing to create with: attach only
        core = Core(_SharedMemoryKind(size), name)
        core.open(create, bool(persistent), mode, (size, None))
        assert core.header is not None and core.seg is not None
        self._size: int = core.header.param0
        try:
            self._data = _os.segment_map(core.seg, HEADER_SIZE, self._size)
        except BaseException:
            core.close()
            raise
        self._buf = memoryview(self._data)
        self._io = threading.Lock()
        self._start(core)

    @property
    def size(self) -> int:
        """The size in bytes given when the object was created."""
        return self._size

    @property
    def buf(self) -> memoryview:
        """A writable memoryview of the whole block.  Release views taken
        from it (``with shm.buf[a:b] as v: ...``) before ``close()``."""
        buf = self._buf
        if buf is None or self.closed:
            raise ValueError("SharedMemory is closed")
        return buf

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """Copy ``data`` (any bytes-like object) to ``offset``; return its length.
        ValueError, with nothing written, if it does not fit."""
        if isinstance(data, str):
            raise TypeError("SharedMemory.write takes bytes, not str: encode it, or use write_str")
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(
                f"SharedMemory.write takes bytes-like data, not {type(data).__name__}"
            ) from None
        with view:
            raw = view.cast("B") if view.format != "B" or view.ndim != 1 else view
            offset, n = check_span(offset, raw.nbytes, self._size)
            try:
                with self._io:
                    self.buf[offset : offset + n] = raw
            except ValueError:
                # Closed: at exit another thread parks here, past the lock
                # that a later close() in the main thread takes.
                self._check_open(first=True)
                raise
            return n

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Copy ``length`` bytes from ``offset`` (default: to the end)."""
        offset, n = check_span(offset, length, self._size)
        try:
            with self._io:
                return bytes(self.buf[offset : offset + n])
        except ValueError:
            self._check_open(first=True)  # (as in write)
            raise

    def write_str(self, text: str, offset: int = 0) -> int:
        """Write ``text`` as UTF-8 followed by a NUL; return the bytes written
        (NUL included).  ValueError, with nothing written, if it does not fit
        or contains NUL."""
        return self.write(encode_text(text), offset)

    def read_str(self, offset: int = 0) -> str:
        """The UTF-8 text at ``offset`` up to the first NUL (or the end).
        Bytes that are not UTF-8 become U+FFFD."""
        offset, n = check_span(offset, None, self._size)
        try:
            with self._io:
                buf = self.buf
                assert self._data is not None
                end = self._data.find(b"\0", offset, offset + n)
                raw = bytes(buf[offset : offset + n if end < 0 else end])
        except ValueError:
            self._check_open(first=True)  # (as in write)
            raise
        return raw.decode("utf-8", "replace")

    def close(self) -> None:
        """Unmap and close (idempotent).  BufferError, with nothing changed,
        while views taken from ``buf`` are still alive.  (Where ``mmap`` does
        not track views, as on PyPy, it cannot refuse: release your views
        before ``close()`` there, since they no longer show the memory.)"""
        with self._io:  # (no read or write of another thread holds a view now)
            data = self._data
            if data is not None and not data.closed:
                if self._buf is not None:
                    self._buf.release()
                try:
                    data.close()  # BufferError if the caller still holds views
                except BufferError:
                    self._buf = memoryview(data)
                    raise BufferError(
                        f"SharedMemory {self.name!r} cannot close while views of its buf are "
                        "alive: release them first (view.release(), or take them in a with block)"
                    ) from None
                self._buf = None
        super().close()

    def _state(self) -> str:
        return f"size={self._size}"
