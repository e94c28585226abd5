"""The portable layer against the in-memory fake backend (tests/fake_backend.py).

Every portable module's ``_os`` is replaced by the fake, and ``os.getpid`` as
``_segment`` sees it by the fake's simulated process, so that one test can
play several processes, kill them, and reuse their pids.  Each test runs in
two modes: ``posix`` (ctipc's attach table decides lifetime) and ``kernel``
(Windows-like: objects die with their last handle; no table, no unlink, no
persistent objects), the latter a path that cannot run on this machine.
"""

from __future__ import annotations

import gc
import inspect
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from fake_backend import ContractError, FakeBackend, OsProxy
from helpers import kinds, make

import ctipc
from ctipc import _backend, _header, _lifetime, _named, _names, _segment
from ctipc._backend import WAIT_SLICE

A, B, C = 1001, 1002, 1003


@pytest.fixture(params=["posix", "kernel"])
def fake(
    request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeBackend]:
    # Real objects that earlier (failed) tests left to the collector must be
    # collected by the real backend, not by this fake: pytest keeps the last
    # failure's frames in sys.last_traceback.
    for attr in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, attr):
            setattr(sys, attr, None)
    gc.collect()
    backend = FakeBackend(str(tmp_path), kernel_lifetime=request.param == "kernel", pid=A)
    real = _backend.os_backend
    patched = []
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("ctipc") and getattr(module, "_os", None) is real:
            monkeypatch.setattr(module, "_os", backend)
            patched.append(module_name)
    assert {"ctipc._header", "ctipc._segment", "ctipc.lock", "ctipc.semaphore", "ctipc.shm"} <= set(
        patched
    )
    monkeypatch.setattr(_backend, "os_backend", backend)
    monkeypatch.setattr(_segment, "os", OsProxy(backend))
    monkeypatch.setattr(_header, "os", OsProxy(backend))
    monkeypatch.setattr(_header, "_THIS", {})
    finalizers = set(weakref.finalize._registry)  # type: ignore[attr-defined]
    cores = set(_lifetime._LIVE)
    try:
        yield backend
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.passed:
            gc.collect()
            # Everything the test opened it closed: no handle, mapping or lock left.
            assert backend.open_handles() == {
                "segments": 0,
                "maps": 0,
                "semaphores": 0,
                "mutexes": 0,
            }
            assert backend.locks_held() == []
    finally:
        # Objects a failed test still references must never reach the real
        # backend with fake handles (at their collection, or at exit).
        for f in set(weakref.finalize._registry) - finalizers:  # type: ignore[attr-defined]
            f.detach()
        for core in set(_lifetime._LIVE) - cores:
            core.closing = core.close_started = True


posix_only = pytest.mark.parametrize("fake", ["posix"], indirect=True)
kernel_only = pytest.mark.parametrize("fake", ["kernel"], indirect=True)


def os_name(cls: type, name: str) -> str:
    letter = {ctipc.Semaphore: "s", ctipc.Lock: "l", ctipc.SharedMemory: "m"}[cls]
    return _names.os_name(letter, "h", name)


def crash(fake: FakeBackend, obj: Any, pid: int) -> None:
    """Process ``pid`` dies (SIGKILL): the OS closes its handles; no ctipc
    code runs, so its slot stays in the attach table."""
    core = obj._core
    if isinstance(obj, ctipc.SharedMemory):
        obj._buf.release()
        obj._data.close()
    if isinstance(obj, ctipc.Semaphore):  # with the bound calls' own reference
        core.kind.release(core.resources)
    for key, close in (("sem", fake.semaphore_close), ("mutex", fake.mutex_close)):
        handle = core.resources.pop(key, None)
        if handle is not None:
            close(handle)
    core._abandon()
    core.closing = core.close_started = core.finished = True
    core.finalizer.detach()
    fake.kill(pid)


# -- basics ----------------------------------------------------------------------------


@kinds
def test_create_attach_close(fake: FakeBackend, cls: type) -> None:
    obj = make(cls, "jobs", create=True)
    assert fake.segment_list() == [os_name(cls, "jobs")]
    with pytest.raises(FileExistsError) as info:
        make(cls, "jobs", create=True)
    assert info.value.filename == "jobs"
    again = cls("jobs", create=False)
    again.close()
    assert fake.segment_list() == [os_name(cls, "jobs")]
    obj.close()
    assert fake.segment_list() == []
    with pytest.raises(FileNotFoundError) as info2:
        cls("jobs", create=False)
    assert info2.value.filename == "jobs"
    del obj, again
    gc.collect()
    assert fake.semaphores == {}


def test_closed_semaphore_can_be_created_again_while_still_referenced(fake: FakeBackend) -> None:
    """close() ends this process's use of the object.  Where the kernel keeps
    an object while any handle to it is open (Windows), the OS semaphore's
    handle must be closed by close() too, not only when the Python object is
    collected: else the name cannot be created again, and an "open or
    create" fails with FileExistsError."""
    old = ctipc.Semaphore("again", initial=0)
    old.close()
    new = ctipc.Semaphore("again", initial=3)  # `old` is still referenced
    try:
        assert new.value == 3
    finally:
        new.close()
    assert old.closed


def test_semaphore_counts(fake: FakeBackend) -> None:
    sem = ctipc.Semaphore("s", initial=2)
    try:
        assert sem.value == 2
        assert sem.acquire() and sem.acquire(blocking=False)
        assert not sem.acquire(blocking=False)
        start = time.monotonic()
        assert sem.acquire(timeout=0.3) is False
        assert time.monotonic() - start >= 0.25
        sem.release(3)
        assert sem.value == 3
        with pytest.raises(ValueError):
            sem.release(2**31 - 3)  # past the maximum: nothing posted
        assert sem.value == 3
    finally:
        sem.close()


def test_semaphore_wakes_a_waiter_in_another_process(fake: FakeBackend) -> None:
    sem = ctipc.Semaphore("s", initial=0)
    got: list[bool] = []

    def other() -> None:
        with fake.as_process(B):
            s = ctipc.Semaphore("s", create=False)
            try:
                got.append(s.acquire(timeout=10))
            finally:
                s.close()

    t = threading.Thread(target=other)
    t.start()
    try:
        sem.release()
        t.join(10)
        assert got == [True]
    finally:
        t.join(10)
        sem.close()
    assert fake.segment_list() == []


def test_shared_memory_maps_share_memory(fake: FakeBackend) -> None:
    a = ctipc.SharedMemory("m", 5000)
    with fake.as_process(B):
        b = ctipc.SharedMemory("m")
    try:
        assert b.size == 5000
        a.write_str("hello")
        assert b.read_str() == "hello"
        b.buf[4999] = 9
        assert a.read(4999) == b"\x09"
        with fake.as_process(B), pytest.raises(ctipc.IncompatibleError):
            ctipc.SharedMemory("m", 4999)
    finally:
        with fake.as_process(B):
            b.close()
        a.close()
    assert fake.segment_list() == []


def test_lock_between_processes(fake: FakeBackend) -> None:
    lock = ctipc.Lock("l")
    with fake.as_process(B):
        other = ctipc.Lock("l")
    try:
        assert lock.acquire()
        with fake.as_process(B):
            assert other.acquire(timeout=0.2) is False
            with pytest.raises(RuntimeError):
                other.release()
        assert lock.acquire(timeout=0.1) is False  # not reentrant
        lock.release()
        with fake.as_process(B):
            assert other.acquire(blocking=False)
            assert other.owner_died is False
            other.release()
    finally:
        with fake.as_process(B):
            other.close()
        lock.close()


# -- lifetime ---------------------------------------------------------------------------


@kinds
def test_object_lives_until_the_last_process_closes(fake: FakeBackend, cls: type) -> None:
    obj = make(cls, "o")
    with fake.as_process(B):
        other = cls("o", create=False)
    obj.close()  # the creator leaves first
    assert fake.segment_list() == [os_name(cls, "o")]
    with fake.as_process(B):
        other.close()
    assert fake.segment_list() == []


@kinds
def test_close_from_another_process_does_nothing(fake: FakeBackend, cls: type) -> None:
    """What a forked child does: the parent's objects are not its to close."""
    obj = make(cls, "o")
    with fake.as_process(B):
        obj.close()
    assert fake.segment_list() == [os_name(cls, "o")]
    assert not obj._core.closed  # still the parent's open object
    obj.close()
    assert fake.segment_list() == []


@kinds
def test_dead_processes_are_reaped_by_the_next_open(fake: FakeBackend, cls: type) -> None:
    with fake.as_process(B):
        dead = make(cls, "o", **({"initial": 0} if cls is ctipc.Semaphore else {}))
        if cls is ctipc.SharedMemory:
            dead.write(b"stale")
        if cls is ctipc.Lock:
            dead.acquire()
    with fake.as_process(C):
        dead2 = cls("o", create=False)
    crash(fake, dead, B)
    crash(fake, dead2, C)
    if not fake.KERNEL_LIFETIME:
        assert fake.segment_list() == [os_name(cls, "o")]  # nobody cleaned up
    else:
        assert fake.segment_list() == []  # the kernel did
    if cls is ctipc.SharedMemory:
        with ctipc.SharedMemory("o", 300) as fresh:
            assert fresh.size == 300 and fresh.read() == bytes(300)
    elif cls is ctipc.Semaphore:
        fresh = ctipc.Semaphore("o", initial=4)
        assert fresh.value == 4
        fresh.close()
    else:
        # The holder died holding it: kept for the next user, who is told
        # (where the kernel removes it with its last handle, the fact is gone)
        fresh = ctipc.Lock("o")
        assert fresh.acquire(blocking=False)
        assert fresh.owner_died is not fake.KERNEL_LIFETIME
        fresh.release()
        fresh.close()
    assert fake.segment_list() == []


@posix_only
@kinds
def test_dead_processes_make_attach_fail(fake: FakeBackend, cls: type) -> None:
    with fake.as_process(B):
        dead = make(cls, "o")
    crash(fake, dead, B)
    with pytest.raises(FileNotFoundError):
        cls("o", create=False)
    assert fake.segment_list() == []
    assert fake.semaphores == {}


@posix_only
def test_a_reused_pid_is_not_mistaken_for_the_dead_process(fake: FakeBackend) -> None:
    with fake.as_process(B):
        dead = ctipc.SharedMemory("o", 10)
    crash(fake, dead, B)
    fake.spawn(B)  # a new process gets the same pid (another start token)
    with ctipc.SharedMemory("o", 20) as fresh:
        assert fresh.size == 20


def test_lock_owner_died(fake: FakeBackend) -> None:
    lock = ctipc.Lock("l")
    with fake.as_process(B):
        holder = ctipc.Lock("l")
        holder.acquire()
    crash(fake, holder, B)
    try:
        assert lock.acquire(timeout=5)
        assert lock.owner_died is True
        lock.release()
        assert lock.acquire(timeout=5)
        assert lock.owner_died is False
        lock.release()
    finally:
        lock.close()


@posix_only
@kinds
def test_persistent_until_unlink(fake: FakeBackend, cls: type) -> None:
    obj = make(cls, "p", persistent=True)
    obj.close()
    assert fake.segment_list() == [os_name(cls, "p")]
    again = cls("p", create=False)
    again.close()
    assert fake.segment_list() == [os_name(cls, "p")]
    again.unlink()
    assert fake.segment_list() == []
    assert fake.semaphores == {}


@kernel_only
@kinds
def test_persistent_is_refused_where_objects_die_with_their_handles(
    fake: FakeBackend, cls: type
) -> None:
    with pytest.raises(ValueError):
        make(cls, "p", persistent=True)
    assert fake.segment_list() == []
    assert fake.calls.get("segment_create", 0) == 0


@posix_only
def test_unlink_while_another_process_has_it_open(fake: FakeBackend) -> None:
    a = ctipc.SharedMemory("u", 10)
    with fake.as_process(B):
        b = ctipc.SharedMemory("u")
    a.write(b"old")
    a.unlink()
    assert fake.segment_list() == []
    with fake.as_process(B):
        assert b.read(0, 3) == b"old"  # still works
    with ctipc.SharedMemory("u", 20) as new:  # a new object
        assert new.read() == bytes(20)
    a.close()
    with fake.as_process(B):
        b.close()
    assert fake.segment_list() == []


@kernel_only
def test_unlink_is_a_no_op_where_objects_die_with_their_handles(fake: FakeBackend) -> None:
    a = ctipc.Semaphore("u")
    a.unlink()
    assert fake.segment_list() == [os_name(ctipc.Semaphore, "u")]
    again = ctipc.Semaphore("u", create=False)
    again.close()
    a.close()
    a.unlink()
    assert fake.segment_list() == []
    del a, again
    gc.collect()
    assert fake.semaphores == {}


@kernel_only
def test_no_attach_table_where_the_kernel_keeps_count(fake: FakeBackend) -> None:
    with ctipc.SharedMemory("k", 10) as shm:
        raw = shm._core.mm[_header.SLOT_OFFSET : _header.SLOT_OFFSET + _header.SLOT_COUNT * 32]
        assert raw == bytes(len(raw))
    assert fake.calls.get("process_token", 0) == 0


@posix_only
def test_attach_table_counts_opens_per_process(fake: FakeBackend) -> None:
    a1 = ctipc.SharedMemory("t", 10)
    a2 = ctipc.SharedMemory("t")
    with fake.as_process(B):
        b = ctipc.SharedMemory("t")
    slots = [s for s in _header.slots(a1._core.mm) if s[0]]
    assert sorted((pid, opens) for pid, opens, *_ in slots) == [(A, 2), (B, 1)]
    a1.close()
    a2.close()
    slots = [s for s in _header.slots(b._core.mm) if s[0]]
    assert [(pid, opens) for pid, opens, *_ in slots] == [(B, 1)]
    with fake.as_process(B):
        b.close()
    assert fake.segment_list() == []


@posix_only
@kinds
def test_too_many_processes(fake: FakeBackend, cls: type) -> None:
    objs = []
    try:
        for i in range(_header.SLOT_COUNT):
            with fake.as_process(2000 + i):
                objs.append((2000 + i, make(cls, "many")))
        gc.collect()
        before = fake.open_handles()
        with fake.as_process(5000), pytest.raises(OSError) as info:
            make(cls, "many")
        assert info.value.filename == "many"
        gc.collect()
        # the failed attach released all it had opened
        assert fake.open_handles() == before
        # a dead process frees its slot for the next one
        pid, dead = objs.pop()
        crash(fake, dead, pid)
        with fake.as_process(5001):
            late = make(cls, "many")
            late.close()
    finally:
        for pid, obj in objs:
            with fake.as_process(pid):
                obj.close()
    assert fake.segment_list() == []


@kinds
def test_failed_create_releases_what_it_opened(fake: FakeBackend, cls: type) -> None:
    """An error late in a create (here Ctrl-C in the registration) undoes it
    all: no name, no handle of the kind's own OS resources left open."""

    def interrupted(self: Any) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_segment.Core, "_register", interrupted)
        with pytest.raises(KeyboardInterrupt):
            make(cls, "c")
    gc.collect()
    assert fake.segment_list() == []
    assert fake.semaphores == {}
    assert fake.open_handles() == {"segments": 0, "maps": 0, "semaphores": 0, "mutexes": 0}


def _refuse(self: Any, core: Any) -> None:
    raise ctipc.CorruptedError("refused", core.name)


@kinds
def test_failed_attach_does_not_unlink(fake: FakeBackend, cls: type) -> None:
    obj = make(cls, "f")
    try:
        with fake.as_process(B), pytest.MonkeyPatch.context() as mp:
            if cls is ctipc.SharedMemory:
                with pytest.raises(ctipc.IncompatibleError):
                    ctipc.SharedMemory("f", 99)
            elif cls is ctipc.Lock:
                mp.setattr(fake, "MUTEX_ABI", "another-abi")
                with pytest.raises(ctipc.IncompatibleError):
                    ctipc.Lock("f")
            else:
                mp.setattr(type(obj._core.kind), "on_attach", _refuse)
                with pytest.raises(ctipc.CorruptedError):
                    ctipc.Semaphore("f")
        assert fake.segment_list() == [os_name(cls, "f")]
        assert fake.calls.get("segment_unlink", 0) == 0
        again = cls("f", create=False)  # and it still works
        again.close()
    finally:
        obj.close()
    assert fake.segment_list() == []


@posix_only
def test_segment_left_half_made_by_a_dead_creator_is_replaced(
    fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_named, "STALE_INIT_AFTER", 0.2)
    seg = fake.segment_create(os_name(ctipc.SharedMemory, "h"), 100, 0o600, 0.05)
    fake.segment_close(seg)  # creator gone before writing the header
    start = time.monotonic()
    with ctipc.SharedMemory("h", 16) as shm:
        assert shm.size == 16
    assert time.monotonic() - start < 5
    assert fake.segment_list() == []


@kinds
def test_open_times_out_while_another_process_holds_the_segment_lock(
    fake: FakeBackend, cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_segment, "LOCK_TIMEOUT", 0.3)
    obj = make(cls, "busy")
    with fake.as_process(B):
        seg = fake.segment_attach(os_name(cls, "busy"))
        assert fake.segment_lock(seg, 0.05)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            make(cls, "busy")
        assert info.value.filename == "busy"
        assert 0.25 <= time.monotonic() - start < 5
    finally:
        fake.segment_unlock(seg)
        fake.segment_close(seg)
        obj.close()
    assert fake.segment_list() == []


def test_waits_are_sliced(fake: FakeBackend) -> None:
    """The portable layer never blocks in one backend call for longer than
    WAIT_SLICE (the fake raises ContractError otherwise)."""
    sem = ctipc.Semaphore("w", initial=0)
    lock = ctipc.Lock("w")
    with fake.as_process(B):
        other = ctipc.Lock("w")
        other.acquire()
    try:
        start = time.monotonic()
        assert sem.acquire(timeout=3 * WAIT_SLICE) is False
        assert lock.acquire(timeout=3 * WAIT_SLICE) is False
        assert time.monotonic() - start >= 5 * WAIT_SLICE
    finally:
        with fake.as_process(B):
            other.release()
            other.close()
        lock.close()
        sem.close()


@kinds
def test_kinds_have_separate_names(fake: FakeBackend, cls: type) -> None:
    objs = [make(c, "same") for c in (ctipc.Semaphore, ctipc.Lock, ctipc.SharedMemory)]
    assert len(fake.segment_list()) == 3
    for o in objs:
        o.close()
    assert fake.segment_list() == []


# -- the fake enforces the contract ----------------------------------------------------------


def test_fake_rejects_contract_violations(fake: FakeBackend) -> None:
    seg = fake.segment_create("ctipc-mh-test", 1 << 17, 0o600, 0.05)
    try:
        with pytest.raises(ContractError):
            fake.segment_lock(seg, 0)  # nested: it came back locked
        with pytest.raises(ContractError):
            fake.segment_map(seg, 100, 10)  # not at the granularity
        with pytest.raises(ContractError):
            fake.segment_map(seg, 0, (1 << 17) + 1)  # beyond the end
        mm = fake.segment_map(seg, 0, 4096)
        with pytest.raises(ContractError):
            fake.segment_close(seg)  # with a mapping open
        mm.close()
        fake.segment_unlock(seg)
        with pytest.raises(ContractError):
            fake.segment_unlock(seg)  # not held
        with pytest.raises(ContractError):
            fake.semaphore_post(12345, 1)  # unknown handle
        h = fake.semaphore_open("ctipc-sv-test", True, 0, 0o600)
        with pytest.raises(ContractError):
            fake.semaphore_wait(h, 1.0)  # longer than one slice
        fake.semaphore_close(h)
        with pytest.raises(ContractError):
            fake.semaphore_close(h)  # twice
    finally:
        fake.segment_close(seg)
        fake.segment_unlink("ctipc-mh-test")
        fake.semaphore_unlink("ctipc-sv-test")
    with pytest.raises(ContractError):
        fake.segment_close(seg)  # twice
    assert struct.calcsize("=IIQQQ") == _header.SLOT.size


# -- both backends implement the whole protocol ------------------------------------------


def _protocol_members() -> tuple[set[str], dict[str, list[str]]]:
    constants = set(_backend.Backend.__annotations__)
    methods = {
        n: [p for p in inspect.signature(f).parameters if p != "self"]
        for n, f in vars(_backend.Backend).items()
        if callable(f) and not n.startswith("_")
    }
    return constants, methods


@pytest.mark.parametrize("which", ["real", "fake"])
def test_backend_implements_the_protocol(which: str, tmp_path: Any) -> None:
    impl: Any = _backend.os_backend if which == "real" else FakeBackend(str(tmp_path))
    constants, methods = _protocol_members()
    assert methods, "the protocol declares no functions?"
    for c in constants:
        assert hasattr(impl, c), f"{which} backend lacks {c}"
    for n, params in methods.items():
        fn = getattr(impl, n, None)
        assert callable(fn), f"{which} backend lacks {n}()"
        # the portable layer passes arguments by position: the count matters
        assert len(inspect.signature(fn).parameters) == len(params), f"{n}{params}: arity differs"


@posix_only
@kinds
def test_a_creator_whose_new_segment_was_removed_before_its_lock_creates_again(
    fake: FakeBackend, cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between shm_open and the lock, another process took the empty segment
    for a dead creator's and removed it: the creator must not finish an
    object nobody can open (two objects under one name)."""
    real = fake.segment_create
    calls = []

    def create_then_lose_the_name(os_name: str, size: int, mode: int, timeout: float) -> Any:
        seg = real(os_name, size, mode, timeout)
        calls.append(os_name)
        if len(calls) == 1:
            fake.segment_unlink(os_name)  # what the other process did
        return seg

    monkeypatch.setattr(fake, "segment_create", create_then_lose_the_name)
    obj = make(cls, "lost")
    try:
        assert len(calls) == 2
        assert fake.segment_named(obj._core.seg)
        with fake.as_process(B):
            other = make(cls, "lost", create=False)  # the same object, by name
            assert other._core.seg.obj is obj._core.seg.obj
            other.close()
    finally:
        obj.close()
    assert fake.segment_list() == []


@posix_only
@kinds
def test_a_private_open_refuses_an_object_another_user_owns(fake: FakeBackend, cls: type) -> None:
    with fake.as_process(B):
        squatted = make(cls, "sq", permissions=0o666)
    fake.segments[os_name(cls, "sq")].owner = 12345
    try:
        with pytest.raises(PermissionError, match="another user") as info:
            make(cls, "sq")
        assert info.value.filename == "sq"
        shared = make(cls, "sq", permissions=0o660)  # sharing asked for: attaches
        shared.close()
    finally:
        with fake.as_process(B):
            squatted.close()
    assert fake.segment_list() == []
