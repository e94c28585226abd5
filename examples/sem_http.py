"""Two HTTP servers sharing one named semaphore (the node_ipc scenario).

Run two of these on different ports (see examples/README.md)::

    python examples/sem_http.py 8001          # server A
    python examples/sem_http.py 8002          # server B

    curl http://127.0.0.1:8001/create          # A creates the semaphore (1 permit)
    curl http://127.0.0.1:8001/require         # A takes the only permit
    curl http://127.0.0.1:8001/require &       # blocks: no permit left ...
    curl http://127.0.0.1:8002/release         # ... until B, which never created it, releases

Endpoints (plain text, 200 on success):

``/create``   create (or open) the semaphore with one permit and keep it open.
``/require``  take a permit, waiting up to ``--timeout`` seconds (503 "timeout").
``/release``  give a permit back; a server that has not opened the semaphore yet
              opens it by name (404 if it exists nowhere).

The semaphore is called "test" as in the addon's README; ``--name`` picks
another.  A server keeps the semaphore open until it stops (SIGTERM or Ctrl-C);
the last server to close it removes it.  Standard library + ctipc only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _serve import serve  # beside this file

import ctipc


class SemaphoreState:
    """The one semaphore this process has open (or None yet)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sem: ctipc.Semaphore | None = None
        self.closed = False
        self._lock = threading.Lock()

    def get(self, create: bool) -> ctipc.Semaphore:
        """The open semaphore; open it by name first if needed.  ``create``:
        create it with one permit if it does not exist (else FileNotFoundError)."""
        with self._lock:
            if self.closed:
                raise ValueError("the server is shutting down")
            if self.sem is None:
                if create:
                    self.sem = ctipc.Semaphore(self.name, initial=1)  # open or create
                else:
                    self.sem = ctipc.Semaphore(self.name, create=False)
            return self.sem

    def close(self) -> None:
        # A request thread still blocked in acquire() gets ValueError ("closed")
        # within a fraction of a second; ctipc makes close() from another thread safe.
        with self._lock:
            self.closed = True
            sem, self.sem = self.sem, None
        if sem is not None:
            sem.close()


class Handler(BaseHTTPRequestHandler):
    server: SemServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        path = urllib.parse.urlsplit(self.path).path
        action = {
            "/create": self.create,
            "/require": self.require,
            "/release": self.release,
        }.get(path)
        if action is None:
            self.reply(404, f"unknown path {path}; use /create, /require or /release")
            return
        state = self.server.state
        try:
            action(state)
        except FileNotFoundError:
            self.reply(404, f"semaphore {state.name!r} does not exist (use /create)")
        except ValueError as e:  # closed while waiting (shutdown)
            self.reply(503, str(e))

    def create(self, state: SemaphoreState) -> None:
        state.get(create=True)
        self.reply(200, f"created or opened semaphore {state.name!r}")

    def require(self, state: SemaphoreState) -> None:
        sem = state.get(create=False)
        if sem.acquire(timeout=self.server.timeout_s):
            self.reply(200, "acquired")
        else:
            self.reply(503, "timeout")

    def release(self, state: SemaphoreState) -> None:
        sem = state.get(create=False)
        try:
            sem.release()
        except ValueError as e:
            if state.closed:
                raise
            self.reply(409, str(e))  # the semaphore's maximum value would be exceeded
            return
        self.reply(200, "released")

    def reply(self, status: int, text: str) -> None:
        body = text.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away (e.g. it gave up waiting on /require)


class SemServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: SemaphoreState, timeout_s: float) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = state
        self.timeout_s = timeout_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--name", default="test", help='semaphore name (default: "test")')
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="longest wait of /require, seconds"
    )
    args = parser.parse_args(argv)
    state = SemaphoreState(args.name)
    server = SemServer(args.port, state, args.timeout)
    serve(server, [state.close])
    return 0


if __name__ == "__main__":
    sys.exit(main())
