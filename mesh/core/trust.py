"""Trust decisions: which publisher keys may sign which models.

What it owns: the domain-separated messages that get signed, the signed-release
envelope, and the trust store that decides whether a release is acceptable.

Rules:
* A signature always covers ``DOMAIN + payload``, never raw data, so a signature
  made for one purpose (a release) can never be replayed as another (an announcement).
* A release is accepted when at least one signature is valid and made by a key in
  the trust store whose model patterns match the release's model.  Signatures by
  unknown keys are ignored (a release may carry several), not fatal -- unless no
  trusted key signed at all.
* Cryptography lives behind the :class:`Verifier` / :class:`Signer` protocols
  (implemented in ``mesh.crypto``); this module stays sans-IO.

Non-goals: key generation and file formats (``mesh.crypto``), revocation lists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from mesh.core.manifest import MAX_MANIFEST_BYTES, Manifest, canonical_packb
from mesh.errors import ManifestError, TrustError
from mesh.ids import DIGEST_SIZE, KeyId

RELEASE_DOMAIN = b"edgemesh/release/v1\0"
ANNOUNCE_DOMAIN = b"edgemesh/announce/v1\0"
MAX_SIGNATURES = 8  # several publishers may co-sign; more is abuse
MAX_SIGNATURE_LEN = 160  # DER ECDSA P-256 is at most 72 bytes; room for other curves
ENVELOPE_FORMAT = 1


class Verifier(Protocol):
    """A public key able to check signatures."""

    @property
    def key_id(self) -> KeyId: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """A private key able to sign."""

    @property
    def key_id(self) -> KeyId: ...

    def sign(self, message: bytes) -> bytes: ...


def release_message(manifest_bytes: bytes) -> bytes:
    return RELEASE_DOMAIN + manifest_bytes


@dataclass(frozen=True, slots=True)
class Signature:
    key_id: KeyId
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedRelease:
    """A manifest with the signatures over it, as stored on disk and sent to peers."""

    manifest: Manifest
    signatures: tuple[Signature, ...]

    @classmethod
    def create(cls, manifest: Manifest, signers: Iterable[Signer]) -> SignedRelease:
        message = release_message(manifest.encode())
        sigs = tuple(Signature(s.key_id, s.sign(message)) for s in signers)
        if not sigs:
            raise TrustError("a release needs at least one signature")
        return cls(manifest, sigs)

    def encode(self) -> bytes:
        return canonical_packb(
            {
                "format": ENVELOPE_FORMAT,
                "manifest": self.manifest.encode(),
                "signatures": [[s.key_id.raw, s.signature] for s in self.signatures],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedRelease:
        if not isinstance(data, bytes) or len(data) > MAX_MANIFEST_BYTES + 4096:
            raise ManifestError("signed release is not bytes or too large")
        try:
            raw: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
            raise ManifestError(
                f"signed release is not valid msgpack: {type(e).__name__}"
            ) from None
        if not isinstance(raw, dict) or set(raw) != {"format", "manifest", "signatures"}:
            raise ManifestError("signed release must be a map of format, manifest, signatures")
        if raw["format"] != ENVELOPE_FORMAT or type(raw["format"]) is not int:
            raise ManifestError(f"signed release format {raw['format']!r} is not supported")
        if type(raw["manifest"]) is not bytes:
            raise ManifestError("signed release: manifest must be bytes")
        sigs_raw = raw["signatures"]
        if not isinstance(sigs_raw, list) or not 0 < len(sigs_raw) <= MAX_SIGNATURES:
            raise ManifestError(f"signed release needs 1-{MAX_SIGNATURES} signatures")
        sigs = []
        for item in sigs_raw:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or type(item[0]) is not bytes
                or len(item[0]) != DIGEST_SIZE
                or type(item[1]) is not bytes
                or not 0 < len(item[1]) <= MAX_SIGNATURE_LEN
            ):
                raise ManifestError("signed release: a signature entry is malformed")
            sigs.append(Signature(KeyId(item[0]), item[1]))
        release = cls(Manifest.decode(raw["manifest"]), tuple(sigs))
        if release.encode() != data:
            raise ManifestError("signed release is not in canonical form")
        return release


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A publisher key and the model-name patterns (fnmatch globs) it may sign."""

    verifier: Verifier
    patterns: tuple[str, ...] = ("*",)
    label: str = ""

    @property
    def key_id(self) -> KeyId:
        return self.verifier.key_id

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.patterns)


class TrustStore:
    """The set of publisher keys a node accepts releases from."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[KeyId, TrustedKey] = {}
        for k in keys:
            self.add(k)

    def add(self, key: TrustedKey) -> None:
        self._keys[key.key_id] = key

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def keys(self) -> list[TrustedKey]:
        return list(self._keys.values())

    def check(self, model: str, message: bytes, signatures: Iterable[Signature]) -> KeyId:
        """The id of a trusted key that validly signed ``message`` for ``model``.

        Raises :class:`TrustError` naming the reason when none did.
        """
        reasons: list[str] = []
        for sig in signatures:
            key = self._keys.get(sig.key_id)
            if key is None:
                reasons.append(f"key {sig.key_id.short()} is not in the trust store")
                continue
            if not key.allows(model):
                reasons.append(
                    f"key {sig.key_id.short()} is trusted only for models "
                    f"{', '.join(key.patterns)}, not {model!r}"
                )
                continue
            if key.verifier.verify(message, sig.signature):
                return sig.key_id
            reasons.append(f"signature by key {sig.key_id.short()} is invalid")
        if not reasons:
            reasons.append("no signatures")
        if not self._keys:
            reasons.append("the trust store is empty (add the publisher's .pub with --trust)")
        raise TrustError("; ".join(reasons))

    def check_release(self, release: SignedRelease) -> KeyId:
        m = release.manifest
        try:
            return self.check(m.model, release_message(m.encode()), release.signatures)
        except TrustError as e:
            raise TrustError(f"release {m.describe()} rejected: {e}") from None
