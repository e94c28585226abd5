"""Error messages in ctipc's words: what was wrong, and what to do instead.

Each case is a mistake a newcomer makes (pickling an object, writing text
to shared memory, closing it under a live view, passing one message to
``put_many``) or a timeout whose exception must say which queue and how long.
"""

from __future__ import annotations

import copy
import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
from helpers import ALL_KINDS, make

import ctipc
from ctipc import shm as shm_module


def small(cls: type, name: str) -> object:
    if cls is ctipc.MessageQueue:
        return cls(name, capacity=8192, max_message=1016)
    return make(cls, name)


@pytest.mark.parametrize("cls", ALL_KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "send",
    [
        *(lambda obj, p=p: pickle.dumps(obj, p) for p in range(pickle.HIGHEST_PROTOCOL + 1)),
        ForkingPickler.dumps,  # what multiprocessing does with a Process's arguments
        copy.copy,
    ],
    ids=[*(f"pickle{p}" for p in range(pickle.HIGHEST_PROTOCOL + 1)), "multiprocessing", "copy"],
)
def test_an_object_cannot_travel_and_the_error_says_to_pass_its_name(
    cls: type, send: object, name: str
) -> None:
    obj = small(cls, name)
    try:
        with pytest.raises(TypeError) as info:
            send(obj)  # type: ignore[operator]
        text = str(info.value)
        assert f"ctipc.{cls.__name__} cannot be pickled" in text
        assert f"pass its name and open it there with ctipc.{cls.__name__}(name)" in text
        assert "mmap" not in text
    finally:
        obj.close()  # type: ignore[attr-defined]


def test_writing_text_to_shared_memory_says_encode_or_write_str(name: str) -> None:
    with ctipc.SharedMemory(name, 64) as shm:
        with pytest.raises(TypeError, match="not str: encode it, or use write_str"):
            shm.write("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="SharedMemory.write takes bytes-like data, not int"):
            shm.write(3)  # type: ignore[arg-type]
        assert shm.read(0, 4) == bytes(4)  # nothing was written


@pytest.mark.skipif(
    not shm_module._MMAP_TRACKS_VIEWS, reason="this mmap does not track views (PyPy)"
)
def test_closing_shared_memory_under_a_live_view_says_release_it(name: str) -> None:
    shm = ctipc.SharedMemory(name, 64)
    view = shm.buf[0:8]
    with pytest.raises(BufferError) as info:
        shm.close()
    text = str(info.value)
    assert f"SharedMemory {name!r} cannot close while views of its buf are alive" in text
    assert "release them first" in text and "exported pointers" not in text
    view[0] = 7  # still usable: nothing changed
    view.release()
    shm.close()


@pytest.mark.parametrize("one", [b"abc", bytearray(b"abc"), memoryview(b"abc"), "abc"])
def test_put_many_of_one_message_says_pass_a_list(name: str, one: object) -> None:
    with ctipc.MessageQueue(name, capacity=8192, max_message=1016) as q:
        with pytest.raises(TypeError) as info:
            q.put_many(one)  # type: ignore[arg-type]
        assert f"not one {type(one).__name__}: put_many([message]), or put(message)" in str(
            info.value
        )
        assert len(q) == 0


def test_a_message_of_the_wrong_type_names_the_types_allowed(name: str) -> None:
    with ctipc.MessageQueue(name, capacity=8192, max_message=1016) as q:
        with pytest.raises(TypeError, match=r"must be bytes-like \(bytes, bytearray, memoryview\), "
                           "not int"):  # fmt: skip
            q.put(5)  # type: ignore[arg-type]


def test_empty_and_full_name_the_queue_and_the_timeout(name: str) -> None:
    with ctipc.MessageQueue(name, capacity=8192, max_message=1016) as q:
        with pytest.raises(ctipc.Empty) as empty:
            q.get(timeout=0.05)
        assert str(empty.value) == f"no message in MessageQueue {name!r} within timeout=0.05 s"
        with pytest.raises(ctipc.Empty) as empty:
            q.get_nowait()
        assert str(empty.value) == f"no message in MessageQueue {name!r} at once (block=False)"
        with pytest.raises(ctipc.Empty) as empty:
            q.get_many(10, timeout=0.05)
        assert "within timeout=0.05 s" in str(empty.value)

        while True:  # fill it
            try:
                q.put_nowait(bytes(1016))
            except ctipc.Full as e:
                assert str(e) == f"no room in MessageQueue {name!r} at once (block=False)"
                break
        with pytest.raises(ctipc.Full) as full:
            q.put(bytes(1016), timeout=0.05)
        assert str(full.value) == f"no room in MessageQueue {name!r} within timeout=0.05 s"
        with pytest.raises(ctipc.Full) as full:
            q.put_many([b"a", b"b"], timeout=0.05)
        assert str(full.value).endswith(
            f"before MessageQueue {name!r} stayed full; no room for the rest within timeout=0.05 s"
        )
        with pytest.raises(ctipc.Full) as full:
            with q.reserve(100, timeout=0.05):
                pass
        assert str(full.value) == (
            f"no room for 100 bytes in MessageQueue {name!r} within timeout=0.05 s"
        )
