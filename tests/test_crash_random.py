"""SIGKILL at random moments, many rounds: producers inside put/put_many/
reserve, consumers inside get/get_many/receive, Lock holders.

Each test runs a rig (``_crashrig``): separate interpreters on one queue,
Lock and SharedMemory.  In every round the victim is killed after a random
amount of its own progress, so the kill lands anywhere in its loop; the
survivors must then make progress within a generous deadline (a wedge
fails the test), and the victim is started again.  At the end every message
is accounted for from the participants' tables (``_crashkit``): none
damaged or made up; each one whose put returned delivered exactly once, or,
for plain get/get_many, at most once with the missing ones bounded by what
the killed consumers can have taken (docs/crash.md).

Also: a pid that was reused cannot make a dead process look alive.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import pytest
from _crashkit import L_HOLDING
from _crashrig import Key, Rig
from helpers import (
    DEADLINE,
    HAVE_DEV_SHM,
    HAVE_SIGKILL,
    Child,
    child_env,
    exists,
    header_path,
)

import ctipc
from ctipc import _header

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_SIGKILL or sys.platform == "win32", reason="needs SIGKILL and POSIX"
    ),
]

ROUNDS = 8


def _kill_rounds(rig: Rig, victim: Key, rounds: int, rng: random.Random) -> list[dict[str, Any]]:
    """Kill ``victim`` ``rounds`` times at random moments; after each kill
    every survivor must go on.  What each kill found, for the caller."""
    found = []
    for _ in range(rounds):
        rig.wait_ready(victim)
        rig.wait_progress(victim, rig.progress(victim) + rng.randrange(0, 150))
        rig.kill(victim)
        slot = rig.layout.slot(*victim)
        found.append({"holding": rig.w[slot + L_HOLDING] if victim[0] == "locker" else 0})
        for key in rig.keys():
            if key != victim:
                rig.wait_progress(key, rig.progress(key))
        rig.start(victim)
    return found


def _check_messages(f: dict[str, Any], rig: Rig) -> None:
    context = f"{f}\n{rig.log_tail()}"
    assert f["failures"] == [], context
    assert f["corrupted"] == f["fabricated"] == f["reordered"] == 0, context
    assert f["duplicated"] == 0, context
    assert f["lost"] == 0, context
    assert f["committed"] > 0, context


@pytest.mark.parametrize("mode", ["put", "put_many", "reserve"])
def test_producers_killed_inside_put(name: str, mode: str) -> None:
    rng = random.Random(f"{mode}1")
    with Rig(name, producers=[mode, "mixed"], consumers=["get"], seed=rng.getrandbits(32)) as rig:
        rig.start_all()
        _kill_rounds(rig, ("producer", 0), ROUNDS, rng)
        rig.stop()
        f = rig.analyze()
        _check_messages(f, rig)
    assert f["kills"].get("producer") == ROUNDS
    assert f["missing"] == 0  # no consumer was killed: exactly once


@pytest.mark.parametrize("mode", ["get", "get_many", "receive"])
def test_consumers_killed_inside_get(name: str, mode: str) -> None:
    rng = random.Random(f"{mode}2")
    # a receive that handles each message for a while: most kills land inside it
    victim = "receive_slow" if mode == "receive" else mode
    with Rig(
        name, producers=["mixed", "put"], consumers=[victim, mode], seed=rng.getrandbits(32)
    ) as rig:
        rig.start_all()
        _kill_rounds(rig, ("consumer", 0), ROUNDS, rng)
        rig.stop()
        f = rig.analyze()
        _check_messages(f, rig)
    assert f["kills"].get("consumer") == ROUNDS
    if mode == "receive":
        # at least once: nothing missing; a redelivery only after a kill
        assert f["missing"] == 0, f
        assert 1 <= f["redelivered"] <= ROUNDS, f
    else:
        # at most once: a kill takes at most the messages its call returned
        assert f["taken by killed consumers"] == f["missing"] <= rig.taken_bound, f


def test_lock_holders_killed_at_random_moments(name: str) -> None:
    rng = random.Random(3)
    with Rig(
        name, producers=[], consumers=[], lockers=["hold", "lock"], seed=rng.getrandbits(32)
    ) as rig:
        rig.start_all()
        found = []
        for _ in range(ROUNDS):
            before = rig.analyze()["lock recoveries"]
            (kill,) = _kill_rounds(rig, ("locker", 0), 1, rng)
            told = rig.analyze()["lock recoveries"] - before
            # the survivor's next acquire took the Lock over; a victim killed
            # between acquire and its flag (or flag and release) held it too
            assert told in (0, 1)
            if kill["holding"]:
                assert told == 1, "the next holder was not told that the holder died"
            found.append((kill["holding"], told))
        rig.stop()
        f = rig.analyze()
    assert f["failures"] == [] and f["lock timeouts"] == 0, f
    assert f["lock torn unnoticed"] == 0, f
    assert f["lock torn and repaired"] <= f["lock recoveries"] <= ROUNDS, f
    assert any(holding for holding, _ in found), f"no kill found the Lock held: {found}"


# -- pid reuse -------------------------------------------------------------------------

_CREATE_AND_WAIT = """
    shm = ctipc.SharedMemory(sys.argv[1], 64, create=True)
    shm.write(b"first", 0)
    out("ready")
    inp()
"""


def _forge_slots(name: str, slots: list[tuple[int, int]]) -> None:
    """Write (pid, start token) into the first attach slots of SharedMemory
    ``name`` (docs/FORMAT.md section 6), in this process's pid namespace."""
    ns = _header.this_process()[2]
    with open(header_path(ctipc.SharedMemory, name), "r+b") as f:
        for i, (pid, token) in enumerate(slots):
            f.seek(_header.SLOT_OFFSET + i * _header.SLOT.size)
            f.write(_header.SLOT.pack(pid, 1, token, ns, 0))


def _gc() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ctipc", "gc"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.skipif(not (HAVE_DEV_SHM and sys.platform.startswith("linux")), reason="Linux")
@pytest.mark.parametrize("noticed_by", ["gc", "open"])
def test_a_reused_pid_does_not_keep_a_dead_object_alive(name: str, noticed_by: str) -> None:
    """The only user was killed, and its slot now shows a pid that is alive
    (this process, and pid 1) but with another start time, as when the pid
    has been given to a new process: the object counts as unused."""
    from ctipc._backend import os_backend

    with Child(_CREATE_AND_WAIT, name) as child:
        child.expect("ready")
        child.kill()
    me, init = os.getpid(), 1
    my_token, init_token = os_backend.process_token(me), os_backend.process_token(init)
    assert my_token and init_token, "start times cannot be read here"
    # A control first: the right start time keeps it (the test can fail).
    _forge_slots(name, [(me, my_token)])
    assert not any(repr(name) in line for line in _gc())
    assert exists(ctipc.SharedMemory, name)
    # Now the same live pids with the start times of processes long gone.
    _forge_slots(name, [(me, my_token + 1), (init, init_token + 7)])
    if noticed_by == "gc":
        removed = [line for line in _gc() if repr(name) in line]
        assert removed and removed[0].startswith(f"removed SharedMemory {name!r}"), removed
        assert not exists(ctipc.SharedMemory, name)
    else:
        with pytest.raises(FileNotFoundError):
            ctipc.SharedMemory(name, create=False)
        with ctipc.SharedMemory(name, 64) as fresh:  # a new object, not the old one
            assert fresh.read(0, 5) == bytes(5)
