"""A Lock's holder dies: the next user learns it, whatever else happened.

Every process is a spawned interpreter; each case runs on the robust-mutex
path and on the flock path (``CTIPC_EMULATE=macos``), the two POSIX ways of
keeping the promise.  (On Windows a named mutex dies with its last handle,
and with it the fact: docs/locks.md.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import DEADLINE, HAVE_DEV_SHM, HAVE_SIGKILL, Child, child_env, header_path

import ctipc
from ctipc._backend import os_backend

pytestmark = [
    pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here"),
    pytest.mark.skipif(os_backend.KERNEL_LIFETIME, reason="objects die with their handles"),
    pytest.mark.skipif(not HAVE_DEV_SHM, reason="checks /dev/shm"),
]

MODES = {"robust": {}, "flock": {"CTIPC_EMULATE": "macos"}}


@pytest.fixture(params=sorted(MODES))
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "robust" and not os_backend.ROBUST_MUTEX:
        pytest.skip("no robust mutex here")
    return MODES[request.param]


HOLD_THEN_WAIT = """
    lock = ctipc.Lock(sys.argv[1])
    assert lock.acquire(timeout=5)
    if sys.argv[2] == "release":
        lock.release()
    out("ready")
    inp()
"""

TAKE = """
    lock = ctipc.Lock(sys.argv[1])
    ok = lock.acquire(timeout=5)
    out(ok, lock.owner_died, lock.locked())
    lock.release()
    out(lock.locked())
    lock.close()
"""


def _gone(name: str) -> bool:
    return not os.path.exists(header_path(ctipc.Lock, name))


def _cli(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-W", "error", "-m", "ctipc", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=DEADLINE,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _killed_holder(name: str, env: dict[str, str], then: str = "hold") -> None:
    with Child(HOLD_THEN_WAIT, name, then, **env) as a:
        a.expect("ready")
        a.kill()
        a.wait()


def _take(name: str, env: dict[str, str]) -> str:
    with Child(TAKE, name, **env) as b:
        first = b.readline()
        assert b.readline() == "False"
        b.finish()
    return first


def test_owner_died_survives_when_the_dead_holder_was_the_only_user(
    name: str, env: dict[str, str]
) -> None:
    _killed_holder(name, env)
    if not env:  # (listing is what the emulated macOS path lacks)
        # gc keeps it (the fact outlives the Lock's users), and ls shows it
        _cli(env, "gc")
        listing = _cli(env, "ls")
        assert name in listing, listing
    assert not _gone(name)
    assert _take(name, env) == "True True True"
    # the user who was told closed it: gone, as any Lock whose users left
    assert _gone(name)


def test_a_lock_released_before_its_only_user_died_is_removed(
    name: str, env: dict[str, str]
) -> None:
    _killed_holder(name, env, then="release")
    if not env:
        _cli(env, "gc")
        assert _gone(name)
    assert _take(name, env) == "True False True"
    assert _gone(name)


TAKEOVER = """
    lock = ctipc.Lock(sys.argv[1], create=False)
    out("waiting")
    ok = lock.acquire(timeout=10)
    died = lock.owner_died
    lock.release()
    lock.close()
    out(ok, died)
"""


def test_the_last_closer_removes_the_lock_after_a_takeover(name: str, env: dict[str, str]) -> None:
    """A holds, B waits, A is killed, B takes it over, releases and closes at
    once (A may still be exiting): the Lock is gone, every round."""
    for _ in range(8):
        with Child(HOLD_THEN_WAIT, name, "hold", **env) as a:
            a.expect("ready")
            with Child(TAKEOVER, name, **env) as b:
                b.expect("waiting")
                assert b.silent_for(0.05)  # (usually) blocked in acquire
                a.kill()
                assert b.readline() == "True True"
                b.finish()
            a.wait()
        assert _gone(name)
