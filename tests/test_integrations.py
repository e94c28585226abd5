"""gunicorn and uvicorn serving the examples, as real server processes.

examples/gunicorn_app (4 sync workers, forked by gunicorn) and
examples/uvicorn_app (``--workers 2``, spawned by uvicorn) listen on
127.0.0.1, on a port the OS picks (``:0``; the tests read it from the
server's log).  A few hundred requests from a few threads must leave a
shared counter and an aggregated event stream that agree exactly with the
responses received.  The gunicorn test also SIGKILLs the worker that holds
the Lock in the middle of the load; the uvicorn test checks that a worker
answers while one of its requests waits for the Lock.  After a clean
shutdown, none of the test's objects is left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from helpers import CHILD_PIDS, DEADLINE, HAVE_DEV_SHM, child_env, entries_of, http_get, run_threads

import ctipc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.name != "posix", reason="gunicorn is POSIX-only; both servers are stopped with SIGTERM"
    ),
]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GUNICORN_APP = EXAMPLES / "gunicorn_app"
UVICORN_APP = EXAMPLES / "uvicorn_app"
#: seconds for a server to listen and answer (PyPy starts slowly; the machine is shared)
START_DEADLINE = 60.0
#: seconds for a server to exit after SIGTERM
STOP_DEADLINE = 30.0
#: seconds one request may take (far more than any takes)
REQUEST_TIMEOUT = 30.0

#: a response to a counted request: (request id, status, JSON body)
Response = tuple[int, int, dict[str, Any]]


class Server:
    """A process started in its own session (so that all it starts can be
    killed together), with its stdout and stderr in a file."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.url = ""
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        CHILD_PIDS.add(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def pause(self, deadline: float, what: str) -> None:
        """Fail past ``deadline`` or if the process exited; else wait a little
        (for the process to exit, which ends the wait at once)."""
        if self.proc.poll() is not None:
            pytest.fail(f"exited ({self.proc.returncode}) before {what}:\n{self.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within the deadline:\n{self.log()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(0.05)

    def wait_for_log(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the log, once there are that many."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[:count]
            self.pause(deadline, f"logging {pattern!r} {count} time(s)")

    def listen(self, pattern: str) -> None:
        """Read the port from the log (``pattern``'s group 1), then wait until
        a request is answered."""
        self.url = f"http://127.0.0.1:{self.wait_for_log(pattern)[0].group(1)}"
        deadline = time.monotonic() + START_DEADLINE
        while True:
            with contextlib.suppress(OSError):  # refused, reset, timed out
                if http_get(self.url + "/stats", timeout=2.0)[0] == 200:
                    return
            self.pause(deadline, "answering")

    def get_json(self, path: str) -> dict[str, Any]:
        status, text = http_get(self.url + path, timeout=REQUEST_TIMEOUT)
        assert status == 200, (path, status, text)
        return dict(json.loads(text))

    def stop(self) -> int | None:
        """SIGTERM, then wait; SIGKILL the whole session if it overstays.
        The exit code, or None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill_session()
            return None

    def kill_session(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(DEADLINE)


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[Server]:
    server = Server(cmd, env, log_path)
    try:
        yield server
    except BaseException:
        print(f"--- {log_path.name} ---\n{server.log()}")  # shown with the failure
        raise
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.kill_session()  # whatever it started and left behind, if anything


def request(url: str, path: str, request_id: int, **params: float) -> Response:
    query = "".join(f"&{k}={v}" for k, v in params.items())
    status, text = http_get(f"{url}{path}?id={request_id}{query}", timeout=REQUEST_TIMEOUT)
    return request_id, status, json.loads(text)


def load(url: str, threads: int, per_thread: int, first_id: int, out: list[Response],
         path: Callable[[int], str] = lambda k: "/hit", **params: float) -> None:  # fmt: skip
    """``threads`` × ``per_thread`` requests; ids from ``first_id`` on."""

    def body(i: int) -> None:
        for k in range(per_thread):
            request_id = first_id + i * per_thread + k
            out.append(request(url, path(k), request_id, **params))

    run_threads(body, threads)


def check_exact(responses: list[Response], counter: int, lost: int) -> None:
    """Every counted request got its own number: ``counter`` numbers were
    given, ``lost`` of them to requests that got no response."""
    numbers = [body["n"] for _, _, body in responses]
    assert len(set(numbers)) == len(numbers), "two requests got the same number"
    assert counter == len(responses) + lost
    assert len(set(range(1, counter + 1)) - set(numbers)) == lost


def check_report(path: Path, responses: list[Response]) -> dict[str, Any]:
    """The aggregator received exactly one event per response."""
    report: dict[str, Any] = json.loads(path.read_text("utf-8"))
    assert report["events"] == len(responses)
    assert report["ids"] == sorted(i for i, _, _ in responses)
    assert report["numbers"] == sorted(body["n"] for _, _, body in responses)
    return report


def check_gone(objects: list[tuple[type, str]]) -> None:
    """The server's last process out removed every object."""
    for cls, name in objects:
        if HAVE_DEV_SHM:
            assert entries_of(name) == [], f"{name!r} left entries in /dev/shm"
        with pytest.raises(FileNotFoundError):
            cls(name, create=False)


def load_example_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_workers_share_counter_limit_and_events(
    tmp_path: Path, new_name: Callable[..., str]
) -> None:
    pytest.importorskip("gunicorn")
    ipc = load_example_module(GUNICORN_APP / "ipc.py")  # the stats layout, the names
    prefix = new_name()
    names = ipc.names(prefix)
    for name in names.values():
        new_name(name)  # removed after the test whatever happens
    report = tmp_path / "events.json"
    env = child_env(EXAMPLE_IPC_PREFIX=prefix, EXAMPLE_EVENTS_REPORT=str(report))
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_APP / "gunicorn.conf.py")]
    cmd += ["-b", "127.0.0.1:0"]
    responses: list[Response] = []

    with running(cmd, env, tmp_path / "gunicorn.log") as server:
        server.listen(r"Listening at: http://127\.0\.0\.1:(\d+)")
        master = server.proc.pid

        # 1. Load: 200 /hit and 40 /expensive from 6 threads, all answered.
        def path(k: int) -> str:
            return "/expensive" if k % 6 == 0 else "/hit"

        load(server.url, 6, 40, 1_000, responses, path, wait=REQUEST_TIMEOUT / 2, work=0.01)
        assert [s for _, s, _ in responses if s != 200] == []
        stats = server.get_json("/stats")
        check_exact(responses, stats["requests"], lost=0)
        assert 1 <= stats["expensive_peak"] <= ipc.EXPENSIVE_LIMIT
        assert stats["expensive_now"] == stats["expensive_rejected"] == 0
        pids = {body["pid"] for _, _, body in responses}
        assert master not in pids and len(pids) <= 4

        # 2. The permits are shared with any process that opens the semaphore:
        # with both held here, /expensive gets none in time.
        with contextlib.closing(ctipc.Semaphore(names["expensive"], create=False)) as sem:
            assert sem.acquire(timeout=DEADLINE) and sem.acquire(timeout=DEADLINE)
            try:
                responses.append(request(server.url, "/expensive", 2_000, wait=0.2))
                assert responses[-1][1] == 503
            finally:
                sem.release(2)
        responses.append(request(server.url, "/expensive", 2_001, wait=DEADLINE, work=0))
        assert responses[-1][1] == 200
        assert server.get_json("/stats")["expensive_rejected"] == 1

        # 3. SIGKILL the worker that holds the Lock, while 4 threads send requests.
        # What is exact: a sync worker serves one request at a time, so the
        # victim takes exactly one request with it, the slow one, killed while
        # it holds the lock after counting itself and before sending its
        # event.  Every other request is answered (by another worker or by the
        # replacement) once the next acquirer takes the lock over.  So the
        # counter is the responses plus one, the aggregator gets exactly the
        # responses' events, and one number, the slow request's, is nowhere.
        slow_id = 3_000
        slow: list[object] = []
        load_errors: list[BaseException] = []
        answered = threading.Event()

        def background_load() -> None:
            def path_and_signal(k: int) -> str:
                if k == 5:
                    answered.set()  # some of the load got through
                return "/hit"

            try:
                load(server.url, 4, 30, 4_000, responses, path_and_signal)
            except BaseException as e:
                load_errors.append(e)

        def slow_request() -> None:
            try:  # holds the lock for 10 s, unless killed
                slow.append(request(server.url, "/hit", slow_id, work=10))
            except OSError as e:
                slow.append(e)

        loader = threading.Thread(target=background_load)
        slower = threading.Thread(target=slow_request)
        loader.start()
        try:
            assert answered.wait(DEADLINE), "the load got no answer"
            slower.start()
            with contextlib.closing(ctipc.SharedMemory(names["stats"], create=False)) as shm:
                deadline = time.monotonic() + DEADLINE
                while ipc.read_stats(shm)["holder_request"] != slow_id:
                    assert time.monotonic() < deadline, "the slow request never took the lock"
                    slower.join(0.005)  # a pause that ends if the request does
                    assert slower.is_alive(), f"the slow request ended: {slow}"
                holder = ipc.read_stats(shm)["holder_pid"]
            assert holder != master and os.getpgid(holder) == master  # a worker of ours
            os.kill(holder, signal.SIGKILL)
        finally:
            slower.join(REQUEST_TIMEOUT)
            loader.join(REQUEST_TIMEOUT * 2)
        assert not slower.is_alive() and not loader.is_alive(), "requests hung"
        if load_errors:
            raise load_errors[0]
        assert len(slow) == 1 and isinstance(slow[0], OSError), f"not cut off: {slow}"

        # gunicorn replaces the killed worker; requests go on being served.
        server.wait_for_log(r"Booting worker with pid", count=5)
        load(server.url, 4, 10, 5_000, responses)
        assert [s for i, s, _ in responses if i >= 3_000 and s != 200] == []
        stats = server.get_json("/stats")
        # The killed request was counted (it held the lock after counting) and
        # got no response: exactly one number went to no response.
        check_exact(responses, stats["requests"], lost=1)
        assert stats["takeovers"] == 1
        assert stats["holder_pid"] == stats["holder_request"] == stats["expensive_now"] == 0
        assert "took the stats lock over from a holder that died" in server.log()
        if ctipc.SEMAPHORE_VALUE_READABLE:  # no permit was lost
            with contextlib.closing(ctipc.Semaphore(names["expensive"], create=False)) as sem:
                assert sem.value == ipc.EXPENSIVE_LIMIT

        assert server.stop() == 0, server.log()
        log = server.log()
    assert "Traceback" not in log, log
    got = check_report(report, responses)
    assert got["by_status"] == {"200": len(responses) - 1, "503": 1}
    check_gone(
        [
            (ctipc.Lock, names["stats"]),
            (ctipc.SharedMemory, names["stats"]),
            (ctipc.Semaphore, names["expensive"]),
            (ctipc.MessageQueue, names["events"]),
        ]
    )


def wait_for_workers(server: Server, count: int) -> None:
    """Wait until ``count`` uvicorn workers have answered /ping.

    Each spawned worker rebuilds the listening socket from the file descriptor
    it is sent.  On PyPy that clears O_NONBLOCK on the one open file that all
    the workers share (PyPy issue 3051), so a worker that is serving already
    can block in accept() until another connection comes.  Once every worker
    serves, each has set it back (asyncio's create_server); until then each
    probe gives up quickly, and the next one's connection ends such a wait.
    """
    deadline = time.monotonic() + START_DEADLINE
    pids: set[int] = set()
    while True:
        with contextlib.suppress(OSError):
            status, text = http_get(server.url + "/ping", timeout=1.0)
            if status == 200:
                pids.add(json.loads(text)["pid"])
        if len(pids) >= count:
            return
        server.pause(deadline, f"answering from {count} workers (only {sorted(pids)})")


def test_uvicorn_workers_share_counter_and_events(
    tmp_path: Path, new_name: Callable[..., str]
) -> None:
    pytest.importorskip("uvicorn")
    prefix = new_name()
    names = {"stats": new_name(f"{prefix}-stats"), "events": new_name(f"{prefix}-events")}
    report = tmp_path / "events.json"
    env = child_env(EXAMPLE_IPC_PREFIX=prefix)
    aggregator_cmd = [sys.executable, str(UVICORN_APP / "aggregator.py"), "--report", str(report)]
    uvicorn_cmd = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(UVICORN_APP)]
    uvicorn_cmd += ["--host", "127.0.0.1", "--port", "0", "--workers", "2", "--no-access-log"]
    responses: list[Response] = []

    with running(aggregator_cmd, env, tmp_path / "aggregator.log") as aggregator:
        aggregator.wait_for_log("aggregator ready")
        with running(uvicorn_cmd, env, tmp_path / "uvicorn.log") as server:
            server.listen(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
            wait_for_workers(server, 2)

            # 1. Load: 300 /hit from 4 threads.
            load(server.url, 4, 75, 1_000, responses)
            assert [s for _, s, _ in responses if s != 200] == []
            check_exact(responses, server.get_json("/stats")["requests"], lost=0)
            pids = {body["pid"] for _, _, body in responses}
            assert server.proc.pid not in pids and len(pids) <= 2

            # 2. The event loop is not blocked while a request waits for the
            # Lock: its worker answers /ping meanwhile, and says it waits.
            waiting: list[Response] = []
            with contextlib.closing(ctipc.Lock(names["stats"], create=False)) as lock:
                assert lock.acquire(timeout=DEADLINE)
                waiter = threading.Thread(
                    target=lambda: waiting.append(request(server.url, "/hit", 2_000))
                )
                waiter.start()
                try:
                    deadline = time.monotonic() + 10.0  # within the app's LOCK_TIMEOUT
                    while server.get_json("/ping")["waiting"] == 0:
                        assert time.monotonic() < deadline, "no worker answered while waiting"
                    assert waiting == []  # still waiting
                finally:
                    lock.release()
                    waiter.join(REQUEST_TIMEOUT)
            assert not waiter.is_alive()
            assert len(waiting) == 1 and waiting[0][1] == 200
            responses += waiting
            check_exact(responses, server.get_json("/stats")["requests"], lost=0)

            assert server.stop() == 0, server.log()
        # Every worker has exited: the aggregator takes what is left, and reports.
        assert aggregator.stop() == 0, aggregator.log()
        logs = server.log() + aggregator.log()
    assert "Traceback" not in logs, logs
    check_report(report, responses)
    check_gone(
        [
            (ctipc.Lock, names["stats"]),
            (ctipc.SharedMemory, names["stats"]),
            (ctipc.MessageQueue, names["events"]),
        ]
    )
