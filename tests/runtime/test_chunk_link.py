"""A peer whose stream fails while we write to it ends that link only: the transport
reports it disconnected and the node (the nursery around it) keeps running."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from mesh.runtime.chunks import BACKLOG_PAUSE, STORE_BACKLOG, ChunkTransport


class _Id:
    def __init__(self, text: str) -> None:
        self.text = text

    def to_string(self) -> str:
        return self.text


class _BrokenStream:
    async def read(self, n: int = -1) -> bytes:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def write(self, data: Any) -> None:
        raise RuntimeError("stream reset by peer")

    async def reset(self) -> None:
        pass

    def get_remote_address(self) -> None:
        return None


class _Host:
    def get_id(self) -> _Id:
        return _Id("me")

    def set_stream_handler(self, proto: str, handler: Any) -> None:
        pass


async def test_failed_control_write_ends_only_that_link() -> None:
    gone: list[str] = []
    async with trio.open_nursery() as nursery:
        transport = ChunkTransport(
            _Host(),
            nursery,
            deliver=lambda peer, msg: None,
            connected=lambda peer, outbound, ip: None,
            disconnected=gone.append,
            violation=lambda peer, reason: None,
            read_chunk=lambda chunk_id: b"",
            sent=lambda peer, rid, index, error: None,
        )
        transport._adopt("peer", _BrokenStream(), opener="me", outbound=True)
        assert transport.peers() == ["peer"]
        transport.send("peer", b"a control frame")
        with trio.fail_after(5):
            while not gone:
                await trio.sleep(0.01)
        assert gone == ["peer"]
        assert transport.peers() == []
        nursery.cancel_scope.cancel()


class _CountingStream:
    """A data stream that always has bytes: counts reads, ends after ``limit``."""

    def __init__(self, limit: int) -> None:
        self.reads = 0
        self.limit = limit

    async def read(self, n: int = -1) -> bytes:
        await trio.sleep(0.001)
        self.reads += 1
        return b"x" if self.reads <= self.limit else b""


def _transport(nursery: trio.Nursery, backlog: list[int]) -> ChunkTransport:
    return ChunkTransport(
        _Host(),
        nursery,
        deliver=lambda peer, msg: None,
        connected=lambda peer, outbound, ip: None,
        disconnected=lambda peer: None,
        violation=lambda peer, reason: None,
        read_chunk=lambda chunk_id: b"",
        sent=lambda peer, rid, index, error: None,
        backlog=lambda: backlog[0],
    )


async def test_data_streams_wait_while_the_store_is_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More than STORE_BACKLOG bytes waiting for the store: data streams are not read
    (the sender's window fills) until the store catches up; control streams are."""
    backlog = [STORE_BACKLOG + 1]
    data, control = _CountingStream(100), _CountingStream(100)
    async with trio.open_nursery() as nursery:
        transport = _transport(nursery, backlog)
        nursery.start_soon(lambda: transport._pump("p", data, lambda b: [], data_stream=True))
        nursery.start_soon(lambda: transport._pump("p", control, lambda b: [], data_stream=False))
        await trio.sleep(BACKLOG_PAUSE / 2)
        assert data.reads == 0
        assert control.reads > 0
        backlog[0] = STORE_BACKLOG  # caught up
        await trio.sleep(1.0)
        assert data.reads > 1


async def test_a_store_that_stays_behind_delays_reads_but_never_stops_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """yamux resets a stream nobody reads for 5 s: one read per BACKLOG_PAUSE goes on."""
    backlog = [STORE_BACKLOG * 10]
    data = _CountingStream(3)
    async with trio.open_nursery() as nursery:
        transport = _transport(nursery, backlog)
        start = trio.current_time()
        await transport._pump("p", data, lambda b: [], data_stream=True)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert data.reads == 4  # three bytes, then the end of the stream
    assert 4 * BACKLOG_PAUSE <= took < 4 * BACKLOG_PAUSE + 1
