"""Hostile environments: corrupt shared memory, a full /dev/shm, no file
descriptors left, another user's objects, and many create/close cycles.

Every scenario that could crash or hang an interpreter runs its risky part
in a separate child interpreter (``helpers.Child``), which reports one line
per step, each awaited with a deadline: a crash (negative exit code), a hang
or an unexpected exception fails the test with the step's description.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any, Callable

import pytest
from _fuzzcases import LETTER, Tally, run_batch
from helpers import (
    DEADLINE,
    DEV_SHM,
    HAVE_DEV_SHM,
    HAVE_PROC_FD,
    PACKAGE_ROOT,
    Child,
    child_env,
    entries_of,
    semaphore_path,
    shm_entries,
)

import ctipc
from ctipc import _names, _segment

pytestmark = pytest.mark.skipif(
    not (HAVE_DEV_SHM and HAVE_PROC_FD and sys.platform.startswith("linux")),
    reason="needs Linux with objects as files in /dev/shm",
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# -- 1. seeded fuzz of headers and rings --------------------------------------------

SEED = 1234
CASES = 2000
BATCH = 200


@pytest.mark.slow  # 2000 fuzzed cases, in batches of child interpreters
def test_fuzzed_headers_and_rings_never_crash_or_hang(new_name: Callable[..., str]) -> None:
    """Every case ends in correct behaviour or one of ctipc's errors, with no
    crash and no hang (the cases: ``_fuzzcases``; many more:
    ``benchmarks/fuzz.py``)."""
    tally = Tally()
    for start in range(0, CASES, BATCH):
        indices = range(start, min(start + BATCH, CASES))
        run_batch(SEED, indices, [new_name() for _ in indices], tally)
    # crashes and hangs first: they are the worst
    failures = sorted(tally.failures, key=lambda f: "died" not in f and "hung" not in f)
    assert not failures, (
        f"{len(failures)} of {CASES} cases went wrong (outcomes: {tally.classes}):\n"
        + "\n".join(failures[:25])
    )
    # the fuzz reaches both the checks and the working paths
    assert tally.outcomes.get("CorruptedError", 0) > 0 and tally.outcomes.get("OK", 0) > 0, (
        tally.outcomes
    )



#: Cases of the long fuzz (benchmarks/fuzz.py, seed 2026) that once aborted
#: the process inside glibc: a priority-protect bit or a kind that is not
#: robust written into a Lock's or a queue's mutex, then a bound try_lock.
REGRESSIONS = [(2026, 779), (2026, 4149), (2026, 7903), (2026, 9099), (2026, 16635)]


def test_fuzz_cases_that_once_crashed(new_name: Callable[..., str]) -> None:
    tally = Tally()
    for seed, index in REGRESSIONS:
        run_batch(seed, range(index, index + 1), [new_name()], tally)
    assert not tally.failures, "\n".join(tally.failures)


# -- 2. /dev/shm full -----------------------------------------------------------------


def _can_mount_private_tmpfs() -> str | None:
    """None if a private /dev/shm can be mounted here, else why not."""
    if not IS_ROOT:
        return "needs root to mount a private /dev/shm"
    if shutil.which("unshare") is None:
        return "no unshare command"
    try:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /dev/shm"],
            capture_output=True,
            timeout=DEADLINE,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if probe.returncode != 0:
        return f"cannot mount a private tmpfs: {probe.stderr.decode(errors='replace').strip()}"
    return None


_FULL_CHILD = """\
import errno, json, os, sys
sys.path.insert(0, sys.argv[1])
import ctipc

def entries():
    return sorted(os.listdir("/dev/shm"))

def expect_enospc(what, make):
    try:
        obj = make()
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise SystemExit(f"{what}: {e!r}, not ENOSPC")
    else:
        obj.close()
        raise SystemExit(f"{what}: created on a full /dev/shm")
    return entries()

report = {}
report["shm 8 MiB"] = expect_enospc("shm", lambda: ctipc.SharedMemory("big", 8 << 20))
report["queue 8 MiB"] = expect_enospc(
    "queue", lambda: ctipc.MessageQueue("bigq", capacity=8 << 20, max_message=1024))

# Fill the file system up, then every kind must fail cleanly.
fd = os.open("/dev/shm/filler", os.O_WRONLY | os.O_CREAT, 0o600)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError as e:
    assert e.errno == errno.ENOSPC, e
finally:
    os.close(fd)
for label, make in [
    ("full: Semaphore", lambda: ctipc.Semaphore("s")),
    ("full: Lock", lambda: ctipc.Lock("l")),
    ("full: SharedMemory", lambda: ctipc.SharedMemory("m", 4096)),
    ("full: MessageQueue", lambda: ctipc.MessageQueue("q", capacity=8192, max_message=64)),
]:
    report[label] = [e for e in expect_enospc(label, make) if e != "filler"]
os.unlink("/dev/shm/filler")

with ctipc.SharedMemory("small", 512 << 10) as shm:
    shm.write(b"works", (512 << 10) - 5)
    assert shm.read((512 << 10) - 5) == b"works"
with ctipc.MessageQueue("smallq", capacity=512 << 10, max_message=1024) as q:
    q.put(b"works")
    assert q.get(timeout=5) == b"works"
report["after"] = entries()
print(json.dumps(report))
"""


def test_full_dev_shm_fails_cleanly_with_enospc() -> None:
    why = _can_mount_private_tmpfs()
    if why is not None:
        pytest.skip(why)
    script = "mount -t tmpfs -o size=2m tmpfs /dev/shm && exec " + " ".join(
        shlex.quote(a) for a in [sys.executable, "-W", "error", "-c", _FULL_CHILD, PACKAGE_ROOT]
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        timeout=60,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    left = {what: entries for what, entries in report.items() if entries}
    assert left == {}, f"entries left in the private /dev/shm: {left}"


# -- 3. too many open files -------------------------------------------------------------

_EMFILE_CHILD = """\
import errno, json, resource
prefix = sys.argv[1]
fds = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (fds + 12, fds + 12))

def make(letter, name):
    if letter == "s":
        return ctipc.Semaphore(name)
    if letter == "l":
        return ctipc.Lock(name)
    if letter == "m":
        return ctipc.SharedMemory(name, 4096)
    return ctipc.MessageQueue(name, capacity=8192, max_message=64)

def entries(name):
    # stat() only: listing /dev/shm would need a descriptor
    found = []
    for kind in "slmq":
        for role in "hvrw":
            os_name = ctipc._names.os_name(kind, role, name)
            for entry in (os_name, "sem." + os_name):
                if os.path.exists("/dev/shm/" + entry):
                    found.append(entry)
    return found

for letter in "slmq":
    for spare in range(4):  # fail at different steps of a creation
        held = [os.open("/dev/null", os.O_RDONLY) for _ in range(spare)]
        objs, names, failure = [], [], None
        for i in range(64):
            name = f"{prefix}{letter}{spare}x{i}"
            names.append(name)
            try:
                objs.append(make(letter, name))
            except OSError as e:
                failure = (name, e.errno, repr(e))
                break
        half = entries(failure[0]) if failure else None
        for obj in objs:
            obj.close()
        for fd in held:
            os.close(fd)
        left = [e for n in names for e in entries(n)]
        out(json.dumps({"case": f"{letter} spare={spare}", "opened": len(objs),
                        "failure": failure, "half": half, "left": left}))
out("done")
"""


def test_too_many_open_files_fails_cleanly() -> None:
    prefix = f"emf{os.getpid()}"
    results = []
    try:
        with Child(_EMFILE_CHILD, prefix) as child:
            while True:
                line = child.readline()
                if line == "done":
                    break
                results.append(json.loads(line))
            child.finish()
    finally:
        # whatever a failing run left (names as in the child)
        digests = {
            "-" + _names.os_name("s", "h", f"{prefix}{k}{spare}x{i}").rsplit("-", 1)[1]
            for k in "slmq"
            for spare in range(4)
            for i in range(64)
        }
        for e in shm_entries():
            if any(e.endswith(d) for d in digests):
                os.unlink(os.path.join(DEV_SHM, e))
    assert len(results) == 16
    problems = []
    for r in results:
        if r["failure"] is None:
            problems.append(f"{r['case']}: never ran out of descriptors")
            continue
        if r["failure"][1] != errno.EMFILE:
            problems.append(f"{r['case']}: failed with {r['failure'][2]}, not EMFILE")
        if r["half"]:
            problems.append(f"{r['case']}: the failed creation left {r['half']}")
        if r["left"]:
            problems.append(f"{r['case']}: after closing everything, {r['left']} remain")
    assert not problems, "\n".join(problems)


# -- 4. another user's object -----------------------------------------------------------

_OTHER_USER_CHILD = """\
import errno, importlib, json, os, sys
# The interpreter's own library may be unreadable to that user (a Python
# under /root): load what ctipc needs from it first, ctipc itself after.
for module in json.loads(sys.argv[4]):
    try:
        importlib.import_module(module)
    except ImportError:
        pass
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
sys.path.insert(0, sys.argv[1])
try:
    import ctipc
except Exception as e:
    print(json.dumps({"import": repr(e)}))
    raise SystemExit(0)
mode = sys.argv[2]
names = json.loads(sys.argv[3])
report = {}
# Sharing with another user is asked for explicitly, by both sides.
kw = {"permissions": 0o666} if mode == "shared" else {}
if mode == "squat":  # made first, for everyone, and left behind
    kw = {"permissions": 0o666, "persistent": True}

def use(letter, name, create):
    if letter == "s":
        s = ctipc.Semaphore(name, create=create, **kw)
        assert s.acquire(timeout=5)
        s.release()
        return s
    if letter == "l":
        lock = ctipc.Lock(name, create=create, **kw)
        assert lock.acquire(timeout=5)
        lock.release()
        return lock
    if letter == "m":
        m = ctipc.SharedMemory(name, 64 if mode == "squat" else None, create=create, **kw)
        m.write(b"nobody", 0)
        return m
    if mode == "squat":
        q = ctipc.MessageQueue(name, capacity=8192, max_message=64, create=create, **kw)
        q.put(b"planted", timeout=5)
        return q
    q = ctipc.MessageQueue(name, create=create, **kw)
    q.put(b"from nobody", timeout=5)
    assert q.get(timeout=5) == b"from nobody"
    return q

for letter, name in names.items():
    for create in ((True,) if mode == "squat" else (False, None)):
        key = f"{letter} create={create}"
        try:
            use(letter, name, create).close()
            report[key] = "ok"
        except OSError as e:
            report[key] = [type(e).__name__, e.errno, e.filename]
print(json.dumps(report))
"""


_LIST_MODULES = """\
import json, sys
before = set(sys.modules)
import ctipc
print(json.dumps(sorted(m for m in set(sys.modules) - before
                        if m.split(".")[0] not in ("ctipc", "__main__"))))
"""


def _as_nobody(mode: str, names: dict[str, str]) -> dict[str, Any]:
    listed = subprocess.run(
        [sys.executable, "-c", _LIST_MODULES], capture_output=True, env=child_env(), check=True
    )
    modules = listed.stdout.decode().strip()
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            _OTHER_USER_CHILD,
            PACKAGE_ROOT,
            mode,
            json.dumps(names),
            modules,
        ],  # fmt: skip
        capture_output=True,
        timeout=60,
        env=child_env(),
        cwd="/",
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    report: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if "import" in report:
        pytest.skip(f"user 65534 cannot import ctipc: {report['import']}")
    return report


def _open_all(names: dict[str, str], **kwargs: Any) -> list[Any]:
    objs: list[Any] = []
    try:
        objs.append(ctipc.Semaphore(names["s"], **kwargs))
        objs.append(ctipc.Lock(names["l"], **kwargs))
        objs.append(ctipc.SharedMemory(names["m"], 64, **kwargs))
        objs.append(ctipc.MessageQueue(names["q"], capacity=8192, max_message=64, **kwargs))
    except BaseException:
        for o in objs:
            o.close()
        raise
    return objs


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as another user")
def test_another_users_object_is_permission_error(new_name: Callable[..., str]) -> None:
    names = {letter: new_name() for letter in "slmq"}
    objs = _open_all(names)
    try:
        report = _as_nobody("private", names)
    finally:
        for o in objs:
            o.close()
    expected = {
        f"{letter} create={create}": ["PermissionError", errno.EACCES, name]
        for letter, name in names.items()
        for create in (False, None)
    }
    assert report == expected


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as another user")
def test_another_user_can_use_an_object_made_with_0o666(new_name: Callable[..., str]) -> None:
    names = {letter: new_name() for letter in "slmq"}
    objs = _open_all(names, permissions=0o666)
    try:
        report = _as_nobody("shared", names)
        with objs[2] as shm:
            written = shm.read(0, 6)
    finally:
        for o in objs:
            o.close()
    assert report == {
        f"{letter} create={create}": "ok" for letter in names for create in (False, None)
    }
    assert written == b"nobody"
    assert all(entries_of(n) == [] for n in names.values())
    assert not os.path.exists(semaphore_path(names["s"]))


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as another user")
def test_a_name_squatted_by_another_user_is_refused(new_name: Callable[..., str]) -> None:
    """Another user made the name first, open to everyone: opening it with
    the default (private) permissions is PermissionError, with nothing read
    or written; an explicit sharing ``permissions=`` attaches."""
    names = {letter: new_name() for letter in "slmq"}
    try:
        report = _as_nobody("squat", names)
        assert set(report.values()) == {"ok"}, report
        for letter, name in names.items():
            for create in (None, False):
                with pytest.raises(PermissionError, match="another user") as caught:
                    LETTER[letter](name, create=create).close()
                assert caught.value.filename == name
        with ctipc.MessageQueue(names["q"], permissions=0o666) as q:
            assert q.get(timeout=5) == b"planted"  # still there, never touched
    finally:
        for letter, name in names.items():
            _segment.unlink_by_name(_segment.KINDS[letter], name)
    assert all(entries_of(n) == [] for n in names.values())


# -- 5. many cycles -------------------------------------------------------------------

CYCLES = 2000


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _cycle(letter: str, name: str) -> None:
    if letter == "s":
        s = ctipc.Semaphore(name)
        try:
            assert s.acquire(timeout=1)
            s.release()
        finally:
            s.close()
    elif letter == "l":
        lock = ctipc.Lock(name)
        with lock:
            pass
        lock.close()
    elif letter == "m":
        with ctipc.SharedMemory(name, 4096) as m:
            m.write(b"cycle", 100)
            assert m.read(100, 5) == b"cycle"
    else:
        with ctipc.MessageQueue(name, capacity=8192, max_message=64) as q:
            q.put_nowait(b"cycle")
            assert q.get_nowait() == b"cycle"


@pytest.mark.parametrize("letter", list("slmq"), ids=lambda k: LETTER[k].__name__)
def test_create_use_close_cycles_leak_nothing(letter: str, name: str) -> None:
    for _ in range(50):  # warm up caches (ctypes, imports, allocator arenas)
        _cycle(letter, name)
    fds = len(os.listdir("/proc/self/fd"))
    maps = _maps()
    rss = _rss()
    for _ in range(CYCLES):
        _cycle(letter, name)
    assert len(os.listdir("/proc/self/fd")) == fds
    assert _maps() <= maps + 8
    assert _rss() - rss < 20 << 20
    assert entries_of(name) == []
