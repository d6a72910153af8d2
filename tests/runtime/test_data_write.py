"""``write_data``: chunk data in large yamux DATA frames on real py-libp2p (Noise +
yamux over loopback), and its fallback for streams without yamux internals."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.runtime.chunks import (
    DATA_FRAME_MSGS,
    DATA_WRITE_SIZE,
    FALLBACK_WRITE_SIZE,
    FRAME_TIME,
    NOISE_PLAINTEXT,
    FramePace,
    write_data,
)
from mesh.runtime.host import full_addrs, load_identity, open_host

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROTO = TProtocol("/edgemesh-test/data/1")


async def _send_and_receive(
    tmp_path: Path, runs: list[list[bytes]], *, read_delay: float = 0.0
) -> tuple[bytes, list[int]]:
    """Write each run of parts with ``write_data`` from b to a; return what a read and
    the sizes b's Noise session was asked to write (one per yamux frame)."""
    got = bytearray()
    total = sum(len(p) for run in runs for p in run)
    done = trio.Event()

    async def handler(stream: Any) -> None:
        while len(got) < total:
            if read_delay:
                await trio.sleep(read_delay)
            got.extend(await stream.read(1 << 20))
        done.set()

    writes: list[int] = []
    async with (
        open_host(load_identity(tmp_path / "a"), LOOPBACK) as a,
        open_host(load_identity(tmp_path / "b"), LOOPBACK) as b,
    ):
        a.set_stream_handler(PROTO, handler)
        with trio.fail_after(60):
            await b.connect(info_from_p2p_addr(multiaddr.Multiaddr(full_addrs(a)[0])))
            s = await b.new_stream(a.get_id(), [PROTO])
            secured = s.muxed_stream.conn.secured_conn
            real_write = secured.write

            async def counting_write(data: bytes) -> None:
                writes.append(len(data))
                await real_write(data)

            secured.write = counting_write
            for run in runs:
                await write_data(s, [memoryview(p) for p in run])
            await done.wait()
            secured.write = real_write
    return bytes(got), writes


async def test_large_frames_carry_the_bytes_intact_in_whole_noise_messages(
    tmp_path: Path,
) -> None:
    rng = random.Random(4)
    # runs of one and of several parts (a held-back tail + the next frame's start)
    runs = [
        [rng.randbytes(DATA_WRITE_SIZE)],
        [rng.randbytes(300), rng.randbytes(DATA_WRITE_SIZE - 300)],
        [rng.randbytes(3 * DATA_WRITE_SIZE + 777)],
        [rng.randbytes(5)],
    ]
    got, writes = await _send_and_receive(tmp_path, runs)
    assert got == b"".join(p for run in runs for p in run)
    data_frames = [n for n in writes if n > 12]  # window updates etc. are 12 bytes
    assert max(data_frames) <= DATA_WRITE_SIZE + 12
    # the yamux window starts at 256 KiB, so early frames are smaller; every frame
    # that is not a run's end is made of whole Noise messages
    assert sum(1 for n in data_frames if n % NOISE_PLAINTEXT == 0) >= len(data_frames) - 4
    assert DATA_WRITE_SIZE + 12 in data_frames  # the window grew to a full frame


async def test_a_slow_reader_limits_frames_to_the_window_and_loses_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    runs = [[rng.randbytes(DATA_WRITE_SIZE)] for _ in range(3)]
    got, writes = await _send_and_receive(tmp_path, runs, read_delay=0.02)
    assert got == b"".join(p for run in runs for p in run)
    assert all(n <= DATA_WRITE_SIZE + 12 for n in writes)


class _PlainStream:
    """A stream without yamux internals (e.g. another muxer)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes | memoryview) -> None:
        self.writes.append(bytes(data))


async def test_without_yamux_internals_data_goes_through_write_in_small_pieces() -> None:
    s = _PlainStream()
    a, b = b"x" * (FALLBACK_WRITE_SIZE + 10), b"y" * 20
    await write_data(s, [memoryview(a), memoryview(b)])
    assert b"".join(s.writes) == a + b
    assert [len(w) for w in s.writes] == [FALLBACK_WRITE_SIZE, 30]


def test_frames_shrink_on_a_slow_link_and_grow_back_on_a_fast_one() -> None:
    pace = FramePace()
    assert pace.msgs == DATA_FRAME_MSGS
    full = pace.frame_size()
    assert full == DATA_WRITE_SIZE
    for _ in range(20):  # 50 Mbit/s: 6.25 MB/s
        pace.wrote(full, full / 6.25e6)
        full = pace.frame_size()
    assert pace.msgs == int(FRAME_TIME * 6.25e6 / NOISE_PLAINTEXT)  # 2
    for _ in range(20):  # loopback: 1 GB/s
        pace.wrote(full, full / 1e9)
        full = pace.frame_size()
    assert pace.msgs == DATA_FRAME_MSGS
    for _ in range(20):  # a link that takes longer than FRAME_TIME for one message
        pace.wrote(full, 1.0)
        full = pace.frame_size()
    assert pace.msgs == 1
    assert pace.frame_size() == NOISE_PLAINTEXT - 12
