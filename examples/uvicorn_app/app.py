"""A plain ASGI app whose uvicorn workers share a counter and send events to one process.

    python examples/uvicorn_app/aggregator.py &
    uvicorn app:app --app-dir examples/uvicorn_app --workers 2

uvicorn starts each worker as a new interpreter (multiprocessing's spawn), so
each one opens the objects by name in the ASGI lifespan startup and closes them
at shutdown.  Names start with ``$EXAMPLE_IPC_PREFIX`` (default ``uvicorn-app``):

``<prefix>-stats``   Lock + SharedMemory: the request counter (8 bytes)
``<prefix>-events``  MessageQueue: one JSON event per request, to the aggregator

``/hit?id=N``  count the request; put ``{"id", "n", "pid", "path"}`` on the
               queue with ``await q.aput(...)``; answer ``{"n", "pid"}``.
``/stats``     ``{"requests": N}`` (not counted).
``/ping``      ``{"pid", "waiting"}``: how many of this worker's requests are
               waiting for the counter's Lock (not counted).  It answers at
               once even while the Lock is held elsewhere.

Nothing blocks the event loop: the counter's Lock is taken in a thread of
this worker (a Lock belongs to the thread that took it, so one thread takes
and releases it), and ``aput`` waits for room, if it has to, in a thread too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import urllib.parse
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import ctipc

#: the events queue's sizes, the same in the aggregator (which imports them)
QUEUE_CAPACITY = 1 << 20
QUEUE_MAX_MESSAGE = 4096
#: seconds a request waits for the counter's Lock, or for room in the queue
LOCK_TIMEOUT = 15.0
PUT_TIMEOUT = 5.0

_COUNTER = struct.Struct("<Q")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def names(prefix: str | None = None) -> dict[str, str]:
    prefix = prefix or os.environ.get("EXAMPLE_IPC_PREFIX", "uvicorn-app")
    return {"stats": f"{prefix}-stats", "events": f"{prefix}-events"}


def open_events(name: str) -> ctipc.MessageQueue:
    """Open the events queue, or create it (whoever comes first)."""
    return ctipc.MessageQueue(name, capacity=QUEUE_CAPACITY, max_message=QUEUE_MAX_MESSAGE)


class Worker:
    """One worker process's objects, open from lifespan startup to shutdown."""

    def __init__(self) -> None:
        n = names()
        with contextlib.ExitStack() as opened:  # closes what was opened if one fails
            self.lock = opened.enter_context(contextlib.closing(ctipc.Lock(n["stats"])))
            self.counter = opened.enter_context(ctipc.SharedMemory(n["stats"], size=_COUNTER.size))
            self.events = opened.enter_context(open_events(n["events"]))
            self._opened = opened.pop_all()
        self.threads = ThreadPoolExecutor(1, thread_name_prefix="counter-lock")
        self.waiting = 0  # requests of this worker in add(): only touched in the loop

    def close(self) -> None:
        """Detach; the last process out removes the objects (docs/lifetime.md)."""
        # Called at lifespan shutdown, once uvicorn has finished every
        # request: the thread is idle, so this does not make the loop wait.
        self.threads.shutdown(wait=True)
        self._opened.close()

    def _add(self, delta: int) -> int:
        # Runs in self.threads: it may wait for the Lock, the event loop does not.
        if not self.lock.acquire(timeout=LOCK_TIMEOUT):
            raise TimeoutError(f"the counter's lock stayed held for {LOCK_TIMEOUT} s")
        try:
            (value,) = _COUNTER.unpack(self.counter.read(0, _COUNTER.size))
            value += delta
            self.counter.write(_COUNTER.pack(value), 0)
            return int(value)
        finally:
            self.lock.release()

    async def add(self, delta: int) -> int:
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.threads, self._add, delta)
        finally:
            self.waiting -= 1


_worker: Worker | None = None


async def lifespan(receive: Receive, send: Send) -> None:
    global _worker
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                _worker = Worker()
            except Exception as e:
                await send({"type": "lifespan.startup.failed", "message": repr(e)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _worker is not None:
                _worker.close()
                _worker = None
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode() + b"\n"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    worker = _worker
    if worker is None:
        await respond(send, 500, {"error": "run with the ASGI lifespan on"})
        return
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        request_id = int(query["id"][0])
    except (KeyError, ValueError):
        request_id = 0
    try:
        if scope["path"] == "/ping":
            await respond(send, 200, {"pid": os.getpid(), "waiting": worker.waiting})
        elif scope["path"] == "/stats":
            await respond(send, 200, {"requests": await worker.add(0)})
        elif scope["path"] == "/hit":
            n = await worker.add(1)
            event = {"id": request_id, "n": n, "pid": os.getpid(), "path": "/hit"}
            # Cancelling aput (the timeout) never puts the message twice, nor half.
            await asyncio.wait_for(worker.events.aput(json.dumps(event).encode()), PUT_TIMEOUT)
            await respond(send, 200, {"n": n, "pid": os.getpid()})
        else:
            await respond(send, 404, {"error": "not found"})
    except (TimeoutError, asyncio.TimeoutError) as e:
        await respond(send, 503, {"error": str(e) or "the events queue stayed full"})
