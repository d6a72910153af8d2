"""Identifier value types: chunk ids, release ids and key ids.

All three are SHA-256 digests (32 bytes).  They are immutable, hashable, compare by
value, print in full as lowercase hex with ``str()`` and in a short form with
``short()`` (the first 12 hex digits, enough to tell releases apart in logs).
They are distinct types so a chunk id cannot be passed where a release id is meant.

Non-goals: parsing multihash/CID formats; ids here are plain SHA-256.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Self

from mesh.errors import RemoteProtocolError

DIGEST_SIZE = 32
SHORT_HEX = 12  # 48 bits: collisions among the releases of one mesh are not a practical concern


class _Digest:
    """A SHA-256 digest used as a name."""

    __slots__ = ("_hash", "_raw")
    kind: ClassVar[str] = "digest"

    def __init__(self, raw: bytes) -> None:
        if type(raw) is not bytes or len(raw) != DIGEST_SIZE:
            raise RemoteProtocolError(
                f"{self.kind} must be {DIGEST_SIZE} bytes, got {type(raw).__name__} "
                f"of length {len(raw) if isinstance(raw, bytes | bytearray) else '?'}"
            )
        self._hash = hash(raw)
        self._raw = raw

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> Self:
        """The id of ``data``: its SHA-256."""
        return cls(hashlib.sha256(data).digest())

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse the full 64-digit hex form."""
        if not isinstance(text, str):
            raise RemoteProtocolError(f"{cls.kind} must be a hex string, got {type(text).__name__}")
        if len(text) != 2 * DIGEST_SIZE:
            raise RemoteProtocolError(f"{cls.kind} must be {2 * DIGEST_SIZE} hex digits: {text!r}")
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise RemoteProtocolError(f"{cls.kind} is not hex: {text!r}") from None

    @property
    def raw(self) -> bytes:
        return self._raw

    def hex(self) -> str:
        return self._raw.hex()

    def short(self) -> str:
        return self._raw.hex()[:SHORT_HEX]

    def __str__(self) -> str:
        return self._raw.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.short()}…)"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._raw == self._raw

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Self) -> bool:
        return self._raw < other._raw

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_raw"):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)


class ChunkId(_Digest):
    """SHA-256 of a chunk's bytes."""

    __slots__ = ()
    kind = "chunk id"


class ReleaseId(_Digest):
    """SHA-256 of a release's canonical manifest bytes."""

    __slots__ = ()
    kind = "release id"


class KeyId(_Digest):
    """SHA-256 of a publisher public key (SubjectPublicKeyInfo, DER)."""

    __slots__ = ()
    kind = "key id"
