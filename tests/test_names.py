"""Names: one namespace per kind; any str of 1..255 characters without '/' or NUL."""

from __future__ import annotations

from typing import Callable

import pytest
from helpers import (
    HAVE_DEV_SHM,
    KINDS,
    exists,
    header_os_name,
    header_path,
    make,
    run_child,
    stored_header,
)

import ctipc
from ctipc import _names


def test_kinds_have_separate_namespaces(name: str) -> None:
    sem = ctipc.Semaphore(name, create=True, initial=0)
    lock = ctipc.Lock(name, create=True)
    shm = ctipc.SharedMemory(name, 16, create=True)
    try:
        assert len({header_os_name(c, name) for c in KINDS}) == 3
        shm.write(b"data")
        with lock:
            assert not sem.acquire(blocking=False)
        sem.close()  # removing one kind leaves the others alone
        assert not exists(ctipc.Semaphore, name)
        assert exists(ctipc.Lock, name)
        assert shm.read(0, 4) == b"data"
        with ctipc.SharedMemory(name, create=False) as again:
            assert again.read(0, 4) == b"data"
        lock.close()
        assert exists(ctipc.SharedMemory, name)
    finally:
        sem.close()
        lock.close()
        shm.close()
    for cls in KINDS:
        assert not exists(cls, name)


LONG_NAMES = [
    "é" * 255,
    "🐍" * 255,  # 4 bytes each in UTF-8
    "名" * 254 + "x",
    "x" * 255,
    "a b.c:d\\e\t" * 25 + "end!!",
    "Global\\jobs",
    "Local\\jobs",
    ".",
    "..",
    " ",
    "\udc80surrogate",
]


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("text", LONG_NAMES, ids=range(len(LONG_NAMES)))
def test_unusual_names_work(new_name: Callable[..., str], cls: type, text: str) -> None:
    name = new_name(text)
    obj = make(cls, name, create=True)
    try:
        assert obj.name == name
        again = make(cls, name, create=False)
        again.close()
        if HAVE_DEV_SHM:
            found = stored_header(header_path(cls, name))
            assert found is not None
            assert found[1] == name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    finally:
        obj.close()
    assert not exists(cls, name)


def test_long_unicode_name_across_processes(new_name: Callable[..., str]) -> None:
    name = new_name("ü名🐍" * 85)
    assert len(name) == 255
    with ctipc.SharedMemory(name, 16) as shm:
        shm.write_str("from parent")
        out = run_child(
            """
            name = bytes.fromhex(sys.argv[1]).decode("utf-8")
            with ctipc.SharedMemory(name, create=False) as shm:
                out(shm.read_str())
            """,
            name.encode("utf-8").hex(),
        )
        assert out.strip() == "from parent"


def test_names_are_case_sensitive_and_exact(new_name: Callable[..., str]) -> None:
    base = new_name()
    upper = new_name(base.upper())
    spaced = new_name(base + " ")
    a = ctipc.Semaphore(base, create=True)
    b = ctipc.Semaphore(upper, create=True)
    c = ctipc.Semaphore(spaced, create=True)
    for s in (a, b, c):
        s.close()


def test_os_names_fit_every_os() -> None:
    for text in LONG_NAMES:
        for kind in "slmq":
            os_name = _names.os_name(kind, "h", text)
            assert len(os_name) + 1 <= 31  # macOS, with the leading '/'
            assert os_name.isascii() and "/" not in os_name
            assert _names.is_ctipc_os_name(os_name)
