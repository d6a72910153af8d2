"""Actions: what a :class:`MeshNode` asks its driver to do.

Every action is a frozen, slotted dataclass.  Drivers carry them out in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.core.events import PeerId
from mesh.core.trust import SignedRelease
from mesh.core.wire import Message
from mesh.ids import ChunkId, ReleaseId


class Action:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Connect(Action):
    peer: PeerId


@dataclass(frozen=True, slots=True)
class Disconnect(Action):
    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class SendMessage(Action):
    peer: PeerId
    message: Message


@dataclass(frozen=True, slots=True)
class SendChunk(Action):
    """Read chunk ``chunk_id`` from the store and send it as CHUNK_DATA; then report
    :class:`~mesh.core.events.ChunkSent` (or ``ChunkUnavailable``)."""

    peer: PeerId
    release_id: ReleaseId
    index: int
    chunk_id: ChunkId
    length: int


@dataclass(frozen=True, slots=True)
class StoreChunk(Action):
    """Verify ``payload`` hashes to ``chunk_id``, store it, report ``ChunkStored``."""

    peer: PeerId
    release_id: ReleaseId
    index: int
    chunk_id: ChunkId
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StoreRelease(Action):
    """Persist a verified signed release (manifest + signatures)."""

    release: SignedRelease


@dataclass(frozen=True, slots=True)
class Gossip(Action):
    """Publish (or forward) an announcement on the mesh's gossip topic."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ReleaseComplete(Action):
    """Every chunk of the release is verified: assemble it (and, on a node, activate)."""

    release_id: ReleaseId
    model: str
    version: int


@dataclass(frozen=True, slots=True)
class Notice(Action):
    """Something a user may want to see in the log (one line)."""

    level: str
    text: str
