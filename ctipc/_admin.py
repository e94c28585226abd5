"""What ``python -m ctipc ls``, ``rm`` and ``gc`` do, as functions."""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import NamedTuple

from . import _names, _segment
from ._backend import os_backend as _os
from ._header import (
    FLAG_PERSISTENT,
    HEADER_SIZE,
    STATE_INIT,
    STATE_READY,
    STATE_REMOVED,
    read_header,
    reap,
    stored_name,
)
from ._segment import KINDS, STALE_INIT_AFTER

__all__ = ["ObjectInfo", "collect", "list_objects", "remove"]

_STATES = {STATE_INIT: "creating", STATE_READY: "ok", STATE_REMOVED: "removed"}


class ObjectInfo(NamedTuple):
    kind: str  # "Semaphore", "Lock", "SharedMemory", ...
    name: str  # the user's name ("?" if unreadable)
    os_name: str
    size: int  # the kind's size parameter (SharedMemory size, queue capacity)
    processes: int  # attached processes that are alive
    dead: int  # slots of processes that died without closing
    persistent: bool
    state: str  # ok, creating, removed, stale (nobody alive), corrupt
    messages: int | None = None  # messages queued (MessageQueue only)

    def as_dict(self) -> dict[str, object]:
        return self._asdict()


def _kind_of(os_name: str) -> _segment.Kind | None:
    # ctipc-<kind><role>-<digest>: only header segments (role "h") are objects
    if not _names.is_ctipc_os_name(os_name) or os_name[7] != "h":
        return None
    return KINDS.get(os_name[6])


def _inspect(os_name: str, kind: _segment.Kind) -> ObjectInfo:
    label = kind.label
    try:
        seg = _os.segment_attach(os_name)
    except FileNotFoundError:
        return ObjectInfo(label, "?", os_name, 0, 0, 0, False, "removed")
    try:
        size = seg.size
        if size is not None and size < HEADER_SIZE:
            return ObjectInfo(label, "?", os_name, 0, 0, 0, False, "creating")
        mm = _os.segment_map(seg, 0, HEADER_SIZE)
        try:
            h = read_header(mm)
            # for display: a name with lone surrogates prints as U+FFFD
            raw = stored_name(mm, h).encode("utf-8", "surrogatepass")
            name = raw.decode("utf-8", "replace")
            alive, dead = reap(mm, clear=False)
        finally:
            mm.close()
        state = _STATES.get(h.state, "corrupt")
        if h.magic != _segment.MAGIC_PREFIX + kind.letter.encode() + b"\0":
            state = "corrupt"
        persistent = bool(h.flags & FLAG_PERSISTENT)
        if state == "ok" and not alive and not persistent and not _os.KERNEL_LIFETIME:
            state = "stale"
        messages = kind.count(seg) if state in ("ok", "stale") else None
        return ObjectInfo(label, name, os_name, h.param0, alive, dead, persistent, state, messages)
    finally:
        _os.segment_close(seg)


def list_objects() -> list[ObjectInfo]:
    """Every ctipc object on this machine (where the OS can enumerate them)."""
    infos = []
    for os_name in _os.segment_list():
        kind = _kind_of(os_name)
        if kind is not None:
            infos.append(_inspect(os_name, kind))
    return infos


def remove(name: str, kinds: list[str] | None = None) -> list[str]:
    """Remove the objects called ``name`` (of the given kind labels, default
    all); return the labels of those that existed."""
    _names.validate_name(name)
    if _os.KERNEL_LIFETIME:
        raise OSError(
            errno.EOPNOTSUPP,
            f"on {_os.PLATFORM} an object lives while any process has it open; "
            "it cannot be removed by name",
            name,
        )
    removed = []
    for kind in KINDS.values():
        if kinds is None or kind.label in kinds:
            if _segment.unlink_by_name(kind, name):
                removed.append(kind.label)
    return removed


def collect() -> list[ObjectInfo]:
    """Remove objects whose processes all died and half-created objects whose
    creator died.  Returns what was removed."""
    removed = []
    for os_name in _os.segment_list():
        kind = _kind_of(os_name)
        name = _collect_one(os_name, kind) if kind is not None else None
        if kind is not None and name is not None:
            removed.append(ObjectInfo(kind.label, name, os_name, 0, 0, 0, False, "removed"))
    return removed


def _collect_one(os_name: str, kind: _segment.Kind) -> str | None:
    """Remove the object if it is stale; return its name ("?" if unknown)."""
    try:
        seg = _os.segment_attach(os_name)
    except FileNotFoundError:
        return None
    try:
        if not _os.segment_lock(seg, 0.5):
            return None  # busy: someone is creating, attaching or closing it
        size = seg.size
        if size is not None and size < HEADER_SIZE:
            # Lock free and still not sized: the creator died half-way (allow
            # for one that is between shm_open and taking the lock).
            if _age(os_name) > STALE_INIT_AFTER and _os.segment_unlink(os_name):
                return "?"
            return None
        mm = _os.segment_map(seg, 0, HEADER_SIZE)
        try:
            h = read_header(mm)
            if h.state == STATE_READY:
                if reap(mm)[0] or h.flags & FLAG_PERSISTENT or kind.abandoned_held(seg):
                    return None
            elif h.state == STATE_REMOVED:
                # its remover died between marking and unlinking it
                return "?" if _segment.finish_removal(kind, os_name, h) else None
            elif h.state != STATE_INIT:
                return None  # corrupt: leave that to `rm`
            name = stored_name(mm, h)
            struct.pack_into("=I", mm, 12, STATE_REMOVED)
        finally:
            mm.close()
        kind.remove_extras(os_name)
        return name if _os.segment_unlink(os_name) else None
    finally:
        _os.segment_close(seg)


def _age(os_name: str) -> float:
    try:
        return time.time() - os.stat(os.path.join("/dev/shm", os_name)).st_ctime
    except OSError:
        return float("inf")
