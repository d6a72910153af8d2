"""Signatures, domain separation, trust decisions and the signed-release envelope."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.core.manifest import canonical_packb
from mesh.core.trust import (
    ANNOUNCE_DOMAIN,
    MAX_SIGNATURES,
    RELEASE_DOMAIN,
    Signature,
    SignedRelease,
    TrustedKey,
    TrustStore,
    release_message,
)
from mesh.crypto import PrivateKey
from mesh.errors import ManifestError, TrustError
from mesh.ids import KeyId
from tests.helpers import FAST, key, manifest, msgpack_values


def store(*keys: PrivateKey, patterns: tuple[str, ...] = ("*",)) -> TrustStore:
    return TrustStore(TrustedKey(k.public_key, patterns) for k in keys)


# -- signing ----------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    k = key(0)
    sig = k.sign(b"message")
    assert k.public_key.verify(b"message", sig)
    assert not k.public_key.verify(b"messagE", sig)
    assert not key(1).public_key.verify(b"message", sig)


@pytest.mark.parametrize("sig", [b"", b"\x00", b"\x30\x06\x02\x01\x01\x02\x01\x01", b"x" * 72])
def test_garbage_signature_is_false_not_an_exception(sig: bytes) -> None:
    assert key(0).public_key.verify(b"message", sig) is False


def test_release_signature_covers_the_domain() -> None:
    m = manifest()
    signed = SignedRelease.create(m, [key(0)])
    sig = signed.signatures[0].signature
    pub = key(0).public_key
    assert release_message(m.encode()) == RELEASE_DOMAIN + m.encode()
    assert pub.verify(RELEASE_DOMAIN + m.encode(), sig)
    # neither the raw manifest nor the same bytes as an announcement verify
    assert not pub.verify(m.encode(), sig)
    assert not pub.verify(ANNOUNCE_DOMAIN + m.encode(), sig)
    trust = store(key(0))
    assert trust.check_release(signed) == key(0).key_id
    with pytest.raises(TrustError, match="invalid"):
        trust.check(m.model, ANNOUNCE_DOMAIN + m.encode(), signed.signatures)


def test_domains_differ_and_are_terminated() -> None:
    assert RELEASE_DOMAIN != ANNOUNCE_DOMAIN
    for d in (RELEASE_DOMAIN, ANNOUNCE_DOMAIN):
        assert d.endswith(b"\0")
        assert d.count(b"\0") == 1


# -- trust decisions --------------------------------------------------------------------


def test_untrusted_key_rejected_naming_the_key() -> None:
    signed = SignedRelease.create(manifest(), [key(1)])
    with pytest.raises(TrustError) as info:
        store(key(0)).check_release(signed)
    msg = str(info.value)
    assert key(1).key_id.short() in msg
    assert "not in the trust store" in msg
    assert "cam-a v1" in msg


def test_empty_trust_store_says_so() -> None:
    signed = SignedRelease.create(manifest(), [key(0)])
    with pytest.raises(TrustError, match="trust store is empty"):
        TrustStore().check_release(signed)


def test_pattern_limits_models() -> None:
    trust = store(key(0), patterns=("cam-*",))
    ok = SignedRelease.create(manifest(model="cam-front"), [key(0)])
    assert trust.check_release(ok) == key(0).key_id
    other = SignedRelease.create(manifest(model="other"), [key(0)])
    with pytest.raises(TrustError) as info:
        trust.check_release(other)
    assert "cam-*" in str(info.value)
    assert "'other'" in str(info.value)
    assert key(0).key_id.short() in str(info.value)


def test_pattern_is_case_sensitive_and_anchored() -> None:
    k = TrustedKey(key(0).public_key, ("cam-*", "exact"))
    assert k.allows("cam-")
    assert k.allows("cam-x.y")
    assert k.allows("exact")
    assert not k.allows("xcam-a")
    assert not k.allows("exact2")
    assert not k.allows("CAM-a")
    assert TrustedKey(key(0).public_key).allows("anything")
    assert not TrustedKey(key(0).public_key, ()).allows("anything")


def test_one_trusted_signature_among_several_is_enough() -> None:
    signed = SignedRelease.create(manifest(), [key(1), key(2), key(0)])
    assert len(signed.signatures) == 3
    assert store(key(0)).check_release(signed) == key(0).key_id
    assert store(key(2)).check_release(signed) == key(2).key_id


def test_bad_signature_by_trusted_key_falls_through_to_a_good_one() -> None:
    m = manifest()
    good = SignedRelease.create(m, [key(0), key(1)])
    forged = Signature(key(0).key_id, key(0).sign(b"something else"))
    mixed = SignedRelease(m, (forged, good.signatures[1]))
    assert store(key(0), key(1)).check_release(mixed) == key(1).key_id
    with pytest.raises(TrustError, match="invalid"):
        store(key(0)).check_release(mixed)


def test_signature_with_a_claimed_key_id_it_does_not_match() -> None:
    m = manifest()
    sig = key(1).sign(release_message(m.encode()))
    spoofed = SignedRelease(m, (Signature(key(0).key_id, sig),))
    with pytest.raises(TrustError, match="invalid"):
        store(key(0)).check_release(spoofed)


def test_no_signatures() -> None:
    with pytest.raises(TrustError, match="at least one signature"):
        SignedRelease.create(manifest(), [])
    with pytest.raises(TrustError, match="no signatures"):
        store(key(0)).check("cam-a", b"msg", [])


def test_store_membership() -> None:
    trust = store(key(0), key(1))
    assert len(trust) == 2
    assert key(0).key_id in trust
    assert key(2).key_id not in trust
    assert {k.key_id for k in trust.keys()}  # noqa: SIM118 -- TrustStore.keys() is a list == {key(0).key_id, key(1).key_id}
    trust.add(TrustedKey(key(0).public_key, ("x",)))  # re-adding replaces
    assert len(trust) == 2


def test_release_for_another_model_signature_does_not_transfer() -> None:
    a = SignedRelease.create(manifest(model="cam-a"), [key(0)])
    b_manifest = manifest(model="cam-b")
    stolen = SignedRelease(b_manifest, a.signatures)
    with pytest.raises(TrustError, match="invalid"):
        store(key(0)).check_release(stolen)


# -- the envelope -----------------------------------------------------------------------


def test_envelope_round_trip() -> None:
    signed = SignedRelease.create(manifest(), [key(0), key(1)])
    data = signed.encode()
    back = SignedRelease.decode(data)
    assert back == signed
    assert back.encode() == data
    assert back.manifest.release_id == signed.manifest.release_id
    assert store(key(1)).check_release(back) == key(1).key_id


def _envelope(**over: Any) -> bytes:
    signed = SignedRelease.create(manifest(), [key(0)])
    raw: dict[str, Any] = {
        "format": 1,
        "manifest": signed.manifest.encode(),
        "signatures": [[s.key_id.raw, s.signature] for s in signed.signatures],
    }
    raw.update(over)
    return canonical_packb({k: v for k, v in raw.items() if v is not None})


def test_envelope_is_canonical() -> None:
    assert SignedRelease.decode(_envelope())
    signed = SignedRelease.create(manifest(), [key(0)])
    unsorted = msgpack.packb(
        {
            "signatures": [[s.key_id.raw, s.signature] for s in signed.signatures],
            "manifest": signed.manifest.encode(),
            "format": 1,
        },
        use_bin_type=True,
    )
    with pytest.raises(ManifestError, match="canonical"):
        SignedRelease.decode(unsorted)


SIG = key(0).sign(b"x")
KID = key(0).key_id.raw

BAD_ENVELOPES: list[tuple[str, dict[str, Any], str]] = [
    ("format 2", {"format": 2}, "format"),
    ("format float", {"format": 1.0}, "format"),
    ("format bool", {"format": True}, "format"),
    ("manifest str", {"manifest": "x"}, "manifest must be bytes"),
    ("manifest garbage", {"manifest": b"\x00\x01"}, "manifest"),
    ("no signatures", {"signatures": []}, "1-8 signatures"),
    ("too many signatures", {"signatures": [[KID, SIG]] * (MAX_SIGNATURES + 1)}, "1-8"),
    ("signatures map", {"signatures": {"a": 1}}, "signatures"),
    ("entry not a pair", {"signatures": [[KID]]}, "malformed"),
    ("entry triple", {"signatures": [[KID, SIG, SIG]]}, "malformed"),
    ("short key id", {"signatures": [[KID[:31], SIG]]}, "malformed"),
    ("key id str", {"signatures": [[KID.hex(), SIG]]}, "malformed"),
    ("empty signature", {"signatures": [[KID, b""]]}, "malformed"),
    ("huge signature", {"signatures": [[KID, b"s" * 161]]}, "malformed"),
    ("entry int", {"signatures": [7]}, "malformed"),
    ("extra key", {"zzz": 1}, "map of"),
]


@pytest.mark.parametrize(
    ("over", "message"), [(o, m) for _, o, m in BAD_ENVELOPES], ids=[d for d, _, _ in BAD_ENVELOPES]
)
def test_bad_envelopes_refused(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        SignedRelease.decode(_envelope(**over))


@pytest.mark.parametrize(
    "data", [b"", b"\xc0", b"\x80", b"\x91\x01", "text", None, bytearray(b"\x80")]
)
def test_not_an_envelope(data: Any) -> None:
    with pytest.raises(ManifestError):
        SignedRelease.decode(data)


def test_oversize_envelope_refused() -> None:
    with pytest.raises(ManifestError, match="too large"):
        SignedRelease.decode(b"\x00" * (9 * 1024 * 1024))


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        SignedRelease.decode(data)


@FAST
@given(msgpack_values)
def test_arbitrary_structures_raise_only_manifest_error(value: Any) -> None:
    with pytest.raises(ManifestError):
        SignedRelease.decode(msgpack.packb(value, use_bin_type=True))


@FAST
@given(
    st.fixed_dictionaries(
        {"format": msgpack_values, "manifest": msgpack_values, "signatures": msgpack_values}
    )
)
def test_envelope_shaped_structures_raise_only_manifest_error(value: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        SignedRelease.decode(canonical_packb(value))


def test_every_flipped_byte_fails_decode_or_trust() -> None:
    signed = SignedRelease.create(manifest(), [key(0)])
    data = signed.encode()
    trust = store(key(0))
    outcomes = {"decode": 0, "trust": 0}
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        try:
            other = SignedRelease.decode(bytes(flipped))
        except ManifestError:
            outcomes["decode"] += 1
            continue
        assert other.encode() == bytes(flipped)
        with pytest.raises(TrustError):
            trust.check_release(other)
        outcomes["trust"] += 1
    assert outcomes["decode"] > 0
    assert outcomes["trust"] > 0


def test_flipped_manifest_byte_inside_signed_release() -> None:
    signed = SignedRelease.create(manifest(), [key(0)])
    data = signed.encode()
    m_bytes = signed.manifest.encode()
    start = data.index(m_bytes)
    # the version field of the manifest: 1 -> 3, a valid manifest with another id
    pos = start + m_bytes.index(b"\xa7version\x01") + len(b"\xa7version")
    flipped = bytearray(data)
    flipped[pos] ^= 0x02
    other = SignedRelease.decode(bytes(flipped))
    assert other.manifest.version == 3
    assert other.manifest.release_id != signed.manifest.release_id
    with pytest.raises(TrustError, match=r"cam-a v3 .*invalid"):
        store(key(0)).check_release(other)


def test_key_id_is_sha256_of_spki() -> None:
    from cryptography.hazmat.primitives import serialization

    pub = key(0).public_key
    der = serialization.load_pem_public_key(pub.to_pem()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub.key_id == KeyId.of(der)
    assert key(0).key_id == pub.key_id
