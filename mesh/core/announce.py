"""Signed release announcements: the small messages gossiped to the whole mesh.

What it owns: the announcement format (canonical msgpack, signed by the publisher
with the announcement domain), its strict decoding, and the validity check every
node runs before it accepts or forwards one.

Rules (DESIGN §3): an announcement is rejected -- not accepted, not forwarded -- when
it is oversize (> ``MAX_ANNOUNCEMENT`` bytes), does not decode, names another mesh,
is signed by a key that is unknown or not allowed for the model, carries a bad
signature, or announces a version not newer than the one the node already has.

Non-goals: the gossip transport (gossipsub in the runtime, a flood in the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from mesh.core.manifest import MAX_MANIFEST_BYTES, MAX_VERSION, canonical_packb, check_name
from mesh.core.trust import (
    ANNOUNCE_DOMAIN,
    MAX_SIGNATURE_LEN,
    Signature,
    SignedRelease,
    Signer,
    TrustStore,
)
from mesh.errors import ManifestError, RemoteProtocolError, TrustError
from mesh.ids import DIGEST_SIZE, KeyId, ReleaseId

MAX_ANNOUNCEMENT = 2048  # DESIGN §3: small; a real one is ~250 bytes
ANNOUNCE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Announcement:
    mesh: str
    model: str
    version: int
    release_id: ReleaseId
    manifest_size: int
    signature: Signature

    def _body(self) -> dict[str, Any]:
        return {
            "format": ANNOUNCE_FORMAT,
            "manifest_size": self.manifest_size,
            "mesh": self.mesh,
            "model": self.model,
            "release_id": self.release_id.raw,
            "version": self.version,
        }

    @staticmethod
    def signed_message(body: dict[str, Any]) -> bytes:
        return ANNOUNCE_DOMAIN + canonical_packb(body)

    @classmethod
    def create(
        cls,
        *,
        mesh: str,
        model: str,
        version: int,
        release_id: ReleaseId,
        manifest_size: int,
        signer: Signer,
    ) -> Announcement:
        unsigned = cls(
            mesh, model, version, release_id, manifest_size, Signature(signer.key_id, b"")
        )
        sig = signer.sign(cls.signed_message(unsigned._body()))
        return cls(mesh, model, version, release_id, manifest_size, Signature(signer.key_id, sig))

    @classmethod
    def for_release(cls, release: SignedRelease, signer: Signer) -> Announcement:
        """The announcement of a signed release (what a publisher gossips)."""
        m = release.manifest
        return cls.create(
            mesh=m.mesh,
            model=m.model,
            version=m.version,
            release_id=m.release_id,
            manifest_size=len(m.encode()),
            signer=signer,
        )

    def encode(self) -> bytes:
        body = self._body()
        body["key_id"] = self.signature.key_id.raw
        body["signature"] = self.signature.signature
        return canonical_packb(body)

    @classmethod
    def decode(cls, data: bytes) -> Announcement:
        if type(data) is not bytes:
            raise RemoteProtocolError("announcement must be bytes")
        if len(data) > MAX_ANNOUNCEMENT:
            raise RemoteProtocolError(
                f"announcement of {len(data)} bytes exceeds {MAX_ANNOUNCEMENT}"
            )
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
            raise RemoteProtocolError(
                f"announcement is not valid msgpack: {type(e).__name__}"
            ) from None
        keys = {
            "format",
            "key_id",
            "manifest_size",
            "mesh",
            "model",
            "release_id",
            "signature",
            "version",
        }
        if not isinstance(raw, dict) or set(raw) != keys:
            raise RemoteProtocolError("announcement fields are wrong")
        if raw["format"] != ANNOUNCE_FORMAT or type(raw["format"]) is not int:
            raise RemoteProtocolError(f"announcement format {raw['format']!r} is not supported")
        for k in ("key_id", "release_id"):
            if type(raw[k]) is not bytes or len(raw[k]) != DIGEST_SIZE:
                raise RemoteProtocolError(f"announcement {k} must be {DIGEST_SIZE} bytes")
        sig = raw["signature"]
        if type(sig) is not bytes or not 0 < len(sig) <= MAX_SIGNATURE_LEN:
            raise RemoteProtocolError("announcement signature is malformed")
        for k, hi in (("version", MAX_VERSION), ("manifest_size", MAX_MANIFEST_BYTES)):
            if type(raw[k]) is not int or not 1 <= raw[k] <= hi:
                raise RemoteProtocolError(f"announcement {k} out of range")
        try:
            mesh = check_name(raw["mesh"], "mesh name")
            model = check_name(raw["model"], "model name")
        except ManifestError as e:
            raise RemoteProtocolError(f"announcement: {e}") from None
        ann = cls(
            mesh,
            model,
            raw["version"],
            ReleaseId(raw["release_id"]),
            raw["manifest_size"],
            Signature(KeyId(raw["key_id"]), sig),
        )
        if ann.encode() != data:
            raise RemoteProtocolError("announcement is not in canonical form")
        return ann

    def check(self, *, mesh: str, trust: TrustStore, current_version: int | None) -> KeyId:
        """Raise unless this announcement should be accepted and forwarded."""
        if self.mesh != mesh:
            raise RemoteProtocolError(
                f"announcement for mesh {self.mesh!r}, this node is in {mesh!r}"
            )
        if current_version is not None and self.version <= current_version:
            raise RemoteProtocolError(
                f"announcement of {self.model} v{self.version} is not newer than v{current_version}"
            )
        try:
            return trust.check(self.model, self.signed_message(self._body()), [self.signature])
        except TrustError as e:
            raise TrustError(
                f"announcement of {self.model} v{self.version} rejected: {e}"
            ) from None
