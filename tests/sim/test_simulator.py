"""The simulator: determinism, scenario smoke tests and scenario-file errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mesh import _native
from mesh.core.node import MeshNode
from mesh.errors import ConfigError
from mesh.sim.engine import Simulation
from mesh.sim.report import build_report
from mesh.sim.scenario import load_scenario, parse_scenario
from tests.helpers import run_as_pure_python

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"

SMALL = """
name = "small"
[model]
size_mb = 8
chunk_kb = 256
[seed]
up_mbit = 100
[[devices]]
count = 12
up_mbit = 100
down_mbit = 100
"""


def run(text: str, *, seed: int = 1, strategy: str = "swarm") -> dict[str, Any]:
    sim = Simulation(parse_scenario(text), seed=seed, strategy=strategy)
    return build_report(sim.run(), wall_s=0.0)


def test_compiled_and_pure_python_cores_trace_the_same_run(tmp_path: Path) -> None:
    """The mypyc-compiled core and simulator (ADR 0008) are the same source: a run gives
    the same trace digest with them as with the ``.py`` files."""
    if _native.mode != "compiled":
        pytest.skip(f"edgemesh runs as {_native.mode} here: nothing to compare")
    text = SMALL + '[hostile]\nfraction = 0.2\nbehaviours = ["corrupt", "lie"]\n'
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "pure.json"
    env = {**os.environ, _native.ENV: "1"}
    cmd = [sys.executable, "-m", "mesh", "simulate", str(tmp_path / "s.toml"), "--json"]
    subprocess.run([*cmd, str(out)], env=env, check=True, capture_output=True, timeout=300)
    pure = json.loads(out.read_text())
    assert pure["core"].startswith("pure Python")
    mine = run(text)
    assert mine["core"] == "compiled"
    assert pure["trace_digest"] == mine["trace_digest"]
    assert pure["events"] == mine["events"]


def test_same_seed_same_digest_other_seed_other_digest() -> None:
    a = run(SMALL, seed=7)
    b = run(SMALL, seed=7)
    c = run(SMALL, seed=8)
    assert a["trace_digest"] == b["trace_digest"]
    assert a["completion_s"] == b["completion_s"]
    assert a["trace_digest"] != c["trace_digest"]


def test_swarm_completes_and_seed_uploads_about_once() -> None:
    r = run(SMALL)
    assert r["all_completed"] is True
    assert r["nodes_completed"] == 12
    assert r["seed_upload_ratio"] <= 1.05
    assert r["completion_ratio"] is not None
    assert r["completion_ratio"] >= 1.0  # never faster than the lower bound


def test_naive_strategy_makes_the_seed_upload_once_per_node() -> None:
    r = run(SMALL, strategy="naive")
    assert r["all_completed"] is True
    assert r["seed_upload_ratio"] == pytest.approx(12.0, rel=0.02)


def test_report_has_the_documented_fields() -> None:
    r = run(SMALL)
    for key in (
        "scenario",
        "seed",
        "strategy",
        "nodes",
        "model_bytes",
        "chunk_bytes",
        "lower_bound_s",
        "completion_s",
        "completion_p50_s",
        "completion_p90_s",
        "seed_uploaded_bytes",
        "total_transferred_bytes",
        "wasted_bytes",
        "events",
        "wall_s",
        "trace_digest",
        "per_node",
    ):
        assert key in r
    node = r["per_node"][0]
    assert set(node) >= {"id", "completion_s", "downloaded_bytes", "uploaded_bytes"}


def test_hostile_peers_are_penalised_and_honest_nodes_complete() -> None:
    r = run(
        SMALL.replace("count = 12", "count = 20")
        + """
[hostile]
fraction = 0.2
behaviours = ["corrupt", "lie", "replay", "forge"]
"""
    )
    assert r["all_completed"] is True
    assert r["hostile_nodes"] == 4
    hostile = r["hostile"]
    assert isinstance(hostile, dict)
    assert hostile["bans_by_honest_nodes"] + hostile["penalty_points_from_honest_nodes"] > 0


def test_loss_is_recovered_by_timeouts() -> None:
    r = run("loss = 0.03\n" + SMALL)
    assert r["all_completed"] is True
    assert r["lost_frames"] > 0


def test_partition_heals_and_everyone_completes() -> None:
    r = run(
        SMALL
        + """
[[partitions]]
start_s = 0.2
end_s = 3.0
fraction = 0.5
"""
    )
    assert r["all_completed"] is True


def test_churn_nodes_present_at_the_end_complete() -> None:
    r = run(
        SMALL.replace("count = 12", "count = 20")
        + """
[churn]
crash_fraction = 0.2
leave_fraction = 0.1
late_join_fraction = 0.1
start_s = 0.1
end_s = 1.0
downtime_s = [0.5, 2.0]
"""
    )
    assert r["all_completed"] is True
    assert r["nodes_present_at_end"] == 18
    late = [n for n in r["per_node"] if n["joined_s"] and n["joined_s"] > 0]
    assert len(late) == 2  # 10 % of the 20 join late


def test_two_sites_complete_over_the_wan() -> None:
    r = run("""
[model]
size_mb = 8
chunk_kb = 256
[[sites]]
name = "a"
wan_up_mbit = 50
wan_down_mbit = 50
[[sites]]
name = "b"
wan_up_mbit = 50
wan_down_mbit = 50
[seed]
up_mbit = 100
site = "a"
[[devices]]
count = 6
up_mbit = 100
down_mbit = 100
site = "a"
[[devices]]
count = 6
up_mbit = 100
down_mbit = 100
site = "b"
""")
    assert r["all_completed"] is True
    wan = r["wan_bytes"]
    assert isinstance(wan, dict)
    assert wan["b"] >= 8 * 1024 * 1024  # site b needed the whole model across the WAN


def test_every_shipped_scenario_parses() -> None:
    files = sorted(SCENARIOS.glob("*.toml"))
    names = {f.stem for f in files}
    assert {
        "lan-10",
        "lan-100",
        "lan-1000",
        "wifi-lossy-50",
        "two-sites-wan",
        "churn-100",
        "partition-heal-100",
        "hostile-100",
    } <= names
    for f in files:
        assert load_scenario(f).name == f.stem


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[model]\nsize_mb = 8\n[seed]\nup_mbit = 1\n", "no [[devices]]"),
        (SMALL.replace("up_mbit = 100\n[[devices]]", "up_mbit = -5\n[[devices]]"), "seed.up_mbit"),
        (SMALL.replace("chunk_kb = 256", "chunk_kb = 300"), "model.chunk_kb"),
        (SMALL.replace("count = 12", "count = 'many'"), "devices[0].count"),
        (SMALL + "\n[node]\nmax_peerz = 3\n", "node.max_peerz"),
        ("colour = 'red'\n" + SMALL, "colour"),
        (SMALL + "\n[hostile]\nfraction = 0.1\nbehaviours = ['bite']\n", "hostile.behaviours"),
        (SMALL.replace("[seed]", "[seed]\nsite = 'mars'"), "seed.site"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_invalid_scenario_names_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario(text)
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "nope.toml")


def test_upload_rate_limit_is_respected_and_never_spins() -> None:
    rate = 2_500_000  # bytes/s per device
    sc = parse_scenario(SMALL + f"\n[node]\nupload_rate = {rate}\n")
    result = Simulation(sc, seed=1).run()
    assert all(n.completed_at is not None for n in result.nodes[1:])
    burst = 4 * 1024 * 1024 + sc.chunk_bytes  # bucket size plus one chunk of debt
    for n in result.nodes[1:]:
        assert n.bytes_up <= rate * result.end_time + burst


def _missed_opportunities(node: MeshNode) -> list[str]:
    """Requests the scheduler could send but did not: a free peer (hello done, not
    backing off, below its request limit) holding a chunk we miss that nobody is
    asked for, while we are below the total limit (outside the endgame)."""
    c = node.config
    if len(node._requests) >= c.max_requests + node._extra_total or c.download_rate is not None:
        return []
    missed = []
    for s in node._swarms.values():
        if s.complete or not node._is_current(s) or s.n - s.have_count <= c.endgame_chunks:
            continue
        fresh = s.full_mask & ~s.have & ~s.storing_mask & ~s.requested_mask
        for p in node._peers.values():
            if (
                p.hello is not None
                and p.busy_until <= node._now
                and len(p.inflight) < c.per_peer_requests + p.extra
                and p.have.get(s.rid, 0) & fresh
            ):
                missed.append(f"{node._now:.3f}: {p.id} has chunks we miss and is free")
    return missed


@pytest.mark.parametrize(
    ("top", "tables"),
    [
        ("", ""),
        ("loss = 0.03\n", ""),
        ("", "[[partitions]]\nstart_s = 0.2\nend_s = 2.0\nfraction = 0.5\n"),
        (
            "",
            "[churn]\ncrash_fraction = 0.2\nleave_fraction = 0.1\nlate_join_fraction = 0.1\n"
            "start_s = 0.1\nend_s = 1.0\ndowntime_s = [0.5, 2.0]\n",
        ),
        ("", '[hostile]\nfraction = 0.2\nbehaviours = ["corrupt", "lie", "replay", "forge"]\n'),
    ],
    ids=["lan", "loss", "partition", "churn", "hostile"],
)
def test_the_incremental_scheduler_takes_every_opportunity(
    top: str, tables: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Most events cannot create a request opportunity, so a scheduling pass only
    looks at the peers that changed; checked here against a full scan after every
    pass of every node."""
    if _native.mode == "compiled":  # a compiled class cannot be patched: the same source
        run_as_pure_python(request.node.nodeid)
        return
    missed: list[str] = []
    schedule = MeshNode._schedule

    def checked(self: MeshNode) -> None:
        schedule(self)
        missed.extend(_missed_opportunities(self))

    monkeypatch.setattr(MeshNode, "_schedule", checked)
    r = run(top + SMALL.replace("count = 12", "count = 20") + tables)
    assert r["all_completed"] is True
    assert missed == []


def test_simulated_requests_cover_a_long_start_wait() -> None:
    """The simulator reports a chunk's first bytes one link latency after its holder
    starts it (ChunkArriving), so the core's request cover (pipeline.cover_depth)
    runs in simulations too: 40 ms each way against 21 ms of transfer per 256 KiB
    chunk at 100 Mbit/s gives the cover; the LAN above (no latency set) gives none."""
    far = SMALL.replace("down_mbit = 100\n", "down_mbit = 100\nlatency_ms = 40\n").replace(
        "size_mb = 8", "size_mb = 32"
    )
    covers = {}
    for name, text in (("lan", SMALL), ("far", far)):
        sim = Simulation(parse_scenario(text), seed=1)
        sim.run()
        covers[name] = [n.core.statistics().request_cover for n in sim.nodes[1:] if n.core]
    assert covers["lan"] == [0] * 12
    assert covers["far"] == [1] * 12
