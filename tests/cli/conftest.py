"""Fixtures for end-to-end tests of the ``edgemesh`` command in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mesh.modelgen import write_example_model


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one stderr line, got: {self.stderr!r}"
        assert "Traceback" not in self.stderr
        return lines[0]


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGEMESH_HOME"] = str(home)
    env["PYTHONWARNINGS"] = "error"
    return env


Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def run(tmp_path: Path, home: Path) -> Run:
    """Run ``edgemesh ARGS...`` as a real process in ``tmp_path``."""

    def _run(*args: str | Path, check: bool = False) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "mesh", *map(str, args)],
            cwd=tmp_path,
            env=cli_env(home),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check:
            assert res.returncode == 0, res.stderr
        return res

    return _run


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    write_example_model(path, size_bytes=256 * 1024, seed=1)
    return path


@pytest.fixture
def key(tmp_path: Path, run: Run) -> Path:
    path = tmp_path / "publisher.key"
    run("keygen", "--out", path, check=True)
    return path
