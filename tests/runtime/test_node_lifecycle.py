"""A whole node in-process (real py-libp2p, gossipsub, zeroconf on 127.0.0.1): it
closes everything it opens, and two nodes exchange a release."""

from __future__ import annotations

import gc
import os
import secrets
from pathlib import Path

import trio

from mesh.core.announce import Announcement
from mesh.core.manifest import MIN_CHUNK_SIZE, MIN_CREATED
from mesh.core.node import NodeConfig
from mesh.core.trust import TrustedKey, TrustStore
from mesh.datadir import DataDir
from mesh.modelgen import write_example_model
from mesh.publish import publish
from mesh.runtime.node import NodeSettings, open_node
from tests.helpers import key


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_open_and_close_leaks_no_file_descriptors(tmp_path: Path) -> None:
    settings = NodeSettings(
        DataDir(tmp_path / "n"),
        TrustStore(),
        NodeConfig(mesh=f"t-{secrets.token_hex(3)}"),
        listen=["/ip4/127.0.0.1/tcp/0"],
        mdns_interfaces=["127.0.0.1"],
    )
    async with open_node(settings):
        pass  # first cycle: lazily created process-wide resources
    gc.collect()
    before = _fds()
    for _ in range(3):
        async with open_node(settings) as handle:
            assert DataDir(tmp_path / "n").running_node() is not None
            assert handle.peer_id.startswith("12D3KooW")
        assert DataDir(tmp_path / "n").running_node() is None
    gc.collect()
    await trio.sleep(0.2)
    assert _fds() <= before


async def test_two_nodes_exchange_a_release_over_mdns(tmp_path: Path) -> None:
    signer = key(3)
    trust = TrustStore([TrustedKey(signer.public_key, ("*",), "k")])
    mesh = f"t-{secrets.token_hex(3)}"
    seed_dd = DataDir(tmp_path / "seed")
    write_example_model(tmp_path / "m.onnx", size_bytes=3 * 1024 * 1024)
    with seed_dd.open_store() as store:
        rel = publish(
            store,
            tmp_path / "m.onnx",
            mesh=mesh,
            model="m",
            version=1,
            signer=signer,
            created=MIN_CREATED,
            chunk_size=MIN_CHUNK_SIZE * 4,
        ).release
    rid = rel.manifest.release_id
    ann = Announcement.for_release(rel, signer).encode()
    listen, mdns_if = ["/ip4/127.0.0.1/tcp/0"], ["127.0.0.1"]
    with trio.fail_after(60):
        async with (
            open_node(
                NodeSettings(
                    seed_dd,
                    trust,
                    NodeConfig(mesh=mesh, super_seed=True),
                    announcements={rid: ann},
                    listen=listen,
                    mdns_interfaces=mdns_if,
                )
            ) as seed,
            open_node(
                NodeSettings(
                    DataDir(tmp_path / "n"),
                    trust,
                    NodeConfig(mesh=mesh),
                    listen=listen,
                    mdns_interfaces=mdns_if,
                )
            ) as node,
        ):
            while True:
                rels = node.status()["models"].get("m", {}).get("releases", [])
                if rels and rels[0]["chunks_verified"] == rels[0]["chunks_total"]:
                    break
                await trio.sleep(0.05)
            assert rels[0]["release_id"] == rid.hex()
            assert node.status()["peers"] == [seed.peer_id]
            assert seed.status()["bytes_uploaded"] == rel.manifest.total_size


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_simultaneous_dials_leave_one_live_session_on_both_sides(tmp_path: Path) -> None:
    """Both nodes know each other statically and dial at once: whichever stream wins,
    each core ends up with exactly one session with the other (not none, not two).
    (In one process the two dials rarely overlap exactly; the race that once left a
    core without its session -- fixed in ChunkTransport.dial -- showed in the
    namespace LAN benchmark, ~1 run in 4.)"""
    from mesh.runtime.host import load_identity

    mesh = f"t-{secrets.token_hex(3)}"
    for round_ in range(3):
        dds = [DataDir(tmp_path / f"r{round_}" / n) for n in "ab"]
        ids = [load_identity(dd.identity_dir) for dd in dds]
        from libp2p.peer.id import ID

        pids = [ID.from_pubkey(k.public_key).to_string() for k in ids]
        ports = [_free_port(), _free_port()]
        addrs = [f"/ip4/127.0.0.1/tcp/{p}/p2p/{pid}" for p, pid in zip(ports, pids, strict=True)]
        settings = [
            NodeSettings(
                dds[i],
                TrustStore(),
                NodeConfig(mesh=mesh),
                mdns=False,
                listen=[f"/ip4/127.0.0.1/tcp/{ports[i]}"],
                peers=[addrs[1 - i]],
            )
            for i in range(2)
        ]
        with trio.fail_after(30):
            async with open_node(settings[0]) as a, open_node(settings[1]) as b:
                while not (
                    b.peer_id in a.status()["peer_traffic"]
                    and a.peer_id in b.status()["peer_traffic"]
                ):
                    await trio.sleep(0.05)
                await trio.sleep(1.0)  # let any losing stream be torn down
                assert list(a.status()["peer_traffic"]) == [b.peer_id]
                assert list(b.status()["peer_traffic"]) == [a.peer_id]
                assert a.status()["peers"] == [b.peer_id]
