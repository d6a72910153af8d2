"""Two nodes in one process over loopback libp2p: a seed and a joiner move a release
through the chunk adapter (control + data streams, ``_ChunkReader``, piecewise writes)
and the joiner ends with every chunk verified and stored byte for byte."""

from __future__ import annotations

from pathlib import Path

import trio

from mesh.core.announce import Announcement
from mesh.core.node import NodeConfig
from mesh.core.trust import TrustedKey, TrustStore
from mesh.datadir import DataDir
from mesh.modelgen import write_example_model
from mesh.publish import publish
from mesh.runtime.chunks import ChunkTransport
from mesh.runtime.node import NodeSettings, open_node
from tests.helpers import key


async def test_seed_to_joiner_over_loopback(tmp_path: Path) -> None:
    signer = key()
    trust = TrustStore()
    trust.add(TrustedKey(signer.public_key, ("*",), "test"))
    seed_dir, join_dir = DataDir(tmp_path / "seed"), DataDir(tmp_path / "join")
    model = tmp_path / "m.onnx"
    # several 1 MiB chunks (each written in many pieces) and a short last one
    write_example_model(model, size_bytes=(5 << 20) + 12345)
    store = seed_dir.open_store()
    try:
        res = publish(
            store,
            model,
            mesh="default",
            model="m",
            version=1,
            signer=signer,
            created=1_800_000_000,
            chunk_size=1 << 20,
        )
    finally:
        store.close()
    rid = res.release.manifest.release_id
    seed = NodeSettings(
        seed_dir,
        trust,
        NodeConfig(super_seed=True),
        listen=["/ip4/127.0.0.1/tcp/0"],
        mdns=False,
        announcements={rid: Announcement.for_release(res.release, signer).encode()},
    )
    done = trio.Event()

    async def complete(release_id: object, model: str, version: int) -> None:
        done.set()

    with trio.fail_after(60):
        async with open_node(seed) as hs:
            join = NodeSettings(
                join_dir,
                trust,
                NodeConfig(),
                listen=["/ip4/127.0.0.1/tcp/0"],
                mdns=False,
                peers=[hs.addrs[0]],
            )
            async with open_node(join, on_complete=complete) as hj:
                await done.wait()
                st = hj.status()
                backlog = hj.driver.store_backlog
            sender = hs.driver.transport
    assert isinstance(sender, ChunkTransport)
    # the seed read chunks into frame buffers, and reused those of chunks written
    # (several are read ahead at once, so not all 6)
    assert sender.send_buffers.reused >= 1
    rel = st["models"]["m"]["releases"][0]
    assert rel["chunks_verified"] == rel["chunks_total"] == 6
    assert st["corrupt_chunks"] == 0
    # the reader reported each chunk's first bytes: the joiner measured how long its
    # requests waited for them (chunks 1-4: not the first from the seed, not the short last)
    req = st["requests"]
    assert req["wait_s"] is not None
    assert req["wait_s"] >= 0.0
    assert req["transfer_s"] is not None
    assert req["transfer_s"] >= 0.0
    assert req["cover"] in (0, 1)
    assert _chunk_files(join_dir) == _chunk_files(seed_dir)
    assert backlog == 0  # every chunk handed to the store was accounted back


def _chunk_files(d: DataDir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (d.store_root / "chunks").rglob("*") if p.is_file()}
