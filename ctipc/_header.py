"""The header every ctipc object's segment starts with: its byte layout
(docs/FORMAT.md; keep the two in step), how to read it, and its attach
table (which processes have the object open, and which of them died).
Everything read from shared memory is untrusted: callers check it."""

from __future__ import annotations

import mmap
import os
import struct
from typing import NamedTuple

from ._backend import os_backend as _os

VERSION = 1
MAGIC_PREFIX = b"CTIPC\x00"
# magic(8) version state header_size flags | total param0 param1 | slots
# slot_offset name_len creator_pid | created_ns
HEADER_FORMAT = struct.Struct("=8s4I3Q4IQ")
NAME_OFFSET = 128
NAME_CAPACITY = 1024  # 255 characters of UTF-8 fit
TAG_OFFSET = NAME_OFFSET + NAME_CAPACITY  # 64 bytes of ASCII for the kind
TAG_CAPACITY = 64
SLOT_OFFSET = 2048
SLOT_COUNT = 256
SLOT = struct.Struct("=IIQQQ")  # pid, opens, start token, pid namespace, reserved
# The kind's own area starts after the slot table, at a boundary every OS
# can map from (Windows maps at 64 KiB granularity).
HEADER_SIZE = max(
    SLOT_OFFSET + SLOT_COUNT * SLOT.size + 2048,
    mmap.ALLOCATIONGRANULARITY,
)
HEADER_SIZE = -(-HEADER_SIZE // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY

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


def read_header(mm: mmap.mmap) -> Header:
    return Header(*HEADER_FORMAT.unpack_from(mm, 0))


def stored_name(mm: mmap.mmap, header: Header) -> str:
    """The user's name as the header has it (U+FFFD for bytes that are not
    a name: the header is untrusted)."""
    raw = bytes(mm[NAME_OFFSET : NAME_OFFSET + min(header.name_len, NAME_CAPACITY)])
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


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


def reap(mm: mmap.mmap, clear: bool = True) -> tuple[int, int]:
    """Count the live and the dead processes in the attach table, clearing
    the slots of the dead ones unless ``clear`` is False."""
    live = dead = 0
    my_ns = this_process()[2]
    for i in range(SLOT_COUNT):
        offset = SLOT_OFFSET + i * SLOT.size
        pid, _opens, token, ns, _ = SLOT.unpack_from(mm, offset)
        if pid == 0:
            continue
        if ns != my_ns or process_alive(pid, token):
            live += 1  # another pid namespace cannot be checked from here
        else:
            dead += 1
            if clear:
                SLOT.pack_into(mm, offset, 0, 0, 0, 0, 0)
    return live, dead


def process_alive(pid: int, token: int) -> bool:
    current = _os.process_token(pid)
    # token 0: the OS could not tell start times; trust the pid alone.
    return current is not None and (token == 0 or current == 0 or current == token)
