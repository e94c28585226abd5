"""Receive every worker's events from the queue, by its name, and sum them up.

    python examples/gunicorn_app/aggregator.py QUEUE_NAME [--report FILE]

gunicorn.conf.py starts it; it shares nothing with the server but the name.
It stops at the ``{"stop": true}`` event that the master puts once every
worker has exited (so every event is in before it), or when its parent dies.
Then it prints a summary and, with ``--report``, writes the events' ids,
numbers and counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import ctipc

#: seconds between two looks at whether the parent (gunicorn's master) is alive
POLL = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue")
    parser.add_argument("--report", help="write the report to this file (JSON)")
    args = parser.parse_args()

    parent = os.getppid()
    events: list[dict] = []
    # create=False: the master created the queue and keeps it open meanwhile.
    with ctipc.MessageQueue(args.queue, create=False) as q:
        while True:
            try:
                messages = q.get_many(100, timeout=POLL)
            except ctipc.Empty:
                if os.getppid() != parent:  # orphaned: the master was killed
                    break
                continue
            decoded = [json.loads(m) for m in messages]
            if any(e.get("stop") for e in decoded):
                events += [e for e in decoded if not e.get("stop")]
                break
            events += decoded
    report = {
        "events": len(events),
        "ids": sorted(e["id"] for e in events),
        "numbers": sorted(e["n"] for e in events),
        "by_path": dict(Counter(e["path"] for e in events)),
        "by_status": {str(k): v for k, v in Counter(e["status"] for e in events).items()},
        "by_pid": {str(k): v for k, v in Counter(e["pid"] for e in events).items()},
    }
    print(
        f"aggregator: {report['events']} events from {len(report['by_pid'])} workers, "
        f"by path {report['by_path']}, by status {report['by_status']}",
        file=sys.stderr,
        flush=True,
    )
    if args.report:
        tmp = args.report + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f)
        os.replace(tmp, args.report)  # readers never see half a report
    return 0


if __name__ == "__main__":
    sys.exit(main())
