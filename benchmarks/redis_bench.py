"""ctipc on Redis next to redis-py's own Lock, python-redis-lock and a
hand-written redis-py Streams loop: one server, one run, interleaved.

    python benchmarks/redis_bench.py [--url URL] [--n N] [--repeats R] [--soak SECONDS]

Without ``--url`` it starts a private redis-server (Unix socket, persistence
off) and stops it at the end.  Each repeat runs every contender once, in
turn, so that a noisy neighbour slows all of them alike; the report gives
the median time per operation and the ratios.  Targets: a Lock
acquire+release within 1.2x redis-py's Lock, put_many at least 5x plain put.
``--soak S`` also runs the random-kill soak of the tests for S seconds.
Needs ``pip install -r benchmarks/requirements.txt`` for python-redis-lock
(skipped with a note without it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import redis  # noqa: E402

import ctipc  # noqa: E402

BATCH = 100
PAYLOAD = b"x" * 64


def timed(n: int, body: Callable[[int], None]) -> float:
    """Seconds per operation of ``body(n)`` (which runs n operations)."""
    started = time.perf_counter()
    body(n)
    return (time.perf_counter() - started) / n


def lock_contenders(ipc: ctipc._connect.Backend, client: redis.Redis) -> dict[str, Callable]:
    lock = ipc.Lock("bench-lock", lease=10)
    peer = client.lock("bench-redis-py-lock", timeout=10)

    def ours(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    def redis_py(n: int) -> None:
        for _ in range(n):
            peer.acquire()
            peer.release()

    found = {"ctipc Lock": ours, "redis-py Lock": redis_py}
    try:
        import redis_lock
    except ImportError:
        print("note: python-redis-lock is not installed (pip install python-redis-lock)")
    else:
        other = redis_lock.Lock(client, "bench-python-redis-lock", expire=10)

        def python_redis_lock(n: int) -> None:
            for _ in range(n):
                other.acquire()
                other.release()

        found["python-redis-lock"] = python_redis_lock
    return found


def queue_contenders(ipc: ctipc._connect.Backend, client: redis.Redis) -> dict[str, Callable]:
    q = ipc.MessageQueue("bench-queue", capacity=64 << 20, max_message=1024)
    stream = "bench-stream"
    client.delete(stream)
    client.xgroup_create(stream, "g", id="0", mkstream=True)

    def ours_put_get(n: int) -> None:
        for _ in range(n):
            q.put(PAYLOAD)
        for _ in range(n):
            q.get()

    def ours_batches(n: int) -> None:
        for _ in range(0, n, BATCH):
            q.put_many([PAYLOAD] * BATCH)
        for _ in range(0, n, BATCH):
            q.get_many(BATCH)

    def streams_put_get(n: int) -> None:
        # The loop a user would write: XADD; XREADGROUP, then XACK + XDEL in one pipeline.
        for _ in range(n):
            client.xadd(stream, {"d": PAYLOAD})
        for _ in range(n):
            ((_, entries),) = client.xreadgroup("g", "c", {stream: ">"}, count=1)
            ident = entries[0][0]
            pipe = client.pipeline(transaction=False)
            pipe.xack(stream, "g", ident).xdel(stream, ident)
            pipe.execute()

    def streams_batches(n: int) -> None:
        for _ in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd(stream, {"d": PAYLOAD})
            pipe.execute()
        for _ in range(0, n, BATCH):
            ((_, entries),) = client.xreadgroup("g", "c", {stream: ">"}, count=BATCH)
            ids = [e[0] for e in entries]
            pipe = client.pipeline(transaction=False)
            pipe.xack(stream, "g", *ids).xdel(stream, *ids)
            pipe.execute()

    def ours_put_only(n: int) -> None:
        for _ in range(n):
            q.put(PAYLOAD)

    def ours_put_many_only(n: int) -> None:
        for _ in range(0, n, BATCH):
            q.put_many([PAYLOAD] * BATCH)

    def drain(n: int) -> None:
        while len(q):
            q.get_many(1000)

    return {
        "ctipc put+get": ours_put_get,
        "Streams put+get": streams_put_get,
        "ctipc put_many+get_many": ours_batches,
        "Streams batches": streams_batches,
        "_put": ours_put_only,  # (put alone, for put_many's speed-up; drained after)
        "_put_many": ours_put_many_only,
        "_drain": drain,
    }


def round_trips(body: Callable[[int], None], n: int = 100) -> float:
    """Round trips per operation: commands (or pipelines) sent to the server,
    counted on the client; the same on a quiet and on a busy machine."""
    connection = redis.connection.AbstractConnection
    real = connection.send_packed_command
    sent = [0]

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return real(self, command, check_health)

    connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        body(n)
    finally:
        connection.send_packed_command = real  # type: ignore[method-assign]
    return sent[0] / n


def run(url: str, n: int, repeats: int) -> None:
    client = redis.Redis.from_url(url)
    with ctipc.connect(url + ("&" if "?" in url else "?") + "prefix=bench") as ipc:
        groups = [lock_contenders(ipc, client), queue_contenders(ipc, client)]
        trips = {label: round_trips(body) for group in groups[:1] for label, body in group.items()}
        results: dict[str, list[float]] = {}
        for _ in range(repeats):
            for group in groups:
                for label, body in group.items():
                    if label == "_drain":
                        continue
                    results.setdefault(label, []).append(timed(n, body))
                    if label.startswith("_put"):
                        group["_drain"](0)  # (not timed)
    client.close()
    median = {label: statistics.median(values) for label, values in results.items()}
    best = {label: min(values) for label, values in results.items()}
    print(f"redis-server at {url}, {n} operations x {repeats} repeats, {len(PAYLOAD)} B messages")
    print(f"{'':28}{'median us/op':>14}{'best us/op':>12}{'round trips':>13}")
    for label, seconds in median.items():
        if not label.startswith("_"):
            rt = f"{trips[label]:13.2f}" if label in trips else ""
            print(f"{label:28}{seconds * 1e6:14.1f}{best[label] * 1e6:12.1f}{rt}")
    print(
        f"ctipc Lock / redis-py Lock: {trips['ctipc Lock'] / trips['redis-py Lock']:.2f}x the "
        f"round trips (target <= 1.2), {median['ctipc Lock'] / median['redis-py Lock']:.2f}x "
        f"the median time, {best['ctipc Lock'] / best['redis-py Lock']:.2f}x the best"
    )
    m = median
    if "python-redis-lock" in m:
        print(f"ctipc Lock / python-redis-lock: {m['ctipc Lock'] / m['python-redis-lock']:.2f}x")
    print(f"ctipc put+get / Streams loop: {m['ctipc put+get'] / m['Streams put+get']:.2f}x")
    print(
        "ctipc batches / Streams batches: "
        f"{median['ctipc put_many+get_many'] / median['Streams batches']:.2f}x"
    )
    speedup = median["_put"] / median["_put_many"]
    print(f"put_many({BATCH}) vs put: {speedup:.1f}x the messages per second (target >= 5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis URL (default: start a private redis-server)")
    parser.add_argument("--n", type=int, default=2000, help="operations per contender and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of random-kill soak")
    args = parser.parse_args()
    from redis_server import RedisServer, redis_binary

    with tempfile.TemporaryDirectory(prefix="ctipc-bench-") as directory:
        server = None
        url = args.url
        if url is None:
            binary = redis_binary()
            if binary is None:
                sys.exit("redis-server is not installed (apt-get install redis-server)")
            server = RedisServer(binary, directory)
            server.start()
            url = server.url
        try:
            run(url, args.n, args.repeats)
            if args.soak:
                from test_redis_failures import soak

                report = soak(url + "?lease=0.5&prefix=soak", "soak", directory, args.soak)
                print(f"soak {args.soak:.0f} s:", report)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
