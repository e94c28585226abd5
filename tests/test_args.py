"""Bad arguments raise TypeError/ValueError before any object is created."""

from __future__ import annotations

import os
from typing import Callable

import pytest
from helpers import DEV_SHM, KINDS, exists, make, shm_entries, stored_header

import ctipc
from ctipc import _names


def made_here(entry: str) -> bool:
    """Whether a /dev/shm entry is a segment this process created (other ctipc
    users on the machine may create objects meanwhile)."""
    found = stored_header(os.path.join(DEV_SHM, entry))
    return found is not None and found[0].creator_pid == os.getpid()


def assert_rejected(error: type, call: Callable[[], object], name: object = None) -> None:
    before = shm_entries()
    with pytest.raises(error):
        call()
    new = shm_entries() - before
    ours = {"sem." + _names.os_name("s", "v", name)} if isinstance(name, str) else set()
    assert [e for e in new if e in ours or made_here(e)] == []


BAD_NAMES = [
    ("", ValueError),
    ("x" * 256, ValueError),
    ("é" * 256, ValueError),
    ("a/b", ValueError),
    ("/", ValueError),
    ("a\0b", ValueError),
    ("\0", ValueError),
    (b"bytes", TypeError),
    (None, TypeError),
    (1, TypeError),
]


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad, error", BAD_NAMES, ids=lambda v: repr(v)[:12])
def test_bad_names(cls: type, bad: object, error: type) -> None:
    assert_rejected(error, lambda: make(cls, bad), bad)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "create, error", [("yes", TypeError), (1, TypeError), (0, TypeError), ("", TypeError)]
)
def test_bad_create(name: str, cls: type, create: object, error: type) -> None:
    assert_rejected(error, lambda: make(cls, name, create=create), name)
    assert not exists(cls, name)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "permissions, error",
    [
        (0o1000, ValueError),
        (-1, ValueError),
        ("600", TypeError),
        (True, TypeError),
        (0o600 + 0.0, TypeError),
    ],
)
def test_bad_permissions(name: str, cls: type, permissions: object, error: type) -> None:
    assert_rejected(error, lambda: make(cls, name, permissions=permissions), name)
    assert not exists(cls, name)


@pytest.mark.parametrize(
    "initial, error",
    [
        (-1, ValueError),
        (True, TypeError),
        (False, TypeError),
        (1.0, TypeError),
        ("1", TypeError),
        (2**31, ValueError),
    ],
)
def test_bad_semaphore_initial(name: str, initial: object, error: type) -> None:
    assert_rejected(error, lambda: ctipc.Semaphore(name, initial=initial), name)
    assert not exists(ctipc.Semaphore, name)


@pytest.mark.parametrize(
    "size, error",
    [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError), ("64", TypeError)],
)
def test_bad_shared_memory_size(name: str, size: object, error: type) -> None:
    assert_rejected(error, lambda: ctipc.SharedMemory(name, size), name)
    assert not exists(ctipc.SharedMemory, name)


def test_shared_memory_needs_a_size_to_create(name: str) -> None:
    assert_rejected(ValueError, lambda: ctipc.SharedMemory(name, create=True), name)
    # without a size it only attaches: nothing to create with
    with pytest.raises(FileNotFoundError) as info:
        ctipc.SharedMemory(name)
    assert info.value.filename == name
    assert not exists(ctipc.SharedMemory, name)


def test_keyword_only_options(name: str) -> None:
    with pytest.raises(TypeError):
        ctipc.Semaphore(name, True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctipc.Lock(name, True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctipc.SharedMemory(name, 64, True)  # type: ignore[misc]


@pytest.mark.skipif(ctipc.PERSISTENT_SUPPORTED, reason="persistent objects are supported here")
@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_persistent_refused_where_unsupported(name: str, cls: type) -> None:
    assert_rejected(ValueError, lambda: make(cls, name, persistent=True), name)


@pytest.mark.parametrize("cls", [*KINDS, ctipc.MessageQueue], ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", ["no", 1, None, 0.0], ids=repr)
def test_bad_persistent(cls: type, bad: object, name: str) -> None:
    assert_rejected(TypeError, lambda: make(cls, name, persistent=bad), name)


@pytest.mark.parametrize(
    "cls, arg",
    [
        (ctipc.SharedMemory, "size"),
        (ctipc.MessageQueue, "capacity"),
        (ctipc.MessageQueue, "max_message"),
    ],
)
@pytest.mark.parametrize("huge", [2**48 + 1, 2**63, 2**64 + 5])
def test_sizes_too_large_for_any_machine(cls: type, arg: str, huge: int, name: str) -> None:
    # ValueError in ctipc's words, never an OverflowError from a conversion
    with pytest.raises(ValueError, match=arg):
        cls(name, **{arg: huge})
    assert not exists(cls, name)
