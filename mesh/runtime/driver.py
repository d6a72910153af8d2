"""The driver: wires the adapters (host, chunk streams, gossip, discovery, store) to
one :class:`~mesh.core.node.MeshNode`.

What it owns: the event loop around the core -- every adapter callback becomes a core
event with ``now=trio.current_time()``; every core action is carried out by the
adapter it names; the core's deadline is kept by one timer task.  Also the address
book (peer id -> multiaddrs, from mDNS and ``--peer``) and the status snapshot.

Rules:
* The driver makes no protocol decision; it only translates.
* Events are handled one at a time, in arrival order: an adapter callback that fires
  while actions are being carried out is queued, not nested.
* Disk work runs on worker threads (``trio.to_thread``); the trio thread only pumps.
* A store that is full is the node's problem, not the sender's: the chunk is neither
  reported bad (no penalty) nor good, the error is logged, and a restart resumes.

Non-goals: argv, printing (``mesh.cli``), inference (handed to ``on_complete``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from mesh.core import actions as A
from mesh.core import events as E
from mesh.core import wire
from mesh.core.node import MeshNode
from mesh.errors import EdgemeshError, IntegrityError, StoreFullError
from mesh.ids import ChunkId, ReleaseId
from mesh.store.fs import FsStore

log = logging.getLogger("edgemesh.node")

#: Chunk writes (hash + write + fsync) run on this many threads at once.
STORE_THREADS = 4
#: How long the larger peer id of an mDNS pair waits for the other to dial first.
DIAL_GRACE = 1.5
#: Our mDNS record has been out this long: every peer on the LAN has seen it.
MDNS_SEEN_AFTER = 2.0


class Transport(Protocol):
    def peers(self) -> list[str]: ...
    async def dial(self, peer: str, addrs: list[str]) -> bool: ...
    def send(self, peer: str, frame: bytes) -> None: ...
    def send_chunk(
        self, peer: str, release_id: ReleaseId, index: int, chunk_id: ChunkId, length: int
    ) -> bool: ...
    def close(self, peer: str, reason: str = "") -> None: ...
    def recycle(self, payload: object) -> None: ...


class Driver:
    def __init__(
        self,
        core: MeshNode,
        store: FsStore,
        nursery: trio.Nursery,
        *,
        on_complete: Callable[[ReleaseId, str, int], Awaitable[None]] | None = None,
        local_ips: list[str] | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.transport: Transport | None = None
        self.publish: Callable[[bytes], Awaitable[None]] | None = None
        self._nursery = nursery
        self._on_complete = on_complete
        self._queue: list[E.Event | None] = []
        self._busy = False
        self._wake = trio.Event()
        self._deadline = math.inf
        self._store_limiter = trio.CapacityLimiter(STORE_THREADS)
        #: bytes of received chunks handed to the store and not yet stored (the chunk
        #: transport stops reading data streams while this is large)
        self.store_backlog = 0
        self.addresses: dict[str, list[str]] = {}
        # peers found by mDNS -> whether our own record was out then (registration
        # probes ~1.7 s first): a peer found since can have found us too, at about
        # the same time; a peer found before cannot
        self.mdns_peers: dict[str, bool] = {}
        self.mdns_visible_at: float | None = None
        self._local_nets = [
            ipaddress.ip_network(f"{ip}/24", strict=False) for ip in (local_ips or [])
        ]
        self.store_error: str | None = None

    # -- events in ---------------------------------------------------------------------------

    def feed(self, event: E.Event | None) -> None:
        """Hand ``event`` to the core (``None``: the core's deadline has come), then
        carry out its actions.  Called while actions are being carried out (an adapter
        callback firing synchronously), it only queues."""
        self._queue.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                ev = self._queue.pop(0)
                if ev is None:
                    self.core.on_deadline(now=trio.current_time())
                else:
                    self.core.handle(ev, now=trio.current_time())
                self._drain()
        finally:
            self._busy = False

    def _drain(self) -> None:
        for action in self.core.poll_actions():
            self._dispatch(action)
        d = self.core.next_deadline()
        d = math.inf if d is None else d
        if d < self._deadline:
            self._deadline = d
            self._wake.set()

    async def run_timer(self) -> None:
        while True:
            d = self.core.next_deadline()
            self._deadline = math.inf if d is None else d
            self._wake = trio.Event()
            with trio.move_on_at(self._deadline):
                await self._wake.wait()
            if trio.current_time() >= self._deadline:
                self.feed(None)

    # adapter callbacks ----------------------------------------------------------------

    def found(self, peer: str, addrs: list[str], *, static: bool = False) -> None:
        new = peer not in self.addresses
        self.addresses[peer] = addrs
        if not static and peer not in self.mdns_peers:
            self.mdns_peers[peer] = self.mdns_visible_at is not None
        if new:
            log.info("peer found: %s (%s)", _short(peer), "static" if static else "mDNS")
        self.feed(E.PeersDiscovered((peer,), static=static))

    def lost(self, peer: str) -> None:
        if self.mdns_peers.pop(peer, None) is not None:
            self.addresses.pop(peer, None)
            log.info("peer gone from mDNS: %s", _short(peer))

    def mdns_registered(self) -> None:
        self.mdns_visible_at = trio.current_time()

    def connected(self, peer: str, outbound: bool, remote_ip: str | None) -> None:
        self.feed(E.PeerConnected(peer, outbound=outbound, local=self._is_local(peer, remote_ip)))

    def disconnected(self, peer: str) -> None:
        self.feed(E.PeerDisconnected(peer))

    def deliver(self, peer: str, msg: wire.Message) -> None:
        self.feed(E.MessageReceived(peer, msg))

    def violation(self, peer: str, reason: str) -> None:
        log.warning("peer %s sent bad data: %s", _short(peer), reason)
        self.feed(E.ProtocolViolation(peer, reason))

    def arriving(self, peer: str, release_id: ReleaseId, index: int) -> None:
        self.feed(E.ChunkArriving(peer, release_id, index))

    def sent(self, peer: str, release_id: ReleaseId, index: int, error: str) -> None:
        if error and error != "peer gone":
            self.feed(E.ChunkUnavailable(peer, release_id, index, error))
        else:
            self.feed(E.ChunkSent(peer, release_id, index))

    def announcement(self, data: bytes, origin: str | None) -> None:
        self.feed(E.AnnouncementReceived(data, origin))

    def _is_local(self, peer: str, ip: str | None) -> bool:
        if peer in self.mdns_peers:
            return True
        if ip is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.is_loopback or any(addr in net for net in self._local_nets)

    # -- actions out ---------------------------------------------------------------------

    def _dispatch(self, action: A.Action) -> None:
        t = self.transport
        if isinstance(action, A.SendMessage):
            if t is not None:
                t.send(action.peer, wire.encode(action.message))
        elif isinstance(action, A.SendChunk):
            ok = t is not None and t.send_chunk(
                action.peer, action.release_id, action.index, action.chunk_id, action.length
            )
            if not ok:
                self.feed(E.ChunkSent(action.peer, action.release_id, action.index))
        elif isinstance(action, A.StoreChunk):
            self._nursery.start_soon(self._store_chunk, action)
        elif isinstance(action, A.Connect):
            self._nursery.start_soon(self._dial, action.peer)
        elif isinstance(action, A.Disconnect):
            log.info("disconnecting %s: %s", _short(action.peer), action.reason)
            if t is not None:
                t.close(action.peer, action.reason)
        elif isinstance(action, A.Gossip):
            if self.publish is not None:
                self._nursery.start_soon(self.publish, action.data)
        elif isinstance(action, A.StoreRelease):
            self._nursery.start_soon(self._store_release, action)
        elif isinstance(action, A.ReleaseComplete):
            log.info(
                "verified: %s v%d (%s)", action.model, action.version, action.release_id.short()
            )
            if self._on_complete is not None:
                self._nursery.start_soon(
                    self._on_complete, action.release_id, action.model, action.version
                )
        elif isinstance(action, A.Notice):
            getattr(log, action.level if action.level in ("info", "warning", "error") else "info")(
                action.text
            )

    def _may_dial_us(self, peer: str) -> bool:
        """Can ``peer`` have found our mDNS record (and be dialling us now)?  Yes if we
        found it while our record was out, or our record has been out long enough for
        anyone to see it (a redial after a disconnect); no for a peer found while our
        registration still probed."""
        if self.mdns_peers.get(peer):
            return True
        at = self.mdns_visible_at
        return at is not None and trio.current_time() - at >= MDNS_SEEN_AFTER

    async def _dial(self, peer: str) -> None:
        t = self.transport
        if t is None:
            return
        if peer in self.mdns_peers and self.core.node_id > peer and self._may_dial_us(peer):
            # Both ends may have found each other by mDNS at about the same time, and
            # both were told to dial: let the smaller peer id dial first, so that one
            # connection (not two, one of them torn down again) carries the session.
            # Not for a peer found before our own record was out: it cannot have found
            # us yet (it will in ~1.7 s), so waiting for it would only delay the
            # session -- e.g. a seed started among running devices, ADR 0005.
            with trio.move_on_after(DIAL_GRACE):
                while peer not in t.peers():
                    await trio.sleep(0.05)
            if peer in t.peers():
                return
        ok = await t.dial(peer, self.addresses.get(peer, []))
        if not ok:
            self.feed(E.PeerDisconnected(peer))

    async def _store_chunk(self, act: A.StoreChunk) -> None:
        size = len(act.payload)
        self.store_backlog += size
        try:
            await trio.to_thread.run_sync(
                self.store.put, act.chunk_id, act.payload, limiter=self._store_limiter
            )
        except IntegrityError:
            self._recycle(act.payload)
            self.feed(E.ChunkStored(act.release_id, act.index, act.peer, False, "hash mismatch"))
            return
        except StoreFullError as e:
            if self.store_error is None:
                log.error("%s; free space and restart: verified chunks are kept", e)
            self.store_error = str(e)
            return
        except (EdgemeshError, OSError) as e:
            self.store_error = str(e)
            log.error("cannot store chunk %d: %s", act.index, e)
            return
        finally:
            self.store_backlog -= size
        self._recycle(act.payload)
        self.feed(E.ChunkStored(act.release_id, act.index, act.peer, True))

    def _recycle(self, payload: object) -> None:
        """The store is done with a received payload: its buffer may be reused (only
        after the store thread returned: it no longer reads the bytes)."""
        if self.transport is not None:
            self.transport.recycle(payload)

    async def _store_release(self, act: A.StoreRelease) -> None:
        try:
            await trio.to_thread.run_sync(self.store.put_release, act.release)
        except (EdgemeshError, OSError) as e:
            log.error("cannot store release %s: %s", act.release.manifest.describe(), e)

    # -- start-up ------------------------------------------------------------------------

    async def load_store(self, announcements: dict[ReleaseId, bytes] | None = None) -> None:
        """Tell the core about every release on disk and the chunks already verified
        (this is how a restarted node resumes)."""
        infos = await trio.to_thread.run_sync(self.store.releases)
        for info in infos:
            rel = await trio.to_thread.run_sync(self.store.get_release, info.release_id)
            refs = list(rel.manifest.chunk_refs())
            have = await trio.to_thread.run_sync(self.store.present, [r.chunk_id for r in refs])
            present = tuple(i for i, r in enumerate(refs) if r.chunk_id in have)
            ann = (announcements or {}).get(info.release_id)
            self.feed(E.LocalRelease(rel, present, ann))
            if 0 < len(present) < len(refs):
                log.info(
                    "resuming %s: %d of %d chunks already verified on disk",
                    rel.manifest.describe(),
                    len(present),
                    len(refs),
                )

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.core.statistics()
        models: dict[str, Any] = {}
        for s in st.swarms:
            m = models.setdefault(s.model, {"active_version": None, "releases": []})
            m["releases"].append(
                {
                    "version": s.version,
                    "release_id": s.release_id.hex(),
                    "state": "verified" if s.complete else "fetching",
                    "chunks_total": s.chunks_total,
                    "chunks_verified": s.chunks_verified,
                }
            )
        for m in models.values():
            m["releases"].sort(key=lambda r: r["version"])
        return {
            "peers": sorted(self.transport.peers()) if self.transport is not None else [],
            "bytes_uploaded": st.bytes_uploaded,
            "bytes_downloaded": st.bytes_downloaded,
            "chunks_uploaded": st.chunks_uploaded,
            "chunks_downloaded": st.chunks_downloaded,
            "wasted_bytes": st.wasted_bytes,
            "corrupt_chunks": st.corrupt_chunks,
            "banned": sorted(st.banned),
            # how long our chunk requests wait for their first bytes, against the
            # transfer that follows, and the extra requests that cover the wait
            "requests": {
                "wait_s": None if st.request_wait_s is None else round(st.request_wait_s, 4),
                "transfer_s": (
                    None if st.request_transfer_s is None else round(st.request_transfer_s, 4)
                ),
                "cover": st.request_cover,
            },
            # bytes received from / sent to each connected peer
            "peer_traffic": {
                p.peer: {"from": p.bytes_from, "to": p.bytes_to, "penalty": p.penalty}
                for p in st.peers
            },
            "store_error": self.store_error,
            "models": models,
        }


def _short(peer: str) -> str:
    return peer[:8] + "…" + peer[-6:] if len(peer) > 16 else peer
