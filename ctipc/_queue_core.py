"""The queue engine: every read and write of a MessageQueue's ring and
control page, its locking, its waits, and the receive/reserve blocks
(mq.py has only the public calls, _ring.py the layout).

A producer copies its record beyond ``tail`` and only then publishes the new
``tail`` with one aligned 8-byte store: a producer killed half-way leaves
bytes no consumer can see.  Each side caches the other side's position.
Where the CPU makes stores visible in program order (``_os.STORES_ORDERED``:
x86-64) it reads that position with a plain load; elsewhere it reads it
under the other side's mutex, whose acquire/release pair is a full barrier
(docs/FORMAT.md §11, "Memory ordering").  So in steady state a put or a get
takes one mutex.  A caller that finds nothing to do polls the other side's
position for a few microseconds (no system call) before it sleeps on a
named semaphore; those are posted only when someone sleeps.

Exceptions raised by signal handlers (Ctrl-C, an alarm) can surface at any
bytecode of this module's main thread.  Every critical section therefore
takes its mutex *inside* a ``try`` whose ``except BaseException`` gives the
mutex back if this thread holds it (a release by a thread that does not
hold it is refused by every backend, so it is harmless), and finishes the
bookkeeping of what was already published; messages a get had already
removed from the ring when it was interrupted are kept in the handle's
carry-over (``_carry``), which the next get of the handle delivers first.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any, Callable

from ._args import check_open_args, check_size
from ._backend import MUTEX_TIMEOUT, Mutex, SemaphoreHandle
from ._backend import os_backend as _os
from ._base import Closable, mutex_error
from ._errors import CorruptedError, Empty, Full, waited
from ._header import SLOT, process_alive, this_process
from ._ring import (
    CONSUMER_SLOTS,
    CONSUMERS_WAITING,
    CONTROL,
    CONTROL_WORDS,
    DEFAULT_CAPACITY,
    DEFAULT_MAX_MESSAGE,
    GETS,
    HEAD,
    HELD_BY_RECEIVE,
    HELD_BY_RESERVE,
    HOLDER_MASK,
    HOLDER_SLOTS,
    HOLDERS,
    POSITION_MAX,
    PRODUCER_SLOTS,
    PRODUCERS_WAITING,
    PUTS,
    READY,
    RECORD,
    RETRY,
    RING,
    SCAN,
    SLEEPER_SLOTS,
    TAIL,
    TAKEN,
    U64_MASK,
    WRAP,
    QueueKind,
    check_sizes,
    queued,
)
from ._segment import Core
from ._signals import CALMED, calm, uncalm
from ._wait import Spinner, deadlines, patience_deadline, wait

__all__ = ["QueueCore", "as_bytes_view"]

_Slot = tuple[int, int, int, int, int]  # a slot of the attach table's format (_header.SLOT)
# How many times a waiting consumer polls (each up to _backend.SPIN) before it sleeps.
_SPIN_ROUNDS = 3


def as_bytes_view(message: object) -> memoryview:
    if isinstance(message, str):
        raise TypeError("a message is bytes-like, not str (encode it first)")
    try:
        view = memoryview(message)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a message must be bytes-like (bytes, bytearray, memoryview), not "
            f"{type(message).__name__}"
        ) from None
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    # Other formats and shapes are sent as their bytes (strided ones copied).
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


def wake(sem: SemaphoreHandle, n: int) -> None:
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


def _anyway() -> None:
    """A wait's ``check_open`` for the steps that must end even once the
    handle is closing (a block's end, the blocks given back at close)."""


def _let_go_calmly(mutex: Mutex) -> None:
    """``_let_go`` with signals blocked: the repair after an exception."""
    mask = calm()
    try:
        _let_go(mutex)
    finally:
        uncalm(mask)


def _let_go(mutex: Mutex) -> None:
    """After an exception at an unknown point of a critical section: release
    ``mutex`` if this thread holds it.  Every backend refuses (PermissionError)
    a release by a thread that does not hold it, so this never frees a mutex
    another thread or process holds."""
    try:
        _os.mutex_release(mutex)
    except (OSError, ValueError):
        pass


class QueueCore(Closable):
    """MessageQueue's state and critical sections (see mq.py)."""

    _core: Core  # set by _start, before any method can run

    # Per thread, ``.carry``: the messages a get of this thread removed from
    # the ring, until it returns them.  An exception (a signal handler's)
    # that interrupts the get leaves them there, for the thread's next get.
    _local = threading.local()  # replaced per instance

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
        # The holds of this handle's open blocks, by id of the block (not the
        # block itself, whose __del__ ends a block let go): what ``close``
        # gives back if a block is still open then.
        self._open_blocks: dict[int, tuple[tuple[Any, ...], Any, int]] = {}
        # The threads inside a receive or reserve block of this handle: their
        # other calls on the handle raise (a call inside one's own block is a
        # mistake the block's documentation forbids), and ``close`` does not
        # wait for their block to end.
        self._txn_threads: set[int] = set()
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
        # The ring as 32-bit words: a record's state is word ((hdr - RING) >> 2) + 1
        self._states = core.words(RING, self._ring // 4, wide=False)
        r = core.resources
        self._put_mutex, self._get_mutex = r["put"], r["get"]
        self._data_sem, self._room_sem = r["data"], r["room"]
        # The hot path's mutex calls, bound once: one C-level call each,
        # returning 0 when done (else the general calls say why).
        self._try_put, self._unlock_put = _os.mutex_bind(self._put_mutex)
        self._try_get, self._unlock_get = _os.mutex_bind(self._get_mutex)
        # asked before each bound call: garbage there aborts inside glibc
        self._put_intact = _os.mutex_intact(self._put_mutex)
        self._get_intact = _os.mutex_intact(self._get_mutex)
        self._ordered = _os.STORES_ORDERED
        # This process's view of the other side's position.  Positions only
        # grow, so a stale view is a conservative one.
        self._tail_seen = 0
        self._head_seen = 0
        self._local = threading.local()
        self._sleeper_slot = {CONSUMER_SLOTS: 0, PRODUCER_SLOTS: 0}  # where ours last was
        self._next_reap = 0.0
        self._holder_slot = 0  # where this process's holder slot last was
        self._next_settle = 0.0  # when to look for holders that died again
        self._alive_seen: dict[int, tuple[tuple[int, ...], float]] = {}
        self._spinner = Spinner()
        self._lock_spinner = Spinner(yields=True)
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
        """Messages in the queue now (a snapshot: others may change it),
        with those an interrupted get of this thread holds for its next one."""
        self._enter()
        try:
            puts: int = self._w[PUTS]
            gets: int = self._w[GETS]
        finally:
            self._leave()
        return queued(puts, gets) + len(self._carry())

    def _carry(self) -> list[bytes]:
        """This thread's carry-over (see ``_local``)."""
        try:
            carry: list[bytes] = self._local.carry
        except AttributeError:
            carry = self._local.carry = []
        return carry

    def _state(self) -> str:
        return f"messages={len(self)} capacity={self._capacity}"

    # -- closing ---------------------------------------------------------------
    # (_enter and _leave run twice per message: the core's own calls,
    # without Closable's check for a core never set, which a queue past
    # _start cannot meet; the core says "MessageQueue is closed")
    def _enter(self) -> None:
        if CALMED:
            uncalm()  # a repair was interrupted before it could unblock signals
        self._core.enter()

    def _leave(self) -> None:
        self._core.leave()

    def close(self) -> None:
        """Close this process's handle (idempotent); messages stay for the
        other processes that have the queue open (or, if persistent, for
        later ones).  Calls waiting in other threads raise ValueError first,
        at once, taking back their registration as sleepers.  Blocks still
        open then (this thread's own, or another thread's after a second)
        end as if by an exception: a received message comes back for the
        other consumers, flagged, and a reservation is dropped; the block
        then raises ValueError."""
        self._begin_close()  # the one "closed" flag: every call sees it from now on
        give_up = time.monotonic() + 1.0
        # (not for a receive/reserve block of this very thread, which cannot
        # end while it waits here)
        mine = 1 if threading.get_ident() in self._txn_threads else 0
        if self._calls_in_flight() > mine and self._core is not None:
            # Wake this handle's sleepers so that they see the flag now, not
            # at the end of their wait slice.  (Posts are hints: a sleeper of
            # another process that takes one looks and sleeps again.)
            for sem in (self._data_sem, self._room_sem):
                wake(sem, self._calls_in_flight())
        while self._calls_in_flight() > mine and time.monotonic() < give_up:
            time.sleep(0.001)
        if self._open_blocks and self._core is not None:
            self._give_back_blocks()
        super().close()

    def _give_back_blocks(self) -> None:
        """End the blocks still open at close, as if by an exception (once
        the get mutex is not had in time, the rest come back when this
        process dies)."""
        mask = calm()
        try:
            for key in list(self._open_blocks):
                try:
                    self._end_hold(key, False)
                except (OSError, CorruptedError):
                    continue  # a corrupt mutex, or a record not ours any more
                if key in self._open_blocks:
                    break  # the get mutex was not had within a second
        finally:
            uncalm(mask)

    # -- locking -----------------------------------------------------------------
    def _lock(self, try_lock: Callable[[], int], mutex: Mutex, deadline: float | None,
              check_open: Callable[[], None] | None = None) -> bool:  # fmt: skip
        """Take a side's mutex; False if it was not had by the deadline.  A
        dead holder's state needs no repair: a position is published by one
        store, after the bytes it covers.  Callers call this inside a
        ``try`` that ends in ``_let_go`` on any exception.  (``_append`` and
        ``_take``, once per message, make the bound try inline and call
        ``_lock_slow`` only when it fails.)"""
        intact = self._put_intact if mutex is self._put_mutex else self._get_intact
        return (intact() and try_lock() == 0) or self._lock_slow(mutex, deadline, check_open)

    def _lock_slow(self, mutex: Mutex, deadline: float | None,
                   check_open: Callable[[], None] | None = None) -> bool:  # fmt: skip
        """The mutex, once the bound try did not take it: busy, or a
        takeover from a dead holder that the general acquire finishes.
        Critical sections last microseconds: polling briefly (the spinner)
        usually gets the mutex without sleeping in the kernel and being woken."""
        try:
            return wait(
                lambda seconds: _os.mutex_acquire(mutex, seconds) != MUTEX_TIMEOUT,
                True, None, check_open or self._check_open, self._lock_spinner,
                deadline=deadline, first_try=False,
            )  # fmt: skip
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _lock_now(self, mutex: Mutex) -> bool:
        """The general acquire, once and without waiting, after a bound try
        that did not take ``mutex`` (put's and get's common call, which does
        not wait): True if it is ours now, having finished a takeover from
        a dead holder that the try began (which leaves it held: see
        _backend, "Bound calls"); False if it is busy."""
        try:
            return _os.mutex_acquire(mutex, 0.0) != MUTEX_TIMEOUT
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _unlock(self, unlock: Callable[[], int], mutex: Mutex) -> None:
        intact = self._put_intact if mutex is self._put_mutex else self._get_intact
        if not intact() or unlock() != 0:
            self._unlock_slow(mutex)

    def _unlock_slow(self, mutex: Mutex) -> None:
        """The release, once the bound one was not made or failed: raises why."""
        try:
            _os.mutex_release(mutex)
        except OSError as e:
            raise mutex_error(e, self.name) from None

    def _refresh_tail(self, deadline: float | None, waiting: int = 0) -> bool:
        """Read ``tail`` (under the put mutex where stores are not ordered);
        add ``waiting`` to the count of sleeping consumers, under the put
        mutex.  False if the mutex was not had in time."""
        if not waiting and self._ordered:
            self._tail_seen = self._w[TAIL]  # stored after the records it covers
            return True
        return self._refresh(self._try_put, self._put_mutex, self._unlock_put,
                             TAIL, CONSUMERS_WAITING, waiting, deadline)  # fmt: skip

    def _refresh_head(self, deadline: float | None, waiting: int = 0) -> bool:
        if not waiting and self._ordered:
            self._head_seen = self._w[HEAD]  # stored after the copies out
            return True
        return self._refresh(self._try_get, self._get_mutex, self._unlock_get,
                             HEAD, PRODUCERS_WAITING, waiting, deadline)  # fmt: skip

    def _refresh(self, try_lock: Callable[[], int], mutex: Mutex, unlock: Callable[[], int],
                 position: int, sleepers: int, waiting: int,
                 deadline: float | None) -> bool:  # fmt: skip
        words = self._w
        table = CONSUMER_SLOTS if sleepers == CONSUMERS_WAITING else PRODUCER_SLOTS
        dead = self._dead_sleepers(table) if waiting > 0 else []
        try:
            if not self._lock(try_lock, mutex, deadline):
                return False
            seen = words[position]
            if waiting:
                self._count_sleeper(table, sleepers, waiting, dead)
            self._unlock(unlock, mutex)
        except BaseException:
            _let_go_calmly(mutex)
            raise
        if position == TAIL:
            self._tail_seen = seen
        else:
            self._head_seen = seen
        return True

    def _count_sleeper(self, table: int, sleepers: int, waiting: int,
                       dead: list[tuple[int, _Slot]]) -> None:  # fmt: skip
        """Under the count's mutex: add ``waiting`` (+1 or -1) to the count
        of sleepers at word ``sleepers`` and to this process's slot in
        ``table``, removing the ``dead`` registrations."""
        words = self._w
        removed = self._register(table, waiting, dead)
        count = words[sleepers]
        count = count if count <= POSITION_MAX else 0  # corrupt: start again
        words[sleepers] = max(0, count + waiting - removed)

    def _dead_sleepers(self, table: int) -> list[tuple[int, _Slot]]:
        """The slots of ``table`` whose process is dead: (index, contents),
        read without the mutex (``_register`` clears those that still hold
        the same contents).  At most once a second per handle: reading a
        process's start time costs a system call or two."""
        now = time.monotonic()
        if now < self._next_reap:
            return []
        self._next_reap = now + 1.0
        return self._dead_slots(table, SLEEPER_SLOTS)

    def _dead_slots(self, table: int, slots: int) -> list[tuple[int, _Slot]]:
        """The slots of ``table`` (``slots`` of them, in the attach table's
        format) whose process is dead, as (index, contents): a process of
        another pid namespace, which cannot be judged from here, is alive."""
        mm, size, my_ns = self._mm, SLOT.size, this_process()[2]
        dead = []
        for i in range(slots):
            entry = SLOT.unpack_from(mm, table + i * size)
            pid, _, token, ns, _ = entry
            if pid and ns == my_ns and not process_alive(pid, token):
                dead.append((i, entry))
        return dead

    def _find_slot(self, table: int, slots: int, hint: int,
                   reusable: Callable[[_Slot], bool],
                   ) -> tuple[int, int, bool]:  # fmt: skip
        """This process's slot in ``table`` (looked at ``hint`` first), as
        (index, its count, True); else the first slot ``reusable`` accepts,
        as (index, 0, False); else (-1, 0, False)."""
        mm, size = self._mm, SLOT.size
        pid, token, ns = this_process()
        entry = SLOT.unpack_from(mm, table + hint * size)
        if entry[0] == pid and entry[2] == token and entry[3] == ns:
            return hint, entry[1], True
        free = -1
        for i in range(slots):
            entry = SLOT.unpack_from(mm, table + i * size)
            if entry[0] == pid and entry[2] == token and entry[3] == ns:
                return i, entry[1], True
            if free < 0 and reusable(entry):
                free = i
        return free, 0, False

    def _register(self, table: int, waiting: int,
                  dead: list[tuple[int, _Slot]]) -> int:  # fmt: skip
        """Under the count's mutex: add ``waiting`` (+1 or -1) to this
        process's slot in ``table`` (a registration finds none when all are
        taken: then only the total counts it), clear the ``dead`` slots that
        still hold what was read, and return the registrations they held."""
        mm, size = self._mm, SLOT.size
        removed = 0
        for i, entry in dead:
            if SLOT.unpack_from(mm, table + i * size) == entry:
                SLOT.pack_into(mm, table + i * size, 0, 0, 0, 0, 0)
                removed += entry[1]
        pid, token, ns = this_process()
        i, count, mine = self._find_slot(
            table, SLEEPER_SLOTS, self._sleeper_slot[table], lambda entry: entry[0] == 0
        )
        if mine:
            count += waiting
            SLOT.pack_into(mm, table + i * size, *(
                (pid, count, token, ns, 0) if count > 0 else (0, 0, 0, 0, 0)))  # fmt: skip
            self._sleeper_slot[table] = i
        elif waiting > 0 and i >= 0:
            SLOT.pack_into(mm, table + i * size, pid, waiting, token, ns, 0)
            self._sleeper_slot[table] = i
        return removed

    def _spin_for_room(self) -> bool:
        """Poll the head for a while (see _wait.Spinner); True once it moved
        past what this process saw.  Read without its mutex, so only a hint
        that the caller confirms under the mutex."""
        words, seen = self._w, self._head_seen
        return words[HEAD] != seen or self._spinner.spin(lambda: words[HEAD] != seen)

    def _spin_for_messages(self) -> bool:
        """Poll for a while for a message that may have become ready: the
        tail moved past what this process saw (a put), or the count of
        messages or the scan hint changed (a reservation published, a
        receive given back: neither moves the tail).  A hint, as above; a
        change made by another consumer only costs one look more."""
        words, tail = self._w, self._tail_seen
        gets, scan = words[GETS], words[SCAN]

        def changed() -> bool:
            return words[TAIL] != tail or words[GETS] != gets or words[SCAN] != scan

        return words[TAIL] != tail or self._spinner.spin(changed)

    def _check_txn(self) -> None:
        if threading.get_ident() in self._txn_threads:
            # A block object let go while still open (an exception raised at
            # the very entry of its __exit__) ends in its __del__: on an
            # interpreter without reference counting, only once collected;
            # one whose __del__ was interrupted too is swept here.
            gc.collect()
            self._sweep_blocks()
        if threading.get_ident() in self._txn_threads:
            raise RuntimeError(
                "this thread is inside a receive() or reserve() block of this MessageQueue"
            )

    def _corrupt(self, what: str) -> CorruptedError:
        return CorruptedError(f"queue {self.name!r}: {what}", self.name)

    # -- records (the one place that writes them) ------------------------------------
    def _place(self, tail: int, head: int, nbytes: int) -> tuple[int, int] | None:
        """Where a record of ``nbytes`` goes after ``tail``: (position in the
        ring, bytes skipped to wrap), or None if it does not fit before
        ``head`` plus the ring.  (``_append`` has this and ``_seal`` inline.)"""
        ring = self._ring
        size = 8 + ((nbytes + 7) & ~7)  # record_size(nbytes), inline: once per message
        pos = tail % ring
        skip = ring - pos if pos + size > ring else 0
        if tail + skip + size - head > ring:
            return None
        return pos, skip

    def _seal(self, tail: int, pos: int, skip: int, nbytes: int, state: int = READY) -> int:
        """Write the record header of ``nbytes`` whose payload is already in
        place (and the wrap marker before it), in ``state``; return the tail
        after it."""
        if skip:
            RECORD.pack_into(self._mm, RING + pos, WRAP, 0)
            tail += skip
            pos = 0
        RECORD.pack_into(self._mm, RING + pos, nbytes, state)
        return tail + 8 + ((nbytes + 7) & ~7)

    def _record(self, head: int, tail: int) -> tuple[int, int, int, int, int]:
        """The record at ``head`` (< ``tail``), checked against the ring:
        (offset of its header in the mapping, its length, its state, its
        position, the position after it).  Everything in the ring is
        untrusted."""
        ring = self._ring
        pos = head % ring  # head is a multiple of 8 (_bounds), so pos <= ring - 8
        n, state = RECORD.unpack_from(self._mm, RING + pos)
        if n == WRAP:
            # A producer writes a wrap marker only together with the record
            # that follows it at the start of the ring.
            head += ring - pos
            pos = 0
            if head >= tail:
                raise self._corrupt("corrupt record")
            n, state = RECORD.unpack_from(self._mm, RING)
        size = 8 + ((n + 7) & ~7)  # record_size(n), inline: once per message
        if n > self._max_message or head + size > tail or pos + size > ring:
            raise self._corrupt("corrupt record")
        return RING + pos, n, state, head, head + size

    # -- put -----------------------------------------------------------------------
    def _tail_checked(self) -> tuple[int, int]:
        """(tail, the freshest head known), under the put mutex."""
        tail: int = self._w[TAIL]
        if tail > POSITION_MAX or tail & 7:
            raise self._corrupt("positions out of range")
        head = self._head_seen
        if head > tail:  # no older than the head: cannot pass the tail
            raise self._corrupt("head beyond tail")
        if tail > head + self._ring:  # this process's view of the head is old
            head = self._head_seen = tail - self._ring
        return tail, head

    def _append(self, views: list[bytes | memoryview], deadline: float | None,
                at_once: bool = False) -> int:  # fmt: skip
        """Write as many of ``views`` as fit, in one critical section; return
        how many.  -1: the put mutex was not had before the deadline (with
        ``at_once``, put's common call: at once)."""
        words, mm, ring_view, ring = self._w, self._mm, self._ring_view, self._ring
        written = 0
        tail = puts = -1
        try:
            # (the bound calls inline: once per message)
            if not (self._put_intact() and self._try_put() == 0) and not (
                self._lock_now(self._put_mutex)
                if at_once
                else self._lock_slow(self._put_mutex, deadline)
            ):
                return -1
            tail, head = words[TAIL], self._head_seen
            if tail > POSITION_MAX or tail & 7 or head > tail or tail > head + ring:
                tail, head = self._tail_checked()  # why not, or a view of the head too old
            for view in views:
                # _place and _seal inline (once per message: the two calls
                # were a fifth of a put)
                n = len(view)  # bytes, or a 1-D memoryview of bytes (as_bytes_view)
                size = 8 + ((n + 7) & ~7)  # record_size(n)
                pos = tail % ring
                if pos + size > ring:  # it goes at the start, after a wrap marker
                    if tail + ring - pos + size - head > ring:
                        break
                    RECORD.pack_into(mm, RING + pos, WRAP, 0)
                    tail += ring - pos
                    pos = 0
                elif tail + size - head > ring:
                    break
                ring_view[pos + 8 : pos + 8 + n] = view  # (PyPy's mmap takes only bytes)
                RECORD.pack_into(mm, RING + pos, n, READY)
                tail += size
                written += 1
            sleepers = 0
            if written:
                puts = (words[PUTS] + written) & U64_MASK
                # Publish: one aligned store, after every byte it covers.
                words[TAIL] = tail
                words[PUTS] = puts
                sleepers = words[CONSUMERS_WAITING]
            if not self._put_intact() or self._unlock_put() != 0:
                self._unlock_slow(self._put_mutex)
        except BaseException:
            # (first, with no call before it, as in _take)
            if written and words[TAIL] == tail and words[PUTS] != puts:
                words[PUTS] = puts  # published, not yet counted (mutex still ours)
            _let_go_calmly(self._put_mutex)
            raise
        if sleepers:
            wake(self._data_sem, min(written, sleepers))
        return written

    def _room_for(self, nbytes: int) -> bool:
        """Is there room for a message of ``nbytes`` as far as the head this
        process saw?  (A hint, without the put mutex; _append decides.)"""
        tail: int = self._w[TAIL]
        if self._head_seen > tail:  # the head, read fresh, never passes a tail read later
            raise self._corrupt("head beyond tail")
        return self._place(tail, self._head_seen, nbytes) is not None

    def _reserve_at(self, nbytes: int, deadline: float | None) -> tuple[int, int, int, Any] | int:
        """Room for one record of ``nbytes``, published at once as held by
        this process's reserve, so that other producers go on after it:
        (header offset, its position, holder slot, signal mask) with the get
        mutex still held and signals blocked (``_txn_begin`` gives both
        back); 0 if no room (or no holder slot); -1 if a mutex was not had
        before the deadline.  Takes the get mutex, then the put mutex (the
        lock order): the holder table and the count of messages are the get
        side's."""
        words = self._w
        mask = None
        try:
            if not self._lock(self._try_get, self._get_mutex, deadline):
                return -1
            if not self._lock(self._try_put, self._put_mutex, deadline):
                self._unlock(self._unlock_get, self._get_mutex)
                return -1
            self._head_seen = words[HEAD]  # fresh: the get mutex is ours
            tail, head = self._tail_checked()
            where = self._place(tail, head, nbytes)
            if where is not None:
                mask = calm()
                slot = self._claim_holder()
                if slot >= 0:
                    pos, skip = where
                    after = self._seal(tail, pos, skip, nbytes, HELD_BY_RESERVE | slot)
                    puts = (words[PUTS] + 1) & U64_MASK
                    gets = (words[GETS] + 1) & U64_MASK  # not a message until published
                    words[TAIL] = after
                    words[PUTS] = puts
                    words[GETS] = gets
                    self._unlock(self._unlock_put, self._put_mutex)
                    return RING + (0 if skip else pos), tail + skip, slot, mask
                uncalm(mask)
                mask = None
            self._unlock(self._unlock_put, self._put_mutex)
            self._unlock(self._unlock_get, self._get_mutex)
        except BaseException:
            _let_go_calmly(self._put_mutex)
            _let_go_calmly(self._get_mutex)
            if mask is not None:
                uncalm(mask)
            raise
        return 0

    def _produce(
        self, views: list[bytes | memoryview], nbytes: int, block: bool, timeout: float | None
    ) -> tuple[int, tuple[int, int, int, Any] | None, bool]:
        """Put ``views`` in order or, with no views, reserve room for one
        record of ``nbytes``.  Returns (how many were put, the reservation
        (``_reserve_at``'s, get mutex held) or None, whether this call is
        still registered as a sleeping producer: only with a reservation,
        whose caller unregisters under the get mutex it holds)."""
        if CALMED:
            uncalm()  # a repair was interrupted before it could unblock signals
        if self._txn_threads:
            self._check_txn()
        deadline, patience = deadlines(block, timeout)  # (no clock read without a timeout)
        # The common call finds room at once: one critical section.
        sent = 0
        if views:
            sent = self._append(views, patience)
            if sent == len(views):
                return sent, None, False
        else:
            outcome = self._reserve_at(nbytes, patience)
            if isinstance(outcome, tuple):
                return 1, outcome, False
            sent = outcome
        if sent < 0:
            return 0, None, False  # given up: no mutex in time
        return self._produce_waiting(views, nbytes, block, deadline, patience, sent)

    def _produce_waiting(
        self, views: list[bytes | memoryview], nbytes: int, block: bool,
        deadline: float | None, patience: float | None, sent: int,
    ) -> tuple[int, tuple[int, int, int, Any] | None, bool]:  # fmt: skip
        """``_produce`` beyond its first try, ``sent`` of ``views`` put.
        (A method of its own: the wait's closure makes the variables it
        shares cells, slower to use on the first try.)"""
        count = len(views) or 1
        registered = retried = spun = False
        held: tuple[int, int, int, Any] | None = None

        def attempt(seconds: float) -> bool:
            """Put (or reserve) what fits, after a wait of ``seconds`` for
            room; True once done or given up, False to wait for room."""
            nonlocal sent, held, registered, retried, spun, patience
            if seconds:
                _os.semaphore_wait(self._room_sem, seconds)
                patience = deadline
            while sent < count:
                if views:
                    done = self._append(views[sent:], patience)
                else:
                    outcome = self._reserve_at(nbytes, patience)
                    if isinstance(outcome, tuple):
                        held = outcome
                        return True
                    done = outcome
                if done > 0:
                    sent += done
                    continue
                if done == 0 and not spun and block:
                    # Blocking and full: a consumer may make room in moments.
                    spun = True
                    if self._spin_for_room():
                        self._refresh_head(patience)
                        continue
                # No room as far as this process knew (or no mutex in time):
                # read the head again, registering as a sleeper once so that
                # a get from now on posts for us.
                if done < 0 or not self._refresh_head(patience, 0 if registered else 1):
                    return True  # given up: no mutex in time
                registered = True
                # Room by the fresh head: try again, once; a second miss in a
                # row waits (another producer took the room, or the
                # positions are inconsistent) so this never spins.
                size = len(views[sent]) if views else nbytes
                if not retried and self._room_for(size):
                    retried = True
                    continue
                retried = False
                return False
            return True

        try:
            wait(attempt, block, None, self._check_open, deadline=deadline)
            if held is not None:
                return 1, held, registered
        finally:
            if registered and held is None:
                self._refresh_head(patience_deadline(), -1)
        return sent, None, False

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
                raise self._corrupt("head beyond tail")
        if tail - head > self._ring or tail > POSITION_MAX or (head | tail) & 7:
            raise self._corrupt("positions out of range")
        return head, tail

    def _take(self, limit: int, deadline: float | None) -> bool:
        """Move up to ``limit`` messages to this thread's carry-over in one
        critical section; False if there were none ready up to the tail this
        process has seen, or the get mutex was not had before the deadline."""
        mm, words, states, ring = self._mm, self._w, self._states, self._ring
        carry = self._local.carry
        out: list[bytes] = []  # from the head on: they leave with the head's store
        behind: list[tuple[int, bytes]] = []  # (header, message) behind a held record
        head0 = head = gets0 = -1
        taken = carried = False
        try:
            if not (self._get_intact() and self._try_get() == 0) and not self._lock_slow(
                self._get_mutex, deadline
            ):
                return False
            gets0 = words[GETS]
            # (_bounds inline where the positions are as they should be)
            head0, tail = words[HEAD], self._tail_seen
            head = head0  # nothing taken yet (so too if the bounds are not had)
            if limit > 1:
                # A batch takes what is there now, not only what this process
                # saw (lock order: get, then put).
                if self._ordered:
                    tail = words[TAIL]  # stored after the records it covers
                elif self._refresh_tail(deadline):
                    tail = self._tail_seen
            if tail < head0 or tail - head0 > ring or tail > POSITION_MAX or (head0 | tail) & 7:
                bounds = self._bounds(deadline)  # the tail read again, or why not
            else:
                bounds = head0, tail
                self._tail_seen = tail
            if bounds is not None:
                head0, tail = bounds
                head = head0
                pos = head0 if words[SCAN] == head0 else self._scan_start(head0, tail)
                if pos == head0:  # the common case: the oldest records are ready
                    biggest = self._max_message
                    while pos < tail and len(out) < limit:
                        # _record inline (once per message); a record it
                        # would not pass as it is (a wrap marker, one not
                        # ready, a corrupt one) is _take_behind's
                        at = pos % ring
                        n, state = RECORD.unpack_from(mm, RING + at)
                        size = 8 + ((n + 7) & ~7)  # record_size(n)
                        if state > RETRY or n > biggest or pos + size > tail or at + size > ring:
                            break
                        out.append(mm[RING + at + 8 : RING + at + 8 + n])
                        pos += size
                    head = pos
                if pos < tail and len(out) < limit:
                    pos, head = self._take_behind(pos, head, tail, limit, out, behind)
            got = out + [m for _, m in behind] if behind else out
            sleepers = 0
            if head != head0:
                gets = (gets0 + len(got)) & U64_MASK
                words[HEAD] = head  # the messages at the head leave the ring here
                taken = True
                words[GETS] = gets
                sleepers = words[PRODUCERS_WAITING]
            elif behind:
                words[GETS] = (gets0 + len(got)) & U64_MASK
            if bounds is not None:
                # After the head: a process killed between the two stores
                # leaves a hint at or below the head, which is void.
                words[SCAN] = pos
            if not self._get_intact() or self._unlock_get() != 0:
                self._unlock_slow(self._get_mutex)
            carry += got
            carried = True
        except BaseException:
            # First, with no call before it (CPython runs a second signal's
            # handler only at a call or a jump): messages that left the ring
            # (the mutex is still ours until `carried` is set) go to this
            # thread's carry-over; those at the head left if the head was
            # stored, those behind a held record if they were marked taken.
            if (out or behind) and not carried:
                kept = list(out) if taken or (head != head0 and words[HEAD] == head) else []
                kept += [m for hdr, m in behind if states[((hdr - RING) >> 2) + 1] == TAKEN]
                carry += kept
                carried = True
                if words[GETS] != (gets0 + len(kept)) & U64_MASK:
                    words[GETS] = (gets0 + len(kept)) & U64_MASK
            if head0 >= 0 and words[SCAN] > words[HEAD]:
                # (at or below the head the hint is void, which is always true)
                words[SCAN] = words[HEAD]
            _let_go_calmly(self._get_mutex)
            raise
        if sleepers:
            self._wake_producers_at_half(sleepers, head)
        return bool(got)

    def _wake_producers_at_half(self, sleepers: int, head: int) -> None:
        """After a get that took messages and moved the head to ``head``,
        with ``sleepers`` producers registered as waiting: wake them once
        the ring is at most half full (``tail`` read again, without the
        mutex: a hint), not at each message taken (docs/FORMAT.md,
        "Wake-ups"): woken at each, a full ring's producers took turns at
        one free record, at a wake-up, a registration and two critical
        sections each.  (At most as many as the table of sleepers records:
        the count is shared memory, which garbage may have made huge.)"""
        if self._w[TAIL] - head <= self._ring >> 1:
            wake(self._room_sem, min(sleepers, SLEEPER_SLOTS))

    def _take_one(self, carry: list[bytes]) -> bool:
        """``get``'s common call in one frame: the ready message at the head,
        with the get mutex had at once, moved to ``carry`` (this
        thread's carry-over, empty).  False, with nothing changed, for
        anything else: no message known, a busy mutex, a hint or a record
        out of the ordinary; ``_consume`` then makes the call in full.  (It
        needs no mutex deadline, so no clock is read: see ``get``.)"""
        words, tail = self._w, self._tail_seen
        head = words[HEAD]  # (without the mutex, as in _maybe_ready: a hint)
        if words[SCAN] != head:
            return False  # a record held by a block at the head, or a void hint
        if not tail > head:
            if not self._ordered:
                return False
            tail = words[TAIL]  # stored after the records it covers
            if not tail > head:
                return False
            self._tail_seen = tail
        mm, ring = self._mm, self._ring
        head = end = -1
        try:
            if not (self._get_intact() and self._try_get() == 0) and not self._lock_now(
                self._get_mutex
            ):
                return False
            # _take's checks of the positions and of the record, for the one
            # at the head (_bounds and _record are the full ones: anything
            # they would look into further is left to them)
            head, gets = words[HEAD], words[GETS]
            if (
                words[SCAN] != head
                or tail - head > ring
                or tail > POSITION_MAX
                or (head | tail) & 7
            ):
                head = -1
            else:
                at = head % ring
                n, state = RECORD.unpack_from(mm, RING + at)
                end = head + 8 + ((n + 7) & ~7)  # record_size(n)
                if state > RETRY or n > self._max_message or end > tail or at + end - head > ring:
                    head = -1
            if head >= 0:
                message = mm[RING + at + 8 : RING + at + 8 + n]
                words[HEAD] = end  # the message leaves the ring here
                words[GETS] = (gets + 1) & U64_MASK
                words[SCAN] = end
                carry += (message,)  # (no call since the head's store: see _take)
                sleepers = words[PRODUCERS_WAITING]
            if not self._get_intact() or self._unlock_get() != 0:
                self._unlock_slow(self._get_mutex)
        except BaseException:
            # (first, with no call before it, as in _take: the mutex is still
            # ours, so a head at ``end`` is our store)
            if head >= 0 and not carry and words[HEAD] == end:
                carry.append(message)
                words[GETS] = (gets + 1) & U64_MASK
            _let_go_calmly(self._get_mutex)
            raise
        if head < 0:
            return False
        if sleepers:
            self._wake_producers_at_half(sleepers, end)
        return True

    def _hold(self, limit: int, deadline: float | None) -> tuple[Any, ...] | None:
        """The oldest ready message, marked as held by this process's receive:
        (header offset, length, position, position after it, redelivered,
        holder slot, signal mask), with the get mutex still held and signals
        blocked (``_txn_begin`` gives both back).  None, the mutex released,
        if none is ready up to the tail this process has seen, every holder
        slot is in use, or the mutex was not had in time."""
        words, states, record = self._w, self._states, self._record
        mask = None
        try:
            if not self._lock(self._try_get, self._get_mutex, deadline):
                return None
            bounds = self._bounds(deadline)
            if bounds is not None:
                head, tail = bounds
                pos = self._scan_start(head, tail)
                front = pos == head
                found = None
                while pos < tail:
                    hdr, n, state, at, after = record(pos, tail)
                    if state > TAKEN:
                        state = self._settle(hdr, state)
                    if state <= RETRY:
                        found = (hdr, n, at, after, state == RETRY)
                        break
                    if state != TAKEN:
                        front = False
                    pos = after
                    if front:
                        head = pos
                if front and head != words[HEAD]:
                    words[HEAD] = head  # past records taken before
                if found is None:
                    words[SCAN] = pos
                else:
                    mask = calm()
                    slot = self._claim_holder()
                    if slot >= 0:
                        hdr = found[0]
                        states[((hdr - RING) >> 2) + 1] = HELD_BY_RECEIVE | slot
                        words[SCAN] = found[3]
                        return (*found, slot, mask)
                    uncalm(mask)  # every slot in use: wait, as for a message
                    mask = None
            self._unlock(self._unlock_get, self._get_mutex)
        except BaseException:
            _let_go_calmly(self._get_mutex)
            if mask is not None:
                uncalm(mask)
            raise
        return None

    def _take_behind(self, pos: int, head: int, tail: int, limit: int, out: list[bytes],
                     behind: list[tuple[int, bytes]]) -> tuple[int, int]:  # fmt: skip
        """``_take`` past the first record that is not ready: messages held
        by a block are stepped over, the ready ones behind them taken (marked
        TAKEN in place), records taken before passed by the head, until
        ``out`` and ``behind`` hold ``limit`` messages together.  Returns
        (where the walk stopped, the head)."""
        mm, states, record = self._mm, self._states, self._record
        front = pos == head
        while pos < tail and len(out) + len(behind) < limit:
            hdr, n, state, _, after = record(pos, tail)
            if state > TAKEN:
                state = self._settle(hdr, state)
            if state <= RETRY:
                if front:
                    out.append(mm[hdr + 8 : hdr + 8 + n])
                else:
                    behind.append((hdr, mm[hdr + 8 : hdr + 8 + n]))
                    states[((hdr - RING) >> 2) + 1] = TAKEN
            elif state != TAKEN:
                front = False
            pos = after
            if front:
                head = pos
        return pos, head

    def _scan_start(self, head: int, tail: int) -> int:
        """Where a consumer starts looking for a ready record: the SCAN hint
        if it is one, else the head (always right, and where the records of
        a holder that died are found again)."""
        scan: int = self._w[SCAN]
        if scan <= head or scan > tail or scan & 7:
            return head
        # Past the head only if a block of a live process holds the record
        # at it: records taken before (or a wrap marker) there, or one whose
        # holder died, are for this walk to pass.
        hdr, _, state, _, _ = self._record(head, tail)
        if state <= TAKEN or self._settle(hdr, state) <= TAKEN or self._holder_died():
            return head
        return scan

    # -- holders: the processes with records inside receive/reserve blocks ----------------
    def _claim_holder(self) -> int:
        """Under the get mutex: count one more record held by this process,
        in its slot of HOLDERS (kept, with a count of 0, while the process
        lives); the slot, or -1 if every slot is another live process's."""
        pid, token, ns = this_process()
        # The slot this process had last, as a block's every begin finds it
        # (_find_slot's first look, inline: once per block).
        i = self._holder_slot
        spid, count, stoken, sns, _ = SLOT.unpack_from(self._mm, HOLDERS + i * SLOT.size)
        if not (spid == pid and stoken == token and sns == ns):

            def reusable(entry: _Slot) -> bool:
                # free, or a dead process's that holds no record any more
                spid, count, stoken, sns, _ = entry
                return spid == 0 or (not count and sns == ns and not process_alive(spid, stoken))

            i, count, _ = self._find_slot(HOLDERS, HOLDER_SLOTS, i, reusable)
            if i < 0:
                return i
            self._holder_slot = i
        SLOT.pack_into(self._mm, HOLDERS + i * SLOT.size, pid, count + 1, token, ns, 0)
        return i

    def _release_holder(self, slot: int, mine: bool = True) -> None:
        """Under the get mutex: one record fewer held in ``slot``; the slot
        of a process that died is freed with its last record."""
        at = HOLDERS + slot * SLOT.size
        pid, count, token, ns, _ = SLOT.unpack_from(self._mm, at)
        if count > 1 or (mine and count == 1):
            SLOT.pack_into(self._mm, at, pid, count - 1, token, ns, 0)
        elif pid:
            SLOT.pack_into(self._mm, at, 0, 0, 0, 0, 0)

    def _holder_alive(self, slot: int) -> bool:
        """Is the process holding records in ``slot`` alive?  (Judged in
        full at most once a second per slot, which costs a few system calls;
        in between, one call tells whether its pid is gone.)"""
        entry = SLOT.unpack_from(self._mm, HOLDERS + slot * SLOT.size)
        pid, count, token, ns, _ = entry
        if not pid or not count:
            return False  # nobody holds records there
        now = time.monotonic()
        seen = self._alive_seen.get(slot)
        if seen is not None and seen[0] == entry and now < seen[1]:
            if _os.process_exists(pid):
                return True
            del self._alive_seen[slot]
            return False
        # a process whose liveness cannot be seen (another pid namespace) is alive
        alive = ns != this_process()[2] or process_alive(pid, token)
        if alive:
            self._alive_seen[slot] = (entry, now + 1.0)
        return alive

    def _holder_died(self) -> bool:
        """Does a process that died still hold records?  (At most once a
        second per handle; True makes the next walk start at the head.)"""
        now = time.monotonic()
        if now < self._next_settle:
            return False
        self._next_settle = now + 1.0
        return any(entry[1] for _, entry in self._dead_slots(HOLDERS, HOLDER_SLOTS))

    def _settle(self, hdr: int, state: int) -> int:
        """Under the get mutex: the state of a held record, after its holder
        is looked at: a receive whose process died gives its message back
        (RETRY), a reservation whose process died is dropped (TAKEN)."""
        kind, slot = state & ~HOLDER_MASK, state & HOLDER_MASK
        if kind not in (HELD_BY_RECEIVE, HELD_BY_RESERVE) or slot >= HOLDER_SLOTS:
            raise self._corrupt("corrupt record")
        if self._holder_alive(slot):
            return state
        state = RETRY if kind == HELD_BY_RECEIVE else TAKEN
        self._states[((hdr - RING) >> 2) + 1] = state
        self._release_holder(slot, mine=False)
        return state

    def _resolve(self, hold: tuple[Any, ...], commit: bool) -> tuple[bool, bool]:
        """Under the get mutex: end a block's hold on its record (``hold``:
        reserve?, header, position, position after it, slot).  A received
        message is removed (``commit``) or made ready again, flagged, first
        in line; a reserved one is published (``commit``) or dropped.
        Returns (a message became ready, room was made)."""
        reserve, hdr, at, end, slot = hold
        words, states = self._w, self._states
        i = ((hdr - RING) >> 2) + 1
        if states[i] != (HELD_BY_RESERVE if reserve else HELD_BY_RECEIVE) | slot:
            raise self._corrupt("a held record changed")
        ready = room = False
        if commit == reserve:  # a reservation published, or a receive given up
            states[i] = READY if reserve else RETRY
            if reserve:
                words[GETS] = (words[GETS] - 1) & U64_MASK  # counted from now on
            if words[SCAN] > at:
                words[SCAN] = at
            ready = True
        else:  # a received message removed, or a reservation dropped
            states[i] = TAKEN
            if not reserve:
                words[GETS] = (words[GETS] + 1) & U64_MASK
            room = self._pass_taken(end, at)
        self._release_holder(slot)
        return ready, room

    def _pass_taken(self, end: int, taken: int = -1) -> bool:
        """Under the get mutex: move the head past the records at it that
        were taken, up to ``end`` or the tail this process has seen (read
        under the put mutex, where stores are not ordered); True if it moved.
        ``taken``: the position of a record just taken, which ends at ``end``
        (the common case: it is the one at the head, and is passed unread)."""
        words, record = self._w, self._record
        head = start = words[HEAD]
        if head == taken:
            head = end
        tail = max(end, words[TAIL] if self._ordered else self._tail_seen)
        while head < tail:
            _, _, state, _, after = record(head, tail)
            if state != TAKEN:
                break
            head = after
        if head == start:
            return False
        words[HEAD] = head
        if words[SCAN] < head:
            words[SCAN] = head
        return True

    def _consume(self, step: Callable[[int, float | None], Any], limit: int, block: bool,
                 timeout: float | None) -> Any:  # fmt: skip
        """Run ``step(limit, mutex deadline)`` (_take or _hold) until it
        returns something, waiting for messages in between."""
        if CALMED:
            uncalm()  # a repair was interrupted before it could unblock signals
        if self._txn_threads:
            self._check_txn()
        deadline, patience = deadlines(block, timeout)  # (no clock read without a timeout)
        # (_maybe_ready, and _refresh_tail where stores are ordered, inline:
        # once per get)
        words, tail = self._w, self._tail_seen
        if not (tail > words[HEAD] and tail > words[SCAN]):
            # Caught up with what we knew: look again.
            if self._ordered:
                tail = self._tail_seen = words[TAIL]  # stored after the records it covers
            else:
                self._refresh_tail(patience)
                tail = self._tail_seen
        # The common call: one critical section.  A blocking call that still
        # knows of no ready message polls at once instead: the section would
        # find nothing.  (The records of a holder that died, which the hint
        # skips, are found by the steps after the polling.)
        if not block or (tail > words[HEAD] and tail > words[SCAN]):
            got = step(limit, patience)
            if got:
                return got
            if not block:
                raise Empty(f"no message in MessageQueue {self.name!r} {waited(block, timeout)}")
        # A message in moments: no sleep.  More than one round, since a
        # reservation moves the tail when it begins and makes its message
        # ready only when it ends; a few, since other consumers' calls are
        # changes too.
        for _ in range(_SPIN_ROUNDS):
            if not self._spin_for_messages() or (
                deadline is not None and time.monotonic() >= deadline
            ):
                break
            self._refresh_tail(deadline)
            got = step(limit, deadline)
            if got:
                return got
        return self._sleep_for_messages(step, limit, deadline, block, timeout)

    def _maybe_ready(self) -> bool:
        """Might a message be ready up to the tail this process has seen?
        (Without the get mutex: a hint.)"""
        words, tail = self._w, self._tail_seen
        return tail > words[HEAD] and tail > words[SCAN]  # (once per get: no max() call)

    def _sleep_for_messages(
        self, step: Callable[[int, float | None], Any], limit: int, deadline: float | None,
        block: bool, timeout: float | None,
    ) -> Any:  # fmt: skip
        """``_consume``'s wait, once no message came in moments.  (A method
        of its own: the wait's closure makes the variables it shares cells,
        slower to use on the paths before it.)"""
        registered = False
        got: Any = None

        def attempt(seconds: float) -> bool:
            nonlocal registered, got
            if seconds:
                _os.semaphore_wait(self._data_sem, seconds)
            # Read the tail under the put mutex, registering as a sleeper
            # the first time, so that a put from now on posts for us.
            if self._refresh_tail(deadline, 0 if registered else 1):
                registered = True
                got = step(limit, deadline)
            return bool(got)

        try:
            if wait(attempt, True, None, self._check_open, deadline=deadline):
                return got
            raise Empty(f"no message in MessageQueue {self.name!r} {waited(block, timeout)}")
        finally:
            if registered:
                self._refresh_tail(patience_deadline(), -1)

    # -- waits for the asyncio adapters (aio.py) ----------------------------------------
    def _wait_readable(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds (one slice, which aio's ``wait``
        loop gives) until a message is probably there, without taking it.
        True may also mean a wake-up was used up: a caller that then takes
        nothing should give it back with ``_wake_consumer()``.  ``aget`` waits with this in a thread
        and takes the message in the event loop, so that cancelling it never
        loses a message."""
        self._enter()
        try:
            if self._carry():
                return True
            if not self._refresh_tail(time.monotonic() + timeout, 1):
                return False
            try:
                if self._maybe_ready():
                    return True
                return _os.semaphore_wait(self._data_sem, timeout)
            finally:
                self._refresh_tail(patience_deadline(), -1)
        finally:
            self._leave()

    def _wait_writable(self, timeout: float, nbytes: int = 0) -> bool:
        """Like ``_wait_readable``, for room for a message of ``nbytes``."""
        self._enter()
        try:
            if not self._refresh_head(time.monotonic() + timeout, 1):
                return False
            try:
                if self._room_for(nbytes):
                    return True
                return _os.semaphore_wait(self._room_sem, timeout)
            finally:
                self._refresh_head(patience_deadline(), -1)
        finally:
            self._leave()

    def _wake_consumer(self) -> None:
        self._give_back(self._data_sem)

    def _wake_producer(self) -> None:
        self._give_back(self._room_sem)

    def _give_back(self, sem: SemaphoreHandle) -> None:
        try:
            self._enter()
        except ValueError:
            return  # closed: nobody here to wake
        try:
            wake(sem, 1)
        finally:
            self._leave()

    # -- receive and reserve blocks ----------------------------------------------------
    def _txn_begin(self, block: Any) -> None:
        """Enter a receive or reserve block (``block._reserve``): sets
        ``block.data``, ``block._state`` (what ``_txn_end`` needs) and, last,
        ``block._inside``.  The record is marked as held by this process in
        the ring, so that other consumers (or producers) go on past it; no
        mutex is held inside the block.  An exception before ``_inside`` is
        set has given the hold back; after it, the caller ends the block."""
        reserve = block._reserve
        nbytes, blocking, timeout = block._args
        self._enter()
        core = self._core
        me = threading.get_ident()
        mask = hold = None
        try:
            if self._open_blocks:
                self._sweep_blocks()
            if reserve:
                sent, held, registered = self._produce([], nbytes, blocking, timeout)
                if not sent or held is None:
                    raise Full(
                        f"no room for {nbytes} bytes in MessageQueue {self.name!r} "
                        f"{waited(blocking, timeout)}"
                    )
                hdr, at, slot, mask = held
                hold = (True, hdr, at, at + 8 + ((nbytes + 7) & ~7), slot)
                if registered:  # as a sleeping producer: under the get mutex we hold
                    self._count_sleeper(PRODUCER_SLOTS, PRODUCERS_WAITING, -1, [])
                view = self._ring_view[hdr - RING + 8 : hdr - RING + 8 + nbytes]
                redelivered = False
            else:
                hdr, n, at, after, redelivered, slot, mask = self._consume(
                    self._hold, 1, blocking, timeout
                )
                hold = (False, hdr, at, after, slot)
                view = self._ring_view[hdr - RING + 8 : hdr - RING + 8 + n].toreadonly()
            # lent: released as soon as a close begins, so that a read
            # after it raises on every interpreter
            block.data = core.lend(view)
            block._state = (hold, redelivered, me)
            self._open_blocks[id(block)] = (hold, weakref.ref(block), me)
            self._txn_threads.add(me)
            block._inside = True
            self._unlock(self._unlock_get, self._get_mutex)
        except BaseException:
            if not block._inside:  # (else begun after all: the caller ends it)
                if hold is not None:
                    self._open_blocks.pop(id(block), None)
                    self._resolve(hold, False)  # (the get mutex is still ours)
                    self._txn_threads.discard(me)
                _let_go(self._get_mutex)
                self._leave()
            raise
        finally:
            if mask is not None:
                uncalm(mask)

    def _txn_end(self, block: Any, commit: bool) -> None:
        """Leave a receive or reserve block: remove the received message or
        publish the reserved one (``commit``), or give it back, then wake
        whoever waits for the change.  It runs with signals blocked, so a
        signal handler's exception comes before it (the block still open:
        the caller ends it again) or after it; a hold it could not resolve
        (the get mutex not had within a second) is given back by ``close``
        (at the latest at exit), or when this process dies."""
        ready = room = False
        closed = False
        mask = calm()
        try:
            # Closed meanwhile: the views of the queue are going, so nothing
            # is published or removed (close gives the hold back if we do not).
            closed = self._core is None or self._core.closed
            ready, room = self._end_hold(id(block), commit and not closed)
            self._end_block(block)
        finally:
            if block._inside:
                _let_go(self._get_mutex)  # if an interrupted begin kept it
                self._end_block(block)
            uncalm(mask)
        if ready:
            self._wake_if_sleeping(self._data_sem, CONSUMERS_WAITING)
        if room:
            self._wake_if_sleeping(self._room_sem, PRODUCERS_WAITING)
        if closed:
            what = "published" if block._reserve else "removed from the queue"
            raise ValueError(f"MessageQueue was closed inside the block: nothing was {what}")

    def _end_hold(self, key: int, commit: bool) -> tuple[bool, bool]:
        """With signals blocked: resolve the hold of the open block ``key``
        (``_resolve``) under the get mutex, if it is still open and the
        mutex is had within a second; else nothing."""
        if key not in self._open_blocks or self._core is None:
            return False, False
        try:
            # (_lock inline, the clock read only once the try failed: once per block)
            if not (self._get_intact() and self._try_get() == 0) and not self._lock_slow(
                self._get_mutex, patience_deadline(), _anyway
            ):
                return False, False
            entry = self._open_blocks.pop(key, None)
            outcome = (False, False) if entry is None else self._resolve(entry[0], commit)
            self._unlock(self._unlock_get, self._get_mutex)
        except BaseException:
            _let_go(self._get_mutex)
            raise
        return outcome

    def _sweep_blocks(self) -> None:
        """Give back the holds of blocks whose object is gone: let go while
        still open (an exception at the very entry of its ``__exit__`` and
        again in its ``__del__``: its thread is freed and its call left), or
        ended without the get mutex in time."""
        for key, (_, ref, thread) in list(self._open_blocks.items()):
            if ref() is None:
                mask = calm()
                try:
                    self._end_hold(key, False)
                    if thread in self._txn_threads:  # never ended
                        self._txn_threads.discard(thread)
                        try:
                            self._leave()  # the call the block kept open
                        except IndexError:
                            pass
                finally:
                    uncalm(mask)

    def _wake_if_sleeping(self, sem: SemaphoreHandle, sleepers: int) -> None:
        """Wake one sleeper on ``sem`` if the count at word ``sleepers`` says
        any sleeps: read without its mutex, it is a hint, which suffices here
        because a sleeper registers before it looks under the get mutex,
        whose section that changed the record came before this read."""
        if self._core is not None and not self._core.closed and self._w[sleepers]:
            wake(sem, 1)

    def _end_block(self, block: Any) -> None:
        """What ends every receive/reserve block: the view released, the
        call left, and ``block._inside`` cleared last (nothing between
        ``_leave`` returning and that store can be interrupted), so that
        running it again after an exception is safe."""
        if self._core is not None:
            self._core.reclaim(block.data)  # (an export the caller kept: valid only inside)
        self._txn_threads.discard(block._state[2])
        try:
            self._leave()
        except IndexError:
            pass  # left already, by the run this one repeats
        block._inside = False
