"""Semaphores and Locks attacked from outside, in real processes: truncated
OS semaphore files, processes whose liveness /proc hides.

(The attacker has access to the objects; docs/trust.md says what such a
process can and cannot do.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from helpers import DEADLINE, DEV_SHM, HAVE_DEV_SHM, Child, child_env, semaphore_path

import ctipc
from ctipc import _names
from ctipc._backend import os_backend

needs_sem_files = pytest.mark.skipif(
    not (HAVE_DEV_SHM and os_backend.CAN_LIST), reason="semaphores are files in /dev/shm here"
)

OPEN_AND_TAKE = """
    try:
        obj = getattr(ctipc, sys.argv[2])(sys.argv[1], create=False)
        try:
            take = obj.acquire if sys.argv[2] == "Semaphore" else obj.get
            out("opened", take(timeout=0.3))
        finally:
            obj.close()
    except ctipc.CorruptedError as e:
        out("CorruptedError", sys.argv[1] in str(e))
"""


@needs_sem_files
@pytest.mark.parametrize("size", [0, 8])
def test_a_truncated_semaphore_file_is_corrupt_not_sigbus(name: str, size: int) -> None:
    sem = ctipc.Semaphore(name, initial=1)
    try:
        os.truncate(semaphore_path(name), size)
        with Child(OPEN_AND_TAKE, name, "Semaphore") as child:
            assert child.readline() == "CorruptedError True"
            child.finish()
    finally:
        sem.close()


@needs_sem_files
def test_a_truncated_wake_up_semaphore_of_a_queue_is_corrupt_not_sigbus(name: str) -> None:
    q = ctipc.MessageQueue(name, capacity=4096, max_message=64)
    try:
        path = os.path.join(DEV_SHM, "sem." + _names.os_name("q", "r", name))
        os.truncate(path, 0)
        with Child(OPEN_AND_TAKE, name, "MessageQueue") as child:
            line = child.readline()
            assert line.startswith("CorruptedError"), line
            child.finish()
    finally:
        q.close()


# -- /proc hidden (hidepid=2) -------------------------------------------------------------

HOLD = """
    lock = ctipc.Lock(sys.argv[1], permissions=0o666)
    assert lock.acquire()
    out("held")
    inp()
    lock.release()
    lock.close()
"""

# Run as user nobody, in a mount namespace of its own where /proc hides
# other users' processes: it must see the holder as alive.
AS_NOBODY = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
import ctipc  # (before the switch: nobody cannot read root's interpreter)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert not os.path.exists("/proc/%s" % sys.argv[3]), "proc is not hidden"
lock = ctipc.Lock(sys.argv[1], create=False, permissions=0o666)  # shared across users
print(lock.acquire(timeout=0.3), flush=True)
lock.close()
"""


def _can_hide_proc() -> bool:
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "getuid")
        and os.getuid() == 0
        and shutil.which("unshare") is not None
    )


@pytest.mark.skipif(not _can_hide_proc(), reason="needs root, unshare and Linux /proc")
def test_a_holder_whose_liveness_proc_hides_is_alive(name: str) -> None:
    with Child(HOLD, name) as holder:
        holder.expect("held")
        # A fresh /proc with hidepid=2 in a private mount namespace (the
        # host's /proc is untouched), then the attacker as nobody.
        script = f'mount -t proc -o hidepid=2 proc /proc && exec "{sys.executable}" -c "$0" "$@"'
        run = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, AS_NOBODY,
             name, os.path.dirname(os.path.dirname(ctipc.__file__)), str(holder.pid)],
            capture_output=True, text=True, env=child_env(), timeout=DEADLINE,
        )  # fmt: skip
        if run.returncode != 0 and "proc is not hidden" in run.stderr:
            pytest.skip("this kernel does not hide /proc here")
        assert run.returncode == 0, run.stderr
        # another user could not take the lock that a live process holds
        assert run.stdout.strip() == "False"
        holder.send()
        holder.finish()
