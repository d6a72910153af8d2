"""The chunk-exchange wire codec (``mesh.core.wire``): framing, bodies and the decoder.

Every message type round-trips through ``encode``/``decode`` and through a
``FrameDecoder`` fed whole, one byte at a time, and at every split point of several
concatenated frames.  Hostile input -- oversize length prefixes, unknown types, other
protocol versions, malformed msgpack, wrong field shapes, unknown reject codes,
trailing garbage -- raises :class:`~mesh.errors.RemoteProtocolError` and nothing else,
oversize frames are refused from their header alone (before the body is buffered), and
a decoder that failed once stays failed.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.core import wire
from mesh.core.manifest import MAX_CHUNK_SIZE, MAX_NAME_LEN
from mesh.core.wire import (
    MAX_CHUNKS,
    MAX_CONTROL_FRAME,
    MAX_DETAIL,
    MAX_FRAME,
    MAX_HEADS,
    MAX_UPDATE,
    NEED_DATA,
    PROTOCOL_VERSION,
    Cancel,
    ChunkData,
    ChunkRequest,
    FrameDecoder,
    Have,
    HaveUpdate,
    Head,
    Hello,
    ManifestRequest,
    ManifestResponse,
    Message,
    MessageType,
    Reject,
    RejectCode,
)
from mesh.errors import RemoteProtocolError
from mesh.ids import ReleaseId
from tests.helpers import FAST, msgpack_values

RID = ReleaseId(bytes(range(32)))
RID2 = ReleaseId(b"\xee" * 32)
ALL_TYPES = (
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
CONTROL_TYPES = [t for t in MessageType if t is not MessageType.CHUNK_DATA]

#: One of each message type (and the optional-field variants of Reject).
SAMPLES: list[Message] = [
    Hello("lab", PROTOCOL_VERSION, ()),
    Hello("lab", PROTOCOL_VERSION, (Head("cam-a", 3, RID), Head("cam-b", 1, RID2))),
    ManifestRequest(RID),
    ManifestResponse(RID, b"\x82signed release bytes" * 3),
    Have(RID, b"\xf0\x0f\x80"),
    Have(RID, b""),
    HaveUpdate(RID, (0, 7, 4095)),
    HaveUpdate(RID, ()),
    ChunkRequest(RID, 5),
    ChunkData(RID, 5, bytes(range(256)) * 3),
    ChunkData(RID2, 0, b""),
    Cancel(RID, 5),
    Reject(RejectCode.BUSY, RID, 5, "upload slots full"),
    Reject(RejectCode.NOT_HAVE, RID),
    Reject(RejectCode.WRONG_MESH, detail="this is mesh lab"),
    Reject(RejectCode.SHUTTING_DOWN),
]


def frame(mtype: int, body: bytes, *, version: int = PROTOCOL_VERSION) -> bytes:
    """A frame built by hand: u32 length, u8 version, u8 type, body."""
    return struct.pack(">IBB", len(body) + 2, version, mtype) + body


def control(mtype: int, fields: Any) -> bytes:
    return frame(mtype, msgpack.packb(fields, use_bin_type=True))


def chunk_frame(header: bytes, payload: bytes = b"", *, hlen: int | None = None) -> bytes:
    n = len(header) if hlen is None else hlen
    return frame(MessageType.CHUNK_DATA, struct.pack(">H", n) + header + payload)


def drain(dec: FrameDecoder) -> list[Message]:
    out: list[Message] = []
    while True:
        msg = dec.next_message()
        if msg is NEED_DATA:
            return out
        assert isinstance(msg, Message)
        out.append(msg)


def feed_pieces(pieces: Iterable[bytes]) -> list[Message]:
    dec = FrameDecoder()
    out: list[Message] = []
    for piece in pieces:
        dec.feed(piece)
        out += drain(dec)
    assert dec.buffered == 0
    return out


def assert_dead(dec: FrameDecoder) -> None:
    """A failed decoder holds nothing and refuses both feeding and reading."""
    assert dec.buffered == 0
    with pytest.raises(RemoteProtocolError, match="already failed"):
        dec.feed(b"\x00")
    with pytest.raises(RemoteProtocolError, match="already failed"):
        dec.next_message()


def rejects(data: bytes, match: str | None = None) -> None:
    """``data`` fails both through ``decode`` and through an incremental decoder."""
    with pytest.raises(RemoteProtocolError, match=match):
        wire.decode(data)
    dec = FrameDecoder()
    dec.feed(data)
    with pytest.raises(RemoteProtocolError, match=match):
        drain(dec)
    assert_dead(dec)


# -- strategies -------------------------------------------------------------------------

rids = st.binary(min_size=32, max_size=32).map(ReleaseId)
indexes = st.integers(0, MAX_CHUNKS)
heads = st.builds(Head, st.text(max_size=MAX_NAME_LEN), st.integers(0, 2**63 - 1), rids)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        st.text(max_size=MAX_NAME_LEN),
        st.integers(0, 255),
        st.lists(heads, max_size=6).map(tuple),
    ),
    st.builds(ManifestRequest, rids),
    st.builds(ManifestResponse, rids, st.binary(max_size=600)),
    st.builds(Have, rids, st.binary(max_size=300)),
    st.builds(HaveUpdate, rids, st.lists(indexes, max_size=40).map(tuple)),
    st.builds(ChunkRequest, rids, indexes),
    st.builds(ChunkData, rids, indexes, st.binary(max_size=600)),
    st.builds(Cancel, rids, indexes),
    st.builds(
        Reject,
        st.sampled_from(RejectCode),
        st.none() | rids,
        st.none() | indexes,
        st.text(max_size=MAX_DETAIL),
    ),
)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (including empty pieces)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_sample_round_trips_whole_and_bytewise(msg: Message) -> None:
    data = wire.encode(msg)
    assert wire.decode(data) == msg
    assert feed_pieces([data]) == [msg]
    assert feed_pieces(data[i : i + 1] for i in range(len(data))) == [msg]
    assert wire.frame_size(msg) == len(data)


def test_samples_cover_every_message_type() -> None:
    assert {m.TYPE for m in SAMPLES} == set(MessageType)


def test_concatenated_frames_decode_at_every_split_point() -> None:
    data = b"".join(wire.encode(m) for m in SAMPLES)
    for i in range(len(data) + 1):
        assert feed_pieces([data[:i], data[i:]]) == SAMPLES, f"split at {i}"


@FAST
@given(messages)
def test_any_message_round_trips(msg: Message) -> None:
    data = wire.encode(msg)
    assert wire.decode(data) == msg
    assert wire.frame_size(msg) == len(data)
    assert feed_pieces(data[i : i + 1] for i in range(len(data))) == [msg]


@FAST
@given(
    st.lists(messages, min_size=1, max_size=6).flatmap(
        lambda ms: st.tuples(st.just(ms), splits(b"".join(wire.encode(m) for m in ms)))
    )
)
def test_message_streams_decode_in_any_split(case: tuple[list[Message], list[bytes]]) -> None:
    msgs, pieces = case
    assert feed_pieces(pieces) == msgs


def test_decoder_returns_need_data_between_frames_and_for_partial_frames() -> None:
    data = wire.encode(ChunkRequest(RID, 1))
    dec = FrameDecoder()
    assert dec.next_message() is NEED_DATA
    dec.feed(data[:-1])
    assert dec.next_message() is NEED_DATA
    assert dec.buffered == len(data) - 1
    dec.feed(data[-1:] + data)
    assert dec.next_message() == ChunkRequest(RID, 1)
    assert dec.next_message() == ChunkRequest(RID, 1)
    assert dec.next_message() is NEED_DATA
    assert dec.buffered == 0


def test_golden_frame_bytes() -> None:
    """The exact bytes of a frame: guards the documented format (docs/protocol.md)."""
    rid = ReleaseId(b"\xab" * 32)
    # length, version, type, msgpack [bin8(32) rid, fixint 7]
    request = ["00000026", "01", "06", "92", "c420" + "ab" * 32, "07"]
    assert wire.encode(ChunkRequest(rid, 7)).hex() == "".join(request)
    # length, version, type, u16 header length, msgpack [rid, 7], raw payload
    data = ["0000002b", "01", "07", "0024", "92", "c420" + "ab" * 32, "07", "010203"]
    assert wire.encode(ChunkData(rid, 7, b"\x01\x02\x03")).hex() == "".join(data)


# -- chunk frames: the zero-copy header -----------------------------------------------------


@FAST
@given(rids, indexes, st.binary(max_size=2000))
def test_chunk_header_plus_payload_is_the_frame(rid: ReleaseId, index: int, payload: bytes) -> None:
    msg = ChunkData(rid, index, payload)
    header = wire.encode_chunk_header(rid, index, len(payload))
    assert header + payload == wire.encode(msg)
    assert wire.frame_size(msg) == len(header) + len(payload)
    assert wire.decode(header + payload) == msg


def test_largest_chunk_round_trips() -> None:
    msg = ChunkData(RID, MAX_CHUNKS, b"\x5a" * MAX_CHUNK_SIZE)
    data = wire.encode(msg)
    assert len(data) <= 4 + MAX_FRAME
    assert wire.decode(data) == msg


@pytest.mark.parametrize("n", [-1, MAX_CHUNK_SIZE + 1])
def test_chunk_header_refuses_payload_lengths_out_of_range(n: int) -> None:
    with pytest.raises(RemoteProtocolError, match="out of range"):
        wire.encode_chunk_header(RID, 0, n)


def test_encode_refuses_an_oversize_control_message() -> None:
    with pytest.raises(RemoteProtocolError, match="too large"):
        wire.encode(ManifestResponse(RID, bytes(MAX_CONTROL_FRAME)))


def test_largest_control_frame_is_accepted() -> None:
    # body = fixarray(2) + bin8 rid (34) + bin32 header (5) + blob
    blob = bytes(MAX_CONTROL_FRAME - 2 - 1 - 34 - 5)
    data = wire.encode(ManifestResponse(RID, blob))
    assert len(data) == 4 + MAX_CONTROL_FRAME
    assert wire.decode(data) == ManifestResponse(RID, blob)


# -- decode(): exactly one frame ----------------------------------------------------------


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("garbage", [b"\x00", b"\x00\x00\x00\x05\x01", b"garbage!"])
def test_decode_rejects_trailing_garbage(msg: Message, garbage: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="trailing"):
        wire.decode(wire.encode(msg) + garbage)


def test_decode_rejects_two_frames() -> None:
    data = wire.encode(Cancel(RID, 1))
    with pytest.raises(RemoteProtocolError, match="trailing"):
        wire.decode(data + data)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_decode_rejects_truncated_frames(msg: Message) -> None:
    data = wire.encode(msg)
    for n in (0, 1, 4, 5, len(data) - 1):
        with pytest.raises(RemoteProtocolError, match="incomplete"):
            wire.decode(data[:n])


# -- oversize and undersize length prefixes -------------------------------------------------


def test_length_over_max_frame_is_rejected_from_its_four_bytes() -> None:
    header = struct.pack(">I", MAX_FRAME + 1)
    dec = FrameDecoder()
    for b in header[:-1]:
        dec.feed(bytes([b]))
        assert dec.next_message() is NEED_DATA
    dec.feed(header[-1:])
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.next_message()
    assert_dead(dec)


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 2**31, 2**32 - 1])
def test_huge_length_prefix_is_rejected_before_any_body(length: int) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", length))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.next_message()


@pytest.mark.parametrize("mtype", CONTROL_TYPES, ids=lambda t: t.name)
def test_control_frame_over_its_limit_is_rejected_from_its_six_bytes(mtype: MessageType) -> None:
    header = struct.pack(">IBB", MAX_CONTROL_FRAME + 1, PROTOCOL_VERSION, mtype)
    dec = FrameDecoder()
    dec.feed(header[:4])  # the type is not known yet: a chunk frame may be this long
    assert dec.next_message() is NEED_DATA
    dec.feed(header[4:5])
    assert dec.next_message() is NEED_DATA
    dec.feed(header[5:])
    with pytest.raises(RemoteProtocolError, match=f"exceeds the {MAX_CONTROL_FRAME}"):
        dec.next_message()
    assert_dead(dec)


@pytest.mark.parametrize("mtype", CONTROL_TYPES, ids=lambda t: t.name)
def test_control_frame_at_its_limit_waits_for_the_body(mtype: MessageType) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">IBB", MAX_CONTROL_FRAME, PROTOCOL_VERSION, mtype))
    assert dec.next_message() is NEED_DATA


def test_chunk_frame_limits() -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">IBB", MAX_FRAME, PROTOCOL_VERSION, MessageType.CHUNK_DATA))
    assert dec.next_message() is NEED_DATA
    dec = FrameDecoder()
    dec.feed(struct.pack(">IBB", MAX_FRAME + 1, PROTOCOL_VERSION, MessageType.CHUNK_DATA))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        dec.next_message()


def test_a_smaller_max_frame_also_caps_control_frames() -> None:
    dec = FrameDecoder(max_frame=100)
    dec.feed(struct.pack(">IBB", 101, PROTOCOL_VERSION, MessageType.HELLO))
    with pytest.raises(RemoteProtocolError, match="exceeds the 100"):
        dec.next_message()
    dec = FrameDecoder(max_frame=100)
    dec.feed(struct.pack(">I", 101))
    with pytest.raises(RemoteProtocolError, match="exceeds the 100"):
        dec.next_message()


@pytest.mark.parametrize("length", [0, 1])
def test_length_below_the_header_is_rejected(length: int) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", length))
    with pytest.raises(RemoteProtocolError, match="too small"):
        dec.next_message()
    assert_dead(dec)


# -- header fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [0, 10, 11, 127, 255])
def test_unknown_message_type_is_rejected_from_the_header(mtype: int) -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">IBB", 2, PROTOCOL_VERSION, mtype))
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        dec.next_message()
    assert_dead(dec)
    rejects(frame(mtype, msgpack.packb([])), "unknown message type")


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255])
def test_other_protocol_version_is_rejected_from_the_header(version: int) -> None:
    good = wire.encode(ChunkRequest(RID, 1))
    bad = good[:4] + bytes([version]) + good[5:]
    dec = FrameDecoder()
    dec.feed(bad[:6])
    with pytest.raises(RemoteProtocolError, match="protocol version"):
        dec.next_message()
    assert_dead(dec)
    rejects(bad, "protocol version")


# -- malformed bodies ---------------------------------------------------------------------------

MALFORMED_MSGPACK = [
    b"",  # nothing at all
    b"\xc1",  # the one byte msgpack never uses
    b"\x93\x01",  # array of 3, one item
    b"\xc4\x10abc",  # bin of 16, 3 bytes
    b"\x91\x01\x02",  # a complete array, then extra bytes inside the frame
    b"\x81\x01\x02",  # map with an integer key (strict_map_key)
    b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
    b"\x91" * 5000 + b"\x90",  # nested far too deep
]


@pytest.mark.parametrize("mtype", CONTROL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("body", MALFORMED_MSGPACK, ids=range(len(MALFORMED_MSGPACK)))
def test_malformed_msgpack_bodies_are_rejected(mtype: MessageType, body: bytes) -> None:
    rejects(frame(mtype, body))


R = RID.raw
#: (type, fields) pairs with the wrong field count or a wrong field type or range.
BAD_FIELDS: list[tuple[MessageType, Any]] = [
    # not an array
    (MessageType.HELLO, {"mesh": "lab"}),
    (MessageType.CANCEL, 7),
    (MessageType.MANIFEST_REQUEST, R),
    # wrong counts
    (MessageType.HELLO, ["lab", 1]),
    (MessageType.HELLO, ["lab", 1, [], 0]),
    (MessageType.MANIFEST_REQUEST, []),
    (MessageType.MANIFEST_REQUEST, [R, R]),
    (MessageType.MANIFEST_RESPONSE, [R]),
    (MessageType.HAVE, [R, b"", b""]),
    (MessageType.HAVE_UPDATE, [R]),
    (MessageType.CHUNK_REQUEST, [R, 1, 2]),
    (MessageType.CANCEL, [R]),
    (MessageType.REJECT, [1, R, 0]),
    (MessageType.REJECT, [1, R, 0, "", ""]),
    # hello fields
    (MessageType.HELLO, [b"lab", 1, []]),
    (MessageType.HELLO, ["x" * (MAX_NAME_LEN + 1), 1, []]),
    (MessageType.HELLO, ["lab", 256, []]),
    (MessageType.HELLO, ["lab", -1, []]),
    (MessageType.HELLO, ["lab", True, []]),
    (MessageType.HELLO, ["lab", 1.0, []]),
    (MessageType.HELLO, ["lab", 1, {}]),
    (MessageType.HELLO, ["lab", 1, [["m", 1]]]),
    (MessageType.HELLO, ["lab", 1, [["m", 1, R, 0]]]),
    (MessageType.HELLO, ["lab", 1, [["m", -1, R]]]),
    (MessageType.HELLO, ["lab", 1, [["m", 2**63, R]]]),
    (MessageType.HELLO, ["lab", 1, [["m", 1, R[:31]]]]),
    (MessageType.HELLO, ["lab", 1, [["m", 1, "x" * 32]]]),
    (MessageType.HELLO, ["lab", 1, [[1, 1, R]]]),
    (MessageType.HELLO, ["lab", 1, [["m" * (MAX_NAME_LEN + 1), 1, R]]]),
    (MessageType.HELLO, ["lab", 1, [["m", 1, R]] * (MAX_HEADS + 1)]),
    # release ids
    (MessageType.MANIFEST_REQUEST, [R + b"\x00"]),
    (MessageType.MANIFEST_REQUEST, [b""]),
    (MessageType.MANIFEST_REQUEST, [R.hex()]),
    (MessageType.MANIFEST_REQUEST, [None]),
    # manifest response
    (MessageType.MANIFEST_RESPONSE, [R, "text, not bytes"]),
    (MessageType.MANIFEST_RESPONSE, [R, None]),
    (MessageType.MANIFEST_RESPONSE, [b"short", b""]),
    # have
    (MessageType.HAVE, [R, "bits"]),
    (MessageType.HAVE, [R, [1, 0, 1]]),
    (MessageType.HAVE, [R, bytes((MAX_CHUNKS + 7) // 8 + 1)]),
    # have-update
    (MessageType.HAVE_UPDATE, [R, b"\x01\x02"]),
    (MessageType.HAVE_UPDATE, [R, [1, -1]]),
    (MessageType.HAVE_UPDATE, [R, [1, MAX_CHUNKS + 1]]),
    (MessageType.HAVE_UPDATE, [R, [1, "2"]]),
    (MessageType.HAVE_UPDATE, [R, [1, False]]),
    (MessageType.HAVE_UPDATE, [R, [1.5]]),
    (MessageType.HAVE_UPDATE, [R, list(range(MAX_UPDATE + 1))]),
    # chunk request / cancel
    (MessageType.CHUNK_REQUEST, [R, -1]),
    (MessageType.CHUNK_REQUEST, [R, MAX_CHUNKS + 1]),
    (MessageType.CHUNK_REQUEST, [R, 1.0]),
    (MessageType.CHUNK_REQUEST, [R, None]),
    (MessageType.CHUNK_REQUEST, [R, 2**64 - 1]),
    (MessageType.CANCEL, [R, -5]),
    (MessageType.CANCEL, [R, "1"]),
    (MessageType.CANCEL, [None, 1]),
    # reject
    (MessageType.REJECT, ["busy", R, 0, ""]),
    (MessageType.REJECT, [2, R[:5], 0, ""]),
    (MessageType.REJECT, [2, None, 0, ""]),
    (MessageType.REJECT, [2, R, -2, ""]),
    (MessageType.REJECT, [2, R, "0", ""]),
    (MessageType.REJECT, [2, R, 0, b"detail"]),
    (MessageType.REJECT, [2, R, 0, "x" * (MAX_DETAIL + 1)]),
]


@pytest.mark.parametrize(("mtype", "fields"), BAD_FIELDS, ids=range(len(BAD_FIELDS)))
def test_wrong_field_counts_and_types_are_rejected(mtype: MessageType, fields: Any) -> None:
    rejects(control(mtype, fields))


@pytest.mark.parametrize("code", [0, 8, 100, 255, 256, -1])
def test_unknown_reject_codes_are_rejected(code: int) -> None:
    rejects(control(MessageType.REJECT, [code, R, 1, ""]), "reject")


def test_limits_themselves_are_accepted() -> None:
    """The boundary values just inside each decoder limit decode."""
    ok: list[tuple[MessageType, Any]] = [
        (MessageType.HELLO, ["x" * MAX_NAME_LEN, 255, [["m", 2**63 - 1, R]] * MAX_HEADS]),
        (MessageType.HAVE, [R, bytes((MAX_CHUNKS + 7) // 8)]),
        (MessageType.HAVE_UPDATE, [R, list(range(MAX_UPDATE))]),
        (MessageType.REJECT, [int(RejectCode.SHUTTING_DOWN), b"", -1, "x" * MAX_DETAIL]),
    ]
    for mtype, fields in ok:
        msg = wire.decode(control(mtype, fields))
        assert wire.decode(wire.encode(msg)) == msg


MALFORMED_CHUNKS: list[bytes] = [
    frame(MessageType.CHUNK_DATA, b""),  # no room for the header length
    frame(MessageType.CHUNK_DATA, b"\x00"),
    chunk_frame(msgpack.packb([R, 1]), hlen=200),  # header runs past the frame
    chunk_frame(b"", b"payload"),  # empty header
    chunk_frame(b"\xc1", b"payload"),  # header is not msgpack
    chunk_frame(msgpack.packb([R, 1]) + b"\x00", b"p"),  # trailing bytes in the header
    chunk_frame(msgpack.packb([R]), b"p"),
    chunk_frame(msgpack.packb([R, 1, 2]), b"p"),
    chunk_frame(msgpack.packb({"r": R}), b"p"),
    chunk_frame(msgpack.packb([R[:31], 1]), b"p"),
    chunk_frame(msgpack.packb([R, -1]), b"p"),
    chunk_frame(msgpack.packb([R, MAX_CHUNKS + 1]), b"p"),
    chunk_frame(msgpack.packb([R, True]), b"p"),
    chunk_frame(msgpack.packb([R, "1"]), b"p"),
]


@pytest.mark.parametrize("data", MALFORMED_CHUNKS, ids=range(len(MALFORMED_CHUNKS)))
def test_malformed_chunk_frames_are_rejected(data: bytes) -> None:
    rejects(data)


def test_chunk_header_length_covering_the_frame_exactly_is_an_empty_payload() -> None:
    header = msgpack.packb([R, 3], use_bin_type=True)
    assert wire.decode(chunk_frame(header)) == ChunkData(RID, 3, b"")


def test_decoder_rejects_chunk_payloads_the_encoder_refuses() -> None:
    header = msgpack.packb([R, 0], use_bin_type=True)
    payload = bytes(MAX_CHUNK_SIZE + 1)
    with pytest.raises(RemoteProtocolError):
        wire.decode(chunk_frame(header, payload))


def test_reject_with_a_float_index_is_rejected() -> None:
    rejects(control(MessageType.REJECT, [int(RejectCode.BUSY), R, -1.0, ""]))


# -- a failed decoder stays failed ----------------------------------------------------------


def test_decoder_refuses_further_use_after_an_error_even_with_good_frames_buffered() -> None:
    good = wire.encode(Cancel(RID, 1))
    dec = FrameDecoder()
    dec.feed(good + frame(99, b"") + good)
    assert dec.next_message() == Cancel(RID, 1)
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        dec.next_message()
    assert_dead(dec)
    with pytest.raises(RemoteProtocolError, match="already failed: unknown message type"):
        dec.next_message()


# -- hostile input: properties ---------------------------------------------------------------


def _consume(dec: FrameDecoder, pieces: list[bytes], limit: int) -> list[Message]:
    """Feed ``pieces``; check the decoder's outputs and memory bound all the way."""
    out: list[Message] = []
    for piece in pieces:
        before = dec.buffered
        try:
            dec.feed(piece)
        except RemoteProtocolError:
            return out
        # what is held: at most one incomplete frame (< 4 + limit) plus this piece
        assert dec.buffered == before + len(piece)
        assert dec.buffered < 4 + limit + len(piece)
        try:
            while (msg := dec.next_message()) is not NEED_DATA:
                assert isinstance(msg, Message)
                assert type(msg) in ALL_TYPES
                out.append(msg)
        except RemoteProtocolError:
            assert_dead(dec)
            return out
        assert dec.buffered < 4 + limit
    return out


def _re_encodes(msg: Message) -> None:
    """Whatever the decoder returned is a well-formed message."""
    assert wire.decode(wire.encode(msg)) == msg


@FAST
@given(st.binary(max_size=400).flatmap(splits))
def test_arbitrary_bytes_yield_only_messages_need_data_or_protocol_errors(
    pieces: list[bytes],
) -> None:
    for msg in _consume(FrameDecoder(), pieces, MAX_FRAME):
        _re_encodes(msg)


#: A plausible frame header: small lengths, the real version mostly, any type.
_headers = st.builds(
    lambda n, v, t: struct.pack(">IBB", n, v, t),
    st.integers(0, 90),
    st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2]),
    st.integers(0, 11),
)
_segments = st.one_of(
    messages.map(wire.encode),
    st.binary(max_size=60),
    st.tuples(_headers, st.binary(max_size=90)).map(b"".join),
    st.tuples(_headers, msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True))).map(
        b"".join
    ),
)


@FAST
@given(
    st.integers(16, 120),
    st.lists(_segments, max_size=6).map(b"".join).flatmap(splits),
)
def test_near_valid_streams_stay_bounded_with_a_small_frame_limit(
    limit: int, pieces: list[bytes]
) -> None:
    for msg in _consume(FrameDecoder(max_frame=limit), pieces, limit):
        _re_encodes(msg)


@st.composite
def _mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(wire.encode(draw(messages)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8))
    return bytes(data)


@FAST
@given(_mutated_frames())
def test_mutated_frames_decode_or_raise_protocol_errors(data: bytes) -> None:
    try:
        msg = wire.decode(data)
    except RemoteProtocolError:
        return
    _re_encodes(msg)
