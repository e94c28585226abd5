"""Named message queues: any number of producers and consumers, by name.

The public calls only: _queue_core.py is the engine (every byte of the
ring, locking, waiting, the receive/reserve blocks), _ring.py and
docs/FORMAT.md the layout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, TypeVar

from . import aio
from ._errors import Full, waited
from ._queue_core import QueueCore
from ._signals import CALMED
from ._wait import deadlines
from .listener import Listener

__all__ = ["MessageQueue", "Received", "Reservation"]

# The mark of a call in flight, as ``Core.enter`` appends it: put and get
# append it inline (``inflight += _IN``), one frame less each, and leave the
# same way (``inflight.remove(None)``, then ``Core.left`` once closing).
_IN = (None,)
# put and get make their common call without the engine's general entry
# (``_produce``, ``_consume``: a frame, and a deadline whose clock read only
# a call that waits needs) when nothing needs that entry: no repair
# (CALMED) or receive/reserve block of this thread pending, and a timeout
# that ``deadlines`` takes as it is (any other goes there, to be refused
# before anything changes).  In one process that took a get with a timeout
# from 2.8 to 2.1 µs, a put from 2.3 to 2.1 (docs/benchmarks.md).
_QUICK = (float, int)


class MessageQueue(QueueCore):
    """A queue of byte messages that any process can open by name.

    ``capacity`` is the size of the ring in bytes and ``max_message`` the
    largest message; both are used when creating (a record takes 8 bytes
    plus the message rounded up to 8).  A process that attaches gets the
    queue's own values; explicit values that contradict them raise
    :class:`ctipc.IncompatibleError`.  Each message is delivered once; the
    messages of one producer handle are delivered in the order it put them.
    See ``docs/FORMAT.md``.
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
        core = self._core
        inflight = core.inflight
        inflight += _IN  # (``_enter``, inline: an in-place add is no call, see _signals)
        try:
            if core.closing:
                raise core.closed_error()
            # The common call (see _QUICK): room, and the put mutex had at
            # once; else _produce makes the call in full.
            quick = not (CALMED or self._txn_threads) and (
                timeout is None or not block or (type(timeout) in _QUICK and timeout >= 0)
            )
            if (
                not (quick and self._append([view], None, True) == 1)
                and not self._produce([view], 0, block, timeout)[0]
            ):
                raise Full(f"no room in MessageQueue {self.name!r} {waited(block, timeout)}")
        finally:
            inflight.remove(None)  # (``_leave``, inline)
            if core.closing:
                core.left()

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
        # Each message as it is when it is yielded (a generator may refill
        # one buffer): bytes are immutable, anything else is copied.
        biggest = self._max_message
        views: list[bytes | memoryview] = [
            m if type(m) is bytes and len(m) <= biggest else self._checked(m).tobytes()
            for m in messages
        ]
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
        like ``put``); meanwhile other producers put after it.  Make no
        other call on this handle from the block's thread (RuntimeError)."""
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
        try:
            carry: list[bytes] = self._local.carry  # (``_carry``, inline)
        except AttributeError:
            carry = self._carry()
        if not carry:
            core = self._core
            inflight = core.inflight
            inflight += _IN
            try:
                if core.closing:
                    raise core.closed_error()
                # The common call (see _QUICK): a ready message, and the get
                # mutex had at once; else _consume makes the call in full.
                quick = not (CALMED or self._txn_threads) and (
                    timeout is None or not block or (type(timeout) in _QUICK and timeout >= 0)
                )
                if not (quick and self._take_one(carry)):
                    self._consume(self._take, 1, block, timeout)  # into carry
            finally:
                inflight.remove(None)
                if core.closing:
                    core.left()
        # Handed over without a call in between (CPython runs no signal
        # handler there): an exception before this point has left the
        # message in this thread's carry-over, for its next get.
        message = carry[0]
        del carry[0]
        return message

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
        carry = self._carry()
        if not carry:
            self._enter()
            try:
                self._consume(self._take, max_messages, block, timeout)  # into carry
            finally:
                self._leave()
        got = carry[:max_messages]  # (as in get)
        del carry[:max_messages]
        return got

    def receive(self, block: bool = True, timeout: float | None = None) -> Received:
        """The oldest message not being received already, read in place and
        removed only once handled::

            with queue.receive(timeout=5) as msg:
                handle(msg.data)   # a read-only memoryview in the queue

        The message is removed when the ``with`` block ends normally.  If it
        ends by an exception, or the process dies inside it, the message
        comes back first in the queue and the next ``receive`` of it says
        ``msg.redelivered``.  Entering the block waits like ``get`` (raising
        :class:`ctipc.Empty`); meanwhile other consumers take the next
        messages.  Make no other call on this handle from the block's
        thread (RuntimeError).  ``msg.data`` is valid only inside the
        block: copy what you keep."""
        deadlines(block, timeout)  # bad timeouts fail here, before any wait
        return Received(self, block, timeout)

    def listen(self, callback: Callable[[bytes], object]) -> Listener:
        """Start a daemon thread calling ``callback(message)`` for each
        message, in order; returns its :class:`Listener` (``stop()`` it)."""
        self._check_open()
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


_B = TypeVar("_B", bound="_Block")


class _Block:
    """What Received and Reservation share: the ``with`` protocol around
    ``MessageQueue._txn_begin`` / ``_txn_end``.  After the block ``data`` is
    a released view: using it raises ValueError."""

    _reserve = False
    __slots__ = ("__weakref__", "_args", "_inside", "_queue", "_state", "data")

    def __init__(self, queue: MessageQueue, nbytes: int, block: bool,
                 timeout: float | None) -> None:  # fmt: skip
        self._queue = queue
        self._args = (nbytes, block, timeout)
        self._state: Any = None
        self._inside = False
        self.data = memoryview(b"")

    def __enter__(self: _B) -> _B:
        if self._state is not None:
            raise RuntimeError(f"this {type(self).__name__} was already used")
        self._state = ()  # used, even if entering fails
        try:
            self._queue._txn_begin(self)  # sets data, _state and _inside
        except BaseException:
            # An exception (a signal handler's) after the block began but
            # before ``with`` could arrange for __exit__: end it here.
            if self._inside:
                self._queue._txn_end(self, False)
            raise
        return self

    def __del__(self) -> None:
        # An exception (a signal handler's) raised at the very entry of
        # __exit__, before its first line, leaves the block open: end it,
        # changing nothing, once the block object is let go.
        if getattr(self, "_inside", False):
            try:
                self._queue._txn_end(self, False)
            except Exception:
                pass

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._inside:
            try:
                self._queue._txn_end(self, exc_type is None)
            except BaseException:
                if self._inside:  # interrupted before _txn_end began: end it now
                    self._queue._txn_end(self, False)
                raise


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


class Reservation(_Block):
    """Room for one message in the queue (``MessageQueue.reserve``).  Inside
    the ``with`` block, ``data`` is a writable memoryview of exactly the
    reserved size; the message is published when the block ends normally."""

    _reserve = True
    __slots__ = ()
