"""Chunk-protocol adapter: the core's frames on libp2p streams.

What it owns: per peer, one *control* stream (bidirectional: hello, have, requests,
manifests, rejects) and, per direction, one *data* stream that carries only
CHUNK_DATA frames, so a request or a have-update never waits behind a megabyte of
chunk data (the simulator models control frames the same way).

Rules:
* Streams are read continuously (yamux resets a stream whose reader stalls for 5 s);
  decoded messages go to the driver at once, bytes are never interpreted here.
* One control stream per peer pair.  When both sides dial at once, the stream opened
  by the smaller peer id wins on both sides; the loser is reset and the driver hears
  ``disconnected`` + ``connected`` so the core starts a clean session.
* Chunk payloads are read from the store on a worker thread *as soon as* the core asks
  (prefetch), and written in order on the data stream: the stream never waits for the
  disk.  ``sent`` is reported after the write, freeing the core's upload slot.
* Undecodable input ends the session: ``violation`` then ``disconnected``.

Non-goals: deciding anything (whom to dial, what to send: the core), discovery,
gossip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from mesh.core.wire import (
    PROTOCOL_ID,
    ChunkData,
    FrameDecoder,
    Message,
    NeedData,
    encode_chunk_header,
)
from mesh.errors import EdgemeshError, RemoteProtocolError
from mesh.ids import ChunkId, ReleaseId

DATA_PROTOCOL_ID = "/edgemesh/chunk-data/1.0.0"
#: Bytes asked of a stream per read: large reads cut per-call overhead.
READ_SIZE = 1 << 20
#: Control frames queued for one peer before the peer counts as stuck (the core
#: bounds what it sends; this only guards against a peer that never reads).
CONTROL_QUEUE = 4096
#: How long a dial (connect + stream negotiation) may take.
DIAL_TIMEOUT = 10.0

Deliver = Callable[[str, Message], None]
log = logging.getLogger("edgemesh.chunks")


@dataclass
class _Send:
    release_id: ReleaseId
    index: int
    chunk_id: ChunkId
    length: int
    ready: trio.Event = field(default_factory=trio.Event)
    payload: bytes | None = None
    error: str = ""


class _Link:
    def __init__(self, peer: str, stream: Any, opener: str, outbound: bool) -> None:
        self.peer = peer
        self.stream = stream
        self.opener = opener
        self.outbound = outbound
        self.control_send, self.control_recv = trio.open_memory_channel[bytes](CONTROL_QUEUE)
        self.data_send, self.data_recv = trio.open_memory_channel[_Send](math.inf)
        self.cancel = trio.CancelScope()
        self.data_out: Any = None
        self.data_in: list[Any] = []
        self.nursery: trio.Nursery | None = None


class ChunkTransport:
    """Streams to peers.  The driver supplies callbacks; all run on the trio thread."""

    def __init__(
        self,
        host: Any,
        nursery: trio.Nursery,
        *,
        deliver: Deliver,
        connected: Callable[[str, bool, str | None], None],
        disconnected: Callable[[str], None],
        violation: Callable[[str, str], None],
        read_chunk: Callable[[ChunkId], bytes],
        sent: Callable[[str, ReleaseId, int, str], None],
        max_frame: int | None = None,
    ) -> None:
        self.host = host
        self.me = host.get_id().to_string()
        self._nursery = nursery
        self._deliver = deliver
        self._connected = connected
        self._disconnected = disconnected
        self._violation = violation
        self._read_chunk = read_chunk
        self._sent = sent
        self._max_frame = max_frame
        self._links: dict[str, _Link] = {}
        self._readers = trio.CapacityLimiter(8)
        host.set_stream_handler(PROTOCOL_ID, self._on_control_stream)
        host.set_stream_handler(DATA_PROTOCOL_ID, self._on_data_stream)

    # -- what the driver calls ----------------------------------------------------------

    def peers(self) -> list[str]:
        return list(self._links)

    async def dial(self, peer: str, addrs: list[str]) -> bool:
        """Connect to ``peer`` and open its control stream; False if that failed (the
        driver then reports the peer as disconnected to the core)."""
        if peer in self._links:
            return True
        try:
            pid = ID.from_base58(peer)
            mas = [multiaddr.Multiaddr(a) for a in addrs]
        except Exception:  # noqa: BLE001 -- bad address from discovery/config
            return False
        stream: Any = None
        with trio.move_on_after(DIAL_TIMEOUT):
            try:
                if mas:
                    await self.host.connect(PeerInfo(pid, mas))
                stream = await self.host.new_stream(pid, [PROTOCOL_ID])
            except Exception:  # noqa: BLE001 -- libp2p raises many unrelated types
                stream = None
        if stream is None:
            # the peer may have dialled us meanwhile and reset our losing stream: the
            # link we adopted from it is the connection
            return peer in self._links
        self._adopt(peer, stream, opener=self.me, outbound=True)
        return peer in self._links

    def send(self, peer: str, frame: bytes) -> None:
        link = self._links.get(peer)
        if link is None:
            return
        try:
            link.control_send.send_nowait(frame)
        except trio.WouldBlock:
            self.close(peer, "peer does not read its control stream")

    def send_chunk(
        self, peer: str, release_id: ReleaseId, index: int, chunk_id: ChunkId, length: int
    ) -> bool:
        link = self._links.get(peer)
        if link is None:
            return False
        item = _Send(release_id, index, chunk_id, length)
        link.data_send.send_nowait(item)
        self._nursery.start_soon(self._prefetch, item)
        return True

    def close(self, peer: str, reason: str = "") -> None:
        link = self._links.pop(peer, None)
        if link is not None:
            link.cancel.cancel()
            self._disconnected(peer)

    # -- streams ---------------------------------------------------------------------------

    async def _on_control_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id.to_string()
        self._adopt(peer, stream, opener=peer, outbound=False)  # the link's tasks own it

    def _adopt(self, peer: str, stream: Any, *, opener: str, outbound: bool) -> None:
        old = self._links.get(peer)
        if old is not None:
            winner = min(self.me, peer)
            if old.opener == winner or opener != winner:
                self._nursery.start_soon(_reset, stream)
                return
            self._links.pop(peer)
            old.cancel.cancel()
            self._disconnected(peer)
        link = _Link(peer, stream, opener, outbound)
        self._links[peer] = link
        self._nursery.start_soon(self._run_link, link)
        self._connected(peer, outbound, _remote_ip(stream))

    async def _run_link(self, link: _Link) -> None:
        with link.cancel:
            try:
                async with trio.open_nursery() as n:
                    link.nursery = n
                    n.start_soon(self._write_control, link)
                    n.start_soon(self._write_data, link)
                    await self._read(link.peer, link.stream, True)
                    n.cancel_scope.cancel()
            except* _LinkEnded:
                pass
            except* Exception as eg:  # noqa: BLE001 -- a bug or odd libp2p error: end this link only
                log.warning("link to %s failed: %r", link.peer, eg.exceptions[0])
        with trio.CancelScope(shield=True):
            await _reset(link.stream)
            for s in [link.data_out, *link.data_in]:
                if s is not None:
                    await _reset(s)
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
            self._disconnected(link.peer)
        # chunk sends still queued will never go: free the core's upload slots
        while True:
            try:
                item = link.data_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            self._sent(link.peer, item.release_id, item.index, "peer gone")

    async def _on_data_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id.to_string()
        link = self._links.get(peer)
        if link is None or link.nursery is None:
            await _reset(stream)
            return
        link.data_in.append(stream)  # read (and reset at the end) by the link's tasks
        link.nursery.start_soon(self._read, peer, stream, False)

    async def _read(self, peer: str, stream: Any, control: bool) -> None:
        decoder = (
            FrameDecoder() if self._max_frame is None else FrameDecoder(max_frame=self._max_frame)
        )
        while True:
            try:
                data = await stream.read(READ_SIZE)
            except Exception:  # noqa: BLE001 -- StreamEOF, StreamReset, connection errors
                return
            if not data:
                return
            try:
                decoder.feed(data)
                while True:
                    msg = decoder.next_message()
                    if isinstance(msg, NeedData):
                        break
                    if control == isinstance(msg, ChunkData):
                        raise RemoteProtocolError(
                            f"{type(msg).__name__} on the {'control' if control else 'data'} stream"
                        )
                    if peer not in self._links:
                        return
                    self._deliver(peer, msg)
            except EdgemeshError as e:
                self._violation(peer, str(e))
                self.close(peer, str(e))
                return

    async def _write_control(self, link: _Link) -> None:
        async for frame in link.control_recv:
            frames = [frame]
            while len(frames) < 64:  # coalesce what is queued into one write
                try:
                    frames.append(link.control_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await link.stream.write(b"".join(frames))
            except Exception:  # noqa: BLE001 -- StreamClosed, StreamReset, ...
                raise _LinkEnded from None

    async def _prefetch(self, item: _Send) -> None:
        try:
            item.payload = await trio.to_thread.run_sync(
                self._read_chunk, item.chunk_id, limiter=self._readers
            )
        except EdgemeshError as e:
            item.error = str(e)
        except OSError as e:
            item.error = f"cannot read chunk {item.chunk_id.short()}: {e.strerror}"
        finally:
            item.ready.set()

    async def _write_data(self, link: _Link) -> None:
        async for item in link.data_recv:
            await item.ready.wait()
            if item.payload is None:
                self._sent(link.peer, item.release_id, item.index, item.error or "unreadable")
                continue
            try:
                if link.data_out is None:
                    link.data_out = await self.host.new_stream(
                        ID.from_base58(link.peer), [DATA_PROTOCOL_ID]
                    )
                header = encode_chunk_header(item.release_id, item.index, len(item.payload))
                await link.data_out.write(header + item.payload)
            except Exception:  # noqa: BLE001 -- StreamClosed, StreamReset, ...
                # The data stream broke (e.g. the peer replaced a duplicate link and
                # reset it): this chunk is lost -- the requester times out and asks
                # again -- but the link lives on; the next chunk opens a new stream.
                # A dead connection ends the link through its control stream.
                self._sent(link.peer, item.release_id, item.index, "peer gone")
                broken, link.data_out = link.data_out, None
                if broken is not None:
                    await _reset(broken)
                continue
            self._sent(link.peer, item.release_id, item.index, "")


class _LinkEnded(Exception):
    pass


async def _reset(stream: Any) -> None:
    try:
        with trio.move_on_after(1):
            await stream.reset()
    except Exception:  # noqa: BLE001, S110 -- already closed: nothing to do
        pass


def _remote_ip(stream: Any) -> str | None:
    try:
        addr = stream.get_remote_address()
    except Exception:  # noqa: BLE001 -- transport without addresses
        return None
    return str(addr[0]) if addr else None
