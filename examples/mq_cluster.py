"""The node_ipc cluster example in Python: workers publish, the master listens.

    python examples/mq_cluster.py [--workers N] [--messages M] [--name events]

The master creates the queue and listens; it starts N worker processes
(separate interpreters: they share nothing with the master but the queue's
name), each of which establishes the queue by name and publishes M
messages.  The master prints every message and exits when all arrived.
Written with ``ctipc.compat``, the addon's flat API (mq_create, mq_listen,
mq_establish, mq_publish, process_exit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading

from ctipc import compat


def worker(name: str, number: int, messages: int) -> None:
    index = compat.mq_establish(name)
    for i in range(messages):
        compat.mq_publish(index, f"worker {number} (pid {os.getpid()}): message {i}")
    compat.process_exit()


def master(name: str, workers: int, messages: int) -> int:
    expected = workers * messages
    received: list[str] = []
    all_arrived = threading.Event()

    def on_message(text: str) -> None:
        received.append(text)
        print(text, flush=True)
        if len(received) == expected:
            all_arrived.set()

    index = compat.mq_create(name)
    compat.mq_listen(on_message, index)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(n),
                "--name",
                name,
                "--messages",
                str(messages),
            ]
        )  # fmt: skip
        for n in range(workers)
    ]
    try:
        ok = all_arrived.wait(timeout=60)
    finally:
        for p in procs:
            if p.wait(timeout=60) != 0:
                ok = False
        compat.process_exit()
    print(f"master: {len(received)} of {expected} messages from {workers} workers")
    return 0 if ok and len(received) == expected else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=f"events-{os.getpid()}")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.name, args.worker, args.messages)
        return 0
    return master(args.name, args.workers, args.messages)


if __name__ == "__main__":
    sys.exit(main())
