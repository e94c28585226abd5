"""Soak: producers, consumers and Lock users SIGKILLed at random, every message accounted for.

    python benchmarks/soak.py [--seconds S] [--kills N] [--interval I] [--producers P]
                              [--consumers C] [--lockers L] [--plain-get] [--seed N]
                              [--json] [--progress K]

Several producers and consumers share ONE MessageQueue; Lock users add 1 to
a counter kept twice in a SharedMemory, under a ctipc.Lock.  Every one of
them is a separate interpreter.  This process, the killer, SIGKILLs one of
them at a random moment, every I seconds on average (default SECONDS / N),
whatever it is doing (putting, getting, holding the Lock, starting up), and
starts it again, until N kills or S seconds.  Then it stops the producers,
lets the consumers empty the queue, and recounts every message from the
tables the participants kept (tests/_crashkit.py explains them):

* committed: put() or put_many() returned; each must be delivered, else it
  is *lost*.  A message whose producer was killed inside its put is
  *uncertain* and may or may not be delivered;
* duplicated: delivered again without ``redelivered`` set;
* corrupted: a damaged message, or one that was never put; reordered: a
  consumer got a producer's messages out of order;
* longest stall: the longest time with messages queued, a consumer ready
  and no delivery (sampled every ~2 ms); and the longest Lock wait;
* Lock recoveries: acquires told ``owner_died``; torn and repaired: of
  those, the ones that found the two copies apart.

Consumers use ``with q.receive() as m:`` (at least once: a message whose
consumer died inside the block comes again, flagged ``m.redelivered``);
``--slow`` of them (default 1) handle each message for 0.2-1 ms inside the
block, so that kills land inside it too.
With ``--plain-get`` they use get() and get_many() (at most once): what a
killed consumer had taken is counted as "taken by killed consumers", at
most one message per kill of a get() consumer and one batch per kill of a
get_many() consumer; anything missing beyond that is lost.

Exit status 0 when nothing was lost, duplicated, corrupted or reordered, no
participant failed, and no stall exceeded --max-stall.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
try:
    import ctipc  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, os.path.dirname(HERE))

from _crashkit import PRODUCER_MODES  # type: ignore[import-not-found]  # noqa: E402
from _crashrig import Key, Rig  # type: ignore[import-not-found]  # noqa: E402


class Stall:
    """The longest time with messages queued, a consumer ready, and no delivery."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._since = time.monotonic()
        self._delivered = -1

    def sample(self, rig: Rig, now: float) -> None:
        delivered = rig.delivered()
        waiting = rig.pending() and any(rig.ready(k) for k in rig.keys("consumer"))
        if delivered != self._delivered or not waiting:
            self._since, self._delivered = now, delivered
        else:
            self.longest = max(self.longest, now - self._since)


def _victim(rig: Rig, rng: random.Random, early: float) -> Key | None:
    """A random ready participant, never the last ready one of its role
    (when the role has more), so that traffic goes on while it restarts; or,
    with probability ``early``, one that is still starting up."""
    starting = [k for k in rig.procs if not rig.ready(k)]
    if starting and rng.random() < early:
        return rng.choice(starting)
    ready = [k for k in rig.procs if rig.ready(k)]
    rng.shuffle(ready)
    for key in ready:
        role = rig.keys(key[0])
        if len(role) == 1 or sum(rig.ready(k) for k in role) > 1:
            return key
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    if args.plain_get:
        consumers = ["get" if i % 2 == 0 else "get_many" for i in range(args.consumers)]
    else:
        consumers = ["receive_slow" if i < args.slow else "receive" for i in range(args.consumers)]
    producers = [PRODUCER_MODES[i % len(PRODUCER_MODES)] for i in range(args.producers)]
    cap = args.max_seq or max(50_000, int(args.seconds * 100_000 / max(1, args.producers)))
    base = args.name or f"soak{os.getpid()}"
    interval = args.interval or args.seconds / max(1, args.kills)
    with Rig(
        base,
        producers=producers,
        consumers=consumers,
        lockers=["lock"] * args.lockers,
        cap=cap,
        capacity=args.capacity,
        max_message=args.max_message,
        seed=rng.getrandbits(32),
    ) as rig:
        rig.start_all()
        stall = Stall()
        start = now = time.monotonic()
        next_kill = start + rng.uniform(0, 2 * interval)
        kills = 0
        while now - start < args.seconds and kills < args.kills:
            for key in rig.reap_exited():
                rig.start(key)
            stall.sample(rig, now)
            if now >= next_kill:
                victim = _victim(rig, rng, args.early_kills)
                if victim is not None:
                    rig.kill(victim)
                    rig.start(victim)
                    kills += 1
                    if args.progress and kills % args.progress == 0:
                        print(f"{now - start:.0f} s: {kills} kills, {rig.delivered()} "
                              f"deliveries, longest stall {stall.longest:.3f} s",
                              file=sys.stderr, flush=True)  # fmt: skip
                next_kill = now + rng.uniform(0, 2 * interval)
            time.sleep(0.002)
            now = time.monotonic()
        running = now - start
        rig.stop()
        figures: dict[str, Any] = rig.analyze()
        if figures["failures"]:
            figures["log"] = rig.log_tail()
    figures["seconds"] = round(running, 1)
    figures["longest stall"] = round(stall.longest, 3)
    figures["longest lock wait"] = round(figures["longest lock wait"], 3)
    figures["mode"] = "plain get/get_many" if args.plain_get else "receive"
    figures["participants"] = {"producers": producers, "consumers": consumers,
                               "lockers": args.lockers}  # fmt: skip
    figures["seed"] = args.seed
    figures["kills total"] = kills
    consumer_kills = figures["kills"].get("consumer", 0) + figures["kills during start-up"].get(
        "consumer", 0
    )
    figures["ok"] = bool(
        figures["lost"] == figures["duplicated"] == figures["corrupted"] == 0
        and figures["fabricated"] == figures["reordered"] == 0
        and figures["lock torn unnoticed"] == figures["lock timeouts"] == 0
        and not figures["failures"]
        and figures["longest stall"] <= args.max_stall
        and (args.plain_get or figures["redelivered"] <= consumer_kills)
    )
    return figures


def report(f: dict[str, Any]) -> str:
    kills = f["kills"]
    by_role = ", ".join(
        f"{role} {kills.get(role, 0)}" for role in ("producer", "consumer", "locker")
    )
    early = sum(f["kills during start-up"].values())
    lines = [
        f"soak: {f['seconds']} s, seed {f['seed']}, consumers use {f['mode']}",
        f"messages: committed {f['committed']}, delivered {f['delivered']}, lost {f['lost']}, "
        f"duplicated {f['duplicated']}, corrupted {f['corrupted'] + f['fabricated']}, "
        f"reordered {f['reordered']}",
        f"  uncertain (producer killed inside its put): {f['uncertain']}, "
        f"of which delivered {f['uncertain delivered']}",
        f"  redelivered: {f['redelivered']}; taken by killed consumers: "
        f"{f['taken by killed consumers']}",
        f"kills: {sum(kills.values()) + early} ({by_role}; {early} during start-up)",
        f"longest stall: {f['longest stall']} s; longest Lock wait: {f['longest lock wait']} s",
        f"Lock: {f['lock increments']} increments, {f['lock recoveries']} recoveries "
        f"(owner_died), {f['lock torn and repaired']} torn and repaired, "
        f"{f['lock torn unnoticed']} torn unnoticed, {f['lock timeouts']} timeouts",
        f"left in the queue: waiters still registered (consumers, producers) "
        f"{f['waiters left registered']}, len() of the empty queue {f['len when empty']}",
        f"failures: {'; '.join(f['failures']) or 'none'}",
        *(
            [f"note: {f['producers finished']} producer(s) put --max-seq messages and stopped"]
            if f["producers finished"]
            else []
        ),
        "result: " + ("OK" if f["ok"] else "FAILED"),
    ]
    if "log" in f:
        lines.append(f["log"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="longest run")
    parser.add_argument("--kills", type=int, default=200, help="kills to perform")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="mean seconds between kills (default: SECONDS / N)",
    )
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--lockers", type=int, default=2)
    parser.add_argument(
        "--early-kills",
        type=float,
        default=0.05,
        help="share of kills aimed at participants still starting up",
    )
    parser.add_argument(
        "--slow",
        type=int,
        default=1,
        help="consumers that handle each message for 0.2-1 ms inside receive()",
    )
    parser.add_argument("--plain-get", action="store_true", help="get()/get_many(), no receive")
    parser.add_argument("--capacity", type=int, default=64 << 10, help="queue ring bytes")
    parser.add_argument("--max-message", type=int, default=4 << 10)
    parser.add_argument("--max-seq", type=int, default=0, help="messages per producer at most")
    parser.add_argument("--max-stall", type=float, default=1.0, help="longest stall that passes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="", help="name of the objects (default soak<pid>)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--progress", type=int, default=0, help="a line on stderr every N kills")
    args = parser.parse_args(argv)
    figures = run(args)
    print(json.dumps(figures) if args.json else report(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
