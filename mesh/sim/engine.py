"""The simulation engine: virtual time, the event heap, and the node drivers.

What it owns: turning a :class:`~mesh.sim.scenario.Scenario` into a run of many real
:class:`~mesh.core.node.MeshNode` s -- delivering their actions over the modelled
network (control frames encoded and decoded with the real wire codec; chunk data as
flows in :mod:`mesh.sim.network`), gossip as a flood over connections with link
latency, discovery, loss, partitions, churn and hostile peers -- and recording what
happened for the report.

Rules: the heap is keyed by (time, sequence) so equal times resolve in insertion
order; every random choice comes from one ``random.Random(seed)``; a run is a pure
function of (scenario, seed, strategy), checked by the trace digest.

Chunk payloads are not materialised: a flow carries the chunk's length, and the
receiving node gets a shared buffer of that length.  Whether the bytes were honest is
recorded by the sender's driver (a hostile "corrupt" peer marks them) and answered
when the receiving core asks its store to verify them (``StoreChunk`` ->
``ChunkStored``): the core's decisions are real, the hashing is modelled.

Hostile peers run the same core; only their driver misbehaves: it corrupts chunk
data, advertises chunks the node lacks, replays old signed announcements, or
gossips announcements signed by an untrusted key.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.core import actions as A
from mesh.core import events as E
from mesh.core import wire
from mesh.core.announce import Announcement
from mesh.core.manifest import FileEntry, Manifest, ModelInterface, TensorSpec, chunk_count
from mesh.core.node import MeshNode, NodeConfig
from mesh.core.trust import SignedRelease, TrustedKey, TrustStore
from mesh.crypto import PrivateKey
from mesh.ids import ChunkId, ReleaseId
from mesh.sim.network import Flow, FlowNetwork, Resource
from mesh.sim.scenario import Scenario

SEED_ID = "seed"
CONNECT_TIMEOUT_S = 3.0  # a dial to a dead or unreachable peer fails after this
TIMELINE_BUCKET_S = 0.5
#: The cyclic collector's thresholds during a run (generation 0, 1, 2), at least: see run().
GC_THRESHOLDS = (50_000, 20, 100)
_MAX_SAME_TIME_TIMERS = 10_000  # guard against a deadline that never advances
_CREATED = 1_800_000_000  # fixed manifest creation time: runs must be reproducible

# heap event kinds
_TIMER, _DELIVER, _FLOW, _GOSSIP, _SCRIPT, _CONNECT, _FRAMES, _ARRIVE = range(8)
_PENDING_SCRIPTS = frozenset(("restart", "late", "join", "heal"))  # the run waits for these


@dataclass(eq=False)
class SimNode:
    index: int
    id: str
    klass: str
    site: str
    up: Resource
    down: Resource
    latency: float
    config: NodeConfig
    hostile: frozenset[str] = frozenset()
    core: MeshNode | None = None
    alive: bool = False
    left: bool = False
    timer_at: float | None = None
    releases: dict[ReleaseId, SignedRelease] = field(default_factory=dict)
    stored: dict[ReleaseId, set[int]] = field(default_factory=dict)
    completed_at: float | None = None
    joined_at: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    flows_out: set[Flow] = field(default_factory=set)
    flows_in: set[Flow] = field(default_factory=set)
    group: int = 0  # partition side


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    strategy: str
    nodes: list[SimNode]
    release: SignedRelease
    events: int
    end_time: float
    digest: str
    seed_timeline: list[int]
    total_transferred: int
    wasted_bytes: int
    wan_bytes: dict[str, int]
    hostile_penalties: float
    hostile_bans: int
    lost_frames: int
    stats: dict[str, Any]


def make_release(
    scenario: Scenario, key: PrivateKey, *, version: int, mesh: str = "default"
) -> SignedRelease:
    """A signed release of the scenario's model size with synthetic chunk ids."""
    n = chunk_count(scenario.model_bytes, scenario.chunk_bytes)
    tag = f"{scenario.name}/v{version}/".encode()
    chunks = tuple(ChunkId.of(tag + i.to_bytes(4, "big")) for i in range(n))
    entry = FileEntry("model.onnx", scenario.model_bytes, hashlib.sha256(tag).digest(), chunks)
    interface = ModelInterface(
        ir_version=8,
        opsets=(("", 17),),
        inputs=(TensorSpec("x", "float32", ("batch", 512)),),
        outputs=(TensorSpec("y", "float32", ("batch", 512)),),
    )
    manifest = Manifest(
        mesh=mesh,
        model="sim-model",
        version=version,
        created=_CREATED,
        chunk_size=scenario.chunk_bytes,
        files=(entry,),
        interface=interface,
    )
    return SignedRelease.create(manifest, [key])


class Simulation:
    def __init__(self, scenario: Scenario, *, seed: int, strategy: str = "swarm") -> None:
        if strategy not in ("swarm", "naive"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.scenario = scenario
        self.seed = seed
        self.strategy = strategy
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any]] = []
        # The frames of the newest heap entry (kind _FRAMES) and their arrival time:
        # frames sent one after another that arrive at the same time (a have-update to
        # every peer on a LAN) share one entry -- they would have had consecutive
        # sequence numbers, so they are handled in exactly the same order.
        self._frames: tuple[float, list[tuple[int, int, bytes]]] | None = None
        self._seq = itertools.count()
        self.events = 0
        self.net = FlowNetwork()
        self._trace = hashlib.sha256()
        self.lost_frames = 0
        self.wasted_aborted = 0
        self.total_transferred = 0
        # keys derive from the seed so the whole run (signatures included) replays
        self.publisher = PrivateKey.derive(f"publisher/{seed}".encode())
        self.forger = PrivateKey.derive(f"forger/{seed}".encode())
        self.trust = TrustStore([TrustedKey(self.publisher.public_key)])
        self.release = make_release(scenario, self.publisher, version=2)
        self.old_release = make_release(scenario, self.publisher, version=1)
        m = self.release.manifest
        self.announcement = Announcement.for_release(self.release, self.publisher).encode()
        self.old_announcement = Announcement.for_release(self.old_release, self.publisher).encode()
        self.forged_announcement = Announcement.create(
            mesh=m.mesh,
            model=m.model,
            version=m.version + 1,
            release_id=ReleaseId.of(b"forged"),
            manifest_size=1000,
            signer=self.forger,
        ).encode()
        self._conns: dict[tuple[int, int], list[float]] = {}  # pair -> last arrival per dir
        # node -> its connected peers, in the order the connections were made (as in
        # _conns): gossip floods without scanning every connection of the network
        self._adj: dict[int, dict[int, None]] = {}
        self._scripts_pending = 0  # joins, late joins, restarts and heals still to come
        self._pending_connect: set[tuple[int, int]] = set()
        self._corrupt: set[tuple[int, int, ReleaseId, int]] = set()
        self.sites = {s.name: s for s in scenario.sites}
        self.wan_up = {s.name: Resource(f"wan-up:{s.name}", s.wan_up_bps) for s in scenario.sites}
        self.wan_down = {
            s.name: Resource(f"wan-down:{s.name}", s.wan_down_bps) for s in scenario.sites
        }
        self.wan_bytes = {s.name: 0 for s in scenario.sites}
        self.seed_timeline: list[int] = []
        self._payloads: dict[int, bytes] = {}
        self._completions_changed = False
        self._codec_cache: dict[Any, Any] = {}
        self.nodes: list[SimNode] = []
        self.by_id: dict[str, SimNode] = {}
        self._build_nodes()

    # -- setup --------------------------------------------------------------------------

    def _build_nodes(self) -> None:
        sc = self.scenario
        naive = self.strategy == "naive"
        seed_cfg = replace(sc.seed_node, super_seed=not naive)
        if naive:
            seed_cfg = replace(seed_cfg, max_inbound=sc.node_count + 10)
        self._add_node(
            SEED_ID,
            "seed",
            sc.seed_site,
            sc.seed_up_bps,
            sc.seed_down_bps,
            sc.seed_latency_s,
            seed_cfg,
        )
        node_cfg = replace(sc.node, max_peers=1) if naive else sc.node
        n = 0
        for dev in sc.devices:
            for _ in range(dev.count):
                n += 1
                self._add_node(
                    f"n{n:04d}",
                    dev.name,
                    dev.site,
                    dev.up_bps,
                    dev.down_bps,
                    dev.latency_s,
                    node_cfg,
                )
        peers = self.nodes[1:]
        if sc.hostile is not None:
            k = round(sc.hostile.fraction * len(peers))
            for node in self.rng.sample(peers, k):
                node.hostile = frozenset(sc.hostile.behaviours)
        # join times, churn and partitions are scripted up front; the seed is up first
        self._push(0.0, _SCRIPT, ("join", 0))
        late: set[int] = set()
        if sc.churn is not None:
            late = self._script_churn(peers)
        idx = 0
        for dev in sc.devices:
            for _ in range(dev.count):
                node = peers[idx]
                idx += 1
                at = dev.join_at_s + (
                    self.rng.uniform(0, dev.join_spread_s) if dev.join_spread_s else 0.0
                )
                if node.index not in late:  # late joiners start only at their churn time
                    self._push(at, _SCRIPT, ("join", node.index))
        for part in sc.partitions:
            self._push(part.start_s, _SCRIPT, ("partition", part))
            self._push(part.end_s, _SCRIPT, ("heal", part))
        if sc.hostile is not None and "replay" in sc.hostile.behaviours:
            self._push(0.5, _SCRIPT, ("replay", None))
        if sc.hostile is not None and "forge" in sc.hostile.behaviours:
            self._push(0.7, _SCRIPT, ("forge", None))

    def _script_churn(self, peers: list[SimNode]) -> set[int]:
        """Schedule crashes, departures and late joins; returns the late joiners."""
        ch = self.scenario.churn
        assert ch is not None
        pool = [p for p in peers if not p.hostile]
        self.rng.shuffle(pool)
        n = len(pool)
        crash = pool[: round(ch.crash_fraction * n)]
        leave = pool[len(crash) : len(crash) + round(ch.leave_fraction * n)]
        late = pool[len(crash) + len(leave) :][: round(ch.late_join_fraction * n)]
        for node in crash:
            at = self.rng.uniform(ch.start_s, ch.end_s)
            self._push(at, _SCRIPT, ("crash", node.index))
            self._push(at + self.rng.uniform(*ch.downtime_s), _SCRIPT, ("restart", node.index))
        for node in leave:
            self._push(self.rng.uniform(ch.start_s, ch.end_s), _SCRIPT, ("leave", node.index))
        for node in late:
            self._push(self.rng.uniform(ch.start_s, ch.end_s), _SCRIPT, ("late", node.index))
        return {node.index for node in late}

    def _add_node(
        self,
        nid: str,
        klass: str,
        site: str,
        up: float,
        down: float,
        latency: float,
        cfg: NodeConfig,
    ) -> None:
        node = SimNode(
            len(self.nodes),
            nid,
            klass,
            site,
            Resource(f"up:{nid}", up),
            Resource(f"down:{nid}", down),
            latency,
            cfg,
        )
        self.nodes.append(node)
        self.by_id[nid] = node

    # -- heap -----------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any) -> None:
        if kind == _SCRIPT and payload[0] in _PENDING_SCRIPTS:
            self._scripts_pending += 1
        self._frames = None
        heapq.heappush(self._heap, (t, next(self._seq), kind, payload))

    def _connected(self, pair: tuple[int, int]) -> None:
        self._conns[pair] = [self.now, self.now]
        a, b = pair
        self._adj.setdefault(a, {})[b] = None
        self._adj.setdefault(b, {})[a] = None

    def _disconnected(self, pair: tuple[int, int]) -> None:
        if self._conns.pop(pair, None) is not None:
            a, b = pair
            self._adj[a].pop(b, None)
            self._adj[b].pop(a, None)

    def _trace_line(self, *parts: object) -> None:
        self._trace.update(f"{self.now:.6f}|{'|'.join(map(str, parts))}\n".encode())

    def run(
        self,
        progress: Callable[[float, int, int], None] | None = None,
        *,
        until: float | None = None,
    ) -> RunResult:
        """Run to the end (or to virtual time ``until``, to inspect a run midway)."""
        # A run allocates millions of short-lived objects that reference counting frees
        # (frames, tuples, messages) while it holds a large long-lived state (every
        # node's core): with the default thresholds the cyclic collector keeps scanning
        # that state, about 10 % of a compiled lan-1000 run and none of it garbage.
        # Collected less often during the run; the caller's settings come back after.
        old = gc.get_threshold()
        gc.set_threshold(*(max(a, b) for a, b in zip(old, GC_THRESHOLDS, strict=False)))
        try:
            return self._run(progress, until)
        finally:
            gc.set_threshold(*old)

    def _run(
        self, progress: Callable[[float, int, int], None] | None, until: float | None
    ) -> RunResult:
        sc = self.scenario
        honest = [n for n in self.nodes[1:] if not n.hostile]
        next_report = 0
        heap = self._heap
        pop = heapq.heappop
        receive = self._receive
        stop_at = sc.time_limit_s if until is None else min(until, sc.time_limit_s)
        while heap:
            if heap[0][0] > stop_at:
                self.now = stop_at
                break
            t, _, kind, payload = pop(heap)
            self.now = t
            self._frames = None
            self.events += 1
            if kind == _FRAMES:
                self.events += len(payload) - 1
                for dst, src, frame in payload:
                    receive(dst, src, frame)
            elif kind == _TIMER:
                node = self.nodes[payload[0]]
                if node.alive and node.timer_at == payload[1] and node.core is not None:
                    node.timer_at = None
                    node.core.on_deadline(now=t)
                    self._drain(node)
            elif kind == _DELIVER:
                self._deliver(*payload)
            elif kind == _FLOW:
                self._flow_done(*payload)
            elif kind == _ARRIVE:
                self._arrive(*payload)
            elif kind == _GOSSIP:
                self._gossip_arrive(*payload)
            elif kind == _CONNECT:
                self._connect_arrive(*payload)
            else:
                if payload[0] in _PENDING_SCRIPTS:
                    self._scripts_pending -= 1
                self._script(*payload)
            if self._completions_changed:
                self._completions_changed = False
                if self._finished(honest):
                    break
            if self.events >= next_report:
                next_report = self.events + 20_000
                done = sum(1 for n in honest if n.completed_at is not None)
                if progress is not None:
                    progress(self.now, done, len(honest))
                if self._finished(honest):
                    break
        if progress is not None:
            progress(self.now, sum(1 for n in honest if n.completed_at is not None), len(honest))
        return self._result()

    def _finished(self, honest: list[SimNode]) -> bool:
        return not self._scripts_pending and all(
            n.completed_at is not None or n.left for n in honest
        )

    # -- scripted happenings -------------------------------------------------------------------

    def _script(self, what: str, arg: Any) -> None:
        if what in ("join", "late", "restart"):
            self._start_node(self.nodes[arg])
        elif what in ("crash", "leave"):
            node = self.nodes[arg]
            self._stop_node(node)
            node.left = what == "leave"
        elif what == "partition":
            peers = [n for n in self.nodes[1:]]
            k = round(arg.fraction * len(peers))
            for n in self.rng.sample(peers, k):
                n.group = 1
            for a, b in list(self._conns):
                if self.nodes[a].group != self.nodes[b].group:
                    self._break(a, b, "partition")
            self._trace_line("partition", k)
        elif what == "heal":
            for n in self.nodes:
                n.group = 0
            self._trace_line("heal")
            for n in self.nodes:
                if n.alive and n.core is not None:
                    self._discover(n)
        elif what == "replay":
            for n in self.nodes:
                if "replay" in n.hostile and n.alive:
                    self._gossip_from(n, self.old_announcement)
        elif what == "forge":
            for n in self.nodes:
                if "forge" in n.hostile and n.alive:
                    self._gossip_from(n, self.forged_announcement)

    def _start_node(self, node: SimNode) -> None:
        if node.alive or node.left:
            return
        node.alive = True
        if node.joined_at is None:
            node.joined_at = self.now
        node.core = MeshNode(
            node.config,
            self.trust,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
            node_id=node.id,
        )
        self._trace_line("start", node.id)
        if node.index == 0:
            present = tuple(range(self.release.manifest.chunk_total))
            node.releases[self.release.manifest.release_id] = self.release
            node.stored[self.release.manifest.release_id] = set(present)
            node.core.handle(E.LocalRelease(self.release, present, self.announcement), now=self.now)
        else:
            for rid, rel in node.releases.items():  # restart with its store
                node.core.handle(
                    E.LocalRelease(rel, tuple(sorted(node.stored.get(rid, ())))), now=self.now
                )
        self._drain(node)
        self._discover(node)

    def _discover(self, node: SimNode) -> None:
        """mDNS finds the alive nodes of the node's own site; across sites the seed is a
        static ``--peer``.  In the naive strategy every node knows only the seed."""
        assert node.core is not None
        seed = self.nodes[0]
        if self.strategy == "naive" and node.index != 0:
            node.core.handle(E.PeersDiscovered((SEED_ID,), static=True), now=self.now)
        else:
            local = [n.id for n in self.nodes if n is not node and n.alive and n.site == node.site]
            self.rng.shuffle(local)
            node.core.handle(E.PeersDiscovered(tuple(local)), now=self.now)
            if node.site != seed.site:
                node.core.handle(E.PeersDiscovered((SEED_ID,), static=True), now=self.now)
        self._drain(node)

    def _stop_node(self, node: SimNode) -> None:
        if not node.alive:
            return
        self._trace_line("stop", node.id)
        for a, b in list(self._conns):
            if node.index in (a, b):
                self._break(a, b, "peer gone")
        node.alive = False
        node.core = None
        node.timer_at = None

    # -- connections ---------------------------------------------------------------------------

    def _pair(self, a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def _latency(self, a: SimNode, b: SimNode) -> float:
        lat = a.latency + b.latency
        if a.site != b.site:
            lat += self.sites[a.site].wan_latency_s + self.sites[b.site].wan_latency_s
        return lat

    def _reachable(self, a: SimNode, b: SimNode) -> bool:
        return a.alive and b.alive and a.group == b.group

    def _break(self, a: int, b: int, why: str) -> None:
        self._disconnected((a, b))
        for f in [
            f for f in self.nodes[a].flows_out | self.nodes[b].flows_out if {f.src, f.dst} == {a, b}
        ]:
            self._abort_flow(f)
        for x, y in ((a, b), (b, a)):
            nx = self.nodes[x]
            if nx.alive and nx.core is not None:
                nx.core.handle(E.PeerDisconnected(self.nodes[y].id), now=self.now)
                self._drain(nx)

    def _connect_arrive(self, a: int, b: int) -> None:
        pair = self._pair(a, b)
        self._pending_connect.discard(pair)
        na, nb = self.nodes[a], self.nodes[b]
        if not na.alive or na.core is None:
            return
        if pair in self._conns:
            return
        if not self._reachable(na, nb):
            na.core.handle(E.PeerDisconnected(nb.id), now=self.now)
            self._drain(na)
            return
        assert nb.core is not None
        self._connected(pair)
        self._trace_line("conn", na.id, nb.id)
        local = na.site == nb.site
        na.core.handle(E.PeerConnected(nb.id, outbound=True, local=local), now=self.now)
        self._drain(na)
        if pair in self._conns and nb.core is not None:
            nb.core.handle(E.PeerConnected(na.id, outbound=False, local=local), now=self.now)
            self._drain(nb)

    # -- action dispatch ------------------------------------------------------------------------

    def _drain(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        for action in core.poll_actions():
            self._dispatch(node, action)
            if node.core is not core:
                return
        t = core.next_deadline()
        if t is not None:
            t = max(t, self.now)
            if node.timer_at is None or t < node.timer_at or node.timer_at < self.now:
                node.timer_at = t
                self._push(t, _TIMER, (node.index, t))

    def _dispatch(self, node: SimNode, action: A.Action) -> None:
        if isinstance(action, A.SendMessage):
            self._send(node, action.peer, action.message)
        elif isinstance(action, A.SendChunk):
            self._send_chunk(node, action)
        elif isinstance(action, A.StoreChunk):
            self._store_chunk(node, action)
        elif isinstance(action, A.Connect):
            target = self.by_id.get(action.peer)
            if target is None:
                return
            pair = self._pair(node.index, target.index)
            if pair in self._conns or pair in self._pending_connect:
                return  # the connection exists or is being made: both ends hear of it then
            self._pending_connect.add(pair)
            delay = (
                2 * self._latency(node, target)
                if self._reachable(node, target)
                else CONNECT_TIMEOUT_S
            )
            self._push(self.now + delay, _CONNECT, (node.index, target.index))
        elif isinstance(action, A.Disconnect):
            target = self.by_id.get(action.peer)
            if target is not None:
                pair = self._pair(node.index, target.index)
                if pair in self._conns:
                    self._disconnected(pair)
                    self._trace_line("disc", node.id, target.id, action.reason[:40])
                    for f in [
                        f
                        for f in node.flows_out | target.flows_out
                        if {f.src, f.dst} == {node.index, target.index}
                    ]:
                        self._abort_flow(f)
                    self._push(
                        self.now + self._latency(node, target),
                        _DELIVER,
                        (target.index, node.index, "disconnected"),
                    )
        elif isinstance(action, A.Gossip):
            self._gossip_from(node, action.data)
        elif isinstance(action, A.StoreRelease):
            rid = action.release.manifest.release_id
            node.releases[rid] = action.release
            node.stored.setdefault(rid, set())
        elif (
            isinstance(action, A.ReleaseComplete)
            and action.release_id == self.release.manifest.release_id
            and node.completed_at is None
        ):
            node.completed_at = self.now
            self._completions_changed = True
            self._trace_line("complete", node.id)
        # Notice: nothing to carry out in a simulation

    def _send(self, node: SimNode, peer: str, msg: wire.Message) -> None:
        # the hottest path of a run (every control frame): written out, no helpers
        target = self.by_id.get(peer)
        if target is None:
            return
        a, b = node.index, target.index
        conn = self._conns.get((a, b) if a < b else (b, a))
        if conn is None:
            return
        if node.hostile and "lie" in node.hostile and isinstance(msg, wire.Have):
            msg = wire.Have(msg.release_id, b"\xff" * len(msg.bitfield))
        frame = self._codec_cache.get(msg)
        if frame is None:  # the real codec: sizes are real, decoding is exercised
            frame = wire.encode(msg)
            self._remember(msg, frame)
        loss = self.scenario.loss
        if loss and self.rng.random() < loss:
            self.lost_frames += 1
            return
        up, down = node.up.capacity, target.down.capacity
        lat = node.latency + target.latency
        if node.site != target.site:
            lat += self.sites[node.site].wan_latency_s + self.sites[target.site].wan_latency_s
        arrive = self.now + lat + len(frame) / (up if up < down else down)
        d = 0 if a < b else 1
        if arrive < conn[d]:
            arrive = conn[d]  # one stream per peer pair: in order
        conn[d] = arrive
        batch = self._frames
        if batch is not None and batch[0] == arrive:
            batch[1].append((b, a, frame))
        else:
            frames = [(b, a, frame)]
            self._frames = (arrive, frames)
            heapq.heappush(self._heap, (arrive, next(self._seq), _FRAMES, frames))

    def _receive(self, dst: int, src: int, frame: bytes) -> None:
        """A control frame from ``src`` reaches ``dst``."""
        node = self.nodes[dst]
        core = node.core
        if not node.alive or core is None:
            return
        if ((dst, src) if dst < src else (src, dst)) not in self._conns:
            return
        msg = self._codec_cache.get(frame)
        if msg is None:
            msg = wire.decode(frame)
            self._remember(frame, msg)
        core.receive(self.nodes[src].id, msg, now=self.now)
        self._drain(node)

    def _deliver(self, dst: int, src: int, note: str) -> None:
        """A note about the connection from ``src`` reaches ``dst``."""
        node = self.nodes[dst]
        if note == "disconnected" and node.alive and node.core is not None:
            node.core.handle(E.PeerDisconnected(self.nodes[src].id), now=self.now)
            self._drain(node)

    def _remember(self, key: Any, value: Any) -> None:
        """A node sends the same have-update to all its peers: encode (and decode) each
        distinct frame once.  Messages are immutable, so sharing them is safe."""
        if len(self._codec_cache) >= 4096:
            self._codec_cache.clear()
        self._codec_cache[key] = value

    def _payload(self, length: int) -> bytes:
        buf = self._payloads.get(length)
        if buf is None:
            buf = self._payloads[length] = bytes(length)
        return buf

    def _send_chunk(self, node: SimNode, act: A.SendChunk) -> None:
        target = self.by_id.get(act.peer)
        if target is None or self._pair(node.index, target.index) not in self._conns:
            self._push(self.now, _DELIVER, (node.index, node.index, "chunk"))
            return
        header = len(wire.encode_chunk_header(act.release_id, act.index, act.length))
        resources = [node.up]
        if node.site != target.site:
            resources += [self.wan_up[node.site], self.wan_down[target.site]]
        resources.append(target.down)
        flow = Flow(
            node.index,
            target.index,
            header + act.length,
            tuple(resources),
            (act.release_id, act.index, act.length),
            fid=self.net.new_id(),  # before it enters any set: it is the hash
        )
        node.flows_out.add(flow)
        target.flows_in.add(flow)
        self.net.start(flow, self.now)
        self._reschedule_flows()
        # flows have no propagation delay (section 3.1 of docs/simulator.md): the
        # requester's first bytes are due as the flow starts (an event of its own:
        # not in the middle of the sender's actions)
        self._push(self.now, _ARRIVE, (flow,))

    def _arrive(self, flow: Flow) -> None:
        dst = self.nodes[flow.dst]
        if flow.done or not dst.alive or dst.core is None:
            return
        rid, index, _ = flow.payload
        dst.core.handle(E.ChunkArriving(self.nodes[flow.src].id, rid, index), now=self.now)
        self._drain(dst)

    def _reschedule_flows(self) -> None:
        for f in self.net.changed:
            if not f.done:
                self._push(f.finish, _FLOW, (f, f.version))
        self.net.changed.clear()

    def _abort_flow(self, flow: Flow) -> None:
        moved = self.net.stop(flow, self.now)
        self._reschedule_flows()
        self.wasted_aborted += int(moved)
        self.nodes[flow.src].flows_out.discard(flow)
        self.nodes[flow.dst].flows_in.discard(flow)
        src = self.nodes[flow.src]
        if src.alive and src.core is not None:
            rid, index, _ = flow.payload
            src.core.handle(E.ChunkSent(self.nodes[flow.dst].id, rid, index), now=self.now)
            self._drain(src)

    def _flow_done(self, flow: Flow, version: int) -> None:
        if flow.done or flow.version != version:
            return
        self.net.stop(flow, self.now)
        self._reschedule_flows()
        src, dst = self.nodes[flow.src], self.nodes[flow.dst]
        src.flows_out.discard(flow)
        dst.flows_in.discard(flow)
        rid, index, length = flow.payload
        src.bytes_up += length
        self.total_transferred += length
        if src.site != dst.site:
            self.wan_bytes[dst.site] = self.wan_bytes.get(dst.site, 0) + int(flow.size)
        if src.index == 0:
            self._account_seed_upload(flow.started, self.now, length)
        lost = bool(self.scenario.loss) and self.rng.random() < self.scenario.loss
        if lost:
            self.lost_frames += 1
        elif dst.alive and dst.core is not None and self._pair(src.index, dst.index) in self._conns:
            dst.bytes_down += length
            if "corrupt" in src.hostile:
                self._corrupt.add((src.index, dst.index, rid, index))
            dst.core.handle(
                E.MessageReceived(src.id, wire.ChunkData(rid, index, self._payload(length))),
                now=self.now,
            )
            self._drain(dst)
        if src.alive and src.core is not None:
            src.core.handle(E.ChunkSent(dst.id, rid, index), now=self.now)
            self._drain(src)

    def _account_seed_upload(self, start: float, end: float, length: int) -> None:
        """Spread a finished upload's bytes over the timeline buckets it spanned."""
        first, last = int(start / TIMELINE_BUCKET_S), int(end / TIMELINE_BUCKET_S)
        if len(self.seed_timeline) <= last:
            self.seed_timeline.extend([0] * (last + 1 - len(self.seed_timeline)))
        span = max(end - start, 1e-12)
        given = 0
        for b in range(first, last + 1):
            lo = max(start, b * TIMELINE_BUCKET_S)
            hi = min(end, (b + 1) * TIMELINE_BUCKET_S)
            part = length - given if b == last else int(length * max(hi - lo, 0.0) / span)
            self.seed_timeline[b] += part
            given += part

    def _store_chunk(self, node: SimNode, act: A.StoreChunk) -> None:
        sender = self.by_id.get(act.peer)
        key = (sender.index if sender else -1, node.index, act.release_id, act.index)
        ok = key not in self._corrupt
        self._corrupt.discard(key)
        if ok:
            node.stored.setdefault(act.release_id, set()).add(act.index)
            self._trace_line("chunk", node.id, act.index)
        assert node.core is not None
        node.core.handle(
            E.ChunkStored(act.release_id, act.index, act.peer, ok, "" if ok else "hash mismatch"),
            now=self.now,
        )
        # (drained by the caller's loop)

    # -- gossip ------------------------------------------------------------------------------

    def _gossip_from(self, node: SimNode, data: bytes, exclude: int | None = None) -> None:
        for other in self._adj.get(node.index, {}):
            if other == exclude:
                continue
            lat = self._latency(node, self.nodes[other])
            self._push(self.now + lat, _GOSSIP, (other, node.index, data))

    def _gossip_arrive(self, dst: int, src: int, data: bytes) -> None:
        node = self.nodes[dst]
        if not node.alive or node.core is None or self._pair(dst, src) not in self._conns:
            return
        if not node.core.validate_announcement(data):  # the gossipsub validator
            return
        node.core.handle(E.AnnouncementReceived(data, self.nodes[src].id), now=self.now)
        self._drain(node)
        self._gossip_from(node, data, exclude=src)  # accepted -> forwarded

    # -- result -------------------------------------------------------------------------------

    def _result(self) -> RunResult:
        wasted = self.wasted_aborted
        penalties = 0.0
        bans = 0
        hostile_ids = {n.id for n in self.nodes if n.hostile}
        stats = {"timeouts": 0, "corrupt_detected": 0}
        for n in self.nodes:
            if n.core is None:
                continue
            st = n.core.statistics()
            wasted += st.wasted_bytes
            stats["timeouts"] += st.requests_timed_out
            if not n.hostile:
                stats["corrupt_detected"] += st.corrupt_chunks
                penalties += sum(p.penalty for p in st.peers if p.peer in hostile_ids)
                bans += sum(1 for b in st.banned if b in hostile_ids)
        return RunResult(
            scenario=self.scenario,
            seed=self.seed,
            strategy=self.strategy,
            nodes=self.nodes,
            release=self.release,
            events=self.events,
            end_time=self.now,
            digest=self._trace.hexdigest(),
            seed_timeline=self.seed_timeline,
            total_transferred=self.total_transferred,
            wasted_bytes=wasted,
            wan_bytes=self.wan_bytes,
            hostile_penalties=penalties,
            hostile_bans=bans,
            lost_frames=self.lost_frames,
            stats=stats,
        )


def lower_bound(scenario: Scenario, nodes: list[SimNode]) -> float:
    """DESIGN §4's lower bound on distribution time (plus the WAN term for remote sites)."""
    f = scenario.model_bytes
    c = scenario.chunk_bytes
    peers = [n for n in nodes[1:] if not n.hostile]
    if not peers:
        return 0.0

    def up(n: SimNode) -> float:  # a configured rate limit lowers the usable uplink
        return min(n.up.capacity, n.config.upload_rate or math.inf)

    def down(n: SimNode) -> float:
        return min(n.down.capacity, n.config.download_rate or math.inf)

    u_s = up(nodes[0])
    u_max = max([u_s] + [up(n) for n in peers])
    d_min = min(down(n) for n in peers)
    big_n = len(peers)
    terms = [
        f / u_s + math.floor(math.log2(big_n)) * c / u_max if big_n > 1 else f / u_s,
        f / d_min,
        big_n * f / (u_s + sum(up(n) for n in peers)),
    ]
    for site in scenario.sites:
        if site.name != scenario.seed_site and any(n.site == site.name for n in peers):
            terms.append(f / site.wan_down_bps)
    return max(terms)
