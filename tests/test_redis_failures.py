"""Failures of real processes against a real Redis server: holders SIGKILLed
or SIGSTOPped past their lease, a consumer killed inside ``receive()``, the
server stopped and restarted during a wait, and a short soak with random
kills (benchmarks/redis_bench.py --soak runs a longer one).

Children are separate interpreters (helpers.Child); every wait has a
deadline; leases are short so that the tests stay fast.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import HAVE_SIGKILL, Child
from redis_server import RedisServer, redis_server, running_server, url_fixture  # noqa: F401

import ctipc

pytestmark = pytest.mark.skipif(not HAVE_SIGKILL, reason="needs SIGKILL and SIGSTOP")

LEASE = 0.5


rurl = url_fixture(LEASE, "f")


@pytest.fixture
def ipc(rurl: str) -> Iterator[Any]:
    with ctipc.connect(rurl) as backend:
        yield backend


_CHILD = """
ipc = ctipc.connect(sys.argv[1])
name = sys.argv[2]
"""


def test_sigkill_lock_holder(ipc: Any, rurl: str, name: str) -> None:
    code = _CHILD + "lock = ipc.Lock(name)\nlock.acquire()\nout(lock.fence)\ninp()\n"
    lock = ipc.Lock(name)
    with Child(code, rurl, name) as child:
        fence = int(child.readline())
        assert lock.acquire(blocking=False) is False
        child.kill()
        started = time.monotonic()
        assert lock.acquire(timeout=10)
    assert lock.owner_died and lock.fence == fence + 1
    assert time.monotonic() - started < 10
    lock.release()
    assert lock.acquire() and not lock.owner_died
    lock.release()
    lock.close()


def test_sigkill_semaphore_holder(ipc: Any, rurl: str, name: str) -> None:
    code = _CHILD + "sem = ipc.Semaphore(name, initial=1)\nsem.acquire()\nout('held')\ninp()\n"
    sem = ipc.Semaphore(name, initial=1)
    with Child(code, rurl, name) as child:
        child.expect("held")
        assert sem.value == 0 and not sem.acquire(blocking=False)
        child.kill()
        assert sem.acquire(timeout=10)
    sem.release()
    assert sem.value == 1
    sem.close()


def test_sigkill_consumer_inside_receive(ipc: Any, rurl: str, name: str) -> None:
    code = _CHILD + (
        "q = ipc.MessageQueue(name)\n"
        "with q.receive(timeout=10) as msg:\n"
        "    out(bytes(msg.data).decode(), msg.redelivered)\n"
        "    inp()\n"
    )
    q = ipc.MessageQueue(name)
    q.put_many([b"job", b"next"])
    with Child(code, rurl, name) as child:
        assert child.readline() == "job False"
        with q.receive(timeout=10) as msg:  # the next one is free meanwhile
            assert bytes(msg.data) == b"next" and not msg.redelivered
        child.kill()
    with q.receive(timeout=10) as msg:
        assert bytes(msg.data) == b"job" and msg.redelivered
    assert len(q) == 0
    q.close()


def test_sigstop_holder_past_its_lease(ipc: Any, rurl: str, name: str) -> None:
    code = _CHILD + (
        "lock = ipc.Lock(name)\n"
        "shm = ipc.SharedMemory(name, size=16)\n"
        "lock.acquire()\n"
        "shm.write(b'child', fence=lock.fence)\n"
        "out(lock.fence)\n"
        "inp()\n"
        "for what, call in (('write', lambda: shm.write(b'stale', fence=lock.fence)),\n"
        "                   ('release', lock.release)):\n"
        "    try:\n"
        "        call()\n"
        "        out(what, 'done')\n"
        "    except ctipc.LeaseLost:\n"
        "        out(what, 'LeaseLost')\n"
    )
    lock = ipc.Lock(name)
    with Child(code, rurl, name) as child:
        fence = int(child.readline())
        shm = ipc.SharedMemory(name)
        child.signal(signal.SIGSTOP)
        try:
            assert lock.acquire(timeout=10)
            assert lock.owner_died and lock.fence > fence
            shm.write(b"parent", fence=lock.fence)
            lock.release()
        finally:
            child.signal(signal.SIGCONT)
        child.send()
        assert child.readline() == "write LeaseLost"  # the fence was refused
        assert child.readline() == "release LeaseLost"
        child.finish()
    assert shm.read(0, 6) == b"parent"
    shm.close()
    lock.close()


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    """A server of this test alone, with the append-only file the docs
    recommend, so that it comes back with its data after a restart."""
    with running_server("--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


def test_server_stopped_and_restarted_during_waits(durable_server: RedisServer, name: str) -> None:
    with ctipc.connect(durable_server.url + "?lease=2") as ipc:
        q = ipc.MessageQueue(name)
        lock = ipc.Lock(name)
        outcomes: dict[str, Any] = {}

        def wait(key: str, timeout: float) -> None:
            try:
                outcomes[key] = q.get(timeout=timeout)
            except BaseException as e:
                outcomes[key] = e

        short = threading.Thread(target=wait, args=("short", 1.0))
        long = threading.Thread(target=wait, args=("long", 30.0))
        durable_server.stop()
        short.start()
        long.start()
        started = time.monotonic()
        with pytest.raises(ctipc.BackendUnavailable):
            lock.acquire(timeout=1.0)  # unreachable is not "contended": never False
        assert time.monotonic() - started >= 0.9
        short.join(10)
        assert isinstance(outcomes["short"], ctipc.BackendUnavailable), outcomes
        durable_server.start()
        q.put(b"after the restart", timeout=10)
        long.join(30)
        assert outcomes["long"] == b"after the restart"  # the long wait recovered
        assert lock.acquire(timeout=5)
        lock.release()
        q.close()
        lock.close()


# -- soak -----------------------------------------------------------------------------

SOAK_ROLES = {
    "producer": """
q = ipc.MessageQueue(name, capacity=1 << 16, max_message=64)
tag, i = sys.argv[3], 0
with open(sys.argv[4], "a") as log:
    while True:
        q.put(f"{tag}:{i}".encode(), timeout=30)
        log.write(f"c {tag}:{i}\\n"); log.flush()
        i += 1
        time.sleep(0.001)  # producing takes a moment too (and leaves the CPUs some room)
""",
    "consumer": """
q = ipc.MessageQueue(name, capacity=1 << 16, max_message=64)
with open(sys.argv[4], "a") as log:
    while True:
        with q.receive(timeout=30) as msg:
            log.write(f"d {bytes(msg.data).decode()} {int(msg.redelivered)}\\n"); log.flush()
            time.sleep(0.002)  # handling it takes a moment: kills land inside blocks too
""",
    "locker": """
lock = ipc.Lock(name)
with open(sys.argv[4], "a") as log:
    while True:
        with lock:
            log.write(f"l {lock.fence} {int(lock.owner_died)}\\n"); log.flush()
            time.sleep(0.002)  # work under the lock: kills land inside it too
""",
}


def soak(url: str, name: str, directory: str, seconds: float, seed: int = 0) -> dict[str, int]:
    """Producers, consumers and lock users, SIGKILLed at random for
    ``seconds``; then every committed message must be found delivered."""
    rng = random.Random(seed)
    spawned = 0
    logs: list[str] = []

    def spawn(role: str) -> Child:
        nonlocal spawned
        spawned += 1
        log = os.path.join(directory, f"{role}-{spawned}.log")
        logs.append(log)
        return Child(_CHILD + SOAK_ROLES[role], url, name, f"p{spawned}", log)

    roles = ["producer", "producer", "consumer", "consumer", "locker"]
    kills = 0
    with contextlib.ExitStack() as stack:
        children = [stack.enter_context(spawn(role)) for role in roles]
        child_logs = logs[:]
        ready_by = time.monotonic() + 60  # (interpreters start slowly on a busy machine)
        while not all(map(os.path.exists, child_logs)):
            assert time.monotonic() < ready_by, "the soak's processes did not start"
            time.sleep(0.02)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            # (the pace of the kills; nothing waits on it)
            time.sleep(rng.uniform(0.05, 0.25))
            # a victim that is at work (it opened its log), not still starting
            working = [i for i, log in enumerate(child_logs) if os.path.exists(log)]
            if not working:
                continue
            victim = rng.choice(working)
            children[victim].kill()
            kills += 1
            children[victim] = stack.enter_context(spawn(roles[victim]))
            child_logs[victim] = logs[-1]
        for child in children:
            child.kill()
    committed, delivered, redelivered, fences = set(), set(), 0, []
    for log in logs:
        if not os.path.exists(log):  # killed before it opened its log
            continue
        with open(log) as f:
            for line in f:
                kind, *rest = line.split()
                if kind == "c":
                    committed.add(rest[0])
                elif kind == "d":
                    delivered.add(rest[0])
                    redelivered += int(rest[1])
                elif kind == "l":
                    fences.append(int(rest[0]))
    with ctipc.connect(url) as ipc:
        q = ipc.MessageQueue(name)
        while True:  # what is left, and what killed consumers held (after their lease)
            try:
                with q.receive(timeout=LEASE * 3) as msg:
                    delivered.add(bytes(msg.data).decode())
                    redelivered += msg.redelivered
            except ctipc.Empty:
                break
        lock = ipc.Lock(name)
        assert lock.acquire(timeout=10)  # a killed lock user never keeps the lock
        lock.release()
        q.close()
        lock.close()
    assert len(fences) == len(set(fences)), "a fence was granted twice"
    return {
        "kills": kills,
        "committed": len(committed),
        "delivered": len(delivered & committed),
        "lost": len(committed - delivered),
        "redelivered": redelivered,
        "lock grants": len(fences),
    }


def test_soak_random_kills(rurl: str, name: str, tmp_path: Any) -> None:
    report = soak(rurl, name, str(tmp_path), seconds=4.0)
    print("\nsoak:", report)
    assert report["committed"] > 0 and report["kills"] > 0
    assert report["lost"] == 0, report


@pytest.mark.parametrize("wait", ["lock.acquire()", "q.get()"])
def test_ctrl_c_interrupts_a_wait(ipc: Any, rurl: str, name: str, wait: str) -> None:
    code = _CHILD + (
        "lock, q = ipc.Lock(name), ipc.MessageQueue(name)\n"
        "out('waiting')\n"
        "try:\n"
        f"    {wait}\n"
        "except KeyboardInterrupt:\n"
        "    out('interrupted')\n"
    )
    lock = ipc.Lock(name)
    lock.acquire()
    with Child(code, rurl, name) as child:
        child.expect("waiting")
        assert child.silent_for(0.3)  # blocked (not a way to order events)
        child.signal(signal.SIGINT)
        child.expect("interrupted", timeout=5)
        child.finish()
    lock.release()
    lock.close()


def test_missing_server_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis_server as fixture

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        fixture._missing("redis-server")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="redis-server"):
        fixture._missing("redis-server")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_keeps_its_own_producer_and_permits(ipc: Any, rurl: str, name: str) -> None:
    """gunicorn --preload: a worker forked with the parent's handles must
    neither drop the parent's messages as repeats nor give back its permits.
    (The fork happens in a fresh interpreter, which runs no other thread.)"""
    code = _CHILD + (
        "q = ipc.MessageQueue(name)\n"
        "sem = ipc.Semaphore(name, initial=2, lease=30)\n"
        "sem.acquire()\n"
        "q.put_many([b'p1', b'p2'])\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    q.put_many([b'c1', b'c2'])\n"
        "    sem.release()  # a plain post: the permit is the parent's\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "q.put_many([b'p3', b'p4'])\n"
        "sem.release()  # the parent's own permit: no LeaseLost\n"
        "out(len(q), sem.value)\n"
    )
    with Child(code, rurl, name) as child:
        assert child.readline() == "6 3"
        child.finish()
    q = ipc.MessageQueue(name)
    assert sorted(q.get_many(10)) == [b"c1", b"c2", b"p1", b"p2", b"p3", b"p4"]
    q.close()
