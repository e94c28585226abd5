"""The lifetime rule, with real processes (POSIX: ctipc's attach table).

An object lives while any process has it open; the last one out removes it,
also when the others died by SIGKILL; ``persistent=True`` keeps it until
``unlink()``; a process that only attached never removes an object another
live process still uses.
"""

from __future__ import annotations

import os
import textwrap
import time
import warnings

import pytest
from helpers import (
    HAVE_DEV_SHM,
    HAVE_FORK,
    HAVE_SIGKILL,
    Child,
    exists,
    header_path,
    kinds,
    make,
    run_child,
    semaphore_path,
)

import ctipc

needs_sigkill = pytest.mark.skipif(not HAVE_SIGKILL, reason="no SIGKILL here")
needs_persistent = pytest.mark.skipif(
    not ctipc.PERSISTENT_SUPPORTED, reason="persistent objects are not supported here"
)

#: child code that opens ``sys.argv[2]`` kind object ``sys.argv[1]`` as ``obj``
OPEN = textwrap.dedent(
    """
    cls = getattr(ctipc, sys.argv[2])
    obj = cls(sys.argv[1], create=False)
    """
)


def os_entries(cls: type, name: str) -> list[str]:
    """The /dev/shm files behind object ``name`` that exist now."""
    paths = [header_path(cls, name)]
    if cls is ctipc.Semaphore:
        paths.append(semaphore_path(name))
    return [p for p in paths if os.path.exists(p)]


def assert_gone(cls: type, name: str) -> None:
    if HAVE_DEV_SHM:
        assert os_entries(cls, name) == []
    with pytest.raises(FileNotFoundError):
        cls(name, create=False)


def assert_alive(cls: type, name: str) -> None:
    if HAVE_DEV_SHM:
        assert os_entries(cls, name) != []
    assert exists(cls, name)


ENDINGS = {
    "close": "obj.close()",
    "exit without close": "sys.exit(0)",
    "os._exit": "os._exit(0)",
}


@kinds
@pytest.mark.parametrize("ending", list(ENDINGS) + ["SIGKILL"])
def test_attacher_that_exits_does_not_destroy_the_object(name: str, cls: type, ending: str) -> None:
    if ending == "SIGKILL" and not HAVE_SIGKILL:
        pytest.skip("no SIGKILL here")
    obj = make(cls, name)
    try:
        if cls is ctipc.SharedMemory:
            obj.write(b"creator's")
        code = OPEN + "out('attached')\ninp()\n" + ENDINGS.get(ending, "")
        with Child(code, name, cls.__name__) as child:
            child.expect("attached")
            if ending == "SIGKILL":
                child.kill()
            else:
                child.send()
                assert child.wait() == 0
        assert_alive(cls, name)
        if cls is ctipc.SharedMemory:
            assert obj.read(0, 9) == b"creator's"
            with ctipc.SharedMemory(name, create=False) as again:
                assert again.read(0, 9) == b"creator's"
        elif cls is ctipc.Semaphore:
            assert obj.acquire(blocking=False)
            obj.release()
        else:
            with obj:
                assert not obj.owner_died
    finally:
        obj.close()
    assert_gone(cls, name)


@kinds
def test_last_closer_removes_the_object(name: str, cls: type) -> None:
    obj = make(cls, name)
    try:
        code = OPEN + "out('attached')\ninp()\nobj.close()\nout('closed')\ninp()"
        with Child(code, name, cls.__name__) as child:
            child.expect("attached")
            obj.close()  # the creator leaves first
            assert_alive(cls, name)
            child.send()
            child.expect("closed")
            assert_gone(cls, name)  # while the child still runs
            child.send()
            child.finish()
    finally:
        obj.close()
    assert_gone(cls, name)


@kinds
def test_creator_exit_leaves_the_object_to_the_attacher(name: str, cls: type) -> None:
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
        obj = cls(sys.argv[1], create=True, **kwargs)
        out("created")
        inp()
    """
    with Child(code, name, cls.__name__) as child:
        child.expect("created")
        obj = cls(name, create=False)
        try:
            child.send()
            child.finish()
            assert_alive(cls, name)
        finally:
            obj.close()
    assert_gone(cls, name)


@needs_sigkill
@kinds
def test_object_of_killed_processes_is_cleaned_by_the_next_open(name: str, cls: type) -> None:
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 100} if sys.argv[2] == "SharedMemory" else {}
        if sys.argv[2] == "Semaphore":
            kwargs["initial"] = 2
        objs = [cls(sys.argv[1], **kwargs) for _ in range(2)]
        if sys.argv[2] == "SharedMemory":
            objs[0].write(b"stale data")
        if sys.argv[2] == "Lock":
            objs[0].acquire()
        out("ready")
        inp()
    """
    with Child(code, name, cls.__name__) as a:
        a.expect("ready")
        with Child(OPEN + "out('attached')\ninp()", name, cls.__name__) as b:
            b.expect("attached")
            a.kill()
            b.kill()
    if HAVE_DEV_SHM:
        assert os_entries(cls, name) != []  # nobody could clean up
    # The next open notices that everyone died and starts afresh.
    if cls is ctipc.SharedMemory:
        with ctipc.SharedMemory(name, 300) as shm:
            assert shm.size == 300
            assert shm.read() == bytes(300)
    elif cls is ctipc.Semaphore:
        sem = ctipc.Semaphore(name, initial=5)
        try:
            n = 0
            while sem.acquire(blocking=False):
                n += 1
            assert n == 5
        finally:
            sem.close()
    else:
        lock = ctipc.Lock(name)
        try:
            assert lock.acquire(timeout=5)
            # The dead holder's death is told to the next user, though the
            # Lock's every user died (where objects die with their last
            # handle, Windows, it is a new Lock)
            assert lock.owner_died is not ctipc._backend.os_backend.KERNEL_LIFETIME
            lock.release()
        finally:
            lock.close()
    assert_gone(cls, name)


@needs_sigkill
@kinds
def test_object_of_killed_processes_is_not_found_by_attach(name: str, cls: type) -> None:
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 100} if sys.argv[2] == "SharedMemory" else {}
        obj = cls(sys.argv[1], **kwargs)
        out("ready")
        inp()
    """
    with Child(code, name, cls.__name__) as a:
        a.expect("ready")
        a.kill()
    with pytest.raises(FileNotFoundError) as info:
        cls(name, create=False)
    assert info.value.filename == name
    assert_gone(cls, name)  # and the attach removed the remains


@needs_persistent
@kinds
def test_persistent_survives_all_closes_until_unlink(name: str, cls: type) -> None:
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
        if sys.argv[2] == "Semaphore":
            kwargs["initial"] = 3
        obj = cls(sys.argv[1], create=True, persistent=True, **kwargs)
        if sys.argv[2] == "SharedMemory":
            obj.write_str("kept")
        obj.close()
    """
    run_child(code, name, cls.__name__)
    assert_alive(cls, name)
    run_child(OPEN + "obj.close()", name, cls.__name__)  # an attacher leaves too
    obj = cls(name, create=False)
    try:
        if cls is ctipc.SharedMemory:
            assert obj.read_str() == "kept"
        elif cls is ctipc.Semaphore:
            assert [obj.acquire(blocking=False) for _ in range(4)] == [True] * 3 + [False]
            obj.release(3)
    finally:
        obj.close()
    assert_alive(cls, name)
    obj.unlink()
    assert_gone(cls, name)


@needs_persistent
@kinds
def test_persistent_object_of_a_killed_process_is_kept(name: str, cls: type) -> None:
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
        obj = cls(sys.argv[1], persistent=True, **kwargs)
        out("ready")
        inp()
    """
    with Child(code, name, cls.__name__) as a:
        a.expect("ready")
        a.kill()
    obj = cls(name, create=False)
    obj.close()
    assert_alive(cls, name)
    obj.unlink()
    assert_gone(cls, name)


@needs_persistent
def test_attaching_with_persistent_makes_it_persistent(name: str) -> None:
    shm = ctipc.SharedMemory(name, 16)
    again = ctipc.SharedMemory(name, persistent=True)
    again.close()
    shm.close()
    assert_alive(ctipc.SharedMemory, name)
    shm.unlink()
    assert_gone(ctipc.SharedMemory, name)


def test_unlink_while_another_process_has_it_open(name: str) -> None:
    shm = ctipc.SharedMemory(name, 32)
    try:
        shm.write(b"old object")
        code = """
            shm = ctipc.SharedMemory(sys.argv[1], create=False)
            out("attached")
            inp()
            out(shm.read(0, 10).decode())
            shm.write(b"child wrote")
            out("written")
            inp()
            shm.close()
        """
        with Child(code, name) as child:
            child.expect("attached")
            shm.unlink()
            if HAVE_DEV_SHM:
                assert os_entries(ctipc.SharedMemory, name) == []
            child.send()
            child.expect("old object")  # the other process keeps working
            child.expect("written")
            assert shm.read(0, 11) == b"child wrote"
            # a new open by name creates a new object
            with ctipc.SharedMemory(name, 64) as new:
                assert new.size == 64
                assert new.read() == bytes(64)
                new.write(b"new")
                assert shm.read(0, 3) == b"chi"
            child.send()
            child.finish()
    finally:
        shm.close()
    assert_gone(ctipc.SharedMemory, name)


def test_unlink_semaphore_while_another_process_waits_on_it(name: str) -> None:
    sem = ctipc.Semaphore(name, initial=0)
    try:
        code = """
            sem = ctipc.Semaphore(sys.argv[1], create=False)
            out("attached")
            out(sem.acquire(timeout=30))
            sem.close()
        """
        with Child(code, name) as child:
            child.expect("attached")
            sem.unlink()
            fresh = ctipc.Semaphore(name, initial=0)  # a different semaphore
            try:
                fresh.release()
                assert child.silent_for(0.3)  # not the child's semaphore
                sem.release()
                child.expect("True")
                child.finish()
                assert fresh.acquire(blocking=False)
            finally:
                fresh.close()
    finally:
        sem.close()
    assert_gone(ctipc.Semaphore, name)


@kinds
def test_unlink_then_reopen_in_the_same_process(name: str, cls: type) -> None:
    old = make(cls, name)
    try:
        old.unlink()
        new = make(cls, name, create=True)  # the name is free again
        new.close()
    finally:
        old.close()
    assert_gone(cls, name)


@pytest.mark.skipif(not HAVE_FORK, reason="no fork here")
@kinds
def test_forked_child_that_exits_does_not_remove_the_parents_object(name: str, cls: type) -> None:
    obj = make(cls, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                if cls is ctipc.SharedMemory:
                    obj.write(b"forked")
                obj.close()
                ctipc._lifetime._close_all()  # what an exiting interpreter runs
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert_alive(cls, name)
        if cls is ctipc.SharedMemory:
            assert obj.read(0, 6) == b"forked"
            obj.write(b"parent")
        elif cls is ctipc.Semaphore:
            assert obj.acquire(blocking=False)
            obj.release()
    finally:
        obj.close()
    assert_gone(cls, name)


def test_failed_attach_in_another_process_does_not_unlink(name: str) -> None:
    with ctipc.SharedMemory(name, 100) as shm:
        shm.write(b"alive")
        out = run_child(
            """
            for size in (1, 99, 101, 4096):
                try:
                    ctipc.SharedMemory(sys.argv[1], size)
                except ctipc.IncompatibleError:
                    out("incompatible")
            """,
            name,
        )
        assert out.split() == ["incompatible"] * 4
        assert_alive(ctipc.SharedMemory, name)
        assert shm.read(0, 5) == b"alive"
        run_child(OPEN + "obj.close()", name, "SharedMemory")
    assert_gone(ctipc.SharedMemory, name)


@kinds
def test_many_processes_attach_and_leave(name: str, cls: type) -> None:
    obj = make(cls, name)
    try:
        children = [
            Child(OPEN + "out('attached')\ninp()\nobj.close()", name, cls.__name__)
            for _ in range(4)
        ]
        try:
            for c in children:
                c.expect("attached")
            for i, c in enumerate(children):
                if i % 2 and HAVE_SIGKILL:
                    c.kill()
                else:
                    c.send()
                    c.finish()
                assert_alive(cls, name)
        finally:
            for c in children:
                c.close()
    finally:
        obj.close()
    assert_gone(cls, name)


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()[0].decode()


@needs_sigkill
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_killed_process_not_yet_reaped_counts_as_dead(name: str) -> None:
    """A zombie (killed, not yet waited for) has not got the object open."""
    code = "obj = ctipc.SharedMemory(sys.argv[1], 64)\nobj.write(b'stale')\nout('ready')\ninp()"
    with Child(code, name) as child:
        child.expect("ready")
        child.signal(9)
        deadline = time.monotonic() + 10
        while _proc_state(child.pid) != "Z":  # bounded poll of the child's state
            assert time.monotonic() < deadline, "the child did not become a zombie"
            time.sleep(0.01)
        with ctipc.SharedMemory(name, 32) as fresh:
            assert fresh.size == 32 and fresh.read() == bytes(32)
    assert_gone(ctipc.SharedMemory, name)


@pytest.mark.skipif(not os.path.exists("/proc/self/comm"), reason="needs /proc/self/comm")
def test_process_with_a_tricky_command_name_counts_as_alive(name: str) -> None:
    """/proc/<pid>/stat puts the command name in parentheses; a name with
    ") Z " in it must not make a live process look like a zombie."""
    code = """
        with open("/proc/self/comm", "w") as f:
            f.write("a) Z 1 2 (b")
        obj = ctipc.SharedMemory(sys.argv[1], create=False)
        out("attached")
        inp()
        out(obj.read(0, 4).decode())
        obj.close()
    """
    shm = ctipc.SharedMemory(name, 16)
    try:
        shm.write(b"live")
        with Child(code, name) as child:
            child.expect("attached")
            shm.close()  # the child is the last one with it open
            assert_alive(ctipc.SharedMemory, name)
            child.send()
            child.expect("live")
            child.finish()
    finally:
        shm.close()
    assert_gone(ctipc.SharedMemory, name)


@kinds
@pytest.mark.parametrize("first_unlink", [True, False], ids=["unlinked", "closed"])
def test_unlink_after_close_spares_a_newer_object_of_that_name(
    name: str, cls: type, first_unlink: bool
) -> None:
    """close() and unlink() are idempotent: once this handle's object is gone,
    a later unlink() must not remove a *new* object that another process has
    since created under the same name (the "cleanup that destroys other
    processes' objects" anti-pattern)."""
    old = make(cls, name)
    if first_unlink:
        old.unlink()
    else:
        old.close()  # the last one out: the object is removed
    code = """
        cls = getattr(ctipc, sys.argv[2])
        kwargs = {"size": 64} if sys.argv[2] == "SharedMemory" else {}
        obj = cls(sys.argv[1], create=True, **kwargs)
        out("created")
        inp()
        again = cls(sys.argv[1], create=False)
        again.close()
        out("still there")
        obj.close()
    """
    with Child(code, name, cls.__name__) as child:
        child.expect("created")
        old.close()
        old.unlink()  # again, or for the first time after close
        child.send()
        child.expect("still there")
        child.finish()
    assert_gone(cls, name)
