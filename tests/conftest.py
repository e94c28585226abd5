"""Fixtures: unique object names, and leak checks that run around every test.

The leak checks (autouse) fail a test that leaves behind, compared to before
it ran:

* ctipc entries in /dev/shm (segments ``ctipc-*`` and OS semaphores
  ``sem.ctipc-*``) that belong to this test session: names handed out by
  the ``name``/``new_name`` fixtures, or segments whose header names one of
  them or was created by this process or one of its children.  Entries of
  other, concurrent ctipc users on the machine are never touched.
* open file descriptors of this process (``/proc/self/fd``);
* threads.

Each check is gated on a probe of what the OS offers, not on its name.
"""

from __future__ import annotations

import gc
import itertools
import os
import string
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest

try:
    import ctipc  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers import (  # noqa: E402
    CHILD_PIDS,
    DEV_SHM,
    HAVE_DEV_SHM,
    HAVE_PROC_FD,
    remove_leftovers,
    shm_entries,
    stored_header,
)

from ctipc import _names  # noqa: E402

_counter = itertools.count()
#: user names handed out to the running test
_test_names: set[str] = set()
#: prefix of every name handed out in this session: short, unique per run
SESSION_PREFIX = f"t{os.getpid()}x"


def _unique() -> str:
    return f"{SESSION_PREFIX}{next(_counter)}"


@pytest.fixture
def new_name() -> Callable[..., str]:
    """``new_name()`` → another unique short name; ``new_name(text)`` registers
    ``text`` itself (e.g. a long unicode name) for leak checks and cleanup."""

    def make(text: str | None = None) -> str:
        name = _unique() if text is None else text
        _test_names.add(name)
        return name

    return make


@pytest.fixture
def name(new_name: Callable[..., str]) -> str:
    """A unique short name (``t<pid>x<n>``); every object of any kind with
    that name is removed after the test."""
    return new_name()


def _os_names_of(names: set[str]) -> set[str]:
    """Every OS name an object called one of ``names`` may use: any kind,
    any role (header, semaphores, ...), as a segment or an OS semaphore."""
    out = set()
    for n in names:
        for kind in "slmq":
            for role in string.ascii_lowercase:
                os_name = _names.os_name(kind, role, n)
                out.add(os_name)
                out.add("sem." + os_name)
    return out


def _owned_segment(entry: str) -> str | None:
    """The user name in segment ``entry``'s header if this session made it."""
    if entry.startswith("sem.") or "." in entry:
        return None
    found = stored_header(os.path.join(DEV_SHM, entry))
    if found is None:
        return None
    header, user_name = found
    if (
        user_name.startswith(SESSION_PREFIX)
        or user_name in _test_names
        or header.creator_pid == os.getpid()
        or header.creator_pid in CHILD_PIDS
    ):
        return user_name
    return None


def _leaked(new: set[str]) -> list[str]:
    """The entries of ``new`` that this test session made."""
    names = set(_test_names)
    for entry in new:
        user_name = _owned_segment(entry)
        if user_name is not None:
            names.add(user_name)
    _test_names.update(names)  # so that they are cleaned up too
    candidates = _os_names_of(names)
    return sorted(e for e in new if e in candidates or e.split(".")[0] in candidates)


@pytest.fixture(autouse=True)
def _no_shm_leaks() -> Iterator[None]:
    _test_names.clear()
    before = shm_entries()
    yield
    try:
        if HAVE_DEV_SHM:
            leaked = _leaked(shm_entries() - before)
            if leaked:
                for e in leaked:
                    try:
                        os.unlink(os.path.join(DEV_SHM, e))
                    except FileNotFoundError:
                        pass
                pytest.fail(f"the test left ctipc objects in {DEV_SHM}: {leaked}", pytrace=False)
    finally:
        remove_leftovers(set(_test_names))
        _test_names.clear()


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_fd_leaks() -> Iterator[None]:
    if not HAVE_PROC_FD:
        yield
        return
    before = len(_fds())
    yield
    after = len(_fds())
    if after > before:
        gc.collect()  # PyPy and cycles: only what nobody can still close
        after = len(_fds())
    if after > before:
        detail = []
        for fd in sorted(_fds(), key=int):
            try:
                detail.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                pass
        pytest.fail(
            f"open file descriptors grew from {before} to {after}:\n" + "\n".join(detail),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    left = []
    for t in set(threading.enumerate()) - before:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            left.append(t)
    if left:
        pytest.fail(f"the test left threads running: {left}", pytrace=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    # Lets a fixture see whether its test failed (``request.node.rep_call``),
    # to skip checks that would only repeat that failure.
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture(scope="session", autouse=True)
def _multiprocessing_resource_tracker() -> None:
    """Start multiprocessing's resource tracker before the first test: its
    pipe to us stays open for the session and is not a leak of that test."""
    try:
        from multiprocessing import resource_tracker
    except ImportError:  # pragma: no cover - Windows
        return
    if hasattr(resource_tracker, "ensure_running") and os.name == "posix":
        resource_tracker.ensure_running()
