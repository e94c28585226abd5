r"""User names, and the OS names they map to.

A user name is any ``str`` of 1..255 characters without ``/`` or NUL.  The OS
name is derived from it deterministically::

    ctipc-<kind><role>-<digest>

``kind`` is one letter per object kind (``s`` Semaphore, ``l`` Lock, ``m``
SharedMemory, ``q`` MessageQueue), so objects of different kinds never share an
OS object even where the OS has a single namespace for all of them (Windows).
``role`` is one letter naming the OS object's part: ``h`` the header segment
(every kind has one), ``v`` a Semaphore's OS semaphore, ``r`` and ``w`` a
MessageQueue's wake-up semaphores for readers and writers.  ``digest`` is the
first 100 bits of SHA-256 of the UTF-8 name in lowercase base32 (20
characters), so every OS name is 29 characters: under macOS's 31-character
limit with the leading ``/`` that the POSIX backend adds.  The user's name
itself is kept in the object's header, which is how ``python -m ctipc ls``
shows it.

On Windows, where kernel objects live in a session's namespace, a name that
starts with ``Global\`` (or ``Local\``, the default) puts the object in that
namespace: ``Global\jobs`` is seen by every session (creating it needs the
SeCreateGlobalPrivilege that services have).  Elsewhere that prefix is just
part of the name.
"""

from __future__ import annotations

import base64
import hashlib

from ._backend import os_backend as _os

__all__ = ["MAX_NAME", "encode_name", "os_name", "validate_name"]

MAX_NAME = 255
_PREFIX = "ctipc-"


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid user name, else raise TypeError/ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"name must be str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"name must have 1..{MAX_NAME} characters, got {len(name)}")
    if "/" in name or "\0" in name:
        raise ValueError(f"name must not contain '/' or NUL: {name!r}")
    return name


def encode_name(name: str) -> bytes:
    """The name as stored in headers; lone surrogates survive (``surrogatepass``)."""
    return name.encode("utf-8", "surrogatepass")


def os_name(kind: str, role: str, name: str) -> str:
    """The OS object name (without the OS's own prefix: ``/`` on POSIX, the
    default ``Local\\`` namespace on Windows)."""
    digest = hashlib.sha256(encode_name(name)).digest()
    tag = base64.b32encode(digest).decode("ascii")[:20].lower()
    namespace = next((ns for ns in _os.NAMESPACES if name.startswith(ns)), "")
    return f"{namespace}{_PREFIX}{kind}{role}-{tag}"


def sibling(os_name_: str, role: str) -> str:
    """The OS name of another part of the same object (same kind and digest)."""
    namespace, _, base = os_name_.rpartition("\\")
    namespace += "\\" if namespace else ""
    return f"{namespace}{base[: len(_PREFIX) + 1]}{role}{base[len(_PREFIX) + 2 :]}"


def is_ctipc_os_name(os_name_: str) -> bool:
    return os_name_.startswith(_PREFIX) and len(os_name_) == len(_PREFIX) + 23
