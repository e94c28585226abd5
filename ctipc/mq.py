"""Named message queues: any number of producers and consumers, by name.

The public calls (and the waits the asyncio adapters run in threads);
_queue_core.py has the critical sections and waiting,
_ring.py and docs/FORMAT.md the layout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable

from . import aio
from ._backend import WAIT_SLICE
from ._backend import os_backend as _os
from ._errors import Full, waited
from ._queue_core import QueueCore
from ._ring import (
    CONSUMERS_WAITING,
    GETS,
    HEAD,
    PRODUCERS_WAITING,
    PUTS,
    RECEIVING,
    RECORD,
    RING,
    TAIL,
    U64_MASK,
    WRAP,
    deadlines,
    patience_deadline,
    record_size,
    wake,
)
from .listener import Listener

__all__ = ["MessageQueue", "Received", "Reservation"]


class MessageQueue(QueueCore):
    """A queue of byte messages that any process can open by name.

    ``capacity`` is the size of the ring in bytes and ``max_message`` the
    largest message; both are used when creating (a record takes 8 bytes
    plus the message rounded up to 8).  A process that attaches gets the
    queue's own values; explicit values that contradict them raise
    :class:`ctipc.IncompatibleError`.  Each message is delivered once, in the
    order of the puts (so in order per producer).  See ``docs/FORMAT.md``.
    """

    def put(self, data: bytes | bytearray | memoryview, block: bool = True,
            timeout: float | None = None) -> None:  # fmt: skip
        """Append a message (any bytes-like object of 0..max_message bytes).
        Raises :class:`ctipc.Full` if no room appeared before ``timeout``
        (at once if not ``block``); ValueError, with nothing written, if it
        is larger than ``max_message``."""
        # bytes, the common case, go as they are (len() is their size)
        view: bytes | memoryview = data if type(data) is bytes else self._checked(data)
        if len(view) > self._max_message:
            view = self._checked(view)  # the error
        self._enter()
        try:
            if not self._produce([view], 0, block, timeout)[0]:
                raise Full(f"no room in MessageQueue {self.name!r} {waited(block, timeout)}")
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
        if isinstance(messages, (bytes, bytearray, memoryview, str)):
            raise TypeError(
                "put_many takes a list (any iterable) of messages, not one "
                f"{type(messages).__name__}: put_many([message]), or put(message)"
            )
        views: list[bytes | memoryview] = [self._checked(m) for m in messages]
        self._enter()
        try:  # (no views would mean a reservation to _produce)
            sent = self._produce(views, 0, block, timeout)[0] if views else 0
        finally:
            self._leave()
        if sent < len(views):
            raise Full(
                f"{sent} of {len(views)} messages were put before MessageQueue {self.name!r} "
                f"stayed full; no room for the rest {waited(block, timeout)}"
            )

    def reserve(self, nbytes: int, block: bool = True,
                timeout: float | None = None) -> Reservation:  # fmt: skip
        """Room for one message of exactly ``nbytes``, written in place::

            with queue.reserve(len(payload)) as slot:
                slot.data[:] = payload   # a writable memoryview in the queue

        The message is published when the ``with`` block ends normally, and
        discarded if it ends by an exception or the process dies in it.  The
        room is taken on entering the block (raising :class:`ctipc.Full`
        like ``put``); other producers wait until the block ends, so keep it
        short, and make no other call on this handle inside it."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"nbytes must be an int, not {type(nbytes).__name__}")
        if not 0 <= nbytes <= self._max_message:
            raise ValueError(f"nbytes must be within 0..max_message={self._max_message}")
        deadlines(block, timeout)  # bad timeouts fail here, before any wait
        return Reservation(self, nbytes, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Remove and return the oldest message.  Raises
        :class:`ctipc.Empty` if none came before ``timeout`` (at once if
        not ``block``)."""
        self._enter()
        try:
            got: list[bytes] = self._consume(self._take, 1, block, timeout)
            return got[0]
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
            got: list[bytes] = self._consume(self._take, max_messages, block, timeout)
            return got
        finally:
            self._leave()

    def receive(self, block: bool = True, timeout: float | None = None) -> Received:
        """The oldest message, read in place and removed only once handled::

            with queue.receive(timeout=5) as msg:
                handle(msg.data)   # a read-only memoryview in the queue

        The message is removed when the ``with`` block ends normally.  If it
        ends by an exception, or the process dies inside it, the message
        stays first in the queue and the next ``receive`` of it says
        ``msg.redelivered``.  Entering the block waits like ``get`` (raising
        :class:`ctipc.Empty`); other consumers wait until the block ends, so
        keep it short, and make no other call on this handle inside it.
        ``msg.data`` is valid only inside the block: copy what you keep."""
        deadlines(block, timeout)  # bad timeouts fail here, before any wait
        return Received(self, block, timeout)

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
                self._refresh_tail(patience_deadline(), -1)
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
                self._refresh_head(patience_deadline(), -1)
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
            wake(sem, 1)
        finally:
            self._leave()

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

    def _txn_begin(self, reserve: bool, nbytes: int, block: bool,
                   timeout: float | None) -> tuple[memoryview, Any]:  # fmt: skip
        """Enter a receive (``reserve`` False) or reserve block: the view
        and what ``_txn_end`` needs, with the side's mutex held."""
        self._enter()
        core = self._core
        assert core is not None
        try:
            if reserve:
                sent, held, registered = self._produce([], nbytes, block, timeout)
                if not sent or held is None:
                    raise Full(
                        f"no room for {nbytes} bytes in MessageQueue {self.name!r} "
                        f"{waited(block, timeout)}"
                    )
                tail, pos, skip = held
                start = 0 if skip else pos
                view = core.lend(self._ring_view[start + 8 : start + 8 + nbytes])
                state: Any = (tail, pos, skip, nbytes, registered)
            else:
                offset, n, after, redelivered = self._consume(self._hold, 1, block, timeout)
                view = core.lend(self._ring_view[offset - RING : offset - RING + n].toreadonly())
                state = (after, redelivered)
        except BaseException:
            self._leave()
            raise
        self._txn_thread = threading.get_ident()
        return view, state

    def _txn_end(self, reserve: bool, view: memoryview, state: Any, commit: bool) -> None:
        """Leave a receive or reserve block: publish (``commit``) or drop,
        then release the mutex and wake whoever waits for the change."""
        words, sleepers, registered = self._w, 0, False
        mutex = self._put_mutex if reserve else self._get_mutex
        # Closed meanwhile (by this thread: close() waits for other threads'
        # blocks): the views of the queue are gone, so nothing can be
        # published or removed; the mutex is still ours to release.
        closed = self.closed
        commit = commit and not closed
        try:
            if reserve:
                tail, pos, skip, nbytes, registered = state
                if commit:
                    if skip:
                        RECORD.pack_into(self._mm, RING + pos, WRAP, 0)
                        tail += skip
                        pos = 0
                    RECORD.pack_into(self._mm, RING + pos, nbytes, 0)
                    words[TAIL] = tail + record_size(nbytes)
                    words[PUTS] = (words[PUTS] + 1) & U64_MASK
                    sleepers = words[CONSUMERS_WAITING]
            elif commit:
                words[HEAD] = state[0]
                words[GETS] = (words[GETS] + 1) & U64_MASK
                words[RECEIVING] = 0
                sleepers = words[PRODUCERS_WAITING]
        finally:
            if self._core is not None:
                self._core.reclaim(view)  # released (exports: valid only inside the block)
            self._txn_thread = None
            try:
                self._unlock(mutex)
                if registered and not closed:
                    self._refresh_head(patience_deadline(), -1)
                if sleepers:
                    wake(self._data_sem if reserve else self._room_sem, 1)
            finally:
                self._leave()
        if closed:
            what = "published" if reserve else "removed from the queue"
            raise ValueError(f"MessageQueue was closed inside the block: nothing was {what}")


class _Block:
    """What Received and Reservation share: the ``with`` protocol around
    ``MessageQueue._txn_begin`` / ``_txn_end``.  After the block ``data`` is
    a released view: using it raises ValueError."""

    _reserve = False
    __slots__ = ("_args", "_inside", "_queue", "_state", "data")

    def __init__(self, queue: MessageQueue, nbytes: int, block: bool,
                 timeout: float | None) -> None:  # fmt: skip
        self._queue = queue
        self._args = (nbytes, block, timeout)
        self._state: Any = None
        self._inside = False
        self.data = memoryview(b"")

    def __enter__(self) -> Any:
        if self._state is not None:
            raise RuntimeError(f"this {type(self).__name__} was already used")
        self._state = ()  # used, even if entering fails
        self.data, self._state = self._queue._txn_begin(self._reserve, *self._args)
        self._inside = True
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._inside:
            self._inside = False
            self._queue._txn_end(self._reserve, self.data, self._state, exc_type is None)


class Received(_Block):
    """A message being received (``MessageQueue.receive``).  Inside the
    ``with`` block, ``data`` is a read-only memoryview of it in the queue
    and ``redelivered`` says whether a receive of this message began before
    and did not end normally (an exception, or its process died): it may
    have been handled, in part, already."""

    __slots__ = ()

    def __init__(self, queue: MessageQueue, block: bool, timeout: float | None) -> None:
        super().__init__(queue, 0, block, timeout)

    @property
    def redelivered(self) -> bool:
        if self._state is None:
            raise RuntimeError("use Received in a with statement")
        return bool(self._state[1])

    def __enter__(self) -> Received:
        super().__enter__()
        return self


class Reservation(_Block):
    """Room for one message in the queue (``MessageQueue.reserve``).  Inside
    the ``with`` block, ``data`` is a writable memoryview of exactly the
    reserved size; the message is published when the block ends normally."""

    _reserve = True
    __slots__ = ()

    def __enter__(self) -> Reservation:
        super().__enter__()
        return self
