"""Node commands: ``join`` (a device), ``seed`` (a publisher serving a release), and
``status`` (ask a running node).

Both long-running commands log one readable line per meaningful event (peer found,
release announced, progress, verified, activated), stop cleanly on SIGINT/SIGTERM,
and resume from the verified chunks on disk after a restart or ``kill -9``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import trio

from mesh.cli._common import Failed, _data_dir, _emit, _human_bytes, cli, data_dir_option
from mesh.core.announce import Announcement
from mesh.core.trust import TrustStore
from mesh.crypto import PrivateKey
from mesh.datadir import DataDir, trusted_key_from_spec
from mesh.errors import ConfigError, EdgemeshError, NotFoundError
from mesh.ids import ReleaseId
from mesh.nodeconfig import NodeFileConfig, load_node_config, parse_api
from mesh.publish import publish as publish_release

log = logging.getLogger("edgemesh.node")
PROGRESS_EVERY = 5.0  # seconds between progress lines while fetching


def setup_logging(level: str) -> None:
    """One readable line per event on stderr; py-libp2p, zeroconf and friends silenced
    (they log routine disconnects as errors)."""
    import libp2p  # noqa: F401 -- its import resets the "libp2p" logger: configure after

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR)
    logging.getLogger("edgemesh").setLevel(level.upper())
    for noisy in ("libp2p", "multiaddr", "zeroconf", "async_service"):
        lg = logging.getLogger(noisy)
        lg.setLevel(logging.CRITICAL)
        # py-libp2p turns propagation off and removes handlers: without one of its own
        # a logger falls back to logging.lastResort and prints bare lines
        lg.handlers[:] = [logging.NullHandler()]


def _trust(dd: DataDir, specs: list[str]) -> TrustStore:
    store = dd.load_trust()
    for spec in specs:
        store.add(trusted_key_from_spec(spec))
    return store


def node_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--listen",
            "listen",
            multiple=True,
            metavar="MULTIADDR",
            help="Listen address [default: /ip4/0.0.0.0/tcp/4101].",
        ),
        click.option(
            "--peer",
            "peers",
            multiple=True,
            metavar="MULTIADDR",
            help="Static peer /ip4/A/tcp/P/p2p/ID (networks without multicast).",
        ),
        click.option("--no-mdns", is_flag=True, help="Do not use mDNS discovery."),
        click.option(
            "--mdns-interface",
            "mdns_interfaces",
            multiple=True,
            metavar="IP",
            help="Run mDNS on the interface with this address [default: listen's].",
        ),
        click.option(
            "--api",
            "api",
            default=None,
            metavar="HOST:PORT|off",
            help="Local HTTP API address [default: 127.0.0.1:8470].",
        ),
        click.option("--mesh", "mesh_name", default=None, help="Mesh name [default: default]."),
        click.option(
            "--upload-limit",
            "upload_limit",
            type=click.FloatRange(min=0),
            default=None,
            metavar="MBIT",
            help="Upload at most this many Mbit/s.",
        ),
        click.option(
            "--download-limit",
            "download_limit",
            type=click.FloatRange(min=0),
            default=None,
            metavar="MBIT",
            help="Download at most this many Mbit/s.",
        ),
        data_dir_option,
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="TOML config file (flags override it).",
        ),
    ]

    @functools.wraps(f)
    def packed(**kw: Any) -> Any:
        node = NodeFlags(**{k: kw.pop(k) for k in NodeFlags.__dataclass_fields__})
        return f(node=node, **kw)

    for o in reversed(opts):
        packed = o(packed)
    return packed


@dataclass
class NodeFlags:
    """The flags ``join`` and ``seed`` share (see :func:`node_options`)."""

    config: Path | None
    data_dir: Path | None
    listen: tuple[str, ...]
    peers: tuple[str, ...]
    no_mdns: bool
    mdns_interfaces: tuple[str, ...]
    api: str | None
    mesh_name: str | None
    upload_limit: float | None
    download_limit: float | None


def _settings(flags: NodeFlags) -> tuple[NodeFileConfig, DataDir]:
    """Flags over the config file over defaults; refuses a data dir in use."""
    config, listen, peers, api = flags.config, flags.listen, flags.peers, flags.api
    no_mdns, mdns_interfaces, mesh_name = flags.no_mdns, flags.mdns_interfaces, flags.mesh_name
    upload_limit, download_limit, data_dir = (
        flags.upload_limit,
        flags.download_limit,
        flags.data_dir,
    )
    cfg = load_node_config(config) if config is not None else NodeFileConfig()
    if listen:
        cfg.listen = list(listen)
    cfg.peers = [*cfg.peers, *peers]
    if no_mdns:
        cfg.mdns = False
    if mdns_interfaces:
        cfg.mdns_interfaces = list(mdns_interfaces)
    if api is not None:
        if api in ("", "off"):
            cfg.api = None
        else:
            parse_api(api)
            cfg.api = api
    if mesh_name is not None:
        cfg.mesh = mesh_name
    if upload_limit is not None:
        cfg.upload_limit_mbit = upload_limit
    if download_limit is not None:
        cfg.download_limit_mbit = download_limit
    dd = _data_dir(data_dir if data_dir is not None else cfg.data_dir)
    running = dd.running_node()
    if running is not None:
        raise ConfigError(
            f"a node (pid {running['pid']}) is already running on {dd.root}; "
            "stop it first or use another --data-dir"
        )
    return cfg, dd


async def _until_signal(cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("stopping (%s)", signal.Signals(signum).name)
            cancel.cancel()
            return


async def _serve(
    cfg: NodeFileConfig,
    dd: DataDir,
    trust: TrustStore,
    *,
    seed: bool,
    announcements: dict[ReleaseId, bytes] | None = None,
    watch: Callable[[Any], Awaitable[None]] | None = None,
) -> None:
    """Run the node (and its API) until a signal or ``watch`` returns."""
    from mesh.runtime.api import serve_api
    from mesh.runtime.inference import InferenceService
    from mesh.runtime.node import (
        NodeHandle,
        NodeSettings,
        activate,
        activate_verified,
        open_node,
        wait_relayed,
    )

    settings = NodeSettings(
        dd,
        trust,
        cfg.node_config(super_seed=seed),
        listen=cfg.listen,
        peers=cfg.peers,
        mdns=cfg.mdns,
        mdns_interfaces=cfg.mdns_interfaces or None,
        announcements=announcements or {},
    )
    service: InferenceService | None = None
    node: NodeHandle | None = None

    async def on_complete(rid: ReleaseId, model: str, version: int) -> None:
        if service is not None and not seed:
            if node is not None:
                held = await wait_relayed(node.driver, rid)
                if held >= 1.0:
                    log.info(
                        "%s v%d: activation held %.1f s while peers fetched it",
                        model,
                        version,
                        held,
                    )
            await activate(service, rid, model, version)

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_signal, scope)
            async with open_node(settings, on_complete=on_complete) as handle:
                node = handle
                service = InferenceService(dd, handle.driver.store)
                if not seed:
                    await service.start()
                    await activate_verified(handle.driver.store, service)
                handle.inference = service
                info: dict[str, Any] = {"peer_id": handle.peer_id, "addrs": handle.addrs}
                if cfg.api is not None:
                    host, port = parse_api(cfg.api)
                    try:
                        bound = await nursery.start(
                            lambda task_status: serve_api(
                                service,
                                host=host,
                                port=port,
                                status=handle.status,
                                task_status=task_status,
                            )
                        )
                    except OSError as e:
                        raise ConfigError(f"cannot serve the API on {cfg.api}: {e}") from None
                    info["api"] = f"http://{bound[0]}:{bound[1]}"
                    log.info("API on %s", info["api"])
                dd.write_node_info({"pid": os.getpid(), **info})
                nursery.start_soon(_progress, handle)
                if watch is not None:
                    await watch(handle)
                    scope.cancel()
                else:
                    await trio.sleep_forever()


async def _progress(handle: Any) -> None:
    """A progress line per release being fetched, every PROGRESS_EVERY seconds."""
    last: dict[str, tuple[float, int]] = {}
    while True:
        await trio.sleep(PROGRESS_EVERY)
        st = handle.status()
        now = time.monotonic()
        for model, m in st["models"].items():
            for r in m["releases"]:
                key, done, total = r["release_id"], r["chunks_verified"], r["chunks_total"]
                prev = last.get(key)
                last[key] = (now, done)
                if done >= total or prev is None:
                    continue
                rate = (done - prev[1]) / (now - prev[0]) if now > prev[0] else 0.0
                log.info(
                    "fetching %s v%d: %d/%d chunks (%.0f%%), %.1f chunks/s, %d peers",
                    model,
                    r["version"],
                    done,
                    total,
                    100 * done / max(total, 1),
                    rate,
                    len(st["peers"]),
                )


class SeedProgress:
    """The seed's live view: bytes handed out (as a multiple of the model), peers,
    upload rate, complete copies.  A progress bar on a terminal, else a log line
    every PROGRESS_EVERY seconds while something changes."""

    def __init__(self, model_bytes: int, what: str) -> None:
        self.model_bytes = model_bytes
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        self._logged = (0.0, -1)
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn(f"serving {what}"),
                BarColumn(),
                TextColumn("{task.fields[line]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task("", total=model_bytes, line="")
            self._bar.start()
            self._retarget_log()  # log lines go above the bar, not through it

    def update(self, st: dict[str, Any], copies: int) -> None:
        now, up = time.monotonic(), int(st["bytes_uploaded"])
        t0, up0 = self._last
        if now - t0 >= 1.0:
            self._rate = (up - up0) / (now - t0)
            self._last = (now, up)
        line = (
            f"{up / self.model_bytes:.2f} x model uploaded, {len(st['peers'])} peers, "
            f"{self._rate / 1e6:.1f} MB/s, {copies} complete copies"
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=min(up, self.model_bytes), line=line)
        elif now - self._logged[0] >= PROGRESS_EVERY and up != self._logged[1]:
            self._logged = (now, up)
            log.info("seeding: %s", line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._retarget_log()

    @staticmethod
    def _retarget_log() -> None:
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler):
                h.setStream(sys.stderr)


def _run(main: Callable[[], Awaitable[None]]) -> None:
    try:
        trio.run(main)
    except* EdgemeshError as eg:
        raise eg.exceptions[0] from None
    log.info("stopped")


# -- join ------------------------------------------------------------------------------


@cli.command()
@node_options
@click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="PUBFILE[:GLOB,...]",
    help="Also trust this publisher key (besides the data dir's trust store).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log detail [default: info].",
)
def join(node: NodeFlags, trust: tuple[str, ...], log_level: str | None) -> None:
    """Run a node: find peers, fetch, verify and activate every trusted release."""
    cfg, dd = _settings(node)
    trust_store = _trust(dd, [*cfg.trust, *trust])
    if not trust_store.keys():
        raise ConfigError(
            f"no trusted publisher keys in {dd.trust_file}: add one with "
            "'edgemesh trust add PUBFILE' or pass --trust PUBFILE"
        )
    setup_logging(log_level or cfg.log_level)
    _run(lambda: _serve(cfg, dd, trust_store, seed=False))


# -- seed ------------------------------------------------------------------------------


def _publish_or_reuse(
    dd: DataDir, model_file: Path, model: str, version: int, key: PrivateKey, mesh: str
) -> tuple[Any, bool]:
    with dd.open_store() as store:
        try:
            existing = store.find_release(model, version)
        except NotFoundError:
            existing = None
        if existing is not None:
            m = existing.manifest
            if m.mesh != mesh:
                raise ConfigError(f"{m.describe()} is published for mesh {m.mesh!r}, not {mesh!r}")
            digest = hashlib.sha256()
            try:
                with open(model_file, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
            except OSError as e:
                raise ConfigError(f"cannot read {model_file}: {e.strerror}") from None
            if digest.digest() != m.files[0].sha256:
                raise ConfigError(
                    f"{model} v{version} is already published with different content; "
                    "publish the new file as a higher --version"
                )
            return existing, False
        from mesh.runtime.onnx import load_check

        result = publish_release(
            store,
            model_file,
            mesh=mesh,
            model=model,
            version=version,
            signer=key,
            created=int(time.time()),
            load_check=load_check,
        )
        return result.release, True


@cli.command()
@click.argument("model_file", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, help="Model name.")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    required=True,
    help="Version number (higher than any published before).",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Publisher private key (from 'edgemesh keygen').",
)
@node_options
@click.option(
    "--until-copies",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Exit once K peers hold a complete verified copy.",
)
@click.option("--json", "as_json", is_flag=True, help="With --until-copies: print a JSON summary.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log detail [default: info].",
)
def seed(
    model_file: Path,
    model: str,
    version: int,
    key_file: Path,
    node: NodeFlags,
    until_copies: int | None,
    as_json: bool,
    log_level: str | None,
) -> None:
    """Publish MODEL.onnx (or reuse that published version) and serve it to the mesh."""
    cfg, dd = _settings(node)
    key = PrivateKey.load(key_file)
    release, new = _publish_or_reuse(dd, model_file, model, version, key, cfg.mesh)
    dd.add_trusted(key.public_key, ("*",), label=f"publisher key {key_file.name}")
    m = release.manifest
    rid = m.release_id
    ann = Announcement.for_release(release, key).encode()
    setup_logging(log_level or cfg.log_level)
    log.info(
        "%s %s: %s in %d chunks",
        "published" if new else "serving the already published",
        m.describe(),
        _human_bytes(m.total_size),
        m.chunk_total,
    )
    summary: dict[str, Any] = {}

    async def watch(handle: Any) -> None:
        copies: set[str] = set()
        start = trio.current_time()
        progress = SeedProgress(m.total_size, m.describe())
        try:
            await _watch_copies(handle, copies, start, progress)
        finally:
            progress.close()

    async def _watch_copies(
        handle: Any, copies: set[str], start: float, progress: SeedProgress
    ) -> None:
        while True:
            progress.update(handle.status(), len(copies))
            for peer in handle.driver.core.complete_peers(rid):
                if peer not in copies:
                    copies.add(peer)
                    log.info(
                        "copy %d%s: %s holds %s",
                        len(copies),
                        f"/{until_copies}" if until_copies else "",
                        peer,
                        m.describe(),
                    )
            if until_copies is not None and len(copies) >= until_copies:
                st = handle.status()
                summary.update(
                    {
                        "model": m.model,
                        "version": m.version,
                        "release_id": rid.hex(),
                        "model_bytes": m.total_size,
                        "copies": len(copies),
                        "seed_uploaded_bytes": st["bytes_uploaded"],
                        "seed_upload_ratio": round(st["bytes_uploaded"] / m.total_size, 3),
                        "seconds": round(trio.current_time() - start, 2),
                    }
                )
                return
            await trio.sleep(0.2)

    _run(lambda: _serve(cfg, dd, dd.load_trust(), seed=True, announcements={rid: ann}, watch=watch))
    if summary:
        if as_json:
            _emit(summary)
        else:
            click.echo(
                f"{summary['copies']} peers hold a verified copy of {m.describe()} after "
                f"{summary['seconds']} s; the seed uploaded "
                f"{_human_bytes(summary['seed_uploaded_bytes'])} "
                f"({summary['seed_upload_ratio']:.2f} x the model)"
            )


# -- status ----------------------------------------------------------------------------


def api_url(dd: DataDir, api: str | None) -> tuple[str, int]:
    from mesh.runtime.v2client import parse_api as parse_url

    if api is not None:
        return parse_url(api)
    running = dd.running_node()
    if running is None or not running.get("api"):
        raise ConfigError(
            f"no running node found in {dd.root} (start 'edgemesh join', or give --api URL)"
        )
    return parse_url(str(running["api"]))


async def fetch_status(host: str, port: int) -> dict[str, Any]:
    from mesh.runtime.v2client import ApiError, V2Client, error_message

    async with V2Client(host, port) as client:
        reply = await client.request("GET", "/edgemesh/status")
    if reply.status != 200:
        raise ApiError(error_message(reply), reply.status)
    doc = reply.json()
    if not isinstance(doc, dict):
        raise ApiError("the node's status is not a JSON object")
    return doc


@cli.command()
@data_dir_option
@click.option("--api", "api", default=None, metavar="URL", help="The node's API URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data_dir: Path | None, api: str | None, as_json: bool) -> None:
    """Show a running node's peers, releases, progress and traffic."""
    host, port = api_url(_data_dir(data_dir), api)
    doc = trio.run(fetch_status, host, port)
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
        return
    click.echo(f"peer id   {doc.get('peer_id')}")
    for a in doc.get("addrs", []):
        click.echo(f"address   {a}")
    click.echo(f"peers     {len(doc.get('peers', []))}")
    click.echo(
        f"traffic   up {_human_bytes(doc.get('bytes_uploaded', 0))}, "
        f"down {_human_bytes(doc.get('bytes_downloaded', 0))}"
    )
    for name, m in sorted(doc.get("models", {}).items()):
        active = m.get("active_version")
        click.echo(f"model {name}: active version {active if active is not None else '-'}")
        for r in m.get("releases", []):
            reason = f" ({r['reason']})" if r.get("reason") else ""
            click.echo(
                f"  v{r['version']:<4} {r['release_id'][:12]}  {r['state']:<10} "
                f"{r.get('chunks_verified', '?')}/{r.get('chunks_total', '?')} chunks{reason}"
            )
    if doc.get("store_error"):
        raise Failed(f"the node cannot store chunks: {doc['store_error']}")
