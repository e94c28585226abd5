"""A short run of benchmarks/soak.py: random SIGKILLs of producers, consumers
and Lock users on one queue and one Lock, with every message accounted for.

The figures are checked, not the timings: the stall bound only detects a
wedged queue (the soak's own target is 1 s, on a quiet machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from helpers import HAVE_SIGKILL, child_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_SIGKILL or sys.platform == "win32", reason="needs SIGKILL and POSIX"
    ),
]

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                    "soak.py")  # fmt: skip
#: a kill every 0.1 s on average (the 40 s limit only if the machine crawls)
RUN = ("--seconds", "40", "--interval", "0.1")
WEDGE = 5.0  # seconds without a delivery while messages wait: a wedged queue


def soak(name: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, SOAK, "--json", "--name", name, "--max-stall", str(WEDGE), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    figures: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == (0 if figures["ok"] else 1), proc.stderr
    return figures


def check(f: dict[str, Any], kills: int) -> None:
    assert f["failures"] == [], f
    assert f["lost"] == f["duplicated"] == f["corrupted"] == f["fabricated"] == 0, f
    assert f["reordered"] == 0, f
    assert f["lock torn unnoticed"] == f["lock timeouts"] == 0, f
    assert f["longest stall"] < WEDGE and f["longest lock wait"] < WEDGE, f
    assert f["kills total"] == kills, f
    assert sum(f["kills"].values()) + sum(f["kills during start-up"].values()) == kills, f
    assert f["committed"] > 0 and f["lock increments"] > 0, f
    assert f["ok"], f


def test_soak_with_receive(name: str) -> None:
    f = soak(name, *RUN, "--kills", "40", "--seed", "7")
    check(f, 40)
    assert f["missing"] == 0, f  # at least once
    consumer_kills = f["kills"].get("consumer", 0) + f["kills during start-up"].get("consumer", 0)
    assert f["redelivered"] <= consumer_kills, f


def test_soak_with_plain_get(name: str) -> None:
    f = soak(name, "--plain-get", *RUN, "--kills", "20", "--seed", "8")
    check(f, 20)
    assert f["taken by killed consumers"] == f["missing"], f  # at most once
