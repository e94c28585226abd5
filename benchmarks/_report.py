"""Tables, ratios, the project's targets, JSON and the optional plot.

Only ratios of runs made side by side mean much on a shared machine: every
ratio is computed per repeat (ctipc's run and the peer's run of the same
repeat), then summarised as median [min–max] over the repeats.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Entry:
    label: str
    run: Callable[[], dict]
    note: str = ""
    results: list[dict | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wrong_data: int = 0  # runs whose received messages were wrong


@dataclass
class Case:
    workload: str
    param: str
    metric: str  # key of the result dict that the ratios compare
    higher_better: bool
    reference: str  # the ctipc row the ratios divide by
    entries: list[Entry]
    extra: tuple[str, ...] = ()  # further columns from the result dict

    def entry(self, label: str) -> Entry | None:
        return next((e for e in self.entries if e.label == label), None)


UNITS = {
    "msg_s": "msg/s", "MB_s": "MB/s", "p50_us": "p50 µs", "p99_us": "p99 µs",
    "ns_op": "ns/op", "copy_GB_s": "GB/s", "write_GB_s": "write GB/s",
    "read_GB_s": "read GB/s", "cpu_ms_per_s": "CPU ms/s", "mapped_KiB": "mapped KiB",
    "rss_KiB": "RSS KiB", "fds": "fds",
}  # fmt: skip


def values(e: Entry, key: str) -> list[float]:
    return [r[key] for r in e.results if r is not None]


def ratios(case: Case, a: str, b: str, key: str | None = None) -> list[float]:
    """a ÷ b for each repeat in which both ran."""
    ea, eb = case.entry(a), case.entry(b)
    if ea is None or eb is None:
        return []
    key = key or case.metric
    return [
        ra[key] / rb[key]
        for ra, rb in zip(ea.results, eb.results)
        if ra is not None and rb is not None and rb[key]
    ]


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return _fmt(xs[0])
    return f"{_fmt(statistics.median(xs))} [{_fmt(min(xs))}–{_fmt(max(xs))}]"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "loadavg": [round(x, 2) for x in load] if load else None,
    }  # fmt: skip


def print_header(info: dict[str, Any], versions: dict[str, str], skipped: dict[str, str],
                 command: str) -> None:  # fmt: skip
    print(f"ctipc benchmark suite — {info['date']}")
    print(f"  machine: {info['cpu']}, {info['cores']} cores; load average {info['loadavg']}")
    print(f"  OS: {info['os']}; Python: {info['python']}")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for label, why in skipped.items():
        print(f"  skipped {label}: {why}")
    print(f"  command: {command}")
    print()


def print_case(case: Case, repeats: int) -> None:
    better = "higher" if case.higher_better else "lower"
    unit = UNITS.get(case.metric, case.metric)
    print(f"== {case.workload} · {case.param}  ({unit}, {better} is better; "
          f"ratio = {case.reference} ÷ row, median [min–max] of {repeats})")  # fmt: skip
    head = ["", unit, *(UNITS.get(x, x) for x in case.extra), "ratio", "note"]
    rows = [head]
    for e in case.entries:
        if not e.results:
            continue
        cells = [e.label, summary(values(e, case.metric))]
        cells += [summary(values(e, x)) for x in case.extra]
        r = ratios(case, case.reference, e.label)
        cells.append(summary(r) if e.label != case.reference else "1")
        note = e.note
        if e.errors:
            note = f"FAILED {len(e.errors)}×: {e.errors[0]}" + (f"; {note}" if note else "")
        cells.append(note)
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    for r in rows:
        line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                         enumerate(zip(r, widths)))  # fmt: skip
        print(("  " + line + "  " + r[-1]).rstrip())
    print()
    sys.stdout.flush()


def _best_peer(case: Case, polling: bool = True) -> str | None:
    """The peer with the best median; ``polling=False`` leaves out the ones
    whose consumer spins on a core instead of sleeping (``-poll``)."""
    peers = [
        e
        for e in case.entries
        if not e.label.startswith("ctipc")
        and values(e, case.metric)
        and (polling or not e.label.endswith("-poll"))
    ]
    if not peers:
        return None
    pick = max if case.higher_better else min
    return pick(peers, key=lambda e: statistics.median(values(e, case.metric))).label


def targets(cases: list[Case]) -> list[dict[str, Any]]:
    """The project's goals, each with the measured ratio (median) or value."""
    found = {(c.workload, c.param): c for c in cases}
    out: list[dict[str, Any]] = []

    def add(goal: str, where: tuple[str, str], a: str, b: str | None, cmp: str,
            limit: float) -> None:  # fmt: skip
        case = found.get(where)
        if case is None:
            return
        if b in ("fastest", "fastest sleeping"):
            b = _best_peer(case, polling=b == "fastest")
        if b is None:  # an absolute goal on a's median
            xs = values(case.entry(a), case.metric) if case.entry(a) else []
        else:
            xs = ratios(case, a, b)
        if not xs:
            out.append({"goal": goal, "versus": b, "value": None, "met": None})
            return
        med = statistics.median(xs)
        met = med >= limit if cmp == ">=" else med <= limit
        out.append({"goal": goal, "versus": b, "value": med, "min": min(xs), "max": max(xs),
                    "met": met})  # fmt: skip

    add("64 B put/get ≥ 1.5× posix_ipc MQ", ("throughput", "64 B"), "ctipc", "posix_ipc.MQ",
        ">=", 1.5)  # fmt: skip
    add("64 B put/get ≥ 1.3× fastest peer", ("throughput", "64 B"), "ctipc", "fastest", ">=", 1.3)
    add("64 B put/get ≥ 1.3× fastest peer whose consumer sleeps", ("throughput", "64 B"),
        "ctipc", "fastest sleeping", ">=", 1.3)  # fmt: skip
    add("64 B put/get ≥ 5× mp.Queue", ("throughput", "64 B"), "ctipc", "mp.Queue", ">=", 5)
    add("put_many/get_many ≥ 2× faster_fifo batch", ("batch", "64 B"), "ctipc-batch",
        "faster_fifo-batch", ">=", 2)  # fmt: skip
    add("64 KiB put/get ≥ 2× fastest peer", ("throughput", "64 KiB"), "ctipc", "fastest",
        ">=", 2)  # fmt: skip
    add("64 KiB put/get ≥ 2× fastest peer whose consumer sleeps", ("throughput", "64 KiB"),
        "ctipc", "fastest sleeping", ">=", 2)  # fmt: skip
    add("64 KiB zero-copy ≥ 2× fastest peer", ("throughput", "64 KiB"), "ctipc-zc", "fastest",
        ">=", 2)  # fmt: skip
    add("1 MiB zero-copy ≥ 1.5× iceoryx2", ("throughput", "1 MiB"), "ctipc-zc", "iceoryx2",
        ">=", 1.5)  # fmt: skip
    add("1 MiB put/get ≥ 1.5× iceoryx2 (no such goal: for comparison)", ("throughput", "1 MiB"),
        "ctipc", "iceoryx2", ">=", 1.5)  # fmt: skip
    add("ping-pong p50 ≤ iceoryx2's (ratio ≤ 1)", ("pingpong", "64 B"), "ctipc", "iceoryx2",
        "<=", 1)  # fmt: skip
    add("ping-pong p50 ≤ busy-polling iceoryx2's", ("pingpong", "64 B"), "ctipc",
        "iceoryx2-poll", "<=", 1)  # fmt: skip
    add("fan-in 4→1 put_many ahead of pyzmq", ("fanin", "4→1, 64 B"), "ctipc-batch", "pyzmq",
        ">=", 1)  # fmt: skip
    add("fan-in 4→1 put ≥ 1.2× sysv_ipc MQ", ("fanin", "4→1, 64 B"), "ctipc", "sysv_ipc.MQ",
        ">=", 1.2)  # fmt: skip
    add("uncontended semaphore ≤ 4.5× posix_ipc's time", ("sem-uncontended", "in-process"),
        "ctipc.Semaphore", "posix_ipc.Semaphore", "<=", 4.5)  # fmt: skip
    add("semaphore ping-pong p50 ≤ 10 µs", ("sem-pingpong", "2 processes"), "ctipc.Semaphore",
        None, "<=", 10)  # fmt: skip
    return out


def print_targets(found: list[dict[str, Any]]) -> None:
    print("== targets (median of the per-repeat ratios, ctipc ÷ peer)")
    for t in found:
        if t["value"] is None:
            status, value = "n/a ", "not measured"
        else:
            status = "MET " if t["met"] else "MISS"
            value = f"{_fmt(t['value'])} [{_fmt(t['min'])}–{_fmt(t['max'])}]"
        versus = f" (vs {t['versus']})" if t["versus"] else ""
        print(f"  {status} {t['goal']}{versus}: {value}")
    print()


def to_json(path: str, info: dict[str, Any], versions: dict[str, str],
            skipped: dict[str, str], argv: list[str], cases: list[Case],
            found: list[dict[str, Any]]) -> None:  # fmt: skip
    data = {
        "machine": info, "versions": versions, "skipped": skipped, "argv": argv,
        "cases": [
            {"workload": c.workload, "param": c.param, "metric": c.metric,
             "higher_better": c.higher_better, "reference": c.reference,
             "rows": [
                 {"label": e.label, "note": e.note, "runs": e.results, "errors": e.errors,
                  "median": statistics.median(values(e, c.metric))
                  if values(e, c.metric) else None,
                  "ratio": ratios(c, c.reference, e.label)}
                 for e in c.entries if e.results]}
            for c in cases],
        "targets": found,
    }  # fmt: skip
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def plot(path: str, cases: list[Case]) -> str | None:
    """Median rates and latencies as bar charts; a reason if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib does not import ({e})"
    shown = [c for c in cases if c.workload in ("throughput", "fanin", "batch", "pingpong")]
    if not shown:
        return "no plot: none of throughput, fanin, batch, pingpong ran"
    bars = sum(1 + sum(1 for e in c.entries if values(e, c.metric)) for c in shown)
    heights = [1 + sum(1 for e in c.entries if values(e, c.metric)) for c in shown]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.0 + 0.3 * bars),
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    axes = [axes] if len(shown) == 1 else list(axes)
    for ax, case in zip(axes, shown):
        rows = [(e.label, statistics.median(values(e, case.metric)))
                for e in case.entries if values(e, case.metric)]  # fmt: skip
        labels = [r[0] for r in rows]
        colors = ["tab:blue" if x.startswith("ctipc") else "tab:gray" for x in labels]
        ax.barh(labels, [r[1] for r in rows], color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{case.workload} · {case.param}", fontsize=9)
        ax.set_xlabel(
            UNITS.get(case.metric, case.metric)
            + ("" if case.higher_better else " (lower is better)")
        )
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
