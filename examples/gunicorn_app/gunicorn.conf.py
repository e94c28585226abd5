"""gunicorn settings and hooks for app.py.

    gunicorn -c examples/gunicorn_app/gunicorn.conf.py [-b 127.0.0.1:8000]

The master opens the shared objects when it is ready (before it forks the
first worker) and keeps them open until it exits, so the counters live as long
as the server, whatever happens to the workers.  It also starts the
aggregator: a separate interpreter that knows nothing but the queue's name.
At exit, once every worker is gone, it tells the aggregator to finish, waits
for it, and closes its objects: the last process out removes them.

Environment: ``EXAMPLE_IPC_PREFIX`` (names of the objects, default
``gunicorn-app``), ``EXAMPLE_EVENTS_REPORT`` (a file where the aggregator
writes its report as JSON; it prints a summary in any case).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # ipc.py, app.py

import ipc  # noqa: E402

wsgi_app = "app:app"
pythonpath = HERE
bind = "127.0.0.1:8000"
workers = 4
worker_class = "sync"
# A request may wait up to LOCK_TIMEOUT for the lock: well within the heartbeat.
timeout = 60
graceful_timeout = 15
# gunicorn >= 25.1 also serves a control socket at one fixed path per user,
# which two servers on one machine would fight over; this example needs none.
control_socket_disable = True

#: seconds the master waits for the aggregator to report at exit
AGGREGATOR_TIMEOUT = 15.0

_master: dict[str, Any] = {}  # what the master keeps from when_ready to on_exit


# The hooks' ``server`` is gunicorn's Arbiter, ``worker`` one of its Worker objects.


def when_ready(server) -> None:
    shared = ipc.Shared(ipc.prefix())
    cmd = [sys.executable, os.path.join(HERE, "aggregator.py"), ipc.names(ipc.prefix())["events"]]
    report = os.environ.get("EXAMPLE_EVENTS_REPORT")
    if report:
        cmd += ["--report", report]
    # A new interpreter, not a fork: it opens the queue by its name alone.
    aggregator = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    _master.update(shared=shared, aggregator=aggregator)
    server.log.info("ctipc objects %r ready; aggregator pid %s", ipc.prefix(), aggregator.pid)


def worker_exit(server, worker) -> None:
    app = sys.modules.get("app")  # None if the worker failed to import it
    if app is not None:
        app.close_shared()


def on_exit(server) -> None:
    shared = _master.pop("shared", None)
    aggregator = _master.pop("aggregator", None)
    if shared is None or aggregator is None:
        return
    try:
        # Every worker has exited: all their events are in the queue, before this one.
        shared.events.put(json.dumps({"stop": True}).encode(), timeout=AGGREGATOR_TIMEOUT)
        try:
            aggregator.wait(AGGREGATOR_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.log.error("the aggregator did not finish in %s s: killed", AGGREGATOR_TIMEOUT)
            aggregator.kill()
            aggregator.wait(AGGREGATOR_TIMEOUT)
    finally:
        shared.close()
