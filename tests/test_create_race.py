"""Creation under kills: processes released at once on a new name while the
creator is SIGKILLed right after ``shm_open`` (before it could take the
segment's lock) all end up on one object, and none gets CorruptedError or
FileExistsError with ``create=None``.

The waiters run with a short stale timeout and pause between ``shm_open``
and taking the lock when they create, so that the windows a removal by name
alone would hit are open in almost every round.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import pytest
from helpers import HAVE_DEV_SHM, Child, entries_of

pytestmark = pytest.mark.skipif(not HAVE_DEV_SHM, reason="needs POSIX shared memory files")

ROUNDS = 24
WAITERS = 3

_SETUP = """\
import json, random
import importlib
from ctipc import _posix

def short_stale(seconds):
    for module in ("ctipc._named", "ctipc._segment"):
        try:
            module = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(module, "STALE_INIT_AFTER"):
            module.STALE_INIT_AFTER = seconds

def open_object(kind, name):
    if kind == "Lock":
        return ctipc.Lock(name)
    return ctipc.MessageQueue(name, capacity=4096, max_message=64)

def identity(obj):
    st = os.fstat(obj._core.seg.fd)
    return [st.st_dev, st.st_ino]
"""

_VICTIM = (
    _SETUP
    + """\
kind, name = sys.argv[1], sys.argv[2]

def create_and_die(os_name, size, mode, timeout):
    # what a creator does first, then SIGKILL before anything else
    _posix._shm_fd(os_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    os.kill(os.getpid(), signal.SIGKILL)

_posix.segment_create = create_and_die
out("ready")
inp()
obj = open_object(kind, name)  # another creator won the race: attached
out(json.dumps({"ok": identity(obj)}))
inp()
obj.close()
"""
)

_WAITER = (
    _SETUP
    + """\
short_stale(0.05)
real_lock = _posix.segment_lock

def slow_lock(seg, timeout):
    # A creator between shm_open and its lock (the segment is still empty)
    # is sometimes slow: longer than the stale timeout.
    if seg.size == 0 and random.random() < 0.5:
        time.sleep(random.uniform(0.0, 0.08))
    return real_lock(seg, timeout)

_posix.segment_lock = slow_lock
out("ready")
while True:
    line = inp()
    if line == "quit":
        break
    kind, name = line.split()
    try:
        obj = open_object(kind, name)
    except Exception as e:
        out(json.dumps({"error": repr(e)}))
        continue
    out(json.dumps({"ok": identity(obj)}))
    inp()
    obj.close()
    out("closed")
"""
)


@pytest.mark.parametrize("kind", ["MessageQueue", "Lock"])
def test_a_killed_creator_and_racing_waiters_end_on_one_object(
    kind: str, new_name: Callable[..., str]
) -> None:
    names = [new_name() for _ in range(ROUNDS)]
    waiters = [Child(_WAITER) for _ in range(WAITERS)]
    problems: list[str] = []
    try:
        for w in waiters:
            w.expect("ready")
        end = time.monotonic() + 120
        for i, name in enumerate(names):
            if time.monotonic() > end:
                break
            with Child(_VICTIM, kind, name) as victim:
                victim.expect("ready")
                # Released at once (one line each through their pipes).
                victim.send("go")
                for w in waiters:
                    w.send(f"{kind} {name}")
                results = [json.loads(w.readline(timeout=30)) for w in waiters]
                victim.close_stdin()
                victim_rc = victim.wait()
                if victim_rc == 0:
                    pass  # it lost the race to create and attached like the others
                seen = {tuple(r["ok"]) for r in results if "ok" in r}
                errors = [r["error"] for r in results if "error" in r]
                if errors or len(seen) != 1:
                    problems.append(f"round {i}: {len(seen)} objects, errors {errors}")
                for w, r in zip(waiters, results):
                    if "ok" in r:
                        w.send("close")
                        w.expect("closed")
            if not problems and entries_of(name):
                problems.append(f"round {i}: left {entries_of(name)}")
        for w in waiters:
            w.send("quit")
            w.finish()
    finally:
        for w in waiters:
            w.close()
        for name in names:
            for entry in entries_of(name):
                problems.append(f"left {entry}")
        _remove(names)
    assert not problems, "\n".join(problems)


def _remove(names: list[str]) -> None:
    from ctipc import _segment

    for name in names:
        for kind in _segment.KINDS.values():
            try:
                _segment.unlink_by_name(kind, name)
            except OSError:
                pass
