"""Adapters for the semaphores and locks: ctipc's and its peers'.

``open`` runs in the suite's process and creates the object (a semaphore
starting at 0, or an unlocked lock); ``attach`` runs in a worker and gives
an object with ``acquire(timeout)`` and ``release()``.  ``pingpong`` says
whether the object can be released by a process that did not acquire it
(a semaphore can, a lock cannot), which the ping-pong needs.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Any

from _peers import Channel


class Sem:
    label = ""
    needs: tuple[str, ...] = ()
    pingpong = True

    def available(self) -> str | None:
        for module in self.needs:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001
                return f"{module} does not import: {type(e).__name__}: {e}"
        return None

    def open(self, ctx: Any, tag: str) -> Channel:
        raise NotImplementedError

    def close(self, ch: Channel) -> None:
        pass

    def attach(self, handle: Any) -> Any:
        """An object with acquire(blocking=True, timeout=None) and release()."""
        return handle

    def calls(self, obj: Any) -> tuple[Any, Any]:
        """The acquire and release an application would call, without
        arguments, on an object from ``attach``: the peer's own where
        ``attach`` wraps it, so no adapter frame is timed."""
        return obj.acquire, obj.release


class CtipcSemaphore(Sem):
    label = "ctipc.Semaphore"
    needs = ("ctipc",)

    def open(self, ctx: Any, tag: str) -> Channel:
        import ctipc

        return Channel(tag, ctipc.Semaphore(tag, initial=0, create=True))

    def close(self, ch: Channel) -> None:
        ch.keep.unlink()
        ch.keep.close()

    def attach(self, handle: Any) -> Any:
        import ctipc

        return ctipc.Semaphore(handle, create=False)


class CtipcLock(Sem):
    label = "ctipc.Lock"
    needs = ("ctipc",)
    pingpong = False

    def open(self, ctx: Any, tag: str) -> Channel:
        import ctipc

        return Channel(tag, ctipc.Lock(tag, create=True))

    def close(self, ch: Channel) -> None:
        ch.keep.unlink()
        ch.keep.close()

    def attach(self, handle: Any) -> Any:
        import ctipc

        return ctipc.Lock(handle, create=False)


class _PosixSem:
    def __init__(self, name: str) -> None:
        import posix_ipc  # type: ignore[import-not-found]

        self.s = posix_ipc.Semaphore(name)
        self.busy = posix_ipc.BusyError
        self.release = self.s.release

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self.s.acquire(timeout if blocking else 0)
        except self.busy:
            return False
        return True


class PosixSemaphore(Sem):
    label = "posix_ipc.Semaphore"
    needs = ("posix_ipc",)

    def open(self, ctx: Any, tag: str) -> Channel:
        import posix_ipc

        name = "/" + tag
        return Channel(name, posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0))

    def close(self, ch: Channel) -> None:
        ch.keep.unlink()
        ch.keep.close()

    def attach(self, handle: Any) -> Any:
        return _PosixSem(handle)

    def calls(self, obj: Any) -> tuple[Any, Any]:
        return obj.s.acquire, obj.s.release


class _SysvSem:
    def __init__(self, key: int) -> None:
        import sysv_ipc  # type: ignore[import-not-found]

        self.s = sysv_ipc.Semaphore(key)
        self.busy = sysv_ipc.BusyError
        self.release = self.s.release
        # Without semtimedop (SEMAPHORE_TIMEOUT_SUPPORTED false, as in the
        # Linux wheels) a timeout is ignored and the call blocks: the suite's
        # deadline covers that.  Not blocking is asked through .block.
        self.timed = sysv_ipc.SEMAPHORE_TIMEOUT_SUPPORTED

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            if not blocking:
                self.s.block = False
                try:
                    self.s.acquire()
                finally:
                    self.s.block = True
            else:
                self.s.acquire(timeout if self.timed else None)
        except self.busy:
            return False
        return True


class SysvSemaphore(Sem):
    label = "sysv_ipc.Semaphore"
    needs = ("sysv_ipc",)

    def open(self, ctx: Any, tag: str) -> Channel:
        import sysv_ipc

        s = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, initial_value=0)
        return Channel(s.key, s)

    def close(self, ch: Channel) -> None:
        with contextlib.suppress(Exception):
            ch.keep.remove()

    def attach(self, handle: Any) -> Any:
        return _SysvSem(handle)

    def calls(self, obj: Any) -> tuple[Any, Any]:
        return obj.s.acquire, obj.s.release


class MpSemaphore(Sem):
    label = "mp.Semaphore"

    def open(self, ctx: Any, tag: str) -> Channel:
        return Channel(ctx.Semaphore(0))


class MpLock(Sem):
    label = "mp.Lock"
    pingpong = False

    def open(self, ctx: Any, tag: str) -> Channel:
        return Channel(ctx.Lock())


class ThreadingLock(Sem):
    """In-process only: the floor for an acquire+release from Python."""

    label = "threading.Lock"
    pingpong = False

    def open(self, ctx: Any, tag: str) -> Channel:
        return Channel(None)

    def attach(self, handle: Any) -> Any:
        return threading.Lock()


def semaphores() -> list[Sem]:
    return [
        CtipcSemaphore(), CtipcLock(), PosixSemaphore(), SysvSemaphore(),
        MpSemaphore(), MpLock(), ThreadingLock(),
    ]  # fmt: skip
