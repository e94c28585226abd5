"""One Redis connection (a redis-py client and its pool) shared by the
objects of one ``connect()``: key names, the scripts, and the one retry
policy that turns an unreachable server into ``BackendUnavailable``.

redis-py's own retries are turned off: a retried ``XADD`` whose first try did
run would put a message twice.  Every call goes through :meth:`Conn.run`
instead, and every script it runs is idempotent (tokens, sequence numbers),
so a call whose reply was lost can be sent again.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._errors import BackendUnavailable
from . import _scripts
from ._lease import Renewer

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_LEASE", "Conn", "Retrying"]

_T = TypeVar("_T")

#: Default lease in seconds (a URL's ``lease=`` replaces it): Lock and
#: Semaphore; a MessageQueue's received messages get QUEUE_LEASE.
DEFAULT_LEASE = 10.0
QUEUE_LEASE = 30.0
#: Longest single blocking command: between slices a wait notices close()
#: from another thread, its own deadline, and a lease that ran out.
WAIT_SLICE = 0.25
#: What the server errors that mean "try again" are.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
#: Socket timeouts when the URL gives none (redis-py's default is to wait
#: forever): they bound how late an unreachable server is noticed.
SOCKET_TIMEOUT = 2.0


class Retrying:
    """The retry policy of one call: transient failures are retried (at once
    the first time: a dropped connection is simply re-opened) until the
    call's deadline, or for ``patience`` seconds when it has none, then the
    call raises :class:`ctipc.BackendUnavailable`."""

    __slots__ = ("deadline", "failed_at", "patience", "tries", "where")

    def __init__(self, where: str, deadline: float | None, patience: float) -> None:
        self.where = where
        self.deadline = deadline
        self.patience = patience
        self.failed_at: float | None = None
        self.tries = 0

    def pause(self, error: Exception) -> float:
        """Seconds to wait before the next try, or raise BackendUnavailable."""
        now = time.monotonic()
        if self.failed_at is None:
            self.failed_at = now
        self.tries += 1
        end = self.deadline if self.deadline is not None else self.failed_at + self.patience
        if self.tries > 1 and now >= end:
            raise BackendUnavailable(
                f"the Redis server at {self.where} could not be reached for "
                f"{now - self.failed_at:.1f} s: {error}"
            ) from error
        if self.tries == 1:
            return 0.0
        return max(0.0, min(0.05 * 2.0 ** min(self.tries, 4), end - now))


class Conn:
    """A redis-py client for one URL, key naming, scripts, and the renewer."""

    def __init__(self, url: str, where: str, prefix: str, lease: float | None) -> None:
        self.url = url
        self.where = where
        self.prefix = prefix.encode("utf-8")
        self.lease = lease  # None: each kind's default
        self.closed = False
        options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "decode_responses": False}
        if "socket_timeout=" not in url:
            options["socket_timeout"] = SOCKET_TIMEOUT
        if "socket_connect_timeout=" not in url:
            options["socket_connect_timeout"] = SOCKET_TIMEOUT
        self._options = options
        self.client: redis.Redis = redis.Redis.from_url(url, **options)
        self.scripts = _scripts.Scripts(self.client)
        self.renewer = Renewer(self)
        self._contacted = False
        self._contact_lock = threading.Lock()

    def key(self, kind: str, name: str, part: str) -> bytes:
        """``<prefix>:{<kind>:<name>}:<part>``: the braces put every key of
        one object in one Redis Cluster slot."""
        return b"%s:{%s:%s}:%s" % (
            self.prefix,
            kind.encode("ascii"),
            name.encode("utf-8", "surrogatepass"),
            part.encode("ascii"),
        )

    def check_open(self) -> None:
        if self.closed:
            raise ValueError("the ctipc.connect() backend of this object is closed")

    def run(self, call: Callable[..., _T], *args: Any, deadline: float | None = None,
            **kwargs: Any) -> _T:  # fmt: skip
        """``call(*args, **kwargs)``, retried on transient failures as
        :class:`Retrying` says."""
        retrying: Retrying | None = None
        while True:
            self.check_open()
            try:
                return call(*args, **kwargs)
            except TRANSIENT as e:
                if retrying is None:
                    retrying = Retrying(self.where, deadline, self.patience)
                delay = retrying.pause(e)
            if delay:
                time.sleep(delay)  # (back-off between tries, not a synchronisation)

    @property
    def patience(self) -> float:
        """How long a call without a deadline waits for an unreachable server:
        a lease, after which every lease it held is gone anyway."""
        return self.lease if self.lease is not None else DEFAULT_LEASE

    def first_contact(self) -> None:
        """Once per connection, at the first object opened: warn when the
        server may evict keys (a held lock or a queued message would vanish)."""
        if self._contacted:
            return
        with self._contact_lock:
            if self._contacted:
                return
            try:
                policy: dict[Any, Any] = self.run(self.client.config_get, "maxmemory-policy")
            except redis.ResponseError:  # CONFIG is often disabled on managed servers
                policy = {}
            self._contacted = True
        value = policy.get(b"maxmemory-policy", policy.get("maxmemory-policy"))
        if value is not None and value not in (b"noeviction", "noeviction"):
            text = value.decode() if isinstance(value, bytes) else value
            warnings.warn(
                f"the Redis server at {self.where} has maxmemory-policy {text}: it may "
                "evict ctipc's locks, permits and messages; set it to noeviction",
                RuntimeWarning,
                stacklevel=4,
            )

    def async_client(self) -> redis.asyncio.Redis:
        """A new asyncio client for the running event loop (each loop needs
        its own connections); the caller closes it.  (redis.asyncio is
        imported here: it doubles the import time of a process that never
        uses it.)"""
        import redis.asyncio
        from redis.asyncio.retry import Retry as AsyncRetry

        options = dict(self._options, retry=AsyncRetry(NoBackoff(), 0))
        return redis.asyncio.Redis.from_url(self.url, **options)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.renewer.stop()
        self.client.close()
