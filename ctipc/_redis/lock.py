"""Lock and Semaphore on Redis: leases renewed while the holder lives.

A Lock is an owner key (the grant's token, ``PX`` lease) plus counters in its
meta hash: the grant count is the fence, and a grant while the previous one
was never released is ``owner_died``.  A Semaphore is a permit count plus a
sorted set of holders scored by their lease's end on the server's clock;
leases that ran out give their permit back.  Waiters block on a wake-up
list that releases push to, in slices no longer than the current holder's
lease, so a lease that runs out is noticed without a release.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .._args import check_timeout
from .._base import AcquireInWith
from .._errors import LeaseLost
from ._base import RedisObject, deadline_of, lease_ms, new_token
from ._conn import DEFAULT_LEASE, WAIT_SLICE
from ._lease import Lease

__all__ = ["Lock", "Semaphore"]

SEM_VALUE_MAX = 2**31 - 1


def _me() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


class _Acquirable(AcquireInWith, RedisObject):
    """The waiting loop of Lock and Semaphore; ``with`` acquires and releases."""

    _lease_ms = 0

    def _setup_lease(self, lease: object) -> None:
        default = self._conn.lease if self._conn.lease is not None else DEFAULT_LEASE
        self._lease_ms = lease_ms(lease, default)

    def _grant(self, script: Any, keys: list[bytes], blocking: bool,
               timeout: float | None) -> tuple[str, list[Any]] | None:  # fmt: skip
        """Run the acquire ``script`` until it grants: (token, its reply),
        or None at the deadline.  Between tries, wait on the wake-up list."""
        seconds = check_timeout(blocking, timeout)
        self._check_open()
        conn = self._conn
        token = new_token()  # the same in every try: a retried grant is recognised
        args = [token, self._lease_ms]
        deadline = time.monotonic() if not blocking else deadline_of(seconds)
        wake = [self._key("wake")]
        while True:
            reply = conn.run(script, keys=keys, args=args, deadline=deadline)
            if reply[0] == 1:
                return token, reply
            if reply[0] == -1:
                raise self._gone()
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            slice_ = min(WAIT_SLICE, remaining)
            if len(reply) > 1 and reply[1] >= 0:  # the holder's lease ends in that many ms
                slice_ = min(slice_, reply[1] / 1000 + 0.002)
            # (BLPOP's 0 would mean forever)
            conn.run(conn.client.blpop, wake, timeout=max(slice_, 0.01), deadline=deadline)
            self._check_open()

    def _lease_of(self, renew: Any, keys: list[bytes], args: list[Any],
                  alive: Any = None) -> Lease:  # fmt: skip
        def renewed() -> bool:
            return bool(renew(keys=keys, args=args, client=self._conn.client) == 1)

        lease = Lease(self._lease_ms / 1000, renewed, alive)
        self._conn.renewer.add(lease)
        return lease


class Lock(_Acquirable):
    """``ctipc.Lock`` on Redis (docs/distributed.md): owned by the thread
    that acquired it, held by a lease of ``lease`` seconds that this process
    renews while the holder thread lives.  After a holder was killed or
    stalled past its lease, the next ``acquire`` takes the lock over and sets
    :attr:`owner_died`; the stalled holder gets :class:`ctipc.LeaseLost` at
    ``release()``.  :attr:`fence` grows with every grant."""

    kind = "lock"
    label = "Lock"
    parts = ("owner", "wake")

    def __init__(
        self,
        name: str,
        *,
        create: bool | None = None,
        persistent: bool = True,
        permissions: int = 0o600,
        lease: float | None = None,
    ) -> None:
        super().__init__(name, create, persistent, permissions)
        self._setup_lease(lease)
        self._holder: tuple[int, int] | None = None
        self._token = ""
        self._lease: Lease | None = None
        #: True after an ``acquire`` that took the lock over from a holder
        #: whose lease ran out (killed, stalled, or cut off from the server)
        self.owner_died = False
        #: the grant number of this holder's ``acquire``: it grows with every
        #: grant, for storage that refuses writes of an older holder
        self.fence = 0
        self._open({"acquired": 0, "released": 0, "died": 0})
        self._acquire_keys = [self._key("meta"), self._key("owner")]
        self._release_keys = self._acquire_keys + [self._key("wake")]

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; False if it stayed held until ``timeout``.
        :class:`ctipc.BackendUnavailable` if the server could not be reached."""
        keys = self._acquire_keys
        granted = self._grant(self._conn.scripts.lock_acquire, keys, blocking, timeout)
        if granted is None:
            return False
        token, reply = granted
        self.owner_died = bool(reply[1])
        self.fence = int(reply[2])
        self._token = token
        self._holder = _me()
        holder = threading.current_thread()
        self._lease = self._lease_of(
            self._conn.scripts.lock_renew, keys[1:], [token, self._lease_ms], holder.is_alive
        )
        return True

    def release(self) -> None:
        """Release the lock; RuntimeError if this thread does not hold it;
        :class:`ctipc.LeaseLost` if its lease had run out (another process
        may have held the lock meanwhile)."""
        if self._holder != _me():
            self._check_open()
            raise RuntimeError("release of a ctipc.Lock this thread does not hold")
        lease, token = self._lease, self._token
        if lease is not None:
            self._conn.renewer.discard(lease)
        self._holder, self._lease = None, None
        conn = self._conn
        released = conn.run(conn.scripts.lock_release, keys=self._release_keys, args=[token])
        if released != 1:
            raise LeaseLost(
                f"the lease of Lock {self._name!r} (fence {self.fence}) ran out before "
                "release(): another holder may have had the lock",
                self._name,
            )

    @property
    def lost(self) -> bool:
        """True once the renewer found this holder's lease gone."""
        return self._lease is not None and self._lease.lost

    def check(self) -> None:
        """Raise :class:`ctipc.LeaseLost` if this thread's hold ran out."""
        if self._holder == _me() and self.lost:
            raise LeaseLost(f"the lease of Lock {self._name!r} ran out", self._name)

    def locked(self) -> bool:
        """Whether any process holds the lock now."""
        self._check_open()
        conn, owner = self._conn, self._key("owner")
        return bool(conn.run(conn.client.exists, owner))

    def close(self) -> None:
        """Close (idempotent); a lock this thread holds is released first."""
        try:
            if not self._closed and self._holder == _me():
                self.release()
        finally:
            super().close()

    def _state(self) -> str:
        return "held" if self._holder is not None else "open"


class Semaphore(_Acquirable):
    """``ctipc.Semaphore`` on Redis: each permit taken is held by a lease
    that this process renews; the permit of a killed or stalled holder comes
    back when its lease runs out.  ``release(n)`` gives back this handle's
    own permits first (:class:`ctipc.LeaseLost` if one ran out) and adds the
    rest, like ``threading.Semaphore``.  ``value`` is always readable."""

    kind = "sem"
    label = "Semaphore"
    parts = ("holders", "wake")

    def __init__(
        self,
        name: str,
        *,
        create: bool | None = None,
        initial: int = 1,
        persistent: bool = True,
        permissions: int = 0o600,
        lease: float | None = None,
    ) -> None:
        if isinstance(initial, bool) or not isinstance(initial, int):
            raise TypeError(f"initial must be an int, not {type(initial).__name__}")
        if not 0 <= initial <= SEM_VALUE_MAX:
            raise ValueError(f"initial must be within 0..{SEM_VALUE_MAX}, got {initial}")
        super().__init__(name, create, persistent, permissions)
        self._setup_lease(lease)
        self._held: list[tuple[str, Lease]] = []  # this process's permits, newest last
        self._held_pid = os.getpid()  # (a forked child holds none of its parent's)
        self._held_lock = threading.Lock()
        self._open({"value": initial})

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False if none came before ``timeout``."""
        keys = [self._key("meta"), self._key("holders")]
        granted = self._grant(self._conn.scripts.sem_acquire, keys, blocking, timeout)
        if granted is None:
            return False
        token = granted[0]
        lease = self._lease_of(self._conn.scripts.sem_renew, keys, [self._lease_ms, token])
        with self._held_lock:
            self._mine().append((token, lease))
        return True

    def _mine(self) -> list[tuple[str, Lease]]:
        """This process's permits (call with ``_held_lock``)."""
        if self._held_pid != os.getpid():
            self._held, self._held_pid = [], os.getpid()
        return self._held

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits, waking up to ``n`` waiters."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 1:
            raise ValueError("n must be one or more")
        self._check_open()
        with self._held_lock:
            held = self._mine()
            mine = held[-n:]
            del held[-n:]
        for _, lease in mine:
            self._conn.renewer.discard(lease)
        conn = self._conn
        keys = [self._key("meta"), self._key("holders"), self._key("wake")]
        args = [new_token(), n, SEM_VALUE_MAX] + [token for token, _ in mine]
        try:
            reply = conn.run(conn.scripts.sem_release, keys=keys, args=args)
        except BaseException:
            self._keep(mine)
            raise
        if reply[0] == -2:
            self._keep(mine)
            raise ValueError(f"the semaphore's value would exceed {SEM_VALUE_MAX}")
        if reply[0] == -1:
            raise self._gone()
        if reply[1]:
            raise LeaseLost(
                f"{reply[1]} of the permits of Semaphore {self._name!r} released here had "
                "run out (their holder stalled): they were back already",
                self._name,
            )

    def _keep(self, permits: list[tuple[str, Lease]]) -> None:
        """Hold again the permits a release did not give back."""
        with self._held_lock:
            self._mine().extend(permits)
        for _, lease in permits:
            self._conn.renewer.add(lease)

    @property
    def value(self) -> int:
        """The current number of permits (another process may change it at once)."""
        self._check_open()
        conn = self._conn
        keys = [self._key("meta"), self._key("holders")]
        value = conn.run(conn.scripts.sem_value, keys=keys)
        if value < 0:
            raise self._gone()
        return int(value)

    def close(self) -> None:
        """Close (idempotent).  Permits this handle holds stay taken until
        released through another handle or until their leases run out."""
        with self._held_lock:
            held, self._held = self._held, []
        for _, lease in held:
            self._conn.renewer.discard(lease)
        super().close()

    def _state(self) -> str:
        return f"value={self.value}"
