"""A thread that delivers each message of a queue to a callback."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Callable

from ._backend import WAIT_SLICE
from ._errors import Empty

if TYPE_CHECKING:
    from .mq import MessageQueue

__all__ = ["Listener"]

logger = logging.getLogger("ctipc")


class Listener:
    """Returned by :meth:`MessageQueue.listen`: a daemon thread that calls
    ``callback(message)`` for each message, in order.

    An exception in the callback is logged (logger ``"ctipc"``) and the
    listener goes on; a BaseException that is not an Exception (SystemExit,
    KeyboardInterrupt) ends it.  It takes one message at a time, so it never
    holds messages it has not handed to the callback: after ``stop()`` (or
    such an end) the others stay in the queue.  It also ends when the queue
    is closed.
    """

    def __init__(self, queue: MessageQueue, callback: Callable[[bytes], object]) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._queue = queue
        self._callback = callback
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"ctipc-listener-{queue.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        while not self._stopping.is_set():
            # One message at a time: a callback that raises a BaseException
            # (SystemExit, KeyboardInterrupt) ends the thread, and nothing it
            # was not handed has left the queue.
            try:
                message = queue.get(timeout=WAIT_SLICE * 4)
            except Empty:
                continue
            except ValueError:
                if queue.closed:
                    return  # the queue was closed under us: nothing more to deliver
                raise
            try:
                self._callback(message)
            except Exception:
                logger.exception("ctipc: listener callback of queue %r failed", queue.name)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop delivering and wait up to ``timeout`` seconds for the thread
        (it ends within a fraction of a second unless a callback is busy).
        Returns True if it ended.  Idempotent.  From inside a callback it
        only asks the thread to end after that callback (and returns False)."""
        self._stopping.set()
        if threading.current_thread() is self._thread:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ctipc.Listener queue={self._queue.name!r} {state}>"
