"""A peer whose stream fails while we write to it ends that link only: the transport
reports it disconnected and the node (the nursery around it) keeps running."""

from __future__ import annotations

from typing import Any

import trio

from mesh.runtime.chunks import ChunkTransport


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
