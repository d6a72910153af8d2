"""The data-stream decoder of the chunk adapter (``mesh.runtime.chunks._ChunkReader``):
same frames and same refusals as the core's ``FrameDecoder``, in any split."""

from __future__ import annotations

import mmap
import random
import struct

import pytest

from mesh.core.wire import MAX_FRAME, ChunkData, ChunkRequest, encode
from mesh.errors import RemoteProtocolError
from mesh.ids import ReleaseId
from mesh.runtime.chunks import RecvBuffers, _ChunkReader

RID = ReleaseId(bytes(range(32)))


def _frames(rng: random.Random) -> list[ChunkData]:
    sizes = [0, 1, 7, 4096, 65536 + 13, 1 << 20]
    return [ChunkData(RID, i, rng.randbytes(n)) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("seed", range(6))
def test_any_split_gives_the_same_chunks(seed: int) -> None:
    rng = random.Random(seed)
    msgs = _frames(rng)
    stream = b"".join(encode(m) for m in msgs)
    reader = _ChunkReader(MAX_FRAME)
    got: list[ChunkData] = []
    pos = 0
    while pos < len(stream):
        n = rng.choice([1, 2, 3, 9, 100, 65536, 1 << 20])
        got += reader.feed(stream[pos : pos + n])
        pos += n
    assert [(m.release_id, m.index, bytes(m.payload)) for m in got] == [
        (m.release_id, m.index, m.payload) for m in msgs
    ]


def test_control_message_on_the_data_stream_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="data stream"):
        _ChunkReader(MAX_FRAME).feed(encode(ChunkRequest(RID, 3)))


def test_oversize_frame_is_refused_before_allocation() -> None:
    head = struct.pack(">IBBH", MAX_FRAME + 1, 1, 7, 10)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        _ChunkReader(MAX_FRAME).feed(head)


def test_header_past_the_frame_is_refused() -> None:
    head = struct.pack(">IBBH", 10, 1, 7, 200)
    with pytest.raises(RemoteProtocolError, match="past the frame"):
        _ChunkReader(MAX_FRAME).feed(head)


def test_wrong_version_and_bad_header_are_refused() -> None:
    frame = bytearray(encode(ChunkData(RID, 1, b"abc")))
    frame[4] = 99
    with pytest.raises(RemoteProtocolError, match="version"):
        _ChunkReader(MAX_FRAME).feed(bytes(frame))
    bad = struct.pack(">IBBH", 4 + 3 + 5, 1, 7, 3) + b"\xc1\xc1\xc1" + b"12345"
    with pytest.raises(RemoteProtocolError):
        _ChunkReader(MAX_FRAME).feed(bad)


# -- pooled, page-aligned receive buffers (RecvBuffers) ---------------------------------


def test_payloads_are_page_aligned_and_buffers_given_back_are_reused() -> None:
    rng = random.Random(7)
    pool = RecvBuffers(keep=2)
    reader = _ChunkReader(MAX_FRAME, pool)
    sent = [ChunkData(RID, i, rng.randbytes(n)) for i, n in enumerate([1 << 20, 5000, 1 << 20])]
    got = reader.feed(b"".join(encode(m) for m in sent))
    assert [bytes(m.payload) for m in got] == [m.payload for m in sent]
    first: object = got[0].payload  # typed bytes; a memoryview in fact
    assert isinstance(first, memoryview)
    assert isinstance(first.obj, mmap.mmap)  # what the store writes with O_DIRECT
    pool.give(first)
    with pytest.raises(ValueError, match="released"):  # given back: stale use fails loudly
        bytes(first)
    again = reader.feed(encode(ChunkData(RID, 9, b"\x01" * (1 << 20))))
    assert pool.reused == 1
    assert bytes(again[0].payload) == b"\x01" * (1 << 20)
    # the other 1 MiB payload still holds its own bytes: only given-back buffers are reused
    assert bytes(got[2].payload) == sent[2].payload


def test_the_pool_keeps_at_most_keep_buffers_and_ignores_foreign_payloads() -> None:
    pool = RecvBuffers(keep=1)
    views = [pool.take(4096) for _ in range(3)]
    for v in views:
        pool.give(v)
    pool.give(b"not ours")
    pool.give(memoryview(bytearray(4096)))
    pool.take(4096)
    pool.take(4096)
    assert pool.reused == 1


def test_first_bytes_are_reported_once_per_chunk_before_it_completes() -> None:
    """``on_start`` (the driver's ChunkArriving) fires when a frame's header is read
    and its payload begins -- before the chunk is returned, once per chunk, in any
    split; an empty payload completes at once and is not reported."""
    rng = random.Random(3)
    msgs = _frames(rng)
    stream = b"".join(encode(m) for m in msgs)
    log: list[tuple[str, int]] = []
    reader = _ChunkReader(MAX_FRAME, on_start=lambda rid, i: log.append(("start", i)))
    pos = 0
    while pos < len(stream):
        n = rng.choice([1, 5, 100, 65536])
        log += [("done", m.index) for m in reader.feed(stream[pos : pos + n])]
        pos += n
    assert sorted(log) == sorted(
        [("done", i) for i in range(len(msgs))] + [("start", i) for i in range(1, len(msgs))]
    )
    for i in range(1, len(msgs)):
        assert log.index(("start", i)) < log.index(("done", i))
