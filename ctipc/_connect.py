"""``ctipc.connect(url)``: the same four classes, on this machine or on a server.

``local://`` (the default) hands out the local classes themselves, so code
moved from ``ctipc.X`` to ``ipc.X`` runs unchanged on one machine and in
tests; ``redis://``, ``rediss://`` and ``unix://`` hand out the Redis
implementations in ``ctipc._redis`` (docs/distributed.md).  Nothing here
talks to a server: a server that cannot be reached shows at the first call
that needs it.
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._base import ClosesOnExit

__all__ = ["Backend", "connect"]

#: the schemes that go to redis-py's ``from_url``
REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PREFIX = "ctipc"


class Backend(ClosesOnExit):
    """What ``connect`` returns: the four classes and the capability names.

    ``DISTRIBUTED``: the objects span hosts.  ``ZERO_COPY``:
    ``SharedMemory.buf`` and in-place ``receive``/``reserve`` views exist.
    The local capability names (``TIMED_WAIT_NATIVE``,
    ``SEMAPHORE_VALUE_READABLE``, ``ROBUST_LOCK``, ``PERSISTENT_SUPPORTED``)
    keep their meaning (docs/api.md).  ``close()`` (also ``with``) ends the
    backend's connections; objects opened through it cannot be used after.
    """

    url: str
    Lock: Any
    Semaphore: Any
    SharedMemory: Any
    MessageQueue: Any
    DISTRIBUTED: bool
    ZERO_COPY: bool
    TIMED_WAIT_NATIVE: bool
    SEMAPHORE_VALUE_READABLE: bool
    ROBUST_LOCK: bool
    PERSISTENT_SUPPORTED: bool

    def close(self) -> None:
        """End the backend's connections (idempotent)."""

    def __repr__(self) -> str:
        return f"<ctipc backend {self.url!r}>"


class LocalBackend(Backend):
    """``local://``: the classes of ``ctipc`` itself (``ipc.Lock is ctipc.Lock``)."""

    DISTRIBUTED = False
    ZERO_COPY = True

    def __init__(self) -> None:
        import ctipc  # (at call time: ctipc imports this module)

        self.url = "local://"
        self.Lock = ctipc.Lock
        self.Semaphore = ctipc.Semaphore
        self.SharedMemory = ctipc.SharedMemory
        self.MessageQueue = ctipc.MessageQueue
        self.TIMED_WAIT_NATIVE = ctipc.TIMED_WAIT_NATIVE
        self.SEMAPHORE_VALUE_READABLE = ctipc.SEMAPHORE_VALUE_READABLE
        self.ROBUST_LOCK = ctipc.ROBUST_LOCK
        self.PERSISTENT_SUPPORTED = ctipc.PERSISTENT_SUPPORTED


def connect(url: str | None = None) -> Backend:
    """The backend named by ``url``; None reads ``$CTIPC_URL``, else ``"local://"``.

    ``redis://``, ``rediss://`` and ``unix://`` URLs are anything redis-py's
    ``from_url`` takes, plus two query parameters of ctipc's own (removed
    before redis-py sees the URL): ``prefix=`` (of every key, default
    ``"ctipc"``) and ``lease=`` (the default lease in seconds of Locks,
    Semaphore permits and received messages).  Needs ``pip install
    "ctipc[redis]"``.  No server is contacted here.
    """
    if url is None:
        url = os.environ.get("CTIPC_URL") or "local://"
    if not isinstance(url, str):
        raise TypeError(f"url must be a str or None, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "local":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"a local URL is just 'local://', not {url!r}")
        return LocalBackend()
    if scheme not in REDIS_SCHEMES:
        known = ", ".join(s + "://" for s in ("local",) + REDIS_SCHEMES)
        raise ValueError(f"unknown backend URL {url!r}: the schemes are {known}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix, lease, rest = DEFAULT_PREFIX, None, []
    for key, value in query:
        if key == "prefix":
            prefix = value
        elif key == "lease":
            lease = _lease_seconds(value)
        else:
            rest.append((key, value))
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix must be non-empty text without braces, not {prefix!r}")
    # (urlunsplit would turn unix:///path into unix:/path)
    server_url = url.split("?", 1)[0] + ("?" + urlencode(rest) if rest else "")
    try:
        from ._redis import RedisBackend
    except ModuleNotFoundError as e:
        if e.name != "redis" and not (e.name or "").startswith("redis."):
            raise
        raise ImportError(
            f'{url.split(":", 1)[0]}:// URLs need redis-py: pip install "ctipc[redis]"'
        ) from None
    return RedisBackend(server_url, prefix, lease)


def _lease_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"lease must be a number of seconds, not {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"lease must be a positive number of seconds, not {value!r}")
    return seconds
