"""Chunk-protocol adapter: the core's frames on libp2p streams.

What it owns: per peer, one *control* stream (bidirectional: hello, have, requests,
manifests, rejects) and, per direction, one *data* stream that carries only
CHUNK_DATA frames, so a request or a have-update never waits behind a megabyte of
chunk data (the simulator models control frames the same way).

Rules:
* Streams are read continuously (yamux resets a stream whose reader stalls for 5 s);
  decoded messages go to the driver at once.  Frames are decoded by the codec
  (``mesh.core.wire``); the one exception is the 8-byte prefix of data-stream frames,
  read by :class:`_ChunkReader` (ADR 0006), which still has the codec check the rest.
* Backpressure: while more than ``STORE_BACKLOG`` bytes of received chunks wait for
  the store (a disk slower than the network), data streams are not read, for at most
  ``BACKLOG_PAUSE`` at a time: the senders' yamux windows fill and they wait, instead
  of this node's memory filling up.
* The data path is shaped around py-libp2p's framing (ADR 0006): chunk data goes out
  in yamux DATA frames of 16 whole Noise messages (:func:`write_data`, smaller on slow
  links: :class:`FramePace`), and a data stream is read in batches (a 2 ms pause after
  a short read, once its receive window has grown), because yamux sends a window
  update for every read.
* One control stream per peer pair.  When both sides dial at once, the stream opened
  by the smaller peer id wins on both sides; the loser is reset and the driver hears
  ``disconnected`` + ``connected`` so the core starts a clean session.
* Chunk payloads are read from the store on a worker thread *as soon as* the core asks
  (prefetch), and written in order on the data stream: the stream never waits for the
  disk.  The worker reads (and verifies) the payload straight into a reused frame
  buffer behind its header (:class:`SendBuffers`), so the trio thread only writes it.
  ``sent`` is reported after the write, freeing the core's upload slot.
* Bulk bytes are copied as little as possible (on a 2-core device the transfer is
  CPU-bound): a data stream is decoded by :class:`_ChunkReader`, which checks each
  frame's prefix and header with the codec's rules and copies the payload once, into
  a page-aligned buffer of its announced size (:class:`RecvBuffers`), handed on as it
  is (the store verifies and writes any bytes-like payload; page-aligned memory it
  writes with ``O_DIRECT``).  The driver gives each payload back (:meth:`ChunkTransport.
  recycle`) once the store is done with it, so buffers are reused instead of being
  allocated, zeroed and faulted in for every chunk.  Control streams use the codec's
  ``FrameDecoder``.
* Undecodable input ends the session: ``violation`` then ``disconnected``.

Non-goals: deciding anything (whom to dial, what to send: the core), discovery,
gossip.
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.exceptions import MuxedStreamError

from mesh.core.manifest import MAX_CHUNK_SIZE
from mesh.core.wire import (
    MAX_FRAME,
    PROTOCOL_ID,
    ChunkData,
    FrameDecoder,
    Message,
    MessageType,
    NeedData,
    decode,
    encode_chunk_header,
)
from mesh.errors import EdgemeshError, RemoteProtocolError
from mesh.ids import ChunkId, ReleaseId

DATA_PROTOCOL_ID = "/edgemesh/chunk-data/1.0.0"
#: Bytes asked of a stream per read: large reads cut per-call overhead.
READ_SIZE = 1 << 20
#: After a short read of a data stream, wait this long before the next read, so that
#: several yamux frames are taken at once.  py-libp2p's yamux answers every read with a
#: window update (a frame the sender must decrypt, parse and lock for), so reading
#: each 64 KiB frame as it arrives costs both ends CPU; a 2-core device is CPU-bound.
#: The pause adds at most this much latency to a chunk.
DATA_READ_PAUSE = 0.002
#: ... but only once the stream's receive window has grown this large (yamux doubles
#: it, up to 16 MiB, while updates follow each other within 4 RTTs): with the initial
#: 256 KiB window a pause would cap the rate at window / pause, and pausing reads
#: before it has grown would keep it from growing.
PAUSE_MIN_WINDOW = 4 << 20
#: Largest plaintext of one Noise transport message (py-libp2p, like go-libp2p, cuts
#: longer writes into messages of at most this many bytes).
NOISE_PLAINTEXT = 65519
#: Chunk data goes out in yamux DATA frames of this many bytes, 12-byte header
#: included, so that Noise cuts each into 16 full messages (:func:`write_data`).
#: py-libp2p's own ``YamuxStream.write`` makes frames of at most 64 KiB + 12, each
#: split by Noise into a full message and a 17-byte one; pieces of 65507 bytes (one
#: Noise message per frame) were the previous step.  A larger frame costs the same
#: Noise messages but one yamux frame's Python work (locks, window bookkeeping, the
#: per-frame debug strings py-libp2p 0.8.1 formats unconditionally, the receiver's
#: stream-buffer append and wake-up) instead of 16.  The receiver accepts DATA frames
#: up to its receive window (yamux's rule; py-libp2p: up to 16 MiB).
DATA_FRAME_MSGS = 16
_YAMUX_HEADER = struct.Struct("!BBHII")  # version, type, flags, stream id, length
DATA_WRITE_SIZE = DATA_FRAME_MSGS * NOISE_PLAINTEXT - _YAMUX_HEADER.size
#: ... but on a slow link a frame should not take much longer than this to go into the
#: socket (:class:`FramePace`): 25 ms is 16 messages down to ~42 MB/s, 4 at 100 Mbit/s.
FRAME_TIME = 0.025
#: Without access to the yamux stream (another muxer or py-libp2p version), data is
#: written with ``stream.write`` in pieces of this size: one Noise message per frame.
FALLBACK_WRITE_SIZE = NOISE_PLAINTEXT - _YAMUX_HEADER.size
#: Control frames queued for one peer before the peer counts as stuck (the core
#: bounds what it sends; this only guards against a peer that never reads).
CONTROL_QUEUE = 4096
#: How long a dial (connect + stream negotiation) may take.
DIAL_TIMEOUT = 10.0
#: Received chunk bytes waiting for the store (the driver's count) above which data
#: streams are not read: a disk slower than the network then slows the senders down
#: (their yamux windows fill) instead of filling memory.  64 MiB: a few hundred ms of
#: a fast link, far above what a disk that keeps up ever has waiting.
STORE_BACKLOG = 64 << 20
#: ... for at most this long at a time (yamux resets a stream not read for 5 s); then
#: one more read goes through.
BACKLOG_PAUSE = 2.0
_BACKLOG_POLL = 0.01
_B = TypeVar("_B", bytearray, mmap.mmap)  # what a buffer pool keeps
#: Free receive buffers kept for reuse (:class:`RecvBuffers`): about the chunks a node
#: has arriving and being stored at once (its requests in flight, adaptive depth
#: included, plus the store's threads), 16 MiB with 1 MiB chunks.  0: no reuse.
RECV_BUFFERS = 16

#: A frame's fixed prefix: u32 length, u8 version, u8 type, u16 chunk-header length.
_PREFIX = struct.Struct(">IBBH")
_LEN_SIZE = 4

Deliver = Callable[[str, Message], None]
log = logging.getLogger("edgemesh.chunks")


@dataclass
class _Send:
    release_id: ReleaseId
    index: int
    chunk_id: ChunkId
    length: int
    ready: trio.Event = field(default_factory=trio.Event)
    frame: bytes | memoryview | None = None
    buffer: bytearray | None = None  # frame's buffer, from SendBuffers
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
        self.pace = FramePace()
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
        read_chunk_into: Callable[[ChunkId, memoryview], None] | None = None,
        sent: Callable[[str, ReleaseId, int, str], None],
        max_frame: int | None = None,
        backlog: Callable[[], int] = lambda: 0,
        arriving: Callable[[str, ReleaseId, int], None] | None = None,
    ) -> None:
        self.host = host
        self.me = host.get_id().to_string()
        self._nursery = nursery
        self._deliver = deliver
        self._connected = connected
        self._disconnected = disconnected
        self._violation = violation
        self._read_chunk = read_chunk
        self._read_chunk_into = read_chunk_into
        self._sent = sent
        self._max_frame = max_frame
        self._backlog = backlog
        self._arriving = arriving
        self._links: dict[str, _Link] = {}
        self._readers = trio.CapacityLimiter(8)
        self.buffers = RecvBuffers()
        self.send_buffers = SendBuffers()
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

    def recycle(self, payload: object) -> None:
        """A chunk payload this transport delivered is no longer used: reuse its buffer."""
        self.buffers.give(payload)

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
                    await self._read_control(link.peer, link.stream)
                    n.cancel_scope.cancel()
            except* _LinkEnded:  # a writer's stream failed (trio wraps it in a group)
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
        link.nursery.start_soon(self._read_data, peer, stream)

    async def _read_data(self, peer: str, stream: Any) -> None:
        """A data stream: CHUNK_DATA frames only, each payload copied once into a buffer
        of its exact size (no growing decode buffer to append to, slice out of and
        shift), then handed to the driver."""
        arriving = self._arriving
        on_start = None
        if arriving is not None:

            def on_start(release_id: ReleaseId, index: int) -> None:
                if peer in self._links:
                    arriving(peer, release_id, index)

        reader = _ChunkReader(
            MAX_FRAME if self._max_frame is None else self._max_frame, self.buffers, on_start
        )
        await self._pump(peer, stream, reader.feed, data_stream=True)

    async def _read_control(self, peer: str, stream: Any) -> None:
        decoder = (
            FrameDecoder() if self._max_frame is None else FrameDecoder(max_frame=self._max_frame)
        )

        def decode(data: bytes) -> list[Message]:
            decoder.feed(data)
            out: list[Message] = []
            while not isinstance(msg := decoder.next_message(), NeedData):
                if isinstance(msg, ChunkData):
                    raise RemoteProtocolError("ChunkData on the control stream")
                out.append(msg)
            return out

        await self._pump(peer, stream, decode, data_stream=False)

    async def _pump(
        self,
        peer: str,
        stream: Any,
        decode: Callable[[bytes], Sequence[Message]],
        *,
        data_stream: bool,
    ) -> None:
        """Read ``stream`` until it ends, hand each decoded message to the driver; bad
        input ends the session (``violation``, then ``close``)."""
        while True:
            if data_stream and self._backlog() > STORE_BACKLOG:
                await self._wait_for_store()
            try:
                data = await stream.read(READ_SIZE)
            except Exception:  # noqa: BLE001 -- StreamEOF, StreamReset, connection errors
                return
            if not data:
                return
            try:
                for msg in decode(data):
                    if peer not in self._links:
                        return
                    self._deliver(peer, msg)
            except EdgemeshError as e:
                self._violation(peer, str(e))
                self.close(peer, str(e))
                return
            if (
                data_stream
                and len(data) < READ_SIZE
                and DATA_READ_PAUSE > 0
                and _recv_window(stream) >= PAUSE_MIN_WINDOW
            ):
                await trio.sleep(DATA_READ_PAUSE)

    async def _wait_for_store(self) -> None:
        """Hold a data stream's next read while the store is behind (see
        ``STORE_BACKLOG``), at most ``BACKLOG_PAUSE``."""
        with trio.move_on_after(BACKLOG_PAUSE):
            while self._backlog() > STORE_BACKLOG:
                await trio.sleep(_BACKLOG_POLL)

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
            if self._read_chunk_into is None:
                item.frame = await trio.to_thread.run_sync(
                    self._framed, item, limiter=self._readers
                )
            else:
                head = encode_chunk_header(item.release_id, item.index, item.length)
                buf, frame = self.send_buffers.take(len(head) + item.length)
                frame[: len(head)] = head
                await trio.to_thread.run_sync(
                    self._read_chunk_into, item.chunk_id, frame[len(head) :], limiter=self._readers
                )
                item.frame, item.buffer = frame, buf
        except EdgemeshError as e:
            item.error = str(e)
        except OSError as e:
            item.error = f"cannot read chunk {item.chunk_id.short()}: {e.strerror}"
        finally:
            item.ready.set()

    def _framed(self, item: _Send) -> bytes:
        """On a worker thread: the chunk's whole CHUNK_DATA frame (header + payload), so
        the trio thread neither reads, hashes nor copies a megabyte."""
        payload = self._read_chunk(item.chunk_id)
        return encode_chunk_header(item.release_id, item.index, len(payload)) + payload

    async def _write_data(self, link: _Link) -> None:
        """Write queued chunk frames in order, as one byte stream cut into pieces of
        ``DATA_WRITE_SIZE``: a frame's last partial piece is held back and written
        together with the start of the next frame when that one is already queued and
        read (else at once): a 1 MiB chunk then costs 16 yamux frames, not 17.  ``sent``
        is reported once a chunk's last byte is written."""
        tail: memoryview | None = None  # the end of the frame of unsent[0], not yet written
        unsent: list[_Send] = []  # chunks being written, oldest first
        try:
            while True:
                try:
                    tail = await self._write_next(link, tail, unsent)
                except _DataStreamBroken:
                    # The data stream broke (e.g. the peer replaced a duplicate link
                    # and reset it): the chunks on it are lost -- their requesters time
                    # out and ask again -- but the session lives on and the next chunk
                    # opens a new stream.  A dead connection ends the link through its
                    # control stream.
                    for item in unsent:
                        self._sent(link.peer, item.release_id, item.index, "peer gone")
                    unsent.clear()
                    tail = None
                    broken, link.data_out = link.data_out, None
                    if broken is not None:
                        await _reset(broken)
                except _ChannelDone:
                    return
        finally:
            for item in unsent:  # never finished: free the core's upload slots
                self._sent(link.peer, item.release_id, item.index, "peer gone")

    async def _write_next(
        self, link: _Link, tail: memoryview | None, unsent: list[_Send]
    ) -> memoryview | None:
        """Write the next queued frame (and the held-back tail); returns the new tail."""
        if tail is not None and link.data_recv.statistics().current_buffer_used == 0:
            await self._write_piece(link, tail)
            tail = None
            self._report_sent(link, unsent.pop(0))
        try:
            item = await link.data_recv.receive()
        except trio.EndOfChannel:
            item = None
        if tail is not None and (item is None or not item.ready.is_set()):
            await self._write_piece(link, tail)
            tail = None
            self._report_sent(link, unsent.pop(0))
        if item is None:
            raise _ChannelDone
        await item.ready.wait()
        frame, item.frame = item.frame, None
        if frame is None:
            self._sent(link.peer, item.release_id, item.index, item.error or "unreadable")
            return tail
        unsent.append(item)
        view = memoryview(frame)  # slices of it are not copies
        start = 0
        if tail is not None:
            start = min(DATA_WRITE_SIZE - len(tail), len(view))
            await self._write_piece(link, tail, view[:start])
            tail = None
            self._report_sent(link, unsent.pop(0))
        full = start + (len(view) - start) // DATA_WRITE_SIZE * DATA_WRITE_SIZE
        for at in range(start, full, DATA_WRITE_SIZE):
            await self._write_piece(link, view[at : at + DATA_WRITE_SIZE])
        if full < len(view):
            return view[full:]
        self._report_sent(link, unsent.pop(0))
        return None

    async def _write_piece(self, link: _Link, *parts: memoryview) -> None:
        try:
            if link.data_out is None:
                link.data_out = await self.host.new_stream(
                    ID.from_base58(link.peer), [DATA_PROTOCOL_ID]
                )
            await write_data(link.data_out, parts, link.pace)
        except Exception:  # noqa: BLE001 -- StreamClosed, StreamReset, ...
            raise _DataStreamBroken from None

    def _report_sent(self, link: _Link, item: _Send) -> None:
        """``item``'s last byte is written (copied into a yamux frame): its buffer
        may be reused."""
        if item.buffer is not None:
            self.send_buffers.give(item.buffer)
            item.buffer = None
        self._sent(link.peer, item.release_id, item.index, "")


class _Pool(Generic[_B]):
    """Free buffers kept for reuse by capacity (a multiple of ``grain``): at most
    ``keep`` of them.  Trio thread only."""

    def __init__(self, keep: int, grain: int, new: Callable[[int], _B]) -> None:
        self.keep = keep
        self._grain = grain
        self._new: Callable[[int], _B] = new
        self._free: dict[int, list[_B]] = {}
        self._count = 0
        self.reused = 0  # statistics for tests and benchmarks

    def _get(self, size: int) -> _B:
        cap = -(-size // self._grain) * self._grain
        free = self._free.get(cap)
        if not free:
            return self._new(cap)
        self._count -= 1
        self.reused += 1
        buf: _B = free.pop()
        return buf

    def _put(self, buf: _B) -> None:
        if self._count < self.keep:
            self._free.setdefault(len(buf), []).append(buf)
            self._count += 1


class SendBuffers(_Pool[bytearray]):
    """Buffers for outgoing chunk frames, reused (trio thread only): the sender reads
    each chunk straight into a frame buffer after its header (``read_chunk_into``),
    instead of reading it into a new ``bytes`` and then concatenating header and
    payload into another one (two 1 MiB allocations, zero-fills and page faults per
    chunk, and a copy).  A buffer comes back once its frame is written; one that
    never comes back (a broken stream) is freed by the garbage collector.  Kept by
    capacity, a multiple of 4 KiB (frame sizes vary by a few header bytes)."""

    def __init__(self, keep: int = RECV_BUFFERS) -> None:
        super().__init__(keep, 4096, bytearray)

    def take(self, size: int) -> tuple[bytearray, memoryview]:
        """A buffer of at least ``size`` bytes and a view of its first ``size``."""
        buf = self._get(size)
        return buf, memoryview(buf)[:size]

    def give(self, buf: bytearray) -> None:
        self._put(buf)


class RecvBuffers(_Pool[mmap.mmap]):
    """Page-aligned receive buffers (anonymous ``mmap`` s), reused.

    A fresh buffer per chunk costs the receiving thread a 1 MiB zero-fill and a page
    fault per 4 KiB; a buffer that came back through :meth:`give` is already mapped.
    Page alignment also lets the store write the chunk with ``O_DIRECT`` (no copy
    into the page cache; ``FsStore._write_atomic``).  A payload that never comes back
    (a wasted duplicate, a dropped link) is simply freed by the garbage collector, so
    only buffers nobody references are ever reused.  Trio thread only."""

    def __init__(self, keep: int = RECV_BUFFERS) -> None:
        super().__init__(keep, mmap.PAGESIZE, lambda cap: mmap.mmap(-1, cap))

    def take(self, size: int) -> memoryview:
        return memoryview(self._get(size))[:size]

    def give(self, payload: object) -> None:
        """Take back a payload of :meth:`take` that nobody uses any more (other
        payloads are ignored).  The view is released: using it afterwards raises."""
        if not isinstance(payload, memoryview) or not isinstance(payload.obj, mmap.mmap):
            return
        buf = payload.obj
        payload.release()
        self._put(buf)


class _ChunkReader:
    """Incremental decoder of a data stream (CHUNK_DATA frames only).

    The frame prefix and header (a few dozen bytes) are collected, then checked by
    :func:`mesh.core.wire.decode` as a CHUNK_DATA frame with an empty payload (same
    rules as :class:`~mesh.core.wire.FrameDecoder`: length bounded before anything is
    allocated, version, type, header shape); the payload then goes straight into a
    buffer of its announced size.  Any error is final (the caller drops the link)."""

    def __init__(
        self,
        max_frame: int,
        buffers: RecvBuffers | None = None,
        on_start: Callable[[ReleaseId, int], None] | None = None,
    ) -> None:
        self._max = max_frame
        self._buffers = buffers
        self._on_start = on_start  # a payload's first bytes are due: (release, index)
        self._head = bytearray()
        self._need = _PREFIX.size  # bytes of prefix + header still to collect
        self._msg: ChunkData | None = None
        self._view: memoryview | None = None
        self._pos = 0

    def feed(self, data: bytes) -> list[ChunkData]:
        out: list[ChunkData] = []
        mv = memoryview(data)
        while mv:
            view = self._view
            if view is not None:
                n = min(len(mv), len(view) - self._pos)
                view[self._pos : self._pos + n] = mv[:n]
                self._pos += n
                mv = mv[n:]
                if self._pos == len(view):
                    out.append(self._finish())
                continue
            take = min(self._need, len(mv))
            self._head += mv[:take]
            mv = mv[take:]
            self._need -= take
            if self._need == 0:
                msg = self._parse_head()
                if msg is not None:
                    out.append(msg)
        return out

    def _parse_head(self) -> ChunkData | None:
        head = self._head
        length, _version, mtype, hlen = _PREFIX.unpack_from(head)
        if len(head) == _PREFIX.size:
            if mtype != MessageType.CHUNK_DATA:
                raise RemoteProtocolError(f"message type {mtype} on the data stream")
            if length > self._max:
                raise RemoteProtocolError(
                    f"frame of {length} bytes exceeds the {self._max} byte limit"
                )
            if _PREFIX.size - _LEN_SIZE + hlen > length:
                raise RemoteProtocolError("chunk data: header runs past the frame")
            if hlen:
                self._need = hlen
                return None
        # the frame without its payload, checked by the codec's own rules
        body_len = len(head) - _LEN_SIZE
        msg = decode(struct.pack(">I", body_len) + bytes(head[_LEN_SIZE:]))
        if not isinstance(msg, ChunkData):  # pragma: no cover -- the type was checked
            raise RemoteProtocolError("not a chunk frame on the data stream")
        size = length - body_len
        if size > MAX_CHUNK_SIZE:
            raise RemoteProtocolError(f"chunk data: payload over {MAX_CHUNK_SIZE} bytes")
        self._head = bytearray()
        self._need = _PREFIX.size
        if size == 0:
            return msg
        self._msg = msg
        if self._on_start is not None:
            self._on_start(msg.release_id, msg.index)
        if self._buffers is not None:
            self._view = self._buffers.take(size)
        else:
            self._view = memoryview(bytearray(size))
        self._pos = 0
        return None

    def _finish(self) -> ChunkData:
        assert self._msg is not None
        assert self._view is not None
        # the store hashes and writes any bytes-like payload; the core only takes len()
        msg = ChunkData(self._msg.release_id, self._msg.index, self._view)
        self._msg = self._view = None
        return msg


class _LinkEnded(Exception):
    pass


class _DataStreamBroken(Exception):
    pass


class _ChannelDone(Exception):
    pass


async def _reset(stream: Any) -> None:
    try:
        with trio.move_on_after(1):
            await stream.reset()
    except Exception:  # noqa: BLE001, S110 -- already closed: nothing to do
        pass


def _recv_window(stream: Any) -> int:
    """The yamux receive window a stream has grown to (0 if unknown): an internal of the
    pinned py-libp2p 0.8.1 (``NetStream.muxed_stream.target_recv_window``); if a later
    version drops it, data streams are simply read without pauses."""
    muxed = getattr(stream, "muxed_stream", stream)
    window = getattr(muxed, "target_recv_window", 0)
    return window if isinstance(window, int) else 0


class FramePace:
    """How large one link's data frames may be: the connection's write lock is held
    while a frame goes into the socket, and control frames to the same peer (requests,
    have-updates, window updates) wait behind it.  On loopback a 1 MiB frame takes a
    few ms; on a 50 Mbit/s link 170 ms.  So frames are kept to about ``FRAME_TIME`` of
    the link's measured drain rate (a smoothed time per byte of the frame writes that
    went before), between one and ``DATA_FRAME_MSGS`` Noise messages."""

    def __init__(self) -> None:
        self.msgs = DATA_FRAME_MSGS
        self._spb = 0.0  # smoothed seconds per byte of frame writes

    def frame_size(self) -> int:
        return self.msgs * NOISE_PLAINTEXT - _YAMUX_HEADER.size

    def wrote(self, size: int, seconds: float) -> None:
        spb = max(seconds, 0.0) / max(size, 1)
        self._spb = spb if self._spb == 0.0 else self._spb + (spb - self._spb) / 4
        fit = FRAME_TIME / (self._spb * NOISE_PLAINTEXT) if self._spb > 0 else math.inf
        self.msgs = int(max(1, min(DATA_FRAME_MSGS, fit)))


async def write_data(
    stream: Any, parts: Sequence[memoryview], pace: FramePace | None = None
) -> None:
    """Write ``parts`` (one run of bytes) on a data stream as yamux DATA frames of up
    to ``DATA_WRITE_SIZE`` bytes (fewer with ``pace`` on a slow link).

    py-libp2p 0.8.1's ``YamuxStream.write`` caps frames at 64 KiB; this is the same
    procedure with a larger cap (ADR 0006): take send window under the stream's
    ``rw_lock`` write lock and ``window_lock``, wait (polling, at most 5 s, as yamux
    does) while it is zero, then write header + payload under the connection's write
    lock.  It reads internals of the pinned version (``NetStream.muxed_stream``, the
    ``YamuxStream`` fields above, ``Yamux._write_lock`` and ``secured_conn``); when they
    are missing, the bytes go through ``stream.write`` in one-Noise-message pieces."""
    muxed: Any = getattr(stream, "muxed_stream", None)
    conn: Any = getattr(muxed, "conn", None)
    if not _yamux_internals(muxed, conn):
        data = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
        for at in range(0, len(data), FALLBACK_WRITE_SIZE):
            await stream.write(data[at : at + FALLBACK_WRITE_SIZE])
        return
    left = sum(len(p) for p in parts)
    i = off = 0  # read position: parts[i][off:]
    while left:
        limit = DATA_WRITE_SIZE if pace is None else pace.frame_size()
        n = await _take_send_window(muxed, min(left, limit))
        pieces: list[bytes | memoryview] = [_YAMUX_HEADER.pack(0, 0, 0, muxed.stream_id, n)]
        need = n
        while need:
            part = parts[i]
            take = min(need, len(part) - off)
            pieces.append(part[off : off + take])
            off += take
            need -= take
            if off == len(part):
                i, off = i + 1, 0
        frame = b"".join(pieces)  # one copy, as YamuxStream.write's header + chunk
        async with conn._write_lock:
            t0 = trio.current_time()
            await conn.secured_conn.write(frame)
            if pace is not None:
                pace.wrote(len(frame), trio.current_time() - t0)
        left -= n
        await trio.lowlevel.checkpoint()


def _yamux_internals(muxed: Any, conn: Any) -> bool:
    return all(
        hasattr(muxed, a)
        for a in ("rw_lock", "window_lock", "send_window", "send_closed", "closed", "stream_id")
    ) and all(hasattr(conn, a) for a in ("_write_lock", "secured_conn"))


async def _take_send_window(muxed: Any, want: int) -> int:
    """Reserve up to ``want`` bytes of ``muxed``'s send window (waiting while it is
    zero, at most 5 s, like ``YamuxStream.write``); returns the bytes reserved.  A
    partial window is rounded down to whole Noise messages where it can be."""
    with trio.fail_after(5.0):
        while True:
            async with muxed.rw_lock.write_lock():
                if muxed.send_closed or muxed.closed:
                    raise MuxedStreamError("stream is closed for sending")
                async with muxed.window_lock:
                    window = muxed.send_window
                    if window > 0:
                        n = min(window, want)
                        if n < want and n + _YAMUX_HEADER.size >= NOISE_PLAINTEXT:
                            n = (n + _YAMUX_HEADER.size) // NOISE_PLAINTEXT * NOISE_PLAINTEXT
                            n -= _YAMUX_HEADER.size
                        muxed.send_window -= n
                        return int(n)
            await trio.sleep(0.01)


def _remote_ip(stream: Any) -> str | None:
    try:
        addr = stream.get_remote_address()
    except Exception:  # noqa: BLE001 -- transport without addresses
        return None
    return str(addr[0]) if addr else None
