"""The chunk-exchange wire protocol: messages and their framing.

What it owns: the message vocabulary peers exchange on a chunk stream, the frame
format, an encoder, and an incremental decoder that takes bytes in any split.

Frame format (all integers big-endian)::

    u32 length        bytes that follow, 2 .. MAX_FRAME
    u8  version       PROTOCOL_VERSION
    u8  type          MessageType
    ...               body: canonical msgpack array of the message's fields, except
                      CHUNK_DATA: u16 header length, msgpack [release_id, index],
                      then the raw chunk bytes

Rules:
* The length prefix is checked against ``MAX_FRAME`` (and control frames against
  ``MAX_CONTROL_FRAME``) before anything is allocated; an oversize, unknown-type,
  wrong-version or malformed frame raises :class:`~mesh.errors.RemoteProtocolError`
  and the decoder is then dead (the connection must be dropped -- there is no resync).
* The decoder checks shapes and types; meaning (is this index inside the release?
  does the bitfield length match the manifest?) is checked by the core, which knows
  the manifests.
* Domain types (``Manifest``, ``ReleaseId``) are separate from wire types: messages
  carry ids as :mod:`mesh.ids` values and manifests as opaque bytes.

Non-goals: gossip announcements (``mesh.core.announce``), transport encryption.
"""

from __future__ import annotations

import enum
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgpack

from mesh.core.manifest import MAX_CHUNK_SIZE, MAX_MANIFEST_BYTES, MAX_NAME_LEN
from mesh.errors import RemoteProtocolError
from mesh.ids import DIGEST_SIZE, ReleaseId

PROTOCOL_VERSION: Final = 1
PROTOCOL_ID: Final = "/edgemesh/chunks/1.0.0"
_LEN = struct.Struct(">I")
_HDR = struct.Struct(">BB")
_U16 = struct.Struct(">H")
#: A chunk frame: the largest chunk plus its small header.
MAX_FRAME: Final = MAX_CHUNK_SIZE + 256
#: Everything else: a manifest response is the largest control message.
MAX_CONTROL_FRAME: Final = MAX_MANIFEST_BYTES + 8192
MAX_HEADS: Final = 256  # models announced in a hello
MAX_UPDATE: Final = 4096  # chunk indexes per have-update
MAX_DETAIL: Final = 200  # characters of a reject's free text
MAX_CHUNKS: Final = MAX_MANIFEST_BYTES // DIGEST_SIZE  # the most chunks a release can have


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class MessageType(enum.IntEnum):
    HELLO = 1
    MANIFEST_REQUEST = 2
    MANIFEST_RESPONSE = 3
    HAVE = 4
    HAVE_UPDATE = 5
    CHUNK_REQUEST = 6
    CHUNK_DATA = 7
    CANCEL = 8
    REJECT = 9


class RejectCode(enum.IntEnum):
    NOT_HAVE = 1  # the chunk or manifest is not here (any more)
    BUSY = 2  # upload slots full; try later or elsewhere
    UNKNOWN_RELEASE = 3
    BAD_REQUEST = 4
    WRONG_MESH = 5
    PROTOCOL_VERSION = 6
    SHUTTING_DOWN = 7


def _rid(v: object, what: str) -> ReleaseId:
    if type(v) is not bytes or len(v) != DIGEST_SIZE:
        raise RemoteProtocolError(f"{what}: release id must be {DIGEST_SIZE} bytes")
    return ReleaseId(v)


def _uint(v: object, what: str, hi: int) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        raise RemoteProtocolError(f"{what}: expected an integer 0..{hi}, got {v!r:.40}")
    return v


def _str(v: object, what: str, hi: int) -> str:
    if type(v) is not str or len(v) > hi:
        raise RemoteProtocolError(f"{what}: expected a string of at most {hi} characters")
    return v


def _arr(v: object, what: str, n: int | None = None, hi: int = 1 << 20) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n) or len(v) > hi:
        want = f"{n} fields" if n is not None else f"at most {hi} items"
        raise RemoteProtocolError(f"{what}: expected an array of {want}")
    return v


@dataclass(frozen=True, slots=True)
class Head:
    """A model's newest release as a peer knows it."""

    model: str
    version: int
    release_id: ReleaseId


class Message:
    """Base of every wire message."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]


class _Control(Message, ABC):
    """A message whose body is a msgpack array of its fields."""

    __slots__ = ()

    @abstractmethod
    def _fields(self) -> list[Any]: ...

    @classmethod
    @abstractmethod
    def _parse(cls, f: list[Any]) -> _Control: ...


@dataclass(frozen=True, slots=True)
class Hello(_Control):
    """First message on a stream, both ways: who I am and which releases I have."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    mesh: str
    protocol: int
    heads: tuple[Head, ...]

    def _fields(self) -> list[Any]:
        return [
            self.mesh,
            self.protocol,
            [[h.model, h.version, h.release_id.raw] for h in self.heads],
        ]

    @classmethod
    def _parse(cls, f: list[Any]) -> Hello:
        mesh, proto, heads = _arr(f, "hello", 3)
        out = []
        for h in _arr(heads, "hello heads", hi=MAX_HEADS):
            model, version, rid = _arr(h, "hello head", 3)
            out.append(
                Head(
                    _str(model, "head model", MAX_NAME_LEN),
                    _uint(version, "head version", 2**63 - 1),
                    _rid(rid, "head"),
                )
            )
        return cls(
            _str(mesh, "hello mesh", MAX_NAME_LEN), _uint(proto, "protocol", 255), tuple(out)
        )


@dataclass(frozen=True, slots=True)
class ManifestRequest(_Control):
    TYPE: ClassVar[MessageType] = MessageType.MANIFEST_REQUEST
    release_id: ReleaseId

    def _fields(self) -> list[Any]:
        return [self.release_id.raw]

    @classmethod
    def _parse(cls, f: list[Any]) -> ManifestRequest:
        (rid,) = _arr(f, "manifest request", 1)
        return cls(_rid(rid, "manifest request"))


@dataclass(frozen=True, slots=True)
class ManifestResponse(_Control):
    """A signed release (``SignedRelease.encode()``), unverified until the core checks it."""

    TYPE: ClassVar[MessageType] = MessageType.MANIFEST_RESPONSE
    release_id: ReleaseId
    signed_release: bytes

    def _fields(self) -> list[Any]:
        return [self.release_id.raw, self.signed_release]

    @classmethod
    def _parse(cls, f: list[Any]) -> ManifestResponse:
        rid, blob = _arr(f, "manifest response", 2)
        if type(blob) is not bytes:
            raise RemoteProtocolError("manifest response: release must be bytes")
        return cls(_rid(rid, "manifest response"), blob)


@dataclass(frozen=True, slots=True)
class Have(_Control):
    """The full set of verified chunks of a release: bit i (MSB first) = chunk i."""

    TYPE: ClassVar[MessageType] = MessageType.HAVE
    release_id: ReleaseId
    bitfield: bytes

    def _fields(self) -> list[Any]:
        return [self.release_id.raw, self.bitfield]

    @classmethod
    def _parse(cls, f: list[Any]) -> Have:
        rid, bits = _arr(f, "have", 2)
        if type(bits) is not bytes or len(bits) > (MAX_CHUNKS + 7) // 8:
            raise RemoteProtocolError("have: bitfield must be bytes of bounded length")
        return cls(_rid(rid, "have"), bits)


@dataclass(frozen=True, slots=True)
class HaveUpdate(_Control):
    """Chunks that became verified since the last have/have-update."""

    TYPE: ClassVar[MessageType] = MessageType.HAVE_UPDATE
    release_id: ReleaseId
    indexes: tuple[int, ...]

    def _fields(self) -> list[Any]:
        return [self.release_id.raw, list(self.indexes)]

    @classmethod
    def _parse(cls, f: list[Any]) -> HaveUpdate:
        rid, idx = _arr(f, "have update", 2)
        items = _arr(idx, "have update indexes", hi=MAX_UPDATE)
        return cls(
            _rid(rid, "have update"),
            tuple(_uint(i, "have update index", MAX_CHUNKS) for i in items),
        )


@dataclass(frozen=True, slots=True)
class ChunkRequest(_Control):
    TYPE: ClassVar[MessageType] = MessageType.CHUNK_REQUEST
    release_id: ReleaseId
    index: int

    def _fields(self) -> list[Any]:
        return [self.release_id.raw, self.index]

    @classmethod
    def _parse(cls, f: list[Any]) -> ChunkRequest:
        rid, index = _arr(f, "chunk request", 2)
        return cls(_rid(rid, "chunk request"), _uint(index, "chunk request index", MAX_CHUNKS))


@dataclass(frozen=True, slots=True)
class ChunkData(Message):
    """A chunk's bytes.  Encoded specially: a small header, then the raw payload."""

    TYPE: ClassVar[MessageType] = MessageType.CHUNK_DATA
    release_id: ReleaseId
    index: int
    payload: bytes | memoryview  # the runtime hands over a view of its buffer


@dataclass(frozen=True, slots=True)
class Cancel(_Control):
    """Withdraw a chunk request (endgame: another peer delivered it first)."""

    TYPE: ClassVar[MessageType] = MessageType.CANCEL
    release_id: ReleaseId
    index: int

    def _fields(self) -> list[Any]:
        return [self.release_id.raw, self.index]

    @classmethod
    def _parse(cls, f: list[Any]) -> Cancel:
        rid, index = _arr(f, "cancel", 2)
        return cls(_rid(rid, "cancel"), _uint(index, "cancel index", MAX_CHUNKS))


@dataclass(frozen=True, slots=True)
class Reject(_Control):
    """A request that will not be served, with a reason code (and the request it answers)."""

    TYPE: ClassVar[MessageType] = MessageType.REJECT
    code: RejectCode
    release_id: ReleaseId | None = None
    index: int | None = None
    detail: str = ""

    def _fields(self) -> list[Any]:
        return [
            int(self.code),
            b"" if self.release_id is None else self.release_id.raw,
            -1 if self.index is None else self.index,
            self.detail[:MAX_DETAIL],
        ]

    @classmethod
    def _parse(cls, f: list[Any]) -> Reject:
        code, rid, index, detail = _arr(f, "reject", 4)
        try:
            rc = RejectCode(_uint(code, "reject code", 255))
        except ValueError:
            raise RemoteProtocolError(f"reject: unknown reason code {code}") from None
        release = None if rid == b"" else _rid(rid, "reject")
        idx = (
            None if type(index) is int and index == -1 else _uint(index, "reject index", MAX_CHUNKS)
        )
        return cls(rc, release, idx, _str(detail, "reject detail", MAX_DETAIL))


_TYPES: dict[int, type[Message]] = {
    m.TYPE: m
    for m in (
        Hello,
        ManifestRequest,
        ManifestResponse,
        Have,
        HaveUpdate,
        ChunkRequest,
        ChunkData,
        Cancel,
        Reject,
    )
}


def encode(msg: Message) -> bytes:
    """One complete frame for ``msg``."""
    if isinstance(msg, ChunkData):
        return encode_chunk_header(msg.release_id, msg.index, len(msg.payload)) + msg.payload
    assert isinstance(msg, _Control)
    body: bytes = msgpack.packb(msg._fields(), use_bin_type=True)
    if len(body) + 2 > MAX_CONTROL_FRAME:
        raise RemoteProtocolError(f"{type(msg).__name__} of {len(body)} bytes is too large")
    return _LEN.pack(len(body) + 2) + _HDR.pack(PROTOCOL_VERSION, msg.TYPE) + body


def encode_chunk_header(release_id: ReleaseId, index: int, payload_len: int) -> bytes:
    """The frame bytes of a CHUNK_DATA message that precede its payload.

    Lets a sender write a chunk read from disk without concatenating it first.
    """
    if not 0 <= payload_len <= MAX_CHUNK_SIZE:
        raise RemoteProtocolError(f"chunk payload of {payload_len} bytes is out of range")
    header: bytes = msgpack.packb([release_id.raw, index], use_bin_type=True)
    length = 2 + _U16.size + len(header) + payload_len
    return (
        _LEN.pack(length)
        + _HDR.pack(PROTOCOL_VERSION, MessageType.CHUNK_DATA)
        + _U16.pack(len(header))
        + header
    )


def frame_size(msg: Message) -> int:
    """Bytes ``msg`` occupies on the wire (used by the simulator's link model)."""
    if isinstance(msg, ChunkData):
        return len(encode_chunk_header(msg.release_id, msg.index, len(msg.payload))) + len(
            msg.payload
        )
    return len(encode(msg))


def _decode_body(mtype: int, body: memoryview) -> Message:
    cls = _TYPES.get(mtype)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {mtype}")
    if cls is ChunkData:
        if len(body) < _U16.size:
            raise RemoteProtocolError("chunk data: frame too short")
        (hlen,) = _U16.unpack_from(body)
        if _U16.size + hlen > len(body):
            raise RemoteProtocolError("chunk data: header runs past the frame")
        header = _unpack(body[_U16.size : _U16.size + hlen], "chunk data header")
        rid, index = _arr(header, "chunk data header", 2)
        if len(body) - _U16.size - hlen > MAX_CHUNK_SIZE:
            raise RemoteProtocolError(f"chunk data: payload over {MAX_CHUNK_SIZE} bytes")
        return ChunkData(
            _rid(rid, "chunk data"),
            _uint(index, "chunk data index", MAX_CHUNKS),
            bytes(body[_U16.size + hlen :]),
        )
    assert issubclass(cls, _Control)
    return cls._parse(_unpack(body, cls.__name__))


def _unpack(data: memoryview, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise RemoteProtocolError(f"{what}: not valid msgpack ({type(e).__name__})") from None


def decode(frame: bytes) -> Message:
    """Decode exactly one complete frame (no trailing bytes allowed)."""
    dec = FrameDecoder()
    dec.feed(frame)
    msg = dec.next_message()
    if msg is NEED_DATA:
        raise RemoteProtocolError("incomplete frame")
    if dec.buffered:
        raise RemoteProtocolError(f"{dec.buffered} bytes of trailing data after the frame")
    return msg


class FrameDecoder:
    """Bytes in (any split), messages out: ``feed(data)`` then ``next_message()`` until
    it returns :data:`NEED_DATA`.  After a :class:`RemoteProtocolError` the decoder
    refuses further use."""

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._dead: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._dead is not None:
            raise RemoteProtocolError(f"decoder already failed: {self._dead}")
        self._buf += data

    def next_message(self) -> Message | NeedData:
        if self._dead is not None:
            raise RemoteProtocolError(f"decoder already failed: {self._dead}")
        try:
            return self._next()
        except RemoteProtocolError as e:
            self._dead = str(e)
            self._buf = bytearray()
            raise

    def _next(self) -> Message | NeedData:
        buf = self._buf
        if len(buf) < _LEN.size + _HDR.size:
            # Reject an absurd length as soon as its 4 bytes are here.
            if len(buf) >= _LEN.size:
                self._check_len(_LEN.unpack_from(buf)[0], None)
            return NEED_DATA
        (length,) = _LEN.unpack_from(buf)
        version, mtype = _HDR.unpack_from(buf, _LEN.size)
        self._check_len(length, mtype)
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"peer speaks protocol version {version}, this node {PROTOCOL_VERSION}"
            )
        end = _LEN.size + length
        if len(buf) < end:
            return NEED_DATA
        body = memoryview(buf)[_LEN.size + _HDR.size : end]
        try:
            msg = _decode_body(mtype, body)
        finally:
            body.release()
        del buf[:end]
        return msg

    def _check_len(self, length: int, mtype: int | None) -> None:
        if length < _HDR.size:
            raise RemoteProtocolError(f"frame length {length} is too small")
        limit = (
            self._max
            if mtype in (None, MessageType.CHUNK_DATA)
            else min(self._max, MAX_CONTROL_FRAME)
        )
        if length > limit:
            raise RemoteProtocolError(f"frame of {length} bytes exceeds the {limit} byte limit")
        if mtype is not None and mtype not in _TYPES:
            raise RemoteProtocolError(f"unknown message type {mtype}")
