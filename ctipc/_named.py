"""Looking at a named object's segment, and removing it.

One recipe serves ``open``, ``ls``, ``gc``, ``rm`` and ``unlink``: attach by
name, take the segment lock (waiting in slices against a deadline), map the
header, read it and say what it is (``look``).  Removal is decided under that
lock and by identity: a name is unlinked only while it still leads to the
very segment whose lock is held (``remove_locked``), never by name alone.
So a process that attached to one segment can never remove another that a
different process created under the same name meanwhile (docs/FORMAT.md,
"Creation and removal").
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, NamedTuple

from ._backend import Segment
from ._backend import os_backend as _os
from ._header import (
    HEADER_SIZE,
    STATE_INIT,
    STATE_READY,
    STATE_REMOVED,
    Header,
    magic,
    read_header,
    set_state,
)
from ._wait import wait

if TYPE_CHECKING:
    from ._segment import Kind

# What a look finds
GONE = "gone"  # no such name
BUSY = "busy"  # its lock stayed taken until the deadline
CREATING = "creating"  # its creator has not finished (or died before it did)
READY = "ready"  # a usable object of this kind, as far as the header says
REMOVED = "removed"  # marked removed; its remover died before unlinking it
CORRUPT = "corrupt"  # neither of these

# A segment still uninitialised this long after it appeared, with its lock
# free, was left by a creator that died half-way: it is removed.
STALE_INIT_AFTER = 1.0


class Look(NamedTuple):
    state: str
    seg: Segment | None  # None: GONE
    mm: mmap.mmap | None  # the header mapped (None: not mapped, too short)
    header: Header | None


def lock(seg: Segment, deadline: float) -> bool:
    """Take ``seg``'s lock, waiting (in backend slices) until ``deadline``
    (a ``time.monotonic()`` value; one try once it has passed)."""
    return wait(
        lambda seconds: _os.segment_lock(seg, seconds), True, None, _never_closed, deadline=deadline
    )


def _never_closed() -> None:
    pass


def look(seg: Segment, letter: str) -> Look:
    """With ``seg``'s lock held: map its header and say what it is.  The
    caller closes ``mm``."""
    size = seg.size
    if size is not None and size < HEADER_SIZE:
        return Look(CREATING, seg, None, None)
    mm = _os.segment_map(seg, 0, HEADER_SIZE)
    header = read_header(mm)
    if header.state == STATE_INIT and header.magic in (bytes(8), magic(letter)):
        state = CREATING
    elif header.state == STATE_REMOVED:
        state = REMOVED
    elif header.state == STATE_READY and header.magic == magic(letter):
        state = READY
    else:
        state = CORRUPT
    return Look(state, seg, mm, header)


def stale_creation(seg: Segment) -> bool:
    """With the lock of a segment that looks CREATING held: True if its
    creator died.  A creator holds the lock from just after ``shm_open`` to
    the end; one between those two steps is given ``STALE_INIT_AFTER``."""
    return bool(seg.age > STALE_INIT_AFTER)


@contextmanager
def peek(os_name: str, letter: str, deadline: float) -> Iterator[Look]:
    """Attach to ``os_name``, lock it and ``look`` at it; unlock and close
    after the block.  OSError from attaching (permissions, a directory or a
    symbolic link planted at the name) propagates."""
    try:
        seg = _os.segment_attach(os_name)
    except FileNotFoundError:
        yield Look(GONE, None, None, None)
        return
    try:
        if not lock(seg, deadline):
            yield Look(BUSY, seg, None, None)
            return
        mm = None
        try:
            found = look(seg, letter)
            mm = found.mm
            yield found
        finally:
            if mm is not None:
                mm.close()
            _os.segment_unlock(seg)
    finally:
        _os.segment_close(seg)


def remove_locked(kind: Kind, seg: Segment, mm: mmap.mmap | None) -> bool:
    """With ``seg``'s lock held: mark it removed and unlink its names, if its
    name still leads to it (else it is already gone: leave the name alone).
    Every unlink happens under the lock of the segment it removes, so the
    answer of ``segment_named`` holds until the lock is released."""
    if not _os.segment_named(seg):
        return False
    if mm is not None:
        set_state(mm, STATE_REMOVED)
    kind.remove_extras(seg.os_name)
    return _os.segment_unlink(seg.os_name)


def remove_if(
    kind: Kind, os_name: str, deadline: float, decide: Callable[[Look], bool]
) -> tuple[bool, str]:
    """Remove the object at ``os_name`` if ``decide(look)`` says so, under its
    lock.  Returns (whether it was removed, what the look found: GONE, BUSY
    if its lock stayed taken until ``deadline``, ...).  One its remover left
    marked removed is finished whatever ``decide`` says."""
    with peek(os_name, kind.letter, deadline) as found:
        if found.seg is None or found.state == BUSY:
            return False, found.state
        if found.state == REMOVED:
            return remove_locked(kind, found.seg, None), found.state
        return decide(found) and remove_locked(kind, found.seg, found.mm), found.state
