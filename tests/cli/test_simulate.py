"""End to end: ``edgemesh simulate`` as a real process -- JSON report, plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Run

SCENARIO = """
name = "tiny"
[model]
size_mb = 4
chunk_kb = 256
[seed]
up_mbit = 100
[[devices]]
count = 5
up_mbit = 100
down_mbit = 100
"""


def test_simulate_writes_json_and_plot(run: Run, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    res = run(
        "simulate",
        "tiny.toml",
        "--seed",
        "3",
        "--baseline",
        "--json",
        "out.json",
        "--plot",
        "out.png",
        "--quiet",
        check=True,
    )
    assert "completion / lower bound" in res.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["scenario"] == "tiny"
    assert report["seed"] == 3
    assert report["strategy"] == "swarm"
    assert report["baseline"]["strategy"] == "naive"
    assert report["baseline"]["seed_upload_ratio"] > report["seed_upload_ratio"]
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_json_to_stdout_is_one_object(run: Run, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    res = run("simulate", "tiny.toml", "--json", "-", "--quiet", check=True)
    assert json.loads(res.stdout)["nodes"] == 5


def test_simulate_bad_scenario_is_one_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(SCENARIO.replace("count = 5", "count = 0"))
    res = run("simulate", "bad.toml")
    assert res.returncode == 1
    assert "devices[0].count" in res.error_line


def test_simulate_missing_file(run: Run) -> None:
    res = run("simulate", "nope.toml")
    assert res.returncode == 1
    assert "does not exist" in res.error_line
