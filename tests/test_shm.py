"""ctipc.SharedMemory: sizes, data across processes, bounds, buf, close."""

from __future__ import annotations

import array
import os

import pytest
from helpers import HAVE_DEV_SHM, Child, exists, run_child

import ctipc

TEXTS = ["hello", "", "Grüße, 世界 — ☃ 🐍", "x" * 1000]


def test_new_memory_is_zero(name: str) -> None:
    with ctipc.SharedMemory(name, 10_000) as shm:
        assert shm.read() == bytes(10_000)
        assert bytes(shm.buf) == bytes(10_000)


@pytest.mark.parametrize("size", [1, 7, 4096, 4097, 1 << 20])
def test_size_is_the_creators_in_every_process(name: str, size: int) -> None:
    with ctipc.SharedMemory(name, size) as shm:
        assert shm.size == size
        assert len(shm.buf) == size
        assert shm.buf.nbytes == size
        with ctipc.SharedMemory(name) as same:  # no size: attach
            assert same.size == size
        out = run_child(
            """
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                out(shm.size, len(shm.buf))
            with ctipc.SharedMemory(sys.argv[1], int(sys.argv[2])) as shm:
                out(shm.size)
            """,
            name,
            size,
        )
        assert out.split() == [str(size), str(size), str(size)]


def test_contradicting_size_raises_incompatible_and_keeps_the_object(name: str) -> None:
    with ctipc.SharedMemory(name, 100) as shm:
        shm.write(b"keep me")
        with pytest.raises(ctipc.IncompatibleError) as info:
            ctipc.SharedMemory(name, 200)
        assert info.value.name == name
        with pytest.raises(ctipc.IncompatibleError):
            ctipc.SharedMemory(name, 200, create=False)
        with pytest.raises(FileExistsError):
            ctipc.SharedMemory(name, 200, create=True)
        out = run_child(
            """
            try:
                ctipc.SharedMemory(sys.argv[1], 99)
            except ctipc.IncompatibleError as e:
                out("incompatible", e.name)
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                out(shm.read(0, 7).decode())
            """,
            name,
        )
        assert out.split() == ["incompatible", name, "keep", "me"]
        assert shm.read(0, 7) == b"keep me"
    assert not exists(ctipc.SharedMemory, name)


@pytest.mark.parametrize("text", TEXTS)
def test_str_written_in_one_process_is_read_in_another(name: str, text: str) -> None:
    with ctipc.SharedMemory(name, 4096) as shm:
        n = shm.write_str(text, 10)
        assert n == len(text.encode("utf-8")) + 1
        code = """
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                sys.stdout.buffer.write(shm.read_str(10).encode("utf-8").hex().encode() + b"\\n")
                sys.stdout.flush()
                shm.write_str(shm.read_str(10)[::-1], 2000)
        """
        out = run_child(code, name)
        assert bytes.fromhex(out.strip()).decode("utf-8") == text
        assert shm.read_str(2000) == text[::-1]


def test_bytes_written_in_one_process_are_read_in_another(name: str) -> None:
    data = bytes(range(256)) * 4
    with ctipc.SharedMemory(name, 2048) as shm:
        assert shm.write(data, 100) == len(data)
        out = run_child(
            """
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                out(shm.read(100, 1024).hex())
                out(shm.read(0, 100).hex())
                shm.write(b"\\xff" * 8, 2040)
            """,
            name,
        )
        lines = out.split()
        assert bytes.fromhex(lines[0]) == data
        assert bytes.fromhex(lines[1]) == bytes(100)
        assert shm.read(2040) == b"\xff" * 8
        assert shm.read(2040, 8) == b"\xff" * 8


def test_buf_is_zero_copy_across_processes(name: str) -> None:
    with ctipc.SharedMemory(name, 64) as shm:
        buf = shm.buf  # taken before the child writes
        code = """
            with ctipc.SharedMemory(sys.argv[1], create=False) as shm:
                out("attached")
                inp()
                shm.buf[0:5] = b"child"
                shm.buf[63] = 7
                out("written")
                inp()
                out(bytes(shm.buf[10:16]).decode())
        """
        with Child(code, name) as child:
            child.expect("attached")
            child.send()
            child.expect("written")
            assert bytes(buf[0:5]) == b"child"
            assert buf[63] == 7
            buf[10:16] = b"parent"
            child.send()
            child.expect("parent")
            child.finish()
        del buf


def test_buf_and_read_write_see_the_same_bytes(name: str) -> None:
    with ctipc.SharedMemory(name, 32) as shm:
        shm.buf[4:8] = b"abcd"
        assert shm.read(4, 4) == b"abcd"
        shm.write(b"XY", 5)
        assert bytes(shm.buf[4:8]) == b"aXYd"
        assert not shm.buf.readonly


def test_write_accepts_bytes_like_objects(name: str) -> None:
    with ctipc.SharedMemory(name, 64) as shm:
        assert shm.write(bytearray(b"ab")) == 2
        assert shm.write(memoryview(b"cd"), 2) == 2
        ints = array.array("i", [1, 2])
        assert shm.write(ints, 8) == ints.itemsize * 2
        assert shm.read(0, 4) == b"abcd"
        assert shm.read(8, ints.itemsize * 2) == ints.tobytes()
        with pytest.raises(TypeError):
            shm.write("text")  # type: ignore[arg-type]


def test_read_str_stops_at_nul_or_the_end(name: str) -> None:
    with ctipc.SharedMemory(name, 16) as shm:
        shm.write(b"abc\0def")
        assert shm.read_str() == "abc"
        assert shm.read_str(4) == "def"
        assert shm.read_str(3) == ""
        shm.write(b"z" * 16)
        assert shm.read_str() == "z" * 16  # no NUL: up to the end
        assert shm.read_str(16) == ""
        shm.write(b"\xff\xfe\0")
        assert shm.read_str() == "\ufffd\ufffd"


def test_write_str_returns_bytes_written_with_the_nul(name: str) -> None:
    with ctipc.SharedMemory(name, 16) as shm:
        shm.write(b"\xaa" * 16)
        assert shm.write_str("é", 1) == 3
        assert shm.read(0, 5) == b"\xaa\xc3\xa9\x00\xaa"
        assert shm.write_str("x" * 15) == 16  # exactly fits with its NUL


BAD_SPANS = [
    ("write", (b"x", -1), ValueError),
    ("write", (b"x", 16), ValueError),
    ("write", (b"xx", 15), ValueError),
    ("write", (b"x" * 17, 0), ValueError),
    ("write", (b"x", 17), ValueError),
    ("write", (b"x", 1.0), TypeError),
    ("write", (b"x", True), TypeError),
    ("read", (-1,), ValueError),
    ("read", (17,), ValueError),
    ("read", (0, 17), ValueError),
    ("read", (10, 7), ValueError),
    ("read", (0, -1), ValueError),
    ("read", (0, 2.0), TypeError),
    ("read", ("0",), TypeError),
    ("read_str", (-1,), ValueError),
    ("read_str", (17,), ValueError),
    ("read_str", (None,), TypeError),
    ("write_str", ("x" * 16, 0), ValueError),  # 17 bytes with the NUL
    ("write_str", ("", 16), ValueError),  # the NUL does not fit
    ("write_str", ("é", 14), ValueError),
    ("write_str", ("x", -1), ValueError),
    ("write_str", ("a\0b", 0), ValueError),
    ("write_str", ("\0", 0), ValueError),
    ("write_str", (b"bytes", 0), TypeError),
]


@pytest.mark.parametrize("method, args, error", BAD_SPANS, ids=lambda v: repr(v)[:20])
def test_out_of_bounds_raises_and_changes_nothing(
    name: str, method: str, args: tuple, error: type
) -> None:
    with ctipc.SharedMemory(name, 16) as shm:
        shm.write(bytes(range(1, 17)))
        with pytest.raises(error):
            getattr(shm, method)(*args)
        assert shm.read() == bytes(range(1, 17))


def test_edges_inside_the_bounds(name: str) -> None:
    with ctipc.SharedMemory(name, 16) as shm:
        assert shm.write(b"", 16) == 0
        assert shm.read(16) == b""
        assert shm.read(16, 0) == b""
        assert shm.read(0, 0) == b""
        assert shm.read_str(16) == ""
        assert shm.write(b"e", 15) == 1
        assert shm.read(15) == b"e"
        assert shm.write_str("", 15) == 1
        assert shm.read(15) == b"\0"


@pytest.mark.skipif(
    not ctipc.shm._MMAP_TRACKS_VIEWS, reason="this interpreter's mmap does not track views"
)
def test_close_with_an_outstanding_view_raises_buffer_error(name: str) -> None:
    shm = ctipc.SharedMemory(name, 32)
    try:
        view = shm.buf[0:4]
        with pytest.raises(BufferError):
            shm.close()
        # nothing changed: the object still works, in every way
        assert not shm.closed
        shm.write(b"ok")
        assert shm.read(0, 2) == b"ok"
        assert bytes(view) == b"ok\0\0"
        shm.buf[2] = 33
        assert bytes(view) == b"ok!\0"
        assert exists(ctipc.SharedMemory, name)
        view.release()
    finally:
        shm.close()
    assert shm.closed
    assert not exists(ctipc.SharedMemory, name)


@pytest.mark.skipif(
    ctipc.shm._MMAP_TRACKS_VIEWS, reason="this interpreter's mmap refuses to close under views"
)
def test_close_succeeds_where_mmap_does_not_track_views(name: str) -> None:
    shm = ctipc.SharedMemory(name, 32)
    shm.write(b"ok")
    view = shm.buf[0:2]
    shm.close()  # no BufferError here: this mmap cannot tell
    assert shm.closed
    assert not exists(ctipc.SharedMemory, name)
    view.release()  # (its contents are no longer the shared memory's)


def test_released_views_do_not_block_close(name: str) -> None:
    shm = ctipc.SharedMemory(name, 32)
    with shm.buf[0:8] as view:
        view[0] = 1
    shm.close()
    assert shm.closed


@pytest.mark.parametrize(
    "use",
    [
        lambda m: m.buf,
        lambda m: m.read(),
        lambda m: m.write(b"x"),
        lambda m: m.read_str(),
        lambda m: m.write_str("x"),
    ],
)
def test_use_after_close_raises_value_error(name: str, use) -> None:
    shm = ctipc.SharedMemory(name, 16)
    shm.close()
    shm.close()
    with pytest.raises(ValueError):
        use(shm)
    assert shm.size == 16
    assert shm.name == name


def test_with_closes(name: str) -> None:
    with ctipc.SharedMemory(name, 8) as shm:
        assert not shm.closed
        assert "size=8" in repr(shm)
    assert shm.closed
    assert "closed" in repr(shm)
    assert not exists(ctipc.SharedMemory, name)


def test_create_modes(name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ctipc.SharedMemory(name, 8, create=False)
    assert info.value.filename == name
    with ctipc.SharedMemory(name, 8, create=True) as shm:
        with pytest.raises(FileExistsError) as info2:
            ctipc.SharedMemory(name, 8, create=True)
        assert info2.value.filename == name
        with ctipc.SharedMemory(name, 8, create=False) as again:
            assert again.size == shm.size


@pytest.mark.skipif(
    not (HAVE_DEV_SHM and hasattr(os, "posix_fallocate")),
    reason="memory is not reserved at create here",
)
def test_size_beyond_the_memory_fails_cleanly_at_create(name: str) -> None:
    """Memory is reserved up front: a size /dev/shm cannot hold is an OSError
    at create (ENOSPC), never SIGBUS on a later write, and leaves nothing."""
    try:
        shm = ctipc.SharedMemory(name, 1 << 46)
    except OSError as e:
        assert e.filename == name
    else:
        shm.close()
        pytest.fail("a 64 TiB SharedMemory was created: its memory was not reserved")
    assert not exists(ctipc.SharedMemory, name)
