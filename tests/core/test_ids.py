"""Id value types: equality by value and kind, hex round trip, short form, bad input."""

from __future__ import annotations

import copy
import hashlib
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import RemoteProtocolError
from mesh.ids import DIGEST_SIZE, SHORT_HEX, ChunkId, KeyId, ReleaseId
from tests.helpers import FAST

RAW = bytes(range(32))


def test_equal_by_value_and_hashable() -> None:
    a, b = ChunkId(RAW), ChunkId(bytes(RAW))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert ChunkId(RAW) != ChunkId(b"\x00" * 32)
    assert {a: 1}[b] == 1


def test_kinds_are_distinct() -> None:
    chunk: object = ChunkId(RAW)
    release: object = ReleaseId(RAW)
    assert chunk != release
    assert release != KeyId(RAW)
    assert len({ChunkId(RAW), ReleaseId(RAW), KeyId(RAW)}) == 3
    assert chunk != RAW


def test_of_is_sha256() -> None:
    assert ChunkId.of(b"abc").raw == hashlib.sha256(b"abc").digest()
    assert ReleaseId.of(bytearray(b"abc")) == ReleaseId(hashlib.sha256(b"abc").digest())
    assert KeyId.of(memoryview(b"")).raw == hashlib.sha256(b"").digest()


def test_str_hex_short_repr() -> None:
    cid = ChunkId(RAW)
    assert str(cid) == RAW.hex() == cid.hex()
    assert cid.short() == RAW.hex()[:SHORT_HEX]
    assert len(cid.short()) == 12
    assert repr(cid) == f"ChunkId({RAW.hex()[:12]}…)"
    assert repr(ReleaseId(RAW)).startswith("ReleaseId(")


@FAST
@given(st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE))
def test_hex_round_trip(raw: bytes) -> None:
    for cls in (ChunkId, ReleaseId, KeyId):
        ident = cls(raw)
        assert cls.from_hex(str(ident)) == ident
        assert cls.from_hex(ident.hex().upper()) == ident
        assert ident.raw == raw


def test_ordering_by_raw_bytes() -> None:
    ids = [ChunkId(bytes([i]) * 32) for i in (3, 1, 2)]
    assert [i.raw[0] for i in sorted(ids)] == [1, 2, 3]


def test_immutable() -> None:
    cid = ChunkId(RAW)
    with pytest.raises(AttributeError):
        setattr(cid, "raw", b"\x00" * 32)  # noqa: B010
    with pytest.raises(AttributeError):
        setattr(cid, "other", 1)  # noqa: B010
    assert cid.raw == RAW


def test_copy_and_pickle_keep_the_kind() -> None:
    cid = ChunkId(RAW)
    for twin in (copy.copy(cid), copy.deepcopy(cid), pickle.loads(pickle.dumps(cid))):
        assert type(twin) is ChunkId
        assert twin == cid
        assert twin.raw == RAW


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64])
def test_wrong_length_raises(raw: bytes) -> None:
    for cls in (ChunkId, ReleaseId, KeyId):
        with pytest.raises(RemoteProtocolError, match="32 bytes"):
            cls(raw)


@pytest.mark.parametrize(
    "raw", [bytearray(32), memoryview(bytes(32)), "a" * 32, 32, None, [0] * 32]
)
def test_wrong_type_raises(raw: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        ChunkId(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 33,
        "zz" * 32,
        "0" * 63 + "g",
        " " + "0" * 63,
        "0" * 62 + " 0",
        "é" * 64,
    ],
)
def test_bad_hex_raises(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        ReleaseId.from_hex(text)


@pytest.mark.parametrize("text", [None, 1234, b"00" * 32, ["0"] * 64])
def test_from_hex_non_string_raises(text: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        ReleaseId.from_hex(text)


def test_error_names_the_kind() -> None:
    with pytest.raises(RemoteProtocolError, match="release id"):
        ReleaseId(b"short")
    with pytest.raises(RemoteProtocolError, match="key id"):
        KeyId.from_hex("nothex")
