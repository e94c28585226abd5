"""Command line: ``python -m ctipc {ls,rm,gc,demo,bench}``."""

from __future__ import annotations

import argparse
import json
import sys

from . import _admin, _bench, _demo
from ._backend import os_backend as _os
from ._segment import KINDS


def _ls(args: argparse.Namespace) -> int:
    if not _os.CAN_LIST:
        print(f"ctipc: {_os.PLATFORM} cannot list shared-memory objects", file=sys.stderr)
        return 2
    infos = _admin.list_objects()
    if args.json:
        json.dump([i.as_dict() for i in infos], sys.stdout, indent=2)
        print()
        return 0
    if not infos:
        print("no ctipc objects")
        return 0
    rows = [("KIND", "NAME", "SIZE", "MSGS", "PROCS", "DEAD", "PERSIST", "STATE")]
    for i in infos:
        # a name that would break the columns (empty, blanks, control
        # characters) is shown as a Python string literal, blanks escaped too
        plain = i.name and i.name.isprintable() and " " not in i.name
        name = i.name if plain else repr(i.name)
        name = name.replace(" ", "\\x20")
        rows.append(
            (i.kind, name, str(i.size), "-" if i.messages is None else str(i.messages),
             str(i.processes), str(i.dead),
             "yes" if i.persistent else "no", i.state)
        )  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed = _admin.remove(args.name, [args.kind] if args.kind else None)
    if not removed:
        print(f"ctipc: no object called {args.name!r}", file=sys.stderr)
        return 1
    for kind in removed:
        print(f"removed {kind} {args.name!r}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    if not _os.CAN_LIST:
        print(f"ctipc: {_os.PLATFORM} cannot list shared-memory objects", file=sys.stderr)
        return 2
    removed = _admin.collect()
    for info in removed:
        print(f"removed {info.kind} {info.name!r} ({info.os_name})")
    print(f"{len(removed)} object(s) removed")
    return 0


def _demo_cmd(args: argparse.Namespace) -> int:
    return _demo.run(workers=args.workers, rounds=args.rounds, burst=args.messages)


def _bench_cmd(args: argparse.Namespace) -> int:
    return _bench.run(quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctipc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ls", help="list the ctipc objects on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_ls)
    p = sub.add_parser("rm", help="remove the objects with this name")
    p.add_argument("name")
    kinds = sorted(kind.label for kind in KINDS.values())
    p.add_argument("--kind", choices=kinds, help="only this kind (default: every kind)")
    p.set_defaults(func=_rm)
    p = sub.add_parser("gc", help="remove objects whose processes all died")
    p.set_defaults(func=_gc)
    p = sub.add_parser("demo", help="run a multi-process demo")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2000, help="jobs per worker")
    p.add_argument("--messages", type=int, default=50_000, help="messages per worker")
    p.set_defaults(func=_demo_cmd)
    p = sub.add_parser("bench", help="measure ctipc's speed on this machine (a few seconds)")
    p.add_argument("--quick", action="store_true", help="smaller runs (under a second)")
    p.set_defaults(func=_bench_cmd)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `python -m ctipc ls | head`
        sys.stderr.close()
        return 0
    except (OSError, ValueError) as e:
        print(f"ctipc: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
