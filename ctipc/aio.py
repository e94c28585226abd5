"""asyncio adapters for MessageQueue: ``aget``, ``aput``, ``async for``.

The waiting happens in a worker thread, one per wait, with a cancel event
that is always set when the coroutine leaves (trio's shape); the thread ends
within one wait slice, so threads are never abandoned.  The thread only
waits for a *hint* (a message is probably there, or room); the message itself
is taken or put by a non-blocking call in the event loop's thread, where a
cancellation cannot fall between taking a message and returning it.  A
wake-up the thread consumed for a coroutine that was cancelled meanwhile is
given back, so another waiter is not left asleep.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Callable

from ._errors import Empty, Full
from ._wait import wait

if TYPE_CHECKING:
    from .mq import MessageQueue

__all__ = ["aget", "aput", "iterate"]


class _Cancelled(Exception):
    """The coroutine left: its waiting thread stops."""


async def _wait(wait_slice: Callable[[float], bool], give_back: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    cancel = threading.Event()

    def cancelled() -> None:
        if cancel.is_set():
            raise _Cancelled

    def worker() -> None:
        woke = False
        error: BaseException | None = None
        try:
            # (checked between slices: the thread ends within one of a cancel)
            woke = wait(wait_slice, True, None, cancelled, first_try=False)
        except _Cancelled:
            pass
        except BaseException as e:  # delivered to the coroutine
            error = e

        def finish() -> None:
            if done.cancelled():
                if woke:
                    give_back()
            elif error is not None:
                done.set_exception(error)
            else:
                done.set_result(woke)

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:  # the loop is closed: nobody takes the wake-up
            if woke:
                give_back()

    thread = threading.Thread(target=worker, name="ctipc-aio-wait", daemon=True)
    thread.start()
    try:
        await done
    finally:
        cancel.set()


async def aget(queue: MessageQueue) -> bytes:
    while True:
        try:
            return queue.get_nowait()
        except Empty:
            pass
        await _wait(queue._wait_readable, queue._wake_consumer)


async def aput(queue: MessageQueue, data: bytes | bytearray | memoryview) -> None:
    nbytes = queue._checked(data).nbytes  # bad messages fail before any wait
    while True:
        try:
            queue.put_nowait(data)
            return
        except Full:
            pass
        await _wait(lambda t: queue._wait_writable(t, nbytes), queue._wake_producer)


async def iterate(queue: MessageQueue) -> AsyncIterator[bytes]:
    """Messages as they come, until the queue is closed."""
    while True:
        try:
            message = await aget(queue)
        except ValueError:
            if queue.closed:
                return
            raise
        yield message
