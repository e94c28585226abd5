"""The project's performance targets, each checked against one run of the suite.

A target compares one ctipc row with one peer's row of the same table: the
ratio ctipc ÷ peer, computed within each repeat (runs made side by side),
then its median over the repeats.  For rates (msg/s) the target is a
least ratio; for times (µs, ns) a largest one, so "within 3×" means ctipc
takes at most 3 times the peer's time.  ``--targets`` runs only the
workloads, sizes and rows these lines need.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from _report import UNITS, Case, fmt, ratios, values


@dataclass(frozen=True)
class Target:
    goal: str
    workload: str
    param: str  # the table (Case.param) within the workload
    ours: str  # the ctipc row
    peer: str
    limit: float  # least ratio for rates, largest for times

    def where(self) -> tuple[str, str]:
        return self.workload, self.param


TARGETS = (
    Target("64 B put/get, 1 → 1", "throughput", "64 B", "ctipc", "posix_ipc.MQ", 1.0),
    Target("64 B put, 4 → 1", "fanin", "4→1, 64 B", "ctipc", "sysv_ipc.MQ", 1.2),
    Target("64 B put_many/get_many", "batch", "64 B", "ctipc-batch", "faster_fifo-batch", 2.0),
    Target("64 B put_many, 4 → 1", "fanin", "4→1, 64 B", "ctipc-batch", "pyzmq", 1.0),
    Target("64 KiB put/get", "throughput", "64 KiB", "ctipc", "posix_ipc.MQ", 1.0),
    Target("64 KiB reserve/receive", "throughput", "64 KiB", "ctipc-zc", "iceoryx2", 1.0),
    Target("ping-pong p50, 64 B", "pingpong", "64 B", "ctipc", "iceoryx2-poll", 1.0),
    Target("uncontended Lock acquire+release", "sem-uncontended", "in-process", "ctipc.Lock",
           "posix_ipc.Semaphore", 3.0),
    Target("uncontended Semaphore acquire+release", "sem-uncontended", "in-process",
           "ctipc.Semaphore", "posix_ipc.Semaphore", 3.0),
)  # fmt: skip


def needed() -> dict[tuple[str, str], set[str]]:
    """The tables that the targets read, each with the rows read in it."""
    tables: dict[tuple[str, str], set[str]] = {}
    for t in TARGETS:
        tables.setdefault(t.where(), set()).update((t.ours, t.peer))
    return tables


def _missing(case: Case, label: str, unavailable: dict[str, str]) -> str | None:
    """Why ``label``'s row of ``case`` has no figure, or None if it has one."""
    if label in unavailable:
        return f"{label} unavailable: {unavailable[label]}"
    e = case.entry(label)
    if e is None:
        return f"{label} was not run (--only / --peers)"
    if e.skipped:
        return f"{label} skipped: {e.skipped}"
    if not values(e, case.metric):
        return f"{label} failed: {e.errors[0] if e.errors else 'no result'}"
    return None


def evaluate(cases: list[Case], unavailable: dict[str, str]) -> list[dict[str, Any]]:
    """Each target with its measured ratio and MET (True), MISSED (False) or
    not measured (None, with the reason)."""
    found = {(c.workload, c.param): c for c in cases}
    out = []
    for t in TARGETS:
        case = found.get(t.where())
        row: dict[str, Any] = {"goal": t.goal, "ours": t.ours, "versus": t.peer,
                               "limit": t.limit, "met": None, "value": None}  # fmt: skip
        if case is None:
            row["why"] = f"{t.workload} · {t.param} was not run"
            out.append(row)
            continue
        row["compare"] = ">=" if case.higher_better else "<="
        row["unit"] = UNITS.get(case.metric, case.metric)
        why = _missing(case, t.ours, unavailable) or _missing(case, t.peer, unavailable)
        xs = ratios(case, t.ours, t.peer)
        if why is None and not xs:
            why = "no repeat in which both ran"
        if why is not None:
            row["why"] = why
            out.append(row)
            continue
        med = statistics.median(xs)
        ours, peer = case.entry(t.ours), case.entry(t.peer)
        assert ours is not None and peer is not None
        row.update(
            value=med, min=min(xs), max=max(xs),
            met=med >= t.limit if case.higher_better else med <= t.limit,
            ours_median=statistics.median(values(ours, case.metric)),
            peer_median=statistics.median(values(peer, case.metric)),
        )  # fmt: skip
        out.append(row)
    return out


def print_targets(found: list[dict[str, Any]]) -> None:
    print("== targets (median of the per-repeat ratios ctipc ÷ peer, [min–max])")
    for r in found:
        head = f"{r['goal']}, {r['ours']} ÷ {r['versus']}"
        if r["met"] is None:
            print(f"  n/a     {head}: not measured: {r['why']}")
            continue
        status = "MET    " if r["met"] else "MISSED "
        if r["compare"] == ">=":
            want = f"at least {r['limit']:g}×"
        else:
            want = f"at most {r['limit']:g}× the time"
        spread = f"[{fmt(r['min'])}–{fmt(r['max'])}]"
        # the rows' own medians: on a noisy machine not always in the ratio's proportion
        figures = f"medians {fmt(r['ours_median'])} vs {fmt(r['peer_median'])} {r['unit']}"
        print(f"  {status} {head}: {fmt(r['value'])}× {spread} (target {want}; {figures})")
    print()
