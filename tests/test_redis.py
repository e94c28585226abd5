"""ctipc.connect: the same contract on local:// and on a real Redis server,
and the documented differences of the Redis backend (docs/distributed.md).

The contract tests take ``ipc`` (parametrized: local, redis); the others
take ``rurl``, a URL of the session's server with a prefix of this test's
own.  Failure tests in real processes are in test_redis_failures.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import Child, drain
from redis_server import RedisServer, redis_server, url_fixture  # noqa: F401 (a fixture)

import ctipc

LEASE = 0.5  # short leases keep the tests fast


rurl = url_fixture(LEASE, "t")


@pytest.fixture(params=["local", "redis"])
def ipc(request: pytest.FixtureRequest) -> Iterator[ctipc._connect.Backend]:
    if request.param == "local":
        with ctipc.connect("local://") as backend:
            yield backend
        return
    url = request.getfixturevalue("rurl")
    with ctipc.connect(url) as backend:
        yield backend


@contextlib.contextmanager
def opened(obj: Any) -> Iterator[Any]:
    """Close ``obj`` after the block (locally the last close removes it; on
    Redis the ``rurl`` fixture empties the database after the test)."""
    try:
        yield obj
    finally:
        obj.close()


# -- connect ----------------------------------------------------------------------------


def test_local_is_the_local_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTIPC_URL", raising=False)
    for ipc in (ctipc.connect(), ctipc.connect("local://")):
        assert ipc.Lock is ctipc.Lock and ipc.Semaphore is ctipc.Semaphore
        assert ipc.SharedMemory is ctipc.SharedMemory and ipc.MessageQueue is ctipc.MessageQueue
        assert ipc.DISTRIBUTED is False and ipc.ZERO_COPY is True
        assert ipc.ROBUST_LOCK is ctipc.ROBUST_LOCK
        assert ipc.PERSISTENT_SUPPORTED is ctipc.PERSISTENT_SUPPORTED
        ipc.close()


def test_url_from_environment_and_no_server_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: connect() must not care.
    monkeypatch.setenv("CTIPC_URL", "redis://127.0.0.1:1/0?prefix=app&lease=3")
    with ctipc.connect() as ipc:
        assert ipc.DISTRIBUTED is True and ipc.ZERO_COPY is False
        assert ipc.SEMAPHORE_VALUE_READABLE is True and ipc.PERSISTENT_SUPPORTED is True
        assert ipc.ROBUST_LOCK is False and ipc.TIMED_WAIT_NATIVE is True
        assert ipc.prefix == "app"
        started = time.monotonic()
        with pytest.raises(ctipc.BackendUnavailable) as info:
            ipc.Lock("x")
        assert isinstance(info.value, ConnectionError)
        assert "127.0.0.1:1" in str(info.value)
        assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "url, error",
    [
        ("ftp://host/", ValueError),
        ("local://x", ValueError),
        ("redis://h/0?lease=0", ValueError),
        ("redis://h/0?lease=abc", ValueError),
        ("redis://h/0?prefix=", ValueError),
        ("redis://h/0?prefix=a{b}", ValueError),
        (b"redis://h", TypeError),
    ],
)
def test_bad_urls(url: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        ctipc.connect(url)


def test_missing_redis_py_names_the_extra() -> None:
    code = """
    sys.modules["redis"] = None  # as if redis-py were not installed
    try:
        ctipc.connect("redis://localhost/0")
    except ImportError as e:
        out(e)
    """
    with Child(code) as child:
        assert 'pip install "ctipc[redis]"' in child.readline()
        child.finish()


def test_password_not_shown() -> None:
    with ctipc.connect("redis://user:secret@127.0.0.1:1/0") as ipc:
        assert "secret" not in repr(ipc) and "***" in repr(ipc)


def test_errors_pickle() -> None:
    for cls in (ctipc.LeaseLost, ctipc.BackendUnavailable, ctipc.UnsupportedError):
        e = pickle.loads(pickle.dumps(cls("why", "jobs")))
        assert type(e) is cls and str(e) == "why" and e.name == "jobs"
        assert isinstance(e, ctipc.CtipcError)
        assert cls.__module__ == "ctipc" and cls.__name__ in ctipc.__all__
    assert "connect" in ctipc.__all__
    assert issubclass(ctipc.UnsupportedError, NotImplementedError)
    assert issubclass(ctipc.BackendUnavailable, ConnectionError)


# -- the shared contract: Lock --------------------------------------------------------


def test_lock_contract(ipc: Any, name: str) -> None:
    with opened(ipc.Lock(name)) as a, opened(ipc.Lock(name)) as b:
        assert a.name == name and a.locked() is False
        assert a.acquire() is True and a.owner_died is False
        assert a.locked() is True and b.locked() is True
        assert b.acquire(blocking=False) is False
        started = time.monotonic()
        assert b.acquire(timeout=0.2) is False
        assert time.monotonic() - started >= 0.15
        with pytest.raises(RuntimeError):
            b.release()
        a.release()
        with b:
            assert b.locked() is True and b.owner_died is False
        assert a.locked() is False


def test_lock_release_by_another_thread_is_refused(ipc: Any, name: str) -> None:
    with opened(ipc.Lock(name)) as lock:
        lock.acquire()
        errors: list[BaseException] = []

        def other() -> None:
            try:
                lock.release()
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        lock.release()


def test_lock_waiter_wakes_on_release(ipc: Any, name: str) -> None:
    with opened(ipc.Lock(name)) as a, opened(ipc.Lock(name)) as b:
        a.acquire()
        got: list[bool] = []

        def waiter() -> None:
            got.append(b.acquire(timeout=10))
            b.release()

        t = threading.Thread(target=waiter)
        t.start()
        a.release()
        t.join(10)
        assert got == [True]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"blocking": False, "timeout": 1}, ValueError),
        ({"timeout": -2}, ValueError),
        ({"timeout": "1"}, TypeError),
    ],
)
def test_acquire_bad_arguments(ipc: Any, name: str, kwargs: dict[str, Any], error: type) -> None:
    with opened(ipc.Lock(name)) as lock, opened(ipc.Semaphore(name)) as sem:
        with pytest.raises(error):
            lock.acquire(**kwargs)
        with pytest.raises(error):
            sem.acquire(**kwargs)


def test_closed_objects_raise_value_error(ipc: Any, name: str) -> None:
    lock, sem = ipc.Lock(name), ipc.Semaphore(name)
    shm, q = ipc.SharedMemory(name, size=16), ipc.MessageQueue(name)
    for obj in (lock, sem, shm, q):
        obj.close()
        obj.close()  # idempotent
        assert obj.closed and "closed" in repr(obj)
    for call in (lock.acquire, sem.acquire, sem.release, shm.read, lambda: q.put(b"x"), q.get):
        with pytest.raises(ValueError):
            call()
    for obj in (lock, sem, shm, q):
        obj.unlink()
        obj.unlink()


# -- create=, names, kinds ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "SharedMemory", "MessageQueue"])
def test_create_flags(ipc: Any, name: str, kind: str) -> None:
    cls = getattr(ipc, kind)
    extra = {"size": 64} if kind == "SharedMemory" else {}
    with pytest.raises(FileNotFoundError) as missing:
        cls(name, create=False, **extra)
    assert name in str(missing.value)
    with opened(cls(name, create=True, **extra)):
        with pytest.raises(FileExistsError) as exists:
            cls(name, create=True, **extra)
        assert name in str(exists.value)
        with opened(cls(name, create=False, **extra)) as again:
            assert again.name == name
        with pytest.raises(TypeError):
            cls(name, create="yes", **extra)


def test_names_and_kinds(ipc: Any, name: str) -> None:
    with pytest.raises(TypeError):
        ipc.Lock(5)
    for bad in ("", "a/b", "x" * 256, "a\0b"):
        with pytest.raises(ValueError):
            ipc.Semaphore(bad)
    # each kind has its own namespace
    with opened(ipc.Lock(name, create=True)), opened(ipc.Semaphore(name, create=True)):
        with opened(ipc.MessageQueue(name, create=True)):
            with opened(ipc.SharedMemory(name, size=8, create=True)):
                pass


def test_unicode_name(ipc: Any, new_name: Any) -> None:
    text = new_name("ünï cödé ✓ " + new_name())
    with opened(ipc.SharedMemory(text, size=32)) as shm:
        shm.write_str("ok")
        with opened(ipc.SharedMemory(text)) as again:
            assert again.read_str() == "ok"


# -- Semaphore --------------------------------------------------------------------------


def test_semaphore_contract(ipc: Any, name: str) -> None:
    with opened(ipc.Semaphore(name, initial=2)) as sem:
        with opened(ipc.Semaphore(name, initial=7)) as other:  # initial only at create
            assert sem.acquire() and other.acquire(timeout=1)
            assert sem.acquire(blocking=False) is False
            assert other.acquire(timeout=0.1) is False
            if ipc.SEMAPHORE_VALUE_READABLE:
                assert sem.value == 0
            sem.release(2)
            if ipc.SEMAPHORE_VALUE_READABLE:
                assert other.value == 2
            with sem:
                pass
        for bad, error in ((0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)):
            with pytest.raises(error):
                sem.release(bad)
    with pytest.raises(ValueError):
        ipc.Semaphore(name, initial=-1)
    with pytest.raises(TypeError):
        ipc.Semaphore(name, initial=1.5)


def test_semaphore_waiter_wakes(ipc: Any, name: str) -> None:
    with opened(ipc.Semaphore(name, initial=0)) as sem:
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(sem.acquire(timeout=10)))
        t.start()
        sem.release()
        t.join(10)
        assert got == [True]
        sem.release()


# -- SharedMemory -----------------------------------------------------------------------


def test_shared_memory_contract(ipc: Any, name: str) -> None:
    with opened(ipc.SharedMemory(name, size=64)) as shm:
        assert shm.size == 64 and shm.read() == bytes(64)
        assert shm.write(b"abc", 10) == 3
        assert shm.read(10, 3) == b"abc" and shm.read(63) == b"\0"
        assert shm.write_str("héllo", 20) == len("héllo".encode()) + 1
        assert shm.read_str(20) == "héllo"
        assert shm.write(memoryview(b"xy"), 62) == 2 and shm.read(62) == b"xy"
        assert shm.read(64) == b""
        with opened(ipc.SharedMemory(name)) as again:
            assert again.size == 64 and again.read(10, 3) == b"abc"
        with pytest.raises(ctipc.IncompatibleError):
            ipc.SharedMemory(name, size=65)
        for args, error in (
            ((b"x", 64), ValueError),
            ((b"xx", 63), ValueError),
            ((b"x", -1), ValueError),
            ((b"x", "0"), TypeError),
        ):
            with pytest.raises(error):
                shm.write(*args)
        with pytest.raises(ValueError):
            shm.read(60, 5)
        with pytest.raises(ValueError):
            shm.write_str("a\0b")
        with pytest.raises(TypeError):
            shm.write_str(b"bytes")
        assert shm.read(10, 3) == b"abc"  # nothing written by the refused calls
    with pytest.raises(ValueError):
        ipc.SharedMemory(name, create=True)  # no size to create with
    with pytest.raises(ValueError):
        ipc.SharedMemory(name, size=0)


# -- MessageQueue -----------------------------------------------------------------------


def test_queue_contract(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name, capacity=1024, max_message=128)) as q:
        assert q.capacity == 1024 and q.max_message == 128 and len(q) == 0
        q.put(b"one")
        q.put_nowait(bytearray(b"two"))
        q.put_many([b"three", memoryview(b"four")])
        assert len(q) == 4
        assert q.get() == b"one" and q.get_nowait() == b"two"
        assert q.get_many(10) == [b"three", b"four"]
        with pytest.raises(ctipc.Empty) as empty:
            q.get_nowait()
        started = time.monotonic()
        with pytest.raises(ctipc.Empty) as timed:
            q.get(timeout=0.2)
        assert time.monotonic() - started >= 0.15
        assert name in str(empty.value) and "0.2" in str(timed.value)
        with opened(ipc.MessageQueue(name)) as again:
            assert again.capacity == 1024
        with pytest.raises(ctipc.IncompatibleError):
            ipc.MessageQueue(name, capacity=2048)
        with pytest.raises(ValueError):
            q.put(b"x" * 129)
        with pytest.raises(TypeError):
            q.put("text")
        with pytest.raises(ValueError):
            q.put_many([b"ok", b"x" * 129])
        assert len(q) == 0  # the refused put_many put nothing
        with pytest.raises(ValueError):
            q.get_many(0)
        with pytest.raises(ValueError):
            q.get(timeout=-1)


def test_queue_full(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name, capacity=512, max_message=64)) as q:
        n = 0
        with pytest.raises(ctipc.Full):
            while n < 100:
                q.put_nowait(b"m" * 56)
                n += 1
        assert 0 < n < 100
        with pytest.raises(ctipc.Full):
            q.put(b"m", timeout=0.1)
        with pytest.raises(ctipc.Full) as partial:
            q.put_many([b"a"] * 3, block=False)
        assert "0 of 3" in str(partial.value)
        q.get()
        q.put(b"m" * 56, timeout=1)  # room again
        assert len(q) == n


def test_queue_blocked_producer_wakes(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name, capacity=256, max_message=64)) as q:
        with contextlib.suppress(ctipc.Full):
            for _ in range(10):
                q.put_nowait(b"x" * 60)
        done: list[bool] = []

        def producer() -> None:
            q.put(b"late", timeout=10)
            done.append(True)

        t = threading.Thread(target=producer)
        t.start()
        q.get()
        t.join(10)
        assert done == [True]
        assert drain(q)[-1] == b"late"


def test_receive_and_redelivery(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name)) as q:
        q.put_many([b"first", b"second"])
        with q.receive(timeout=5) as msg:
            assert bytes(msg.data) == b"first" and not msg.redelivered
        with pytest.raises(KeyError):
            with q.receive() as msg:
                assert bytes(msg.data) == b"second"
                raise KeyError
        with q.receive(timeout=5) as msg:
            assert bytes(msg.data) == b"second" and msg.redelivered
        assert len(q) == 0
        with pytest.raises(ctipc.Empty):
            with q.receive(block=False):
                pass


def test_reserve(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name, capacity=1024, max_message=100)) as q:
        with q.reserve(5) as slot:
            slot.data[:] = b"hello"
        with pytest.raises(KeyError):
            with q.reserve(3) as slot:
                slot.data[:] = b"bye"
                raise KeyError
        assert q.get_many(10) == [b"hello"]
        with pytest.raises(ValueError):
            q.reserve(101)


def test_listen(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name)) as q:
        got: list[bytes] = []
        arrived = threading.Event()

        def callback(message: bytes) -> None:
            got.append(message)
            if len(got) == 3:
                arrived.set()

        listener = q.listen(callback)
        q.put_many([b"a", b"b", b"c"])
        assert arrived.wait(10)
        assert listener.stop()
        assert got == [b"a", b"b", b"c"]


def test_asyncio(ipc: Any, name: str) -> None:
    with opened(ipc.MessageQueue(name)) as q:

        async def main() -> list[bytes]:
            await q.aput(b"x")
            first = await q.aget()
            waiter = asyncio.ensure_future(q.aget())
            await asyncio.sleep(0)  # (lets the waiter start; no ordering depends on it)
            await q.aput(b"y")
            second = await asyncio.wait_for(waiter, 10)
            await q.aput(b"z")
            got = []
            async for m in q:
                got.append(m)
                break
            return [first, second, *got]

        assert asyncio.run(main()) == [b"x", b"y", b"z"]


def test_close_wakes_a_blocked_get(ipc: Any, name: str) -> None:
    q = ipc.MessageQueue(name)
    errors: list[BaseException] = []

    def consumer() -> None:
        try:
            q.get(timeout=20)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=consumer)
    t.start()
    deadline = time.monotonic() + 10
    while not t.is_alive() and time.monotonic() < deadline:
        pass
    q.close()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1 and isinstance(errors[0], ValueError)
    q.unlink()


# -- what only the Redis backend does ------------------------------------------------------


def test_redis_refuses_what_cannot_hold(rurl: str, name: str) -> None:
    with ctipc.connect(rurl) as ipc:
        with pytest.raises(ValueError, match="ACL"):
            ipc.Lock(name, permissions=0o660)
        with pytest.raises(ValueError, match="unlink"):
            ipc.MessageQueue(name, persistent=False)
        with opened(ipc.SharedMemory(name, size=8)) as shm:
            with pytest.raises(ctipc.UnsupportedError, match="read"):
                shm.buf  # noqa: B018
            with pytest.raises(NotImplementedError):
                shm.buf  # noqa: B018
        with pytest.raises(TypeError):
            ipc.Lock(name, lease="1")
        with pytest.raises(ValueError):
            ipc.Lock(name, lease=0)


def test_redis_keys_and_persistence(rurl: str, redis_server: RedisServer, name: str) -> None:  # noqa: F811
    client = redis_server.client()
    prefix = f"t{os.getpid()}"
    try:
        with ctipc.connect(rurl) as ipc:
            lock = ipc.Lock(name)
            lock.acquire()
            assert client.exists(f"{prefix}:{{lock:{name}}}:owner")
            lock.release()
            lock.close()
            q = ipc.MessageQueue(name)
            q.put(b"kept")
            q.close()
        # objects live until unlink(), beyond every handle and connection
        with ctipc.connect(rurl) as ipc:
            with opened(ipc.MessageQueue(name, create=False)) as q:
                assert q.get_nowait() == b"kept"
                q.unlink()
            with opened(ipc.Lock(name, create=False)) as lock:
                assert lock.acquire(blocking=False) and lock.fence == 2
                lock.release()
                lock.unlink()
        assert not client.keys(f"{prefix}:*")
    finally:
        client.close()


def test_redis_unlinked_object(rurl: str, name: str) -> None:
    with ctipc.connect(rurl) as ipc:
        a, b = ipc.MessageQueue(name), ipc.MessageQueue(name)
        a.unlink()
        with pytest.raises(FileNotFoundError):
            b.put(b"x")
        with pytest.raises(FileNotFoundError):
            b.get_nowait()
        a.close()
        b.close()


def test_redis_fence_grows_and_guards_writes(rurl: str, name: str) -> None:
    with ctipc.connect(rurl) as ipc, opened(ipc.SharedMemory(name, size=8)) as shm:
        with opened(ipc.Lock(name)) as lock:
            fences = []
            for _ in range(3):
                with lock:
                    fences.append(lock.fence)
            assert fences == sorted(fences) and len(set(fences)) == 3
            shm.write(b"new", fence=fences[2])
            with pytest.raises(ctipc.LeaseLost):
                shm.write(b"old", fence=fences[1])
            assert shm.read(0, 3) == b"new"


def test_redis_lease_runs_out_while_stalled(rurl: str, name: str) -> None:
    """A holder that stops renewing (here: its renewer is stopped, as in a
    paused process) loses the lock after its lease; the next acquire gets
    owner_died, and the first holder gets LeaseLost at release()."""
    with ctipc.connect(rurl) as first, ctipc.connect(rurl) as second:
        a, b = first.Lock(name, lease=0.3), second.Lock(name)
        a.acquire()
        first._conn.renewer.stop()
        assert b.acquire(timeout=5) and b.owner_died and b.fence == a.fence + 1
        with pytest.raises(ctipc.LeaseLost):
            a.release()
        b.release()
        assert b.acquire() and not b.owner_died
        b.release()
        for obj in (a, b):
            obj.close()
        b.unlink()


def test_redis_semaphore_permit_comes_back(rurl: str, name: str) -> None:
    with ctipc.connect(rurl) as first, ctipc.connect(rurl) as second:
        a = first.Semaphore(name, initial=1, lease=0.3)
        b = second.Semaphore(name)
        assert a.acquire()
        first._conn.renewer.stop()
        assert b.acquire(timeout=5)
        with pytest.raises(ctipc.LeaseLost):
            a.release()
        b.release()
        assert b.value == 1
        a.close()
        b.close()


def test_redis_renewal_keeps_a_lease(rurl: str, name: str) -> None:
    with ctipc.connect(rurl) as ipc, opened(ipc.Lock(name, lease=0.2)) as a:
        with opened(ipc.Lock(name)) as b:
            a.acquire()
            # Many leases long: the renewer keeps it (waiting here is the test).
            assert b.acquire(timeout=1.0) is False
            assert not a.lost
            a.check()
            a.release()


def test_redis_put_retried_after_lost_reply(rurl: str, name: str) -> None:
    import redis

    with ctipc.connect(rurl) as ipc, opened(ipc.MessageQueue(name)) as q:
        scripts = ipc._conn.scripts
        real = scripts.mq_put
        calls = []

        def lossy(**kwargs: Any) -> Any:
            calls.append(1)
            result = real(**kwargs)
            if len(calls) == 1:
                raise redis.ConnectionError("reply lost")
            return result

        scripts.mq_put = lossy
        try:
            q.put_many([b"a", b"b"])
        finally:
            scripts.mq_put = real
        assert len(calls) == 2
        assert q.get_many(10) == [b"a", b"b"]


def test_redis_client_kill(rurl: str, redis_server: RedisServer, name: str) -> None:  # noqa: F811
    admin = redis_server.client()
    try:
        with ctipc.connect(rurl) as ipc, opened(ipc.MessageQueue(name)) as q:
            got: list[bytes] = []
            t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
            t.start()
            admin.client_kill_filter(_type="normal", skipme=True)
            q.put(b"after the kill")
            t.join(10)
            assert got == [b"after the kill"]
    finally:
        admin.close()


def test_redis_warns_when_eviction_is_on(redis_server: RedisServer, rurl: str, name: str) -> None:  # noqa: F811
    admin = redis_server.client()
    admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with ctipc.connect(rurl) as ipc:
            with pytest.warns(RuntimeWarning, match="noeviction"):
                lock = ipc.Lock(name)
            lock.close()
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()


def test_redis_tcp_url(redis_server: RedisServer, name: str) -> None:  # noqa: F811
    with ctipc.connect(redis_server.tcp_url + f"?prefix=t{os.getpid()}") as ipc:
        with opened(ipc.Lock(name)) as lock:
            with lock:
                assert lock.locked()


def test_redis_one_renewer_thread_for_every_lease(rurl: str, new_name: Any) -> None:
    with ctipc.connect(rurl) as ipc:
        locks = [ipc.Lock(new_name()) for _ in range(3)]
        sem = ipc.Semaphore(new_name(), initial=2)
        q = ipc.MessageQueue(new_name())
        q.put(b"x")
        for lock in locks:
            assert isinstance(lock, ipc.Lock) and lock.acquire()
        assert sem.acquire() and sem.acquire()
        with q.receive(timeout=5):
            renewers = [t for t in threading.enumerate() if t.name == "ctipc-renewer"]
            assert len(renewers) == 1 and renewers[0].daemon
        for lock in locks:
            lock.release()
            lock.close()
        sem.release(2)
        sem.close()
        q.close()
