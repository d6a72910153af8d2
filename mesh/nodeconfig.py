"""Settings of a long-running node (``edgemesh join`` / ``edgemesh seed``).

Sources, strongest first (DESIGN §5): command-line flags, the TOML file given with
``--config`` (see ``configs/node.example.toml``, every key documented there), defaults.
Every key is type- and range-checked; an unknown key is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mesh.core.node import NodeConfig
from mesh.errors import ConfigError
from mesh.tomltable import Table, load_toml, override_dataclass

DEFAULT_PORT = 4101
DEFAULT_API = "127.0.0.1:8470"
MBIT = 1_000_000 / 8
#: NodeConfig fields the ``[node]`` table does not take: the mesh name and
#: super-seeding come from the command, rate limits from the top-level
#: ``upload_limit_mbit`` / ``download_limit_mbit``.
NOT_IN_NODE_TABLE = ("mesh", "super_seed", "upload_rate", "download_rate")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class NodeFileConfig:
    data_dir: Path | None = None
    mesh: str = "default"
    listen: list[str] = field(default_factory=lambda: [f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"])
    peers: list[str] = field(default_factory=list)
    mdns: bool = True
    mdns_interfaces: list[str] = field(default_factory=list)
    api: str | None = DEFAULT_API  # None: no local API
    trust: list[str] = field(default_factory=list)
    upload_limit_mbit: float = 0.0  # 0: unlimited
    download_limit_mbit: float = 0.0
    log_level: str = "info"
    node: NodeConfig = field(default_factory=NodeConfig)

    def node_config(self, *, super_seed: bool = False) -> NodeConfig:
        return replace(
            self.node,
            mesh=self.mesh,
            super_seed=super_seed,
            upload_rate=self.upload_limit_mbit * MBIT or None,
            download_rate=self.download_limit_mbit * MBIT or None,
        )


def parse_api(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"API address {text!r} must be HOST:PORT, e.g. 127.0.0.1:8470")
    return host, int(port)


def load_node_config(path: Path) -> NodeFileConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    what = f"config {path.name}"
    top = Table(load_toml(text, what), "", what)
    cfg = NodeFileConfig()
    data_dir = top.get("data_dir", str, "")
    if data_dir:
        cfg.data_dir = (path.parent / Path(data_dir).expanduser()).resolve()
    cfg.mesh = top.get("mesh", str, cfg.mesh)
    cfg.listen = top.strings("listen", cfg.listen)
    if not cfg.listen:
        raise top.error("'listen' needs at least one address")
    cfg.peers = top.strings("peers")
    cfg.mdns = top.get("mdns", bool, True)
    cfg.mdns_interfaces = top.strings("mdns_interfaces")
    api = top.get("api", str, DEFAULT_API)
    if api in ("", "off"):
        cfg.api = None
    else:
        try:
            parse_api(api)
        except ConfigError as e:
            raise top.error(f"'api': {e}") from None
        cfg.api = api
    cfg.trust = [_relative(path, t) for t in top.strings("trust")]
    cfg.upload_limit_mbit = top.num("upload_limit_mbit", 0.0, hi=1e6)
    cfg.download_limit_mbit = top.num("download_limit_mbit", 0.0, hi=1e6)
    cfg.log_level = top.get("log_level", str, "info")
    if cfg.log_level not in LOG_LEVELS:
        raise top.error(f"'log_level' must be one of {', '.join(LOG_LEVELS)}")
    cfg.node = override_dataclass(top.table("node"), cfg.node, exclude=NOT_IN_NODE_TABLE)
    top.done()
    return cfg


def _relative(config: Path, spec: str) -> str:
    """Trust entries (``PUBFILE[:GLOBS]``) are relative to the config file."""
    file, sep, rest = spec.partition(":")
    p = Path(file).expanduser()
    if not p.is_absolute():
        p = config.parent / p
    return f"{p}{sep}{rest}"


def describe(cfg: NodeFileConfig) -> dict[str, Any]:
    return {
        "mesh": cfg.mesh,
        "listen": cfg.listen,
        "peers": cfg.peers,
        "mdns": cfg.mdns,
        "api": cfg.api,
    }
