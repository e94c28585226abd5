"""Permission bits of the OS objects: 0o600 by default, exactly as asked otherwise.

Checked on the files that back the objects in /dev/shm (Linux tmpfs); the
umask is changed only inside a child process, never in the test process.
"""

from __future__ import annotations

import os
import stat

import pytest
from helpers import HAVE_DEV_SHM, Child, header_path, kinds, semaphore_path

import ctipc

pytestmark = pytest.mark.skipif(not HAVE_DEV_SHM, reason="objects are not files in /dev/shm here")


CREATE_UNDER_UMASK = """
    os.umask(int(sys.argv[3], 8))
    cls = getattr(ctipc, sys.argv[2])
    kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
    if sys.argv[4] != "default":
        kwargs["permissions"] = int(sys.argv[4], 8)
    obj = cls(sys.argv[1], create=True, **kwargs)
    out("created")
    inp()
    obj.close()
"""


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def modes_in_child(cls: type, name: str, umask: int, permissions: int | None) -> dict[str, int]:
    """Create the object in a child with ``umask``; the modes of its files."""
    perm = "default" if permissions is None else oct(permissions)[2:]
    with Child(CREATE_UNDER_UMASK, name, cls.__name__, oct(umask)[2:], perm) as child:
        child.expect("created")
        modes = {"header": mode(header_path(cls, name))}
        if cls is ctipc.Semaphore:
            modes["semaphore"] = mode(semaphore_path(name))
        child.send()
        child.finish()
    return modes


@kinds
def test_default_mode_is_0600(name: str, cls: type) -> None:
    kwargs = {"size": 16} if cls is ctipc.SharedMemory else {}
    obj = cls(name, **kwargs)
    try:
        assert mode(header_path(cls, name)) == 0o600
        if cls is ctipc.Semaphore:
            assert mode(semaphore_path(name)) == 0o600
    finally:
        obj.close()


@kinds
@pytest.mark.parametrize("umask", [0o077, 0o000], ids=oct)
def test_default_mode_whatever_the_umask(name: str, cls: type, umask: int) -> None:
    assert modes_in_child(cls, name, umask, None)["header"] == 0o600


@kinds
@pytest.mark.parametrize("permissions", [0o640, 0o666, 0o604, 0o400], ids=oct)
def test_permissions_exact_regardless_of_umask(name: str, cls: type, permissions: int) -> None:
    assert modes_in_child(cls, name, 0o077, permissions)["header"] == permissions


@pytest.mark.parametrize("permissions", [0o640, 0o666], ids=oct)
def test_semaphore_permissions_apply_to_its_os_semaphore_too(name: str, permissions: int) -> None:
    """A group member who may open the header must be able to open the OS
    semaphore behind it: both get ``permissions``, whatever the umask."""
    modes = modes_in_child(ctipc.Semaphore, name, 0o077, permissions)
    assert modes == {"header": permissions, "semaphore": permissions}


def test_attaching_does_not_change_the_mode(name: str) -> None:
    shm = ctipc.SharedMemory(name, 16, permissions=0o640)
    try:
        again = ctipc.SharedMemory(name, permissions=0o600)
        again.close()
        assert mode(header_path(ctipc.SharedMemory, name)) == 0o640
    finally:
        shm.close()
