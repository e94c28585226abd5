"""A real redis-server for the tests: started on a private Unix socket and a
free loopback port, persistence off, ``noeviction`` (connect warns
otherwise, and warnings are errors here).

Import the fixtures into a test module (``from redis_server import ...``).
Without ``redis-server`` (PATH or /usr/bin) or redis-py the tests that need it
skip with the reason; under ``CI=true`` they fail instead, so that a green CI
cannot hide them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

STARTUP_DEADLINE = 10.0


def _missing(what: str) -> None:
    reason = f"the Redis tests need {what}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: not skipped)", pytrace=False)
    pytest.skip(reason)


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; ``url`` is its Unix socket, ``tcp_url`` its port."""

    def __init__(self, binary: str, directory: str, *extra: str) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = extra  # more server options
        self.socket = os.path.join(directory, "r.sock")
        self.port = _free_port()
        self.url = f"unix://{self.socket}"
        self.tcp_url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", self.socket, "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--dir", self.directory,
            "--daemonize", "no", "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ping()

    def _wait_ping(self) -> None:
        import redis

        deadline = time.monotonic() + STARTUP_DEADLINE
        client = redis.Redis(unix_socket_path=self.socket, socket_timeout=1.0)
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer PING within 10 s")
                time.sleep(0.01)  # (polling the server until it answers, with a deadline)
        finally:
            client.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(unix_socket_path=self.socket, socket_timeout=5.0)


def start_server(directory: str, *extra: str) -> RedisServer:
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing('redis-py (pip install "ctipc[redis]")')
    binary = redis_binary()
    if binary is None:
        _missing("redis-server on PATH or in /usr/bin (apt-get install redis-server)")
    assert binary is not None
    server = RedisServer(binary, directory, *extra)
    server.start()
    return server


@contextlib.contextmanager
def running_server(*extra: str) -> Iterator[RedisServer]:
    """A server in a directory of its own, stopped (and the directory
    removed) at the end; ``extra`` are more server options."""
    with tempfile.TemporaryDirectory(prefix="ctipc-redis-") as directory:
        server = start_server(directory, *extra)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's shared server.  Tests that stop a server use their own."""
    with running_server() as server:
        yield server


def url_fixture(lease: float, prefix: str) -> Any:
    """A fixture: the URL of the session's server with ``lease`` and a key
    prefix of this process; the database is emptied after each test."""

    @pytest.fixture
    def url(redis_server: RedisServer) -> Iterator[str]:
        yield f"{redis_server.url}?lease={lease}&prefix={prefix}{os.getpid()}"
        client = redis_server.client()
        try:
            client.flushdb()
        finally:
            client.close()

    return url
