"""Events: what drivers (the trio runtime, the simulator) tell a :class:`MeshNode`.

Every event is a frozen, slotted dataclass.  Peers are named by opaque strings (a
libp2p peer id in the runtime, ``"n17"`` in the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.core.trust import SignedRelease
from mesh.core.wire import Message
from mesh.ids import ReleaseId

PeerId = str


class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PeersDiscovered(Event):
    """Peers found by discovery; the node picks whom to dial.

    ``static`` peers (``--peer`` addresses, typically across a WAN) are always dialled
    and kept; the others (mDNS on the local network) up to ``max_peers``.
    """

    peers: tuple[PeerId, ...]
    static: bool = False


@dataclass(frozen=True, slots=True)
class PeerConnected(Event):
    """A connection is up.  ``local``: the peer's address is on our LAN (the driver can
    tell from the connection); peers beyond it are handled as a separate group."""

    peer: PeerId
    outbound: bool
    local: bool = True


@dataclass(frozen=True, slots=True)
class PeerDisconnected(Event):
    peer: PeerId


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A decoded wire message from ``peer`` (chunk payloads included)."""

    peer: PeerId
    message: Message


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The driver could not decode what ``peer`` sent (bad frame, oversize, ...)."""

    peer: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class AnnouncementReceived(Event):
    """A gossiped announcement (bytes as received; the node validates them)."""

    data: bytes
    source: PeerId | None = None


@dataclass(frozen=True, slots=True)
class LocalRelease(Event):
    """A release the node holds on disk (at start-up, or just published).

    ``present`` lists the chunk indexes already verified in the store.
    """

    release: SignedRelease
    present: tuple[int, ...]
    #: A signed announcement to gossip (and re-gossip) once the release is complete.
    announcement: bytes | None = None


@dataclass(frozen=True, slots=True)
class ChunkStored(Event):
    """Result of a :class:`~mesh.core.actions.StoreChunk`: the store verified the bytes
    against the chunk id and kept them (``ok``), or refused them."""

    release_id: ReleaseId
    index: int
    peer: PeerId
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChunkArriving(Event):
    """The first bytes of a chunk from ``peer`` arrived (its frame header was read);
    the rest is on its way.  Optional: the scheduler uses it to measure how long a
    request waits before its data starts to flow (see ``NodeConfig.start_cover_max``)."""

    peer: PeerId
    release_id: ReleaseId
    index: int


@dataclass(frozen=True, slots=True)
class ChunkSent(Event):
    """The driver finished sending a chunk (an upload slot is free again)."""

    peer: PeerId
    release_id: ReleaseId
    index: int


@dataclass(frozen=True, slots=True)
class ChunkUnavailable(Event):
    """A :class:`~mesh.core.actions.SendChunk` could not be served from the store."""

    peer: PeerId
    release_id: ReleaseId
    index: int
    reason: str
