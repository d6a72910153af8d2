"""End to end: a publish killed with SIGKILL, and a publish that fills the disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.modelgen import write_example_model
from tests.cli.conftest import Run, cli_env


def _chunk_dirs(data: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(data / "store" / "chunks"))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_9_during_publish_leaves_no_half_release(
    run: Run, key: Path, tmp_path: Path, home: Path
) -> None:
    data = tmp_path / "data"
    small = tmp_path / "v1.onnx"
    write_example_model(small, size_bytes=256 * 1024, seed=1)
    run(
        "publish",
        small,
        "--model",
        "cam",
        "--version",
        "1",
        "--key",
        key,
        "--data-dir",
        data,
        check=True,
    )
    big = tmp_path / "v2.onnx"
    write_example_model(big, size_bytes=192 * 1024 * 1024, seed=2)  # 3072 chunks of 64 KiB

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesh",
            "publish",
            str(big),
            "--model",
            "cam",
            "--version",
            "2",
            "--key",
            str(key),
            "--data-dir",
            str(data),
            "--chunk-size",
            "65536",
            "--no-load-check",
        ],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        # v1 used a handful of the 256 prefix directories; wait until v2 is writing chunks
        start_dirs = _chunk_dirs(data)
        while _chunk_dirs(data) < start_dirs + 32 and proc.poll() is None:
            assert time.monotonic() < deadline, "publish never started writing chunks"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "publish finished before it could be killed"

    listing = run("releases", "--data-dir", data, "--json", check=True).json()
    assert [(r["model"], r["version"]) for r in listing["releases"]] == [("cam", 1)]
    assert listing["damaged"] == {}
    assert run("verify", "--model", "cam", "--data-dir", data).returncode == 0
    assert run("verify", "--model", "cam", "--version", "2", "--data-dir", data).returncode == 1

    again = run(
        "publish",
        big,
        "--model",
        "cam",
        "--version",
        "2",
        "--key",
        key,
        "--data-dir",
        data,
        "--chunk-size",
        "65536",
        "--no-load-check",
        "--json",
        check=True,
    ).json()
    assert again["chunks_reused"] > 0  # chunks written before the kill are reused
    assert run("verify", "--model", "cam", "--data-dir", data, "--json", check=True).json()["ok"]
    assert list((data / "store" / "tmp").iterdir()) == []


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    mnt = Path(tempfile.mkdtemp(prefix="edgemesh-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        # a node a failed test left running may still hold it: detach it lazily then
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.slow
def test_disk_full_during_publish_keeps_store_consistent(
    run: Run, key: Path, tmp_path: Path
) -> None:
    v1, v2, v2_small = tmp_path / "v1.onnx", tmp_path / "v2.onnx", tmp_path / "v2s.onnx"
    write_example_model(v1, size_bytes=2 * 1024 * 1024, seed=1)
    write_example_model(v2, size_bytes=12 * 1024 * 1024, seed=2)
    write_example_model(v2_small, size_bytes=2 * 1024 * 1024, seed=3)
    with _tmpfs("8m") as mnt:
        data = mnt / "data"
        run(
            "publish",
            v1,
            "--model",
            "cam",
            "--version",
            "1",
            "--key",
            key,
            "--data-dir",
            data,
            "--chunk-size",
            "65536",
            check=True,
        )
        used_before = _used(mnt)

        res = run(
            "publish",
            v2,
            "--model",
            "cam",
            "--version",
            "2",
            "--key",
            key,
            "--data-dir",
            data,
            "--chunk-size",
            "65536",
        )
        assert res.returncode == 1
        assert "disk full" in res.error_line
        assert "nothing partial was kept" in res.error_line

        # previous release intact, no trace of the failed one, space given back
        listing = run("releases", "--data-dir", data, "--json", check=True).json()
        assert [(r["model"], r["version"]) for r in listing["releases"]] == [("cam", 1)]
        assert run("verify", "--model", "cam", "--data-dir", data).returncode == 0
        assert list((data / "store" / "tmp").iterdir()) == []
        assert _used(mnt) <= used_before + 64 * 1024

        # with room, publishing the next version succeeds
        run(
            "publish",
            v2_small,
            "--model",
            "cam",
            "--version",
            "2",
            "--key",
            key,
            "--data-dir",
            data,
            "--chunk-size",
            "65536",
            check=True,
        )
        assert run("verify", "--model", "cam", "--data-dir", data, "--json").json()["version"] == 2
