"""Creating, attaching and removing segments, and the lifetime rule.

Every object is one shared-memory segment that starts with a header (magic,
kind, layout version, sizes, the user's name) and, on POSIX, a table of the
processes attached to it.  This module creates and attaches segments, checks
headers (everything read from shared memory is untrusted), and applies the
lifetime rule: an object lives while any process has it open; the last one out
removes it, and a process that died without closing is noticed by the next
open (or ``python -m ctipc gc``) through its slot.  On Windows the kernel does
the same with handles, so no table is kept (``KERNEL_LIFETIME``).

The header's layout and its attach table are in _header.py; the byte
layout is documented in docs/FORMAT.md.  The process's own bookkeeping of
open objects (closing them at exit) is in _base.py.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
import time
import warnings
import weakref
from typing import Any, Callable

from . import _names
from ._backend import os_backend as _os
from ._errors import CorruptedError, IncompatibleError
from ._header import (
    FLAG_PERSISTENT,
    HEADER_FORMAT,
    HEADER_SIZE,
    MAGIC_PREFIX,
    NAME_CAPACITY,
    NAME_OFFSET,
    SLOT,
    SLOT_COUNT,
    SLOT_OFFSET,
    STATE_INIT,
    STATE_READY,
    STATE_REMOVED,
    TAG_CAPACITY,
    TAG_OFFSET,
    VERSION,
    Header,
    read_header,
    reap,
    this_process,
)

# How long an open waits for another process's create/attach/close to finish
# before it gives up (TimeoutError): far longer than any of them takes.
LOCK_TIMEOUT = 10.0
# A segment still uninitialised this long after it appeared, with its lock
# free, was left by a creator that died half-way: it is removed.
STALE_INIT_AFTER = 1.0


def _rename(error: OSError, name: str) -> OSError:
    """The same OSError (class, errno, message) naming the user's object."""
    if error.filename == name:
        return error
    new = type(error)(error.errno, error.strerror, name)
    new.__cause__ = error.__cause__
    return new


class Kind:
    """What differs between object kinds: hooks run with the segment lock held."""

    letter = "?"
    label = "object"
    #: False: the core maps only the header; the kind maps its area itself
    core_maps_area = True

    def area_size(self, params: tuple[int, int]) -> int:
        return 0

    def tag(self) -> bytes:
        return b""

    def check_create(self, params: tuple[int, int]) -> None:
        """Raise ValueError if these parameters cannot make an object (run
        only when creating: an attacher gets the object's own)."""

    def on_create(self, core: Core) -> None:
        """Create the kind's own OS resources (no lock-free window exists)."""

    def on_attach(self, core: Core) -> None:
        """Open the kind's own OS resources in an attaching process."""

    def release(self, resources: dict[str, Any]) -> None:
        """Close the OS handles ``on_create``/``on_attach`` put in
        ``resources`` (pop them: this may run twice).  Called when opening
        fails, and once the public object is collected (see ``track``)."""

    def abandoned_held(self, seg: Any) -> bool:
        """With the segment lock held and no live process attached: True if
        the object keeps a fact that outlives its users, so it must not be
        reaped (a Lock whose holder died holding it: the next ``acquire``
        must still report ``owner_died``).  Reads only; changes nothing."""
        return False

    def count(self, seg: Any) -> int | None:
        """How many items the object holds (for ``ls``), if the kind counts."""
        return None

    def remove_extras(self, seg_os_name: str) -> None:
        """Remove the kind's OS resources outside the segment, whose names
        derive from the segment's (``_names.sibling``): no need to trust the
        name stored in a header that may be corrupt."""


#: every kind by its letter, filled in by the modules that define them
KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    KINDS[kind.letter] = kind
    return kind


class Core:
    """One process's attachment to one named object.

    The public classes hold a Core; its ``close`` is also the weakref
    finalizer, which is why it never refers back to the public object.
    """

    def __init__(self, kind: Kind, name: str) -> None:
        self.kind = kind
        self.name = name
        self.os_name = _names.os_name(kind.letter, "h", name)
        self.seg: Any = None
        self.mm: mmap.mmap | None = None
        self.header: Header | None = None
        self.pid = os.getpid()
        self.created = False
        self.registered = False
        self.closed = False
        self.resources: dict[str, Any] = {}
        self.mode = 0o600  # the permissions given to open (used when creating)
        self.lock = threading.Lock()
        self.finalizer: weakref.finalize | None = None
        self.views: list[memoryview] = []  # released before the mapping is closed

    # -- open ------------------------------------------------------------------
    def open(
        self,
        create: bool | None,
        persistent: bool,
        mode: int,
        params: tuple[int | None, int | None],
        check: Callable[[Core, Header], None],
    ) -> None:
        if persistent and not _os.PERSISTENT:
            raise ValueError(f"persistent objects are not supported on {_os.PLATFORM}")
        self.mode = mode
        try:
            self._open(create, persistent, mode, params, check)
        except OSError as e:
            self._abandon()
            raise _rename(e, self.name) from None
        except BaseException:
            self._abandon()
            raise

    def _open(
        self,
        create: bool | None,
        persistent: bool,
        mode: int,
        params: tuple[int | None, int | None],
        check: Callable[[Core, Header], None],
    ) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        uninitialised_since: float | None = None
        cannot_create: ValueError | None = None
        if create is not False:
            try:
                self.kind.check_create((params[0] or 0, params[1] or 0))
            except ValueError as e:
                if create:
                    raise
                cannot_create = e  # only an error if there is nothing to attach to
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(errno.ETIMEDOUT, "timed out opening", self.name)
            if create is not False and cannot_create is None:
                if self._try_create(persistent, mode, params):
                    return
            if create is True:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self.name)
            try:
                self.seg = _os.segment_attach(self.os_name)
            except FileNotFoundError:
                if create is False:
                    raise
                if cannot_create is not None:
                    raise cannot_create from None
                continue  # removed meanwhile: create it
            outcome = self._attach_locked(deadline, persistent, check)
            if outcome == "ok":
                return
            self._abandon()
            if outcome == "uninitialised":
                now = time.monotonic()
                if uninitialised_since is None:
                    uninitialised_since = now
                elif now - uninitialised_since > STALE_INIT_AFTER:
                    self._remove_stale_uninitialised()
                    uninitialised_since = None
                time.sleep(0.001)
            elif outcome == "dead" and create is False:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.name)
            # "removed" / "dead": the name is gone or going; open again

    def _try_create(
        self, persistent: bool, mode: int, params: tuple[int | None, int | None]
    ) -> bool:
        p0, p1 = params[0] or 0, params[1] or 0
        total = HEADER_SIZE + self.kind.area_size((p0, p1))
        try:
            self.seg = _os.segment_create(self.os_name, total, mode, LOCK_TIMEOUT)
        except FileExistsError:
            return False
        self.created = True
        try:
            mm = self.mm = _os.segment_map(
                self.seg, 0, total if self.kind.core_maps_area else HEADER_SIZE
            )
            raw_name = _names.encode_name(self.name)
            flags = FLAG_PERSISTENT if persistent else 0
            pid = os.getpid()
            tag = self.kind.tag()
            mm[NAME_OFFSET : NAME_OFFSET + len(raw_name)] = raw_name
            mm[TAG_OFFSET : TAG_OFFSET + len(tag)] = tag
            HEADER_FORMAT.pack_into(
                mm, 0, self._magic(), VERSION, STATE_INIT, HEADER_SIZE, flags, total,
                p0, p1, SLOT_COUNT, SLOT_OFFSET, len(raw_name), pid, time.time_ns(),
            )  # fmt: skip
            # Resources outside the segment that a dead creator may have left.
            self.kind.remove_extras(self.os_name)
            self.kind.on_create(self)
            self._register()
            # Ready last: an attacher never sees a half-made object.
            struct.pack_into("=I", mm, 12, STATE_READY)
            self.header = read_header(mm)
        except BaseException:
            # Undo what this call made (the name is ours: created with O_EXCL).
            self.kind.release(self.resources)
            self.kind.remove_extras(self.os_name)
            _os.segment_unlink(self.os_name)
            self._abandon()
            raise
        _os.segment_unlock(self.seg)
        return True

    def _magic(self) -> bytes:
        return MAGIC_PREFIX + self.kind.letter.encode() + b"\x00"

    def _attach_locked(
        self, deadline: float, persistent: bool, check: Callable[[Core, Header], None]
    ) -> str:
        if not _os.segment_lock(self.seg, max(0.0, deadline - time.monotonic())):
            raise TimeoutError(
                errno.ETIMEDOUT, "timed out waiting for the object's lock", self.name
            )
        try:
            size = self.seg.size
            if size is not None and size < HEADER_SIZE:
                return "uninitialised"
            mm = self.mm = _os.segment_map(self.seg, 0, HEADER_SIZE)
            header = read_header(mm)
            if header.state == STATE_INIT and header.magic in (bytes(8), self._magic()):
                return "uninitialised"
            if header.state == STATE_REMOVED:
                finish_removal(self.kind, self.os_name, header)
                return "removed"
            self._validate(header, size)
            self._check_tag(mm)
            if not _os.KERNEL_LIFETIME:
                live = self._reap()
                if (
                    not live
                    and not header.flags & FLAG_PERSISTENT
                    and not self.kind.abandoned_held(self.seg)
                ):
                    # Everyone who had it open died without closing: the
                    # object should already be gone.  Remove it now.
                    self._mark_removed()
                    return "dead"
            check(self, header)
            if header.total > HEADER_SIZE and self.kind.core_maps_area:
                mm.close()
                mm = self.mm = _os.segment_map(self.seg, 0, header.total)
            if persistent and not header.flags & FLAG_PERSISTENT:
                struct.pack_into("=I", mm, 20, header.flags | FLAG_PERSISTENT)
                header = read_header(mm)
            self.header = header
            self.kind.on_attach(self)
            try:
                self._register()
            except BaseException:
                self.kind.release(self.resources)
                raise
            return "ok"
        finally:
            if self.seg is not None:
                _os.segment_unlock(self.seg)

    def _check_tag(self, mm: mmap.mmap) -> None:
        # The tag names the in-memory layout of what the kind keeps in the
        # segment beyond ctipc's own fields (a pthread mutex differs between
        # glibc and musl): processes whose tags differ must not share it.
        expected = self.kind.tag()
        tag = bytes(mm[TAG_OFFSET : TAG_OFFSET + TAG_CAPACITY]).rstrip(b"\0")
        if tag != expected:
            raise IncompatibleError(
                f"{self.name!r} was made by a process whose {self.kind.label} layout is "
                f"{tag.decode('ascii', 'replace')!r}; this process uses "
                f"{expected.decode('ascii', 'replace')!r}",
                self.name,
            )

    def _validate(self, h: Header, size: int | None) -> None:
        if h.magic[:6] != MAGIC_PREFIX or h.magic[7:] != b"\x00":
            raise CorruptedError(f"{self.name!r} is not a ctipc object (bad magic)", self.name)
        if h.magic != self._magic():
            raise CorruptedError(f"{self.name!r} holds another kind of object", self.name)
        if h.version != VERSION:
            raise IncompatibleError(
                f"{self.name!r} has layout version {h.version}; this ctipc speaks {VERSION}",
                self.name,
            )
        if h.header_size != HEADER_SIZE and h.header_size in (16384, 65536, 12288):
            raise IncompatibleError(
                f"{self.name!r} was made for another page size (header of {h.header_size} "
                f"bytes; this process uses {HEADER_SIZE})",
                self.name,
            )
        if (
            h.state != STATE_READY
            or h.header_size != HEADER_SIZE
            or h.slots != SLOT_COUNT
            or h.slot_offset != SLOT_OFFSET
            or h.name_len > NAME_CAPACITY
            or h.total < HEADER_SIZE
            or (size is not None and size < h.total)  # truncated (macOS rounds up)
        ):
            raise CorruptedError(f"{self.name!r} has a corrupt header", self.name)

    # -- the attach table ----------------------------------------------------------
    def _slots(self) -> list[tuple[int, int, int, int, int]]:
        assert self.mm is not None
        return [SLOT.unpack_from(self.mm, SLOT_OFFSET + i * SLOT.size) for i in range(SLOT_COUNT)]

    def _set_slot(self, i: int, values: tuple[int, int, int, int, int]) -> None:
        assert self.mm is not None
        SLOT.pack_into(self.mm, SLOT_OFFSET + i * SLOT.size, *values)

    def _reap(self) -> int:
        """Clear the slots of dead processes; return how many live ones remain."""
        assert self.mm is not None
        return reap(self.mm)[0]

    def _register(self) -> None:
        if _os.KERNEL_LIFETIME:
            return
        pid, token, ns = this_process()
        free = None
        for i, (spid, opens, stoken, sns, _) in enumerate(self._slots()):
            if spid == pid and stoken == token and sns == ns:
                self._set_slot(i, (pid, opens + 1, token, ns, 0))
                self.registered = True
                return
            if spid == 0 and free is None:
                free = i
        if free is None:
            self._reap()
            free = next((i for i, s in enumerate(self._slots()) if s[0] == 0), None)
            if free is None:
                raise OSError(
                    errno.EUSERS, f"more than {SLOT_COUNT} processes have it open", self.name
                )
        self._set_slot(free, (pid, 1, token, ns, 0))
        self.registered = True

    def _unregister(self) -> None:
        pid, token, ns = this_process()
        for i, (spid, opens, stoken, sns, _) in enumerate(self._slots()):
            if spid == pid and stoken == token and sns == ns:
                self._set_slot(i, (pid, opens - 1, token, ns, 0) if opens > 1 else (0, 0, 0, 0, 0))
                break
        self.registered = False

    def _mark_removed(self) -> None:
        """With the lock held: mark the segment removed and unlink its names."""
        assert self.mm is not None
        struct.pack_into("=I", self.mm, 12, STATE_REMOVED)
        self.kind.remove_extras(self.os_name)
        _os.segment_unlink(self.os_name)

    def _remove_stale_uninitialised(self) -> None:
        try:
            seg = _os.segment_attach(self.os_name)
        except FileNotFoundError:
            return
        try:
            if not _os.segment_lock(seg, 0.0):
                return
            size = seg.size
            if size is not None and size < HEADER_SIZE:
                _os.segment_unlink(self.os_name)
            else:
                mm = _os.segment_map(seg, 0, HEADER_SIZE)
                try:
                    if read_header(mm).state == STATE_INIT:
                        struct.pack_into("=I", mm, 12, STATE_REMOVED)
                        self.kind.remove_extras(self.os_name)
                        _os.segment_unlink(self.os_name)
                finally:
                    mm.close()
        finally:
            _os.segment_close(seg)  # closing the descriptor drops its lock

    # -- close / unlink ------------------------------------------------------------
    def view(self, offset: int, length: int) -> memoryview:
        """A writable view of the mapping, released when this core closes
        (so that closing never meets a BufferError of its own making)."""
        assert self.mm is not None
        view = memoryview(self.mm)[offset : offset + length]
        self.views.append(view)
        return view

    def words(self, offset: int, count: int) -> memoryview:
        """``count`` native unsigned 64-bit words of the mapping at ``offset``
        (8-aligned), as a view whose item assignment is one aligned store.
        Released when this core closes; using it then raises ValueError."""
        assert self.mm is not None and offset % 8 == 0
        view = memoryview(self.mm)[offset : offset + 8 * count].cast("Q")
        self.views.append(view)
        return view

    def _abandon(self) -> None:
        """Drop this process's handles without touching the object."""
        for view in self.views:
            view.release()
        self.views.clear()
        if self.mm is not None:
            mm, self.mm = self.mm, None
            try:
                mm.close()
            except BufferError:
                pass  # the caller kept a view of a received message: unmapped with it
        if self.seg is not None:
            seg, self.seg = self.seg, None
            _os.segment_close(seg)

    def close(self, warn: bool = False) -> None:
        """Detach; the last process out removes the object (lifetime rule).

        ``warn`` is the finalizer's path (the owner was collected while open):
        errors are swallowed there and a ResourceWarning is emitted instead.
        """
        with self.lock:
            if self.closed or os.getpid() != self.pid:
                return  # a forked child never closes its parent's objects
            self.closed = True
            if self.finalizer is not None and not warn:
                self.finalizer.detach()
            try:
                self._detach()
            except Exception:
                if not warn:
                    raise
        if warn:
            warnings.warn(
                f"Implicitly closing ctipc {self.kind.label} {self.name!r}",
                ResourceWarning,
                stacklevel=2,
            )

    def _detach(self) -> None:
        try:
            if self.seg is None or self.mm is None or not self.registered:
                return
            if not _os.segment_lock(self.seg, LOCK_TIMEOUT):
                return  # left to the next open or gc, which reap our slot
            try:
                self._unregister()
                header = read_header(self.mm)
                if (
                    header.state == STATE_READY
                    and not header.flags & FLAG_PERSISTENT
                    and self._reap() == 0
                    and not self.kind.abandoned_held(self.seg)
                ):
                    self._mark_removed()
            finally:
                _os.segment_unlock(self.seg)
        finally:
            self._abandon()

    def unlink(self) -> None:
        """Remove the name now; processes that have it open keep using it.

        After ``close()`` the name is removed only if it still names the
        object this core had open (same creator and creation time), never a
        newer object another process made under the same name."""
        if _os.KERNEL_LIFETIME:
            return  # the name lives as long as a handle does (Windows)
        with self.lock:
            if not self.closed and self.seg is not None and self.mm is not None:
                if _os.segment_lock(self.seg, LOCK_TIMEOUT):
                    try:
                        if read_header(self.mm).state == STATE_READY:
                            self._mark_removed()
                    finally:
                        _os.segment_unlock(self.seg)
                return
        if self.header is not None:
            unlink_by_name(self.kind, self.name, self.header)

    def check_open(self) -> mmap.mmap:
        mm = self.mm
        if self.closed or mm is None:
            raise ValueError(f"ctipc {self.kind.label} {self.name!r} is closed")
        return mm


def unlink_by_name(kind: Kind, name: str, expected: Header | None = None) -> bool:
    """Remove the object called ``name`` if it exists (and, with
    ``expected``, only if it is that incarnation); True if it did."""
    if _os.KERNEL_LIFETIME:
        return False  # names die with their last handle (Windows)
    os_name = _names.os_name(kind.letter, "h", name)
    try:
        seg = _os.segment_attach(os_name)
    except FileNotFoundError:
        return False
    try:
        if not _os.segment_lock(seg, LOCK_TIMEOUT):
            raise TimeoutError(errno.ETIMEDOUT, "timed out waiting for the object's lock", name)
        size = seg.size
        if size is not None and size < HEADER_SIZE:
            return expected is None and _os.segment_unlink(os_name)
        mm = _os.segment_map(seg, 0, HEADER_SIZE)
        try:
            header = read_header(mm)
            if header.state == STATE_REMOVED:
                return finish_removal(kind, os_name, header)
            if expected is not None and (header.creator_pid, header.created_ns) != (
                expected.creator_pid,
                expected.created_ns,
            ):
                return False
            struct.pack_into("=I", mm, 12, STATE_REMOVED)
        finally:
            mm.close()
        kind.remove_extras(os_name)
        return _os.segment_unlink(os_name)
    finally:
        _os.segment_close(seg)


def finish_removal(kind: Kind, os_name: str, header: Header) -> bool:
    """With the lock of a segment marked removed held: unlink its name, if
    the name still leads to that segment (the same creator and creation
    time).  A remover marks and unlinks under the lock, so holding it and
    seeing the mark means the remover died in between, or finished and the
    name now leads to a newer object, which must be left alone."""
    try:
        seg = _os.segment_attach(os_name)
    except FileNotFoundError:
        return False
    try:
        size = seg.size
        if size is not None and size < HEADER_SIZE:
            return False
        mm = _os.segment_map(seg, 0, HEADER_SIZE)
        try:
            now = read_header(mm)
        finally:
            mm.close()
    finally:
        _os.segment_close(seg)
    if (now.state, now.creator_pid, now.created_ns) != (
        STATE_REMOVED,
        header.creator_pid,
        header.created_ns,
    ):
        return False
    kind.remove_extras(os_name)
    return _os.segment_unlink(os_name)
