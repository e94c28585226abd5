"""Named message queues: any number of producers and consumers, by name.

One shared-memory segment holds a byte ring of ``capacity`` bytes and two
crash-safe mutexes: the *put* mutex orders producers and guards ``tail``,
the *get* mutex orders consumers and guards ``head``.  A producer copies its
record beyond ``tail`` and only then publishes the new ``tail``: a producer
killed half-way leaves bytes no consumer can see.  Each side reads the other
side's position only under the other side's mutex (whose acquire/release
pairs order the memory accesses on every CPU, ARM included), and caches it,
so in steady state a put or a get takes one mutex.  Two named semaphores wake
sleeping consumers and producers; they are posted only when someone sleeps.
Layout: docs/FORMAT.md.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable

from . import _names, aio
from ._backend import MUTEX_TIMEOUT, WAIT_SLICE
from ._backend import os_backend as _os
from ._base import Closable, mutex_error
from ._errors import CorruptedError, Empty, Full, IncompatibleError
from ._segment import HEADER_SIZE, Core, Header, Kind, register_kind
from ._wait import check_open_args, check_size
from .listener import Listener

__all__ = ["MessageQueue"]

DEFAULT_CAPACITY = 1 << 20
DEFAULT_MAX_MESSAGE = 64 << 10

PAGE = max(4096, mmap.PAGESIZE)  # each mutex is mapped a page at a time
PUT_MUTEX = HEADER_SIZE  # offsets in the segment
GET_MUTEX = HEADER_SIZE + PAGE
CONTROL = HEADER_SIZE + 2 * PAGE
RING = HEADER_SIZE + 3 * PAGE
# Control page: native unsigned 64-bit words (struct "Q": one aligned store).
# Control page: native unsigned 64-bit words, by index.  Each is written by
# one item assignment through a memoryview cast to "Q": a single aligned
# 8-byte store, which a reader never sees half-done (struct.pack_into would
# zero the bytes first, then fill them in).
TAIL, PUTS, CONSUMERS_WAITING = 0, 1, 2  # under the put mutex
HEAD, GETS, PRODUCERS_WAITING = 8, 9, 10  # under the get mutex (another cache line)
CONTROL_WORDS = 16
_RECORD = struct.Struct("=II")  # payload length, reserved (0)
WRAP = 0xFFFFFFFF  # a record length meaning "continue at the start of the ring"
_U64_MASK = (1 << 64) - 1  # counters wrap; positions never get near (see below)
# Positions count bytes ever written: 2**62 is 146 years at 1 TB/s.  A larger
# one is corrupt, and refusing it keeps every sum below 2**64.
_POSITION_MAX = 1 << 62


def _record_size(n: int) -> int:
    return _RECORD.size + ((n + 7) & ~7)


class _QueueKind(Kind):
    letter = "q"
    label = "MessageQueue"

    def area_size(self, params: tuple[int, int]) -> int:
        return 3 * PAGE + (params[0] & ~7)

    def check_create(self, params: tuple[int, int]) -> None:
        _check_sizes(*params)

    def tag(self) -> bytes:
        return _os.MUTEX_ABI.encode("ascii")  # the queue's two mutexes

    def count(self, seg: Any) -> int | None:
        mm = _os.segment_map(seg, 0, CONTROL + PAGE)
        try:
            words = memoryview(mm)[CONTROL : CONTROL + 8 * CONTROL_WORDS].cast("Q")
            try:
                return _queued(words[PUTS], words[GETS])
            finally:
                words.release()
        finally:
            mm.close()

    def on_create(self, core: Core) -> None:
        assert core.mm is not None
        r = core.resources
        r["put"] = _os.mutex_create(core.seg, core.mm, PUT_MUTEX)
        r["get"] = _os.mutex_create(core.seg, core.mm, GET_MUTEX)
        for key, role in (("data", "r"), ("room", "w")):
            r[key] = _os.semaphore_open(_names.sibling(core.os_name, role), True, 0, core.mode)

    def on_attach(self, core: Core) -> None:
        assert core.mm is not None
        r = core.resources
        r["put"] = _os.mutex_open(core.seg, core.mm, PUT_MUTEX)
        r["get"] = _os.mutex_open(core.seg, core.mm, GET_MUTEX)
        for key, role in (("data", "r"), ("room", "w")):
            try:
                r[key] = _os.semaphore_open(_names.sibling(core.os_name, role), False, 0, 0)
            except FileNotFoundError:
                raise CorruptedError(f"a semaphore of queue {core.name!r} is missing") from None

    def release(self, resources: dict[str, Any]) -> None:
        for key in ("put", "get"):
            if key in resources:
                _os.mutex_close(resources.pop(key))
        for key in ("data", "room"):
            if key in resources:
                _os.semaphore_close(resources.pop(key))

    def remove_extras(self, seg_os_name: str) -> None:
        _os.semaphore_unlink(_names.sibling(seg_os_name, "r"))
        _os.semaphore_unlink(_names.sibling(seg_os_name, "w"))
        _os.mutex_unlink(seg_os_name, PUT_MUTEX)
        _os.mutex_unlink(seg_os_name, GET_MUTEX)


register_kind(_QueueKind())


def _queued(puts: int, gets: int) -> int:
    # Both counters wrap at 2**64; a "negative" difference is a snapshot
    # taken between a get and its put, or corrupt counters: 0.
    count = (puts - gets) & _U64_MASK
    return count if count <= _POSITION_MAX else 0


def _wake(sem: int, n: int) -> None:
    """Post up to ``n`` wake-ups, fewer where the semaphore already holds
    some: a sleeper killed while registered leaves the count of sleepers too
    high, and its posts must not pile up.  A wake-up is a hint (sleepers also
    wake every WAIT_SLICE), so a post the OS refuses (the value's limit) is
    dropped rather than failing a put or get whose message already moved."""
    pending = _os.semaphore_value(sem)
    if pending is not None:
        n -= pending
    if n > 0:
        try:
            _os.semaphore_post(sem, n)
        except OSError:
            pass


def _check_sizes(capacity: int, max_message: int) -> None:
    if max_message >= WRAP:
        raise ValueError("max_message must be below 4 GiB")
    if _record_size(max_message) > (capacity & ~7) // 2:
        raise ValueError(
            f"max_message={max_message} does not fit twice in capacity={capacity}: "
            f"capacity must be at least {2 * _record_size(max_message)}"
        )


def _data(message: object) -> memoryview:
    if isinstance(message, str):
        raise TypeError("a message is bytes-like, not str (encode it first)")
    try:
        view = memoryview(message)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a message is bytes-like, not {type(message).__name__}") from None
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    # Other formats and shapes are sent as their bytes (strided ones copied).
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


# How long a call that does not wait for messages or room (put_nowait,
# get_nowait) still waits for the other processes' critical sections, which
# last microseconds unless a holder is stopped (a dead one is taken over).
_MUTEX_PATIENCE = 1.0


def _patience() -> float:
    return time.monotonic() + _MUTEX_PATIENCE


def _deadlines(block: bool, timeout: float | None) -> tuple[float | None, float | None]:
    """(deadline for a message or room, deadline for a mutex), monotonic: a
    short or no timeout still waits out another process's critical section."""
    seconds = _queue_timeout(block, timeout)
    now = time.monotonic()
    if not block:
        return now, now + _MUTEX_PATIENCE
    if seconds is None:
        return None, None
    return now + seconds, now + max(seconds, _MUTEX_PATIENCE)


def _queue_timeout(block: bool, timeout: float | None) -> float | None:
    """Like queue.Queue: timeout only matters when blocking; None waits forever."""
    if not block or timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if timeout < 0 or timeout != timeout:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


class MessageQueue(Closable):
    """A queue of byte messages that any process can open by name.

    ``capacity`` is the size of the ring in bytes and ``max_message`` the
    largest message; both are used when creating (a record takes 8 bytes
    plus the message rounded up to 8).  A process that attaches gets the
    queue's own values; explicit values that contradict them raise
    :class:`ctipc.IncompatibleError`.  Each message is delivered once, in the
    order of the puts (so in order per producer).  See ``docs/FORMAT.md``.
    """

    _closing = False  # class default: also right after a failed __init__

    def __init__(
        self,
        name: str,
        *,
        capacity: int | None = None,
        max_message: int | None = None,
        create: bool | None = None,
        persistent: bool = False,
        permissions: int = 0o600,
    ) -> None:
        mode = check_open_args(name, create, permissions)
        check_size(capacity, "capacity")
        check_size(max_message, "max_message")
        if max_message is not None and max_message >= WRAP:
            raise ValueError("max_message must be below 4 GiB")  # whatever exists
        if capacity is not None and max_message is not None:
            _check_sizes(capacity, max_message)  # wrong whether creating or not
        cap = DEFAULT_CAPACITY if capacity is None else capacity
        biggest = DEFAULT_MAX_MESSAGE if max_message is None else max_message

        def check(core: Core, header: Header) -> None:
            for given, stored, what in (
                (capacity, header.param0, "capacity"),
                (max_message, header.param1, "max_message"),
            ):
                if given is not None and given != stored:
                    raise IncompatibleError(
                        f"MessageQueue {name!r} has {what}={stored}, not {given}", name
                    )
            ring = header.param0 & ~7
            if (
                header.total != RING + ring
                or header.param1 >= WRAP
                or _record_size(header.param1) > ring // 2
            ):
                raise CorruptedError(f"MessageQueue {name!r} has inconsistent sizes", name)

        core = Core(_QueueKind(), name)
        core.open(create, bool(persistent), mode, (cap, biggest), check)
        assert core.header is not None and core.mm is not None
        self._capacity: int = core.header.param0
        self._max_message: int = core.header.param1
        self._ring = self._capacity & ~7
        self._mm = core.mm
        self._w = core.words(CONTROL, CONTROL_WORDS)
        self._ring_view = core.view(RING, self._ring)
        r = core.resources
        self._put_mutex, self._get_mutex = r["put"], r["get"]
        self._data_sem, self._room_sem = r["data"], r["room"]
        # This process's view of the other side's position.  Positions only
        # grow, so a stale view is a conservative one.
        self._tail_seen = 0
        self._head_seen = 0
        self._closing = False
        self._start(core)

    # -- properties ------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Bytes of ring, as given when the queue was created."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """The largest message in bytes, as given when the queue was created."""
        return self._max_message

    def __len__(self) -> int:
        """Messages in the queue now (a snapshot: others may change it)."""
        self._enter()
        try:
            puts: int = self._w[PUTS]
            gets: int = self._w[GETS]
        finally:
            self._leave()
        return _queued(puts, gets)

    def _state(self) -> str:
        return f"messages={len(self)} capacity={self._capacity}"

    # -- locking -----------------------------------------------------------------
    def _lock(self, mutex: Any, deadline: float | None) -> bool:
        """Take a side's mutex (a dead holder's state needs no repair: a
        position is published by one store, after the bytes it covers)."""
        try:
            return self._lock_slices(mutex, deadline)
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _unlock(self, mutex: Any) -> None:
        try:
            _os.mutex_release(mutex)
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _lock_slices(self, mutex: Any, deadline: float | None) -> bool:
        if _os.mutex_acquire(mutex, 0.0) != MUTEX_TIMEOUT:
            return True
        while True:
            if deadline is None:
                slice_ = WAIT_SLICE
            else:
                slice_ = min(WAIT_SLICE, deadline - time.monotonic())
                if slice_ <= 0:
                    return False
            self._check_open()
            if _os.mutex_acquire(mutex, slice_) != MUTEX_TIMEOUT:
                return True

    def _refresh_tail(self, deadline: float | None, waiting: int = 0) -> bool:
        """Read ``tail`` under the put mutex; add ``waiting`` to the count of
        sleeping consumers there.  False if the mutex was not had in time."""
        if not self._lock(self._put_mutex, deadline):
            return False
        try:
            self._tail_seen = self._w[TAIL]
            if waiting:
                count = self._w[CONSUMERS_WAITING]
                self._w[CONSUMERS_WAITING] = max(0, count + waiting) & _U64_MASK
        finally:
            self._unlock(self._put_mutex)
        return True

    def _refresh_head(self, deadline: float | None, waiting: int = 0) -> bool:
        if not self._lock(self._get_mutex, deadline):
            return False
        try:
            self._head_seen = self._w[HEAD]
            if waiting:
                count = self._w[PRODUCERS_WAITING]
                self._w[PRODUCERS_WAITING] = max(0, count + waiting) & _U64_MASK
        finally:
            self._unlock(self._get_mutex)
        return True

    # -- put -----------------------------------------------------------------------
    def _append(self, views: list[memoryview], deadline: float | None) -> int:
        """Write as many of ``views`` as fit, in one critical section; return
        how many.  -1: the put mutex was not had before the deadline."""
        if not self._lock(self._put_mutex, deadline):
            return -1
        mm, ring = self._mm, self._ring
        written = 0
        try:
            tail = self._w[TAIL]
            if tail > _POSITION_MAX:
                raise CorruptedError(f"queue {self.name!r}: positions out of range", self.name)
            head = self._head_seen
            if head > tail:  # no older than the head: cannot pass the tail
                raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
            if tail > head + ring:  # this process's view of the head is old
                head = self._head_seen = tail - ring
            for view in views:
                n = view.nbytes
                size = _record_size(n)
                pos = tail % ring
                skip = ring - pos if pos + size > ring else 0
                if tail + skip + size - head > ring:
                    break
                if skip:
                    _RECORD.pack_into(mm, RING + pos, WRAP, 0)
                    tail += skip
                    pos = 0
                start = pos + _RECORD.size
                self._ring_view[start : start + n] = view  # (PyPy's mmap takes only bytes)
                _RECORD.pack_into(mm, RING + pos, n, 0)
                tail += size
                written += 1
            if written:
                # Publish: one aligned store, after every byte it covers.
                self._w[TAIL] = tail
                self._w[PUTS] = (self._w[PUTS] + written) & _U64_MASK
                sleepers = self._w[CONSUMERS_WAITING]
            else:
                sleepers = 0
        finally:
            self._unlock(self._put_mutex)
        if sleepers:
            _wake(self._data_sem, min(written, sleepers))
        return written

    def _put_views(self, views: list[memoryview], block: bool, timeout: float | None) -> int:
        """Put ``views`` in order; return how many were put before the
        deadline passed (``len(views)`` when all were)."""
        deadline, patience = _deadlines(block, timeout)
        sent = 0
        registered = retried = False
        try:
            while sent < len(views):
                done = self._append(views[sent:], patience)
                if done > 0:
                    sent += done
                    continue
                # No room as far as this process knew (or no mutex in time):
                # read the head again, registering as a sleeper once so that
                # a get from now on posts for us.
                if done < 0 or not self._refresh_head(patience, 0 if registered else 1):
                    break
                registered = True
                # Room by the fresh head: try again, once; a second miss in a
                # row waits (another producer took the room, or the
                # positions are inconsistent) so this never spins.
                if not retried and self._room_for(views[sent].nbytes):
                    retried = True
                    continue
                retried = False
                remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._check_open()
                _os.semaphore_wait(self._room_sem, min(WAIT_SLICE, remaining))
                patience = deadline
        finally:
            if registered:
                self._refresh_head(_patience(), -1)
        return sent

    def _room_for(self, nbytes: int) -> bool:
        """Is there room for a message of ``nbytes`` as far as the head this
        process saw?  (A hint, without the put mutex; _append decides.)"""
        tail: int = self._w[TAIL]
        if self._head_seen > tail:  # the head, read fresh, never passes a tail read later
            raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
        size = _record_size(nbytes)
        pos = tail % self._ring
        skip = self._ring - pos if pos + size > self._ring else 0
        return tail + skip + size - self._head_seen <= self._ring

    def put(self, data: bytes | bytearray | memoryview, block: bool = True,
            timeout: float | None = None) -> None:  # fmt: skip
        """Append a message (any bytes-like object of 0..max_message bytes).
        Raises :class:`ctipc.Full` if no room appeared before ``timeout``
        (at once if not ``block``); ValueError, with nothing written, if it
        is larger than ``max_message``."""
        view = self._checked(data)
        self._enter()
        try:
            if not self._put_views([view], block, timeout):
                raise Full
        finally:
            self._leave()

    def put_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """``put(data, block=False)``."""
        self.put(data, block=False)

    def put_many(self, messages: Iterable[bytes | bytearray | memoryview],
                 block: bool = True, timeout: float | None = None) -> None:  # fmt: skip
        """Append several messages, in order, with as few critical sections
        as room allows.  Every message is checked before any is written.  On
        :class:`ctipc.Full` (no room before ``timeout``) the messages before
        the first one that did not fit have been put; the exception says how
        many."""
        views = [self._checked(m) for m in messages]
        self._enter()
        try:
            sent = self._put_views(views, block, timeout)
        finally:
            self._leave()
        if sent < len(views):
            raise Full(f"{sent} of {len(views)} messages were put before the queue stayed full")

    def _checked(self, data: object) -> memoryview:
        view = _data(data)
        if view.nbytes > self._max_message:
            raise ValueError(
                f"message of {view.nbytes} bytes exceeds max_message={self._max_message}"
            )
        return view

    # -- get ------------------------------------------------------------------------
    def _take(self, limit: int, deadline: float | None) -> list[bytes] | None:
        """Take up to ``limit`` messages in one critical section.  [] if
        there were none up to the tail this process has seen; None if the
        get mutex was not had before the deadline."""
        if not self._lock(self._get_mutex, deadline):
            return None
        mm, ring = self._mm, self._ring
        out: list[bytes] = []
        try:
            head = self._w[HEAD]
            tail = self._tail_seen
            if tail < head:
                # Other consumers went past what this process saw of the tail;
                # look again (lock order is always get, then put).  Still
                # behind the head: the positions are corrupt.
                if not self._refresh_tail(deadline):
                    return out  # not in time: try again later
                tail = self._tail_seen
                if tail < head:
                    raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
            if tail - head > ring or tail > _POSITION_MAX:
                raise CorruptedError(f"queue {self.name!r}: positions out of range", self.name)
            while head < tail and len(out) < limit:
                pos = head % ring
                n, _ = _RECORD.unpack_from(mm, RING + pos)
                if n == WRAP:
                    # A producer writes a wrap marker only together with the
                    # record that follows it at the start of the ring.
                    head += ring - pos
                    pos = 0
                    if head >= tail:
                        raise CorruptedError(f"queue {self.name!r}: corrupt record", self.name)
                    n, _ = _RECORD.unpack_from(mm, RING)
                size = _record_size(n)
                if n > self._max_message or head + size > tail or pos + size > ring:
                    raise CorruptedError(f"queue {self.name!r}: corrupt record", self.name)
                start = RING + pos + _RECORD.size
                out.append(mm[start : start + n])
                head += size
            if out or head != self._w[HEAD]:
                self._w[HEAD] = head
                self._w[GETS] = (self._w[GETS] + len(out)) & _U64_MASK
                sleepers = self._w[PRODUCERS_WAITING]
            else:
                sleepers = 0
        finally:
            self._unlock(self._get_mutex)
        if sleepers and out:
            _wake(self._room_sem, min(len(out), sleepers))
        return out

    def _get(self, limit: int, block: bool, timeout: float | None) -> list[bytes]:
        deadline, patience = _deadlines(block, timeout)
        if self._tail_seen <= self._w[HEAD]:
            self._refresh_tail(patience)  # caught up with what we knew: look again
        got = self._take(limit, patience)
        if got:
            return got
        if not block:
            raise Empty
        registered = False
        try:
            while True:
                # Read the tail under the put mutex, registering as a sleeper
                # the first time, so that a put from now on posts for us.
                if self._refresh_tail(deadline, 0 if registered else 1):
                    registered = True
                    got = self._take(limit, deadline)
                    if got:
                        return got
                if deadline is None:
                    slice_ = WAIT_SLICE
                else:
                    slice_ = min(WAIT_SLICE, deadline - time.monotonic())
                    if slice_ <= 0:
                        raise Empty
                self._check_open()
                _os.semaphore_wait(self._data_sem, slice_)
        finally:
            if registered:
                self._refresh_tail(_patience(), -1)

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Remove and return the oldest message.  Raises
        :class:`ctipc.Empty` if none came before ``timeout`` (at once if
        not ``block``)."""
        self._enter()
        try:
            return self._get(1, block, timeout)[0]
        finally:
            self._leave()

    def get_nowait(self) -> bytes:
        """``get(block=False)``."""
        return self.get(block=False)

    def get_many(self, max_messages: int = 100, block: bool = True,
                 timeout: float | None = None) -> list[bytes]:  # fmt: skip
        """Remove and return up to ``max_messages`` messages, oldest first:
        at least one, waiting for it like ``get``, then whatever else is
        already there."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError("max_messages must be an int")
        if max_messages < 1:
            raise ValueError("max_messages must be one or more")
        self._enter()
        try:
            return self._get(max_messages, block, timeout)
        finally:
            self._leave()

    def wait_readable(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds (one slice at most) until a
        message is probably there, without taking it.  True may also mean a
        wake-up was used up: a caller that then takes nothing should give it
        back with ``_wake_consumer()``.  ``aget`` waits with this in a thread
        and takes the message in the event loop, so that cancelling it never
        loses a message."""
        self._enter()
        try:
            if not self._refresh_tail(time.monotonic() + timeout, 1):
                return False
            try:
                if self._tail_seen != self._w[HEAD]:
                    return True
                return _os.semaphore_wait(self._data_sem, max(0.0, min(WAIT_SLICE, timeout)))
            finally:
                self._refresh_tail(_patience(), -1)
        finally:
            self._leave()

    def wait_writable(self, timeout: float, nbytes: int = 0) -> bool:
        """Like ``wait_readable``, for room for a message of ``nbytes``."""
        self._enter()
        try:
            if not self._refresh_head(time.monotonic() + timeout, 1):
                return False
            try:
                if self._room_for(nbytes):
                    return True
                return _os.semaphore_wait(self._room_sem, max(0.0, min(WAIT_SLICE, timeout)))
            finally:
                self._refresh_head(_patience(), -1)
        finally:
            self._leave()

    def _wake_consumer(self) -> None:
        self._give_back(self._data_sem)

    def _wake_producer(self) -> None:
        self._give_back(self._room_sem)

    def _give_back(self, sem: int) -> None:
        try:
            self._enter()
        except ValueError:
            return  # closed: nobody here to wake
        try:
            _wake(sem, 1)
        finally:
            self._leave()

    def close(self) -> None:
        """Close this process's handle (idempotent); messages stay for the
        other processes that have the queue open (or, if persistent, for
        later ones).  Calls waiting in other threads raise ValueError first
        (within a wait slice), taking back their registration as sleepers."""
        self._closing = True
        give_up = time.monotonic() + _MUTEX_PATIENCE
        while self._inflight and time.monotonic() < give_up:
            time.sleep(0.002)  # they notice _closing between wait slices
        super().close()

    @property
    def closed(self) -> bool:
        return self._closing or super().closed

    def _check_open(self) -> None:
        if self._closing:
            raise ValueError("MessageQueue is closed")
        super()._check_open()

    def listen(self, callback: Callable[[bytes], object]) -> Listener:
        """Start a daemon thread calling ``callback(message)`` for each
        message, in order; returns its :class:`Listener` (``stop()`` it)."""
        return Listener(self, callback)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aio.iterate(self)

    async def aget(self) -> bytes:
        """``get()`` for asyncio: waits in a thread, never blocks the loop;
        cancelling it never loses or duplicates a message."""
        return await aio.aget(self)

    async def aput(self, data: bytes | bytearray | memoryview) -> None:
        """``put()`` for asyncio: waits for room in a thread, never blocks
        the loop; cancelling it never puts a message twice."""
        await aio.aput(self, data)
