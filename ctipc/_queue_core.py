"""The machinery behind MessageQueue: locking, the put and get critical
sections, waiting, and the receive/reserve blocks (mq.py has the public
calls, _ring.py the layout).

A producer copies its record beyond ``tail`` and only then publishes the new
``tail``: a producer killed half-way leaves bytes no consumer can see.  Each
side reads the other side's position only under the other side's mutex
(whose acquire/release pairs order the memory accesses on every CPU, ARM
included), and caches it, so in steady state a put or a get takes one mutex.
A caller that finds nothing to do polls the other side's position for a few
microseconds (no system call) before it sleeps on a named semaphore; those
are posted only when someone sleeps.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ._args import check_open_args, check_size
from ._backend import MUTEX_TIMEOUT, WAIT_SLICE
from ._backend import os_backend as _os
from ._base import Closable, mutex_error
from ._errors import CorruptedError, Empty, waited
from ._ring import (
    CONSUMERS_WAITING,
    CONTROL,
    CONTROL_WORDS,
    DEFAULT_CAPACITY,
    DEFAULT_MAX_MESSAGE,
    GETS,
    HEAD,
    MUTEX_PATIENCE,
    POSITION_MAX,
    PRODUCERS_WAITING,
    PUTS,
    RECEIVING,
    RECORD,
    RING,
    TAIL,
    U64_MASK,
    WRAP,
    QueueKind,
    as_bytes_view,
    check_sizes,
    deadlines,
    patience_deadline,
    queued,
    record_size,
    wake,
)
from ._segment import Core
from ._wait import Spinner

__all__ = ["QueueCore"]


class QueueCore(Closable):
    """MessageQueue's state and critical sections (see mq.py)."""

    # The thread inside a ``receive`` or ``reserve`` block of this handle,
    # which holds one of the queue's mutexes: its other calls on the handle
    # would wait for itself, so they raise instead.
    _txn_thread: int | None = None

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
        mode = check_open_args(name, create, persistent, permissions)
        check_size(capacity, "capacity")
        check_size(max_message, "max_message")
        if max_message is not None and max_message >= WRAP:
            raise ValueError("max_message must be below 4 GiB")  # whatever exists
        if capacity is not None and max_message is not None:
            check_sizes(capacity, max_message)  # wrong whether creating or not
        cap = DEFAULT_CAPACITY if capacity is None else capacity
        biggest = DEFAULT_MAX_MESSAGE if max_message is None else max_message
        core = Core(QueueKind(capacity, max_message), name)
        core.open(create, bool(persistent), mode, (cap, biggest))
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
        self._spinner = Spinner()
        self._lock_spinner = Spinner()
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
        return queued(puts, gets)

    def _state(self) -> str:
        return f"messages={len(self)} capacity={self._capacity}"

    # -- locking -----------------------------------------------------------------
    def _lock(self, mutex: Any, deadline: float | None) -> int:
        """Take a side's mutex; the MUTEX_* outcome, MUTEX_TIMEOUT (0) if it
        was not had by the deadline.  A dead holder's state needs no repair:
        a position is published by one store, after the bytes it covers."""
        try:
            outcome: int = _os.mutex_acquire(mutex, 0.0)
            if outcome == MUTEX_TIMEOUT:
                outcome = self._lock_slices(mutex, deadline)
            return outcome
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _unlock(self, mutex: Any) -> None:
        try:
            _os.mutex_release(mutex)
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _lock_slices(self, mutex: Any, deadline: float | None) -> int:
        # Critical sections last microseconds: polling briefly usually gets
        # the mutex without sleeping in the kernel and being woken.
        polled = [MUTEX_TIMEOUT]

        def attempt() -> bool:
            polled[0] = _os.mutex_acquire(mutex, 0.0)
            return polled[0] != MUTEX_TIMEOUT

        if self._lock_spinner.spin(attempt):
            return polled[0]
        while True:
            if deadline is None:
                slice_ = WAIT_SLICE
            else:
                slice_ = min(WAIT_SLICE, deadline - time.monotonic())
                if slice_ <= 0:
                    return MUTEX_TIMEOUT
            self._check_open()
            outcome: int = _os.mutex_acquire(mutex, slice_)
            if outcome != MUTEX_TIMEOUT:
                return outcome

    def _refresh_tail(self, deadline: float | None, waiting: int = 0) -> bool:
        """Read ``tail`` under the put mutex; add ``waiting`` to the count of
        sleeping consumers there.  False if the mutex was not had in time."""
        if not self._lock(self._put_mutex, deadline):
            return False
        try:
            self._tail_seen = self._w[TAIL]
            if waiting:
                count = self._w[CONSUMERS_WAITING]
                self._w[CONSUMERS_WAITING] = max(0, count + waiting) & U64_MASK
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
                self._w[PRODUCERS_WAITING] = max(0, count + waiting) & U64_MASK
        finally:
            self._unlock(self._get_mutex)
        return True

    def _spin(self, index: int, seen: int) -> bool:
        """Poll control word ``index`` for a while (see _wait.Spinner); True
        once it is no longer ``seen``.  Read without its mutex, so only a
        hint that the caller confirms under the mutex."""
        words = self._w
        return words[index] != seen or self._spinner.spin(lambda: words[index] != seen)

    def _check_txn(self) -> None:
        if self._txn_thread is not None and self._txn_thread == threading.get_ident():
            raise RuntimeError(
                "this thread is inside a receive() or reserve() block of this MessageQueue"
            )

    # -- put -----------------------------------------------------------------------
    def _tail_checked(self) -> tuple[int, int]:
        """(tail, the freshest head known), under the put mutex."""
        tail: int = self._w[TAIL]
        if tail > POSITION_MAX:
            raise CorruptedError(f"queue {self.name!r}: positions out of range", self.name)
        head = self._head_seen
        if head > tail:  # no older than the head: cannot pass the tail
            raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
        if tail > head + self._ring:  # this process's view of the head is old
            head = self._head_seen = tail - self._ring
        return tail, head

    def _append(self, views: list[bytes | memoryview], deadline: float | None) -> int:
        """Write as many of ``views`` as fit, in one critical section; return
        how many.  -1: the put mutex was not had before the deadline."""
        if not self._lock(self._put_mutex, deadline):
            return -1
        mm, ring, ring_view, words = self._mm, self._ring, self._ring_view, self._w
        written = 0
        try:
            tail, head = self._tail_checked()
            for view in views:
                n = len(view)  # bytes, or a 1-D memoryview of bytes (as_bytes_view)
                size = 8 + ((n + 7) & ~7)  # record_size(n), inline: the hot loop
                pos = tail % ring
                skip = ring - pos if pos + size > ring else 0
                if tail + skip + size - head > ring:
                    break
                if skip:
                    RECORD.pack_into(mm, RING + pos, WRAP, 0)
                    tail += skip
                    pos = 0
                ring_view[pos + 8 : pos + 8 + n] = view  # (PyPy's mmap takes only bytes)
                RECORD.pack_into(mm, RING + pos, n, 0)
                tail += size
                written += 1
            if written:
                # Publish: one aligned store, after every byte it covers.
                words[TAIL] = tail
                words[PUTS] = (words[PUTS] + written) & U64_MASK
                sleepers = words[CONSUMERS_WAITING]
            else:
                sleepers = 0
        finally:
            self._unlock(self._put_mutex)
        if sleepers:
            wake(self._data_sem, min(written, sleepers))
        return written

    def _reserve_at(self, nbytes: int, deadline: float | None) -> tuple[int, int, int] | int:
        """Room for one record of ``nbytes``: (tail, position, bytes skipped
        to wrap) with the put mutex held; 0 if no room (mutex released);
        -1 if the mutex was not had before the deadline."""
        if not self._lock(self._put_mutex, deadline):
            return -1
        try:
            tail, head = self._tail_checked()
            place = self._place(tail, head, nbytes)
        except BaseException:
            self._unlock(self._put_mutex)
            raise
        if place is None:
            self._unlock(self._put_mutex)
            return 0
        return (tail, *place)

    def _place(self, tail: int, head: int, nbytes: int) -> tuple[int, int] | None:
        """Where a record of ``nbytes`` goes after ``tail``: (position in the
        ring, bytes skipped to wrap), or None if it does not fit before
        ``head``.  (_append does the same inline.)"""
        size = record_size(nbytes)
        pos = tail % self._ring
        skip = self._ring - pos if pos + size > self._ring else 0
        if tail + skip + size - head > self._ring:
            return None
        return pos, skip

    def _produce(
        self, views: list[bytes | memoryview], nbytes: int, block: bool, timeout: float | None
    ) -> tuple[int, tuple[int, int, int] | None, bool]:
        """Put ``views`` in order or, with no views, reserve room for one
        record of ``nbytes``.  Returns (how many were put, the reservation
        (put mutex held) or None, whether this call is still registered as a
        sleeping producer: only with a reservation, whose end unregisters,
        after the put mutex, since the lock order is get, then put)."""
        sent = 0
        if views and timeout is None and block is True and self._txn_thread is None:
            # The common call finds room at once: no deadline to work out.
            sent = self._append(views, None)
            if sent == len(views):
                return sent, None, False
        if self._txn_thread is not None:
            self._check_txn()
        deadline, patience = deadlines(block, timeout)
        count = len(views) or 1
        registered = retried = spun = False
        held: tuple[int, int, int] | None = None
        try:
            while sent < count:
                if views:
                    done = self._append(views[sent:], patience)
                else:
                    outcome = self._reserve_at(nbytes, patience)
                    if isinstance(outcome, tuple):
                        held = outcome
                        return 1, held, registered
                    done = outcome
                if done > 0:
                    sent += done
                    continue
                if done == 0 and not spun and block:
                    # Blocking and full: a consumer may make room in moments.
                    spun = True
                    if self._spin(HEAD, self._head_seen):
                        self._refresh_head(patience)
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
                size = len(views[sent]) if views else nbytes
                if not retried and self._room_for(size):
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
            if registered and held is None:
                self._refresh_head(patience_deadline(), -1)
        return sent, None, False

    def _room_for(self, nbytes: int) -> bool:
        """Is there room for a message of ``nbytes`` as far as the head this
        process saw?  (A hint, without the put mutex; _append decides.)"""
        tail: int = self._w[TAIL]
        if self._head_seen > tail:  # the head, read fresh, never passes a tail read later
            raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
        return self._place(tail, self._head_seen, nbytes) is not None

    def _checked(self, data: object) -> memoryview:
        view = as_bytes_view(data)
        if view.nbytes > self._max_message:
            raise ValueError(
                f"message of {view.nbytes} bytes exceeds max_message={self._max_message}"
            )
        return view

    # -- get ------------------------------------------------------------------------
    def _bounds(self, deadline: float | None) -> tuple[int, int] | None:
        """(head, tail) under the get mutex, the tail read again if other
        consumers went past what this process saw of it; None if the put
        mutex was not had in time for that."""
        head: int = self._w[HEAD]
        tail = self._tail_seen
        if tail < head:
            # Lock order is always get, then put.  Still behind the head
            # after a fresh look: the positions are corrupt.
            if not self._refresh_tail(deadline):
                return None
            tail = self._tail_seen
            if tail < head:
                raise CorruptedError(f"queue {self.name!r}: head beyond tail", self.name)
        if tail - head > self._ring or tail > POSITION_MAX:
            raise CorruptedError(f"queue {self.name!r}: positions out of range", self.name)
        return head, tail

    def _record(self, head: int, tail: int) -> tuple[int, int, int]:
        """The record at ``head`` (< ``tail``), checked against the ring:
        (offset of its payload in the mapping, its length, the head after
        it).  Everything in the ring is untrusted."""
        ring = self._ring
        pos = head % ring
        n, _ = RECORD.unpack_from(self._mm, RING + pos)
        if n == WRAP:
            # A producer writes a wrap marker only together with the record
            # that follows it at the start of the ring.
            head += ring - pos
            pos = 0
            if head >= tail:
                raise CorruptedError(f"queue {self.name!r}: corrupt record", self.name)
            n, _ = RECORD.unpack_from(self._mm, RING)
        size = 8 + ((n + 7) & ~7)  # record_size(n), inline: once per message
        if n > self._max_message or head + size > tail or pos + size > ring:
            raise CorruptedError(f"queue {self.name!r}: corrupt record", self.name)
        return RING + pos + 8, n, head + size

    def _take(self, limit: int, deadline: float | None) -> list[bytes] | None:
        """Take up to ``limit`` messages in one critical section.  [] if
        there were none up to the tail this process has seen; None if the
        get mutex was not had before the deadline."""
        if not self._lock(self._get_mutex, deadline):
            return None
        mm, words, record = self._mm, self._w, self._record
        out: list[bytes] = []
        try:
            bounds = self._bounds(deadline)
            if bounds is None:
                return out  # not in time: try again later
            head, tail = bounds
            start = head
            while head < tail and len(out) < limit:
                offset, n, head = record(head, tail)
                out.append(mm[offset : offset + n])
            if head != start:
                words[HEAD] = head
                words[GETS] = (words[GETS] + len(out)) & U64_MASK
                if words[RECEIVING]:
                    words[RECEIVING] = 0  # a receive that did not finish: taken now
                sleepers = words[PRODUCERS_WAITING]
            else:
                sleepers = 0
        finally:
            self._unlock(self._get_mutex)
        if sleepers and out:
            wake(self._room_sem, min(len(out), sleepers))
        return out

    def _hold(self, limit: int, deadline: float | None) -> tuple[int, int, int, bool] | None:
        """The oldest message, with the get mutex held: (payload offset,
        length, head after it, redelivered).  None, the mutex released, if
        there is none up to the tail this process has seen or the mutex was
        not had in time."""
        if not self._lock(self._get_mutex, deadline):
            return None
        words = self._w
        try:
            bounds = self._bounds(deadline)
            if bounds is not None and bounds[0] < bounds[1]:
                offset, n, after = self._record(*bounds)
                redelivered = bool(words[RECEIVING])
                words[RECEIVING] = 1
                return offset, n, after, redelivered
        except BaseException:
            self._unlock(self._get_mutex)
            raise
        self._unlock(self._get_mutex)
        return None

    def _consume(self, step: Callable[[int, float | None], Any], limit: int, block: bool,
                 timeout: float | None) -> Any:  # fmt: skip
        """Run ``step(limit, mutex deadline)`` (_take or _hold) until it
        returns something, waiting for messages in between."""
        if (
            timeout is None
            and block is True
            and self._txn_thread is None
            and self._tail_seen > self._w[HEAD]  # a message as far as we know
        ):
            got = step(limit, None)  # the common call: no deadline to work out
            if got:
                return got
        if self._txn_thread is not None:
            self._check_txn()
        deadline, patience = deadlines(block, timeout)
        if self._tail_seen <= self._w[HEAD]:
            self._refresh_tail(patience)  # caught up with what we knew: look again
        got = step(limit, patience)
        if got:
            return got
        if not block:
            raise Empty(f"no message in MessageQueue {self.name!r} {waited(block, timeout)}")
        if self._spin(TAIL, self._tail_seen):  # a message in moments: no sleep
            self._refresh_tail(deadline)
            got = step(limit, deadline)
            if got:
                return got
        registered = False
        try:
            while True:
                # Read the tail under the put mutex, registering as a sleeper
                # the first time, so that a put from now on posts for us.
                if self._refresh_tail(deadline, 0 if registered else 1):
                    registered = True
                    got = step(limit, deadline)
                    if got:
                        return got
                if deadline is None:
                    slice_ = WAIT_SLICE
                else:
                    slice_ = min(WAIT_SLICE, deadline - time.monotonic())
                    if slice_ <= 0:
                        raise Empty(
                            f"no message in MessageQueue {self.name!r} {waited(block, timeout)}"
                        )
                self._check_open()
                _os.semaphore_wait(self._data_sem, slice_)
        finally:
            if registered:
                self._refresh_tail(patience_deadline(), -1)

    def close(self) -> None:
        """Close this process's handle (idempotent); messages stay for the
        other processes that have the queue open (or, if persistent, for
        later ones).  Calls waiting in other threads raise ValueError first
        (within a wait slice), taking back their registration as sleepers.
        Closed inside this thread's own receive/reserve block, the block
        then raises ValueError, and nothing is published or removed."""
        self._begin_close()
        give_up = time.monotonic() + MUTEX_PATIENCE
        # (not for a receive/reserve block of this very thread, which cannot
        # end while it waits here)
        me = threading.get_ident()
        while self._calls_in_flight() and self._txn_thread != me and time.monotonic() < give_up:
            time.sleep(0.002)  # they notice the closing between wait slices
        super().close()
