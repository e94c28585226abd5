"""ctipc's exceptions, and OS errors that name the user's object."""

from __future__ import annotations

import ctypes
import errno
import pickle
import queue

import pytest

import ctipc
from ctipc._backend import os_backend

OWN_ERRORS = [
    ctipc.CtipcError,
    ctipc.CorruptedError,
    ctipc.IncompatibleError,
    ctipc.Full,
    ctipc.Empty,
]


@pytest.mark.parametrize("cls", OWN_ERRORS, ids=lambda c: c.__name__)
def test_module_is_ctipc(cls: type) -> None:
    assert cls.__module__ == "ctipc"
    assert getattr(ctipc, cls.__name__) is cls
    assert cls.__name__ in ctipc.__all__


def test_hierarchy() -> None:
    assert issubclass(ctipc.Full, queue.Full)
    assert issubclass(ctipc.Empty, queue.Empty)
    assert issubclass(ctipc.CorruptedError, ctipc.CtipcError)
    assert issubclass(ctipc.IncompatibleError, ctipc.CtipcError)
    assert not issubclass(ctipc.CtipcError, OSError)
    assert not issubclass(ctipc.CorruptedError, ctipc.IncompatibleError)
    with pytest.raises(queue.Full):
        raise ctipc.Full()
    with pytest.raises(queue.Empty):
        raise ctipc.Empty()


@pytest.mark.parametrize("cls", [ctipc.CtipcError, ctipc.CorruptedError, ctipc.IncompatibleError])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_keeps_message_and_name(cls: type, protocol: int) -> None:
    e = cls("'jobs' has a corrupt header", "jobs")
    again = pickle.loads(pickle.dumps(e, protocol))
    assert type(again) is cls
    assert str(again) == str(e)
    assert again.name == "jobs"
    assert again.args == e.args
    nameless = pickle.loads(pickle.dumps(cls("no name"), protocol))
    assert nameless.name is None and str(nameless) == "no name"


@pytest.mark.parametrize("cls", [ctipc.Full, ctipc.Empty])
def test_queue_errors_pickle(cls: type) -> None:
    assert type(pickle.loads(pickle.dumps(cls()))) is cls


def test_real_errors_pickle(name: str) -> None:
    shm = ctipc.SharedMemory(name, 8)
    try:
        with pytest.raises(ctipc.IncompatibleError) as info:
            ctipc.SharedMemory(name, 9)
        again = pickle.loads(pickle.dumps(info.value))
        assert again.name == name and str(again) == str(info.value)
    finally:
        shm.close()


def test_os_errors_carry_errno_message_and_the_users_name(name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ctipc.Lock(name, create=False)
    e = info.value
    assert e.errno == errno.ENOENT
    assert e.strerror
    assert e.filename == name  # the user's name, not the OS name
    sem = ctipc.Semaphore(name)
    try:
        with pytest.raises(FileExistsError) as info2:
            ctipc.Semaphore(name, create=True)
        assert info2.value.errno == errno.EEXIST
        assert info2.value.filename == name
    finally:
        sem.close()


# -- the errno mapping of the POSIX backend (patched, as watchdog does) -----------------

posix_only = pytest.mark.skipif(
    not hasattr(os_backend, "_check_minus1"), reason="not the POSIX backend"
)


@posix_only
@pytest.mark.parametrize(
    "code, cls",
    [
        (errno.ENOENT, FileNotFoundError),
        (errno.EEXIST, FileExistsError),
        (errno.EACCES, PermissionError),
        (errno.EPERM, PermissionError),
        (errno.ENOSPC, OSError),
        (errno.EMFILE, OSError),
    ],
)
def test_errcheck_builds_the_errno_error_at_once(code: int, cls: type) -> None:
    ctypes.set_errno(code)
    with pytest.raises(cls) as info:
        os_backend._check_minus1(-1, None, (b"/ctipc-sh-abc",))
    assert type(info.value) is cls
    assert info.value.errno == code
    assert info.value.filename == "ctipc-sh-abc"
    ctypes.set_errno(code)
    with pytest.raises(cls):
        os_backend._check_sem_open(None, None, (b"/ctipc-sv-abc",))
    assert os_backend._check_minus1(0, None, (b"x",)) == (b"x",)


@posix_only
@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR])
def test_expected_wait_outcomes_are_return_values(code: int) -> None:
    ctypes.set_errno(code)
    assert os_backend._check_wait(-1, None, (0,)) is False
    assert os_backend._check_wait(0, None, (0,)) is True


@posix_only
def test_unexpected_wait_errors_raise() -> None:
    ctypes.set_errno(errno.EINVAL)
    with pytest.raises(OSError) as info:
        os_backend._check_wait(-1, None, (0,))
    assert info.value.errno == errno.EINVAL


@posix_only
def test_backend_error_is_renamed_to_the_users_name(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(os_name: str, create: bool, initial: int, mode: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", os_name)

    monkeypatch.setattr(os_backend, "semaphore_open", refuse)
    with pytest.raises(PermissionError) as info:
        ctipc.Semaphore(name)
    assert info.value.errno == errno.EACCES
    assert info.value.filename == name
    monkeypatch.undo()
    # the failed create left nothing behind
    with pytest.raises(FileNotFoundError):
        ctipc.Semaphore(name, create=False)
