"""``edgemesh infer`` and ``edgemesh rollback`` as real processes against a real node
process (the stand-in ``tests.runtime.serve_node`` until ``edgemesh join`` exists)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mesh.modelgen import write_example_model
from tests.cli.conftest import Run, cli_env

REPO = Path(__file__).parents[2]


@pytest.fixture
def published(run: Run, key: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for v in (1, 2):
        m = tmp_path / f"v{v}.onnx"
        write_example_model(m, size_bytes=64 * 1024, seed=v)
        run(
            "publish",
            m,
            "--model",
            "cam",
            "--version",
            v,
            "--key",
            key,
            "--data-dir",
            data,
            check=True,
        )
    return data


def start_node(data: Path, home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.serve_node", str(data), "--offer-all"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(home),
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), line
    return proc


@pytest.fixture
def node_proc(published: Path, home: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start_node(published, home)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((1, 128), np.float32))
    return path


def test_infer_prints_outputs_and_version(
    run: Run, published: Path, node_proc: subprocess.Popen[str], x_file: Path
) -> None:
    res = run("infer", "cam", "--input", f"x={x_file}", "--data-dir", published, check=True)
    assert res.stdout.splitlines()[0] == "model cam v2"
    assert res.stdout.splitlines()[1].startswith("y: float32[1,128] = [")
    doc = run(
        "infer", "cam", "--input", f"x={x_file}", "--data-dir", published, "--json", check=True
    ).json()
    assert doc["model_version"] == 2
    assert doc["outputs"]["y"]["shape"] == [1, 128]
    assert len(doc["outputs"]["y"]["data"]) == 128


def test_infer_errors_are_one_line(
    run: Run, published: Path, node_proc: subprocess.Popen[str], x_file: Path, tmp_path: Path
) -> None:
    res = run("infer", "nope", "--input", f"x={x_file}", "--data-dir", published)
    assert res.returncode == 1
    assert (
        res.error_line
        == "edgemesh: error: inference on 'nope' failed: unknown model 'nope' (HTTP 404)"
    )
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((1, 3), np.float32))
    res = run("infer", "cam", "--input", f"x={bad}", "--data-dir", published)
    assert "input 'x' has shape [1,3], expected x: float32[batch,128] (HTTP 400)" in res.error_line
    res = run("infer", "cam", "--input", "x", "--data-dir", published)
    assert res.returncode == 2
    assert "NAME=FILE.npy" in res.error_line


def test_infer_without_a_running_node(run: Run, tmp_path: Path, x_file: Path) -> None:
    res = run("infer", "cam", "--input", f"x={x_file}", "--data-dir", tmp_path / "empty")
    assert res.returncode == 1
    assert "no edgemesh node is running for data dir" in res.error_line
    res = run("infer", "cam", "--input", f"x={x_file}", "--api", "http://127.0.0.1:1")
    assert "cannot reach the edgemesh API at 127.0.0.1:1" in res.error_line


def test_rollback_on_a_running_node_then_offline(
    run: Run, published: Path, home: Path, x_file: Path
) -> None:
    proc = start_node(published, home)
    try:
        res = run("rollback", "cam", "--data-dir", published, check=True)
        assert res.stdout.strip() == "model cam: rolled back, v1 is serving"
        doc = run(
            "infer", "cam", "--input", f"x={x_file}", "--data-dir", published, "--json", check=True
        ).json()
        assert doc["model_version"] == 1
        res = run("rollback", "cam", "--data-dir", published)
        assert "no earlier version" in res.error_line
    finally:
        stop(proc)
    # not running: v1 is active; v2 was rolled back and stays so after a restart
    res = run("rollback", "cam", "--data-dir", published)
    assert "no earlier version" in res.error_line
    proc = start_node(published, home)
    try:
        doc = run(
            "infer", "cam", "--input", f"x={x_file}", "--data-dir", published, "--json", check=True
        ).json()
        assert doc["model_version"] == 1
    finally:
        stop(proc)


def test_offline_rollback_is_used_by_the_next_start(
    run: Run, published: Path, home: Path, x_file: Path
) -> None:
    stop(start_node(published, home))  # activates v1 then v2, persists it
    res = run("rollback", "cam", "--data-dir", published, check=True)
    assert "v1 is now the active version" in res.stdout
    assert "next start activates it" in res.stdout
    proc = start_node(published, home)
    try:
        doc = run(
            "infer", "cam", "--input", f"x={x_file}", "--api", _api(published), "--json", check=True
        ).json()
        assert doc["model_version"] == 1
    finally:
        stop(proc)


def _api(data: Path) -> str:
    url: str = json.loads((data / "node.json").read_text())["api"]
    return url


def test_a_node_without_api_is_not_changed_behind_its_back(
    run: Run, published: Path, x_file: Path
) -> None:
    (published / "node.json").write_text(json.dumps({"pid": os.getpid(), "peer_id": "x"}))
    for args in (("rollback", "cam"), ("infer", "cam", "--input", f"x={x_file}")):
        res = run(*args, "--data-dir", published)
        assert res.returncode == 1
        assert "has no local API; restart it with --api HOST:PORT" in res.error_line


def test_gc_keeps_the_active_and_previous_versions(
    run: Run, published: Path, home: Path, key: Path, tmp_path: Path
) -> None:
    stop(start_node(published, home))  # v1 then v2 activated: v2 active, v1 previous
    for v in (3, 4):  # newer releases that were never activated
        m = tmp_path / f"v{v}.onnx"
        write_example_model(m, size_bytes=64 * 1024, seed=v)
        run(
            "publish",
            m,
            "--model",
            "cam",
            "--version",
            v,
            "--key",
            key,
            "--data-dir",
            published,
            check=True,
        )
    run("gc", "--data-dir", published, check=True)
    versions = [
        r["version"]
        for r in run("releases", "--data-dir", published, "--json", check=True).json()["releases"]
    ]
    assert sorted(versions) == [1, 2, 3, 4]
