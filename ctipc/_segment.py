"""Opening and closing an object's segment: the lifetime rule.

Every object is one shared-memory segment that starts with a header
(_header.py; the bytes are in docs/FORMAT.md) and, on POSIX, a table of the
processes attached to it.  A ``Core`` is one process's attachment: it creates
or attaches the segment (checking the header: everything read from shared
memory is untrusted), and applies the lifetime rule: an object lives while
any process has it open; the last one out removes it, and a process that died
without closing is noticed by the next open (or ``python -m ctipc gc``)
through its slot.  On Windows the kernel does the same with handles, so no
table is kept (``KERNEL_LIFETIME``).  Looking at and removing segments by
name is in _named.py; closing what is open at exit in _lifetime.py.

A Core is also where "closed" is kept, once: ``closing`` is set by
``close()`` (or ``begin_close()``), after which every call raises
ValueError; the OS handles are released only when no call is in flight
(``enter``/``leave``), so a close racing other threads never frees memory
they use.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
import warnings
import weakref

from . import _names
from ._backend import Mutex, Segment, SemaphoreHandle
from ._backend import os_backend as _os
from ._errors import CorruptedError, IncompatibleError
from ._header import (
    FLAG_PERSISTENT,
    HEADER_SIZE,
    NAME_CAPACITY,
    SLOT_COUNT,
    SLOT_OFFSET,
    STATE_INIT,
    STATE_READY,
    VERSION,
    Header,
    magic,
    read_header,
    read_tag,
    reap,
    register,
    set_flags,
    set_state,
    unregister,
    write_header,
    write_name,
)
from ._named import (
    BUSY,
    CREATING,
    REMOVED,
    Look,
    look,
    remove_if,
    remove_locked,
    stale_creation,
)
from ._named import lock as lock_segment
from ._wait import next_slice

# The OS handles a kind keeps for an open object, by its own keys.
Resources = dict[str, "Mutex | SemaphoreHandle"]

# How long an open waits for another process's create/attach/close to finish
# before it gives up (TimeoutError): far longer than any of them takes.
LOCK_TIMEOUT = 10.0
# How long a close waits for the segment lock before it leaves its slot to
# the next open or gc (which reap it) instead.
CLOSE_TIMEOUT = LOCK_TIMEOUT


# Interpreter exit: set by the exit-time close (_lifetime) before it closes
# anything.  From then on a thread other than the main thread parks for good
# where its call on a closed object ends, instead of raising: as CPython
# parks daemon threads at exit, so that none runs Python code while the
# process's C-level exit handlers run.  PyPy lets them run on, and crashed
# (SIGSEGV, in 5 of 2,200 exits) while a daemon thread printed the
# ValueError of its ctipc call and the main thread ran libcrypto's exit
# handlers.
EXITING: list[bool] = []
_NEVER = threading.Event()


def park_if_exiting() -> None:
    """Where a call on a closed object ends: at exit, park any thread but
    the main thread for good."""
    if EXITING and threading.get_ident() != threading.main_thread().ident:
        while True:  # (a wait with no timeout: nothing sets it)
            _NEVER.wait()


def _rename(error: OSError, name: str) -> OSError:
    """The same OSError (class, errno, message) naming the user's object."""
    if error.filename == name:
        return error
    new = type(error)(error.errno, error.strerror, name)
    new.__cause__ = error.__cause__
    return new


def _timeout(name: str) -> TimeoutError:
    return TimeoutError(errno.ETIMEDOUT, "timed out waiting for the object's lock", name)


class Kind:
    """What differs between object kinds: hooks run with the segment lock held.

    One instance per open (``Core(kind, name)``): an instance may keep what
    its caller asked for (the parameters to create with, and those to check
    on attach)."""

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

    def check_attach(self, name: str, header: Header) -> None:
        """Raise IncompatibleError if the existing object ``header``
        describes contradicts what the caller asked for, CorruptedError if
        its parameters are inconsistent (run when attaching, before the
        kind's area is mapped; the common fields are checked already)."""

    def on_create(self, core: Core) -> None:
        """Create the kind's own OS resources (no lock-free window exists)."""

    def on_attach(self, core: Core) -> None:
        """Open the kind's own OS resources in an attaching process."""

    def release(self, resources: Resources) -> None:
        """Close the OS handles ``on_create``/``on_attach`` put in
        ``resources`` (pop them: this may run twice).  Called when opening
        fails, and when the core is closed and no call is in flight."""

    def abandoned_held(self, seg: Segment) -> bool:
        """With the segment lock held and no live process attached: True if
        the object keeps a fact that outlives its users, so it must not be
        reaped (a Lock whose holder died holding it: the next ``acquire``
        must still report ``owner_died``).  Reads only; changes nothing."""
        return False

    def count(self, seg: Segment) -> int | None:
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
        self.seg: Segment | None = None
        self.mm: mmap.mmap | None = None
        self.header: Header | None = None
        self.identity: object = None  # the segment's, once open
        self.pid = os.getpid()
        self.created = False
        self.registered = False
        #: the one "closed" flag: set at the start of closing, never cleared
        self.closing = False
        self.close_started = False  # close() ran (the flag alone: begin_close)
        self.finished = False  # the handles are released
        # One entry per call in progress in any thread (list append and
        # remove are atomic), and one per Lock held by a thread of this
        # process.  A plain call's entry is None; the signal-safe calls of
        # Lock and Semaphore use an object of their own (``leave_call``).
        self.inflight: list[object] = []
        self.resources: Resources = {}
        self.mode = 0o600  # the permissions given to open (used when creating)
        self.lock = threading.Lock()
        self.finalizer: weakref.finalize | None = None
        self.views: list[memoryview] = []  # released with the mapping
        self.lent: list[memoryview] = []  # handed to the caller: released at closing

    # -- open ------------------------------------------------------------------
    def open(
        self,
        create: bool | None,
        persistent: bool,
        mode: int,
        params: tuple[int | None, int | None],
    ) -> None:
        if persistent and not _os.PERSISTENT:
            raise ValueError(f"persistent objects are not supported on {_os.PLATFORM}")
        self.mode = mode
        try:
            self._open(create, persistent, mode, params)
        except OSError as e:
            self._abandon()
            raise _rename(e, self.name) from None
        except BaseException:
            self._abandon()
            raise
        assert self.seg is not None  # (opened, else it raised)
        self.identity = self.seg.identity

    def _open(
        self,
        create: bool | None,
        persistent: bool,
        mode: int,
        params: tuple[int | None, int | None],
    ) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
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
                if self._try_create(persistent, mode, params, deadline):
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
            outcome = self._attach_locked(deadline, persistent)
            if outcome == "ok":
                return
            self._abandon()
            if outcome == "creating":
                time.sleep(0.001)  # its creator is at work (or it is left for the next look)
            elif outcome == "dead" and create is False:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.name)
            # "removed" / "dead": the name is gone or going; open again

    def _try_create(
        self,
        persistent: bool,
        mode: int,
        params: tuple[int | None, int | None],
        deadline: float,
    ) -> bool:
        p0, p1 = params[0] or 0, params[1] or 0
        total = HEADER_SIZE + self.kind.area_size((p0, p1))
        while True:
            try:
                # One slice for the new segment's lock (an attacher that
                # opened the name at once holds it for microseconds): the
                # backend removes the name again when it times out.
                self.seg = _os.segment_create(self.os_name, total, mode, next_slice(deadline))
                break
            except FileExistsError:
                return False
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
        try:
            named = _os.segment_named(self.seg)
        except BaseException:
            self._abandon()  # not known to be ours: left for the stale rule
            raise
        if not named:
            # Between its creation and our lock, another process took the
            # new segment for one whose creator died and removed it: it is
            # nobody's; create again.
            self._abandon()
            return False
        self.created = True
        try:
            mm = self.mm = _os.segment_map(
                self.seg, 0, total if self.kind.core_maps_area else HEADER_SIZE
            )
            raw_name = _names.encode_name(self.name)
            write_name(mm, raw_name, self.kind.tag())
            write_header(mm, Header(
                magic(self.kind.letter), VERSION, STATE_INIT, HEADER_SIZE,
                FLAG_PERSISTENT if persistent else 0, total, p0, p1, SLOT_COUNT,
                SLOT_OFFSET, len(raw_name), os.getpid(), time.time_ns(),
            ))  # fmt: skip
            # Resources outside the segment that a dead creator may have left.
            self.kind.remove_extras(self.os_name)
            self.kind.on_create(self)
            self._register()
            # Ready last: an attacher never sees a half-made object.
            set_state(mm, STATE_READY)
            self.header = read_header(mm)
        except BaseException:
            # Undo what this call made (the name is ours: created with O_EXCL,
            # and we hold its lock).
            self.kind.release(self.resources)
            self.kind.remove_extras(self.os_name)
            _os.segment_unlink(self.os_name)
            self._abandon()
            raise
        _os.segment_unlock(self.seg)
        return True

    def _attach_locked(self, deadline: float, persistent: bool) -> str:
        seg = self.seg
        assert seg is not None  # attached by the caller
        if not lock_segment(seg, deadline):
            raise _timeout(self.name)
        try:
            found = look(seg, self.kind.letter)
            mm = self.mm = found.mm
            if found.state == CREATING:
                if stale_creation(seg):
                    remove_locked(self.kind, seg, mm)
                    return "removed"
                return "creating"
            if found.state == REMOVED:
                remove_locked(self.kind, seg, None)  # its remover died half-way
                return "removed"
            header = found.header
            assert header is not None and mm is not None
            self._check_owner(seg)
            self._validate(header, seg.size)
            self._check_tag(mm)
            if not _os.KERNEL_LIFETIME:
                live = reap(mm)[0]
                if (
                    not live
                    and not header.flags & FLAG_PERSISTENT
                    and not self.kind.abandoned_held(seg)
                ):
                    # Everyone who had it open died without closing: the
                    # object should already be gone.  Remove it now.
                    remove_locked(self.kind, seg, mm)
                    return "dead"
            self.kind.check_attach(self.name, header)
            if header.total > HEADER_SIZE and self.kind.core_maps_area:
                mm.close()
                mm = self.mm = _os.segment_map(seg, 0, header.total)
            if persistent and not header.flags & FLAG_PERSISTENT:
                set_flags(mm, header.flags | FLAG_PERSISTENT)
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

    def _check_owner(self, seg: Segment) -> None:
        # A private object (no group or other bits asked for) is never one
        # another user made: that user could read and write it, and may have
        # created it first on purpose (squatting the name).
        owner = seg.other_owner
        if owner is not None and not self.mode & 0o077:
            raise PermissionError(
                errno.EACCES,
                f"it belongs to another user (uid {owner}) and a private object "
                f"(permissions={self.mode:#o}) was asked for; to share an object "
                "between users, open it with permissions= that include group or "
                "other bits",
                self.name,
            )

    def _check_tag(self, mm: mmap.mmap) -> None:
        # The tag names the in-memory layout of what the kind keeps in the
        # segment beyond ctipc's own fields (a pthread mutex differs between
        # glibc and musl): processes whose tags differ must not share it.
        expected = self.kind.tag()
        tag = read_tag(mm)
        if tag != expected:
            raise IncompatibleError(
                f"{self.name!r} was made by a process whose {self.kind.label} layout is "
                f"{tag.decode('ascii', 'replace')!r}; this process uses "
                f"{expected.decode('ascii', 'replace')!r}",
                self.name,
            )

    def _validate(self, h: Header, size: int | None) -> None:
        if h.magic[:6] != magic("")[:6] or h.magic[7:] != b"\x00":
            raise CorruptedError(f"{self.name!r} is not a ctipc object (bad magic)", self.name)
        if h.magic != magic(self.kind.letter):
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
    def _register(self) -> None:
        if _os.KERNEL_LIFETIME:
            return
        assert self.mm is not None
        register(self.mm)
        self.registered = True

    # -- calls in flight, close ------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.closing

    def enter(self) -> None:
        """Start of a call that uses the object's handles or memory: pair with
        ``leave``.  ValueError once closing."""
        self.inflight.append(None)
        if self.closing:
            self.leave()
            raise self.closed_error()

    def closed_error(self) -> ValueError:
        return ValueError(f"{self.kind.label} is closed")

    def hold(self) -> None:
        """Count a use that outlives its call (a Lock held by a thread):
        the handles stay until the matching ``leave``."""
        self.inflight.append(None)

    def leave(self) -> None:
        self.inflight.remove(None)  # (not another call's own mark)
        if self.closing:
            self.left()

    def left(self) -> None:
        """The end of ``leave`` once closing has begun, for the hot paths
        that remove their mark inline (``inflight.remove(None)``, then this
        if ``closing``): the last call out frees the handles."""
        # close() sets ``closing`` before ``close_started``: a call entered
        # after that is refused without using the handles, and one entered
        # before is still in the list (``_finish`` checks it again).
        if self.close_started and not self.inflight:
            self._finish(False)
        park_if_exiting()

    def leave_call(self, mark: object) -> None:
        """End of the call marked in flight by ``mark`` (nothing if it has
        ended already): the ``leave`` of the calls that mark themselves."""
        inflight = self.inflight
        if mark in inflight:
            inflight.remove(mark)
            if self.close_started and not inflight:
                self._finish(False)
        if self.closing:
            park_if_exiting()

    def finish(self) -> None:
        """What the last call to leave a closed core does, for the hot paths
        that remove their mark inline: free the handles."""
        self._finish(False)

    def view(self, offset: int, length: int) -> memoryview:
        """A writable view of the mapping for ctipc's own use, released with
        the mapping (so that closing never meets a BufferError of its own
        making)."""
        assert self.mm is not None
        view = memoryview(self.mm)[offset : offset + length]
        self.views.append(view)
        return view

    def words(self, offset: int, count: int, wide: bool = True) -> memoryview:
        """``count`` native unsigned words of the mapping at ``offset``
        (aligned), 64-bit or (``wide=False``) 32-bit, as a view whose item
        assignment is one aligned store.  Released with the mapping; using it
        then raises ValueError."""
        size = 8 if wide else 4
        assert self.mm is not None and offset % size == 0
        raw = memoryview(self.mm)[offset : offset + size * count]
        view = raw.cast("Q") if wide else raw.cast("I")
        self.views.append(view)
        return view

    def lend(self, view: memoryview) -> memoryview:
        """Register a view handed to the caller (a message inside a receive
        block): it is released as soon as closing begins, so that using it
        raises ValueError on every interpreter (releasing the view it was cut
        from is not enough: PyPy and CPython keep slices usable).  Pair with
        ``reclaim``."""
        self.lent.append(view)
        return view

    def reclaim(self, view: memoryview) -> None:
        """Release a lent view (BufferError ignored: the caller kept an export
        of it, valid only inside its block)."""
        try:
            self.lent.remove(view)
        except ValueError:
            pass
        _release(view)

    def begin_close(self) -> None:
        """Set the one "closed" flag: calls in other threads see it at their
        next check (between wait slices) and raise ValueError; new calls raise
        at once; lent views are released.  The handles stay until ``close``
        and the last call in flight have both ended."""
        self.closing = True
        while self.lent:
            _release(self.lent.pop())

    def close(self, warn: bool = False, at_exit: bool = False) -> None:
        """Detach; the last process out removes the object (lifetime rule).

        ``warn`` is the finalizer's path (the owner was collected while open):
        errors are swallowed there and a ResourceWarning is emitted instead.
        ``at_exit``: the interpreter exits (threads may still be in calls).
        """
        with self.lock:
            if self.close_started or os.getpid() != self.pid:
                return  # a forked child never closes its parent's objects
            # The flag first: a call that leaves once close_started is set
            # (and may free the handles) must find every later call refused.
            self.begin_close()
            self.close_started = True
            if self.finalizer is not None and not warn:
                self.finalizer.detach()
        if not self.inflight:
            self._finish(not warn)
        elif at_exit:
            # Threads (daemon threads, at exit) are still in calls or hold a
            # Lock: leave our slot, under the segment lock, but keep every
            # handle and mapping they may use (the OS frees them with the
            # process), and remove nothing: a Lock held now is held by a
            # process about to die, which the next user must learn.
            self._detach(remove=False)
        if warn:
            warnings.warn(
                f"Implicitly closing ctipc {self.kind.label} {self.name!r}",
                ResourceWarning,
                stacklevel=2,
            )

    def _finish(self, raise_errors: bool) -> None:
        # Run once, by close() or the last call to leave after it.
        with self.lock:
            if self.finished or self.inflight:
                return
            self.finished = True
        try:
            try:
                self._detach(remove=True)
            finally:
                self._abandon()
        except Exception:
            if raise_errors:
                raise

    def _detach(self, remove: bool) -> None:
        with self.lock:
            if self.seg is None or self.mm is None or not self.registered:
                return
            if not lock_segment(self.seg, time.monotonic() + CLOSE_TIMEOUT):
                return  # left to the next open or gc, which reap our slot
            try:
                unregister(self.mm)
                self.registered = False
                header = read_header(self.mm)
                if (
                    remove
                    and header.state == STATE_READY
                    and not header.flags & FLAG_PERSISTENT
                    and reap(self.mm)[0] == 0
                    and not self.kind.abandoned_held(self.seg)
                ):
                    remove_locked(self.kind, self.seg, self.mm)
            finally:
                _os.segment_unlock(self.seg)

    def _abandon(self) -> None:
        """Drop this process's handles without touching the object."""
        self.kind.release(self.resources)
        while self.lent:
            _release(self.lent.pop())
        for view in self.views:
            _release(view)
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

    def unlink(self) -> None:
        """Remove the name now; processes that have it open keep using it.

        After ``close()`` the name is removed only if it still leads to the
        object this core had open, never a newer object another process made
        under the same name."""
        if _os.KERNEL_LIFETIME:
            return  # the name lives as long as a handle does (Windows)
        with self.lock:
            if not self.finished and self.seg is not None and self.mm is not None:
                if not lock_segment(self.seg, time.monotonic() + LOCK_TIMEOUT):
                    raise _timeout(self.name)
                try:
                    if read_header(self.mm).state == STATE_READY:
                        remove_locked(self.kind, self.seg, self.mm)
                finally:
                    _os.segment_unlock(self.seg)
                return
        if self.header is not None:
            unlink_by_name(self.kind, self.name, (self.identity, self.header))


def _release(view: memoryview) -> None:
    try:
        view.release()
    except BufferError:
        pass  # exported by the caller: freed with its last export


def unlink_by_name(kind: Kind, name: str, expected: tuple[object, Header] | None = None) -> bool:
    """Remove the object called ``name`` if it exists (and, with
    ``expected``, only if it is that incarnation: the same segment and
    header); True if it did."""
    if _os.KERNEL_LIFETIME:
        return False  # names die with their last handle (Windows)

    def decide(found: Look) -> bool:
        if expected is None:
            return True
        identity, header = expected
        return (
            found.header is not None
            and found.seg is not None
            and found.seg.identity == identity
            and (found.header.creator_pid, found.header.created_ns)
            == (header.creator_pid, header.created_ns)
        )

    os_name = _names.os_name(kind.letter, "h", name)
    try:
        removed, state = remove_if(kind, os_name, time.monotonic() + LOCK_TIMEOUT, decide)
    except OSError as e:
        raise _rename(e, name) from None
    if state == BUSY:
        raise _timeout(name)
    return removed
