"""Receive the uvicorn workers' events with ``await q.aget()`` and sum them up.

    python examples/uvicorn_app/aggregator.py [--report FILE]

Start it before (or after) uvicorn, in its own terminal: it opens the queue
``<$EXAMPLE_IPC_PREFIX>-events`` by name (creating it if no worker has yet)
and prints ``aggregator ready``.  Stop it after uvicorn, with Ctrl-C or
SIGTERM: once every worker has exited, their events are all in the queue, and
it takes the rest before it prints its summary and, with ``--report``, writes
the events' ids, numbers and counts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import Counter
from typing import Any

from app import names, open_events  # beside this file

import ctipc


async def collect(q: ctipc.MessageQueue, events: list[dict[str, Any]]) -> None:
    while True:
        # Waits in a worker thread; cancelling it never loses a message.
        events.append(json.loads(await q.aget()))


async def aggregate() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except NotImplementedError:  # Windows: a plain handler, for Ctrl-C
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    with open_events(names()["events"]) as q:
        print("aggregator ready", flush=True)
        task = asyncio.ensure_future(collect(q, events))
        await stop.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        while True:  # what came before the stop and was not taken yet
            try:
                events.append(json.loads(q.get_nowait()))
            except ctipc.Empty:
                break
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", help="write the report to this file (JSON)")
    args = parser.parse_args()
    events = asyncio.run(aggregate())
    report = {
        "events": len(events),
        "ids": sorted(e["id"] for e in events),
        "numbers": sorted(e["n"] for e in events),
        "by_pid": {str(k): v for k, v in Counter(e["pid"] for e in events).items()},
    }
    print(f"aggregator: {report['events']} events from {len(report['by_pid'])} workers", flush=True)
    if args.report:
        tmp = args.report + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f)
        os.replace(tmp, args.report)  # readers never see half a report
    return 0


if __name__ == "__main__":
    sys.exit(main())
