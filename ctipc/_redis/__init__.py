"""The Redis backend of ``ctipc.connect``: Lock, Semaphore, SharedMemory and
MessageQueue with the local classes' signatures (plus ``lease=``), on one
Redis (>= 6.2) or Valkey server spoken to through redis-py.  Importing this
needs redis-py (``pip install "ctipc[redis]"``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .._connect import Backend
from ._conn import Conn
from .lock import Lock, Semaphore
from .mq import MessageQueue, Received, Reservation
from .shm import SharedMemory

__all__ = ["Lock", "MessageQueue", "Received", "RedisBackend", "Reservation", "Semaphore",
           "SharedMemory"]  # fmt: skip


def _where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


class RedisBackend(Backend):
    """``ipc`` for a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    DISTRIBUTED = True
    ZERO_COPY = False
    TIMED_WAIT_NATIVE = True  # waits are the server's blocking commands
    SEMAPHORE_VALUE_READABLE = True
    ROBUST_LOCK = False  # a holder's death is noticed when its lease runs out
    PERSISTENT_SUPPORTED = True  # (and the only lifetime: objects live until unlink)

    def __init__(self, url: str, prefix: str, lease: float | None) -> None:
        self.url = _where(url)
        self._conn = Conn(url, self.url, prefix, lease)
        # Classes of this connection's own, so that isinstance() works and
        # ipc.Lock(...) takes exactly the local signature (plus lease=).
        ns = {"_conn": self._conn, "__module__": __name__}
        self.Lock = type("Lock", (Lock,), ns)
        self.Semaphore = type("Semaphore", (Semaphore,), ns)
        self.SharedMemory = type("SharedMemory", (SharedMemory,), ns)
        self.MessageQueue = type("MessageQueue", (MessageQueue,), ns)

    @property
    def prefix(self) -> str:
        return self._conn.prefix.decode("utf-8")

    def close(self) -> None:
        """Close the connections and stop renewing leases (idempotent): locks
        and permits still held run out after their lease."""
        self._conn.close()
