"""Noise messages read with one wake-up each (mesh.runtime.noiseread), on real TCP
sockets over loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.security.noise.io import NoisePacketReadWriter

from mesh.runtime import noiseread

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT on this platform"
)


class _CountingConn:
    """A RawConnection that counts its reads (the wake-ups the reader needed)."""

    def __init__(self, conn: RawConnection) -> None:
        self.conn = conn
        self.stream = conn.stream
        self.reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        data: bytes = await self.conn.read(n)
        return data


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[trio.SocketStream, RawConnection]]:
    """(writer stream, reader RawConnection) of one loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        writer = await trio.open_tcp_stream("127.0.0.1", port)
        while not accepted:
            await trio.sleep(0.001)
        reader = RawConnection(TrioTCPStream(accepted[0]), initiator=False)
        try:
            yield writer, reader
        finally:
            await writer.aclose()
            await accepted[0].aclose()
            for listener in listeners:
                await listener.aclose()


def _lowat(conn: Any) -> int:
    sock = noiseread.tcp_socket(conn)
    assert sock is not None
    value: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
    return value


async def _trickle(writer: trio.SocketStream, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        await writer.send_all(data[i : i + piece])
        await trio.sleep(0.002)


async def test_a_trickled_message_is_read_whole_in_few_reads() -> None:
    body = bytes(range(256)) * 234  # 59904 bytes: one full-size Noise message
    async with _pair() as (writer, conn):
        counting = _CountingConn(conn)
        rw = NoisePacketReadWriter(counting)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_trickle, writer, len(body).to_bytes(2, "big") + body, 1000)
            got = await noiseread.read_noise_msg(rw)
        assert got == body
        # 60 pieces arrived; without the low-water mark the reader takes about one read
        # per piece.  With it: the length, a first partial read, then the rest at once
        # (a few more only if the kernel reports readability early).
        assert counting.reads <= 6
        assert _lowat(conn) == 1  # restored for whatever reads next
        # the next message (small, already there) reads as usual
        await writer.send_all(b"\x00\x03abc")
        assert await noiseread.read_noise_msg(rw) == b"abc"


async def test_a_wait_past_the_limit_reads_the_rest_the_plain_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the kernel would not report the socket readable in time (or the link is
    very slow), the raised mark is dropped after LOWAT_WAIT and the message still
    arrives whole."""
    monkeypatch.setattr(noiseread, "LOWAT_WAIT", 0.01)
    body = b"slow" * 2500
    async with _pair() as (writer, conn):
        rw = NoisePacketReadWriter(conn)
        async with trio.open_nursery() as nursery:

            async def slowly() -> None:
                data = len(body).to_bytes(2, "big") + body
                for i in range(0, len(data), 2000):
                    await writer.send_all(data[i : i + 2000])
                    await trio.sleep(0.03)  # longer than the limit, every time

            nursery.start_soon(slowly)
            with trio.fail_after(10):
                assert await noiseread.read_noise_msg(rw) == body
        assert _lowat(conn) == 1


async def test_end_of_stream_mid_message_is_an_incomplete_read() -> None:
    async with _pair() as (writer, conn):
        rw = NoisePacketReadWriter(conn)
        await writer.send_all((1000).to_bytes(2, "big") + b"x" * 300)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.sleep(0.05)
                    await writer.aclose()

                nursery.start_soon(close_soon)
                with pytest.raises(IncompleteReadError) as info:
                    await noiseread.read_noise_msg(rw)
        assert (info.value.expected_bytes, info.value.received_bytes) == (1000, 300)
        assert _lowat(conn) == 1


async def test_without_a_socket_it_is_the_plain_exact_read() -> None:
    class Pieces:
        """A connection with no OS socket underneath: hands out 7 bytes per read."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, n: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            out, self.data = self.data[: min(7, n or 7)], self.data[min(7, n or 7) :]
            return out

    body = b"0123456789" * 50
    conn = Pieces(len(body).to_bytes(2, "big") + body)
    assert noiseread.tcp_socket(conn) is None
    rw = NoisePacketReadWriter(conn)  # type: ignore[arg-type]
    assert await noiseread.read_noise_msg(rw) == body
    assert await noiseread.read_body(conn, 0) == b""


async def test_open_host_installs_the_reader() -> None:
    from mesh.runtime.host import _new_host, load_identity  # noqa: F401 -- installs on use

    noiseread.install()
    noiseread.install()  # idempotent
    assert NoisePacketReadWriter.read_msg is noiseread.read_noise_msg
