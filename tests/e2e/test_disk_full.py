"""A joining node whose disk fills up mid-transfer: it says so, blames no peer, keeps
every verified chunk, and completes after space is freed and it restarts."""

from __future__ import annotations

import subprocess

import pytest

from mesh.datadir import DataDir
from mesh.store.fs import FsStore
from tests.cli.test_crash_and_full import _tmpfs
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.slow


def test_disk_full_while_fetching(cluster: Cluster) -> None:
    model = cluster.model(size_mb=12)
    seed = cluster.seed(model, mdns=False)
    with _tmpfs("6m") as mnt:
        node = cluster.join("n0", "--peer", seed.addr(), mdns=False, data_dir=mnt / "n0")
        st = node.wait_for("the full disk to be reported", lambda st: bool(st["store_error"]))
        assert "full" in st["store_error"]
        seed_id = seed.info()["peer_id"]
        assert seed_id not in st["banned"]
        assert st["corrupt_chunks"] == 0
        assert st["peer_traffic"][seed_id]["penalty"] == 0.0
        log = node.text()
        assert log.count("free space and restart") == 1  # said once, not per chunk
        assert "Traceback" not in log
        node.stop()

        store = FsStore(DataDir(node.data_dir).store_root, readonly=True)
        rel = store.find_release("m", 1)
        report = store.verify_release(rel.manifest.release_id)
        present = report.chunks_verified
        assert 0 < present < report.chunks_total
        assert {b.reason for b in report.bad} == {"missing"}  # nothing half-written
        store.close()

        # free space (grow the filesystem) and restart: it resumes and completes
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        node.start()
        st = node.wait_verified("m")
        assert st["chunks_downloaded"] == report.chunks_total - present
        node.wait_for("activation", lambda st: st["models"]["m"]["active_version"] == 1)
        node.stop()
