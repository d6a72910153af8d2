"""The node process: opens every adapter and wires them through one :class:`Driver`.

``open_node`` is what ``edgemesh join`` and ``edgemesh seed`` run: the libp2p host
(persisted identity), the chunk streams, gossip, mDNS discovery, static peers and the
store.  It records the node in ``DATA_DIR/node.json`` so that ``edgemesh status``
finds it, and removes that record when it stops.  ``activate`` / ``activate_verified``
hand verified releases to the inference service (on a joined node).

Rules: cancellation (SIGINT/SIGTERM in the CLI) closes everything in reverse order:
API, discovery (unregisters the mDNS record), gossip, streams, host.  The store's
writes are atomic, so stopping at any moment loses nothing verified.  A release that
has just verified is activated once this node has stopped passing it on
(:func:`wait_relayed`), so activation does not compete with the relaying.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio

from mesh.core.node import MeshNode, NodeConfig
from mesh.core.trust import TrustStore
from mesh.datadir import DataDir
from mesh.errors import ConfigError
from mesh.ids import ReleaseId
from mesh.runtime.chunks import ChunkTransport
from mesh.runtime.discovery import open_discovery
from mesh.runtime.driver import Driver
from mesh.runtime.gossip import open_gossip
from mesh.runtime.host import concrete_listen_addrs, full_addrs, load_identity, open_host
from mesh.runtime.inference import InferenceService
from mesh.store.base import ReleaseInfo
from mesh.store.fs import FsStore

log = logging.getLogger("edgemesh.node")

#: Activation (assembly, onnxruntime load, checks: seconds of CPU on a 2-core device)
#: of a release that just verified waits while this node is still passing it on:
#: while a connected peer lacks the release and this node uploaded something within
#: RELAY_QUIET seconds (a relay uploads a chunk every ~0.2 s at 50 Mbit/s with 1 MiB
#: chunks and four upload slots).  In bench_lan the early finishers' activations
#: otherwise run on the same 2 cores as the last relays of the rollout.
RELAY_QUIET = 0.5
#: ... but never longer than this: a peer that fetches slowly (or never finishes)
#: does not keep the new model from being served.
RELAY_HOLD_MAX = 10.0
_RELAY_POLL = 0.1


@dataclass
class NodeSettings:
    data_dir: DataDir
    trust: TrustStore
    node: NodeConfig
    listen: list[str] = field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"])
    peers: list[str] = field(default_factory=list)  # static multiaddrs with /p2p/<id>
    mdns: bool = True
    mdns_interfaces: list[str] | None = None  # None: the listen addresses
    #: announcements to gossip for releases we publish (seed)
    announcements: dict[ReleaseId, bytes] = field(default_factory=dict)
    psk: str | None = None


@dataclass
class NodeHandle:
    peer_id: str
    addrs: list[str]
    driver: Driver
    extra_status: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    #: the inference service (``InferenceService``) on a joined node: its view of
    #: each model (active version, activation state per release) joins the status
    inference: Any = None

    def status(self) -> dict[str, Any]:
        """The DESIGN §5 status document."""
        st = self.driver.status()
        for extra in self.extra_status:
            st.update(extra())
        if self.inference is not None:
            _merge_models(st["models"], self.inference.status())
        return {"peer_id": self.peer_id, "addrs": self.addrs, **st}


def _merge_models(models: dict[str, Any], serving: dict[str, Any]) -> None:
    """Fetch progress (from the core) + activation state (from the inference service)."""
    for name, s in serving.items():
        m = models.setdefault(name, {"active_version": None, "releases": []})
        m["active_version"] = s.get("active_version")
        by_id = {r["release_id"]: r for r in m["releases"]}
        for r in s.get("releases", []):
            mine = by_id.get(r.get("release_id"))
            if mine is None:
                continue
            mine["state"] = r.get("state", mine["state"])
            if r.get("reason"):
                mine["reason"] = r["reason"]


def parse_peer(text: str) -> tuple[str, str]:
    """``/ip4/A/tcp/P/p2p/ID`` -> (peer id, address)."""
    try:
        ma = multiaddr.Multiaddr(text)
        peer = ma.value_for_protocol("p2p")
    except Exception:  # noqa: BLE001 -- multiaddr raises several unrelated types
        peer = None
    if not peer:
        raise ConfigError(
            f"peer address {text!r} must be a multiaddr ending in /p2p/<peer id> "
            "(copy it from the other node's log or 'edgemesh status')"
        )
    return str(peer), text


@contextlib.asynccontextmanager
async def open_node(
    settings: NodeSettings,
    *,
    on_complete: Callable[[ReleaseId, str, int], Awaitable[None]] | None = None,
) -> AsyncIterator[NodeHandle]:
    """Run a node until the block exits."""
    static = [parse_peer(p) for p in settings.peers]
    key_pair = await trio.to_thread.run_sync(load_identity, settings.data_dir.identity_dir)
    listen = concrete_listen_addrs(settings.listen)
    store = await trio.to_thread.run_sync(settings.data_dir.open_store)
    try:
        async with (
            open_host(key_pair, listen, psk=settings.psk) as host,
            trio.open_nursery() as nursery,
        ):
            peer_id = host.get_id().to_string()
            addrs = full_addrs(host)
            local_ips = [str(a).split("/")[2] for a in listen]
            core = MeshNode(
                settings.node,
                settings.trust,
                rng=random.Random(),
                now=trio.current_time(),
                node_id=peer_id,
            )
            driver = Driver(core, store, nursery, on_complete=on_complete, local_ips=local_ips)
            driver.transport = ChunkTransport(
                host,
                nursery,
                deliver=driver.deliver,
                connected=driver.connected,
                disconnected=driver.disconnected,
                violation=driver.violation,
                read_chunk=store.get,
                read_chunk_into=store.get_into,
                sent=driver.sent,
                backlog=lambda: driver.store_backlog,
                arriving=driver.arriving,
            )
            nursery.start_soon(driver.run_timer)
            async with open_gossip(
                host,
                settings.node.mesh,
                validate=core.validate_announcement,
                received=driver.announcement,
            ) as gossip:
                driver.publish = gossip.publish
                await driver.load_store(settings.announcements)
                handle = NodeHandle(peer_id, addrs, driver)
                handle.extra_status.append(lambda: {"gossip_peers": gossip.peers()})
                log.info("node %s listening on %s", peer_id, ", ".join(addrs))
                for peer, addr in static:
                    driver.found(peer, [addr], static=True)
                async with _maybe_discovery(settings, peer_id, addrs, local_ips, driver):
                    info = {"pid": os.getpid(), "peer_id": peer_id, "addrs": addrs}
                    settings.data_dir.write_node_info(info)
                    try:
                        yield handle
                    finally:
                        settings.data_dir.clear_node_info()
                        nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(store.close)


async def wait_relayed(
    driver: Driver, rid: ReleaseId, *, quiet: float = RELAY_QUIET, limit: float = RELAY_HOLD_MAX
) -> float:
    """Return once this node no longer passes release ``rid`` on (every connected peer
    holds it, or nothing was uploaded for ``quiet`` seconds), or after ``limit``
    seconds; the seconds waited."""
    t0 = last_change = trio.current_time()
    last_up = -1
    while True:
        now = trio.current_time()
        st = driver.core.statistics()
        if {p.peer for p in st.peers} <= set(driver.core.complete_peers(rid)):
            break
        if st.bytes_uploaded != last_up:
            last_up, last_change = st.bytes_uploaded, now
        elif now - last_change >= quiet:
            break
        if now - t0 >= limit:
            break
        await trio.sleep(_RELAY_POLL)
    return trio.current_time() - t0


async def activate(service: InferenceService, rid: ReleaseId, model: str, version: int) -> None:
    """Offer a verified release to the inference service; log what became of it."""
    before = service.status().get(model, {}).get("active_version")
    await service.offer(rid)
    if before == version:
        return
    st = service.status().get(model, {})
    if st.get("active_version") == version:
        log.info("activated %s v%d", model, version)
        return
    for r in st.get("releases", []):
        if r.get("version") == version and r.get("reason"):
            log.warning("%s v%d not activated: %s", model, version, r["reason"])
            return


async def activate_verified(store: FsStore, service: InferenceService) -> None:
    """At start-up: the newest complete release of each model is offered again (verified
    before a restart, or a crash between verification and activation); the service
    ignores what is not newer than its active version."""
    newest: dict[str, ReleaseInfo] = {}
    for info in await trio.to_thread.run_sync(store.releases):
        if info.complete and (
            info.model not in newest or info.version > newest[info.model].version
        ):
            newest[info.model] = info
    for info in newest.values():
        await activate(service, info.release_id, info.model, info.version)


@contextlib.asynccontextmanager
async def _maybe_discovery(
    settings: NodeSettings, peer_id: str, addrs: list[str], local_ips: list[str], driver: Driver
) -> AsyncIterator[None]:
    if not settings.mdns:
        yield
        return
    interfaces = settings.mdns_interfaces or local_ips
    async with open_discovery(
        interfaces,
        mesh=settings.node.mesh,
        peer_id=peer_id,
        addrs=[a for a in addrs if a.split("/")[2] in interfaces] or addrs,
        found=driver.found,
        lost=driver.lost,
        registered=driver.mdns_registered,
    ):
        yield
