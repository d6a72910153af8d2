"""``edgemesh demo``: the whole system on one machine, with nothing else installed.

A seed and three joining nodes run as separate ``edgemesh`` processes on loopback
(mDNS bound to 127.0.0.1, a mesh name of their own so other meshes on this machine
are ignored).  The seed publishes a generated model; the nodes discover each other,
hear the signed announcement, fetch the chunks from the seed *and from each other*,
verify, activate, and answer an inference request.  Then the demo prints what
happened per node and removes everything it created.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import trio
from rich.console import Console
from rich.table import Table

from mesh.cli._common import Failed, _human_bytes, cli
from mesh.crypto import PrivateKey
from mesh.datadir import DataDir
from mesh.modelgen import write_example_model

#: How long the demo waits for every node to activate before giving up.
DEMO_TIMEOUT = 180.0


class _Proc:
    def __init__(self, name: str, data_dir: Path, args: list[str], log: Path) -> None:
        self.name = name
        self.dd = DataDir(data_dir)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mesh", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.api: tuple[str, int] | None = None
        self.done_at: float | None = None
        self.verified_at: float | None = None
        self.status: dict[str, Any] = {}

    def find_api(self) -> tuple[str, int] | None:
        if self.api is None:
            info = self.dd.running_node()
            if info and info.get("api") and info.get("pid") == self.proc.pid:
                from mesh.runtime.v2client import parse_api

                self.api = parse_api(str(info["api"]))
        return self.api

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise Failed(f"{self.name} exited (status {self.proc.returncode}): " + " | ".join(tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


async def _status(p: _Proc) -> dict[str, Any] | None:
    from mesh.cli.node import fetch_status
    from mesh.errors import EdgemeshError

    api = p.find_api()
    if api is None:
        return None
    try:
        return await fetch_status(*api)
    except EdgemeshError:
        return None


async def _watch(procs: list[_Proc], seed: _Proc, model: str, console: Console) -> float:
    start = time.monotonic()
    shown: set[str] = set()
    while True:
        for p in procs:
            p.check_alive()
            st = await _status(p)
            if st is None:
                continue
            p.status = st
            m = st.get("models", {}).get(model)
            rels = (m or {}).get("releases", [])
            if p.verified_at is None and any(
                r["chunks_verified"] == r["chunks_total"] for r in rels
            ):
                p.verified_at = time.monotonic() - start
            if m and m.get("active_version") == 1 and p.done_at is None:
                p.done_at = time.monotonic() - start
            if p.name not in shown and m and m.get("releases"):
                shown.add(p.name)
                console.print(f"  {p.name}: heard of {model} v1, fetching")
        seed.check_alive()
        if all(p.done_at is not None for p in procs):
            st = await _status(seed)
            if st is not None:
                seed.status = st
            return time.monotonic() - start
        if time.monotonic() - start > DEMO_TIMEOUT:
            raise Failed(f"the nodes did not all activate the model within {DEMO_TIMEOUT:.0f} s")
        await trio.sleep(0.1)


async def _query(p: _Proc, model: str, width: int) -> str:
    from mesh.runtime.v2client import V2Client

    api = p.find_api()
    assert api is not None
    x = np.linspace(-1, 1, width, dtype=np.float32).reshape(1, width)
    async with V2Client(*api) as client:
        version, outputs = await client.infer(model, {"x": x})
    y = outputs["y"]
    return f"v{version}, y{list(y.shape)}"


@cli.command()
@click.option(
    "--nodes",
    type=click.IntRange(1, 8),
    default=3,
    show_default=True,
    help="Joining nodes besides the seed.",
)
@click.option(
    "--size-mb",
    type=click.FloatRange(1, 512),
    default=48,
    show_default=True,
    help="Size of the generated model.",
)
@click.option("--keep", is_flag=True, help="Keep the scratch directory (logs, stores).")
def demo(nodes: int, size_mb: float, keep: bool) -> None:
    """A seed and three nodes on loopback: distribute, verify, activate, query."""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100)
    root = Path(tempfile.mkdtemp(prefix="edgemesh-demo-"))
    mesh = f"demo-{secrets.token_hex(3)}"
    procs: list[_Proc] = []
    try:
        key = PrivateKey.generate()
        key_file = root / "publisher.key"
        key.save(key_file)
        model_file = root / "demo.onnx"
        width = write_example_model(model_file, size_bytes=int(size_mb * 1024 * 1024))
        size = model_file.stat().st_size
        console.print(
            f"edgemesh demo in {root}: mesh {mesh}, model 'demo' v1 "
            f"({_human_bytes(size)}, 1 MiB chunks), a seed and {nodes} nodes on 127.0.0.1"
        )
        common = [
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--mdns-interface",
            "127.0.0.1",
            "--mesh",
            mesh,
        ]
        seed = _Proc(
            "seed",
            root / "seed",
            [
                "seed",
                str(model_file),
                "--model",
                "demo",
                "--version",
                "1",
                "--key",
                str(key_file),
                "--data-dir",
                str(root / "seed"),
                *common,
            ],
            root / "seed.log",
        )
        for i in range(1, nodes + 1):
            procs.append(
                _Proc(
                    f"node{i}",
                    root / f"node{i}",
                    [
                        "join",
                        "--data-dir",
                        str(root / f"node{i}"),
                        "--trust",
                        f"{key_file}.pub",
                        *common,
                    ],
                    root / f"node{i}.log",
                )
            )
        console.print(
            f"  started seed (pid {seed.proc.pid}) and "
            + ", ".join(f"{p.name} (pid {p.proc.pid})" for p in procs)
        )
        total = trio.run(_watch, procs, seed, "demo", console)
        answers = [trio.run(_query, p, "demo", width) for p in procs]
        _report(console, seed, procs, size, total, answers)
    finally:
        for p in [*procs, *([seed] if "seed" in locals() else [])]:
            p.stop()
        if keep:
            console.print(f"kept {root} (logs: *.log)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _report(
    console: Console,
    seed: _Proc,
    procs: list[_Proc],
    size: int,
    total: float,
    answers: list[str],
) -> None:
    seed_id = seed.status.get("peer_id", "")
    console.print(
        f"every node verified, activated and queried model 'demo' v1 ({_human_bytes(size)}) "
        f"within {total:.1f} s of starting:"
    )
    table = Table()
    for col in (
        "node",
        "verified",
        "active",
        "from seed",
        "from peers",
        "to peers",
        "inference",
    ):
        table.add_column(col, justify="left" if col in ("node", "inference") else "right")
    for p, answer in zip(procs, answers, strict=True):
        traffic = p.status.get("peer_traffic", {})
        from_seed = traffic.get(seed_id, {}).get("from", 0)
        down = p.status.get("bytes_downloaded", 0)
        table.add_row(
            p.name,
            f"{p.verified_at:.1f} s" if p.verified_at is not None else "-",
            f"{p.done_at:.1f} s" if p.done_at is not None else "-",
            _human_bytes(from_seed),
            _human_bytes(max(down - from_seed, 0)),
            _human_bytes(p.status.get("bytes_uploaded", 0)),
            answer,
        )
    console.print(table)
    up = seed.status.get("bytes_uploaded", 0)
    console.print(
        f"the seed uploaded {_human_bytes(up)} = {up / size:.2f} x the model for "
        f"{len(procs)} nodes (naive: {len(procs)}.00 x); the rest moved peer to peer"
    )
