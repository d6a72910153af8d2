"""Signed gossip announcements (``mesh.core.announce``): format, strict decoding, checks.

An announcement round-trips through ``create``/``encode``/``decode``; only its
canonical encoding decodes; anything oversize, malformed or out of range raises
:class:`~mesh.errors.RemoteProtocolError` (never another exception); and ``check()``
accepts it only for this mesh, signed under the announcement domain by a trusted key
allowed for the model, and newer than the version the node already has.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.core.announce import ANNOUNCE_FORMAT, MAX_ANNOUNCEMENT, Announcement
from mesh.core.manifest import MAX_MANIFEST_BYTES, MAX_NAME_LEN, MAX_VERSION, canonical_packb
from mesh.core.trust import (
    ANNOUNCE_DOMAIN,
    MAX_SIGNATURE_LEN,
    RELEASE_DOMAIN,
    Signature,
    TrustedKey,
    TrustStore,
)
from mesh.crypto import PrivateKey
from mesh.errors import RemoteProtocolError, TrustError
from mesh.ids import KeyId, ReleaseId
from tests.helpers import FAST, msgpack_values, names

PUBLISHER = PrivateKey.derive(b"test_announce/publisher")
STRANGER = PrivateKey.derive(b"test_announce/stranger")
RID = ReleaseId(bytes(range(32)))


def announce(
    *,
    mesh: str = "lab",
    model: str = "cam-a",
    version: int = 3,
    release_id: ReleaseId = RID,
    manifest_size: int = 1234,
    signer: PrivateKey = PUBLISHER,
) -> Announcement:
    return Announcement.create(
        mesh=mesh,
        model=model,
        version=version,
        release_id=release_id,
        manifest_size=manifest_size,
        signer=signer,
    )


def trust(*keys: PrivateKey, patterns: tuple[str, ...] = ("*",)) -> TrustStore:
    return TrustStore(TrustedKey(k.public_key, patterns) for k in keys)


def fields(ann: Announcement) -> dict[str, Any]:
    """The decoded wire map of an announcement, to be tampered with."""
    raw: dict[str, Any] = msgpack.unpackb(ann.encode(), raw=False)
    return raw


def with_signature(ann: Announcement, sig: bytes, key_id: KeyId | None = None) -> Announcement:
    kid = ann.signature.key_id if key_id is None else key_id
    return Announcement(
        ann.mesh, ann.model, ann.version, ann.release_id, ann.manifest_size, Signature(kid, sig)
    )


# -- format ------------------------------------------------------------------------------


def test_round_trip() -> None:
    ann = announce()
    data = ann.encode()
    assert Announcement.decode(data) == ann
    assert len(data) < 400  # "small": far below MAX_ANNOUNCEMENT
    assert ann.signature.key_id == PUBLISHER.key_id


@FAST
@given(
    names,
    names,
    st.integers(1, MAX_VERSION),
    st.binary(min_size=32, max_size=32),
    st.integers(1, MAX_MANIFEST_BYTES),
)
def test_any_valid_announcement_round_trips(
    mesh: str, model: str, version: int, rid: bytes, size: int
) -> None:
    ann = announce(
        mesh=mesh, model=model, version=version, release_id=ReleaseId(rid), manifest_size=size
    )
    data = ann.encode()
    assert len(data) <= MAX_ANNOUNCEMENT
    assert Announcement.decode(data) == ann
    assert ann.check(mesh=mesh, trust=trust(PUBLISHER), current_version=None) == PUBLISHER.key_id


def test_largest_announcement_fits() -> None:
    big = with_signature(
        announce(mesh="m" * MAX_NAME_LEN, model="n" * MAX_NAME_LEN, version=MAX_VERSION),
        b"\xff" * MAX_SIGNATURE_LEN,
    )
    assert len(big.encode()) <= MAX_ANNOUNCEMENT
    assert Announcement.decode(big.encode()) == big


def test_encoding_is_canonical_msgpack_of_the_documented_fields() -> None:
    ann = announce()
    raw = fields(ann)
    assert raw == {
        "format": ANNOUNCE_FORMAT,
        "key_id": PUBLISHER.key_id.raw,
        "manifest_size": 1234,
        "mesh": "lab",
        "model": "cam-a",
        "release_id": RID.raw,
        "signature": ann.signature.signature,
        "version": 3,
    }
    assert list(raw) == sorted(raw)
    assert canonical_packb(raw) == ann.encode()


def test_signature_covers_the_announcement_domain_and_every_field_but_itself() -> None:
    ann = announce()
    body = {k: v for k, v in fields(ann).items() if k not in ("key_id", "signature")}
    message = ANNOUNCE_DOMAIN + canonical_packb(body)
    assert Announcement.signed_message(body) == message
    pub = PUBLISHER.public_key
    assert pub.verify(message, ann.signature.signature)
    assert not pub.verify(canonical_packb(body), ann.signature.signature)
    assert not pub.verify(RELEASE_DOMAIN + canonical_packb(body), ann.signature.signature)


# -- canonical form ---------------------------------------------------------------------------


def _pack(obj: Any, *, wide_ints: bool = False, str8: bool = False, order: Any = sorted) -> bytes:
    """A msgpack encoder that can choose non-minimal (non-canonical) forms."""
    if isinstance(obj, dict):
        keys = order(obj)
        return bytes([0x80 | len(keys)]) + b"".join(
            _pack(k, wide_ints=wide_ints, str8=str8) + _pack(obj[k], wide_ints=wide_ints, str8=str8)
            for k in keys
        )
    if isinstance(obj, str):
        b = obj.encode()
        return (b"\xd9" + bytes([len(b)]) if str8 else bytes([0xA0 | len(b)])) + b
    if isinstance(obj, bytes):
        return b"\xc4" + bytes([len(obj)]) + obj
    assert isinstance(obj, int)
    if wide_ints:
        return b"\xcf" + struct.pack(">Q", obj)
    packed: bytes = msgpack.packb(obj)
    return packed


def test_reference_encoder_matches_canonical_form() -> None:
    ann = announce()
    assert _pack(fields(ann)) == ann.encode()


@pytest.mark.parametrize(
    "variant",
    [
        {"wide_ints": True},
        {"str8": True},
        {"order": lambda d: sorted(d, reverse=True)},
        {"order": lambda d: sorted(d, key=len)},
    ],
    ids=["wide-ints", "str8", "reversed-keys", "keys-by-length"],
)
def test_non_canonical_encodings_are_rejected(variant: dict[str, Any]) -> None:
    data = _pack(fields(announce()), **variant)
    assert msgpack.unpackb(data, raw=False) == fields(announce())  # same content
    with pytest.raises(RemoteProtocolError, match="canonical"):
        Announcement.decode(data)


# -- oversize and malformed ------------------------------------------------------------------


def test_oversize_is_rejected_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        Announcement.decode(b"\x00" * (MAX_ANNOUNCEMENT + 1))
    padded = fields(announce())
    padded["padding"] = b"\x00" * MAX_ANNOUNCEMENT
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        Announcement.decode(canonical_packb(padded))
    with pytest.raises(RemoteProtocolError) as info:
        Announcement.decode(b"\xc1" * MAX_ANNOUNCEMENT)  # at the limit: parsed, then refused
    assert "exceeds" not in str(info.value)


@pytest.mark.parametrize("data", [bytearray(announce().encode()), "text", None, 7])
def test_non_bytes_are_rejected(data: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="must be bytes"):
        Announcement.decode(data)


def _tampered(change: dict[str, Any], drop: tuple[str, ...] = ()) -> bytes:
    raw = fields(announce())
    raw.update(change)
    for k in drop:
        del raw[k]
    return canonical_packb(raw)


BAD: list[bytes] = [
    b"",
    b"\xc1",
    b"\x80",  # empty map
    msgpack.packb([1, 2, 3]),
    msgpack.packb({1: 2}),  # integer keys
    canonical_packb(list(fields(announce()).values())),
    _tampered({}, drop=("signature",)),
    _tampered({}, drop=("format",)),
    _tampered({"extra": 1}),
    _tampered({"format": 2}),
    _tampered({"format": True}),
    _tampered({"format": "1"}),
    _tampered({"key_id": b"\x00" * 31}),
    _tampered({"key_id": "k" * 32}),
    _tampered({"release_id": b"\x00" * 33}),
    _tampered({"release_id": None}),
    _tampered({"signature": b""}),
    _tampered({"signature": b"\x01" * (MAX_SIGNATURE_LEN + 1)}),
    _tampered({"signature": "sig"}),
    _tampered({"version": 0}),
    _tampered({"version": -1}),
    _tampered({"version": MAX_VERSION + 1}),
    _tampered({"version": True}),
    _tampered({"version": 3.0}),
    _tampered({"manifest_size": 0}),
    _tampered({"manifest_size": MAX_MANIFEST_BYTES + 1}),
    _tampered({"manifest_size": "1234"}),
    _tampered({"mesh": "Lab"}),
    _tampered({"mesh": ""}),
    _tampered({"mesh": b"lab"}),
    _tampered({"model": "-cam"}),
    _tampered({"model": "c" * (MAX_NAME_LEN + 1)}),
    _tampered({"model": "cam/a"}),
    announce().encode()[:-1],
    announce().encode() + b"\x00",
]


@pytest.mark.parametrize("data", BAD, ids=range(len(BAD)))
def test_malformed_announcements_are_rejected(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Announcement.decode(data)


@FAST
@given(st.binary(max_size=MAX_ANNOUNCEMENT + 16))
def test_arbitrary_bytes_decode_or_raise_protocol_errors_only(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        Announcement.decode(data)


@FAST
@given(msgpack_values)
def test_arbitrary_msgpack_values_are_protocol_errors(value: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        Announcement.decode(msgpack.packb(value, use_bin_type=True))


@FAST
@given(st.data())
def test_mutated_announcements_decode_or_fail_cleanly_and_never_verify(data: st.DataObject) -> None:
    good = announce().encode()
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    if bytes(buf) == good:
        return
    try:
        ann = Announcement.decode(bytes(buf))
        ann.check(mesh="lab", trust=trust(PUBLISHER), current_version=None)
    except RemoteProtocolError:
        return
    # decoded and verified: only possible if the signed content is unchanged (a
    # different but equally valid DER signature cannot come from random byte flips)
    pytest.fail(f"tampered announcement accepted: {bytes(buf).hex()}")


# -- check() ------------------------------------------------------------------------------------


def test_valid_announcement_returns_the_signing_key() -> None:
    ann = Announcement.decode(announce().encode())
    assert ann.check(mesh="lab", trust=trust(PUBLISHER), current_version=None) == PUBLISHER.key_id
    assert ann.check(mesh="lab", trust=trust(STRANGER, PUBLISHER), current_version=2) == (
        PUBLISHER.key_id
    )
    scoped = trust(PUBLISHER, patterns=("cam-*",))
    assert ann.check(mesh="lab", trust=scoped, current_version=None) == PUBLISHER.key_id


def test_wrong_mesh_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="mesh"):
        announce(mesh="other").check(mesh="lab", trust=trust(PUBLISHER), current_version=None)


@pytest.mark.parametrize("store", [trust(), trust(STRANGER)], ids=["empty", "other-key"])
def test_untrusted_key_is_rejected(store: TrustStore) -> None:
    with pytest.raises(TrustError, match="not in the trust store"):
        announce().check(mesh="lab", trust=store, current_version=None)


def test_trusted_key_outside_its_model_patterns_is_rejected() -> None:
    scoped = trust(PUBLISHER, patterns=("mic-*", "cam-b"))
    with pytest.raises(TrustError, match="trusted only for models"):
        announce(model="cam-a").check(mesh="lab", trust=scoped, current_version=None)


@pytest.mark.parametrize("where", [0, 5, -1])
def test_flipped_signature_byte_is_rejected(where: int) -> None:
    ann = announce()
    sig = bytearray(ann.signature.signature)
    sig[where] ^= 0x01
    bad = Announcement.decode(with_signature(ann, bytes(sig)).encode())
    with pytest.raises(TrustError, match="invalid"):
        bad.check(mesh="lab", trust=trust(PUBLISHER), current_version=None)


def test_signature_by_another_key_under_a_trusted_key_id_is_rejected() -> None:
    forged = with_signature(
        announce(signer=STRANGER), announce(signer=STRANGER).signature.signature, PUBLISHER.key_id
    )
    with pytest.raises(TrustError, match="invalid"):
        forged.check(mesh="lab", trust=trust(PUBLISHER), current_version=None)


@pytest.mark.parametrize(
    "change",
    [
        {"version": 4},
        {"model": "cam-b"},
        {"mesh": "lab2"},
        {"manifest_size": 1},
        {"release_id": b"\x01" * 32},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fields_changed_after_signing_are_rejected(change: dict[str, Any]) -> None:
    ann = Announcement.decode(_tampered(change))
    with pytest.raises(TrustError, match="invalid"):
        ann.check(mesh=ann.mesh, trust=trust(PUBLISHER), current_version=None)


def test_release_signature_replayed_as_announcement_is_rejected() -> None:
    ann = announce()
    body = {k: v for k, v in fields(ann).items() if k not in ("key_id", "signature")}
    replay = with_signature(ann, PUBLISHER.sign(RELEASE_DOMAIN + canonical_packb(body)))
    with pytest.raises(TrustError, match="invalid"):
        replay.check(mesh="lab", trust=trust(PUBLISHER), current_version=None)


@pytest.mark.parametrize("current", [3, 4, MAX_VERSION])
def test_version_not_newer_than_current_is_rejected(current: int) -> None:
    with pytest.raises(RemoteProtocolError, match="not newer"):
        announce(version=3).check(mesh="lab", trust=trust(PUBLISHER), current_version=current)


@pytest.mark.parametrize("current", [None, 0, 1, 2])
def test_newer_version_is_accepted(current: int | None) -> None:
    ann = announce(version=3)
    assert ann.check(mesh="lab", trust=trust(PUBLISHER), current_version=current) == (
        PUBLISHER.key_id
    )
