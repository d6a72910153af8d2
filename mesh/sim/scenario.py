"""Scenario files: the TOML that describes a network to simulate.

What it owns: parsing and validating a scenario into frozen dataclasses, with a
clear one-line error naming the offending key (``ConfigError``).  Unknown keys are
errors too (a typo must not silently fall back to a default).

See ``configs/scenarios/*.toml`` for commented examples and ``docs/simulator.md``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mesh.core.node import NodeConfig
from mesh.errors import ConfigError
from mesh.tomltable import Table, override_dataclass

MBIT = 1_000_000 / 8  # bytes per second in one Mbit/s
HOSTILE_BEHAVIOURS = frozenset({"corrupt", "lie", "replay", "forge"})


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    count: int
    up_bps: float  # bytes per second
    down_bps: float
    latency_s: float  # one way, device to its LAN switch
    site: str
    join_at_s: float
    join_spread_s: float


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    wan_up_bps: float
    wan_down_bps: float
    wan_latency_s: float


@dataclass(frozen=True, slots=True)
class Partition:
    start_s: float
    end_s: float
    fraction: float  # share of nodes cut off from the seed's side


@dataclass(frozen=True, slots=True)
class Churn:
    crash_fraction: float  # nodes that crash and come back with their store
    leave_fraction: float  # nodes that leave for good
    late_join_fraction: float  # nodes that join only after the start
    start_s: float
    end_s: float
    downtime_s: tuple[float, float]


@dataclass(frozen=True, slots=True)
class Hostile:
    fraction: float
    behaviours: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    model_bytes: int
    chunk_bytes: int
    seed_up_bps: float
    seed_down_bps: float
    seed_latency_s: float
    seed_site: str
    devices: tuple[DeviceClass, ...]
    sites: tuple[Site, ...]
    loss: float
    partitions: tuple[Partition, ...]
    churn: Churn | None
    hostile: Hostile | None
    time_limit_s: float
    node: NodeConfig = field(default_factory=NodeConfig)
    seed_node: NodeConfig = field(default_factory=NodeConfig)

    @property
    def node_count(self) -> int:
        return sum(d.count for d in self.devices)


def _count(d: Table) -> int:
    v = d.get("count", int)
    if not 1 <= v <= 100_000:
        raise ConfigError(f"scenario: {d.key('count')!r} = {v} is out of range (1..100000)")
    return int(v)


def _node_config(t: Table | None, base: NodeConfig) -> NodeConfig:
    return override_dataclass(t, base, exclude=("mesh", "super_seed"))


def parse_scenario(text: str, name: str = "scenario") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"scenario {name}: not valid TOML: {e}") from None
    top = Table(raw, "", "scenario")
    sc_name = top.get("name", str, name)
    description = top.get("description", str, "")
    time_limit = top.num("time_limit_s", 3600.0, positive=True)
    loss = top.num("loss", 0.0, hi=0.5)

    model = top.table("model")
    if model is None:
        raise ConfigError("scenario: missing table [model]")
    model_bytes = int(model.num("size_mb", positive=True, hi=1e6) * 1024 * 1024)
    chunk_bytes = int(model.num("chunk_kb", 1024, lo=64, hi=16384) * 1024)
    if chunk_bytes & (chunk_bytes - 1):
        raise ConfigError("scenario: 'model.chunk_kb' must be a power of two")
    model.done()

    sites: list[Site] = []
    for st in top.tables("sites"):
        sites.append(
            Site(
                name=st.get("name", str),
                wan_up_bps=st.num("wan_up_mbit", positive=True) * MBIT,
                wan_down_bps=st.num("wan_down_mbit", positive=True) * MBIT,
                wan_latency_s=st.num("wan_latency_ms", 20.0) / 1000,
            )
        )
        st.done()
    site_names = {s.name for s in sites} or {"lan"}
    if len(site_names) != max(1, len(sites)):
        raise ConfigError("scenario: site names repeat")

    seed = top.table("seed")
    if seed is None:
        raise ConfigError("scenario: missing table [seed]")
    seed_up = seed.num("up_mbit", positive=True) * MBIT
    seed_down = seed.num("down_mbit", 1000.0, positive=True) * MBIT
    seed_latency = seed.num("latency_ms", 0.5) / 1000
    seed_site = seed.get("site", str, sorted(site_names)[0] if sites else "lan")
    seed_cfg = _node_config(seed.table("config"), NodeConfig(super_seed=True, upload_slots=4))
    seed.done()
    if seed_site not in site_names:
        raise ConfigError(f"scenario: 'seed.site' {seed_site!r} is not a declared site")

    base_cfg = _node_config(top.table("node"), NodeConfig())
    devices: list[DeviceClass] = []
    for i, d in enumerate(top.tables("devices")):
        dev = DeviceClass(
            name=d.get("name", str, f"class{i}"),
            count=_count(d),
            up_bps=d.num("up_mbit", positive=True) * MBIT,
            down_bps=d.num("down_mbit", positive=True) * MBIT,
            latency_s=d.num("latency_ms", 0.5) / 1000,
            site=d.get("site", str, seed_site),
            join_at_s=d.num("join_at_s", 0.0),
            join_spread_s=d.num("join_spread_s", 0.0),
        )
        d.done()
        if dev.site not in site_names:
            raise ConfigError(f"scenario: 'devices[{i}].site' {dev.site!r} is not a declared site")
        devices.append(dev)
    if not devices:
        raise ConfigError("scenario: no [[devices]] declared")

    partitions: list[Partition] = []
    for p in top.tables("partitions"):
        part = Partition(p.num("start_s"), p.num("end_s"), p.num("fraction", 0.5, hi=1.0))
        p.done()
        if part.end_s <= part.start_s:
            raise ConfigError(f"scenario: {p.where}: end_s must be after start_s")
        partitions.append(part)

    churn = None
    ct = top.table("churn")
    if ct is not None:
        down = ct.get("downtime_s", list, [5.0, 20.0])
        if len(down) != 2 or not all(isinstance(x, int | float) for x in down) or down[0] > down[1]:
            raise ConfigError("scenario: 'churn.downtime_s' must be [min, max] seconds")
        churn = Churn(
            crash_fraction=ct.num("crash_fraction", 0.0, hi=1.0),
            leave_fraction=ct.num("leave_fraction", 0.0, hi=1.0),
            late_join_fraction=ct.num("late_join_fraction", 0.0, hi=1.0),
            start_s=ct.num("start_s", 1.0),
            end_s=ct.num("end_s", 20.0),
            downtime_s=(float(down[0]), float(down[1])),
        )
        ct.done()
        if churn.crash_fraction + churn.leave_fraction + churn.late_join_fraction > 1.0:
            raise ConfigError("scenario: churn fractions add up to more than 1")

    hostile = None
    ht = top.table("hostile")
    if ht is not None:
        behaviours = ht.get("behaviours", list, sorted(HOSTILE_BEHAVIOURS))
        bad = [b for b in behaviours if b not in HOSTILE_BEHAVIOURS]
        if bad:
            raise ConfigError(
                f"scenario: 'hostile.behaviours' has unknown {bad[0]!r} "
                f"(known: {', '.join(sorted(HOSTILE_BEHAVIOURS))})"
            )
        hostile = Hostile(ht.num("fraction", hi=0.9), tuple(behaviours))
        ht.done()
    top.done()
    return Scenario(
        name=sc_name,
        description=description,
        model_bytes=model_bytes,
        chunk_bytes=chunk_bytes,
        seed_up_bps=seed_up,
        seed_down_bps=seed_down,
        seed_latency_s=seed_latency,
        seed_site=seed_site,
        devices=tuple(devices),
        sites=tuple(sites),
        loss=loss,
        partitions=tuple(partitions),
        churn=churn,
        hostile=hostile,
        time_limit_s=time_limit,
        node=base_cfg,
        seed_node=seed_cfg,
    )


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"scenario file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"scenario file {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"scenario file {path} is not UTF-8 text") from None
    return parse_scenario(text, path.stem)
