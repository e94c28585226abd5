"""The OS limits that decide what a peer can run here, read once per suite.

POSIX message queues are charged to the user, against RLIMIT_MSGQUEUE
(800 KiB by default on Linux): a queue that would pass it is refused with
EMFILE, which posix_ipc reports as "This process already has the maximum
number of files open".  The suite raises the soft limit to the hard limit
(never the hard limit itself), and the header says so.  System V queues
have system-wide limits instead (kernel.msgmax per message, kernel.msgmnb
per queue), which only an administrator can change.
"""

from __future__ import annotations

import os
import resource
from typing import Any

CLONE_NEWIPC = 0x08000000  # <sched.h>
MSGSIZE_MAX = "/proc/sys/fs/mqueue/msgsize_max"


def read_int(path: str, default: int) -> int:
    """The first number in a /proc/sys file, or ``default`` where there is none."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def kib(n: int) -> str:
    """A size in bytes as the report shows it: 8 KiB, 1 MiB, 819,201 B."""
    if n and n % (1 << 20) == 0:
        return f"{n >> 20:,} MiB"
    return f"{n >> 10:,} KiB" if n and n % 1024 == 0 else f"{n:,} B"


def _show(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY else kib(n)


def msgqueue_limit() -> int | None:
    """This process's soft RLIMIT_MSGQUEUE in bytes (None: no such limit here)."""
    if not hasattr(resource, "RLIMIT_MSGQUEUE"):
        return None
    return resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]


def raise_msgqueue_limit() -> str:
    """Raise the soft RLIMIT_MSGQUEUE to the hard limit; say what was done.
    Worker processes inherit it; the queues are created by the suite's own
    process anyway."""
    if not hasattr(resource, "RLIMIT_MSGQUEUE"):
        return "no RLIMIT_MSGQUEUE on this OS"
    soft, hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    if soft == hard:
        return f"RLIMIT_MSGQUEUE {_show(soft)} (soft = hard limit, nothing to raise)"
    try:
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (hard, hard))
    except (OSError, ValueError) as e:
        return f"RLIMIT_MSGQUEUE {_show(soft)} (raising it to the hard limit failed: {e})"
    return f"RLIMIT_MSGQUEUE raised from {_show(soft)} to the hard limit, {_show(hard)}"


def posix_queue_refusal(posix_ipc: Any, name: str, depth: int, size: int) -> str | None:
    """Create (and at once remove) a POSIX queue of ``depth`` messages of
    ``size`` bytes: None if the kernel takes it, else its answer."""
    try:
        q = posix_ipc.MessageQueue(
            name, posix_ipc.O_CREX, max_messages=depth, max_message_size=size
        )
    except (OSError, ValueError, posix_ipc.Error) as e:
        return f"{type(e).__name__}: {e}"
    q.unlink()
    q.close()
    return None


def private_ipc_namespace(msgsize: int) -> str:
    """Move this process, and the workers it starts later, into an IPC
    namespace of its own whose fs.mqueue.msgsize_max is ``msgsize`` (Linux,
    as root), so that posix_ipc can run the larger messages; the machine's
    own setting, and every other process, stay as they are.  Only that one
    limit changes: the queue depths (fs.mqueue.msg_max) and RLIMIT_MSGQUEUE
    stay, so the rows of small messages are the same as without it.
    Returns what was done, for the header."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    unshare = libc.unshare  # int unshare(int flags);
    unshare.argtypes, unshare.restype = [ctypes.c_int], ctypes.c_int
    if unshare(CLONE_NEWIPC) != 0:
        why = os.strerror(ctypes.get_errno())
        return f"--ipc-namespace: unshare(CLONE_NEWIPC) failed ({why}); the machine's limits apply"
    try:
        with open(MSGSIZE_MAX, "w") as f:
            f.write(str(msgsize))
    except OSError as e:
        return f"--ipc-namespace: a private IPC namespace, but {MSGSIZE_MAX} is unchanged ({e})"
    return (f"--ipc-namespace: a private IPC namespace whose fs.mqueue.msgsize_max is "
            f"{kib(msgsize)} (the machine's own is unchanged)")  # fmt: skip
