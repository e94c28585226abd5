"""The flat API of the Node.js addon node_ipc, in Python spelling.

Objects are kept per process and keyed by name (queues by a small index, as
the addon did): ``sem_create``, ``sem_open``, ``sem_close``, ``sem_require``,
``sem_release``, ``shm_create``, ``shm_open``, ``shm_close``,
``shm_read_buf``, ``shm_read_str``, ``shm_write_str``, ``mq_create``,
``mq_establish``, ``mq_listen``, ``mq_publish``, ``process_exit``.

A call that names an object this process has not opened yet opens it by
name (the addon's README releases a semaphore from a server that never
created it); a name that exists nowhere raises FileNotFoundError.  Each
function is a thin layer over the object API; docs/api.md maps one to the
other.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from .listener import Listener
from .mq import MessageQueue
from .semaphore import Semaphore
from .shm import SharedMemory

__all__ = [
    "mq_create",
    "mq_establish",
    "mq_listen",
    "mq_publish",
    "process_exit",
    "sem_close",
    "sem_create",
    "sem_open",
    "sem_release",
    "sem_require",
    "shm_close",
    "shm_create",
    "shm_open",
    "shm_read_buf",
    "shm_read_str",
    "shm_write_str",
]

_T = TypeVar("_T", Semaphore, SharedMemory)

_lock = threading.RLock()
_semaphores: dict[str, Semaphore] = {}
_memories: dict[str, SharedMemory] = {}
_queues: dict[int, MessageQueue] = {}
_listeners: list[Listener] = []


def _get(table: dict[str, _T], name: str, make: Callable[[], _T]) -> _T:
    """``table[name]``, made with ``make()`` first if this process has not
    opened it here yet."""
    with _lock:
        obj = table.get(name)
        if obj is None:
            obj = table[name] = make()
        return obj


def _close(table: dict[str, _T], name: str) -> None:
    with _lock:
        obj = table.pop(name, None)
    if obj is not None:
        obj.close()


# -- semaphores ----------------------------------------------------------------
def sem_create(name: str) -> None:
    """Open the semaphore ``name``, creating it with one permit if needed."""
    _get(_semaphores, name, lambda: Semaphore(name, initial=1))


def sem_open(name: str) -> None:
    """Open the existing semaphore ``name`` (FileNotFoundError if none)."""
    _semaphore(name)


def _semaphore(name: str) -> Semaphore:
    return _get(_semaphores, name, lambda: Semaphore(name, create=False))


def sem_close(name: str) -> None:
    """Close this process's handle of ``name`` (nothing if not open)."""
    _close(_semaphores, name)


def sem_require(name: str, timeout: float | None = None) -> bool:
    """Take a permit, waiting for it (at most ``timeout`` seconds)."""
    return _semaphore(name).acquire(timeout=timeout)


def sem_release(name: str) -> None:
    """Give a permit back."""
    _semaphore(name).release()


# -- shared memory -----------------------------------------------------------------
def shm_create(name: str, size: int) -> None:
    """Create the shared memory ``name`` of ``size`` bytes: FileExistsError
    if it exists, unless this process has it open already (then nothing)."""
    _get(_memories, name, lambda: SharedMemory(name, size, create=True))


def shm_open(name: str, size: int) -> None:
    """Open the shared memory ``name``, creating it with ``size`` bytes if
    it does not exist."""
    _get(_memories, name, lambda: SharedMemory(name, size))


def _memory(name: str) -> SharedMemory:
    return _get(_memories, name, lambda: SharedMemory(name, create=False))


def shm_close(name: str) -> None:
    _close(_memories, name)


def shm_read_buf(name: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``."""
    return _memory(name).read(offset, length)


def shm_read_str(name: str, offset: int, length: int) -> str:
    """The UTF-8 text at ``offset``, at most ``length`` bytes, up to a NUL."""
    raw = _memory(name).read(offset, length)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def shm_write_str(name: str, offset: int, text: str) -> int:
    """Write ``text`` (UTF-8, NUL-terminated) at ``offset``; bytes written."""
    return _memory(name).write_str(text, offset)


# -- message queues ----------------------------------------------------------------
def _queue(index: int) -> MessageQueue:
    with _lock:
        queue = _queues.get(index)
    if queue is None:
        raise ValueError(f"no message queue with index {index!r} in this process")
    return queue


def _open_queue(name: str, create: bool | None) -> int:
    with _lock:
        for index, known in _queues.items():
            if known.name == name:  # opened here already: the same index
                return index
        index = max(_queues, default=-1) + 1
        _queues[index] = MessageQueue(name, create=create)
        return index


def mq_create(name: str) -> int:
    """Open the queue ``name``, creating it if needed; its index here."""
    return _open_queue(name, None)


def mq_establish(name: str) -> int:
    """Open the existing queue ``name`` (FileNotFoundError if none)."""
    return _open_queue(name, False)


def mq_listen(callback: Callable[[str], object], index: int) -> Listener:
    """Call ``callback(text)`` in a thread for each message (UTF-8 decoded,
    as the addon delivered strings)."""
    queue = _queue(index)
    listener = queue.listen(lambda data: callback(data.decode("utf-8", "replace")))
    with _lock:
        _listeners.append(listener)
    return listener


def mq_publish(index: int, data: str | bytes) -> None:
    """Put ``data`` (a str is sent as UTF-8) on the queue."""
    _queue(index).put(data.encode("utf-8") if isinstance(data, str) else data)


# -- all -------------------------------------------------------------------------------
def process_exit() -> None:
    """Stop the listeners and close everything this process opened here."""
    with _lock:
        listeners = list(_listeners)
        _listeners.clear()
        objects: list[Semaphore | SharedMemory | MessageQueue] = [
            *_semaphores.values(),
            *_memories.values(),
            *_queues.values(),
        ]
        _semaphores.clear()
        _memories.clear()
        _queues.clear()
    for listener in listeners:
        listener.stop()
    for obj in objects:
        obj.close()
