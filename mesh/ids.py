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


class _Digest(tuple[str, bytes]):
    """A SHA-256 digest used as a name.

    Stored as the tuple ``(kind, raw)``: hashing and comparing then run in C, which
    matters because ids key the dictionaries the core consults several times per
    event (the simulator handles millions of events).  The kind keeps a chunk id and
    a release id with the same bytes apart.  Use ``.raw``, never the tuple itself.
    """

    __slots__ = ()
    kind: ClassVar[str] = "digest"

    def __new__(cls, raw: bytes) -> Self:
        if type(raw) is not bytes or len(raw) != DIGEST_SIZE:
            raise RemoteProtocolError(
                f"{cls.kind} must be {DIGEST_SIZE} bytes, got {type(raw).__name__} "
                f"of length {len(raw) if isinstance(raw, bytes | bytearray) else '?'}"
            )
        return tuple.__new__(cls, (cls.kind, raw))

    def __getnewargs__(self) -> tuple[bytes]:
        return (self[1],)

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
        return self[1]

    def hex(self) -> str:
        return self[1].hex()

    def short(self) -> str:
        return self[1].hex()[:SHORT_HEX]

    def __str__(self) -> str:
        return self[1].hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.short()}…)"


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
