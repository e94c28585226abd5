"""Tables, ratios, JSON and the optional plot.

Only ratios of runs made side by side mean much on a shared machine: every
ratio is computed per repeat (ctipc's run and the peer's run of the same
repeat), then summarised as median [min–max] over the repeats.
"""

from __future__ import annotations

import importlib
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
    skipped: str = ""  # why this peer cannot run this cell here (it runs no more)


@dataclass
class Case:
    workload: str
    param: str
    metric: str  # key of the result dict that the ratios compare
    higher_better: bool
    reference: str  # the ctipc row the ratios divide by
    entries: list[Entry]
    extra: tuple[str, ...] = ()  # further columns from the result dict
    baseline: str | None = None  # a further ratio column: row ÷ this peer

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


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}–{fmt(max(xs))}]"


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
                 command: str, limits: list[str]) -> None:  # fmt: skip
    print(f"ctipc benchmark suite — {info['date']}")
    print(f"  machine: {info['cpu']}, {info['cores']} cores; load average {info['loadavg']}")
    print(f"  OS: {info['os']}; Python: {info['python']}")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for line in limits:
        print(f"  limits: {line}")
    for label, why in skipped.items():
        print(f"  skipped {label}: {why}")
    print(f"  command: {command}")
    print()


def print_case(case: Case, repeats: int) -> None:
    better = "higher" if case.higher_better else "lower"
    unit = UNITS.get(case.metric, case.metric)
    print(f"== {case.workload} · {case.param}  ({unit}, {better} is better; "
          f"ratio = {case.reference} ÷ row, median [min–max] of {repeats})")  # fmt: skip
    head = ["", unit, *(UNITS.get(x, x) for x in case.extra), "ratio"]
    baseline = case.baseline if case.baseline and case.entry(case.baseline) else None
    if baseline:
        head.append(f"row ÷ {baseline}")
    rows = [[*head, "note"]]
    for e in case.entries:
        if not e.results and not e.skipped:
            continue
        cells = [e.label, summary(values(e, case.metric))]
        cells += [summary(values(e, x)) for x in case.extra]
        r = ratios(case, case.reference, e.label)
        cells.append(summary(r) if e.label != case.reference else "1")
        if baseline:
            cells.append(summary(ratios(case, e.label, baseline)))
        note = e.note
        if e.errors:
            note = f"FAILED {len(e.errors)}×: {e.errors[0]}" + (f"; {note}" if note else "")
        cells.append(f"skipped: {e.skipped}" if e.skipped else note)
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                         enumerate(zip(row, widths)))  # fmt: skip
        print(("  " + line + "  " + row[-1]).rstrip())
    print()
    sys.stdout.flush()


def to_json(path: str, info: dict[str, Any], versions: dict[str, str],
            skipped: dict[str, str], argv: list[str], cases: list[Case],
            found: list[dict[str, Any]], limits: list[str]) -> None:  # fmt: skip
    data = {
        "machine": info, "versions": versions, "skipped": skipped, "argv": argv,
        "limits": limits,
        "cases": [
            {"workload": c.workload, "param": c.param, "metric": c.metric,
             "higher_better": c.higher_better, "reference": c.reference,
             "baseline": c.baseline,
             "rows": [
                 {"label": e.label, "note": e.note, "runs": e.results, "errors": e.errors,
                  "skipped": e.skipped or None,
                  "median": statistics.median(values(e, c.metric))
                  if values(e, c.metric) else None,
                  "ratio": ratios(c, c.reference, e.label),
                  "vs_baseline": ratios(c, e.label, c.baseline) if c.baseline else None}
                 for e in c.entries if e.results or e.skipped]}
            for c in cases],
        "targets": found,
    }  # fmt: skip
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def plot(path: str, cases: list[Case]) -> str | None:
    """Median rates and latencies as bar charts; a reason if matplotlib is missing."""
    try:
        # imported by name: an optional extra that the type check does not
        # follow (matplotlib's own sources need a newer Python than 3.9)
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
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
