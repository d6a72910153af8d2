"""Benchmark: publish throughput and peak memory on a large generated model.

What it measures: ``mesh.publish.publish`` of a generated ONNX model (1 GiB by default)
into a fresh :class:`~mesh.store.fs.FsStore`, against a plain single-pass
``hashlib.sha256`` over the same file (1 MiB reads) in the same run.  Publishing hashes
the file twice (whole-file and per-chunk) and writes and fsyncs every chunk, so the
ratio says how close the pipeline comes to a bare hash of the file.

How: the model is generated once into a temp dir (by a child process, so the parent
stays small).  Then, for each round, the baseline hash runs in this process and the
publish runs in a child process (this script with ``--child publish``) into a fresh
store, with the model hot in the page cache for both.  The child times only the
``publish()`` call and reports its own ``ru_maxrss`` (whole process: imports, key
generation and publish; what a ``ru_maxrss`` inherits across ``exec`` is this small
parent's, a few MB); a second kind of child (``--child idle``) imports the same modules
and does nothing, which gives the baseline RSS the peak should be read against.
Reported: medians over the rounds of each throughput and of the per-round ratio, and
the maximum peak RSS.  The machine has to be otherwise idle: publish needs two cores,
the baseline one, so load from other processes lowers the ratio (``load_avg_1m``
records it at start and end).  Every round's store is kept until the end, so the work dir
needs ``rounds + 1`` times the model size: deleting a store just before the next
round's publish would slow that publish's file creation (ext4 without a journal skips
over recently deleted inodes when it allocates new ones), which is not what a publish
normally faces.  For the same reason, back-to-back runs may measure a little lower.

Run (from the repository root)::

    .venv/bin/python simulations/bench_publish.py [--size-mb 1024] [--rounds 3]
        [--chunk-kib 1024] [--work-dir DIR] [--seed 0]

Progress goes to stderr; the last stdout line is one JSON object with ``model_bytes``,
``chunk_bytes``, ``publish_mb_s``, ``sha256_mb_s``, ``ratio``, ``peak_rss_mb``,
``idle_rss_mb``, ``rounds``, ``load_avg_1m``, the per-round figures (with the CPU
seconds the publish used), ``targets`` and ``pass``.
Targets (the issue): ratio >= 0.5 and peak RSS <= 100 MB.  Exit status 0 if both hold,
1 if not.  MB here means 10**6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.5
TARGET_PEAK_RSS_MB = 100.0
_READ_SIZE = 1 << 20
_MB = 1_000_000


def _log(msg: str) -> None:
    print(f"[bench_publish] {msg}", file=sys.stderr, flush=True)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _MB  # Linux: KiB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- children (each prints one JSON line on stdout) ---


def _child_generate(model: Path, size_bytes: int, seed: int) -> dict[str, Any]:
    from mesh.modelgen import write_example_model

    width = write_example_model(model, size_bytes=size_bytes, seed=seed)
    return {"width": width, "bytes": model.stat().st_size}


def _import_publish_modules() -> None:
    import mesh.crypto
    import mesh.publish
    import mesh.store.fs  # noqa: F401 -- imported for their memory cost only


def _child_idle() -> dict[str, Any]:
    _import_publish_modules()
    return {"maxrss_mb": _maxrss_mb()}


def _child_publish(model: Path, store_dir: Path, chunk_size: int) -> dict[str, Any]:
    _import_publish_modules()
    from mesh.crypto import PrivateKey
    from mesh.publish import publish
    from mesh.store.fs import FsStore

    key = PrivateKey.generate()
    with FsStore(store_dir) as store:
        rss_before = _maxrss_mb()
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        result = publish(
            store,
            model,
            mesh="bench",
            model="bench-model",
            version=1,
            signer=key,
            created=1_700_000_000,  # fixed: the benchmark needs no clock
            chunk_size=chunk_size,
            load_check=None,
        )
        seconds = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "bytes_hashed": result.bytes_hashed,
        "chunks_new": result.chunks_new,
        "chunks_reused": result.chunks_reused,
        "maxrss_before_mb": rss_before,
        "maxrss_mb": _maxrss_mb(),
    }


def _run_child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit status {proc.returncode}")
    lines = proc.stdout.decode().strip().splitlines()
    out: dict[str, Any] = json.loads(lines[-1])
    return out


# -- the baseline ---


def sha256_file(path: Path) -> tuple[bytes, float]:
    """Plain single-pass SHA-256 of ``path`` with 1 MiB reads; (digest, seconds)."""
    h = hashlib.sha256()
    buf = bytearray(_READ_SIZE)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest(), time.perf_counter() - t0


# -- driver ---


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (default 1024)")
    p.add_argument("--rounds", type=int, default=3, help="baseline/publish rounds (default 3)")
    p.add_argument("--chunk-kib", type=int, default=1024, help="chunk size in KiB (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="model generator seed")
    p.add_argument("--work-dir", type=Path, default=None, help="where to make the temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    p.add_argument("--child", choices=["generate", "idle", "publish"], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _child_main(a: argparse.Namespace) -> int:
    if a.child == "generate":
        out = _child_generate(a.model, a.size_mb << 20, a.seed)
    elif a.child == "idle":
        out = _child_idle()
    else:
        out = _child_publish(a.model, a.store, a.chunk_kib << 10)
    print(json.dumps(out), flush=True)
    return 0


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    chunk_bytes = a.chunk_kib << 10
    if a.work_dir is not None:
        a.work_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_publish.", dir=a.work_dir))
    _log(f"work dir {tmp}")
    try:
        model = tmp / "model.onnx"
        t0 = time.perf_counter()
        gen_args = ["--model", str(model), "--size-mb", str(a.size_mb), "--seed", str(a.seed)]
        gen = _run_child(["--child", "generate", *gen_args])
        model_bytes = int(gen["bytes"])
        _log(
            f"generated {model_bytes / _MB:.0f} MB model (width {gen['width']}) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        idle = _run_child(["--child", "idle"])
        _log(f"idle child (imports only): maxrss {idle['maxrss_mb']:.1f} MB")
        sha256_file(model)  # warm the page cache (the generator's fsync may have left it cold)

        per_round: list[dict[str, float]] = []
        kib = str(a.chunk_kib)
        for i in range(a.rounds):
            _, sha_s = sha256_file(model)
            sha_mb_s = model_bytes / _MB / sha_s
            store = str(tmp / f"store{i}")
            pub = _run_child(
                ["--child", "publish", "--model", str(model), "--store", store, "--chunk-kib", kib]
            )
            if pub["bytes_hashed"] != model_bytes:
                raise SystemExit(f"publish hashed {pub['bytes_hashed']} of {model_bytes} bytes")
            pub_mb_s = model_bytes / _MB / float(pub["seconds"])
            r = {
                "sha256_mb_s": round(sha_mb_s, 1),
                "publish_mb_s": round(pub_mb_s, 1),
                "ratio": round(pub_mb_s / sha_mb_s, 3),
                "peak_rss_mb": round(float(pub["maxrss_mb"]), 1),
                "publish_cpu_s": round(float(pub["cpu_s"]), 2),
            }
            per_round.append(r)
            _log(
                f"round {i + 1}/{a.rounds}: sha256 {sha_mb_s:.0f} MB/s, publish "
                f"{pub_mb_s:.0f} MB/s ({pub['seconds']:.2f}s, cpu {pub['cpu_s']:.2f}s, "
                f"{pub['chunks_new']} chunks), "
                f"ratio {r['ratio']:.3f}, publish maxrss {pub['maxrss_mb']:.1f} MB "
                f"(before publish() {pub['maxrss_before_mb']:.1f} MB)"
            )
    finally:
        if a.keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    load_end = os.getloadavg()[0]
    _log(f"this process: maxrss {_maxrss_mb():.1f} MB; load {load_start:.2f} -> {load_end:.2f}")
    publish_mb_s = statistics.median(r["publish_mb_s"] for r in per_round)
    sha_mb_s = statistics.median(r["sha256_mb_s"] for r in per_round)
    ratio = statistics.median(r["ratio"] for r in per_round)
    peak = max(r["peak_rss_mb"] for r in per_round)
    return {
        "model_bytes": model_bytes,
        "chunk_bytes": chunk_bytes,
        "publish_mb_s": round(publish_mb_s, 1),
        "sha256_mb_s": round(sha_mb_s, 1),
        "ratio": round(ratio, 3),
        "peak_rss_mb": round(peak, 1),
        "idle_rss_mb": round(float(idle["maxrss_mb"]), 1),
        "rounds": a.rounds,
        "load_avg_1m": [round(load_start, 2), round(load_end, 2)],  # others' load skews it
        "per_round": per_round,
        "targets": {"ratio": TARGET_RATIO, "peak_rss_mb": TARGET_PEAK_RSS_MB},
        "pass": ratio >= TARGET_RATIO and peak <= TARGET_PEAK_RSS_MB,
    }


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    if a.child is not None:
        return _child_main(a)
    result = run(a)
    print(json.dumps(result), flush=True)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
