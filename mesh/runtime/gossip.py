"""Gossip adapter: release announcements on a per-mesh gossipsub topic.

What it owns: a py-libp2p ``Pubsub`` + ``GossipSub`` router on the node's host, the
topic ``/edgemesh/<mesh>/announce/1``, its validator, and the subscription loop.

Rules (DESIGN §3, notes/py-libp2p-0.8.1.md):
* Heartbeat 1 s (py-libp2p's default is 120 s: a mesh would take minutes to form).
* Every node validates every message with the core's check (``validate``: signature by a
  trusted key, this mesh, size, newer than what the node has).  A rejected message is
  neither delivered nor forwarded; other paths may still deliver it, which is why the
  check runs on every node.  Our own publications are accepted: the core made them.
* Gossip does not persist: the core re-announces periodically and exchanges heads on
  connect (hello), so a late joiner catches up without gossip.

Non-goals: interpreting announcements (the core), the chunk protocol.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from mesh.core.announce import MAX_ANNOUNCEMENT

log = logging.getLogger("edgemesh.gossip")


def topic_for(mesh: str) -> str:
    return f"/edgemesh/{mesh}/announce/1"


class Gossip:
    def __init__(self, pubsub: Any, topic: str) -> None:
        self._pubsub = pubsub
        self.topic = topic

    async def publish(self, data: bytes) -> None:
        try:
            await self._pubsub.publish(self.topic, data)
        except Exception as e:  # noqa: BLE001 -- py-libp2p raises many types
            log.warning("gossip publish failed: %s", e)

    def peers(self) -> int:
        return len(self._pubsub.peer_topics.get(self.topic, ()))


@contextlib.asynccontextmanager
async def open_gossip(
    host: Any,
    mesh: str,
    *,
    validate: Callable[[bytes], bool],
    received: Callable[[bytes, str | None], None],
) -> AsyncIterator[Gossip]:
    """Join the mesh's announcement topic; ``received(data, origin_peer)`` is called
    for every valid announcement from another node."""
    router = GossipSub(
        protocols=[GOSSIPSUB_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
    )
    pubsub = Pubsub(host, router)
    topic = topic_for(mesh)
    me: ID = host.get_id()

    def validator(forwarder: ID, msg: Any) -> bool:
        data = bytes(msg.data)
        if len(data) > MAX_ANNOUNCEMENT:
            return False
        if bytes(msg.from_id) == me.to_bytes():
            return True
        return validate(data)

    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        pubsub.set_topic_validator(topic, validator, is_async_validator=False)
        sub = await pubsub.subscribe(topic)

        async def pump() -> None:
            while True:
                msg = await sub.get()
                if bytes(msg.from_id) == me.to_bytes():
                    continue
                try:
                    origin: str | None = ID(bytes(msg.from_id)).to_string()
                except Exception:  # noqa: BLE001 -- malformed origin: still an announcement
                    origin = None
                received(bytes(msg.data), origin)

        async with trio.open_nursery() as n:
            n.start_soon(pump)
            try:
                yield Gossip(pubsub, topic)
            finally:
                n.cancel_scope.cancel()
