"""What ``python -m ctipc ls``, ``rm`` and ``gc`` do, as functions.

They look at objects as ``open`` does (``_named.peek``) and remove them by
the same protocol, so they never remove what another process just created;
an object this user cannot read, or something else planted at a ctipc
name, is listed as such and never stops the others from being listed."""

from __future__ import annotations

import errno
import functools
import time
from typing import NamedTuple

from . import _names, _segment
from ._backend import os_backend as _os
from ._header import FLAG_PERSISTENT, reap, stored_name
from ._named import (
    BUSY,
    CORRUPT,
    CREATING,
    GONE,
    READY,
    REMOVED,
    Look,
    peek,
    remove_if,
    stale_creation,
)
from ._segment import KINDS

__all__ = ["ObjectInfo", "collect", "list_objects", "remove"]

# How long ls and gc wait for an object's lock before showing it as busy.
_PATIENCE = 0.5


class ObjectInfo(NamedTuple):
    kind: str  # "Semaphore", "Lock", "SharedMemory", ...
    name: str  # the user's name ("?" if unreadable)
    os_name: str
    size: int  # the kind's size parameter (SharedMemory size, queue capacity)
    processes: int  # attached processes that are alive
    dead: int  # slots of processes that died without closing
    persistent: bool
    # ok, creating, removed, stale (nobody alive), owner-died (a Lock whose
    # holder died holding it: kept for the next acquire), busy (its lock
    # stayed taken), corrupt, unreadable (no permission), broken (not a
    # segment, or one too short for what its header says)
    state: str
    messages: int | None = None  # messages queued (MessageQueue only)

    def as_dict(self) -> dict[str, object]:
        return self._asdict()


def _kind_of(os_name: str) -> _segment.Kind | None:
    # ctipc-<kind><role>-<digest>: only header segments (role "h") are objects
    if not _names.is_ctipc_os_name(os_name) or os_name[7] != "h":
        return None
    return KINDS.get(os_name[6])


def _unreadable(error: OSError) -> str:
    return "unreadable" if error.errno in (errno.EACCES, errno.EPERM) else "broken"


def _inspect(os_name: str, kind: _segment.Kind) -> ObjectInfo:
    label = kind.label
    try:
        with peek(os_name, kind.letter, time.monotonic() + _PATIENCE) as found:
            return _describe(os_name, kind, found)
    except OSError as e:  # EACCES: another user's; EINVAL, ELOOP: not a segment
        return ObjectInfo(label, "?", os_name, 0, 0, 0, False, _unreadable(e))
    except ValueError:  # a mapping longer than the file: truncated under us
        return ObjectInfo(label, "?", os_name, 0, 0, 0, False, "broken")


_STATES = {GONE: "removed", BUSY: "busy", CREATING: "creating", REMOVED: "removed",
           CORRUPT: "corrupt", READY: "ok"}  # fmt: skip


def _describe(os_name: str, kind: _segment.Kind, found: Look) -> ObjectInfo:
    state = _STATES[found.state]
    h, mm, seg = found.header, found.mm, found.seg
    if h is None or mm is None or seg is None:
        return ObjectInfo(kind.label, "?", os_name, 0, 0, 0, False, state)
    # for display: a name with lone surrogates prints as U+FFFD
    name = stored_name(mm, h).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    alive, dead = reap(mm, clear=False)
    persistent = bool(h.flags & FLAG_PERSISTENT)
    size = seg.size
    if state == "ok" and size is not None and size < h.total:
        state = "broken"  # truncated: shorter than its header says
    if state == "ok" and not alive and not _os.KERNEL_LIFETIME:
        if kind.abandoned_held(seg):
            state = "owner-died"
        elif not persistent:
            state = "stale"
    messages = None
    if state in ("ok", "stale", "owner-died"):
        try:
            messages = kind.count(seg)
        except (OSError, ValueError):
            state = "broken"
    return ObjectInfo(kind.label, name, os_name, h.param0, alive, dead, persistent, state, messages)


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
    creator died.  Returns what was removed.  Objects this user cannot open
    are left alone (their holders cannot be seen from here)."""
    removed = []
    for os_name in _os.segment_list():
        kind = _kind_of(os_name)
        if kind is None:
            continue
        names: list[str] = []
        try:
            done, _ = remove_if(
                kind,
                os_name,
                time.monotonic() + _PATIENCE,
                functools.partial(_stale, kind, names=names),
            )
        except (OSError, ValueError):
            continue  # another user's, or not a segment: `ls` shows it
        if done:
            name = names[0] if names else "?"
            removed.append(ObjectInfo(kind.label, name, os_name, 0, 0, 0, False, "removed"))
    return removed


def _stale(kind: _segment.Kind, found: Look, names: list[str]) -> bool:
    """gc's rule, with the object's lock held."""
    assert found.seg is not None
    if found.state == CREATING:
        # Lock free and still not made: its creator died half-way (allowing
        # for one between shm_open and taking the lock).
        return stale_creation(found.seg)
    if found.state != READY or found.mm is None or found.header is None:
        return False  # corrupt: leave that to `rm`
    h = found.header
    if reap(found.mm)[0] or h.flags & FLAG_PERSISTENT or kind.abandoned_held(found.seg):
        return False
    names.append(stored_name(found.mm, h))
    return True
