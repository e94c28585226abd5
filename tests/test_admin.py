"""``ls`` and ``gc`` on a machine shared with other users and with whatever
a local user planted at ctipc's names: they show what they can read, list
the rest as ``unreadable`` or ``broken``, exit 0, and remove only what is
proved dead.  Also the states ``creating`` and ``owner-died``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from typing import Any, Callable

import pytest
from helpers import DEV_SHM, HAVE_DEV_SHM, child_env, entries_of

import ctipc
from ctipc import _admin, _header, _names, _segment
from ctipc.lock import _LockKind

pytestmark = pytest.mark.skipif(not HAVE_DEV_SHM, reason="needs POSIX shared memory files")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# Runs ``python -m ctipc ARGS`` as user 65534: ctipc is imported first (the
# interpreter's own files may be unreadable to that user), then the user is
# switched, so every OS call is that user's.
_AS_NOBODY = """\
import io, json, os, sys
from contextlib import redirect_stdout
from ctipc import __main__ as cli
# what the command line may import later (3.9's argparse and gettext import
# locale lazily), while this user can still read the interpreter's files
import argparse, gettext, locale, shutil, textwrap  # noqa: F401
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
for args in json.loads(sys.argv[1]):
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            rc = cli.main(args)
    except SystemExit as e:
        rc = e.code
    except Exception as e:
        rc = repr(e)
    print(json.dumps({"args": args, "rc": rc, "out": buf.getvalue()}))
"""


def _as_nobody(*commands: list[str]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, json.dumps(list(commands))],
        capture_output=True,
        timeout=60,
        env=child_env(),
        cwd="/",
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _states(ls_json: str, os_names: set[str]) -> dict[str, str]:
    return {e["os_name"]: e["state"] for e in json.loads(ls_json) if e["os_name"] in os_names}


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as another user")
def test_ls_and_gc_of_an_ordinary_user_show_what_they_can_and_exit_0(
    new_name: Callable[..., str],
) -> None:
    private = ctipc.Lock(new_name())  # root's, 0600: unreadable for nobody
    shared = ctipc.Lock(new_name(), permissions=0o666)
    truncated = new_name()
    planted = {
        "dir": _names.os_name("l", "h", new_name()),
        "link": _names.os_name("s", "h", new_name()),
        "truncated": _names.os_name("q", "h", truncated),
    }
    os.mkdir(os.path.join(DEV_SHM, planted["dir"]))
    os.symlink("/etc/hostname", os.path.join(DEV_SHM, planted["link"]))
    with ctipc.MessageQueue(truncated, capacity=8192, max_message=64, persistent=True):
        pass
    path = os.path.join(DEV_SHM, planted["truncated"])
    os.truncate(path, _header.HEADER_SIZE + 4096)  # shorter than its header says
    os.chmod(path, 0o666)
    wanted = {
        _names.os_name("l", "h", private.name): "unreadable",
        _names.os_name("l", "h", shared.name): "ok",
        planted["dir"]: "broken",
        planted["link"]: "broken",
        planted["truncated"]: "broken",
    }
    try:
        ls, gc, ls_again = _as_nobody(["ls", "--json"], ["gc"], ["ls", "--json"])
        assert ls["rc"] == 0, ls
        assert _states(ls["out"], set(wanted)) == wanted
        assert gc["rc"] == 0, gc
        assert _states(ls_again["out"], set(wanted)) == wanted  # gc removed none
        root_ls = subprocess.run(
            [sys.executable, "-m", "ctipc", "ls", "--json"],
            capture_output=True, text=True, timeout=60, env=child_env(),
        )  # fmt: skip
        assert root_ls.returncode == 0, root_ls.stderr
        assert _states(root_ls.stdout, set(wanted)) == {**wanted, wanted_private(private): "ok"}
        assert private.acquire(timeout=5) and shared.acquire(timeout=5)  # untouched
        private.release()
        shared.release()
    finally:
        private.close()
        shared.close()
        os.rmdir(os.path.join(DEV_SHM, planted["dir"]))
        os.unlink(os.path.join(DEV_SHM, planted["link"]))
        _segment.unlink_by_name(_segment.KINDS["q"], truncated)
    assert entries_of(truncated) == []


def wanted_private(lock: ctipc.Lock) -> str:
    return _names.os_name("l", "h", lock.name)


_HOLD_AS_ROOT = """\
lock = ctipc.Lock(sys.argv[1], permissions=0o666)
assert lock.acquire(timeout=5)
out("held")
inp()
lock.release()
lock.close()
"""


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as another user")
def test_gc_by_another_user_keeps_an_object_whose_holder_lives(name: str) -> None:
    """Only proof of death reaps: a live holder of another user is alive."""
    from helpers import Child

    with Child(_HOLD_AS_ROOT, name) as holder:
        holder.expect("held")
        (gc,) = _as_nobody(["gc"])
        assert gc["rc"] == 0, gc
        assert entries_of(name) != []
        with closing(ctipc.Lock(name, permissions=0o666)) as lock:
            assert not lock.acquire(timeout=0)  # still held by the holder
        holder.send()
        holder.finish()
    assert entries_of(name) == []


def test_ls_shows_an_object_being_created_as_creating(name: str) -> None:
    """The creator has made the file and set its size but not yet written
    the header (all zeros), or not yet set the size."""
    for size in (_header.HEADER_SIZE, 0):
        os_name = _names.os_name("q", "h", name)
        fd = os.open(os.path.join(DEV_SHM, os_name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            states = {i.os_name: i.state for i in _admin.list_objects()}
            assert states[os_name] == "creating", size
        finally:
            os.close(fd)
            os.unlink(os.path.join(DEV_SHM, os_name))


def test_ls_shows_a_lock_whose_holder_died_as_owner_died_and_gc_keeps_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Lock's own test of "held by a dead holder" is the Lock's; here
    # the segment layer's use of it.
    monkeypatch.setattr(_LockKind, "abandoned_held", lambda self, seg: True)
    lock = ctipc.Lock(name, persistent=True)
    os_name = _names.os_name("l", "h", name)
    try:
        # Its only user died without closing: a slot of a dead pid.
        assert lock._core.mm is not None
        _header.unregister(lock._core.mm)
        dead = _dead_pid()
        _header.SLOT.pack_into(
            lock._core.mm, _header.SLOT_OFFSET, dead, 1, 1, _header.this_process()[2], 0
        )
        _header.set_flags(lock._core.mm, 0)  # not persistent (that was for the setup)
        states = {i.os_name: i.state for i in _admin.list_objects()}
        assert states[os_name] == "owner-died"
        assert os_name not in {i.os_name for i in _admin.collect()}
        assert entries_of(name) != []
    finally:
        lock._core.registered = False
        lock.close()
        _segment.unlink_by_name(_segment.KINDS["l"], name)
    assert entries_of(name) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
