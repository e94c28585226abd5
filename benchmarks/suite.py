"""ctipc next to its peers: throughput, latency, semaphores, shared memory.

    python benchmarks/suite.py [--repeats 3] [--seconds 1] [--quick] [--targets]
        [--ipc-namespace] [--only WORKLOAD,...] [--peers LABEL,...] [--json FILE]
        [--plot FILE.png]

Install the peers first (they are not ctipc's dependencies):
``pip install -e . -r benchmarks/requirements.txt`` in a virtual environment.
A peer that does not import is skipped with a note.

Every message is checked on receipt (sequence per producer, length, header
and trailer; see _msgs.py).  A run that receives wrong data is reported
as WRONG DATA, at once on stderr and in the tables, and the suite then
exits with status 1.
Each run happens in fresh worker processes and has a deadline: a worker
that hangs is killed and its run reported as failed.  A cell that a peer
cannot run here (a limit of the OS, such as RLIMIT_MSGQUEUE or
fs.mqueue.msgsize_max, or of the peer) is skipped, with the reason in its
row; the soft RLIMIT_MSGQUEUE is first raised to the hard limit (the
header says what was done).  Each repeat runs
every transport of a workload, in an order rotated from one repeat to the
next, and the report gives each figure as median [min–max] over the
repeats, with ratios ctipc ÷ peer computed within each repeat.  docs/benchmarks.md
explains the method and shows a run.

Workloads: throughput (1 -> 1 at 64 B, 1 KiB, 64 KiB, 1 MiB), batch, fanin
(4 -> 1), pingpong, sem-pingpong, sem-uncontended, shm-copy, idle,
scale-producers, scale-depth, memory.  The report ends with the targets,
each with its measured ratio and MET or MISSED; ``--targets`` runs only
what those lines need (_targets.py).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
from functools import partial
from typing import Any

import _report
import _scaling
import _targets
import _workloads as w
from _limits import private_ipc_namespace, raise_msgqueue_limit
from _msgs import DataError
from _peers import Transport
from _peers_extra import transports
from _report import Case, Entry
from _run import RunFailed, Skipped
from _sems import Sem, semaphores

WORKLOADS = (
    "throughput", "batch", "fanin", "pingpong", "sem-pingpong", "sem-uncontended",
    "shm-copy", "idle", "scale-producers", "scale-depth", "memory",
)  # fmt: skip
SIZES = ((64, "64 B", 100_000), (1024, "1 KiB", 80_000), (64 << 10, "64 KiB", 20_000),
         (1 << 20, "1 MiB", 2_000))  # messages per run at --seconds 1  # fmt: skip


def _n(base: int, args: argparse.Namespace, least: int = 10) -> int:
    return max(least, int(base * args.seconds))


def build(args: argparse.Namespace, ctx: Any, ts: list[Transport], sems: list[Sem]) -> list[Case]:
    t_out = args.timeout
    cases: list[Case] = []
    want = set(args.only)
    one_way = [t for t in ts if not t.batch]

    def entry(t: Transport, fn: Any, size: int, producers: int = 1) -> Entry:
        return Entry(t.label, fn, t.note(size), skipped=t.cannot(size, producers) or "")

    if "throughput" in want:
        for size, label, base in SIZES:
            cases.append(Case("throughput", label, "msg_s", True, "ctipc", [
                entry(t, partial(w.measure_throughput, ctx, t, size, 1, _n(base, args), t_out),
                      size) for t in one_way], extra=("MB_s",)))  # fmt: skip
    if "batch" in want:
        picked = [t for t in ts if t.label in ("ctipc", "ctipc-batch", "faster_fifo",
                                                "faster_fifo-batch")]  # fmt: skip
        cases.append(Case("batch", "64 B", "msg_s", True, "ctipc-batch", [
            entry(t, partial(w.measure_throughput, ctx, t, 64, 1, _n(200_000, args), t_out,
                             args.batch), 64) for t in picked]))  # fmt: skip
    if "fanin" in want:
        many = [t for t in ts if t.label != "ctipc-zc"]
        cases.append(Case("fanin", "4→1, 64 B", "msg_s", True, "ctipc", [
            entry(t, partial(w.measure_throughput, ctx, t, 64, 4, _n(100_000, args), t_out,
                             args.batch), 64, 4) for t in many]))  # fmt: skip
    if "pingpong" in want:
        cases.append(Case("pingpong", "64 B", "p50_us", False, "ctipc", [
            entry(t, partial(w.measure_pingpong, ctx, t, 64, _n(5000, args, 200), t_out), 64)
            for t in one_way], extra=("p99_us",)))  # fmt: skip
    if "sem-pingpong" in want:
        cases.append(Case("sem-pingpong", "2 processes", "p50_us", False, "ctipc.Semaphore", [
            Entry(s.label, partial(w.measure_sem_pingpong, ctx, s, _n(5000, args, 200), t_out))
            for s in sems if s.pingpong], extra=("p99_us",)))  # fmt: skip
    if "sem-uncontended" in want:
        cases.append(Case("sem-uncontended", "in-process", "ns_op", False, "ctipc.Semaphore", [
            Entry(s.label, partial(w.measure_sem_uncontended, ctx, s, _n(200_000, args), t_out),
                  "acquire() + release()") for s in sems],
            baseline="posix_ipc.Semaphore"))  # fmt: skip
    if "shm-copy" in want:
        size = 16 << 20
        cases.append(Case("shm-copy", "16 MiB", "copy_GB_s", True, "ctipc.SharedMemory", [
            Entry(k, partial(w.measure_shm_copy, ctx, k, size, _n(20, args, 3), t_out),
                  "private memory (the limit)" if k == "bytearray" else "")
            for k in w.SHM_KINDS], extra=("write_GB_s", "read_GB_s")))  # fmt: skip
    if "idle" in want:
        seconds = 1.0
        picked = [
            t
            for t in one_way
            if t.label in ("ctipc", "mp.Queue", "posix_ipc.MQ", "faster_fifo", "pyzmq", "iceoryx2")
        ]
        rows = [entry(t, partial(w.measure_idle, ctx, t, 64, seconds, t_out), 64)
                for t in picked]  # fmt: skip
        rows += [Entry(s.label, partial(w.measure_sem_idle, ctx, s, seconds, t_out))
                 for s in sems if s.label in ("ctipc.Semaphore", "ctipc.Lock",
                                              "posix_ipc.Semaphore", "mp.Semaphore")]  # fmt: skip
        cases.append(Case("idle", "blocked 1 s", "cpu_ms_per_s", False, "ctipc", rows))
    ctipc_rows = [t for t in ts if t.label in ("ctipc", "ctipc-batch")]
    if "scale-producers" in want:
        for p in (1, 2, 4, 8):
            cases.append(Case("scale-producers", f"{p}→1, 64 B", "msg_s", True, "ctipc", [
                entry(t, partial(w.measure_throughput, ctx, t, 64, p, _n(100_000, args), t_out,
                                 args.batch), 64, p) for t in ctipc_rows]))  # fmt: skip
    if "scale-depth" in want and ctipc_rows:
        for depth in (0, 1000, 10_000, 100_000):
            cases.append(Case("scale-depth", f"{depth:,} queued", "ns_op", False, "ctipc", [
                Entry("ctipc", partial(_scaling.measure_depth, ctx, depth, _n(50_000, args),
                                       t_out), "put + get, 64 B, one process")]))  # fmt: skip
    if "memory" in want and ctipc_rows and sys.platform.startswith("linux"):
        cases.append(Case("memory", "per object", "mapped_KiB", False, "MessageQueue", [
            Entry(k, partial(_scaling.measure_memory, ctx, k, 20, t_out), "default sizes")
            for k in _scaling.MEMORY_KINDS], extra=("rss_KiB", "fds")))  # fmt: skip
    return cases


def run_all(cases: list[Case], repeats: int, progress: bool) -> None:
    for r in range(repeats):
        for case in cases:
            k = r % max(1, len(case.entries))
            for e in case.entries[k:] + case.entries[:k]:
                if e.skipped:  # a None per repeat keeps the repeats of all rows aligned
                    e.results.append(None)
                    continue
                if progress:
                    print(f"[{r + 1}/{repeats}] {case.workload} · {case.param} · {e.label}",
                          file=sys.stderr, flush=True)  # fmt: skip
                run_one(case, e)


def run_one(case: Case, e: Entry) -> None:
    """One run of one row; whatever goes wrong is kept in the row (one line,
    no traceback) and the suite goes on."""
    try:
        e.results.append(e.run())
    except Skipped as err:
        e.results.append(None)
        e.skipped = str(err)
        print(f"  {e.label}: skipped: {err}", file=sys.stderr, flush=True)
    except DataError as err:
        e.results.append(None)
        e.errors.append("WRONG DATA: " + str(err).splitlines()[0])
        e.wrong_data += 1
        print(f"\n*** WRONG DATA from {e.label} ({case.workload} · {case.param}):"
              f" {err}\n", file=sys.stderr, flush=True)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - RunFailed, or a peer's own error in this process
        e.results.append(None)
        first = str(err).splitlines()[0] if str(err) else ""
        e.errors.append(first if isinstance(err, RunFailed) else f"{type(err).__name__}: {first}")
        print(f"  {e.label}: run failed: {e.errors[-1]}", file=sys.stderr, flush=True)


def only_targets(cases: list[Case]) -> list[Case]:
    """The tables and rows that the targets read, nothing else."""
    tables = _targets.needed()
    kept = [c for c in cases if (c.workload, c.param) in tables]
    for c in kept:
        c.entries = [e for e in c.entries if e.label in tables[c.workload, c.param]]
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="scale of each run: messages per run are sized for about this many "
                        "seconds of a typical peer (default 1)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="--seconds 0.1 --repeats 1")
    p.add_argument("--targets", action="store_true",
                   help="only the workloads, sizes and rows that the targets need")  # fmt: skip
    p.add_argument("--ipc-namespace", action="store_true",
                   help="Linux, as root: run in a private IPC namespace whose "
                        "fs.mqueue.msgsize_max is 1 MiB, so that posix_ipc can take 64 KiB "
                        "messages (the machine's setting is left alone)")  # fmt: skip
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    p.add_argument("--peers", default="", help="only these transports (substrings), "
                   "besides ctipc's own rows")  # fmt: skip
    p.add_argument("--batch", type=int, default=64, help="messages per put_many (default 64)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar charts (needs matplotlib)")
    p.add_argument(
        "--progress",
        action="store_true",
        default=sys.stderr.isatty(),
        help="a line on stderr per run (default: when stderr is a terminal)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.1, 1
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    if args.targets:
        args.only = [x for x in args.only if x in {t.workload for t in _targets.TARGETS}]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s) {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    wanted = [x.strip().lower() for x in args.peers.split(",") if x.strip()]

    def keep(label: str) -> bool:
        return label.startswith("ctipc") or not wanted or any(x in label.lower() for x in wanted)

    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    ts: list[Transport] = []
    for t in transports():
        why = t.available()
        if why:
            skipped[t.label] = why
        elif keep(t.label):
            ts.append(t)
            versions.setdefault(t.needs[0] if t.needs else t.label, t.version())
    sems: list[Sem] = []
    for s in semaphores():
        why = s.available()
        if why:
            skipped[s.label] = why
        elif keep(s.label):
            sems.append(s)
    versions = {k: v for k, v in versions.items() if v}
    limits = [raise_msgqueue_limit()]  # before build() asks the kernel what fits
    if args.ipc_namespace:  # before any queue or worker exists
        limits.append(private_ipc_namespace(1 << 20))
    ctx = multiprocessing.get_context("spawn")
    info = _report.machine()
    command = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/suite.py", *argv])
    cases = build(args, ctx, ts, sems)
    if args.targets:
        cases = only_targets(cases)
    sizes = [size for size, _, _ in SIZES] if "throughput" in args.only else [64]
    shown = {e.label for c in cases for e in c.entries}
    limits += [f"{t.label}: {t.limits(sizes)}" for t in ts if t.label in shown and t.limits(sizes)]
    _report.print_header(info, versions, skipped, command, limits)
    run_all(cases, args.repeats, args.progress)
    for case in cases:
        _report.print_case(case, args.repeats)
    found = _targets.evaluate(cases, skipped)
    _targets.print_targets(found)
    if args.json:
        _report.to_json(args.json, info, versions, skipped, argv, cases, found, limits)
    if args.plot:
        why = _report.plot(args.plot, cases)
        print(why or f"plot written to {args.plot}", file=sys.stderr if why else sys.stdout)
    cells = sum(1 for c in cases for e in c.entries if e.skipped)
    if cells:
        print(f"{cells} cell(s) skipped: a peer cannot run them here (the reason is in each row)")
    failed = sum(len(e.errors) for c in cases for e in c.entries)
    if failed:
        print(f"{failed} run(s) failed (see the notes above)")
    wrong = sorted({f"{e.label} ({c.workload} · {c.param}, {e.wrong_data}×)"
                    for c in cases for e in c.entries if e.wrong_data})  # fmt: skip
    if wrong:
        print("WRONG DATA was received from: " + "; ".join(wrong))
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
