"""The parent side of the crash tests and the soak.

A :class:`Rig` creates a MessageQueue, a Lock and a SharedMemory, runs the
participants of ``_crashkit`` as separate interpreters, SIGKILLs and
restarts them on request, stops them, and then accounts for every message
from the tables they kept (see ``_crashkit``).  ``analyze`` never trusts a
participant's own verdict: it recounts from the per-slot tables.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

from _crashkit import (
    C_CORRUPT,
    C_DELIVERED,
    C_EMPTIES,
    C_HWM,
    C_REDELIVERED,
    C_REORDERED,
    GET_MANY_MAX,
    H_CAP,
    H_CONSUMERS,
    H_COPY_A,
    H_COPY_B,
    H_LOCKERS,
    H_PRODUCERS,
    H_RECOVERIES,
    H_STOP_CONSUMERS,
    H_STOP_LOCKERS,
    H_STOP_PRODUCERS,
    H_TORN,
    H_TORN_REPAIRED,
    L_ACQUIRES,
    L_INCREMENTS,
    L_MAX_WAIT_US,
    L_TIMEOUTS,
    P_CLAIMED,
    P_COMMITTED,
    READY,
    Layout,
    Recorder,
    Tables,
)
from helpers import CHILD_PIDS, child_env

import ctipc
from ctipc._ring import CONSUMERS_WAITING, PRODUCERS_WAITING

KIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_crashkit.py")
ROLES = ("producer", "consumer", "locker")
#: seconds a participant may take to start, to stop, or to make progress
DEADLINE = 30.0

Key = tuple[str, int]


class Rig:
    """Participants on one queue, Lock and SharedMemory called ``base``."""

    def __init__(
        self,
        base: str,
        *,
        producers: list[str],
        consumers: list[str],
        lockers: list[str] | None = None,
        cap: int = 100_000,
        capacity: int = 64 << 10,
        max_message: int = 4 << 10,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.modes: dict[Key, str] = {}
        for i, mode in enumerate(producers):
            self.modes["producer", i] = mode
        for i, mode in enumerate(consumers):
            self.modes["consumer", i] = mode
        lockers = lockers or []
        for i, mode in enumerate(lockers):
            self.modes["locker", i] = mode
        self.layout = lay = Layout(len(producers), len(consumers), len(lockers), cap)
        self.rng = random.Random(seed)
        self.procs: dict[Key, subprocess.Popen[bytes]] = {}
        self.uncertain: list[list[tuple[int, int]]] = [[] for _ in producers]
        self.kills: collections.Counter[str] = collections.Counter()
        self.startup_kills: collections.Counter[str] = collections.Counter()
        #: consumer kills, and the most messages those kills may have taken
        #: with them in plain get/get_many (at most once)
        self.taken_bound = 0
        self.failures: list[str] = []
        self.log = tempfile.NamedTemporaryFile(prefix="crashrig-", suffix=".log", delete=False)
        self.shm: ctipc.SharedMemory | None = None
        self.q: ctipc.MessageQueue | None = None
        self.lock: ctipc.Lock | None = None
        self.t: Tables | None = None
        try:
            self.shm = ctipc.SharedMemory(base, lay.size, create=True)
            self.t = Tables(self.shm, lay)
            w = self.t.w
            w[H_PRODUCERS], w[H_CONSUMERS], w[H_LOCKERS], w[H_CAP] = (
                lay.producers, lay.consumers, lay.lockers, lay.cap)  # fmt: skip
            self.q = ctipc.MessageQueue(
                base, capacity=capacity, max_message=max_message, create=True
            )
            self.lock = ctipc.Lock(base, create=True)
        except BaseException:
            self.close()
            raise

    # -- participants ----------------------------------------------------------------
    @property
    def w(self) -> memoryview:
        assert self.t is not None
        return self.t.w

    def keys(self, role: str | None = None) -> list[Key]:
        return [k for k in self.modes if role is None or k[0] == role]

    def start(self, key: Key) -> None:
        role, index = key
        seed = self.rng.getrandbits(32)
        cmd = [sys.executable, KIT, role, self.base, str(index), self.modes[key], str(seed)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=child_env()
        )
        CHILD_PIDS.add(proc.pid)
        self.procs[key] = proc

    def start_all(self, timeout: float = DEADLINE) -> None:
        for key in self.modes:
            self.start(key)
        for key in self.modes:
            self.wait_ready(key, timeout)

    def ready(self, key: Key) -> bool:
        proc = self.procs.get(key)
        return proc is not None and self.w[self.layout.slot(*key) + READY] == proc.pid

    def wait_ready(self, key: Key, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(key):
            proc = self.procs[key]
            if proc.poll() is not None:
                raise AssertionError(f"{key} exited with {proc.returncode}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{key} not ready within {timeout} s\n{self.log_tail()}")
            time.sleep(0.001)

    def kill(self, key: Key) -> None:
        """SIGKILL ``key`` (whatever it is doing) and reap it."""
        proc = self.procs.pop(key)
        was_ready = self.w[self.layout.slot(*key) + READY] == proc.pid
        proc.kill()
        proc.wait(DEADLINE)
        (self.kills if was_ready else self.startup_kills)[key[0]] += 1
        self._died(key)

    def _died(self, key: Key) -> None:
        role, index = key
        if role == "producer":
            base = self.layout.slot(role, index)
            claimed, committed = self.w[base + P_CLAIMED], self.w[base + P_COMMITTED]
            if claimed > committed:
                self.uncertain[index].append((committed + 1, claimed))
        elif role == "consumer" and not self.modes[key].startswith("receive"):
            # at most once: what get or get_many returned dies with the process
            self.taken_bound += GET_MANY_MAX if self.modes[key] == "get_many" else 1

    def reap_exited(self) -> list[Key]:
        """Participants that ended by themselves: a failure, except for a
        producer that put its ``cap`` messages (it is not listed)."""
        gone = []
        for key, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            del self.procs[key]
            if key[0] == "producer" and proc.returncode == 0 and self.finished(key[1]):
                continue
            self.failures.append(f"{key} exited with {proc.returncode}")
            self._died(key)
            gone.append(key)
        return gone

    def finished(self, producer: int) -> bool:
        """Producer ``producer`` put every message its table has room for."""
        return self.progress(("producer", producer)) >= self.layout.cap

    def progress(self, key: Key) -> int:
        base = self.layout.slot(*key)
        field = {"producer": P_COMMITTED, "consumer": C_DELIVERED, "locker": L_INCREMENTS}
        return int(self.w[base + field[key[0]]])

    def wait_progress(self, key: Key, beyond: int, timeout: float = DEADLINE) -> float:
        """Wait until ``key`` made progress past ``beyond``; seconds it took."""
        start = time.monotonic()
        while self.progress(key) <= beyond:
            if key[0] == "producer" and self.finished(key[1]):
                break  # it put all its table has room for: there is no more to come
            if key in self.procs and self.procs[key].poll() is not None:
                raise AssertionError(f"{key} exited\n{self.log_tail()}")
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{key} made no progress in {timeout} s\n{self.log_tail()}")
            time.sleep(0.0005)
        return time.monotonic() - start

    def pending(self) -> bool:
        """Some producer's last committed message is not delivered yet."""
        lay, w = self.layout, self.w
        for i in range(lay.producers):
            committed = w[lay.slot("producer", i) + P_COMMITTED]
            hwm = max(w[lay.slot("consumer", c) + C_HWM + i] for c in range(lay.consumers + 1))
            if committed > hwm:
                return True
        return False

    def delivered(self) -> int:
        lay = self.layout
        return sum(self.w[lay.slot("consumer", c) + C_DELIVERED] for c in range(lay.consumers))

    # -- stopping ----------------------------------------------------------------------
    def _join(self, role: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for key in self.keys(role):
            proc = self.procs.pop(key, None)
            if proc is None:
                continue
            try:
                rc = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(DEADLINE)
                self.failures.append(f"{key} did not stop within {timeout} s")
                self._died(key)
                continue
            if rc != 0:
                self.failures.append(f"{key} exited with {rc}")
                self._died(key)

    def stop(self, timeout: float = DEADLINE) -> None:
        """Stop the producers, let the consumers empty the queue, stop the
        rest, then take what is left in the queue into the parent's slot."""
        w = self.w
        w[H_STOP_PRODUCERS] = 1
        self._join("producer", timeout)
        consumers = [k for k in self.keys("consumer") if k in self.procs]
        empties = {k: w[self.layout.slot(*k) + C_EMPTIES] for k in consumers}
        deadline = time.monotonic() + timeout
        # drained: every consumer found the queue empty once since the producers stopped
        while any(w[self.layout.slot(*k) + C_EMPTIES] <= n for k, n in empties.items()):
            if self.reap_exited() or time.monotonic() > deadline:
                self.failures.append("the consumers did not empty the queue")
                break
            time.sleep(0.002)
        w[H_STOP_CONSUMERS] = 1
        self._join("consumer", timeout)
        w[H_STOP_LOCKERS] = 1
        self._join("locker", timeout)
        self._drain_rest()

    def _drain_rest(self) -> None:
        assert self.q is not None and self.t is not None
        recorder = Recorder(self.t, self.layout.consumers)
        try:
            if any(m.startswith("receive") for m in self.modes.values()):
                while True:
                    try:
                        with self.q.receive(block=False) as m:
                            recorder.record(m.data, m.redelivered)
                    except ctipc.Empty:
                        break
            else:
                while True:
                    try:
                        recorder.record(self.q.get_nowait(), False)
                    except ctipc.Empty:
                        break
        finally:
            recorder.release()

    # -- accounting --------------------------------------------------------------------
    def analyze(self) -> dict[str, Any]:
        """Every figure of the run, recounted from the tables."""
        lay, w = self.layout, self.w
        assert self.t is not None
        slots = range(lay.consumers + 1)
        tables = []
        for s in slots:
            view = self.t.table(s)
            tables.append(bytes(view))
            view.release()
        f: dict[str, Any] = collections.Counter()
        for i in range(lay.producers):
            claimed = w[lay.slot("producer", i) + P_CLAIMED]
            unsure = set()
            for lo, hi in self.uncertain[i]:
                unsure.update(range(lo, hi + 1))
            start = i * lay.cap
            rows = [t[start : start + claimed] for t in tables]
            for seq0, cells in enumerate(zip(*rows)):
                plain = sum(c & 0x0F for c in cells)
                again = sum(c >> 4 for c in cells)
                f["duplicated"] += max(0, plain - 1)
                if seq0 + 1 in unsure:
                    f["uncertain"] += 1
                    f["uncertain delivered"] += plain + again > 0
                else:
                    f["committed"] += 1
                    f["missing"] += plain + again == 0
            for t in tables:  # beyond what was ever claimed
                tail = t[start + claimed : start + lay.cap]
                f["fabricated"] += len(tail) - tail.count(0)
        for s in slots:
            base = lay.slot("consumer", s)
            f["deliveries"] += w[base + C_DELIVERED]
            f["redelivered"] += w[base + C_REDELIVERED]
            f["corrupted"] += w[base + C_CORRUPT]
            f["reordered"] += w[base + C_REORDERED]
        f["delivered"] = f["committed"] - f["missing"] + f["uncertain delivered"]
        f["taken by killed consumers"] = min(f["missing"], self.taken_bound)
        f["lost"] = f["missing"] - f["taken by killed consumers"]
        lockers = [lay.slot("locker", i) for i in range(lay.lockers)]
        f["lock increments"] = sum(w[b + L_INCREMENTS] for b in lockers)
        f["lock acquires"] = sum(w[b + L_ACQUIRES] for b in lockers)
        f["lock timeouts"] = sum(w[b + L_TIMEOUTS] for b in lockers)
        f["longest lock wait"] = max((w[b + L_MAX_WAIT_US] for b in lockers), default=0) / 1e6
        f["lock recoveries"] = w[H_RECOVERIES]
        f["lock torn and repaired"] = w[H_TORN_REPAIRED]
        f["lock torn unnoticed"] = w[H_TORN] + (w[H_COPY_A] != w[H_COPY_B])
        f["producers finished"] = sum(self.finished(i) for i in range(lay.producers))
        # what the kills left in the queue's control words (docs/crash.md):
        # registrations of killed waiters, and len()'s drift, once it is empty
        assert self.q is not None
        words = self.q._w
        f["waiters left registered"] = [words[CONSUMERS_WAITING], words[PRODUCERS_WAITING]]
        f["len when empty"] = len(self.q)
        f["kills"] = dict(self.kills)
        f["kills during start-up"] = dict(self.startup_kills)
        f["failures"] = list(self.failures)
        return dict(f)

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            text = f.read()[-20000:].decode("utf-8", "replace")
        return "--- participants' output ---\n" + "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(DEADLINE)
        self.procs.clear()
        if self.t is not None:
            self.t.release()
            self.t = None
        for obj in (self.lock, self.q, self.shm):
            if obj is not None:
                obj.close()
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
