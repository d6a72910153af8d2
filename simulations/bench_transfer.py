"""Benchmark: chunk-protocol transfer between two processes against a raw libp2p stream.

What it measures: a seed node (``open_node``, ``super_seed=True``, holding a published
release) and a joining node (``open_node``, fresh data dir, the seed as its static
peer) run in two processes on loopback; the joiner fetches the whole release (every
chunk hashed, written, fsynced).  In the same run, alternating with it, a raw
py-libp2p TCP + Noise + Yamux stream (the host of ``mesh.runtime.host.open_host``,
one stream, 1 MiB writes) pushes the same number of bytes between two processes.

Both are timed on the receiving process, from the moment it starts dialling the
sender (connect + handshake included in both) to the end: EOF of the raw stream, or
the ``on_complete`` callback (all chunks verified and stored) of the joiner.  Reported:
medians over the rounds of both rates and of the per-round ratio, each receiver's
peak RSS (``ru_maxrss``) and the CPU seconds of every process (senders: from the moment
they listen; also each trio thread alone).  ``cpu_ratio`` is CPU per byte of the raw
pair over that of the chunk pair: on a saturated 2-core box the rate ratio tends to
it, and it is much less sensitive to other load than the rates are.  With ``--rss-gib N``
(default 1) one more chunk transfer of an N GiB release measures the joiner's peak
RSS (the target is about memory, not speed).

The seed's chunk files are read once before the rounds (page cache warm, as for a
seed that has served them before).  Every round's joiner data dir is kept until the
end: on an ext4 without a journal (this machine's) a file created within a minute or
so of mass deletions walks past every recently freed inode, so deleting a round's
chunks made the next round's chunk files ~0.7 CPU-s dearer (ADR 0006, "The disk");
leave several minutes between runs for the same reason.  The work dir therefore needs
room for every round plus the RSS run (about 5.5 GiB with the defaults).  The joiner
writes with ``O_DIRECT`` and fsyncs each chunk, so a round leaves nothing dirty for the
next one to flush.
The machine is shared, so ``load_avg_1m`` is recorded at start and end: compare
ratios, not absolute rates, and only within one run.

Run (from the repository root)::

    .venv/bin/python simulations/bench_transfer.py [--size-mib 512] [--rounds 3]
        [--rss-gib 1] [--work-dir DIR] [--profile DIR]
        [--per-peer-requests N] [--max-requests N] [--rare-requests N]
        [--reveal-per-peer N] [--upload-slots N] [--upload-queue-per-peer N]
        [--upload-queue-total N] [--pipeline-time S] [--max-pipeline N]
        [--have-interval S] [--no-super-seed]

Progress goes to stderr; the last stdout line is one JSON object with ``raw_mb_s``,
``chunk_mb_s``, ``ratio``, ``receiver_peak_rss_mb``, ``rounds``, ``load_avg_1m``,
``settings`` (the NodeConfig fields of both sides), per-round figures and ``pass``.
Targets (issue 4): ratio >= 0.8 and receiver peak RSS (1 GiB release) <= 200 MB.
Exit status 0 if both hold, 1 if not.  MB here means 10**6 bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

TARGET_RATIO = 0.8
TARGET_PEAK_RSS_MB = 200.0
_MB = 1_000_000
_WRITE = 1 << 20
_RAW_PROTO = "/edgemesh-bench/raw/1.0.0"
_KEY_SEED = b"edgemesh-bench-transfer-key-0000"
_MODEL = "bench-model"


def _log(msg: str) -> None:
    print(f"[bench_transfer] {msg}", file=sys.stderr, flush=True)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _MB  # Linux: KiB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _main_thread_cpu_s() -> float:
    """CPU seconds of this process's main (trio) thread, from /proc (0.0 if absent)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# -- settings ---


#: NodeConfig fields the benchmark can set from the command line (--per-peer-requests ...)
_NODE_KNOBS: dict[str, type] = {
    "per_peer_requests": int,
    "max_requests": int,
    "rare_requests": int,
    "reveal_per_peer": int,
    "upload_slots": int,
    "upload_queue_per_peer": int,
    "upload_queue_total": int,
    "pipeline_time": float,
    "max_pipeline": int,
    "have_interval": float,
}


def _configs(a: argparse.Namespace) -> tuple[Any, Any]:
    """(seed NodeConfig, joiner NodeConfig) from the command line."""
    from mesh.core.node import NodeConfig

    common: dict[str, Any] = {}
    for name in _NODE_KNOBS:
        v = getattr(a, name)
        if v is not None:
            common[name] = v
    return NodeConfig(super_seed=not a.no_super_seed, **common), NodeConfig(**common)


_TUNING = ("super_seed", *_NODE_KNOBS)


def _settings(seed_cfg: Any, join_cfg: Any) -> dict[str, Any]:
    """The NodeConfig fields that shape one transfer, and the runtime's constants."""
    from mesh.runtime import chunks, driver

    seed, join = asdict(seed_cfg), asdict(join_cfg)
    return {
        "seed": {k: seed[k] for k in _TUNING},
        "joiner": {k: join[k] for k in _TUNING},
        "runtime": {
            k: getattr(m, k)
            for m, names in (
                (chunks, ("READ_SIZE", "DATA_READ_PAUSE", "PAUSE_MIN_WINDOW", "DATA_WRITE_SIZE")),
                (driver, ("STORE_THREADS",)),
            )
            for k in names
            if hasattr(m, k)
        },
    }


def _trust() -> tuple[Any, Any]:
    from mesh.core.trust import TrustedKey, TrustStore
    from mesh.crypto import PrivateKey

    key = PrivateKey.derive(_KEY_SEED)
    trust = TrustStore()
    trust.add(TrustedKey(key.public_key, ("*",), "bench"))
    return key, trust


async def _wait_stdin_eof() -> None:
    import trio

    async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
        while await stdin.receive_some():
            pass


# -- children ---


async def _child_raw_send(a: argparse.Namespace) -> dict[str, Any]:
    """Listen; push ``a.bytes`` bytes on every stream opened to us; exit on stdin EOF."""
    from libp2p.custom_types import TProtocol

    from mesh.runtime.host import concrete_listen_addrs, full_addrs, load_identity, open_host

    kp = load_identity(Path(a.data) / "identity")
    block = os.urandom(_WRITE)
    total = int(a.bytes)

    async def handler(stream: Any) -> None:
        left = total
        while left > 0:
            n = min(left, _WRITE)
            await stream.write(block if n == _WRITE else block[:n])
            left -= n
        await stream.close()

    async with open_host(kp, concrete_listen_addrs(["/ip4/127.0.0.1/tcp/0"])) as host:
        host.set_stream_handler(TProtocol(_RAW_PROTO), handler)
        _emit({"addrs": full_addrs(host)})
        cpu0, main0 = _cpu_s(), _main_thread_cpu_s()
        await _wait_stdin_eof()
    return {
        "cpu_s": _cpu_s() - cpu0,
        "main_cpu_s": _main_thread_cpu_s() - main0,
        "maxrss_mb": _maxrss_mb(),
    }


async def _child_raw_recv(a: argparse.Namespace) -> dict[str, Any]:
    """Dial the raw sender, read its stream to EOF; time from dial to EOF."""
    import multiaddr
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from mesh.runtime.host import concrete_listen_addrs, load_identity, open_host

    kp = load_identity(Path(a.data) / "identity")
    async with open_host(kp, concrete_listen_addrs(["/ip4/127.0.0.1/tcp/0"])) as host:
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.peer))
        cpu0, main0 = _cpu_s(), _main_thread_cpu_s()
        t0 = time.perf_counter()
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [TProtocol(_RAW_PROTO)])
        got = 0
        while True:
            try:
                data = await stream.read(_WRITE)
            except Exception:  # noqa: BLE001 -- StreamEOF ends the transfer
                break
            if not data:
                break
            got += len(data)
        seconds = time.perf_counter() - t0
        cpu, main = _cpu_s() - cpu0, _main_thread_cpu_s() - main0
    if got != int(a.bytes):
        raise SystemExit(f"raw stream delivered {got} bytes, expected {a.bytes}")
    return {
        "seconds": seconds,
        "bytes": got,
        "cpu_s": cpu,
        "main_cpu_s": main,
        "maxrss_mb": _maxrss_mb(),
    }


async def _child_seed(a: argparse.Namespace) -> dict[str, Any]:
    """Run a seed node on the published store; exit on stdin EOF."""

    from mesh.core.announce import Announcement
    from mesh.datadir import DataDir
    from mesh.runtime.node import NodeSettings, open_node

    key, trust = _trust()
    seed_cfg, _ = _configs(a)
    dd = DataDir(Path(a.data))
    st = dd.open_store()
    try:
        rel = st.find_release(_MODEL)
    finally:
        st.close()
    ann = Announcement.for_release(rel, key).encode()
    settings = NodeSettings(
        dd,
        trust,
        seed_cfg,
        listen=["/ip4/127.0.0.1/tcp/0"],
        mdns=False,
        announcements={rel.manifest.release_id: ann},
    )
    async with open_node(settings) as h:
        _emit({"addrs": h.addrs})
        cpu0, main0 = _cpu_s(), _main_thread_cpu_s()
        await _wait_stdin_eof()
        up = h.status()["bytes_uploaded"]
    return {
        "cpu_s": _cpu_s() - cpu0,
        "main_cpu_s": _main_thread_cpu_s() - main0,
        "maxrss_mb": _maxrss_mb(),
        "bytes_uploaded": up,
    }


async def _child_join(a: argparse.Namespace) -> dict[str, Any]:
    """Join with the seed as static peer; time from dialling to the release complete."""
    import trio

    from mesh.datadir import DataDir
    from mesh.ids import ReleaseId
    from mesh.runtime.node import NodeSettings, open_node

    _, trust = _trust()
    _, join_cfg = _configs(a)
    done = trio.Event()
    t_done = 0.0

    async def on_complete(rid: ReleaseId, model: str, version: int) -> None:
        nonlocal t_done
        t_done = time.perf_counter()
        done.set()

    settings = NodeSettings(
        DataDir(Path(a.data)),
        trust,
        join_cfg,
        listen=["/ip4/127.0.0.1/tcp/0"],
        mdns=False,
        peers=[a.peer],
    )
    async with open_node(settings, on_complete=on_complete) as h:
        cpu0, main0 = _cpu_s(), _main_thread_cpu_s()
        t0 = time.perf_counter()
        with trio.fail_after(600):
            await done.wait()
        cpu, main = _cpu_s() - cpu0, _main_thread_cpu_s() - main0
        st = h.status()
    rel = st["models"][_MODEL]["releases"][0]
    if rel["chunks_verified"] != rel["chunks_total"]:
        raise SystemExit(f"joiner finished with {rel['chunks_verified']}/{rel['chunks_total']}")
    return {
        "seconds": t_done - t0,
        "bytes": st["bytes_downloaded"],
        "cpu_s": cpu,
        "main_cpu_s": main,
        "maxrss_mb": _maxrss_mb(),
        "chunks": rel["chunks_total"],
        "wasted_bytes": st["wasted_bytes"],
    }


_CHILDREN = {
    "raw-send": _child_raw_send,
    "raw-recv": _child_raw_recv,
    "seed": _child_seed,
    "join": _child_join,
}


def _child_main(a: argparse.Namespace) -> int:
    import logging

    import trio

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fn = _CHILDREN[a.child]
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        out = trio.run(fn, a)
        prof.disable()
        prof.dump_stats(a.profile)
    else:
        out = trio.run(fn, a)
    _emit(out)
    return 0


# -- parent ---


class _Child:
    """A child process whose stdout lines are JSON objects; stdin EOF asks it to stop."""

    def __init__(self, args: list[str], profile: Path | None) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), *args]
        if profile is not None and profile.suffix == ".prof":
            cmd += ["--profile", str(profile)]
        elif profile is not None:  # py-spy: every thread, native frames, collapsed stacks
            spy = Path(sys.executable).with_name("py-spy")
            spy_args = ["record", "-t", "-n", "-r", "250", "-f", "raw", "-o", str(profile)]
            cmd = [str(spy), *spy_args, "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def line(self) -> dict[str, Any]:
        out: IO[bytes] | None = self.proc.stdout
        assert out is not None
        while True:
            text = out.readline()
            if not text:
                self.proc.wait()
                raise SystemExit(f"child {self.proc.args!r} exited ({self.proc.returncode})")
            if text.startswith(b"{"):  # a profiler may print its own lines
                obj: dict[str, Any] = json.loads(text)
                return obj

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out = self.line()
        assert self.proc.stdout is not None
        self.proc.stdout.read()
        if self.proc.wait(timeout=120) != 0:
            raise SystemExit(f"child {self.proc.args!r} failed ({self.proc.returncode})")
        return out


def _node_args(a: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for name in _NODE_KNOBS:
        v = getattr(a, name)
        if v is not None:
            out += [f"--{name.replace('_', '-')}", str(v)]
    if a.no_super_seed:
        out.append("--no-super-seed")
    return out


def _prepare_seed(tmp: Path, size_bytes: int, chunk_size: int, tag: str) -> tuple[Path, int]:
    """Generate a model of ``size_bytes``, publish it into a seed data dir; (dir, bytes)."""
    from mesh.datadir import DataDir
    from mesh.modelgen import write_example_model
    from mesh.publish import publish

    key, _ = _trust()
    model = tmp / f"model-{tag}.onnx"
    t0 = time.perf_counter()
    write_example_model(model, size_bytes=size_bytes)
    seed_dir = tmp / f"seed-{tag}"
    st = DataDir(seed_dir).open_store()
    try:
        res = publish(
            st,
            model,
            mesh="default",
            model=_MODEL,
            version=1,
            signer=key,
            created=1_800_000_000,
            chunk_size=chunk_size,
            load_check=None,
        )
    finally:
        st.close()
    total = model.stat().st_size
    model.unlink()
    # warm the page cache with the chunk files, as for a seed that served them before
    for p in (seed_dir / "store" / "chunks").rglob("*"):
        if p.is_file():
            p.read_bytes()
    _log(
        f"published {total / _MB:.0f} MB ({res.release.manifest.release_id.short()}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return seed_dir, total


def _cpu_per_byte(res: dict[str, Any]) -> float:
    """CPU seconds of both processes per byte moved."""
    return float(res["cpu_s"] + res["sender_cpu_s"]) / float(res["bytes"])


def _cpu_text(res: dict[str, Any]) -> str:
    return (
        f"{res['cpu_s']:.1f}+{res['sender_cpu_s']:.1f} "
        f"[{res['main_cpu_s']:.1f}+{res['sender_main_cpu_s']:.1f}]"
    )


def _round_raw(a: argparse.Namespace, tmp: Path, total: int, r: int) -> dict[str, Any]:
    prof = a.profile_dir
    send = _Child(
        ["--child", "raw-send", "--data", str(tmp / "raw-send"), "--bytes", str(total)],
        None if prof is None else prof / f"raw-send-{r}{a.profile_ext}",
    )
    try:
        addr = send.line()["addrs"][0]
        recv = _Child(
            [
                "--child",
                "raw-recv",
                "--data",
                str(tmp / "raw-recv"),
                "--bytes",
                str(total),
                "--peer",
                addr,
            ],
            None if prof is None else prof / f"raw-recv-{r}{a.profile_ext}",
        )
        res = recv.finish()
    finally:
        sres = send.finish()
    res["sender_cpu_s"] = sres["cpu_s"]
    res["sender_main_cpu_s"] = sres["main_cpu_s"]
    res["mb_s"] = res["bytes"] / res["seconds"] / _MB
    return res


def _round_chunks(
    a: argparse.Namespace, tmp: Path, seed_dir: Path, total: int, tag: str
) -> dict[str, Any]:
    prof = a.profile_dir
    join_dir = tmp / f"join-{tag}"
    seed = _Child(
        ["--child", "seed", "--data", str(seed_dir), *_node_args(a)],
        None if prof is None else prof / f"seed-{tag}{a.profile_ext}",
    )
    try:
        addr = seed.line()["addrs"][0]
        join = _Child(
            ["--child", "join", "--data", str(join_dir), "--peer", addr, *_node_args(a)],
            None if prof is None else prof / f"join-{tag}{a.profile_ext}",
        )
        res = join.finish()
    finally:
        sres = seed.finish()
    if res["bytes"] < total:
        raise SystemExit(f"joiner downloaded {res['bytes']} bytes, expected {total}")
    res["sender_cpu_s"] = sres["cpu_s"]
    res["sender_main_cpu_s"] = sres["main_cpu_s"]
    res["seed_uploaded_bytes"] = sres["bytes_uploaded"]
    res["mb_s"] = total / res["seconds"] / _MB
    return res


def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if a.work_dir is not None:
        a.work_dir.mkdir(parents=True, exist_ok=True)
    if a.profile_dir is not None:
        a.profile_dir.mkdir(parents=True, exist_ok=True)
    seed_cfg, join_cfg = _configs(a)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_transfer.", dir=a.work_dir))
    _log(f"work dir {tmp}")
    chunk_size = a.chunk_kib << 10
    rounds: list[dict[str, Any]] = []
    try:
        seed_dir, total = _prepare_seed(tmp, a.size_mib << 20, chunk_size, "main")
        for r in range(a.rounds):
            # alternate which goes first, so a trend in machine load hits both alike
            order = ("raw", "chunks") if r % 2 == 0 else ("chunks", "raw")
            out: dict[str, Any] = {"load_avg_1m": os.getloadavg()[0]}
            for kind in order:
                if kind == "raw":
                    out["raw"] = _round_raw(a, tmp, total, r)
                else:
                    out["chunks"] = _round_chunks(a, tmp, seed_dir, total, str(r))
            out["ratio"] = out["chunks"]["mb_s"] / out["raw"]["mb_s"]
            out["cpu_ratio"] = _cpu_per_byte(out["raw"]) / _cpu_per_byte(out["chunks"])
            rounds.append(out)
            _log(
                f"round {r + 1}/{a.rounds}: raw {out['raw']['mb_s']:.1f} MB/s, "
                f"chunks {out['chunks']['mb_s']:.1f} MB/s, ratio {out['ratio']:.2f}, "
                f"cpu ratio {out['cpu_ratio']:.2f} (cpu s recv+send [trio threads] "
                f"raw {_cpu_text(out['raw'])}, chunks {_cpu_text(out['chunks'])}; "
                f"joiner rss {out['chunks']['maxrss_mb']:.0f} MB; "
                f"load {out['load_avg_1m']:.2f})"
            )
        rss_run: dict[str, Any] | None = None
        if a.rss_gib > 0:
            big_dir, big = _prepare_seed(tmp, a.rss_gib << 30, chunk_size, "rss")
            rss_run = _round_chunks(a, tmp, big_dir, big, "rss")
            _log(
                f"{big / _MB:.0f} MB release: {rss_run['mb_s']:.1f} MB/s, "
                f"joiner peak RSS {rss_run['maxrss_mb']:.0f} MB"
            )
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    raw = statistics.median(x["raw"]["mb_s"] for x in rounds)
    chunk = statistics.median(x["chunks"]["mb_s"] for x in rounds)
    ratio = statistics.median(x["ratio"] for x in rounds)
    cpu_ratio = statistics.median(x["cpu_ratio"] for x in rounds)
    peak = (
        rss_run["maxrss_mb"]
        if rss_run is not None
        else max(x["chunks"]["maxrss_mb"] for x in rounds)
    )
    return {
        "raw_mb_s": round(raw, 1),
        "chunk_mb_s": round(chunk, 1),
        "ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "receiver_peak_rss_mb": round(peak, 1),
        "receiver_peak_rss_release_bytes": (a.rss_gib << 30) if rss_run else total,
        "rounds": a.rounds,
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "release_bytes": total,
        "chunk_bytes": chunk_size,
        "settings": _settings(seed_cfg, join_cfg),
        "per_round": [
            {
                "load_avg_1m": round(x["load_avg_1m"], 2),
                "raw_mb_s": round(x["raw"]["mb_s"], 1),
                "chunk_mb_s": round(x["chunks"]["mb_s"], 1),
                "ratio": round(x["ratio"], 3),
                "cpu_ratio": round(x["cpu_ratio"], 3),
                "raw_cpu_s": _cpu_list(x["raw"]),
                "chunk_cpu_s": _cpu_list(x["chunks"]),
                "joiner_rss_mb": round(x["chunks"]["maxrss_mb"], 1),
                "seed_uploaded_bytes": x["chunks"]["seed_uploaded_bytes"],
            }
            for x in rounds
        ],
        "rss_run": None
        if rss_run is None
        else {
            "mb_s": round(rss_run["mb_s"], 1),
            "maxrss_mb": round(rss_run["maxrss_mb"], 1),
            "cpu_s": [round(rss_run["cpu_s"], 2), round(rss_run["sender_cpu_s"], 2)],
        },
        "targets": {"ratio": TARGET_RATIO, "receiver_peak_rss_mb": TARGET_PEAK_RSS_MB},
        "pass": ratio >= TARGET_RATIO and peak <= TARGET_PEAK_RSS_MB,
    }


def _cpu_list(res: dict[str, Any]) -> list[float]:
    """[receiver, sender, receiver trio thread, sender trio thread] CPU seconds."""
    keys = ("cpu_s", "sender_cpu_s", "main_cpu_s", "sender_main_cpu_s")
    return [round(float(res[k]), 2) for k in keys]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mib", type=int, default=512, help="release size in MiB (512)")
    p.add_argument("--rounds", type=int, default=3, help="raw/chunk rounds (default 3)")
    p.add_argument("--rss-gib", type=int, default=1, help="GiB for the RSS run (0: skip)")
    p.add_argument("--chunk-kib", type=int, default=1024, help="chunk size in KiB (1024)")
    p.add_argument("--work-dir", type=Path, default=None, help="where to make the temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    p.add_argument("--profile-dir", type=Path, default=None, help="profile every child here")
    p.add_argument(
        "--py-spy",
        dest="profile_ext",
        action="store_const",
        const=".txt",
        default=".prof",
        help="profile with py-spy (all threads, native; needs py-spy) instead of cProfile",
    )
    g = p.add_argument_group("NodeConfig (both sides; default: the NodeConfig default)")
    for name, kind in _NODE_KNOBS.items():
        g.add_argument(f"--{name.replace('_', '-')}", type=kind)
    g.add_argument("--no-super-seed", action="store_true", help="seed without super-seeding")
    p.add_argument("--child", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--peer", help=argparse.SUPPRESS)
    p.add_argument("--bytes", help=argparse.SUPPRESS)
    p.add_argument("--profile", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    if a.child:
        return _child_main(a)
    result = run(a)
    _emit(result)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
