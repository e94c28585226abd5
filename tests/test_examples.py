"""The HTTP examples, run as real server processes and driven like the README's curl script.

Each test starts two servers of one example (A and B, as in the node_ipc addon's
README), drives them with urllib, stops both, and then checks the lifetime rule:
once the last server closed an object, it no longer exists, by name or in /dev/shm.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import http_get as get

import ctipc
from ctipc import _names

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
START_DEADLINE = 30.0  # seconds for a server to print "listening on PORT"
STOP_DEADLINE = 15.0  # seconds for a server to exit after SIGTERM
DEV_SHM = Path("/dev/shm")
CHECK_DEV_SHM = sys.platform.startswith("linux") and DEV_SHM.is_dir()

pytestmark = pytest.mark.slow


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One example server process on a free local port."""

    def __init__(self, script: str, *args: str) -> None:
        self.script = script
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.stderr = tempfile.TemporaryFile()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump: threading.Thread | None = None
        self._terminated = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # The free port may be taken by someone else before the server binds
        # it: then the server exits at once and another port is tried.
        for _ in range(3):
            if self._try_start(free_port()):
                return
        pytest.fail(f"{self.script} did not start:\n{self.log()}")

    def _try_start(self, port: int) -> bool:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / self.script), str(port), *self.args],
            cwd=str(REPO),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            encoding="utf-8",
        )
        self._lines = queue.Queue()
        self._pump = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        self._pump.start()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.script} printed no 'listening' line in time:\n{self.log()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the server exited
                self._reap()
                if "in use" in self.log():
                    return False  # port taken meanwhile: try another
                pytest.fail(f"{self.script} exited before listening:\n{self.log()}")
            if line.strip() == f"listening on {port}":
                return True

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def terminate(self) -> None:
        """Send SIGTERM (POSIX), the server's clean-shutdown path, once only:
        a second one could hit the interpreter's finalisation, where Python
        has restored the default action, and kill it."""
        if self.proc is not None and not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.terminate()

    def stop(self) -> int | None:
        """Wait for the process (killing it after STOP_DEADLINE); its exit code,
        or None if it had to be killed."""
        proc = self.proc
        if proc is None:
            return 0
        self.terminate()
        try:
            code: int | None = proc.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        self._reap()
        return code

    def _reap(self) -> None:
        assert self.proc is not None
        self.proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=STOP_DEADLINE)
            self._pump = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.stderr.close()


@contextlib.contextmanager
def two_servers(script: str, *args: str) -> Iterator[tuple[Server, Server]]:
    """Start servers A and B; always stop both (concurrently, so that the
    last-one-out rule also meets two processes closing at the same moment)."""
    a, b = Server(script, *args), Server(script, *args)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.terminate()
        b.terminate()
        codes = [a.stop(), b.stop()]
        logs = [a.log(), b.log()]
        a.close()
        b.close()
    if os.name == "posix":
        for server, code, log in zip("AB", codes, logs):
            assert code == 0, f"server {server} did not shut down cleanly ({code}):\n{log}"


def os_tag(kind: str, name: str) -> str:
    """The digest that every OS object of ctipc object ``name`` carries."""
    return _names.os_name(kind, "h", name).rsplit("-", 1)[1]


def dev_shm_entries(kind: str, name: str) -> list[str]:
    tag = os_tag(kind, name)
    return sorted(
        e for e in os.listdir(DEV_SHM) if e.startswith(("ctipc-", "sem.ctipc-")) and tag in e
    )


def assert_gone(kind: str, name: str) -> None:
    """After both servers stopped, the object must have been removed."""
    if CHECK_DEV_SHM:
        assert dev_shm_entries(kind, name) == [], f"{name!r} left entries in /dev/shm"
    opener = {"s": ctipc.Semaphore, "m": ctipc.SharedMemory}[kind]
    try:
        obj = opener(name, create=False)
    except FileNotFoundError:
        return
    obj.close()  # last one out: removes it, so no test leaves it behind
    pytest.fail(f"{name!r} still exists after the last server closed it")


def test_semaphore_shared_by_two_servers() -> None:
    name = unique("ex-sem")
    results: queue.Queue[object] = queue.Queue()

    def blocked_require(url: str) -> None:
        try:
            results.put(get(url, timeout=30))
        except BaseException as e:  # reported by the main thread
            results.put(e)

    with two_servers("sem_http.py", "--name", name, "--timeout", "30") as (a, b):
        # A name that exists nowhere: B cannot release it (or wait on it).
        assert get(f"{b.url}/release")[0] == 404
        assert get(f"{b.url}/require")[0] == 404

        status, text = get(f"{a.url}/create")
        assert status == 200, text
        assert get(f"{a.url}/require") == (200, "acquired")  # the only permit
        if CHECK_DEV_SHM:
            assert dev_shm_entries("s", name), "the semaphore is not in /dev/shm"

        waiter = threading.Thread(target=blocked_require, args=(f"{a.url}/require",), daemon=True)
        waiter.start()
        with pytest.raises(queue.Empty):
            results.get(timeout=0.5)  # still blocked: no permit left

        # B never created the semaphore: it opens it by name to release it.
        assert get(f"{b.url}/release") == (200, "released")
        try:
            outcome = results.get(timeout=10)
        except queue.Empty:
            pytest.fail("the blocked /require did not complete within 10 s of B's /release")
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome == (200, "acquired")
        waiter.join(timeout=10)
        assert get(f"{a.url}/nowhere")[0] == 404
    assert_gone("s", name)


def test_shared_memory_shared_by_two_servers() -> None:
    name = unique("ex-shm")
    missing = unique("ex-shm-missing")
    text = "héllo wörld ✓ 日本語 🎉"

    def url(server: Server, path: str, **query: str) -> str:
        return f"{server.url}{path}?{urllib.parse.urlencode(query)}"

    with two_servers("shm_http.py") as (a, b):
        status, body = get(url(a, "/write", shm_name=name, content="hello"))
        assert status == 200, body
        assert get(url(b, "/read", shm_name=name)) == (200, "hello")
        if CHECK_DEV_SHM:
            assert dev_shm_entries("m", name), "the shared memory is not in /dev/shm"

        # Non-ASCII text round-trips, both ways.
        assert get(url(b, "/write", shm_name=name, content=text))[0] == 200
        assert get(url(a, "/read", shm_name=name)) == (200, text)
        assert get(url(b, "/read", shm_name=name)) == (200, text)

        # Empty content, then a shorter text: read_str stops at the NUL.
        assert get(url(a, "/write", shm_name=name, content=""))[0] == 200
        assert get(url(b, "/read", shm_name=name)) == (200, "")
        assert get(url(a, "/write", shm_name=name, content="hi"))[0] == 200
        assert get(url(b, "/read", shm_name=name)) == (200, "hi")

        # A name that exists nowhere; reading it does not create it.
        assert get(url(b, "/read", shm_name=missing))[0] == 404
        assert get(url(a, "/read", shm_name=missing))[0] == 404

        # Errors: too long (4096 bytes + NUL), NUL in the text, bad or no name.
        assert get(url(a, "/write", shm_name=name, content="x" * 4096))[0] == 413
        assert get(url(b, "/read", shm_name=name)) == (200, "hi")  # nothing written
        assert get(url(a, "/write", shm_name=name, content="a\0b"))[0] == 400
        assert get(url(a, "/write", shm_name="a/b", content="x"))[0] == 400
        assert get(url(a, "/write", content="x"))[0] == 400
        assert get(url(a, "/write", shm_name=name))[0] == 400
    assert_gone("m", name)
    assert_gone("m", missing)


def test_mq_cluster_workers_publish_master_listens() -> None:
    """examples/mq_cluster.py: 3 worker interpreters publish 20 messages each
    to a queue they open by name; the master prints all 60 and exits 0."""
    name = unique("ex-mq")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-W", "error", str(EXAMPLES / "mq_cluster.py")]
    cmd += ["--workers", "3", "--messages", "20", "--name", name]
    try:
        done = subprocess.run(
            cmd,
            cwd=str(REPO),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=START_DEADLINE + 60,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mq_cluster.py did not finish in time:\n{e.stdout!r}\n{e.stderr!r}")
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "master: 60 of 60 messages from 3 workers"
    messages = lines[:-1]
    assert len(messages) == 60, lines
    pattern = re.compile(r"worker (\d) \(pid (\d+)\): message (\d+)")
    per_worker: dict[int, list[int]] = {}
    pids: dict[int, set[str]] = {}
    for line in messages:
        match = pattern.fullmatch(line)
        assert match, f"unexpected line {line!r}"
        number = int(match.group(1))
        per_worker.setdefault(number, []).append(int(match.group(3)))
        pids.setdefault(number, set()).add(match.group(2))
    assert per_worker == {n: list(range(20)) for n in range(3)}  # all, in order per worker
    assert all(len(p) == 1 for p in pids.values())
    assert len(set().union(*pids.values())) == 3  # three separate processes
    if CHECK_DEV_SHM:
        assert dev_shm_entries("q", name) == [], f"{name!r} left entries in /dev/shm"
    with pytest.raises(FileNotFoundError):
        ctipc.MessageQueue(name, create=False)
