"""``MeshNode``: the sans-IO protocol engine of one edgemesh node.

What it owns: peers and their sessions, the announcement book, the releases the node
holds or fetches (one *swarm* per release), availability (who has which chunk),
the fetch scheduler, the upload queue, super-seeding, penalties and bans.

API (the aioquic/h11 pattern, DESIGN §2)::

    node.handle(event, now=t)        # events from mesh.core.events
    for action in node.poll_actions(): ...   # actions from mesh.core.actions
    node.next_deadline()              # when to call node.on_deadline(now=...)
    node.statistics()                 # a frozen snapshot

Rules:
* Time only arrives as ``now``; randomness only from the injected ``random.Random``.
  Same events in the same order with the same seed -> the same actions.
* Nothing a peer sends is trusted: message meaning is checked against the manifest
  (index range, bitfield length, requested-or-not); a manifest must hash to the id it
  was requested by and carry a trusted signature; a chunk is only marked present
  after the driver's store verified it (``ChunkStored(ok=True)``).
* Bad behaviour costs penalty points (corrupt chunk 1.0, lie about a chunk 0.5,
  undecodable or out-of-range message 2.0); at ``ban_threshold`` the peer is
  disconnected and not dialled again for ``ban_seconds``.
* Bounded state: per-peer queues, pending have-sets, remembered heads and rejected
  releases all have fixed caps.

Scheduler (DESIGN §4): rarest-first among chunks the peer has and we lack; at most
``per_peer_requests`` in flight per peer and ``max_requests`` in total; faster peers
(by measured delivery rate) are asked first; requests time out after an adaptive
timeout and are retried elsewhere; near the end (endgame) outstanding chunks are also
requested from a second peer and the loser is cancelled.  A publisher with
``super_seed`` reveals to each peer only chunks that no peer has received yet, so
each chunk leaves the seed about once; afterwards it reveals only chunks no
connected peer holds.

Non-goals: I/O of any kind, hashing chunk payloads (the driver's store does it),
activation policy (``mesh.core.rollout``).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mesh.core import actions as A
from mesh.core import events as E
from mesh.core.announce import Announcement
from mesh.core.pipeline import BusyRate, cover_depth, extra_depth
from mesh.core.ratelimit import TokenBucket
from mesh.core.trust import SignedRelease, TrustStore
from mesh.core.wire import (
    PROTOCOL_VERSION,
    Cancel,
    ChunkData,
    ChunkRequest,
    Have,
    HaveUpdate,
    Head,
    Hello,
    ManifestRequest,
    ManifestResponse,
    Message,
    Reject,
    RejectCode,
)
from mesh.errors import EdgemeshError, LocalProtocolError, RemoteProtocolError
from mesh.ids import ChunkId, ReleaseId

PeerId = E.PeerId

PENALTY_CORRUPT = 1.0
PENALTY_LIE = 0.5
PENALTY_PROTOCOL = 2.0
PENALTY_BAD_MANIFEST = 2.0
MAX_PENDING_HAVES = 8  # have-sets for releases we do not know yet, per peer
MAX_UPDATE_BACKLOG = 65536  # have-update indexes kept per pending have-set
#: byte -> the byte with its bits in reverse order (wire bitfields are MSB first)
_BIT_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
MAX_HEADS = 256
MAX_REJECTED = 1024
MAX_CANDIDATES = 512  # discovered peers remembered for dialling
#: A requester holding fewer chunks of a release than this is a newcomer: one newcomer
#: at a time is queued past the upload slots and served next (ADR 0007).  0: off.
NEWCOMER_CHUNKS = 1
#: The request cover's wait and transfer times: averaged over the first COVER_SAMPLES
#: chunks (the first one alone can be far off: a request queued while the swarm
#: starts, a chunk read late and then all at once), then smoothed with COVER_GAIN.
COVER_SAMPLES = 4
COVER_GAIN = 0.2


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Tuning of one node.  Defaults suit a LAN of 100 Mbit/s devices and 1 MiB chunks."""

    mesh: str = "default"
    #: Announce releases and super-seed them (a publisher), instead of only sharing.
    super_seed: bool = False
    #: Peers to keep connections with: enough for rarest-first to see the swarm,
    #: few enough that have-updates stay cheap (BitTorrent uses 30-80).
    max_peers: int = 12
    #: Inbound connections accepted beyond max_peers (others must be able to join us).
    max_inbound: int = 24
    #: Inbound peers from beyond the LAN (not found by mDNS) accepted in addition.
    max_remote_peers: int = 64
    #: Requests in flight to one peer: two keep its uplink busy across a round trip.
    per_peer_requests: int = 1
    #: Requests in flight in total: few concurrent downloads finish each chunk sooner,
    #: and a chunk can only be served onwards once complete.
    max_requests: int = 4
    #: Extra requests allowed beyond max_requests for a chunk only one peer has (a
    #: super-seed's reveal).  0: rare chunks are asked for first, within max_requests
    #: (more concurrent downloads split the downlink and slow every one of them).
    rare_requests: int = 0
    #: After a BUSY answer, leave that peer alone this long (seconds).
    busy_backoff: float = 0.1
    #: A super-seed reveals more to a peer whose have-set has not grown this long
    #: (it cannot get the missing chunks elsewhere: star topology, lying peers).
    stall_seconds: float = 3.0
    #: Chunks a super-seed keeps revealed to each peer.
    reveal_per_peer: int = 2
    #: ... and at least this many across all its peers: a seed with one or two fast
    #: peers reveals more to each, else such a peer idles between reveals while its
    #: have-update travels (two processes on loopback: 0.25 of a raw stream with 2,
    #: 0.7 with 8).  With reveal_total / reveal_per_peer peers or more it changes nothing.
    reveal_total: int = 8
    #: Chunks served at once; more split the uplink and delay every chunk.
    upload_slots: int = 4
    #: Requests queued (all upload slots busy) per peer, and in total, beyond which
    #: we answer BUSY: a requester then asks another holder instead of waiting.  0:
    #: no queue -- a request the node cannot serve at once is turned away within one
    #: round trip, so no request slot of the requester sits idle in a queue while
    #: other holders have free upload slots.  (One request of a newcomer, a peer that
    #: holds nothing yet, is queued regardless: NEWCOMER_CHUNKS.)
    upload_queue_per_peer: int = 4
    upload_queue_total: int = 0
    #: Keep about this many seconds of a fast peer's measured rate in flight: a peer
    #: that moves more than a chunk per pipeline_time gets rate * pipeline_time /
    #: chunk size requests beyond per_peer_requests and max_requests, and a super-seed
    #: queues and reveals that many more for a peer it uploads to that fast
    #: (mesh/core/pipeline.py).  It must cover a request's round trip including the
    #: sender's read and scheduling delays on a busy 2-core device (tens of ms).  At
    #: 100 Mbit/s with 1 MiB chunks that is none (0.72 of a chunk); between two
    #: processes on loopback it is the cap.  0 turns it off.
    pipeline_time: float = 0.06
    #: ... and at most this many extra per peer.
    max_pipeline: int = 8
    #: At most this many requests beyond max_requests that cover the wait before a
    #: requested chunk starts to arrive: max_requests * wait / transfer, measured
    #: (mesh/core/pipeline.py, cover_depth).  Where links queue (a shaped 50 Mbit/s
    #: LAN: ~0.1 s of wait against ~0.6 s of transfer) that is one more; where the
    #: wait is negligible, none.  0 turns it off.
    start_cover_max: int = 1
    #: Batch have-updates this long: fewer messages, slightly later availability.
    have_interval: float = 0.02
    #: Request timeout: max(min, factor x this peer's typical delivery time).
    request_timeout_min: float = 1.5
    request_timeout_factor: float = 4.0
    request_timeout_max: float = 60.0
    manifest_timeout: float = 10.0
    #: Endgame starts when this few chunks are missing (and all are requested).
    endgame_chunks: int = 8
    ban_threshold: float = 2.0
    ban_seconds: float = 600.0
    #: Re-send hellos not yet answered and full have-sets this often: repairs lost frames.
    refresh_interval: float = 5.0
    #: Re-gossip our announcements this often (gossip does not persist).
    reannounce_interval: float = 30.0
    upload_rate: float | None = None  # bytes/s, None = unlimited
    download_rate: float | None = None
    #: Retry dialling discovered peers when below max_peers this often.
    dial_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class SwarmStats:
    release_id: ReleaseId
    model: str
    version: int
    chunks_total: int
    chunks_verified: int
    complete: bool
    completed_at: float | None


@dataclass(frozen=True, slots=True)
class PeerStats:
    peer: PeerId
    penalty: float
    bytes_from: int
    bytes_to: int
    rate: float


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    peers: tuple[PeerStats, ...]
    swarms: tuple[SwarmStats, ...]
    bytes_uploaded: int
    bytes_downloaded: int
    chunks_uploaded: int
    chunks_downloaded: int
    wasted_bytes: int
    corrupt_chunks: int
    requests_timed_out: int
    banned: tuple[PeerId, ...]
    #: Smoothed seconds from a chunk request to its first bytes, and from those to
    #: the whole chunk (None before COVER_SAMPLES chunks were measured), and the
    #: requests beyond max_requests that cover the wait (NodeConfig.start_cover_max).
    request_wait_s: float | None = None
    request_transfer_s: float | None = None
    request_cover: int = 0


class _Swarm:
    __slots__ = (
        "avail",
        "chunk_ids",
        "completed_at",
        "full_mask",
        "have",
        "have_count",
        "holders",
        "lengths",
        "model",
        "n",
        "pending_updates",
        "rare_mask",
        "release",
        "requested",
        "requested_mask",
        "reveal_pending",
        "rid",
        "storing_mask",
        "ungiven",
        "ungiven_remote",
        "version",
    )

    def __init__(self, release: SignedRelease) -> None:
        m = release.manifest
        self.release = release
        self.rid = m.release_id
        self.model = m.model
        self.version = m.version
        refs = list(m.chunk_refs())
        self.n = len(refs)
        self.chunk_ids: list[ChunkId] = [r.chunk_id for r in refs]
        self.lengths: list[int] = [r.length for r in refs]
        self.have = 0
        self.have_count = 0
        self.full_mask = (1 << self.n) - 1
        self.avail = [0] * self.n
        self.holders = [0] * self.n  # per chunk: the slot bits of the peers that have it
        self.rare_mask = 0  # chunks exactly one connected peer has
        self.requested: dict[int, dict[PeerId, float]] = {}
        self.requested_mask = 0
        self.storing_mask = 0
        self.pending_updates: list[int] = []
        # super-seeding: chunks never revealed to anyone, and per chunk the number of
        # connected peers it is revealed to that do not have it yet
        self.ungiven = self.full_mask  # never revealed to a local (mDNS) peer
        self.ungiven_remote = self.full_mask  # ... to a peer beyond the LAN
        self.reveal_pending = [0] * self.n
        self.completed_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.have_count == self.n

    def bitfield(self, bits: int | None = None) -> bytes:
        # chunk i = bit i of the int = bit (i % 8), MSB first, of byte i // 8 on the wire
        b = self.have if bits is None else bits
        return b.to_bytes((self.n + 7) // 8, "little").translate(_BIT_REVERSE)

    def parse_bitfield(self, data: bytes) -> int:
        if len(data) != (self.n + 7) // 8:
            raise RemoteProtocolError(
                f"have bitfield of {len(data)} bytes for a release of {self.n} chunks"
            )
        bits = int.from_bytes(data.translate(_BIT_REVERSE), "little")
        if bits >> self.n:
            raise RemoteProtocolError("have bitfield sets bits past the last chunk")
        return bits


@dataclass
class _Peer:
    id: PeerId
    outbound: bool
    connected_at: float
    hello: Hello | None = None
    have: dict[ReleaseId, int] = field(default_factory=dict)
    # have-sets / updates for releases whose manifest we do not know yet
    pending_have: dict[ReleaseId, bytes] = field(default_factory=dict)
    pending_updates: dict[ReleaseId, list[int]] = field(default_factory=dict)
    inflight: dict[tuple[ReleaseId, int], float] = field(default_factory=dict)
    queue: deque[tuple[ReleaseId, int]] = field(default_factory=deque)
    uploading: int = 0
    revealed: dict[ReleaseId, int] = field(default_factory=dict)
    penalty: float = 0.0
    bytes_from: int = 0
    bytes_to: int = 0
    delivery_ewma: float | None = None  # seconds from request to verified data
    timeout: float = 0.0  # request timeout computed from ...
    timeout_of: float | None = -1.0  # ... this delivery_ewma (-1: not yet computed)
    rate_ewma: float = 0.0  # bytes/s delivered to us
    manifest_inflight: dict[ReleaseId, float] = field(default_factory=dict)
    busy_until: float = 0.0  # it answered BUSY: do not ask it again before this
    slot: int = 0  # its number among the connected peers (reused after it leaves)
    last_progress: float = 0.0  # when its have-set last grew (super-seeding stall check)
    hello_sent_at: float = 0.0
    local: bool = True  # on our LAN (as the driver saw the connection's address)
    # chunks it advertised and then denied having: its later claims to them are ignored
    denied: dict[ReleaseId, int] = field(default_factory=dict)
    # it has asked us for a chunk, so it is fetching, not a (super-)seed: it need not
    # hear about chunks it already holds (see _flush_have_updates)
    fetcher: bool = False
    # adaptive pipelining (mesh/core/pipeline.py): its delivery rate to us while our
    # requests were outstanding, and ours to it while we uploaded; the extra requests
    # we send it and the extra reveals/queued requests we allow it
    down_rate: BusyRate | None = None
    up_rate: BusyRate | None = None
    extra: int = 0
    up_extra: int = 0
    # releases for which it was served once as a newcomer (see _msg_chunk_request)
    newcomer_served: set[ReleaseId] = field(default_factory=set)

    def has(self, rid: ReleaseId, index: int) -> bool:
        return bool(self.have.get(rid, 0) >> index & 1)


@dataclass
class _HeadInfo:
    version: int
    release_id: ReleaseId
    sources: set[PeerId]
    verified: bool  # from a signed announcement (vs. a peer's hello)
    next_try: float = 0.0
    tried: set[PeerId] = field(default_factory=set)


class MeshNode:
    """One node's protocol state machine.  See the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        trust: TrustStore,
        *,
        rng: random.Random,
        now: float = 0.0,
        node_id: PeerId = "",
    ) -> None:
        self.config = config
        self.trust = trust
        self.rng = rng
        self.node_id = node_id
        self._actions: list[A.Action] = []
        self._peers: dict[PeerId, _Peer] = {}
        self._swarms: dict[ReleaseId, _Swarm] = {}
        self._current: dict[str, int] = {}  # model -> newest version we hold a manifest of
        self._heads: dict[str, _HeadInfo] = {}
        # releases peers say they have (a Have for a release we do not know): fetching
        # the manifest tells us whether it is newer and trusted.  Late joiners and
        # nodes that missed the gossip catch up this way.
        self._hints: dict[ReleaseId, _HeadInfo] = {}
        self._stale: dict[ReleaseId, None] = {}  # fetched, valid, but not newer: ignore
        self._rejected: dict[ReleaseId, str] = {}
        self._banned: dict[PeerId, float] = {}
        self._candidates: list[PeerId] = []
        self._static: dict[PeerId, None] = {}
        self._dialing: set[PeerId] = set()
        self._announcements: list[bytes] = []
        self._next_announce = now + config.reannounce_interval
        self._next_dial = now
        self._next_stall_check = now + config.stall_seconds
        self._next_refresh = now + config.refresh_interval
        self._have_flush_at: float | None = None
        self._up_bucket = TokenBucket(config.upload_rate, 4 * 1024 * 1024, now=now)
        self._down_bucket = TokenBucket(config.download_rate, 4 * 1024 * 1024, now=now)
        self._uploading_total = 0
        self._queued = 0  # requests waiting in the peers' upload queues
        self._newcomer: PeerId | None = None  # a peer holding nothing, served next
        self._requests: dict[tuple[ReleaseId, int, PeerId], float] = {}  # chunk requests out
        # when the first of them times out (None: to be computed; a request ending
        # or a peer's timeout changing resets it, a new request only lowers it)
        self._requests_due: float | None = None
        self._backoff_peers: set[PeerId] = set()  # peers that said BUSY recently
        # (busy_until, peer) for them: a heap, so the next backoff to end is found
        # without visiting every backing-off peer after every event
        self._backoff_heap: list[tuple[float, PeerId]] = []
        # What the next scheduling pass must look at.  After a pass that took every
        # opportunity, only a change can make a new one: a peer gaining chunks we miss
        # or becoming free (those peers are listed here), or a chunk becoming
        # requestable again from others, a new swarm, the endgame (a full pass).  Most
        # events change nothing of the kind, and their pass costs nothing.
        self._sched_full = True
        self._sched_peers: dict[PeerId, None] = {}
        self._sched_probes: dict[PeerId, None] = {}  # backoffs that just ended
        # connected peers by slot number (None: free), for the swarms' holder masks
        self._slots: list[_Peer | None] = []
        self._free_slots: list[int] = []
        self._extra_total = 0  # sum of the peers' extra (adaptive pipelining)
        # requests covering the wait before data flows (pipeline.cover_depth): when the
        # first bytes of each outstanding request arrived, and the smoothed wait and
        # transfer times of full-size chunks
        self._arrived: dict[tuple[ReleaseId, int, PeerId], float] = {}
        self._wait_ewma = 0.0
        self._xfer_ewma = 0.0
        self._cover_samples = 0
        self._cover = 0
        self._stats = {
            "bytes_up": 0,
            "bytes_down": 0,
            "chunks_up": 0,
            "chunks_down": 0,
            "wasted": 0,
            "corrupt": 0,
            "timeouts": 0,
        }
        self._now = now

    # == public API ==================================================================

    def poll_actions(self) -> Iterator[A.Action]:
        while self._actions:
            batch, self._actions = self._actions, []
            yield from batch

    def handle(self, event: E.Event, *, now: float) -> None:
        self._now = now
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"MeshNode cannot handle {type(event).__name__}")
        handler(self, event)
        if not isinstance(event, E.ChunkArriving):  # only measured: nothing to schedule
            self._schedule()

    def receive(self, peer: PeerId, message: Message, *, now: float) -> None:
        """``handle(MessageReceived(peer, message), now=now)`` without the event
        object: the same handling, for the simulator's hottest path."""
        self._now = now
        self._message(peer, message)
        self._schedule()

    def on_deadline(self, *, now: float) -> None:
        self._now = now
        self._expire_requests()
        if self._have_flush_at is not None and now >= self._have_flush_at:
            self._flush_have_updates()
        if now >= self._next_announce and self._announcements:
            for data in self._announcements:
                self._emit(A.Gossip(data))
            self._next_announce = now + self.config.reannounce_interval
        if now >= self._next_dial:
            self._dial()
        if self.config.super_seed and now >= self._next_stall_check:
            self._stall_check()
        if now >= self._next_refresh:
            self._refresh()
            self._sched_full = True  # a safety net: every refresh, look at every peer
        self._retry_heads()
        self._schedule()
        self._serve_uploads()

    def next_deadline(self) -> float | None:
        # called after every event: a running minimum, no lists, cheap checks first
        c = self.config
        best = self._requests_due
        if best is None:
            best = math.inf
            peers = self._peers
            for (_, _, peer), sent in self._requests.items():
                t = sent + self._timeout(peers[peer])
                if t < best:
                    best = t
            self._requests_due = best
        if self._heads or self._hints:
            for p in self._manifest_waits():
                for sent in p.manifest_inflight.values():
                    best = min(best, sent + c.manifest_timeout)
            for h in self._wanted():
                if h.next_try < best and not self._manifest_pending(h.release_id):
                    best = h.next_try
        heap = self._backoff_heap
        limit = c.max_requests + self._extra_total + self._cover + c.rare_requests
        if heap and len(self._requests) < limit:
            # the end of a backoff matters only with a request slot free: otherwise the
            # next pass (a slot frees on an event) sees the peer free again
            if heap[0][0] <= self._now:
                self._end_backoffs()
            if heap and heap[0][0] < best:
                best = heap[0][0]  # the next backoff to end (or a superseded entry)
        flush = self._have_flush_at
        if flush is not None and flush < best:
            best = flush
        now = self._now
        for s in self._swarms.values():
            if s.requested and not s.complete and s.n - s.have_count <= c.endgame_chunks:
                for holders in s.requested.values():
                    if len(holders) == 1:
                        ((peer, t),) = holders.items()
                        due = t + self._endgame_delay(peer)
                        if now < due < best:  # once due, the scheduler acts on events
                            best = due
        if self._announcements and self._next_announce < best:
            best = self._next_announce
        if self._peers:
            if self._next_refresh < best:
                best = self._next_refresh
            if c.super_seed and self._next_stall_check < best:
                best = self._next_stall_check
        if self._candidates and self._next_dial < best and len(self._peers) < c.max_peers:
            best = self._next_dial
        # a rate limit matters only while the bucket is empty: when it refills, the
        # waiting uploads/requests go ahead (a deadline at "now" would spin)
        if c.upload_rate is not None and self._queued:
            t = self._up_bucket.ready_at(now=now)
            if now < t < best:
                best = t
        if c.download_rate is not None and self._needs_download():
            t = self._down_bucket.ready_at(now=now)
            if now < t < best:
                best = t
        return None if best == math.inf else best

    def _end_backoffs(self) -> None:
        """Forget the backoffs that have ended: the scheduler looks at those peers
        again (first with a probe)."""
        heap = self._backoff_heap
        while heap:
            t, pid = heap[0]
            q = self._peers.get(pid)
            if q is not None and q.busy_until == t and t > self._now:
                break  # the next backoff to end
            heapq.heappop(heap)  # ended, or superseded by a later backoff of q
            if pid in self._backoff_peers and (q is None or q.busy_until <= self._now):
                self._backoff_peers.discard(pid)
                self._sched_peers[pid] = None
                self._sched_probes[pid] = None

    def _manifest_waits(self) -> list[_Peer]:
        if not (self._heads or self._hints):
            return []  # requests only go out for wanted heads; stale ones are harmless
        return [p for p in self._peers.values() if p.manifest_inflight]

    def validate_announcement(self, data: bytes) -> bool:
        """The gossip validator: accept (and forward) only valid, newer announcements."""
        try:
            self._check_announcement(data)
        except EdgemeshError:
            return False
        return True

    def statistics(self) -> NodeStatistics:
        measured = self._cover_samples >= COVER_SAMPLES  # the request cover's averages
        return NodeStatistics(
            peers=tuple(
                PeerStats(p.id, p.penalty, p.bytes_from, p.bytes_to, p.rate_ewma)
                for p in self._peers.values()
            ),
            swarms=tuple(
                SwarmStats(s.rid, s.model, s.version, s.n, s.have_count, s.complete, s.completed_at)
                for s in self._swarms.values()
            ),
            bytes_uploaded=self._stats["bytes_up"],
            bytes_downloaded=self._stats["bytes_down"],
            chunks_uploaded=self._stats["chunks_up"],
            chunks_downloaded=self._stats["chunks_down"],
            wasted_bytes=self._stats["wasted"],
            corrupt_chunks=self._stats["corrupt"],
            requests_timed_out=self._stats["timeouts"],
            banned=tuple(sorted(p for p, until in self._banned.items() if until > self._now)),
            request_wait_s=self._wait_ewma if measured else None,
            request_transfer_s=self._xfer_ewma if measured else None,
            request_cover=self._cover,
        )

    def heads(self) -> tuple[Head, ...]:
        """The newest release of each model we hold a verified manifest of."""
        out = []
        for model, version in sorted(self._current.items()):
            for s in self._swarms.values():
                if s.model == model and s.version == version:
                    out.append(Head(model, version, s.rid))
        return tuple(out)

    def penalty(self, peer: PeerId) -> float:
        p = self._peers.get(peer)
        return 0.0 if p is None else p.penalty

    def complete_peers(self, release_id: ReleaseId) -> tuple[PeerId, ...]:
        """Connected peers whose have-set says they hold every chunk of the release."""
        s = self._swarms.get(release_id)
        if s is None:
            return ()
        full = s.full_mask
        return tuple(p.id for p in self._peers.values() if p.have.get(release_id, 0) == full)

    # == helpers ======================================================================

    def _emit(self, action: A.Action) -> None:
        self._actions.append(action)

    def _send(self, peer: PeerId, msg: Message) -> None:
        self._actions.append(A.SendMessage(peer, msg))

    def _timeout(self, p: _Peer) -> float:
        d = p.delivery_ewma
        if d is p.timeout_of:  # memo: next_deadline asks after every event
            return p.timeout
        c = self.config
        if d is None:
            t = c.request_timeout_min * 2
        else:
            t = min(c.request_timeout_max, max(c.request_timeout_min, c.request_timeout_factor * d))
        p.timeout, p.timeout_of = t, d
        return t

    def _active(self) -> list[_Peer]:
        return [p for p in self._peers.values() if p.hello is not None]

    def _penalise(self, p: _Peer, points: float, why: str) -> None:
        p.penalty += points
        if p.penalty >= self.config.ban_threshold:
            self._banned[p.id] = self._now + self.config.ban_seconds
            self._emit(A.Notice("warning", f"peer {p.id} banned: {why}"))
            self._emit(A.Disconnect(p.id, f"banned: {why}"))
            self._drop_peer(p.id)

    def _needs_download(self) -> bool:
        return any(not s.complete for s in self._swarms.values() if self._is_current(s))

    def _is_current(self, s: _Swarm) -> bool:
        return self._current.get(s.model) == s.version

    # == discovery and connections =====================================================

    def _on_discovered(self, ev: E.PeersDiscovered) -> None:
        if ev.static:
            for peer in ev.peers:
                if peer != self.node_id and len(self._static) < MAX_CANDIDATES:
                    self._static[peer] = None
        known = set(self._candidates)
        for peer in ev.peers:
            if (
                peer != self.node_id
                and peer not in known
                and len(self._candidates) < MAX_CANDIDATES
            ):
                self._candidates.append(peer)
                known.add(peer)
        self._dial()

    def _dial(self) -> None:
        self._next_dial = self._now + self.config.dial_interval
        for peer in self._static:  # operator-given peers: always connected
            if (
                peer not in self._peers
                and peer not in self._dialing
                and self._banned.get(peer, 0.0) <= self._now
            ):
                self._dialing.add(peer)
                self._emit(A.Connect(peer))
        room = self.config.max_peers - len(self._peers) - len(self._dialing)
        if room <= 0:
            return
        choices = [
            c
            for c in self._candidates
            if c not in self._peers
            and c not in self._dialing
            and self._banned.get(c, 0.0) <= self._now
        ]
        self.rng.shuffle(choices)
        for peer in choices[:room]:
            self._dialing.add(peer)
            self._emit(A.Connect(peer))

    def _on_connected(self, ev: E.PeerConnected) -> None:
        self._dialing.discard(ev.peer)
        if self._banned.get(ev.peer, 0.0) > self._now:
            self._emit(A.Disconnect(ev.peer, "banned"))
            return
        if ev.peer in self._peers:
            return
        limit = self.config.max_peers + (0 if ev.outbound else self.config.max_inbound)
        if not ev.local and not ev.outbound:
            # a peer from beyond our LAN (it dialled us as a static --peer): such peers
            # have few other ways in, so they get their own allowance
            limit = self.config.max_remote_peers + sum(1 for q in self._peers.values() if q.local)
        if len(self._peers) >= limit and ev.peer not in self._static:
            self._emit(A.Disconnect(ev.peer, "too many peers"))
            return
        p = self._peers[ev.peer] = _Peer(
            ev.peer,
            ev.outbound,
            self._now,
            last_progress=self._now,
            local=ev.local,
            down_rate=BusyRate(self.config.pipeline_time),
            up_rate=BusyRate(self.config.pipeline_time),
        )
        if self._free_slots:
            p.slot = self._free_slots.pop()
            self._slots[p.slot] = p
        else:
            p.slot = len(self._slots)
            self._slots.append(p)
        self._peers[ev.peer].hello_sent_at = self._now
        self._send(ev.peer, Hello(self.config.mesh, PROTOCOL_VERSION, self.heads()))

    def _on_disconnected(self, ev: E.PeerDisconnected) -> None:
        self._dialing.discard(ev.peer)
        self._drop_peer(ev.peer)

    def _drop_peer(self, peer: PeerId) -> None:
        p = self._peers.pop(peer, None)
        if p is None:
            return
        if peer in self._backoff_peers:
            heapq.heappush(self._backoff_heap, (-math.inf, peer))  # ended: see next_deadline
        self._uploading_total -= p.uploading
        self._queued -= len(p.queue)
        if peer == self._newcomer:
            self._newcomer = None
        self._extra_total -= p.extra
        for rid, bits in p.have.items():
            s = self._swarms.get(rid)
            if s is not None:
                self._add_avail(s, bits, -1, p)
        self._slots[p.slot] = None
        self._free_slots.append(p.slot)
        for rid, shown in p.revealed.items():
            s = self._swarms.get(rid)
            if s is not None:
                self._reveal_settled(p, s, shown & ~p.have.get(rid, 0))
        for rid, index in list(p.inflight):
            self._unrequest(rid, index, peer)
            self._requestable_again(rid, index, None)  # its chunks are out of avail
        for h in self._wanted():
            h.sources.discard(peer)

    # == messages ========================================================================

    def _on_violation(self, ev: E.ProtocolViolation) -> None:
        p = self._peers.get(ev.peer)
        if p is not None:
            self._penalise(p, PENALTY_PROTOCOL, f"protocol violation: {ev.reason}")

    def _on_message(self, ev: E.MessageReceived) -> None:
        self._message(ev.peer, ev.message)

    def _message(self, peer: PeerId, msg: Message) -> None:
        p = self._peers.get(peer)
        if p is None:
            return  # late message from a dropped peer
        if p.hello is None and not isinstance(msg, Hello):
            self._penalise(p, PENALTY_PROTOCOL, f"{type(msg).__name__} before hello")
            return
        try:
            handler = _MSG_HANDLERS[type(msg)]
            handler(self, p, msg)
        except RemoteProtocolError as e:
            self._penalise(p, PENALTY_PROTOCOL, str(e))

    def _msg_hello(self, p: _Peer, msg: Hello) -> None:
        if p.hello is not None:
            # A repeated hello means the peer never got ours (lost frame): answer it,
            # and take its heads as fresh news.  At most one answer per second.
            if msg.mesh != p.hello.mesh or msg.protocol != p.hello.protocol:
                raise RemoteProtocolError("hello changed mesh or protocol")
            for h in msg.heads:
                self._note_head(h.model, h.version, h.release_id, p.id, verified=False)
            if self._now - p.hello_sent_at >= 1.0:
                p.hello_sent_at = self._now
                self._send(p.id, Hello(self.config.mesh, PROTOCOL_VERSION, self.heads()))
            return
        if msg.mesh != self.config.mesh:
            self._send(
                p.id, Reject(RejectCode.WRONG_MESH, detail=f"this is mesh {self.config.mesh}")
            )
            self._emit(A.Disconnect(p.id, f"peer is in mesh {msg.mesh!r}"))
            self._drop_peer(p.id)
            return
        if msg.protocol != PROTOCOL_VERSION:
            self._emit(A.Disconnect(p.id, f"peer speaks protocol {msg.protocol}"))
            self._drop_peer(p.id)
            return
        p.hello = msg
        self._sched_peers[p.id] = None
        for h in msg.heads:
            self._note_head(h.model, h.version, h.release_id, p.id, verified=False)
        for s in self._swarms.values():
            self._send_have(p, s)

    def _send_have(self, p: _Peer, s: _Swarm) -> None:
        if self.config.super_seed and s.complete:
            bits = p.revealed.get(s.rid, 0)
            p.revealed[s.rid] = bits
            self._send(p.id, Have(s.rid, s.bitfield(bits)))
            self._reveal(p, s)
        else:
            self._send(p.id, Have(s.rid, s.bitfield()))

    def _msg_have(self, p: _Peer, msg: Have) -> None:
        s = self._swarms.get(msg.release_id)
        if s is None:
            rid = msg.release_id
            if len(p.pending_have) < MAX_PENDING_HAVES or rid in p.pending_have:
                p.pending_have[rid] = msg.bitfield  # parsed once the manifest is known
                p.pending_updates.pop(rid, None)
            if rid not in self._rejected and rid not in self._stale:
                hint = self._hints.get(rid)
                if hint is None and len(self._hints) < MAX_HEADS:
                    hint = self._hints[rid] = _HeadInfo(0, rid, set(), False)
                if hint is not None:
                    hint.sources.add(p.id)
                    self._retry_heads()
            return
        bits = s.parse_bitfield(msg.bitfield) & ~p.denied.get(s.rid, 0)
        self._set_have(p, s, bits)

    def _set_have(self, p: _Peer, s: _Swarm, bits: int) -> None:
        old = p.have.get(s.rid, 0)
        if self.config.super_seed:
            self._reveal_settled(p, s, bits & ~old)
        gone, new = old & ~bits, bits & ~old  # a periodic full have-set: usually neither
        if gone:
            self._add_avail(s, gone, -1, p)
        p.have[s.rid] = bits
        if new & ~(s.have | s.storing_mask | s.requested_mask):
            self._sched_peers[p.id] = None  # it has something to ask it for
        p.last_progress = self._now
        if new:
            self._add_avail(s, new, +1, p)
        if self.config.super_seed:
            self._reveal(p, s)

    def _add_avail(self, s: _Swarm, bits: int, delta: int, p: _Peer) -> None:
        """``p`` has (``delta`` +1) or no longer has (-1) the chunks in ``bits``."""
        avail = s.avail
        holders = s.holders
        slot = 1 << p.slot
        rare = s.rare_mask
        if delta > 0:
            while bits:
                low = bits & -bits
                i = low.bit_length() - 1
                a = avail[i] = avail[i] + 1
                holders[i] |= slot
                rare = rare | low if a == 1 else rare & ~low
                bits ^= low
        else:
            while bits:
                low = bits & -bits
                i = low.bit_length() - 1
                a = avail[i] = avail[i] - 1
                holders[i] &= ~slot
                rare = rare | low if a == 1 else rare & ~low
                bits ^= low
        s.rare_mask = rare

    def _msg_have_update(self, p: _Peer, msg: HaveUpdate) -> None:
        s = self._swarms.get(msg.release_id)
        if s is None:
            pending = (
                p.pending_updates.setdefault(msg.release_id, [])
                if (msg.release_id in p.pending_have)
                else None
            )
            if pending is not None and len(pending) < MAX_UPDATE_BACKLOG:
                pending.extend(msg.indexes)
            return
        bits = p.have.get(s.rid, 0)
        new = 0
        for i in msg.indexes:
            if i >= s.n:
                raise RemoteProtocolError(f"have-update index {i} past the last chunk ({s.n})")
            if not bits >> i & 1:
                new |= 1 << i
        new &= ~p.denied.get(s.rid, 0)
        if new:
            p.have[s.rid] = bits | new
            if new & ~(s.have | s.storing_mask | s.requested_mask):
                self._sched_peers[p.id] = None  # it has something to ask it for
            p.last_progress = self._now
            self._add_avail(s, new, +1, p)
            if self.config.super_seed:
                self._reveal_settled(p, s, new)
                self._reveal(p, s)

    def _msg_manifest_request(self, p: _Peer, msg: ManifestRequest) -> None:
        s = self._swarms.get(msg.release_id)
        if s is None:
            self._send(p.id, Reject(RejectCode.NOT_HAVE, msg.release_id))
            return
        self._send(p.id, ManifestResponse(s.rid, s.release.encode()))

    def _msg_manifest_response(self, p: _Peer, msg: ManifestResponse) -> None:
        sent = p.manifest_inflight.pop(msg.release_id, None)
        if sent is None:
            raise RemoteProtocolError("unrequested manifest")
        if msg.release_id in self._swarms:
            return
        try:
            release = SignedRelease.decode(msg.signed_release)
        except EdgemeshError as e:
            self._penalise(p, PENALTY_BAD_MANIFEST, f"bad manifest: {e}")
            return
        m = release.manifest
        if m.release_id != msg.release_id:
            self._penalise(
                p,
                PENALTY_BAD_MANIFEST,
                f"manifest hashes to {m.release_id.short()}, not the requested "
                f"{msg.release_id.short()}",
            )
            return
        try:
            if m.mesh != self.config.mesh:
                raise RemoteProtocolError(f"release is for mesh {m.mesh!r}")
            self.trust.check_release(release)
        except EdgemeshError as e:
            self._reject_release(m.release_id, str(e))
            self._penalise(p, PENALTY_BAD_MANIFEST, str(e))
            return
        self._hints.pop(m.release_id, None)
        current = self._current.get(m.model)
        if current is not None and m.version <= current:
            # not newer than what we hold: remember, so hints do not fetch it again
            if len(self._stale) >= MAX_REJECTED:
                self._stale.pop(next(iter(self._stale)))
            self._stale[m.release_id] = None
            return
        self._emit(A.StoreRelease(release))
        self._emit(
            A.Notice("info", f"release {m.describe()} verified, fetching {m.chunk_total} chunks")
        )
        self._add_swarm(release, ())

    def _reject_release(self, rid: ReleaseId, why: str) -> None:
        if len(self._rejected) >= MAX_REJECTED:
            self._rejected.pop(next(iter(self._rejected)))
        self._rejected[rid] = why
        self._hints.pop(rid, None)
        self._emit(A.Notice("warning", f"release {rid.short()} rejected: {why}"))

    def _msg_chunk_request(self, p: _Peer, msg: ChunkRequest) -> None:
        s = self._swarms.get(msg.release_id)
        if s is None:
            self._send(p.id, Reject(RejectCode.UNKNOWN_RELEASE, msg.release_id, msg.index))
            return
        if msg.index >= s.n:
            raise RemoteProtocolError(f"chunk request index {msg.index} past the last chunk")
        p.fetcher = True
        if not s.have >> msg.index & 1:
            self._send(p.id, Reject(RejectCode.NOT_HAVE, msg.release_id, msg.index))
            return
        if self.config.super_seed and not p.revealed.get(s.rid, s.full_mask) >> msg.index & 1:
            self._send(p.id, Reject(RejectCode.BUSY, msg.release_id, msg.index))
            return
        # a free slot serves the request at once; otherwise it waits in a short queue
        # (without a rate limit the queue is empty while a slot is free)
        c = self.config
        up = self._uploading_total
        if (
            self._newcomer is None
            and not p.queue
            and NEWCOMER_CHUNKS > 0
            and p.penalty == 0.0
            and s.rid not in p.newcomer_served
            and p.have.get(s.rid, 0).bit_count() + p.uploading < NEWCOMER_CHUNKS
        ):
            # a peer that holds (almost) nothing and gets nothing from us yet is served
            # next: once it holds chunks it uploads too, instead of the early holders
            # trading only among themselves while it waits (ADR 0007, "Newcomers").
            # Once per release and peer: its have-set is what it tells us, so a peer
            # that never reports what it got cannot keep jumping the queue.
            self._newcomer = p.id
        elif (up >= c.upload_slots or c.upload_rate is not None) and len(p.queue) >= p.up_extra:
            queued = (
                0  # every slot busy and no queue: BUSY, whatever is queued
                if up >= c.upload_slots and c.upload_queue_total <= 0
                else self._queued
            )
            if up + queued >= c.upload_slots and (
                len(p.queue) >= c.upload_queue_per_peer or queued >= c.upload_queue_total
            ):
                self._send(p.id, Reject(RejectCode.BUSY, msg.release_id, msg.index))
                return
        p.queue.append((msg.release_id, msg.index))
        self._queued += 1
        self._serve_uploads()

    def _msg_cancel(self, p: _Peer, msg: Cancel) -> None:
        # already being sent, or never asked: nothing to do
        with contextlib.suppress(ValueError):
            p.queue.remove((msg.release_id, msg.index))
            self._queued -= 1
        if p.id == self._newcomer and not p.queue:
            self._newcomer = None

    def _msg_reject(self, p: _Peer, msg: Reject) -> None:
        rid, index = msg.release_id, msg.index
        if rid is None:
            return
        if index is None:
            if p.manifest_inflight.pop(rid, None) is not None:
                for h in self._wanted():
                    if h.release_id == rid:
                        h.sources.discard(p.id)
            return
        if (rid, index) not in p.inflight:
            return
        self._unrequest(rid, index, p.id)
        s = self._swarms.get(rid)
        if s is None:
            return
        if msg.code == RejectCode.BUSY:
            # back off from this peer for about one chunk time, then ask again
            wait = self.config.busy_backoff
            p.busy_until = self._now + wait
            heapq.heappush(self._backoff_heap, (p.busy_until, p.id))
            self._backoff_peers.add(p.id)
        if msg.code == RejectCode.NOT_HAVE and p.has(rid, index):
            # it advertised the chunk and now denies it: a lie (or it lost the chunk)
            p.have[rid] &= ~(1 << index)
            p.denied[rid] = p.denied.get(rid, 0) | 1 << index
            self._add_avail(s, 1 << index, -1, p)
            self._penalise(p, PENALTY_LIE, f"advertised chunk {index} it does not have")
        self._requestable_again(rid, index, p)

    def _msg_chunk_data(self, p: _Peer, msg: ChunkData) -> None:
        s = self._swarms.get(msg.release_id)
        if s is None or msg.index >= s.n:
            raise RemoteProtocolError("chunk data for an unknown release or index")
        key = (msg.release_id, msg.index)
        sent = p.inflight.get(key)
        size = len(msg.payload)
        p.bytes_from += size
        self._stats["bytes_down"] += size
        if sent is not None:
            if self._arrived:
                self._measure_cover(p, s, (msg.release_id, msg.index, p.id), sent, size)
            self._unrequest(msg.release_id, msg.index, p.id)
            elapsed = max(self._now - sent, 1e-6)
            p.delivery_ewma = (
                elapsed if p.delivery_ewma is None else (0.7 * p.delivery_ewma + 0.3 * elapsed)
            )
            self._requests_due = None  # its other requests' timeout moved
            p.rate_ewma = 0.7 * p.rate_ewma + 0.3 * (size / elapsed)
            self._pipeline_down(p, size)
        bit = 1 << msg.index
        if (s.have | s.storing_mask) & bit:
            self._stats["wasted"] += size
            return
        if sent is None and not self._is_current(s):
            self._stats["wasted"] += size
            return
        # endgame: somebody else may be sending the same chunk -- cancel them
        for other in list(s.requested.get(msg.index, {})):
            if other != p.id:
                self._send(other, Cancel(msg.release_id, msg.index))
                self._unrequest(msg.release_id, msg.index, other)
        s.storing_mask |= bit
        self._emit(
            A.StoreChunk(p.id, msg.release_id, msg.index, s.chunk_ids[msg.index], msg.payload)
        )

    # == local events ====================================================================

    def _on_local_release(self, ev: E.LocalRelease) -> None:
        m = ev.release.manifest
        if m.release_id in self._swarms:
            return
        if m.mesh != self.config.mesh:
            raise LocalProtocolError(f"release {m.describe()} belongs to mesh {m.mesh!r}")
        s = self._add_swarm(ev.release, ev.present)
        if s.complete and ev.announcement:
            self._announcements.append(ev.announcement)
            self._emit(A.Gossip(ev.announcement))
            self._next_announce = self._now + self.config.reannounce_interval

    def _add_swarm(self, release: SignedRelease, present: Iterable[int]) -> _Swarm:
        s = _Swarm(release)
        self._sched_full = True
        for i in present:
            if 0 <= i < s.n and not s.have >> i & 1:
                s.have |= 1 << i
                s.have_count += 1
        self._swarms[s.rid] = s
        m = release.manifest
        if m.version > self._current.get(m.model, 0):
            self._current[m.model] = m.version
        if s.complete:
            s.completed_at = self._now
        # have-sets that arrived before the manifest
        for p in list(self._peers.values()):
            raw = p.pending_have.pop(s.rid, None)
            updates = p.pending_updates.pop(s.rid, [])
            if raw is None:
                continue
            try:
                bits = s.parse_bitfield(raw)
                for i in updates:
                    if i >= s.n:
                        raise RemoteProtocolError(f"have-update index {i} past the last chunk")
                    bits |= 1 << i
            except RemoteProtocolError as e:
                self._penalise(p, PENALTY_PROTOCOL, str(e))
                continue
            self._set_have(p, s, bits)
        for p in list(self._peers.values()):
            if p.hello is not None:
                self._send_have(p, s)
        head = self._heads.get(m.model)
        if head is not None and head.version <= m.version:
            del self._heads[m.model]
        self._hints.pop(s.rid, None)
        return s

    def _on_chunk_stored(self, ev: E.ChunkStored) -> None:
        s = self._swarms.get(ev.release_id)
        if s is None:
            return
        bit = 1 << ev.index
        s.storing_mask &= ~bit
        if not ev.ok:
            self._sched_full = True  # the chunk is missing again: any holder may do
        p = self._peers.get(ev.peer)
        if not ev.ok:
            self._stats["corrupt"] += 1
            self._stats["wasted"] += s.lengths[ev.index]
            if p is not None:
                if p.has(s.rid, ev.index):
                    p.have[s.rid] &= ~bit
                    self._add_avail(s, bit, -1, p)
                self._penalise(
                    p,
                    PENALTY_CORRUPT,
                    f"sent corrupt chunk {ev.index} of {s.release.manifest.describe()}"
                    f"{': ' + ev.reason if ev.reason else ''}",
                )
            return
        if s.have & bit:
            return
        s.have |= bit
        s.have_count += 1
        self._stats["chunks_down"] += 1
        s.pending_updates.append(ev.index)
        if self._have_flush_at is None:
            self._have_flush_at = self._now + self.config.have_interval
            if self.config.have_interval <= 0:
                self._flush_have_updates()
        if s.complete:
            s.completed_at = self._now
            self._flush_have_updates()
            m = s.release.manifest
            self._emit(
                A.Notice("info", f"release {m.describe()} complete: all {s.n} chunks verified")
            )
            self._emit(A.ReleaseComplete(s.rid, m.model, m.version))

    def _on_chunk_sent(self, ev: E.ChunkSent) -> None:
        p = self._peers.get(ev.peer)
        s = self._swarms.get(ev.release_id)
        if p is not None and p.uploading > 0:
            p.uploading -= 1
            self._uploading_total -= 1
            size = s.lengths[ev.index] if s is not None and ev.index < s.n else 0
            p.bytes_to += size
            self._pipeline_up(p, size)
        elif p is None:
            # peer dropped mid-transfer; its slot was already released in _drop_peer
            return
        if s is not None and ev.index < s.n:
            self._stats["bytes_up"] += s.lengths[ev.index]
            self._stats["chunks_up"] += 1
        self._serve_uploads()

    def _on_chunk_unavailable(self, ev: E.ChunkUnavailable) -> None:
        p = self._peers.get(ev.peer)
        if p is not None and p.uploading > 0:
            p.uploading -= 1
            self._uploading_total -= 1
            if not p.uploading and p.up_rate is not None:
                p.up_rate.stop(self._now)
            self._send(p.id, Reject(RejectCode.NOT_HAVE, ev.release_id, ev.index))
        s = self._swarms.get(ev.release_id)
        if s is not None and s.have >> ev.index & 1:
            s.have &= ~(1 << ev.index)
            s.have_count -= 1
            s.pending_updates = [i for i in s.pending_updates if i != ev.index]
            self._emit(
                A.Notice(
                    "error",
                    f"chunk {ev.index} of {s.release.manifest.describe()} "
                    f"lost from the store: {ev.reason}; re-fetching",
                )
            )
        self._serve_uploads()

    def _on_announcement(self, ev: E.AnnouncementReceived) -> None:
        try:
            ann = self._check_announcement(ev.data)
        except EdgemeshError:
            return
        sources = {ev.source} if ev.source is not None and ev.source in self._peers else set()
        self._note_head(ann.model, ann.version, ann.release_id, None, verified=True)
        h = self._heads.get(ann.model)
        if h is not None and h.release_id == ann.release_id:
            h.sources |= sources
        self._emit(
            A.Notice("info", f"announced: {ann.model} v{ann.version} ({ann.release_id.short()})")
        )

    def _check_announcement(self, data: bytes) -> Announcement:
        ann = Announcement.decode(data)
        known = self._current.get(ann.model)
        h = self._heads.get(ann.model)
        if h is not None and h.verified:
            known = max(known or 0, h.version)
        if ann.release_id in self._rejected:
            raise RemoteProtocolError("release was rejected before")
        ann.check(mesh=self.config.mesh, trust=self.trust, current_version=known)
        return ann

    # == manifests ========================================================================

    def _note_head(
        self, model: str, version: int, rid: ReleaseId, source: PeerId | None, *, verified: bool
    ) -> None:
        if rid in self._rejected or version <= self._current.get(model, 0):
            return
        h = self._heads.get(model)
        if (
            h is None
            or version > h.version
            or (version == h.version and verified and not h.verified)
        ):
            if h is None and len(self._heads) >= MAX_HEADS:
                return
            h = _HeadInfo(version, rid, set(), verified)
            self._heads[model] = h
        if h.release_id == rid and source is not None:
            h.sources.add(source)
        self._retry_heads()

    def _wants_head(self, h: _HeadInfo) -> bool:
        rid = h.release_id
        return rid not in self._swarms and rid not in self._rejected and rid not in self._stale

    def _wanted(self) -> list[_HeadInfo]:
        return [h for h in (*self._heads.values(), *self._hints.values()) if self._wants_head(h)]

    def _manifest_pending(self, rid: ReleaseId) -> bool:
        return any(rid in p.manifest_inflight for p in self._peers.values())

    def _retry_heads(self) -> None:
        for h in self._wanted():
            if self._manifest_pending(h.release_id):
                continue
            if h.next_try > self._now:
                continue
            candidates = [s for s in h.sources if s in self._peers and s not in h.tried]
            if not candidates:
                candidates = [p.id for p in self._active() if p.id not in h.tried]
            if not candidates:
                h.tried.clear()
                h.next_try = self._now + self.config.manifest_timeout / 2
                continue
            peer = self.rng.choice(sorted(candidates))
            h.tried.add(peer)
            self._peers[peer].manifest_inflight[h.release_id] = self._now
            self._send(peer, ManifestRequest(h.release_id))

    # == scheduling ==========================================================================

    def _on_chunk_arriving(self, ev: E.ChunkArriving) -> None:
        key = (ev.release_id, ev.index, ev.peer)
        if key in self._requests and key not in self._arrived:
            self._arrived[key] = self._now

    def _measure_cover(
        self, p: _Peer, s: _Swarm, key: tuple[ReleaseId, int, PeerId], sent: float, size: int
    ) -> None:
        """A requested chunk is complete: fold its wait (request to first bytes) and
        transfer time into the averages, and re-size the request cover."""
        arrived = self._arrived.get(key)
        if arrived is None or size < s.lengths[0] or p.bytes_from == size:
            # no arrival reported; the short last chunk; or the peer's first chunk,
            # which also waited for its data stream to open and was read in one piece
            return
        wait, xfer = arrived - sent, self._now - arrived
        n = self._cover_samples
        if n < COVER_SAMPLES:
            n += 1
            self._cover_samples = n
            self._wait_ewma += (wait - self._wait_ewma) / n  # running means
            self._xfer_ewma += (xfer - self._xfer_ewma) / n
            if n < COVER_SAMPLES:
                return
        else:
            self._wait_ewma += COVER_GAIN * (wait - self._wait_ewma)
            self._xfer_ewma += COVER_GAIN * (xfer - self._xfer_ewma)
        c = self.config
        cover = cover_depth(c.max_requests, self._wait_ewma, self._xfer_ewma, c.start_cover_max)
        if cover > self._cover:
            self._sched_full = True  # room for more requests
        self._cover = cover

    def _unrequest(self, rid: ReleaseId, index: int, peer: PeerId) -> None:
        if self._arrived:
            self._arrived.pop((rid, index, peer), None)
        p = self._peers.get(peer)
        if p is not None:
            p.inflight.pop((rid, index), None)
            if not p.inflight and p.down_rate is not None:
                p.down_rate.stop(self._now)
        if self._requests.pop((rid, index, peer), None) is not None:
            self._requests_due = None
            self._sched_peers[peer] = None  # a request slot and this peer are free again
        s = self._swarms.get(rid)
        if s is None:
            return
        holders = s.requested.get(index)
        if holders is not None:
            holders.pop(peer, None)
            if not holders:
                del s.requested[index]
                s.requested_mask &= ~(1 << index)

    def _requestable_again(self, rid: ReleaseId, index: int, p: _Peer | None) -> None:
        """A request to ``p`` ended without the chunk: the other peers that hold it
        are opportunities for the next pass."""
        s = self._swarms.get(rid)
        if s is None:
            return
        mask = s.holders[index]
        if p is not None:
            mask &= ~(1 << p.slot)
        slots = self._slots
        while mask:
            low = mask & -mask
            mask ^= low
            q = slots[low.bit_length() - 1]
            if q is not None:
                self._sched_peers[q.id] = None

    def _expire_requests(self) -> None:
        for pid in dict.fromkeys(pid for (_, _, pid) in self._requests):
            p = self._peers[pid]
            limit = self._timeout(p)
            for (rid, index), sent in list(p.inflight.items()):
                if self._now >= sent + limit:
                    self._stats["timeouts"] += 1
                    self._unrequest(rid, index, p.id)
                    self._requestable_again(rid, index, p)
                    self._send(p.id, Cancel(rid, index))
                    # a slow or lossy peer: expect longer next time
                    p.delivery_ewma = (
                        limit
                        if p.delivery_ewma is None
                        else max(p.delivery_ewma, limit / self.config.request_timeout_factor)
                    )
                    self._requests_due = None
        for p in self._manifest_waits():
            for rid, sent in list(p.manifest_inflight.items()):
                if self._now >= sent + self.config.manifest_timeout:
                    del p.manifest_inflight[rid]

    def _schedule(self) -> None:
        """Send the chunk requests the state allows: per current swarm, rare chunks
        first (only one peer has them, e.g. a super-seed's reveals: even past
        ``max_requests``, waiting would leave that peer's uplink idle), then
        rarest-first from the least busy, fastest peers that have what we miss.
        A fast peer's limit is ``per_peer_requests + p.extra`` (adaptive pipelining),
        and the total's is ``max_requests`` plus the sum of those extras.

        Incremental: unless a full pass is due, only the peers listed in
        ``_sched_peers`` (gained chunks, became free) are looked at -- the last pass
        took every opportunity the others offered."""
        c = self.config
        extra = self._extra_total
        max_requests = c.max_requests + extra + self._cover
        limit = max_requests + c.rare_requests
        if len(self._requests) >= limit:
            return
        if self._backoff_heap and self._backoff_heap[0][0] <= self._now:
            self._end_backoffs()
        if not self._sched_full and not self._sched_peers:
            return  # nothing changed that could make an opportunity
        if self._sched_full:
            pool: Iterable[_Peer] = self._peers.values()
        else:
            get = self._peers.get
            pool = [p for p in map(get, self._sched_peers) if p is not None]
        self._sched_full = False
        self._sched_peers, probes = {}, self._sched_probes
        if probes:
            # a peer whose BUSY backoff just ended gets one request (a probe) in this
            # pass; the next pass may add the rare chunk's extra request
            self._sched_probes = {}
            self._sched_peers.update(probes)
        now = self._now
        ppr = c.per_peer_requests
        for s in self._swarms.values():
            if s.complete or not self._is_current(s):
                continue
            missing = s.full_mask & ~s.have & ~s.storing_mask
            if not missing:
                continue
            fresh = missing & ~s.requested_mask
            endgame = (s.n - s.have_count) <= c.endgame_chunks
            if endgame:
                self._sched_full = True  # overdue requests become re-requestable with time
            want = missing if endgame else fresh
            if not want:
                continue
            rid = s.rid
            # the peers that could serve something we miss now
            peers = [
                p
                for p in pool
                if p.have.get(rid, 0) & want and p.busy_until <= now and p.hello is not None
            ]
            if not peers:
                continue
            rare = s.rare_mask & fresh
            if rare:
                for p in peers:
                    bits = p.have.get(rid, 0) & rare
                    # one request more than usual, unless it said BUSY just now
                    room = ppr + p.extra + (p.id not in probes)
                    while bits and len(p.inflight) < room:
                        low = bits & -bits
                        bits ^= low
                        self._request(p, s, low.bit_length() - 1)
                        if len(self._requests) >= limit:
                            self._unasked(peers)
                            return
            total = len(self._requests)
            peers = [p for p in peers if len(p.inflight) < ppr + p.extra]
            if not peers:
                continue
            if total >= max_requests:
                self._unasked(peers)
                return
            if len(peers) > 1:
                # random rotation, then a stable sort: ties are broken differently each time
                k = self.rng.randrange(len(peers))
                peers = peers[k:] + peers[:k]
                peers.sort(key=lambda p: (len(p.inflight), -p.rate_ewma))
            progress = True
            while progress:
                progress = False
                for p in peers:
                    if len(p.inflight) >= ppr + p.extra:
                        continue
                    if c.download_rate is not None and not self._down_bucket.ready(now=now):
                        self._sched_full = True
                        return
                    theirs = p.have.get(rid, 0) & missing
                    cand = theirs & ~s.requested_mask
                    if not cand and endgame:
                        cand = theirs & ~self._requested_from(s, p.id) & self._overdue(s)
                    if not cand:
                        continue
                    self._request(p, s, self._rarest(s, cand))
                    total += 1
                    if total >= max_requests:
                        self._unasked(peers)
                        return
                    progress = True
                if ppr <= 1 and not extra:
                    break  # a second round finds nothing: each peer got one or had none

    def _unasked(self, peers: list[_Peer]) -> None:
        """The pass stopped at the request cap: the peers it had not asked yet (and any
        other swarm's) are opportunities for the next pass."""
        if len(self._swarms) > 1:
            self._sched_full = True
        ppr = self.config.per_peer_requests
        for p in peers:
            if len(p.inflight) <= ppr + p.extra:  # a rare chunk may take one more
                self._sched_peers[p.id] = None

    def _requested_from(self, s: _Swarm, peer: PeerId) -> int:
        mask = 0
        for index, holders in s.requested.items():
            if peer in holders or len(holders) >= 2:
                mask |= 1 << index
        return mask

    def _endgame_delay(self, peer: PeerId) -> float:
        """How long a request may run before the endgame asks a second peer too."""
        p = self._peers.get(peer)
        if p is None or p.delivery_ewma is None:
            return self.config.request_timeout_min / 2
        return 2.0 * p.delivery_ewma

    def _overdue(self, s: _Swarm) -> int:
        """Requested chunks whose request has run longer than expected (endgame)."""
        mask = 0
        for index, holders in s.requested.items():
            if all(self._now - t >= self._endgame_delay(peer) for peer, t in holders.items()):
                mask |= 1 << index
        return mask

    def _rarest(self, s: _Swarm, cand: int) -> int:
        avail = s.avail
        best = -1
        best_count = 1 << 30
        ties = 0
        while cand:
            low = cand & -cand
            i = low.bit_length() - 1
            cand ^= low
            a = avail[i]
            if a < best_count:
                best, best_count, ties = i, a, 1
            elif a == best_count:
                ties += 1
                if self.rng.random() * ties < 1.0:
                    best = i
        return best

    def _request(self, p: _Peer, s: _Swarm, index: int) -> None:
        if not p.inflight and p.down_rate is not None:
            p.down_rate.start(self._now)
        p.inflight[(s.rid, index)] = self._now
        self._requests[(s.rid, index, p.id)] = self._now
        due = self._requests_due
        if due is not None:
            t = self._now + self._timeout(p)
            if t < due:
                self._requests_due = t
        s.requested.setdefault(index, {})[p.id] = self._now
        s.requested_mask |= 1 << index
        if self.config.download_rate is not None:
            self._down_bucket.take(s.lengths[index], now=self._now)
        self._send(p.id, ChunkRequest(s.rid, index))

    def _pipeline_down(self, p: _Peer, size: int) -> None:
        """A requested chunk of ``size`` bytes arrived from ``p``: re-size its pipeline."""
        if p.down_rate is None:
            return
        rate = p.down_rate.add(size, self._now)
        if rate is not None:
            c = self.config
            extra = extra_depth(rate, size, c.pipeline_time, c.max_pipeline)
            if extra > p.extra:
                self._sched_peers[p.id] = None  # room for more requests to it
            self._extra_total += extra - p.extra
            p.extra = extra

    def _pipeline_up(self, p: _Peer, size: int) -> None:
        """A chunk of ``size`` bytes went out to ``p``: re-size what we allow it."""
        if p.up_rate is None:
            return
        rate = p.up_rate.add(size, self._now)
        if not p.uploading:
            p.up_rate.stop(self._now)
        if rate is not None:
            c = self.config
            p.up_extra = extra_depth(rate, size, c.pipeline_time, c.max_pipeline)

    # == uploads ================================================================================

    def _serve_uploads(self) -> None:
        c = self.config
        while self._uploading_total < c.upload_slots:
            if c.upload_rate is not None and not self._up_bucket.ready(now=self._now):
                return
            if not self._queued:
                return
            first = self._peers.get(self._newcomer) if self._newcomer is not None else None
            if first is not None and first.queue:
                p = first
            else:
                waiting = [p for p in self._peers.values() if p.queue]
                # round robin by least recently served: the peer we are sending least to
                # penalised peers last, then the peer we are sending least to
                p = min(waiting, key=lambda q: (q.penalty, q.uploading, q.bytes_to))
            rid, index = p.queue.popleft()
            self._queued -= 1
            if p.id == self._newcomer:
                self._newcomer = None
                p.newcomer_served.add(rid)
            s = self._swarms.get(rid)
            if s is None or not s.have >> index & 1:
                self._send(p.id, Reject(RejectCode.NOT_HAVE, rid, index))
                continue
            if not p.uploading and p.up_rate is not None:
                p.up_rate.start(self._now)
            p.uploading += 1
            self._uploading_total += 1
            self._up_bucket.take(s.lengths[index], now=self._now)
            self._emit(A.SendChunk(p.id, rid, index, s.chunk_ids[index], s.lengths[index]))

    # == have updates and super-seeding ========================================================

    def _flush_have_updates(self) -> None:
        self._have_flush_at = None
        for s in self._swarms.values():
            if not s.pending_updates:
                continue
            updates = tuple(s.pending_updates)
            s.pending_updates = []
            if self.config.super_seed and s.complete:
                continue  # a super-seed reveals chunks one by one instead
            batches = [
                HaveUpdate(s.rid, updates[i : i + 4096]) for i in range(0, len(updates), 4096)
            ]
            mask = 0
            for i in updates:
                mask |= 1 << i
            rid = s.rid
            for p in self._peers.values():
                if p.hello is None:
                    continue
                theirs = p.have.get(rid, 0) & mask if p.fetcher else 0
                if theirs:
                    # a fetching peer only asks for chunks it lacks: do not tell it about
                    # the ones it holds.  A peer that never asked us for anything may be
                    # a super-seed, which tracks who holds what: it hears everything.
                    todo = tuple(i for i in updates if not theirs >> i & 1)
                    for start in range(0, len(todo), 4096):
                        self._send(p.id, HaveUpdate(s.rid, todo[start : start + 4096]))
                    continue
                for msg in batches:
                    self._send(p.id, msg)

    def _reveal(self, p: _Peer, s: _Swarm) -> None:
        """Super-seeding: keep ``per_peer_requests`` unobtained chunks revealed to ``p``.

        First every chunk is revealed to exactly one peer (so each leaves the seed once);
        after that only chunks that no connected peer holds or is about to receive.
        """
        if not s.complete or p.hello is None:
            return
        revealed = p.revealed.get(s.rid, 0)
        theirs = p.have.get(s.rid, 0)
        window = self.config.reveal_per_peer
        if self.config.reveal_total > window * len(self._peers):
            ready = sum(1 for q in self._peers.values() if q.hello is not None)
            window = max(window, -(-self.config.reveal_total // max(ready, 1)))
        # a fast peer: its extra requests, and as many again for the chunks it holds
        # but has not told us about yet (store + have_interval + a round trip)
        window += 2 * p.up_extra
        want = window - (revealed & ~theirs).bit_count()
        new: list[int] = []
        while want > 0:
            local = not self._remote_seen(p)
            fresh = (s.ungiven if local else s.ungiven_remote) & ~theirs
            if fresh:
                best = (fresh & -fresh).bit_length() - 1
            else:
                best = -1
                bits = s.full_mask & ~theirs & ~revealed
                while bits:
                    low = bits & -bits
                    i = low.bit_length() - 1
                    bits ^= low
                    if s.avail[i] == 0 and s.reveal_pending[i] == 0:
                        best = i
                        break
                if best < 0 and self._now - p.last_progress >= self.config.stall_seconds:
                    # p made no progress for a while: its peers cannot (or will not)
                    # give it what it lacks, so reveal its rarest missing chunk
                    best = self._rarest_for(s, s.full_mask & ~theirs & ~revealed)
                    p.last_progress = self._now  # one rescue per stall period
                if best < 0:
                    break  # every chunk is out there: peers serve each other now
            if local:
                s.ungiven &= ~(1 << best)
            else:
                s.ungiven_remote &= ~(1 << best)
            s.reveal_pending[best] += 1
            revealed |= 1 << best
            new.append(best)
            want -= 1
        p.revealed[s.rid] = revealed
        if new:
            self._send(p.id, HaveUpdate(s.rid, tuple(new)))

    def _remote_seen(self, p: _Peer) -> bool:
        """A peer that reached us without local discovery is beyond the LAN (a static
        ``--peer`` of theirs): a super-seed hands such peers every chunk once as well, so
        each chunk crosses the WAN about once and remote sites share it locally."""
        return not p.local

    def _rarest_for(self, s: _Swarm, cand: int) -> int:
        return -1 if not cand else self._rarest(s, cand)

    def _refresh(self) -> None:
        """Repair what lost frames may have broken: re-send our hello to peers we have not
        heard a hello from, and full have-sets to everyone (updates may have been lost)."""
        self._next_refresh = self._now + self.config.refresh_interval
        hello = None
        for p in list(self._peers.values()):
            if p.hello is None:
                if self._now - p.connected_at >= 3 * self.config.refresh_interval:
                    self._emit(A.Disconnect(p.id, "no hello received"))
                    self._drop_peer(p.id)
                    continue
                hello = hello or Hello(self.config.mesh, PROTOCOL_VERSION, self.heads())
                p.hello_sent_at = self._now
                self._send(p.id, hello)
            elif any(not s.complete for s in self._swarms.values()) or self.config.super_seed:
                for s in self._swarms.values():
                    self._send_have(p, s)

    def _stall_check(self) -> None:
        """Super-seeding: look for peers that stopped making progress (see _reveal)."""
        self._next_stall_check = self._now + self.config.stall_seconds / 2
        for s in self._swarms.values():
            if s.complete:
                for p in self._peers.values():
                    if p.hello is not None and p.have.get(s.rid, 0) != s.full_mask:
                        self._reveal(p, s)

    def _reveal_settled(self, p: _Peer, s: _Swarm, bits: int) -> None:
        """``p`` obtained (or can no longer obtain) chunks ``bits`` revealed to it."""
        settled = bits & p.revealed.get(s.rid, 0)
        while settled:
            low = settled & -settled
            s.reveal_pending[low.bit_length() - 1] -= 1
            settled ^= low


_HANDLERS: dict[type[E.Event], Any] = {
    E.PeersDiscovered: MeshNode._on_discovered,
    E.PeerConnected: MeshNode._on_connected,
    E.PeerDisconnected: MeshNode._on_disconnected,
    E.MessageReceived: MeshNode._on_message,
    E.ProtocolViolation: MeshNode._on_violation,
    E.AnnouncementReceived: MeshNode._on_announcement,
    E.LocalRelease: MeshNode._on_local_release,
    E.ChunkStored: MeshNode._on_chunk_stored,
    E.ChunkSent: MeshNode._on_chunk_sent,
    E.ChunkArriving: MeshNode._on_chunk_arriving,
    E.ChunkUnavailable: MeshNode._on_chunk_unavailable,
}

_MSG_HANDLERS: dict[type[Message], Any] = {
    Hello: MeshNode._msg_hello,
    Have: MeshNode._msg_have,
    HaveUpdate: MeshNode._msg_have_update,
    ManifestRequest: MeshNode._msg_manifest_request,
    ManifestResponse: MeshNode._msg_manifest_response,
    ChunkRequest: MeshNode._msg_chunk_request,
    ChunkData: MeshNode._msg_chunk_data,
    Cancel: MeshNode._msg_cancel,
    Reject: MeshNode._msg_reject,
}
