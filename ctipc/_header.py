"""The header every ctipc object's segment starts with: its byte layout
(docs/FORMAT.md; keep the two in step), the named readers and writers of its
fields, and its attach table (which processes have the object open, and
which of them died).  No other module packs or unpacks header bytes.
Everything read from shared memory is untrusted: callers check it."""

from __future__ import annotations

import errno
import mmap
import os
import struct
from typing import NamedTuple

from ._backend import os_backend as _os

VERSION = 1
MAGIC_PREFIX = b"CTIPC\x00"

# The one layout definition: (field, struct code) in byte order.  The
# offsets of the fields written on their own come from it.
_FIELDS = (
    ("magic", "8s"),
    ("version", "I"),
    ("state", "I"),
    ("header_size", "I"),
    ("flags", "I"),
    ("total", "Q"),
    ("param0", "Q"),
    ("param1", "Q"),
    ("slots", "I"),
    ("slot_offset", "I"),
    ("name_len", "I"),
    ("creator_pid", "I"),
    ("created_ns", "Q"),
)
HEADER_FORMAT = struct.Struct("=" + "".join(code for _, code in _FIELDS))
_OFFSET = {
    field: struct.calcsize("=" + "".join(code for _, code in _FIELDS[:i]))
    for i, (field, _) in enumerate(_FIELDS)
}
_U32 = struct.Struct("=I")
NAME_OFFSET = 128
NAME_CAPACITY = 1024  # 255 characters of UTF-8 fit
TAG_OFFSET = NAME_OFFSET + NAME_CAPACITY  # 64 bytes of ASCII for the kind
TAG_CAPACITY = 64
SLOT_OFFSET = 2048
SLOT_COUNT = 256
SLOT = struct.Struct("=IIQQQ")  # pid, opens, start token, pid namespace, reserved
# The kind's own area starts after the slot table, at a boundary every OS
# can map from (Windows maps at 64 KiB granularity).
HEADER_SIZE = (
    -(
        -max(SLOT_OFFSET + SLOT_COUNT * SLOT.size + 2048, mmap.ALLOCATIONGRANULARITY)
        // mmap.ALLOCATIONGRANULARITY
    )
    * mmap.ALLOCATIONGRANULARITY
)

STATE_INIT, STATE_READY, STATE_REMOVED = 0, 1, 2
FLAG_PERSISTENT = 1


class Header(NamedTuple):
    magic: bytes
    version: int
    state: int
    header_size: int
    flags: int
    total: int
    param0: int
    param1: int
    slots: int
    slot_offset: int
    name_len: int
    creator_pid: int
    created_ns: int


assert Header._fields == tuple(field for field, _ in _FIELDS)


def magic(letter: str) -> bytes:
    """The magic of a kind's segments."""
    return MAGIC_PREFIX + letter.encode() + b"\x00"


# -- fields ----------------------------------------------------------------------
def read_header(mm: mmap.mmap) -> Header:
    return Header(*HEADER_FORMAT.unpack_from(mm, 0))


def write_header(mm: mmap.mmap, header: Header) -> None:
    HEADER_FORMAT.pack_into(mm, 0, *header)


def set_state(mm: mmap.mmap, state: int) -> None:
    """One aligned 4-byte store: readers see the old state or the new one."""
    _U32.pack_into(mm, _OFFSET["state"], state)


def set_flags(mm: mmap.mmap, flags: int) -> None:
    _U32.pack_into(mm, _OFFSET["flags"], flags)


def write_name(mm: mmap.mmap, raw_name: bytes, tag: bytes) -> None:
    mm[NAME_OFFSET : NAME_OFFSET + len(raw_name)] = raw_name
    mm[TAG_OFFSET : TAG_OFFSET + len(tag)] = tag


def read_tag(mm: mmap.mmap) -> bytes:
    return bytes(mm[TAG_OFFSET : TAG_OFFSET + TAG_CAPACITY]).rstrip(b"\0")


def stored_name(mm: mmap.mmap, header: Header) -> str:
    """The user's name as the header has it (U+FFFD for bytes that are not
    a name: the header is untrusted)."""
    raw = bytes(mm[NAME_OFFSET : NAME_OFFSET + min(header.name_len, NAME_CAPACITY)])
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


# -- the attach table ------------------------------------------------------------
def this_process() -> tuple[int, int, int]:
    """(pid, start token, pid namespace) of this process, as its attach
    slots record it (cached per pid: a forked child has its own)."""
    pid = os.getpid()
    cached = _THIS.get(pid)
    if cached is None:
        token = _os.process_token(pid) or 0
        cached = _THIS[pid] = (pid, token, _os.pid_namespace())
    return cached


_THIS: dict[int, tuple[int, int, int]] = {}


def _slot(mm: mmap.mmap, i: int) -> tuple[int, int, int, int, int]:
    pid, opens, token, ns, reserved = SLOT.unpack_from(mm, SLOT_OFFSET + i * SLOT.size)
    return pid, opens, token, ns, reserved


def _set_slot(mm: mmap.mmap, i: int, values: tuple[int, int, int, int, int]) -> None:
    SLOT.pack_into(mm, SLOT_OFFSET + i * SLOT.size, *values)


def slots(mm: mmap.mmap) -> list[tuple[int, int, int, int, int]]:
    """The attach table: (pid, opens, start token, pid namespace, 0) each."""
    return [_slot(mm, i) for i in range(SLOT_COUNT)]


def reap(mm: mmap.mmap, clear: bool = True) -> tuple[int, int]:
    """Count the live and the dead processes in the attach table, clearing
    the slots of the dead ones unless ``clear`` is False.  Only proof of
    death counts as dead: a process whose liveness cannot be seen from here
    (another pid namespace; the OS refusing to tell) is alive."""
    live = dead = 0
    my_ns = this_process()[2]
    for i in range(SLOT_COUNT):
        pid, _opens, token, ns, _ = _slot(mm, i)
        if pid == 0:
            continue
        if ns != my_ns or process_alive(pid, token):
            live += 1
        else:
            dead += 1
            if clear:
                _set_slot(mm, i, (0, 0, 0, 0, 0))
    return live, dead


def process_alive(pid: int, token: int) -> bool:
    current = _os.process_token(pid)
    # token 0: the OS could not tell start times; trust the pid alone.
    return current is not None and (token == 0 or current == 0 or current == token)


def register(mm: mmap.mmap) -> None:
    """With the segment lock held: count one more open by this process."""
    pid, token, ns = me = this_process()
    free = None
    for i in range(SLOT_COUNT):
        spid, opens, stoken, sns, _ = _slot(mm, i)
        if (spid, stoken, sns) == me:
            _set_slot(mm, i, (pid, opens + 1, token, ns, 0))
            return
        if spid == 0 and free is None:
            free = i
    if free is None:
        reap(mm)
        free = next((i for i in range(SLOT_COUNT) if _slot(mm, i)[0] == 0), None)
        if free is None:
            raise OSError(errno.EUSERS, f"more than {SLOT_COUNT} processes have it open")
    _set_slot(mm, free, (pid, 1, token, ns, 0))


def unregister(mm: mmap.mmap) -> None:
    """With the segment lock held: count one open fewer by this process."""
    pid, token, ns = me = this_process()
    for i in range(SLOT_COUNT):
        spid, opens, stoken, sns, _ = _slot(mm, i)
        if (spid, stoken, sns) == me:
            _set_slot(mm, i, (pid, opens - 1, token, ns, 0) if opens > 1 else (0, 0, 0, 0, 0))
            return
