"""``edgemesh join / seed / status``: bad input gets one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mesh.modelgen import write_example_model
from tests.cli.conftest import Run

NO_NET = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--api", "127.0.0.1:0"]


def test_join_without_trusted_keys(run: Run, tmp_path: Path) -> None:
    res = run("join", "--data-dir", tmp_path / "n", *NO_NET)
    assert res.returncode == 1
    assert "no trusted publisher keys" in res.error_line
    assert "edgemesh trust add" in res.error_line


def test_join_config_errors_name_the_key(run: Run, tmp_path: Path, key: Path) -> None:
    cfg = tmp_path / "node.toml"
    for text, expected in [
        ('colour = "blue"\n', "unknown key 'colour'"),
        ("mdns = 3\n", "'mdns' must be bool"),
        ("[node]\nmax_peers = -1\n", "'node.max_peers' = -1.0 is out of range"),
        ("[node]\nsuper_seed = true\n", "unknown key 'node.super_seed'"),
        ('api = "localhost"\n', "must be HOST:PORT"),
        ('log_level = "loud"\n', "'log_level' must be one of"),
        ("listen = [\n", "not valid TOML"),
    ]:
        cfg.write_text(text)
        res = run("join", "--config", cfg, "--trust", f"{key}.pub", "--data-dir", tmp_path / "n")
        assert res.returncode == 1, text
        assert expected in res.error_line, (text, res.error_line)
        assert "node.toml" in res.error_line


def test_join_bad_addresses(run: Run, tmp_path: Path, key: Path) -> None:
    base = ["join", "--trust", f"{key}.pub", "--data-dir", tmp_path / "n", "--no-mdns"]
    res = run(*base, "--peer", "/ip4/127.0.0.1/tcp/4101")
    assert "must be a multiaddr ending in /p2p/<peer id>" in res.error_line
    res = run(*base, "--listen", "127.0.0.1:4101", "--api", "off")
    assert "is not a /ip4/ADDR/tcp/PORT multiaddr" in res.error_line
    res = run(*base, "--api", "nonsense")
    assert "must be HOST:PORT" in res.error_line


def test_join_refuses_a_data_dir_in_use(run: Run, tmp_path: Path, key: Path) -> None:
    dd = tmp_path / "n"
    dd.mkdir()
    # a live process (this test) recorded as the node running there
    (dd / "node.json").write_text(json.dumps({"pid": os.getpid(), "api": "http://x:1"}))
    res = run("join", "--trust", f"{key}.pub", "--data-dir", dd, *NO_NET)
    assert res.returncode == 1
    assert f"a node (pid {os.getpid()}) is already running" in res.error_line


def test_status_without_a_node(run: Run, tmp_path: Path) -> None:
    res = run("status", "--data-dir", tmp_path / "nothing")
    assert res.returncode == 1
    assert "no running node found" in res.error_line
    res = run("status", "--api", "http://127.0.0.1:9")  # nothing listens on port 9
    assert res.returncode == 1
    assert "cannot reach the edgemesh API" in res.error_line


def test_seed_refuses_to_reuse_a_version_with_other_content(
    run: Run, tmp_path: Path, key: Path, model: Path
) -> None:
    dd = tmp_path / "seed"
    run(
        "publish",
        model,
        "--model",
        "m",
        "--version",
        "1",
        "--key",
        key,
        "--data-dir",
        dd,
        check=True,
    )
    other = tmp_path / "other.onnx"
    write_example_model(other, size_bytes=256 * 1024, seed=2)
    res = run(
        "seed", other, "--model", "m", "--version", "1", "--key", key, "--data-dir", dd, *NO_NET
    )
    assert res.returncode == 1
    assert "already published with different content" in res.error_line


def test_example_config_is_valid() -> None:
    from mesh.nodeconfig import load_node_config

    cfg = load_node_config(Path(__file__).parents[2] / "configs" / "node.example.toml")
    assert cfg.mesh == "default"
    assert cfg.listen == ["/ip4/0.0.0.0/tcp/4101"]
    assert cfg.api == "127.0.0.1:8470"
    assert cfg.node_config().upload_rate is None
