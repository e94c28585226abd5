"""One adapter per message transport: ctipc and its peers.

An adapter is used in two places.  In the suite's own process ``open``
creates the transport for one run and returns a :class:`Channel`: its
``handle`` goes to the worker processes (a name for the named transports;
the object itself for multiprocessing's, which can only be inherited, so
they travel as arguments of a spawned ``Process``), its ``keep`` stays with
the suite until ``close``.  In each worker (a fresh interpreter) ``tx`` or
``rx`` attaches to the handle and gives an endpoint.

Each transport runs as its documentation recommends for the case: bytes
without pickling where the API allows it (``Connection.send_bytes``),
pyzmq's ``copy=False`` for large messages.  Where a buffer size can be
chosen it is :func:`buffer_bytes` (1 MiB, or 4 messages if larger); where
the OS fixes it (POSIX and System V queues, pipes) it is the OS's, which
``note`` reports.  Where the OS refuses a cell (a message larger than its
limit, a queue past RLIMIT_MSGQUEUE) ``cannot`` says why, and the suite
skips that cell with the reason.  A receive that has a cheap timeout uses
it; the others (``SimpleQueue``, pipes, System V) block, and the suite
kills a worker that outlives its run's deadline.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import struct
from typing import Any

from _limits import kib, msgqueue_limit, posix_queue_refusal, read_int
from _msgs import Checker, Payload
from _run import Skipped, tag

WAIT = float(
    os.environ.get("CTIPC_BENCH_WAIT", "60")
)  # seconds one send or receive may block before the run is failed
BATCH_GET = 1000  # most messages one get_many takes


def buffer_bytes(size: int) -> int:
    return max(1 << 20, 4 * (size + 64))


class Channel:
    def __init__(self, handle: Any, keep: Any = None) -> None:
        self.handle = handle
        self.keep = keep


class Tx:
    def start(self) -> None:
        """Called once all workers are ready, before the first send."""

    def send(self, payload: Payload, seq: int) -> None:
        raise NotImplementedError

    def send_batch(self, payload: Payload, start: int, stop: int) -> None:
        for seq in range(start, stop):
            self.send(payload, seq)

    def close(self) -> None:
        pass


class Rx:
    def recv(self, checker: Checker) -> int:
        """Receive and check one message (or a batch); return how many."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Transport:
    label = ""
    needs: tuple[str, ...] = ()  # modules that must import
    batch = False  # sends and receives in batches
    many_producers = True

    def available(self) -> str | None:
        """None, or why this transport cannot run here."""
        for module in self.needs:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - any failure means "skip"
                return f"{module} does not import: {type(e).__name__}: {e}"
        return None

    def cannot(self, size: int, producers: int) -> str | None:
        """None, or why this transport cannot run ``producers`` → 1 with
        messages of ``size`` bytes here (a limit of the OS or of the peer)."""
        if producers > 1 and not self.many_producers:
            return "takes one writer only"
        return None

    def note(self, size: int) -> str:
        return ""

    def limits(self, sizes: list[int]) -> str:
        """The OS limits this transport runs within here, for the report's
        header ("" if none matter)."""
        return ""

    def version(self) -> str:
        if not self.needs:
            return ""
        module = importlib.import_module(self.needs[0])
        for attr in ("__version__", "VERSION", "version"):
            v = getattr(module, attr, None)
            if isinstance(v, str):
                return v
        try:
            from importlib.metadata import version

            return version(self.needs[0].replace("_", "-"))
        except Exception:  # noqa: BLE001
            return "?"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        raise NotImplementedError

    def close(self, ch: Channel) -> None:
        pass

    def tx(self, handle: Any, size: int) -> Tx:
        raise NotImplementedError

    def rx(self, handle: Any, size: int) -> Rx:
        raise NotImplementedError

    # Ping-pong: two one-way channels unless the transport is two-way.
    def open_duplex(self, ctx: Any, size: int, tag: str) -> Channel:
        a = self.open(ctx, size, tag + "a")
        try:
            b = self.open(ctx, size, tag + "b")
        except BaseException:  # e.g. Skipped: no room for a second queue
            self.close(a)
            raise
        return Channel((a.handle, b.handle), (a, b))

    def close_duplex(self, ch: Channel) -> None:
        for one in ch.keep:
            self.close(one)

    def duplex(self, handle: Any, side: int, size: int) -> tuple[Tx, Rx]:
        there, back = handle if side == 0 else handle[::-1]
        return self.tx(there, size), self.rx(back, size)


# -- ctipc ---------------------------------------------------------------------------


class _CtipcTx(Tx):
    def __init__(self, name: str) -> None:
        import ctipc

        self.q = ctipc.MessageQueue(name, create=False)

    def send(self, payload: Payload, seq: int) -> None:
        self.q.put(payload.make(seq), timeout=WAIT)

    def send_batch(self, payload: Payload, start: int, stop: int) -> None:
        make = payload.make
        self.q.put_many([make(s) for s in range(start, stop)], timeout=WAIT)

    def close(self) -> None:
        self.q.close()


class _CtipcZeroCopyTx(_CtipcTx):
    def send(self, payload: Payload, seq: int) -> None:
        with self.q.reserve(payload.size, timeout=WAIT) as slot:
            payload.write_into(slot.data, seq)


class _CtipcRx(Rx):
    def __init__(self, name: str) -> None:
        import ctipc

        self.q = ctipc.MessageQueue(name, create=False)
        self.empty = ctipc.Empty

    def recv(self, checker: Checker) -> int:
        try:
            checker.check(self.q.get(timeout=WAIT))
        except self.empty:
            raise TimeoutError from None
        return 1

    def close(self) -> None:
        self.q.close()


class _CtipcBatchRx(_CtipcRx):
    def recv(self, checker: Checker) -> int:
        try:
            got = self.q.get_many(BATCH_GET, timeout=WAIT)
        except self.empty:
            raise TimeoutError from None
        check = checker.check
        for m in got:
            check(m)
        return len(got)


class _CtipcZeroCopyRx(_CtipcRx):
    def recv(self, checker: Checker) -> int:
        try:
            with self.q.receive(timeout=WAIT) as m:
                checker.check(m.data)
        except self.empty:
            raise TimeoutError from None
        return 1


class Ctipc(Transport):
    """ctipc.MessageQueue: put/get, put_many/get_many, or reserve/receive."""

    needs = ("ctipc",)

    def __init__(self, mode: str = "put") -> None:
        self.mode = mode
        self.label = {"put": "ctipc", "batch": "ctipc-batch", "zc": "ctipc-zc"}[mode]
        self.batch = mode == "batch"

    def available(self) -> str | None:
        why = super().available()
        if why is None and self.mode == "zc":
            import ctipc

            if not hasattr(ctipc.MessageQueue, "receive"):
                return "this ctipc has no MessageQueue.reserve/receive"
        return why

    def note(self, size: int) -> str:
        return {"put": "put/get", "batch": "put_many/get_many", "zc": "reserve/receive"}[self.mode]

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        import ctipc

        q = ctipc.MessageQueue(
            tag, capacity=buffer_bytes(size), max_message=max(size, 64), create=True
        )
        return Channel(tag, q)

    def close(self, ch: Channel) -> None:
        ch.keep.unlink()  # also when a killed worker is still registered
        ch.keep.close()

    def tx(self, handle: Any, size: int) -> Tx:
        return (_CtipcZeroCopyTx if self.mode == "zc" else _CtipcTx)(handle)

    def rx(self, handle: Any, size: int) -> Rx:
        cls = {"put": _CtipcRx, "batch": _CtipcBatchRx, "zc": _CtipcZeroCopyRx}[self.mode]
        return cls(handle)


# -- multiprocessing and os ------------------------------------------------------------


class _CallTx(Tx):
    def __init__(self, put: Any) -> None:
        self.put = put

    def send(self, payload: Payload, seq: int) -> None:
        self.put(payload.make(seq))


class _CallRx(Rx):
    def __init__(self, get: Any) -> None:
        self.get = get

    def recv(self, checker: Checker) -> int:
        checker.check(self.get())
        return 1


class MpQueue(Transport):
    label = "mp.Queue"
    needs = ("multiprocessing",)

    def note(self, size: int) -> str:
        return "unbounded, pickles"

    def version(self) -> str:
        return "stdlib"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        return Channel(ctx.Queue())

    def close(self, ch: Channel) -> None:
        ch.handle.close()
        ch.handle.join_thread()

    def tx(self, handle: Any, size: int) -> Tx:
        return _CallTx(handle.put)

    def rx(self, handle: Any, size: int) -> Rx:
        return _CallRx(handle.get)


class MpSimpleQueue(MpQueue):
    label = "mp.SimpleQueue"

    def note(self, size: int) -> str:
        return "pipe, pickles"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        return Channel(ctx.SimpleQueue())

    def close(self, ch: Channel) -> None:
        ch.handle.close()


class MpPipe(MpQueue):
    label = "mp.Pipe"
    many_producers = False  # one writer per Connection

    def note(self, size: int) -> str:
        return "send_bytes/recv_bytes"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        return Channel(ctx.Pipe(duplex=False))

    def close(self, ch: Channel) -> None:
        for conn in ch.handle:
            conn.close()

    def tx(self, handle: Any, size: int) -> Tx:
        return _CallTx(handle[1].send_bytes)

    def rx(self, handle: Any, size: int) -> Rx:
        return _CallRx(handle[0].recv_bytes)

    def open_duplex(self, ctx: Any, size: int, tag: str) -> Channel:
        return Channel(ctx.Pipe(duplex=True))

    def close_duplex(self, ch: Channel) -> None:
        self.close(ch)

    def duplex(self, handle: Any, side: int, size: int) -> tuple[Tx, Rx]:
        conn = handle[side]
        return _CallTx(conn.send_bytes), _CallRx(conn.recv_bytes)


_LEN = struct.Struct("<I")


class _FdTx(Tx):
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, payload: Payload, seq: int) -> None:
        data = payload.make(seq)
        parts = [_LEN.pack(len(data)), data]
        total = 4 + len(data)
        # One writev: atomic up to PIPE_BUF bytes (so several producers
        # never interleave small messages), complete on a blocking pipe.
        done = os.writev(self.fd, parts)
        if done < total:
            os.write(self.fd, b"".join(parts)[done:])


class _FdRx(Rx):
    def __init__(self, fd: int) -> None:
        self.f = open(fd, "rb", buffering=1 << 16, closefd=False)

    def recv(self, checker: Checker) -> int:
        head = self.f.read(4)
        if len(head) < 4:
            raise EOFError("pipe closed")
        checker.check(self.f.read(_LEN.unpack(head)[0]))
        return 1


class OsPipe(MpPipe):
    """A plain pipe with a 4-byte length before each message.  The fds
    travel as the two ends of a one-way ``Pipe`` (which is ``os.pipe()`` on
    POSIX) and are then used with ``os.writev`` and a buffered reader."""

    label = "os.pipe"
    many_producers = True

    def note(self, size: int) -> str:
        return "length-prefixed, 64 KiB kernel buffer"

    def available(self) -> str | None:
        return "Windows pipes are not fds here" if os.name == "nt" else None

    def tx(self, handle: Any, size: int) -> Tx:
        return _FdTx(handle[1].fileno())

    def rx(self, handle: Any, size: int) -> Rx:
        return _FdRx(handle[0].fileno())

    def open_duplex(self, ctx: Any, size: int, tag: str) -> Channel:
        return Transport.open_duplex(self, ctx, size, tag)

    def close_duplex(self, ch: Channel) -> None:
        Transport.close_duplex(self, ch)

    def duplex(self, handle: Any, side: int, size: int) -> tuple[Tx, Rx]:
        return Transport.duplex(self, handle, side, size)


# -- posix_ipc and sysv_ipc --------------------------------------------------------------


class _PosixMQTx(Tx):
    def __init__(self, name: str) -> None:
        import posix_ipc  # type: ignore[import-not-found]

        self.q = posix_ipc.MessageQueue(name)

    def send(self, payload: Payload, seq: int) -> None:
        self.q.send(payload.make(seq), timeout=WAIT)

    def close(self) -> None:
        self.q.close()


class _PosixMQRx(Rx):
    def __init__(self, name: str) -> None:
        import posix_ipc

        self.q = posix_ipc.MessageQueue(name)
        self.busy = posix_ipc.BusyError

    def recv(self, checker: Checker) -> int:
        try:
            checker.check(self.q.receive(WAIT)[0])
        except self.busy:
            raise TimeoutError from None
        return 1

    def close(self) -> None:
        self.q.close()


class PosixMQ(Transport):
    """As deep as fs.mqueue.msg_max allows (and 1 MiB worth at most); less
    where RLIMIT_MSGQUEUE would refuse that queue, which ``note`` then says."""

    label = "posix_ipc.MQ"
    needs = ("posix_ipc",)

    def __init__(self) -> None:
        self._plans: dict[int, int | str] = {}  # size -> depth, or why none

    def available(self) -> str | None:
        why = super().available()
        if why is None:
            import posix_ipc

            if not posix_ipc.MESSAGE_QUEUES_SUPPORTED:  # macOS
                return "posix_ipc has no message queues on this OS"
        return why

    def sysctls(self) -> tuple[int, int]:
        """(most messages, largest message) a process may ask for here."""
        return (
            read_int("/proc/sys/fs/mqueue/msg_max", 10),
            read_int("/proc/sys/fs/mqueue/msgsize_max", 8192),
        )

    def wanted(self, size: int) -> int:
        """The depth asked for first: 1 MiB worth, as far as fs.mqueue.msg_max goes."""
        return max(1, min(self.sysctls()[0], buffer_bytes(size) // size))

    def plan(self, size: int) -> int | str:
        """The depth of a queue of ``size``-byte messages, or why there is
        none: asked of the kernel once, by creating and removing one."""
        if size not in self._plans:
            self._plans[size] = self._probe(size)
        return self._plans[size]

    def _probe(self, size: int) -> int | str:
        import posix_ipc

        largest = self.sysctls()[1]
        wanted = self.wanted(size)
        refused = posix_queue_refusal(posix_ipc, "/" + tag(), wanted, size)
        if refused is None:
            return wanted
        if refused.startswith("ValueError"):  # EINVAL
            if size > largest:
                return (f"fs.mqueue.msgsize_max is {kib(largest)} (mq_open: EINVAL; "
                        "--ipc-namespace raises it for the run, as root)")  # fmt: skip
            return f"mq_open refused {wanted} messages of {kib(size)}: {refused}"
        # Too large for this user's RLIMIT_MSGQUEUE (posix_ipc's OSError for
        # EMFILE): the deepest queue that still fits, found by bisection.
        fits, fails = 0, wanted
        while fails - fits > 1:
            mid = (fits + fails) // 2
            if posix_queue_refusal(posix_ipc, "/" + tag(), mid, size) is None:
                fits = mid
            else:
                fails = mid
        if not fits:
            limit = kib(msgqueue_limit() or 0)
            return f"even 1 message of {kib(size)} passes RLIMIT_MSGQUEUE ({limit}): {refused}"
        return fits

    def cannot(self, size: int, producers: int) -> str | None:
        depth = self.plan(size)
        return depth if isinstance(depth, str) else None

    def limits(self, sizes: list[int]) -> str:
        most, largest = self.sysctls()
        plans = ", ".join(
            f"{kib(n)}: {d if isinstance(d, int) else 'skipped'}"
            for n, d in ((n, self.plan(n)) for n in sizes)
        )
        return (f"fs.mqueue.msg_max {most}, msgsize_max {kib(largest)}; "
                f"queue depth per message size: {plans}")  # fmt: skip

    def note(self, size: int) -> str:
        depth = self.plan(size)
        if isinstance(depth, str):
            return ""
        if depth < self.wanted(size):
            limit = kib(msgqueue_limit() or 0)
            return f"{depth} messages deep (RLIMIT_MSGQUEUE {limit} allows no more)"
        return f"{depth} messages deep (fs.mqueue.msg_max)"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        import posix_ipc

        depth = self.plan(size)
        if isinstance(depth, str):
            raise Skipped(depth)
        name = "/" + tag
        try:
            q = posix_ipc.MessageQueue(
                name, posix_ipc.O_CREX, max_messages=depth, max_message_size=size
            )
        except OSError as e:  # this user's other queues took the room meanwhile
            raise Skipped(f"OSError: {e} (RLIMIT_MSGQUEUE {kib(msgqueue_limit() or 0)})") from None
        return Channel(name, q)

    def close(self, ch: Channel) -> None:
        ch.keep.unlink()
        ch.keep.close()

    def tx(self, handle: Any, size: int) -> Tx:
        return _PosixMQTx(handle)

    def rx(self, handle: Any, size: int) -> Rx:
        return _PosixMQRx(handle)


class SysvMQ(Transport):
    label = "sysv_ipc.MQ"
    needs = ("sysv_ipc",)

    def cannot(self, size: int, producers: int) -> str | None:
        largest = read_int("/proc/sys/kernel/msgmax", 8192)
        if size > largest:
            return f"kernel.msgmax is {kib(largest)} (msgsnd: EINVAL)"
        room = read_int("/proc/sys/kernel/msgmnb", 16384)
        if size > room:  # msgsnd would wait for room that never comes
            return f"kernel.msgmnb is {kib(room)}: a queue holds no {kib(size)} message"
        return None

    def note(self, size: int) -> str:
        return f"{kib(read_int('/proc/sys/kernel/msgmnb', 16384))} deep (kernel.msgmnb)"

    def limits(self, sizes: list[int]) -> str:
        largest = read_int("/proc/sys/kernel/msgmax", 8192)
        room = read_int("/proc/sys/kernel/msgmnb", 16384)
        return f"kernel.msgmax {kib(largest)}, kernel.msgmnb {kib(room)}"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        import sysv_ipc  # type: ignore[import-not-found]

        q = sysv_ipc.MessageQueue(None, sysv_ipc.IPC_CREX, max_message_size=size)
        return Channel(q.key, q)

    def close(self, ch: Channel) -> None:
        with contextlib.suppress(Exception):
            ch.keep.remove()

    def tx(self, handle: Any, size: int) -> Tx:
        import sysv_ipc

        q = sysv_ipc.MessageQueue(handle, max_message_size=size)
        return _CallTx(q.send)

    def rx(self, handle: Any, size: int) -> Rx:
        import sysv_ipc

        q = sysv_ipc.MessageQueue(handle, max_message_size=size)
        receive = q.receive
        return _CallRx(lambda: receive()[0])


# -- faster_fifo ----------------------------------------------------------------------------


class _FifoTx(Tx):
    def __init__(self, q: Any) -> None:
        self.q = q

    def send(self, payload: Payload, seq: int) -> None:
        self.q.put(payload.make(seq), timeout=WAIT)

    def send_batch(self, payload: Payload, start: int, stop: int) -> None:
        make = payload.make
        self.q.put_many([make(s) for s in range(start, stop)], timeout=WAIT)


class _FifoRx(Rx):
    def __init__(self, q: Any, batch: bool) -> None:
        import queue

        self.q = q
        self.batch = batch
        self.empty = queue.Empty

    def recv(self, checker: Checker) -> int:
        try:
            if not self.batch:
                checker.check(self.q.get(timeout=WAIT))
                return 1
            got = self.q.get_many(timeout=WAIT, max_messages_to_get=BATCH_GET)
        except self.empty:
            raise TimeoutError from None
        for m in got:
            checker.check(m)
        return len(got)


class FasterFifo(Transport):
    needs = ("faster_fifo",)

    def __init__(self, batch: bool = False) -> None:
        self.batch = batch
        self.label = "faster_fifo-batch" if batch else "faster_fifo"

    def version(self) -> str:
        from importlib.metadata import version

        return version("faster-fifo")

    def note(self, size: int) -> str:
        return ("put_many/get_many, " if self.batch else "") + "pickles"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        import faster_fifo  # type: ignore[import-not-found]

        return Channel(faster_fifo.Queue(max_size_bytes=buffer_bytes(size)))

    def close(self, ch: Channel) -> None:
        ch.handle.close()

    def tx(self, handle: Any, size: int) -> Tx:
        return _FifoTx(handle)

    def rx(self, handle: Any, size: int) -> Rx:
        return _FifoRx(handle, self.batch)
