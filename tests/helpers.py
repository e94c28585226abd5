"""Helpers shared by the test modules: child interpreters, OS names, /dev/shm.

Cross-process tests run their other side in a *separate* interpreter
(``python -c CODE``), never a fork of pytest, so the child knows nothing of
the test process but the object's name.  Parent and child synchronise over
lines on stdout/stdin, each wait with its own deadline; ``time.sleep`` is
never used to order the two.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

import ctipc
from ctipc import _header, _names, _segment

#: Seconds a cross-process handshake may take before the test fails.  Far
#: longer than it ever takes; a child's start is the slow part (~0.1 s).
DEADLINE = 15.0

DEV_SHM = "/dev/shm"
HAVE_DEV_SHM = os.path.isdir(DEV_SHM)
HAVE_PROC_FD = os.path.isdir("/proc/self/fd")
HAVE_SIGKILL = hasattr(signal, "SIGKILL")
HAVE_FORK = hasattr(os, "fork")

#: the directory that holds the ``ctipc`` package the tests import, so that
#: children import the very same copy (installed by tox, or a checkout)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ctipc.__file__)))

#: pids of every child the tests started (for attributing /dev/shm entries)
CHILD_PIDS: set[int] = set()

KIND_LETTER = {
    ctipc.Semaphore: "s",
    ctipc.Lock: "l",
    ctipc.SharedMemory: "m",
    ctipc.MessageQueue: "q",
}

#: the kinds whose lifetime and header tests are written once for all three
#: (MessageQueue, with its own sizes and protocol, has test_mq.py)
KINDS = [ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory]

#: every kind of object
ALL_KINDS = [*KINDS, ctipc.MessageQueue]

#: ``@kinds`` runs a test once per kind in KINDS, as its ``cls`` argument
kinds = pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)


def make(cls: type, name: Any, **kwargs: Any) -> Any:
    """``cls(name, **kwargs)``; a SharedMemory gets a small ``size`` unless one is given."""
    if cls is ctipc.SharedMemory:
        kwargs.setdefault("size", 64)
    return cls(name, **kwargs)


#: this directory: children that import ``_mp_workers`` put it on sys.path
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: child code (after the prelude) that imports the MessageQueue workers as ``w``
MQ_IMPORT = f"sys.path.insert(0, {TESTS_DIR!r})\nimport _mp_workers as w\n"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + old if old else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONSTARTUP", None)
    env.update(extra)
    return env


# -- OS names -------------------------------------------------------------------


def header_os_name(cls: type, name: str) -> str:
    """OS name of the header segment of ``cls`` object ``name``."""
    return _names.os_name(KIND_LETTER[cls], "h", name)


def header_path(cls: type, name: str) -> str:
    return os.path.join(DEV_SHM, header_os_name(cls, name))


def semaphore_path(name: str) -> str:
    """/dev/shm file of the OS semaphore behind ``ctipc.Semaphore(name)`` (glibc)."""
    return os.path.join(DEV_SHM, "sem." + _names.os_name("s", "v", name))


def shm_entries() -> set[str]:
    """ctipc's entries in /dev/shm (segments, OS semaphores, lock files)."""
    if not HAVE_DEV_SHM:
        return set()
    return {n for n in os.listdir(DEV_SHM) if n.startswith("ctipc-") or n.startswith("sem.ctipc-")}


def exists(cls: type, name: str) -> bool:
    """Whether object ``name`` of kind ``cls`` exists, asked by name."""
    kwargs: dict[str, Any] = {"create": False}
    try:
        obj = cls(name, **kwargs)
    except FileNotFoundError:
        return False
    obj.close()
    return True


def stored_header(path: str) -> tuple[_header.Header, str] | None:
    """(header, user name) read straight from a segment file, or None."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_header.NAME_OFFSET + _header.NAME_CAPACITY)
    except OSError:
        return None
    if len(raw) < _header.NAME_OFFSET:
        return None
    header = _header.Header(*_header.HEADER_FORMAT.unpack_from(raw, 0))
    n = min(header.name_len, _header.NAME_CAPACITY)
    name = raw[_header.NAME_OFFSET : _header.NAME_OFFSET + n].decode("utf-8", "replace")
    return header, name


# -- child interpreters ---------------------------------------------------------------

_PRELUDE = """\
import os, sys, signal, time
import ctipc

def out(*args):
    print(*args, flush=True)

def inp():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("parent closed stdin")
    return line.rstrip("\\n")

_prelude_done = True  # code indented by mistake fails here, not inside inp()
"""


class ChildFailed(AssertionError):
    pass


class Child:
    """A separate Python interpreter running ``code`` with ``args`` in ``sys.argv[1:]``.

    ``out(...)`` in the child prints a line the parent reads with
    :meth:`readline`/:meth:`expect`; ``inp()`` reads a line the parent sends
    with :meth:`send`.  Use as a context manager: the child is killed (if
    still running) and reaped, and every pipe closed, on the way out.
    """

    def __init__(self, code: str, *args: object, warnings_error: bool = True, **env: str) -> None:
        cmd = [sys.executable, "-u"]
        if warnings_error:
            cmd += ["-W", "error"]
        cmd += ["-c", _PRELUDE + textwrap.dedent(code), *map(str, args)]
        self._start(cmd, child_env(**env))

    def _start(self, cmd: list[str], env: dict[str, str]) -> None:
        """Start ``cmd`` with pipes for stdin, stdout and stderr."""
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        CHILD_PIDS.add(self.proc.pid)
        self.pid = self.proc.pid
        self._out = b""
        self._err = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        self._sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        self._open_streams = 2

    # -- I/O --
    def _pump(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False once both streams ended."""
        if self._open_streams == 0:
            return False
        for key, _ in self._sel.select(max(timeout, 0.0)):
            data = os.read(key.fd, 65536)
            if not data:
                self._sel.unregister(key.fileobj)
                self._open_streams -= 1
            elif key.data == "out":
                self._out += data
            else:
                self._err += data
        return self._open_streams > 0

    @property
    def stderr(self) -> str:
        return self._err.decode("utf-8", "replace")

    def _describe(self) -> str:
        return (
            f"child pid {self.pid} rc={self.proc.poll()}\n"
            f"--- unread stdout ---\n{self._out.decode('utf-8', 'replace')}\n"
            f"--- stderr ---\n{self.stderr}"
        )

    def readline(self, timeout: float = DEADLINE) -> str:
        """The next line the child printed; fails if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"no line from the child within {timeout} s\n{self._describe()}")
            if not self._pump(remaining) and b"\n" not in self._out:
                # Both streams closed: the child is gone.
                self._reap(5.0)
                raise ChildFailed(f"the child exited without printing a line\n{self._describe()}")
        line, _, self._out = self._out.partition(b"\n")
        return line.decode("utf-8")

    def expect(self, expected: str, timeout: float = DEADLINE) -> None:
        line = self.readline(timeout)
        if line != expected:
            raise ChildFailed(
                f"expected {expected!r} from the child, got {line!r}\n{self._describe()}"
            )

    def silent_for(self, seconds: float) -> bool:
        """True if the child prints no complete line within ``seconds`` (an
        assertion that it is still blocked, not a way to order events)."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pump(remaining):
                break
        return b"\n" not in self._out

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    # -- lifetime --
    def _reap(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                break
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the child to exit (reading its output); its return code."""
        rc = self._reap(timeout)
        if rc is None:
            raise ChildFailed(f"the child did not exit within {timeout} s\n{self._describe()}")
        return rc

    def finish(self, timeout: float = DEADLINE) -> None:
        """Close its stdin, wait, and require exit code 0."""
        self.close_stdin()
        rc = self.wait(timeout)
        if rc != 0:
            raise ChildFailed(f"the child failed with exit code {rc}\n{self._describe()}")

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def still_running_after(self, seconds: float) -> bool:
        """True if the child is still running ``seconds`` from now (an assertion
        that it is blocked, not a way to order events)."""
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return True
        return False

    def kill(self) -> None:
        """SIGKILL the child and reap it (its slot is then a dead process's)."""
        self.proc.kill()
        self.proc.wait(DEADLINE)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(DEADLINE)
        finally:
            self._sel.close()
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_child(code: str, *args: object, timeout: float = DEADLINE) -> str:
    """Run ``code`` to completion; its stdout (fails on a non-zero exit)."""
    with Child(code, *args) as child:
        child.close_stdin()
        rc = child.wait(timeout)
        if rc != 0:
            raise ChildFailed(f"the child failed with exit code {rc}\n{child._describe()}")
        return child._out.decode("utf-8")


def reap_process(p: Any, timeout: float = DEADLINE) -> None:
    """Join a multiprocessing.Process, killing it if it overstays; close it."""
    try:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(DEADLINE)
    finally:
        p.close()


def _kinds() -> list[_segment.Kind]:
    """One Kind object per kind of object (for ``_segment.unlink_by_name``)."""
    registry = getattr(_segment, "KINDS", None)
    if registry:
        return list(registry.values())
    from ctipc.lock import _LockKind
    from ctipc.semaphore import _SemaphoreKind
    from ctipc.shm import _SharedMemoryKind

    return [_SemaphoreKind(), _LockKind(), _SharedMemoryKind()]


def remove_leftovers(names: set[str]) -> None:
    """Remove every ctipc object of any kind called one of ``names``."""
    from ctipc._backend import os_backend

    for name in names:
        for kind in _kinds():
            try:
                _segment.unlink_by_name(kind, name)
            except OSError as e:  # pragma: no cover - best effort
                if e.errno != errno.ENOENT:
                    raise
        os_backend.semaphore_unlink(_names.os_name("s", "v", name))


def entries_of(name: str) -> list[str]:
    """The /dev/shm entries (any kind, any role: segments and OS semaphores)
    of the objects called ``name``: every one carries the name's digest."""
    tag = _names.os_name("s", "h", name).rsplit("-", 1)[1]
    return sorted(e for e in shm_entries() if e.endswith("-" + tag))


def run_threads(target: Callable[[int], None], n: int = 8) -> None:
    """Run ``target(i)`` in ``n`` threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            barrier.wait(DEADLINE)
            target(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


# -- HTTP -----------------------------------------------------------------------------

# Never send the tests' requests to a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``url``: (status, text body), also for error statuses."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        try:
            return e.code, e.read().decode("utf-8")
        finally:
            e.close()


def drain(q: ctipc.MessageQueue) -> list[bytes]:
    """Every message in ``q`` now (none is being put)."""
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except ctipc.Empty:
            return out
