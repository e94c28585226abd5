"""``python -m ctipc ls | rm | gc | demo | bench``, run as real subprocesses.

The objects are held by separate interpreters (``Child``); the command line
is another process again, so it sees them only through the OS.  ``ls`` and
``gc`` see the whole machine: the tests look only at rows with their own
unique names (other ctipc users may have objects of their own).
"""

from __future__ import annotations

import ast
import json
import os
import re
import select
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import pytest
from helpers import (
    CHILD_PIDS,
    DEADLINE,
    HAVE_DEV_SHM,
    HAVE_SIGKILL,
    Child,
    child_env,
    entries_of,
    exists,
    header_os_name,
)

import ctipc
from ctipc._backend import os_backend

needs_listing = pytest.mark.skipif(not os_backend.CAN_LIST, reason="the OS cannot list objects")
needs_names = pytest.mark.skipif(
    bool(os_backend.KERNEL_LIFETIME), reason="objects cannot be removed by name here"
)
pytestmark = [needs_listing]

COLUMNS = ["KIND", "NAME", "SIZE", "MSGS", "PROCS", "DEAD", "PERSIST", "STATE"]


class Run(NamedTuple):
    pid: int
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, timeout: float = DEADLINE) -> Run:
    """Run ``python -m ctipc ARGS`` to completion (warnings are errors)."""
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "ctipc", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
        encoding="utf-8",
    )
    CHILD_PIDS.add(proc.pid)  # what it creates (demo) is this session's
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"python -m ctipc {' '.join(args)} did not finish in {timeout} s:\n{err}")
    assert "Traceback" not in err, err
    return Run(proc.pid, proc.returncode, out, err)


def ok(*args: str, timeout: float = DEADLINE) -> str:
    result = cli(*args, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ls_rows(name: str) -> list[dict[str, str]]:
    """The rows of ``ls`` (the table) for objects called ``name``."""
    lines = ok("ls").splitlines()
    if lines == ["no ctipc objects"]:
        return []
    assert lines[0].split() == COLUMNS
    rows = [dict(zip(COLUMNS, line.split())) for line in lines[1:]]
    assert all(len(r) == len(COLUMNS) for r in rows), lines
    return [r for r in rows if r["NAME"] == name]


def ls_json(name: str) -> dict[str, dict[str, Any]]:
    """``ls --json`` entries for objects called ``name``, by kind."""
    entries = json.loads(ok("ls", "--json"))
    assert isinstance(entries, list)
    return {e["kind"]: e for e in entries if e["name"] == name}


HOLD = """
objs = []
for spec in sys.argv[1:]:  # KIND:NAME
    kind, _, name = spec.partition(":")
    if kind == "SharedMemory":
        objs.append(ctipc.SharedMemory(name, 100))
    elif kind == "MessageQueue":
        objs.append(ctipc.MessageQueue(name, capacity=8192, max_message=1024))
    else:
        objs.append(getattr(ctipc, kind)(name))
out("ready")
inp()
for obj in objs:
    obj.close()
out("closed")
"""


def hold(name: str, kinds: str) -> list[str]:
    """Arguments for HOLD: objects of ``kinds`` (comma-separated) called ``name``."""
    return [f"{kind}:{name}" for kind in kinds.split(",")]


ALL = "Semaphore,Lock,SharedMemory,MessageQueue"


def test_ls_shows_objects_another_process_holds(name: str) -> None:
    with Child(HOLD, *hold(name, ALL)) as holder:
        holder.expect("ready")
        rows = {r["KIND"]: r for r in ls_rows(name)}
        assert sorted(rows) == sorted(ALL.split(","))
        for row in rows.values():
            assert int(row["PROCS"]) >= 1
            assert (row["DEAD"], row["PERSIST"], row["STATE"]) == ("0", "no", "ok")
        assert rows["SharedMemory"]["SIZE"] == "100"
        assert rows["MessageQueue"]["SIZE"] == "8192"

        entries = ls_json(name)
        assert sorted(entries) == sorted(ALL.split(","))
        cls_of = {c.__name__: c for c in (ctipc.Semaphore, ctipc.Lock)}
        cls_of.update(SharedMemory=ctipc.SharedMemory, MessageQueue=ctipc.MessageQueue)
        for kind, e in entries.items():
            assert set(e) == {
                "kind", "name", "os_name", "size", "processes", "dead", "persistent", "state",
                "messages",
            }  # fmt: skip
            assert e["os_name"] == header_os_name(cls_of[kind], name)
            assert e["processes"] == 1  # the holder, nobody else
            assert (e["dead"], e["persistent"], e["state"]) == (0, False, "ok")
        assert entries["SharedMemory"]["size"] == 100
        assert entries["MessageQueue"]["size"] == 8192
        assert entries["MessageQueue"]["messages"] == 0  # the holder put none
        assert {e["messages"] for k, e in entries.items() if k != "MessageQueue"} == {None}

        holder.send()
        holder.expect("closed")
        holder.finish()
    assert ls_rows(name) == []
    assert ls_json(name) == {}


@needs_names
def test_rm_removes_by_name_and_kind(name: str) -> None:
    with Child(HOLD, *hold(name, "Semaphore,SharedMemory")) as holder:
        holder.expect("ready")

        out = ok("rm", "--kind", "Semaphore", name)
        assert out.splitlines() == [f"removed Semaphore {name!r}"]
        assert not exists(ctipc.Semaphore, name)
        assert exists(ctipc.SharedMemory, name)  # another kind: kept

        result = cli("rm", "--kind", "Semaphore", name)
        assert result.returncode == 1
        assert f"no object called {name!r}" in result.stderr
        assert result.stdout == ""

        out = ok("rm", name)
        assert out.splitlines() == [f"removed SharedMemory {name!r}"]
        assert not exists(ctipc.SharedMemory, name)
        assert ls_rows(name) == []
        if HAVE_DEV_SHM:
            assert entries_of(name) == []

        result = cli("rm", name)
        assert result.returncode == 1
        assert f"no object called {name!r}" in result.stderr
        assert result.stdout == ""

        # The holder still has them mapped; it closes without error.
        holder.send()
        holder.expect("closed")
        holder.finish()


@needs_names
def test_rm_every_kind_of_a_name(name: str) -> None:
    with Child(HOLD, *hold(name, ALL)) as holder:
        holder.expect("ready")
        out = ok("rm", name)
        assert sorted(out.splitlines()) == sorted(f"removed {k} {name!r}" for k in ALL.split(","))
        assert ls_json(name) == {}
        holder.send()
        holder.expect("closed")
        holder.finish()


@needs_names
@pytest.mark.skipif(not ctipc.PERSISTENT_SUPPORTED, reason="no persistent objects here")
def test_rm_removes_a_persistent_object_nobody_holds(name: str) -> None:
    ctipc.SharedMemory(name, 64, persistent=True).close()
    (entry,) = ls_rows(name)
    assert (entry["PROCS"], entry["PERSIST"], entry["STATE"]) == ("0", "yes", "ok")
    ok("gc")  # persistent: never collected
    assert exists(ctipc.SharedMemory, name)
    assert ok("rm", name).splitlines() == [f"removed SharedMemory {name!r}"]
    assert not exists(ctipc.SharedMemory, name)


@pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")
def test_gc_removes_the_objects_of_killed_processes(new_name: Callable[..., str]) -> None:
    dead, alive = new_name(), new_name()
    kept = "Semaphore,SharedMemory"
    with Child(HOLD, *hold(alive, kept)) as keeper:
        keeper.expect("ready")
        # The victim holds all of `dead` alone, and `alive` with the keeper.
        with Child(HOLD, *hold(dead, ALL), *hold(alive, kept)) as victim:
            victim.expect("ready")
            victim.kill()  # SIGKILL: nothing closed
        if HAVE_DEV_SHM:
            assert entries_of(dead), "the killed process's objects are not in /dev/shm"
        stale = ls_json(dead)
        assert sorted(stale) == sorted(ALL.split(","))
        for e in stale.values():
            assert (e["processes"], e["dead"], e["state"]) == (0, 1, "stale")
        for e in ls_json(alive).values():
            assert (e["processes"], e["dead"], e["state"]) == (1, 1, "ok")

        out = ok("gc").splitlines()
        for kind in ALL.split(","):
            assert any(line.startswith(f"removed {kind} {dead!r} (") for line in out), out
        assert not any(repr(alive) in line for line in out), out
        assert out[-1].endswith(" object(s) removed")
        assert int(out[-1].split()[0]) >= 4

        assert ls_json(dead) == {}
        if HAVE_DEV_SHM:
            assert entries_of(dead) == []
            assert entries_of(alive)
        kept_entries = ls_json(alive)
        assert sorted(kept_entries) == ["Semaphore", "SharedMemory"]
        for e in kept_entries.values():  # the dead holder's slot was cleared
            assert (e["processes"], e["dead"], e["state"]) == (1, 0, "ok")
        for cls in (ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory, ctipc.MessageQueue):
            assert not exists(cls, dead)

        keeper.send()
        keeper.expect("closed")
        keeper.finish()
    if HAVE_DEV_SHM:
        assert entries_of(alive) == []


def test_demo() -> None:
    proc = cli("demo", "--workers", "2", "--rounds", "50", "--messages", "2000", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout.splitlines()[-1], proc.stdout
    assert "FAILED" not in proc.stdout
    if HAVE_DEV_SHM:  # its objects (named demo<pid>-...) are gone with it
        for part in ("state", "lock", "slots", "events"):
            assert entries_of(f"demo{proc.pid}-{part}") == []


@pytest.mark.skipif(sys.platform == "win32", reason="no pseudo-terminals")
def test_demo_shows_its_progress_on_a_terminal_only() -> None:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "ctipc", "demo", "--workers", "2",
         "--rounds", "300", "--messages", "200000"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    CHILD_PIDS.add(proc.pid)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the demo closed the terminal (it ended)
                    break
                if not data:
                    break
                chunks.append(data)
        assert proc.wait(timeout=DEADLINE) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    text = b"".join(chunks).decode()
    assert "\r  " in text and " job reports, " in text, text
    assert "OK" in text.splitlines()[-1]
    # and on a pipe, no progress lines (test_demo's output)
    piped = cli("demo", "--workers", "1", "--rounds", "20", "--messages", "1000", timeout=60)
    assert "\r" not in piped.stdout and " job reports, " not in piped.stdout


def test_bench_quick() -> None:
    proc = cli("bench", "--quick", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7, proc.stdout
    assert lines[0].startswith(f"ctipc {ctipc.__version__} bench: ") and "(quick)" in lines[0]
    number = r"[0-9][0-9,]*(\.[0-9]+)?"
    load = r"(\d+\.\d\d \d+\.\d\d \d+\.\d\d \(1, 5, 15 min\)( \(busier .*\))?|not available here)"
    assert re.fullmatch(rf"load average before: {load}", lines[1]), lines[1]
    assert re.fullmatch(rf"load average after:  {load}", lines[6]), lines[6]
    for line, pattern in zip(
        lines[2:6],
        [
            rf"put/get, 64 B, 1 -> 1 process: +{number} msg/s",
            rf"put_many/get_many, 64 B, batch 64: +{number} msg/s",
            rf"ping-pong round trip, 64 B: +p50 {number} us, p99 {number} us",
            rf"Lock acquire \+ release, uncontended: +{number} ns",
        ],
    ):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert proc.stderr == ""  # progress lines only when stdout is a terminal
    if HAVE_DEV_SHM:  # its objects (named bench<pid>-...) are gone with it
        for part in ("p", "b", "ping", "pong", "lock"):
            assert entries_of(f"bench{proc.pid}-{part}") == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nosuch"],
        ["rm"],
        ["rm", "--kind", "Bogus", "x"],
        ["ls", "--bogus"],
        ["gc", "extra"],
        ["demo", "--workers", "two"],
        ["demo", "--workers", "0"],
        ["demo", "--workers", "-1"],
        ["demo", "--workers", "257"],
        ["demo", "--rounds", "0"],
        ["demo", "--rounds", "0", "--messages", "0"],
        ["demo", "--messages", "-1"],
        ["demo", "--messages", "1.5"],
        ["bench", "--bogus"],
    ],
    ids=lambda a: " ".join(a) or "no command",
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2, result
    assert "usage:" in result.stderr
    assert result.stdout == ""


@needs_names
@pytest.mark.parametrize("bad", ["a/b", "x" * 256])
def test_rm_of_an_invalid_name_exits_1(bad: str) -> None:
    result = cli("rm", bad)
    assert result.returncode == 1
    assert result.stderr.startswith("ctipc: name must")


def test_version() -> None:
    assert ok("--version") == f"ctipc {ctipc.__version__}\n"


@pytest.mark.parametrize("command", ["", "ls", "rm", "gc", "demo", "bench"])
def test_help_describes_every_command_and_its_defaults(command: str) -> None:
    text = ok(*([command] if command else []), "--help")
    assert text.startswith("usage: python -m ctipc"), text
    assert "``" not in text and ":class:" not in text  # plain words, not a docstring's markup
    # a description paragraph after the usage lines
    assert re.search(r"\n\n[A-Z][a-z]+ [^\n]*(\n[^\n]+)*\.\n", text), text
    if not command:
        for name in ("ls", "rm", "gc", "demo", "bench", "--version"):
            assert re.search(rf"^ +{name} ", text, re.M), (name, text)
    if command == "demo":
        for default in ("(default: 4)", "(default: 2000)", "(default: 50000)"):
            assert default in " ".join(text.split()), text
    if command == "rm":
        assert "(default: every kind)" in text


def test_demo_argument_errors_say_what_is_allowed() -> None:
    result = cli("demo", "--workers", "0")
    assert "argument --workers: must be 1 to 256, not 0" in result.stderr
    assert result.stdout == ""  # refused before any process or object was made


#: unusual names, around a unique part ``{}``: blanks and control characters,
#: and quotes, which ``ls`` must show so that ``rm`` cannot misread them
WEIRD = ["{} weird\tname", "'{}'", '"{}"', "{}'s", "'{}", "\u00e9t\u00e9 {}", "{}\\x20"]


@needs_names
@pytest.mark.parametrize("pattern", WEIRD, ids=range(len(WEIRD)))
def test_rm_accepts_the_name_as_ls_shows_it(new_name: Callable[..., str], pattern: str) -> None:
    text = new_name(pattern.format(new_name()))
    with Child(HOLD, *hold(text, "Lock")) as holder:
        holder.expect("ready")
        rows = [line.split() for line in ok("ls").splitlines()[1:]]
        (shown,) = [row[1] for row in rows if row[0] == "Lock" and read_back(row[1]) == text]
        if text != text.strip("'\"") or " " in text or "\t" in text:
            assert shown[0] in "'\"" and " " not in shown, shown
        assert ok("rm", shown).splitlines() == [f"removed Lock {text!r}"]
        assert not exists(ctipc.Lock, text)
        holder.send()
        holder.expect("closed")
        holder.finish()


def read_back(shown: str) -> str:
    """The name a NAME cell of ``ls`` stands for: a quoted cell is a Python literal."""
    if shown[:1] in ("'", '"'):
        value = ast.literal_eval(shown)
        assert isinstance(value, str)
        return value
    return shown
