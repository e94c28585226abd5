"""The command line: ``python -m ctipc ls | rm | gc | demo | bench`` (``--help`` for each)."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from typing import Callable

from . import __version__, _admin, _bench, _demo
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
        rows.append(
            (i.kind, _shown(i.name), str(i.size), "-" if i.messages is None else str(i.messages),
             str(i.processes), str(i.dead),
             "yes" if i.persistent else "no", i.state)
        )  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _shown(name: str) -> str:
    """``name`` as ``ls`` shows it: as it is, or, if it would break the columns
    (empty, blanks, control characters) or could be read as a quoted name, as
    a Python string literal with its blanks written ``\\x20``."""
    if name and name.isprintable() and " " not in name and name[0] not in "'\"":
        return name
    return repr(name).replace(" ", "\\x20")


def _typed_name(text: str) -> str:
    """The name ``text`` stands for on the command line: the string literal
    ``ls`` shows for an unusual name is read back; anything else is the name."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, str):
            return value
    return text


def _rm(args: argparse.Namespace) -> int:
    name = _typed_name(args.name)
    removed = _admin.remove(name, [args.kind] if args.kind else None)
    if not removed:
        print(f"ctipc: no object called {name!r}", file=sys.stderr)
        return 1
    for kind in removed:
        print(f"removed {kind} {name!r}")
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


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``, else a usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high:,}, not {value}")
        return value

    return parse


_DESCRIPTION = (
    "Inspect and clean up the ctipc objects (named semaphores, locks, shared memory and "
    "message queues) on this machine, and see ctipc work and how fast it is."
)
_U32 = 2**32 - 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctipc", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ctipc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary}. {details}".strip())

    p = command(
        "ls",
        "List the ctipc objects on this machine",
        "One row per object: kind, name, size, queued messages, live and dead processes "
        "that have it open, persistence and state (ok, creating, removed, corrupt, stale). "
        "Exit status 2 where the OS cannot list objects.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_ls)
    p = command(
        "rm",
        "Remove the objects called NAME",
        "Processes that have one open keep using it. Exit status 1 if no object had that name.",
    )
    p.add_argument("name", metavar="NAME", help="the name, or the quoted form ls shows for it")
    kinds = sorted(kind.label for kind in KINDS.values())
    p.add_argument("--kind", choices=kinds, help="remove only this kind (default: every kind)")
    p.set_defaults(func=_rm)
    p = command(
        "gc",
        "Remove the objects whose processes all died",
        "Also half-created objects whose creator died. Persistent objects and objects in "
        "use are left alone.",
    )
    p.set_defaults(func=_gc)
    p = command(
        "demo",
        "Run worker processes that coordinate through names only",
        "Each worker is a fresh interpreter that opens a Lock, a Semaphore, a SharedMemory "
        "and a MessageQueue by name; the demo checks every count and prints OK or FAILED "
        "(exit status 1).",
    )
    for flag, low, high, default, what in (
        ("--workers", 1, 256, 4, "worker processes, 1 to 256"),
        ("--rounds", 1, _U32, 2000, "jobs per worker, at least 1"),
        ("--messages", 0, _U32, 50_000, "messages each worker streams, 0 for none"),
    ):
        p.add_argument(
            flag,
            type=_int_in(low, high),
            default=default,
            metavar="N",
            help=f"{what} (default: %(default)s)",
        )
    p.set_defaults(func=_demo_cmd)
    p = command(
        "bench",
        "Measure ctipc on this machine",
        "Throughput, round trip and Lock figures between fresh processes, with the load "
        "average beside them; 4-25 s, by machine and load (--quick: 1-3 s). Exit status 1 "
        "if a message arrived wrong.",
    )
    p.add_argument("--quick", action="store_true", help="runs a tenth as long")
    p.set_defaults(func=_bench_cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
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
