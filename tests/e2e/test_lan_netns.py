"""End to end on a real (namespaced) LAN: a seed and four nodes, real processes.

Each node runs in its own network namespace on one bridge (``tests/netns.py``); they
find each other only by multicast mDNS (no ``--peer``), talk libp2p TCP + Noise +
Yamux, and the seed's uplink is shaped with ``tc tbf`` below the peers' links, so the
peers must share the release among themselves for the seed to upload it about once.

Asserted: every node ends with the verified release (``status --json``:
``chunks_verified == chunks_total``) and activates it; the seed uploaded at most
1.3 x the model; no process printed a traceback.  Never asserts on speed.

Needs root and iproute2: skipped otherwise (``NetnsUnavailable`` says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Lan, NetnsUnavailable, Proc, check_available, wait_for

PEERS = 4
MODEL_MIB = 24
SEED_UP_MBIT = 40  # the bottleneck: 24 MiB takes ~5 s through it
PEER_UP_MBIT = 200
MAX_SEED_UPLOAD_RATIO = 1.3
#: Generous bounds on a busy 2-core machine; the run itself takes ~15 s.
SEED_TIMEOUT_S = 120.0
ACTIVATE_TIMEOUT_S = 60.0

EDGEMESH = [sys.executable, "-m", "mesh"]


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    """A seed namespace and PEERS node namespaces on one bridge, removed afterwards
    (processes killed by pid, namespaces deleted), also when the test fails."""
    try:
        check_available()
    except NetnsUnavailable as e:
        pytest.skip(f"LAN test needs network namespaces: {e}")
    net = Lan(1 + PEERS, log_dir=tmp_path / "logs")
    try:
        net.create()
    except NetnsUnavailable as e:
        net.close()
        pytest.skip(f"LAN test needs network namespaces: {e}")
    except BaseException:
        net.close()
        raise
    try:
        yield net
    finally:
        net.close()


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGEMESH_HOME"] = str(home)  # never the user's own data dir
    env["PYTHONWARNINGS"] = "error"
    return env


def _status(lan: Lan, node_index: int, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    r = lan.run(
        lan.nodes[node_index],
        [*EDGEMESH, "status", "--data-dir", str(data_dir), "--json"],
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def _sessions(lan: Lan) -> str:
    """Per node: its transport's peers and the peers its core keeps a session with
    (``peer_traffic``): a difference means a connection the core does not know of."""
    lines = []
    for node in lan.nodes:
        try:
            st = lan.http_get_json(node, 8470, "/edgemesh/status")
        except (OSError, RuntimeError, ValueError) as e:
            lines.append(f"{node.ns}: {e}")
            continue
        links = sorted(p[-6:] for p in st.get("peers", []))
        core = sorted(p[-6:] for p in st.get("peer_traffic", {}))
        lines.append(f"{node.ns} {st['peer_id'][-6:]}: links {links} core {core}")
    return "\n".join(lines)


def _tail(p: Proc, n: int = 30) -> str:
    return "\n".join(p.stderr().splitlines()[-n:])


@pytest.mark.slow
def test_seed_and_four_nodes_over_mdns(lan: Lan, tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    key, model = tmp_path / "publisher.key", tmp_path / "model.onnx"
    for argv in (
        ["keygen", "--out", str(key)],
        ["example-model", str(model), "--size-mb", str(MODEL_MIB)],
    ):
        r = lan.run(lan.nodes[0], [*EDGEMESH, *argv], env=env)
        assert r.returncode == 0, r.stderr

    seed_node, *peer_nodes = lan.nodes
    lan.shape(seed_node, up_mbit=SEED_UP_MBIT)
    for node in peer_nodes:
        lan.shape(node, up_mbit=PEER_UP_MBIT)

    joins: list[tuple[Proc, Path]] = []
    for node in peer_nodes:
        data_dir = tmp_path / f"node{node.index}"
        argv = [
            *EDGEMESH,
            "join",
            "--data-dir",
            str(data_dir),
            "--trust",
            f"{key}.pub",
            "--listen",
            f"/ip4/{node.ip}/tcp/4101",
            "--mdns-interface",
            node.ip,
        ]
        joins.append((lan.popen(node, argv, name=f"join{node.index}", env=env), data_dir))
    seed_argv = [
        *EDGEMESH,
        "seed",
        str(model),
        "--model",
        "demo",
        "--version",
        "1",
        "--key",
        str(key),
        "--data-dir",
        str(tmp_path / "seed"),
        "--listen",
        f"/ip4/{seed_node.ip}/tcp/4101",
        "--mdns-interface",
        seed_node.ip,
        "--until-copies",
        str(PEERS),
        "--json",
    ]
    seed = lan.popen(seed_node, seed_argv, name="seed", env=env)

    try:
        rc = seed.popen.wait(timeout=SEED_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logs = "\n".join(f"--- join{p.node.index}\n{_tail(p)}" for p, _ in joins)
        pytest.fail(
            f"the seed did not see {PEERS} copies:\n--- seed\n{_tail(seed)}\n{logs}\n"
            f"--- sessions (transport links vs the core's peers)\n{_sessions(lan)}"
        )
    assert rc == 0, _tail(seed)
    summary = json.loads(seed.stdout().strip().splitlines()[-1])
    assert summary["copies"] == PEERS
    assert summary["model_bytes"] >= MODEL_MIB * 1024 * 1024
    assert summary["seed_uploaded_bytes"] <= MAX_SEED_UPLOAD_RATIO * summary["model_bytes"], summary

    def all_active() -> list[dict[str, Any]] | None:
        docs = [_status(lan, p.node.index, d, env) for p, d in joins]
        for doc in docs:
            m = doc["models"].get("demo")
            if m is None or m["active_version"] != 1:
                return None
        return docs

    docs = wait_for(all_active, ACTIVATE_TIMEOUT_S, "every node to activate v1", interval=1.0)
    for (p, _), doc in zip(joins, docs, strict=True):
        (release,) = doc["models"]["demo"]["releases"]
        assert release["release_id"] == summary["release_id"]
        assert release["chunks_total"] > 1
        assert release["chunks_verified"] == release["chunks_total"], doc
        assert release["state"] == "active", doc
        assert doc["bytes_downloaded"] >= summary["model_bytes"]
        assert p.popen.poll() is None, f"join{p.node.index} exited: {_tail(p)}"
    # the peers served each other: together they uploaded what the seed did not
    peer_uploads = sum(doc["bytes_uploaded"] for doc in docs)
    assert peer_uploads + summary["seed_uploaded_bytes"] >= PEERS * summary["model_bytes"]

    # (py-libp2p prints tracebacks of its own handled errors: a crash of ours shows
    # as an exited process instead, checked above)
    for p, _ in joins:
        assert "(mDNS)" in p.stderr(), f"join{p.node.index} found no peer by mDNS"
