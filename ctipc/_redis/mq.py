"""MessageQueue on Redis: a Stream with one consumer group.

``put`` is a script that checks ``capacity`` (never ``XADD MAXLEN``, which
would drop messages still being received) and skips messages it already
added, recognised by the producer's sequence numbers, so a put whose reply
was lost is not applied twice when sent again.  Taking is ``XREADGROUP``
into this consumer's pending list, and removing (``XACK`` + ``XDEL``) is a
second step: after ``get`` returns, or when a ``receive`` block ends
normally.  A message whose consumer died, stalled past the queue's lease or
left its block by an exception is claimed by the next take (``XAUTOCLAIM``)
and comes back first, ``redelivered``.  Consumers wait with ``XREAD BLOCK``
in slices, producers with ``BLPOP`` on a wake-up list.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Callable, cast

import redis

from .._args import check_queue_timeout, check_size
from .._errors import BackendUnavailable, Empty, Full, IncompatibleError, LeaseLost
from .._queue_core import as_bytes_view
from .._ring import (
    DEFAULT_CAPACITY,
    DEFAULT_MAX_MESSAGE,
    check_sizes,
    record_size,
)
from ._base import RedisObject, lease_ms, new_token
from ._conn import QUEUE_LEASE, TRANSIENT, WAIT_SLICE, Retrying
from ._lease import Lease
from ._scripts import Scripts

__all__ = ["MessageQueue", "Received", "Reservation"]

#: Messages per put script (a bigger put_many is sent in several).
PUT_BATCH = 1000

_Taken = tuple[bytes, bytes, bool]  # (id, data, redelivered)


class MessageQueue(RedisObject):
    """``ctipc.MessageQueue`` on Redis (docs/distributed.md).  ``capacity``
    (bytes, each message costing 8 plus its length rounded up to 8, as
    locally), ``max_message`` and ``lease`` (seconds a received message may
    stay unfinished before it is given to another consumer) are stored at
    create; explicit values that contradict them raise IncompatibleError."""

    kind = "mq"
    label = "MessageQueue"
    parts = ("s", "room", "seen", "seen_at")

    def __init__(
        self,
        name: str,
        *,
        capacity: int | None = None,
        max_message: int | None = None,
        create: bool | None = None,
        persistent: bool = True,
        permissions: int = 0o600,
        lease: float | None = None,
    ) -> None:
        check_size(capacity, "capacity")
        check_size(max_message, "max_message")
        cap = DEFAULT_CAPACITY if capacity is None else capacity
        biggest = DEFAULT_MAX_MESSAGE if max_message is None else max_message
        unfit: ValueError | None = None
        if capacity is not None and max_message is not None:
            check_sizes(cap, biggest)  # wrong whether creating or not
        else:
            try:
                check_sizes(cap, biggest)
            except ValueError as e:
                if create is True:
                    raise
                unfit, create = e, False  # nothing to create with: attach only
        default = self._conn.lease if self._conn.lease is not None else QUEUE_LEASE
        ms = lease_ms(lease, default)
        super().__init__(name, create, persistent, permissions)
        try:
            stored = self._open(
                {"capacity": cap, "max_message": biggest, "lease": ms, "used": 0}, "s"
            )
        except FileNotFoundError:
            if unfit is not None:
                raise unfit from None
            raise
        self._capacity = int(stored[b"capacity"])
        self._max_message = int(stored[b"max_message"])
        self._lease_ms = int(stored[b"lease"])
        for given, have, what in (
            (capacity, self._capacity, "capacity"),
            (max_message, self._max_message, "max_message"),
            (None if lease is None else ms, self._lease_ms, "lease (ms)"),
        ):
            if given is not None and given != have:
                self._closed = True
                raise IncompatibleError(
                    f"MessageQueue {name!r} has {what}={have}, not {given}", name
                )
        self._consumer_of = (0, "")  # (pid, this process's consumer name in the group)
        self._producers = threading.local()  # [pid, producer id, next sequence number]
        k = self._key
        self._put_keys = [k("meta"), k("s"), k("seen"), k("seen_at")]
        self._take_keys = [k("meta"), k("s")]
        self._ack_keys = [k("meta"), k("s"), k("room")]

    # -- sizes --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_message(self) -> int:
        return self._max_message

    @property
    def lease(self) -> float:
        """Seconds a received message may stay unfinished before another
        consumer gets it (redelivered)."""
        return self._lease_ms / 1000

    def __len__(self) -> int:
        """Messages in the queue, those inside a ``receive`` block included."""
        self._check_open()
        conn, stream = self._conn, self._key("s")
        return int(conn.run(conn.client.xlen, stream))

    def _checked(self, data: object) -> bytes:
        view = as_bytes_view(data)
        if view.nbytes > self._max_message:
            raise ValueError(
                f"message of {view.nbytes} bytes exceeds max_message={self._max_message}"
            )
        return data if type(data) is bytes else view.tobytes()

    def _deadline(self, block: bool, timeout: float | None) -> float | None:
        seconds = check_queue_timeout(block, timeout)
        if not block:
            return time.monotonic()
        return None if seconds is None else time.monotonic() + seconds

    # -- put ----------------------------------------------------------------------------
    # A producer (one per thread) and a consumer name of their own in every
    # process, also in a child forked with this handle: two processes that
    # shared a producer's sequence numbers would drop each other's messages as
    # repeats, and two that shared a consumer name would own each other's.
    @property
    def _consumer(self) -> str:
        pid, consumer = self._consumer_of
        if pid != os.getpid():
            consumer = new_token()
            self._consumer_of = (os.getpid(), consumer)
        return consumer

    def _producer(self) -> list[Any]:
        producer: list[Any] | None = getattr(self._producers, "p", None)
        if producer is None or producer[0] != os.getpid():
            producer = self._producers.p = [os.getpid(), new_token(), 1]
        return producer

    def _put_args(self, payloads: list[bytes]) -> tuple[list[Any], list[Any]]:
        producer = self._producer()
        return producer, [producer[1], producer[2]] + payloads

    def _advance(self, producer: list[Any], first: int, put: int) -> None:
        if put < 0:
            raise self._gone()
        producer[2] = first + put

    def _put(self, payloads: list[bytes], deadline: float | None) -> int:
        """Put as many of ``payloads`` as room allows before ``deadline``."""
        self._check_open()
        conn, sent = self._conn, 0
        while sent < len(payloads):
            producer, args = self._put_args(payloads[sent : sent + PUT_BATCH])
            first = producer[2]
            try:
                put = conn.run(
                    conn.scripts.mq_put, keys=self._put_keys, args=args, deadline=deadline
                )
            except BaseException:
                producer[2] = first + len(args) - 2  # numbers a lost try may have used
                raise
            self._advance(producer, first, put)
            sent += put
            if put == len(args) - 2:
                continue
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            room = [self._key("room")]
            wait = max(0.01, min(WAIT_SLICE, remaining))  # (BLPOP's 0 would mean forever)
            conn.run(conn.client.blpop, room, timeout=wait, deadline=deadline)
            self._check_open()
        return sent

    def _full(self, block: bool, timeout: float | None) -> Full:
        if not block:
            return Full(f"MessageQueue {self._name!r} is full")
        return Full(f"MessageQueue {self._name!r} stayed full for {timeout} s")

    def put(self, data: bytes | bytearray | memoryview, block: bool = True,
            timeout: float | None = None) -> None:  # fmt: skip
        """Append a message; :class:`ctipc.Full` if no room came before ``timeout``."""
        payload = self._checked(data)
        if not self._put([payload], self._deadline(block, timeout)):
            raise self._full(block, timeout)

    def put_nowait(self, data: bytes | bytearray | memoryview) -> None:
        self.put(data, block=False)

    def put_many(self, messages: Iterable[bytes | bytearray | memoryview],
                 block: bool = True, timeout: float | None = None) -> None:  # fmt: skip
        """Append several messages in order, with one script per thousand.
        On :class:`ctipc.Full` the messages before the first one that did not
        fit have been put; the exception says how many."""
        payloads = [self._checked(m) for m in messages]
        deadline = self._deadline(block, timeout)
        sent = self._put(payloads, deadline) if payloads else 0
        if sent < len(payloads):
            raise Full(
                f"{sent} of {len(payloads)} messages were put before MessageQueue "
                f"{self._name!r} stayed full"
            )

    # -- get ----------------------------------------------------------------------------
    def _empty(self, block: bool, timeout: float | None) -> Empty:
        if not block:
            return Empty(f"MessageQueue {self._name!r} is empty")
        return Empty(f"no message came to MessageQueue {self._name!r} within {timeout} s")

    def _parse(self, reply: list[Any]) -> list[_Taken] | bytes:
        """The taken messages, or the id to wait beyond."""
        if reply[0] == -1:
            raise self._gone()
        if reply[0] == 0:
            return cast(bytes, reply[1])
        return [(reply[i], reply[i + 1], bool(reply[i + 2])) for i in range(1, len(reply), 3)]

    def _take(self, count: int, block: bool, timeout: float | None) -> list[_Taken]:
        deadline = self._deadline(block, timeout)
        self._check_open()
        conn, stream = self._conn, self._key("s")
        args = [self._consumer, count]
        while True:
            reply = conn.run(
                conn.scripts.mq_take, keys=self._take_keys, args=args, deadline=deadline
            )
            got = self._parse(reply)
            if not isinstance(got, bytes):
                return got
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise self._empty(block, timeout)
            block_ms = max(1, int(min(WAIT_SLICE, remaining) * 1000))  # (0 would mean forever)
            conn.run(conn.client.xread, {stream: got}, count=1, block=block_ms, deadline=deadline)
            self._check_open()

    def _ack_args(self, taken: list[_Taken]) -> list[Any]:
        args: list[Any] = [self._consumer]
        for ident, data, _ in taken:
            args += [ident, record_size(len(data))]
        return args

    def _ack(self, taken: list[_Taken]) -> int:
        conn, args = self._conn, self._ack_args(taken)
        return int(conn.run(conn.scripts.mq_ack, keys=self._ack_keys, args=args))

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Remove and return the oldest message; :class:`ctipc.Empty` if none
        came before ``timeout``."""
        taken = self._take(1, block, timeout)
        self._ack(taken)
        return taken[0][1]

    def get_nowait(self) -> bytes:
        return self.get(block=False)

    def get_many(self, max_messages: int = 100, block: bool = True,
                 timeout: float | None = None) -> list[bytes]:  # fmt: skip
        """Remove and return up to ``max_messages`` messages, oldest first:
        at least one, waiting for it like ``get``."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError("max_messages must be an int")
        if max_messages < 1:
            raise ValueError("max_messages must be one or more")
        taken = self._take(max_messages, block, timeout)
        self._ack(taken)
        return [data for _, data, _ in taken]

    # -- receive / reserve --------------------------------------------------------------
    def receive(self, block: bool = True, timeout: float | None = None) -> Received:
        """The oldest message, removed only when the ``with`` block ends
        normally (a copy: ``msg.data`` is a read-only memoryview of it).
        Inside the block this process renews the message's lease; if the
        block ends by an exception, the message goes back at once, and if
        the process dies or stalls past the lease, another consumer gets it;
        either way with ``redelivered`` True.  :class:`ctipc.LeaseLost` at
        the end of a block whose message went to another consumer meanwhile."""
        check_queue_timeout(block, timeout)  # bad timeouts fail here, before any wait
        return Received(self, block, timeout)

    def reserve(self, nbytes: int, block: bool = True,
                timeout: float | None = None) -> Reservation:  # fmt: skip
        """Room for one message of exactly ``nbytes``, written into
        ``slot.data`` (a local buffer) and put when the ``with`` block ends
        normally.  Entering waits for room like ``put`` (:class:`ctipc.Full`);
        another producer may take it meanwhile, so the put at the end waits
        again, with the same timeout."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"nbytes must be an int, not {type(nbytes).__name__}")
        if not 0 <= nbytes <= self._max_message:
            raise ValueError(f"nbytes must be within 0..max_message={self._max_message}")
        check_queue_timeout(block, timeout)
        return Reservation(self, nbytes, block, timeout)

    def _wait_room(self, nbytes: int, block: bool, timeout: float | None) -> None:
        deadline = self._deadline(block, timeout)
        self._check_open()
        conn, meta, room = self._conn, self._key("meta"), [self._key("room")]
        while True:
            fields = conn.run(conn.client.hmget, meta, "used", "capacity", deadline=deadline)
            used, capacity = cast("list[bytes | None]", fields)
            if used is None or capacity is None:
                raise self._gone()
            if int(used) + record_size(nbytes) <= int(capacity):
                return
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise self._full(block, timeout)
            wait = max(0.01, min(WAIT_SLICE, remaining))  # (BLPOP's 0 would mean forever)
            conn.run(conn.client.blpop, room, timeout=wait, deadline=deadline)
            self._check_open()

    def _hold(self, ident: bytes, give_back: bool) -> bool:
        return bool(
            self._conn.scripts.mq_hold(
                keys=[self._key("s")], args=[self._consumer, ident, "1" if give_back else "0"]
            )
            == 1
        )

    # -- listeners and asyncio ----------------------------------------------------------
    def listen(self, callback: Callable[[bytes], object]) -> Any:
        """Start a daemon thread calling ``callback(message)`` for each
        message (a :class:`ctipc.Listener`; ``stop()`` it)."""
        from ..listener import Listener

        return Listener(cast(Any, self), callback)

    async def _arun(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``Conn.run`` for the asyncio client (calls without a deadline)."""
        import asyncio

        retrying: Retrying | None = None
        while True:
            self._check_open()
            try:
                return await call(*args, **kwargs)
            except TRANSIENT as e:
                if retrying is None:
                    retrying = Retrying(self._conn.where, None, self._conn.patience)
                delay = retrying.pause(e)
            await asyncio.sleep(delay)

    async def _aget(self, client: Any, scripts: Scripts) -> bytes:
        stream = self._key("s")
        args = [self._consumer, 1]
        while True:
            reply = await self._arun(
                scripts.mq_take, keys=self._take_keys, args=args, client=client
            )
            got = self._parse(reply)
            if not isinstance(got, bytes):
                ack = self._ack_args(got)
                await self._arun(scripts.mq_ack, keys=self._ack_keys, args=ack, client=client)
                return got[0][1]
            block_ms = int(WAIT_SLICE * 1000)
            await self._arun(client.xread, {stream: got}, count=1, block=block_ms)

    async def aget(self) -> bytes:
        """``get()`` for asyncio, through ``redis.asyncio`` (no thread).  A
        cancelled ``aget`` never loses a message: one it had taken and not yet
        removed comes back after the lease, redelivered."""
        self._check_open()
        client = self._conn.async_client()
        try:
            return await self._aget(client, Scripts(client))
        finally:
            await client.aclose()

    async def aput(self, data: bytes | bytearray | memoryview) -> None:
        """``put()`` for asyncio.  A put whose reply was lost is sent again
        and not applied twice."""
        payload = self._checked(data)
        self._check_open()
        client = self._conn.async_client()
        scripts = Scripts(client)
        room = [self._key("room")]
        try:
            while True:
                producer, args = self._put_args([payload])
                first = producer[2]
                try:
                    put = await self._arun(
                        scripts.mq_put, keys=self._put_keys, args=args, client=client
                    )
                except BaseException:
                    producer[2] = first + 1
                    raise
                self._advance(producer, first, put)
                if put:
                    return
                await self._arun(client.blpop, room, timeout=WAIT_SLICE)
        finally:
            await client.aclose()

    async def _iterate(self) -> AsyncIterator[bytes]:
        client = self._conn.async_client()
        scripts = Scripts(client)
        try:
            while not self._closed:
                try:
                    message = await self._aget(client, scripts)
                except ValueError:
                    if self._closed:
                        return
                    raise
                yield message
        finally:
            await client.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Messages as they come, until the queue is closed."""
        return self._iterate()

    def close(self) -> None:
        """Close this handle (idempotent); the queue and its messages stay
        until ``unlink()``."""
        if not self._closed:
            self._closed = True
            try:  # leave the group if nothing is held (one try: close never waits)
                self._conn.scripts.mq_leave(keys=[self._key("s")], args=[self._consumer])
            except (redis.RedisError, ValueError):
                pass

    def _state(self) -> str:
        return f"messages={len(self)} capacity={self._capacity}"


class _Block:
    """The ``with`` protocol of Received and Reservation (one use each)."""

    def __init__(self, queue: MessageQueue, nbytes: int, block: bool,
                 timeout: float | None) -> None:  # fmt: skip
        self._queue = queue
        self._args = (nbytes, block, timeout)
        self._used = False
        self._inside = False
        self.data = memoryview(b"")

    def _begin(self) -> None:
        if self._used:
            raise RuntimeError(f"this {type(self).__name__} was already used")
        self._used = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._inside:
            return
        self._inside = False
        try:
            self.data.release()
        except BufferError:
            pass  # the caller kept an export of it: valid only inside the block
        self._end(exc_type is None)

    def _end(self, normal: bool) -> None:
        raise NotImplementedError


class Received(_Block):
    """A message being received: ``data`` (read-only memoryview of a copy)
    and ``redelivered`` (a receive of it began before and did not end
    normally, or its consumer's lease ran out)."""

    _redelivered = False
    _taken: _Taken | None = None
    _lease: Lease | None = None

    def __init__(self, queue: MessageQueue, block: bool, timeout: float | None) -> None:
        super().__init__(queue, 0, block, timeout)

    @property
    def redelivered(self) -> bool:
        if not self._used:
            raise RuntimeError("use Received in a with statement")
        return self._redelivered

    def __enter__(self) -> Received:
        self._begin()
        queue = self._queue
        taken = queue._take(1, *self._args[1:])[0]
        self._taken = taken
        self._redelivered = taken[2]
        self.data = memoryview(taken[1])
        self._lease = Lease(queue.lease, lambda: queue._hold(taken[0], False))
        queue._conn.renewer.add(self._lease)
        self._inside = True
        return self

    def _end(self, normal: bool) -> None:
        queue, taken = self._queue, self._taken
        assert taken is not None and self._lease is not None
        queue._conn.renewer.discard(self._lease)
        if queue.closed or not normal:
            conn = queue._conn
            try:
                conn.run(queue._hold, taken[0], True)
            except (ValueError, BackendUnavailable):
                pass  # (the backend was closed, or the server is away: the lease gives it back)
            if normal:
                raise ValueError("MessageQueue was closed inside the block: nothing was removed")
            return
        if not queue._ack([taken]):
            raise LeaseLost(
                f"the message received from MessageQueue {queue.name!r} went to another "
                "consumer before the block ended (its lease ran out): it may be handled twice",
                queue.name,
            )


class Reservation(_Block):
    """Room for one message: ``data`` is a writable memoryview of exactly the
    reserved size, put when the ``with`` block ends normally."""

    def __enter__(self) -> Reservation:
        self._begin()
        nbytes, block, timeout = self._args
        self._queue._wait_room(nbytes, block, timeout)
        self._buffer = bytearray(nbytes)
        self.data = memoryview(self._buffer)
        self._inside = True
        return self

    def _end(self, normal: bool) -> None:
        if normal:
            if self._queue.closed:
                raise ValueError("MessageQueue was closed inside the block: nothing was published")
            _, block, timeout = self._args
            self._queue.put(bytes(self._buffer), block, timeout)
