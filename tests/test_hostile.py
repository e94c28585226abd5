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
import random
import shlex
import shutil
import struct
import subprocess
import sys
from typing import Any, Callable

import pytest
from helpers import (
    DEADLINE,
    DEV_SHM,
    HAVE_DEV_SHM,
    HAVE_PROC_FD,
    PACKAGE_ROOT,
    Child,
    ChildFailed,
    child_env,
    entries_of,
    header_path,
    semaphore_path,
    shm_entries,
)

import ctipc
from ctipc import _names, _ring, _segment

pytestmark = pytest.mark.skipif(
    not (HAVE_DEV_SHM and HAVE_PROC_FD and sys.platform.startswith("linux")),
    reason="needs Linux with objects as files in /dev/shm",
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# -- 1. seeded fuzz of headers and rings --------------------------------------------

SEED = 1234
CASES_PER_KIND = 500
BATCH = 200
#: a single case may legitimately wait out a corrupt mutex (1 s patience per
#: queue call) but never this long
CASE_DEADLINE = 8.0

HS = _segment.HEADER_SIZE
# (name, offset, width) of every header field, from the struct itself
_FIELD_NAMES = _segment.Header._fields
_FIELD_FORMATS = ["8s", "I", "I", "I", "I", "Q", "Q", "Q", "I", "I", "I", "I", "Q"]
FIELDS: list[tuple[str, int, int]] = []
_off = 0
for _n, _f in zip(_FIELD_NAMES, _FIELD_FORMATS):
    _w = struct.calcsize("=" + _f)
    FIELDS.append((_n, _off, _w))
    _off += _w
assert _off == _segment._HEADER.size
STATE_OFFSET = dict((n, o) for n, o, _ in FIELDS)["state"]

LETTER = {"s": ctipc.Semaphore, "l": ctipc.Lock, "m": ctipc.SharedMemory, "q": ctipc.MessageQueue}
Q_CAPACITY = 4096
Q_MAX = 512


def _extremes(rng: random.Random, width: int, file_size: int) -> int:
    bits = 8 * width
    pool = [
        0,
        1,
        2,
        (1 << bits) - 1,
        1 << (bits - 1),
        (1 << 31) - 1,
        file_size,
        file_size + 1,
        file_size - 1,
        HS,
        HS - 1,
        _segment.NAME_CAPACITY,
        _segment.NAME_CAPACITY + 1,
        12288,
        16384,
        65536,
        1 << 62,
        (1 << 62) + 1,
        rng.getrandbits(bits),
        rng.randrange(0, 1 << 16),
    ]
    return rng.choice(pool) & ((1 << bits) - 1)


def _fill(rng: random.Random, n: int) -> bytes:
    style = rng.randrange(4)
    if style == 0:
        return bytes(n)
    if style == 1:
        return b"\xff" * n
    return bytes(rng.getrandbits(8) for _ in range(n))


def _put_at(buf: bytearray, offset: int, data: bytes) -> None:
    end = min(len(buf), offset + len(data))
    if offset < end:
        buf[offset:end] = data[: end - offset]


def _set_word(buf: bytearray, offset: int, width: int, value: int) -> None:
    _put_at(buf, offset, value.to_bytes(width, sys.byteorder))


def _mutate(rng: random.Random, letter: str, buf: bytearray, my_ns: int) -> list[str]:
    """Corrupt the segment's bytes in ``buf``; return what was done."""
    size = len(buf)
    done = []
    choices = ["field", "field", "fields", "bytes", "bytes", "slots", "name", "tag"]
    if letter in "lq":
        choices += ["area", "area", "mutex word"]
    if letter == "q":
        choices += ["control", "control", "control", "ring", "ring"]
    if letter == "m":
        choices += ["area"]
    what = rng.choice(choices)
    if what in ("field", "fields"):
        for _ in range(1 if what == "field" else rng.randrange(2, 5)):
            fname, off, width = rng.choice(FIELDS[1:])  # magic: "bytes" covers it
            value = _extremes(rng, width, size)
            _set_word(buf, off, width, value)
            done.append(f"{fname}={value}")
    elif what == "bytes":
        limit = rng.choice([_segment.NAME_OFFSET, _segment.SLOT_OFFSET, HS])
        off = rng.randrange(0, limit)
        data = _fill(rng, rng.randrange(1, 65))
        _put_at(buf, off, data)
        done.append(f"bytes@{off}={data.hex()}")
    elif what == "slots":
        count = rng.choice([1, 3, 16, _segment.SLOT_COUNT])
        for _ in range(count):
            i = rng.randrange(_segment.SLOT_COUNT)
            pid = rng.choice([1, os.getpid(), rng.getrandbits(32), rng.randrange(2, 1 << 22)])
            slot = (
                pid,
                rng.choice([0, 1, 0xFFFFFFFF, rng.getrandbits(32)]),
                rng.choice([0, rng.getrandbits(64)]),
                rng.choice([my_ns, 0, rng.getrandbits(64)]),
                rng.choice([0, rng.getrandbits(64)]),
            )
            _put_at(buf, _segment.SLOT_OFFSET + i * _segment._SLOT.size, _segment._SLOT.pack(*slot))
        done.append(f"{count} slots")
    elif what == "name":
        name_len = rng.choice([0, _segment.NAME_CAPACITY, _segment.NAME_CAPACITY + 1,
                               0xFFFFFFFF, rng.getrandbits(32), rng.randrange(1, 300)])  # fmt: skip
        _set_word(buf, dict((n, o) for n, o, _ in FIELDS)["name_len"], 4, name_len)
        data = _fill(rng, rng.randrange(1, 64))
        _put_at(buf, _segment.NAME_OFFSET + rng.randrange(0, 64), data)
        done.append(f"name_len={name_len} name bytes {data.hex()}")
    elif what == "tag":
        data = _fill(rng, rng.randrange(1, _segment.TAG_CAPACITY + 1))
        _put_at(buf, _segment.TAG_OFFSET, data)
        done.append(f"tag={data.hex()}")
    elif what == "area":
        if letter == "q":
            base = rng.choice([_ring.PUT_MUTEX, _ring.GET_MUTEX])
            n = 48
        elif letter == "l":
            base, n = HS, 48
        else:
            base, n = HS, 256
        off = base + rng.randrange(0, n)
        data = _fill(rng, rng.randrange(1, n + 1))
        _put_at(buf, off, data)
        done.append(f"area@{off}={data.hex()}")
    elif what == "mutex word":
        # one aligned word of a pthread mutex (lock, count, owner, users, kind,
        # ...), set to a flag a real mutex may carry or to garbage
        base = HS if letter == "l" else rng.choice([_ring.PUT_MUTEX, _ring.GET_MUTEX])
        off = base + 4 * rng.randrange(0, 10)
        value = rng.choice([0, 1, 0x10, 0x20, 0x40, 0x80, 0x90, 0xD0, 0xFFFFFFFF,
                            os.getpid(), rng.getrandbits(32)])  # fmt: skip
        _set_word(buf, off, 4, value)
        done.append(f"mutex word@{off}={value:#x}")
    elif what == "control":
        words = [
            _ring.TAIL,
            _ring.PUTS,
            _ring.CONSUMERS_WAITING,
            _ring.HEAD,
            _ring.GETS,
            _ring.PRODUCERS_WAITING,
            _ring.RECEIVING,
        ]
        for _ in range(rng.randrange(1, 4)):
            w = rng.choice(words)
            value = rng.choice([0, 1, 7, 8, Q_CAPACITY, Q_CAPACITY + 8, 2**62, 2**62 + 8,
                                2**63, 2**64 - 1, 2**64 - 8, rng.getrandbits(64),
                                rng.randrange(0, 3 * Q_CAPACITY)])  # fmt: skip
            _set_word(buf, _ring.CONTROL + 8 * w, 8, value)
            done.append(f"control[{w}]={value}")
    elif what == "ring":
        ring_len = size - _ring.RING
        if rng.random() < 0.6:
            # a record length: at a record boundary, with an extreme length
            off = _ring.RING + 8 * rng.randrange(0, ring_len // 8)
            n = rng.choice([0, 1, Q_MAX, Q_MAX + 1, _ring.WRAP, _ring.WRAP - 1, Q_CAPACITY,
                            rng.getrandbits(32)])  # fmt: skip
            _set_word(buf, off, 4, n)
            done.append(f"record@{off - _ring.RING}={n}")
        else:
            off = _ring.RING + rng.randrange(0, ring_len)
            data = _fill(rng, rng.randrange(1, 65))
            _put_at(buf, off, data)
            done.append(f"ring@{off - _ring.RING}={data.hex()}")
    # A header left "being created" (0) or "removed" (2) only makes an open
    # wait (1 s, or the 10 s open timeout): not what this fuzz is after.
    state = int.from_bytes(buf[STATE_OFFSET : STATE_OFFSET + 4], sys.byteorder)
    if state in (_segment.STATE_INIT, _segment.STATE_REMOVED):
        _set_word(buf, STATE_OFFSET, 4, _segment.STATE_READY)
    return done


def _make(rng: random.Random, letter: str, name: str) -> None:
    """Create a persistent object called ``name`` with some content, closed."""
    if letter == "s":
        ctipc.Semaphore(name, initial=rng.randrange(0, 3), persistent=True).close()
    elif letter == "l":
        ctipc.Lock(name, persistent=True).close()
    elif letter == "m":
        size = rng.choice([1, 64, 4096, 5000])
        ctipc.SharedMemory(name, size, persistent=True).close()
    else:
        with ctipc.MessageQueue(name, capacity=Q_CAPACITY, max_message=Q_MAX, persistent=True) as q:
            # move the positions so that records wrap around the ring
            for _ in range(rng.randrange(0, 12)):
                q.put_nowait(b"x" * rng.randrange(0, Q_MAX))
                if len(q) > 3:
                    q.get_nowait()


_FUZZ_CHILD = """\
import json
cases = json.loads(sys.argv[1])
ACCEPTED = (ctipc.CorruptedError, ctipc.IncompatibleError, FileNotFoundError,
            ValueError, ctipc.Empty, ctipc.Full, TimeoutError)

def use(letter, name):
    if letter == "s":
        obj = ctipc.Semaphore(name, create=False)
        try:
            if obj.acquire(timeout=0.05):
                obj.release()
            obj.value
        finally:
            obj.close()
    elif letter == "l":
        obj = ctipc.Lock(name, create=False)
        try:
            if obj.acquire(timeout=0.05):
                obj.release()
        finally:
            obj.close()
    elif letter == "m":
        obj = ctipc.SharedMemory(name, create=False)
        try:
            obj.read(0, min(16, obj.size))
            obj.write(b"x", obj.size - 1)
            obj.read_str(0)
        finally:
            obj.close()
    else:
        obj = ctipc.MessageQueue(name, create=False)
        try:
            len(obj)
            outcomes = []
            def receive():
                with obj.receive(block=False) as m:
                    bytes(m.data)

            def reserve():
                with obj.reserve(3, block=False) as r:
                    r.data[:] = b"abc"

            for op in (obj.get_nowait, lambda: obj.put_nowait(b"hello"), obj.get_nowait,
                       receive, reserve, receive):
                try:
                    op()
                    outcomes.append("ok")
                except ACCEPTED as e:
                    outcomes.append(type(e).__name__)
            return "/".join(outcomes)
        finally:
            obj.close()
    return "OK"

for i, (letter, name) in enumerate(cases):
    try:
        result = use(letter, name)
    except ACCEPTED as e:
        result = type(e).__name__
    except BaseException as e:
        result = "UNEXPECTED " + repr(e)
    out(i, result)
out("done")
"""


def _cleanup(letter: str, name: str) -> None:
    _segment.unlink_by_name(_segment.KINDS[letter], name)
    # what a corrupt header kept unlink_by_name from removing
    for entry in entries_of(name):
        try:
            os.unlink(os.path.join(DEV_SHM, entry))
        except FileNotFoundError:
            pass


def _run_fuzz_child(
    batch: list[tuple[str, str, str]], pos: int, outcomes: dict[str, int], failures: list[str]
) -> int:
    """Run ``batch[pos:]`` in one child; return where the next child starts."""
    with Child(_FUZZ_CHILD, json.dumps([(c[0], c[1]) for c in batch[pos:]])) as child:
        for i in range(pos, len(batch)):
            desc = batch[i][2]
            try:
                line = child.readline(CASE_DEADLINE)
            except ChildFailed:
                rc = child.proc.poll()
                if rc is None:
                    failures.append(f"{desc} -> hung (no answer within {CASE_DEADLINE} s)")
                else:
                    tail = child.stderr.strip().splitlines()[-1:] or [""]
                    failures.append(f"{desc} -> child died, exit code {rc}: {tail[0]}")
                outcomes["crash/hang"] = outcomes.get("crash/hang", 0) + 1
                return i + 1
            index, _, result = line.partition(" ")
            assert index == str(i - pos), line
            if result.startswith("UNEXPECTED"):
                failures.append(f"{desc} -> {result}")
            key = result.split(" ")[0]
            outcomes[key] = outcomes.get(key, 0) + 1
        child.expect("done")
        child.finish()
    return len(batch)


def test_fuzzed_headers_and_rings_never_crash_or_hang(new_name: Callable[..., str]) -> None:
    rng = random.Random(SEED)
    my_ns = _segment._self()[2]
    cases: list[tuple[str, str, str]] = []  # (letter, name, description)
    for letter in "slmq":
        for i in range(CASES_PER_KIND):
            cases.append((letter, f"{letter}{i}", ""))
    rng.shuffle(cases)
    outcomes: dict[str, int] = {}
    failures: list[str] = []
    for start in range(0, len(cases), BATCH):
        batch = []
        try:
            for letter, label, _ in cases[start : start + BATCH]:
                name = new_name()
                _make(rng, letter, name)
                path = header_path(LETTER[letter], name)
                with open(path, "r+b") as f:
                    buf = bytearray(f.read())
                    done = _mutate(rng, letter, buf, my_ns)
                    f.seek(0)
                    f.write(buf)
                batch.append((letter, name, f"{LETTER[letter].__name__} case {label}: {done}"))
            pos = 0
            while pos < len(batch):
                # a crash is recorded and the rest of the batch runs in a new child
                pos = _run_fuzz_child(batch, pos, outcomes, failures)
        finally:
            for letter, name, _ in batch:
                _cleanup(letter, name)
    # crashes and hangs first: they are the worst
    failures.sort(key=lambda f: "died" not in f and "hung" not in f)
    assert not failures, (
        f"seed {SEED}: {len(failures)} of {len(cases)} cases went wrong "
        f"(outcomes: {outcomes}):\n" + "\n".join(failures[:25])
    )
    # the fuzz reaches both the checks and the working paths
    assert outcomes.get("CorruptedError", 0) > 0 and outcomes.get("OK", 0) > 0, outcomes


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

def use(letter, name, create):
    if letter == "s":
        s = ctipc.Semaphore(name, create=create)
        assert s.acquire(timeout=5)
        s.release()
        return s
    if letter == "l":
        lock = ctipc.Lock(name, create=create)
        assert lock.acquire(timeout=5)
        lock.release()
        return lock
    if letter == "m":
        m = ctipc.SharedMemory(name, create=create)
        m.write(b"nobody", 0)
        return m
    q = ctipc.MessageQueue(name, create=create)
    q.put(b"from nobody", timeout=5)
    assert q.get(timeout=5) == b"from nobody"
    return q

for letter, name in names.items():
    for create in (False, None):
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
