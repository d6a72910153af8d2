"""The gossip adapter on real py-libp2p gossipsub over loopback.

Three hosts in a line, A - B - C.  A publishes anything (its own validator lets its
own messages pass); B validates with a real ``MeshNode``; C accepts everything.  What
B rejects never reaches C: rejected announcements are neither accepted nor forwarded.
"""

from __future__ import annotations

import random
from pathlib import Path

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.core.announce import Announcement
from mesh.core.node import MeshNode, NodeConfig
from mesh.core.trust import TrustedKey, TrustStore
from mesh.ids import ReleaseId
from mesh.runtime.gossip import open_gossip
from mesh.runtime.host import full_addrs, load_identity, open_host
from tests.helpers import key

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
MESH = "gossip-test"


def _ann(version: int, *, mesh: str = MESH, signer_n: int = 0, model: str = "cam") -> bytes:
    return Announcement.create(
        mesh=mesh,
        model=model,
        version=version,
        release_id=ReleaseId(bytes([version]) * 32),
        manifest_size=1000,
        signer=key(signer_n),
    ).encode()


async def test_rejected_announcements_are_not_forwarded(tmp_path: Path) -> None:
    trust = TrustStore([TrustedKey(key(0).public_key, ("cam",), "publisher")])
    core_b = MeshNode(NodeConfig(mesh=MESH), trust, rng=random.Random(1))
    got_b: list[bytes] = []
    got_c: list[bytes] = []

    async with (
        open_host(load_identity(tmp_path / "a"), LOOPBACK) as a,
        open_host(load_identity(tmp_path / "b"), LOOPBACK) as b,
        open_host(load_identity(tmp_path / "c"), LOOPBACK) as c,
        open_gossip(a, MESH, validate=lambda d: True, received=lambda d, o: None) as ga,
        open_gossip(
            b,
            MESH,
            validate=core_b.validate_announcement,
            received=lambda d, o: got_b.append(d),
        ),
        open_gossip(c, MESH, validate=lambda d: True, received=lambda d, o: got_c.append(d)),
    ):
        # connect after the routers exist (they learn of connections as they happen)
        with trio.fail_after(30):
            await a.connect(info_from_p2p_addr(multiaddr.Multiaddr(full_addrs(b)[0])))
            await c.connect(info_from_p2p_addr(multiaddr.Multiaddr(full_addrs(b)[0])))
        good = _ann(3)
        with trio.fail_after(30):  # until the gossip mesh has formed
            while good not in got_c:
                await ga.publish(good)
                await trio.sleep(0.5)
        bad = {
            "untrusted key": _ann(4, signer_n=1),
            "other mesh": _ann(5, mesh="elsewhere"),
            "model outside the key's patterns": _ann(6, model="other"),
            "oversize": good + b"\0" * 3000,
            "garbage": b"\x93\x01\x02\x03",
        }
        for data in bad.values():
            await ga.publish(data)
        # a stale one: B already holds v3 of cam
        core_b._current["cam"] = 3
        await ga.publish(_ann(2))
        marker = _ann(7)
        await ga.publish(marker)  # published last: once it arrives, the rest had time
        with trio.fail_after(30):
            while marker not in got_c:
                await trio.sleep(0.1)
        await trio.sleep(0.5)
        for why, data in bad.items():
            assert data not in got_b, why
            assert data not in got_c, why
        assert _ann(2) not in got_c  # stale
        assert got_c.count(good) == 1
