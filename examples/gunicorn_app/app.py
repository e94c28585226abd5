"""A WSGI app whose gunicorn workers share a counter, a limit and an event stream.

    gunicorn -c examples/gunicorn_app/gunicorn.conf.py

Each worker process opens the objects of ``ipc.py`` by name the first time it
needs them (after gunicorn forked it: objects are never used across a fork).

``/hit?id=N``
    Count the request in the shared counter, under the shared Lock; answer
    ``{"n": <its number>, "pid": <worker>}``.  ``&work=S`` holds the lock for S
    seconds (at most 10) after counting, as a slow critical section would.
``/expensive?id=N``
    Count it, then take one of the ``EXPENSIVE_LIMIT`` permits of the shared
    Semaphore, waiting ``&wait=S`` seconds (default 5, at most 30), and work
    ``&work=S`` seconds (default 0.05, at most 10) holding it.  503 if no permit
    came in time.
``/stats``
    The counters as JSON (not counted).

Every counted request puts one JSON event on the queue before it answers:
``{"id", "n", "pid", "path", "status"}``.  The aggregator that
gunicorn.conf.py starts receives them all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Any, Callable

import ipc  # beside this file

import ctipc

log = logging.getLogger("gunicorn.error")

_shared: ipc.Shared | None = None
_shared_guard = threading.Lock()
#: seconds a request waits for room in the events queue (the aggregator is down)
PUT_TIMEOUT = 5.0


def shared() -> ipc.Shared:
    """This process's objects, opened on first use (again in a forked child)."""
    global _shared
    with _shared_guard:
        if _shared is None or _shared.pid != os.getpid():
            _shared = ipc.Shared(ipc.prefix())
        return _shared


def close_shared() -> None:
    """Close this process's objects (gunicorn.conf.py calls it as a worker exits)."""
    global _shared
    with _shared_guard:
        if _shared is not None and _shared.pid == os.getpid():
            _shared.close()
        _shared = None


def _seconds(query: dict[str, list[str]], key: str, default: float, most: float) -> float:
    try:
        value = float(query[key][0])
    except (KeyError, ValueError):
        return default
    return min(max(value, 0.0), most)


def _count(s: ipc.Shared, request_id: int, work: float = 0.0) -> int:
    """Add this request to the counter; its number."""
    with s.locked() as stats:
        stats["requests"] += 1
        if work:
            log.info("request %s holds the stats lock for %s s", request_id, work)
            # Visible to monitors (and to whoever wants to kill the holder)
            # while the lock is held.
            stats["holder_pid"], stats["holder_request"] = os.getpid(), request_id
            s.store(stats)
            time.sleep(work)
            stats["holder_pid"] = stats["holder_request"] = 0
        return stats["requests"]


def _expensive(s: ipc.Shared, wait: float, work: float) -> bool:
    """Do the work holding a permit; False if none came within ``wait``."""
    if not s.expensive.acquire(timeout=wait):
        with s.locked() as stats:
            stats["expensive_rejected"] += 1
        return False
    try:
        with s.locked() as stats:
            stats["expensive_now"] += 1
            stats["expensive_peak"] = max(stats["expensive_peak"], stats["expensive_now"])
        time.sleep(work)  # the expensive part
        with s.locked() as stats:
            stats["expensive_now"] -= 1
    finally:
        s.expensive.release()
    return True


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "/")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    try:
        request_id = int(query["id"][0])
    except (KeyError, ValueError):
        request_id = 0
    s = shared()
    status = "200 OK"
    try:
        if path == "/stats":
            body: dict[str, Any] = s.snapshot()
        elif path == "/hit":
            n = _count(s, request_id, _seconds(query, "work", 0.0, 10.0))
            body = {"n": n, "pid": os.getpid()}
        elif path == "/expensive":
            n = _count(s, request_id)
            wait = _seconds(query, "wait", 5.0, 30.0)
            if not _expensive(s, wait, _seconds(query, "work", 0.05, 10.0)):
                status = "503 Service Unavailable"
            body = {"n": n, "pid": os.getpid()}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if path != "/stats":
            event = {"id": request_id, "n": n, "pid": os.getpid(), "path": path}
            event["status"] = int(status.split()[0])
            s.events.put(json.dumps(event).encode(), timeout=PUT_TIMEOUT)
    except ipc.Busy as e:
        status, body = "503 Service Unavailable", {"error": str(e)}
    except ctipc.Full:
        status, body = "503 Service Unavailable", {"error": "the events queue stayed full"}
    data = json.dumps(body).encode() + b"\n"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
