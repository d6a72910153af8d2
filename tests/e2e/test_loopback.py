"""Real ``edgemesh seed`` / ``join`` processes on loopback: real libp2p, gossipsub,
zeroconf (bound to 127.0.0.1) and onnxruntime."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from mesh.datadir import DataDir
from mesh.store.fs import FsStore
from tests.e2e.conftest import Cluster, Node

pytestmark = pytest.mark.slow


def test_five_processes_by_static_peers(cluster: Cluster) -> None:
    model = cluster.model(size_mb=6)
    seed = cluster.seed(model, mdns=False)
    seed_addr = seed.addr()
    nodes: list[Node] = []
    for i in range(4):
        peers = [seed_addr] + ([nodes[-1].addr()] if nodes else [])
        nodes.append(cluster.join(f"n{i}", *[a for p in peers for a in ("--peer", p)], mdns=False))
    size = model.stat().st_size
    for n in nodes:
        n.wait_verified("m")
        n.wait_for("activation", lambda st: st["models"]["m"]["active_version"] == 1)
    # every node holds exactly the published release
    rid = seed.release("m")["release_id"]  # type: ignore[index]
    for n in nodes:
        assert n.release("m")["release_id"] == rid  # type: ignore[index]
    up = seed.status()["bytes_uploaded"]
    assert up < 4 * size  # peers served each other part of it


def test_mdns_late_joiner_and_forged_announcement(cluster: Cluster) -> None:
    """Five processes find each other by mDNS on 127.0.0.1; a node that joins after the
    announcement catches up from its peers' heads (no new announcement: the seed's
    re-announce is pushed out of the test's reach); a release signed by an untrusted
    key, announced into the mesh, is accepted by no node."""
    cfg = cluster.root / "seed.toml"
    cfg.write_text("[node]\nreannounce_interval = 3600\n")
    model = cluster.model(size_mb=8)
    seed = cluster.seed(model, "--config", str(cfg))
    nodes = [cluster.join(f"n{i}") for i in range(4)]
    size = model.stat().st_size
    for n in nodes:
        n.wait_verified("m")
        n.wait_for("activation", lambda st: st["models"]["m"]["active_version"] == 1)
    up = seed.status()["bytes_uploaded"]
    assert up <= 2 * size, f"seed uploaded {up / size:.2f} x the model"

    late = cluster.join("late")
    st = late.wait_verified("m")
    assert st["models"]["m"]["releases"][0]["release_id"] == seed.release("m")["release_id"]  # type: ignore[index]
    # No new announcement was made (the seed re-announces hourly here); the late joiner
    # learned of v1 from its peers' hellos -- or from gossipsub's message cache, if it
    # joined within a few heartbeats of the original announcement.

    # a rogue publisher: a key nobody trusts, a newer version of the same model
    rogue_key = cluster.root / "rogue.key"
    cluster.run("keygen", "--out", str(rogue_key))
    rogue_model = cluster.model("rogue.onnx", size_mb=1, seed=7)
    fast = cluster.root / "rogue.toml"
    fast.write_text("[node]\nreannounce_interval = 1.0\n")  # gossips it every second
    rogue = cluster.seed(rogue_model, "--config", str(fast), name="rogue", version=2, key=rogue_key)
    rogue.info()
    for n in [*nodes, late]:  # every node hears of v2 (hello, gossip) and refuses it
        n.wait_for("the forged release to be refused", _logged(n, "release m v2"))
    time.sleep(3)  # a few more re-announcements through gossip
    for n in [*nodes, late]:
        st = n.status()
        versions = [r["version"] for r in st["models"]["m"]["releases"]]
        assert versions == [1], f"{n.name} took the forged release: {versions}"
        assert st["models"]["m"]["active_version"] == 1
        log = n.text()
        assert "announced: m v2" not in log  # the gossip validator refused it
        # its hello advertised v2 too: the manifest was fetched, refused, the peer banned
        if "release m v2" in log:
            assert "rejected: key" in log
            assert "is not in the trust store" in log
    rogue_id = rogue.info()["peer_id"]
    assert any(rogue_id in n.status()["banned"] for n in [*nodes, late])


def _logged(node: Node, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda st: text in node.text()


def test_kill9_mid_transfer_resumes_from_verified_chunks(cluster: Cluster) -> None:
    model = cluster.model(size_mb=24)
    seed = cluster.seed(model, mdns=False)
    slow = cluster.root / "slow.toml"
    slow.write_text("download_limit_mbit = 40\n")  # ~5 MB/s: a few seconds to kill into
    node = cluster.join("n0", "--peer", seed.addr(), "--config", str(slow), mdns=False)
    total = node.wait_for(
        "a third of the chunks",
        lambda st: any(
            3 * r["chunks_verified"] >= r["chunks_total"] > r["chunks_verified"]
            for r in st["models"].get("m", {}).get("releases", [])
        ),
    )["models"]["m"]["releases"][0]["chunks_total"]
    node.kill9()
    # what survived on disk: complete, verified chunks only
    store = FsStore(DataDir(node.data_dir).store_root, readonly=True)
    rel = store.find_release("m", 1)
    refs = list(rel.manifest.chunk_refs())
    present = len(store.present(r.chunk_id for r in refs))
    assert 0 < present < total
    report = store.verify_release(rel.manifest.release_id)
    assert report.chunks_verified == present  # every chunk file on disk is whole
    assert {b.reason for b in report.bad} == {"missing"}
    store.close()

    node.start()  # same data dir, same identity
    st = node.wait_verified("m")
    # after the restart it fetched exactly what was missing on disk
    assert st["chunks_downloaded"] == total - present
    assert "resuming m v1" in node.text()
    node.wait_for("activation", lambda st: st["models"]["m"]["active_version"] == 1)


def test_sigterm_stops_cleanly(cluster: Cluster) -> None:
    model = cluster.model(size_mb=1)
    seed = cluster.seed(model, mdns=False)
    node = cluster.join("n0", "--peer", seed.addr(), mdns=False)
    node.wait_verified("m")
    for n, sig in ((node, signal.SIGTERM), (seed, signal.SIGINT)):
        assert n.stop(sig) == 0
        assert "stopped" in n.text().splitlines()[-1]
        assert DataDir(n.data_dir).running_node() is None  # node.json removed


def test_corrupt_serving_peer_is_penalised_and_avoided(cluster: Cluster) -> None:
    model = cluster.model(size_mb=8)
    seed = cluster.seed(model, mdns=False)
    seed_addr = seed.addr()
    # the hostile node holds the same release (a copy of the seed's store) but flips a
    # byte in every chunk it serves
    hostile_dir = cluster.root / "hostile"
    shutil.copytree(
        seed.data_dir / "store", hostile_dir / "store", ignore=shutil.ignore_patterns("lock")
    )
    shutil.copy(seed.data_dir / "trust.json", hostile_dir / "trust.json")
    log = open(cluster.root / "hostile.log", "wb")  # noqa: SIM115 -- closed below
    hostile = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.hostile_node", str(hostile_dir), cluster.mesh],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cluster.env,
    )
    try:
        info = None
        deadline = time.monotonic() + 60
        while info is None and time.monotonic() < deadline:
            assert hostile.poll() is None, (cluster.root / "hostile.log").read_text()
            info = DataDir(hostile_dir).running_node()
            time.sleep(0.05)
        assert info is not None
        hostile_id, hostile_addr = info["peer_id"], info["addrs"][0]
        nodes: list[Node] = []
        for i in range(3):
            peers = [hostile_addr, seed_addr, *(n.addr() for n in nodes)]
            nodes.append(
                cluster.join(f"n{i}", *(a for p in peers for a in ("--peer", p)), mdns=False)
            )
        rid = seed.release("m")["release_id"]  # type: ignore[index]
        for n in nodes:
            st = n.wait_verified("m")
            assert st["models"]["m"]["releases"][0]["release_id"] == rid
        stats = [n.status() for n in nodes]
        assert sum(st["corrupt_chunks"] for st in stats) >= 1
        for st in stats:
            if st["corrupt_chunks"]:
                assert hostile_id in st["banned"]
                assert st["corrupt_chunks"] <= 4  # banned after the 2nd, plus in flight
    finally:
        hostile.send_signal(signal.SIGTERM)
        try:
            hostile.wait(10)
        except subprocess.TimeoutExpired:
            hostile.kill()
            hostile.wait()
        log.close()
