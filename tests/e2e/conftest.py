"""End-to-end harness: real ``edgemesh`` processes on loopback.

Every process is started here and ended here, by PID (SIGTERM, then SIGKILL).  mDNS is
bound to 127.0.0.1 and each test uses a mesh name of its own, so tests never see each
other (or anything on the machine's real interfaces).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mesh.datadir import DataDir
from mesh.modelgen import write_example_model

#: Generous bound for "eventually" in these tests (not a speed assertion: a loaded
#: 2-core CI machine runs six node processes at once).
WAIT = 120.0


class Node:
    def __init__(
        self,
        name: str,
        root: Path,
        args: list[str],
        env: dict[str, str],
        data_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir or root / name
        self.log = root / f"{name}.log"
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mesh", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def info(self, timeout: float = WAIT) -> dict[str, Any]:
        """node.json of this process, once it has its API up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            info = DataDir(self.data_dir).running_node()
            if info and info.get("pid") == self.pid and info.get("api"):
                return info
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not come up; log:\n{self.text()}")

    def addr(self) -> str:
        return str(self.info()["addrs"][0])

    def status(self) -> dict[str, Any]:
        from mesh.cli.node import fetch_status
        from mesh.runtime.v2client import parse_api

        host, port = parse_api(str(self.info()["api"]))
        return trio.run(fetch_status, host, port)

    def release(self, model: str, version: int = 1) -> dict[str, Any] | None:
        for r in self.status()["models"].get(model, {}).get("releases", []):
            if r["version"] == version:
                return dict(r)
        return None

    def wait_for(
        self, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                st = self.status()
            except Exception:  # noqa: BLE001 -- API not up yet / restarting
                time.sleep(0.1)
                continue
            if pred(st):
                return st
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name}: timed out waiting for {what}; status {json.dumps(st)[:800]}\n"
            f"log:\n{self.text()}"
        )

    def wait_verified(self, model: str, version: int = 1, **kw: Any) -> dict[str, Any]:
        def done(st: dict[str, Any]) -> bool:
            for r in st["models"].get(model, {}).get("releases", []):
                if r["version"] == version and r["chunks_verified"] == r["chunks_total"]:
                    return True
            return False

        return self.wait_for(f"{model} v{version} verified", done, **kw)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.proc.returncode}; log:\n{self.text()}"
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mesh = f"t-{secrets.token_hex(4)}"
        self.nodes: list[Node] = []
        self.env = dict(os.environ, EDGEMESH_HOME=str(root / "home"))
        self.env.pop("PYTHONWARNINGS", None)
        self.key = root / "publisher.key"
        self.run("keygen", "--out", str(self.key))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def model(self, name: str = "model.onnx", size_mb: float = 8, seed: int = 1) -> Path:
        path = self.root / name
        write_example_model(path, size_bytes=int(size_mb * 1024 * 1024), seed=seed)
        return path

    def common(self, *, mdns: bool) -> list[str]:
        net = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--mesh", self.mesh]
        return [*net, "--mdns-interface", "127.0.0.1"] if mdns else [*net, "--no-mdns"]

    def seed(
        self,
        model: Path,
        *extra: str,
        name: str = "seed",
        version: int = 1,
        key: Path | None = None,
        mdns: bool = True,
        model_name: str = "m",
    ) -> Node:
        args = [
            "seed",
            str(model),
            "--model",
            model_name,
            "--version",
            str(version),
            "--key",
            str(key or self.key),
            "--data-dir",
            str(self.root / name),
            *self.common(mdns=mdns),
            *extra,
        ]
        node = Node(name, self.root, args, self.env)
        self.nodes.append(node)
        return node

    def join(self, name: str, *extra: str, mdns: bool = True, data_dir: Path | None = None) -> Node:
        dd = data_dir or self.root / name
        args = [
            "join",
            "--data-dir",
            str(dd),
            "--trust",
            f"{self.key}.pub",
            *self.common(mdns=mdns),
            *extra,
        ]
        node = Node(name, self.root, args, self.env, data_dir=dd)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for n in self.nodes:  # all at once, then wait for each
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
