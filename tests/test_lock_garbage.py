"""Garbage written into a held Lock's robust mutex by a process with access
(docs/trust.md): the holder's release raises CorruptedError and never
crashes, and the next user takes the Lock over (``owner_died``), whether the
holder lived on or was killed.

Each case writes 16 bytes over a different part of glibc's pthread_mutex_t:
the lock word (with ``__count``, ``__owner``, ``__nusers``), the owner and
kind, and the robust-list links that glibc's unlock follows.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import DEADLINE, HAVE_DEV_SHM, HAVE_SIGKILL, Child, header_path

import ctipc
from ctipc._backend import os_backend
from ctipc._header import HEADER_SIZE

pytestmark = [
    pytest.mark.skipif(not os_backend.ROBUST_MUTEX, reason="no robust mutex here"),
    pytest.mark.skipif(not HAVE_DEV_SHM, reason="writes into the segment's file"),
    pytest.mark.skipif(
        "-glibc-" not in os_backend.MUTEX_ABI or "-64" not in os_backend.MUTEX_ABI,
        reason="the repair knows 64-bit glibc's mutex layout",
    ),
]

GARBAGE = bytes(range(0xA1, 0xB1))  # 16 bytes; as a lock word, a thread id no thread has

HOLD_THEN_RELEASE = """
    lock = ctipc.Lock(sys.argv[1])
    assert lock.acquire(timeout=5)
    out("held")
    inp()
    try:
        lock.release()
        out("released")
    except ctipc.CorruptedError as e:
        out("CorruptedError", sys.argv[1] in str(e), lock.locked())
    lock.close()
"""

TAKE_OVER = """
    lock = ctipc.Lock(sys.argv[1], create=False)
    out(lock.acquire(timeout=float(sys.argv[2])), lock.owner_died)
    lock.release()
    out(lock.acquire(timeout=5), lock.owner_died, lock.locked())
    lock.release()
    out(lock.locked())
    lock.close()
"""


def _write_garbage(name: str, offset: int) -> None:
    fd = os.open(header_path(ctipc.Lock, name), os.O_RDWR)
    try:
        assert os.pwrite(fd, GARBAGE, HEADER_SIZE + offset) == len(GARBAGE)
    finally:
        os.close(fd)


def _take_over(name: str) -> None:
    with Child(TAKE_OVER, name, DEADLINE) as third:
        assert third.readline() == "True True"
        assert third.readline() == "True False True"
        assert third.readline() == "False"
        third.finish()


@contextmanager
def _held_then_garbled(name: str, offset: int) -> Iterator[Child]:
    with Child(HOLD_THEN_RELEASE, name) as holder:
        holder.expect("held")
        _write_garbage(name, offset)
        yield holder


@pytest.mark.parametrize("offset", [0, 8, 24])
def test_garbage_in_a_held_mutex_is_corrupt_for_the_holder(name: str, offset: int) -> None:
    with _held_then_garbled(name, offset) as holder:
        holder.send()
        assert holder.readline() == "CorruptedError True False"
        holder.close_stdin()
        assert holder.wait() == 0  # (not -SIGSEGV)
        _take_over(name)


@pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")
@pytest.mark.parametrize("offset", [0, 8, 24])
def test_garbage_in_a_mutex_whose_holder_was_killed(name: str, offset: int) -> None:
    with _held_then_garbled(name, offset) as holder:
        holder.kill()
        assert holder.proc.returncode == -signal.SIGKILL
    _take_over(name)
