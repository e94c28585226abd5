"""Adapters for pyzmq and iceoryx2, and the list of every message transport.

pyzmq: PUSH/PULL over ``ipc://`` for one-way traffic (the consumer binds,
producers connect), REQ/REP for the ping-pong; both high-water marks are
set to :func:`buffer_bytes` worth of messages; messages of 64 KiB and more
go with ``copy=False``, as pyzmq advises for large messages.

iceoryx2: publish-subscribe of ``Slice[c_uint8]`` with back-pressure
(``RetryUntilDelivered``, no safe overflow; a send that still was not
delivered is retried, see ``_IoxTx.send``, so nothing is dropped), loaned
samples written in place (zero-copy both ways), and a subscriber buffer of
:func:`buffer_bytes` worth of samples (at most 1024).  Two variants: the
consumer sleeps on an event service that the producer notifies after each
send (``iceoryx2``, the pattern its examples use for blocking consumers), or
it polls ``receive()`` in a loop (``iceoryx2-poll``: the lowest latency,
but a core stays busy).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from typing import Any

from _msgs import Checker, Payload
from _peers import (
    WAIT,
    Channel,
    Ctipc,
    FasterFifo,
    MpPipe,
    MpQueue,
    MpSimpleQueue,
    OsPipe,
    PosixMQ,
    Rx,
    SysvMQ,
    Transport,
    Tx,
    buffer_bytes,
)

_ZERO_COPY_FROM = 64 << 10


def _hwm(size: int) -> int:
    return max(4, buffer_bytes(size) // size)


class _ZmqEnd(Tx, Rx):
    def __init__(self, address: str, kind: str, bind: bool, size: int) -> None:
        zmq: Any = importlib.import_module("zmq")  # typed or not, as installed: see _IoxNode

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(getattr(zmq, kind))
        self.sock.setsockopt(zmq.SNDHWM, _hwm(size))
        self.sock.setsockopt(zmq.RCVHWM, _hwm(size))
        self.sock.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
        self.sock.setsockopt(zmq.SNDTIMEO, int(WAIT * 1000))
        self.again = zmq.Again
        self.copy = size < _ZERO_COPY_FROM
        if bind:
            self.sock.bind(address)
        else:
            self.sock.connect(address)

    def send(self, payload: Payload, seq: int) -> None:
        self.sock.send(payload.make(seq), copy=self.copy)

    def recv(self, checker: Checker) -> int:
        try:
            if self.copy:
                checker.check(self.sock.recv())
            else:
                checker.check(self.sock.recv(copy=False).buffer)
        except self.again:
            raise TimeoutError from None
        return 1

    def close(self) -> None:
        # linger: a producer's last messages are delivered before it exits
        self.sock.close(linger=int(WAIT * 1000))
        self.ctx.term()


class Zmq(Transport):
    label = "pyzmq"
    needs = ("zmq",)

    def available(self) -> str | None:
        return "no ipc:// transport on Windows" if os.name == "nt" else super().available()

    def note(self, size: int) -> str:
        copy = ", copy=False" if size >= _ZERO_COPY_FROM else ""
        return f"ipc:// PUSH/PULL (ping-pong REQ/REP), HWM {_hwm(size)}{copy}"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        path = os.path.join(tempfile.gettempdir(), f"ctipcbench-{tag}.sock")
        return Channel("ipc://" + path, path)

    def close(self, ch: Channel) -> None:
        try:
            os.unlink(ch.keep)
        except FileNotFoundError:
            pass

    def tx(self, handle: Any, size: int) -> Tx:
        return _ZmqEnd(handle, "PUSH", False, size)

    def rx(self, handle: Any, size: int) -> Rx:
        return _ZmqEnd(handle, "PULL", True, size)

    def open_duplex(self, ctx: Any, size: int, tag: str) -> Channel:
        return self.open(ctx, size, tag)

    def close_duplex(self, ch: Channel) -> None:
        self.close(ch)

    def duplex(self, handle: Any, side: int, size: int) -> tuple[Tx, Rx]:
        end = _ZmqEnd(handle, "REQ" if side == 0 else "REP", side == 1, size)
        return end, end


# -- iceoryx2 ---------------------------------------------------------------------------


_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def _iox_depth(size: int) -> int:
    return max(4, min(1024, buffer_bytes(size) // size))


class _IoxNode:
    def __init__(self, service: str, size: int, notify: bool) -> None:
        import ctypes

        # By name, as Any: the type check must not depend on which peers are
        # installed (mypy's error for an untyped module differs from the one
        # for a missing module, so no single "type: ignore" fits both).
        iox2: Any = importlib.import_module("iceoryx2")

        if hasattr(iox2, "set_log_level"):
            iox2.set_log_level(iox2.LogLevel.Error)
        self.iox2 = iox2
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        self.service = (
            self.node.service_builder(iox2.ServiceName.new(service))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(_iox_depth(size))
            .max_publishers(16)
            .open_or_create()
        )
        self.event = None
        if notify:
            self.event = (
                self.node.service_builder(iox2.ServiceName.new(service + "/wake"))
                .event()
                .max_notifiers(16)
                .open_or_create()
            )

    def close(self) -> None:
        for attr in ("event", "service", "node"):
            setattr(self, attr, None)


class _IoxTx(Tx):
    def __init__(self, service: str, size: int, notify: bool) -> None:
        self.n = _IoxNode(service, size, notify)
        iox2 = self.n.iox2
        self.pub = (
            self.n.service.publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self.notifier = self.n.event.notifier_builder().create() if self.n.event else None

    def start(self) -> None:
        self.pub.update_connections()  # the subscriber exists by now

    def send(self, payload: Payload, seq: int) -> None:
        deadline = None
        while True:
            sample = self.pub.loan_slice_uninit(payload.size)
            view = sample.payload().as_memory_view().cast("B")
            payload.write_into(view, seq)
            view.release()
            if sample.assume_init().send():
                break
            # Not delivered: the subscriber's buffer is full.  The 0.10
            # binding drops the sample then (send() returns 0) instead of
            # blocking as RetryUntilDelivered says, so retry here, giving
            # the core to the consumer in between.
            if deadline is None:
                deadline = time.monotonic() + WAIT
            elif time.monotonic() > deadline:
                raise TimeoutError("the subscriber took nothing")
            if self.notifier is not None:
                self.notifier.notify()
            _yield()
        if self.notifier is not None:
            self.notifier.notify()

    def close(self) -> None:
        self.notifier = self.pub = None
        self.n.close()


class _IoxRx(Rx):
    def __init__(self, service: str, size: int, notify: bool) -> None:
        self.n = _IoxNode(service, size, notify)
        self.sub = self.n.service.subscriber_builder().buffer_size(_iox_depth(size)).create()
        self.listener = self.n.event.listener_builder().create() if self.n.event else None
        self.slice = self.n.iox2.Duration.from_millis(100)

    def recv(self, checker: Checker) -> int:
        receive = self.sub.receive
        deadline = None
        while True:
            sample = receive()
            if sample is not None:
                break
            if deadline is None:
                deadline = time.monotonic() + WAIT
            elif time.monotonic() > deadline:
                raise TimeoutError
            if self.listener is not None:
                self.listener.timed_wait(self.slice)
        view = sample.payload().as_memory_view()
        try:
            checker.check(view)
        finally:
            view.release()
            sample.delete()
        return 1

    def close(self) -> None:
        self.listener = self.sub = None
        self.n.close()


class Iceoryx2(Transport):
    needs = ("iceoryx2",)

    def __init__(self, notify: bool = True) -> None:
        self.notify = notify
        self.label = "iceoryx2" if notify else "iceoryx2-poll"

    def note(self, size: int) -> str:
        how = "event-notified" if self.notify else "busy-polling consumer"
        return f"zero-copy pub/sub, {how}, {_iox_depth(size)} samples deep"

    def open(self, ctx: Any, size: int, tag: str) -> Channel:
        return Channel(f"ctipcbench/{tag}")  # created by whichever worker comes first

    def tx(self, handle: Any, size: int) -> Tx:
        return _IoxTx(handle, size, self.notify)

    def rx(self, handle: Any, size: int) -> Rx:
        return _IoxRx(handle, size, self.notify)


def transports() -> list[Transport]:
    """Every message transport, ctipc's first."""
    return [
        Ctipc("put"), Ctipc("batch"), Ctipc("zc"),
        MpQueue(), MpSimpleQueue(), MpPipe(), OsPipe(),
        PosixMQ(), SysvMQ(),
        FasterFifo(False), FasterFifo(True),
        Zmq(), Iceoryx2(True), Iceoryx2(False),
    ]  # fmt: skip
