"""Reading TOML settings with errors that name the key.

Used by the node configuration (``edgemesh join --config``) and the simulator's
scenario files.  Every value is type- and range-checked; an unknown key is an error
(a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any, TypeVar

from mesh.errors import ConfigError

T = TypeVar("T")


def load_toml(text: str, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what}: not valid TOML: {e}") from None


class Table:
    """A TOML table being read: tracks which keys were used to report unknown ones.

    ``what`` prefixes every error (``"scenario"``, ``"config node.toml"``)."""

    def __init__(self, raw: object, where: str, what: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{what}: {where or 'the file'} must be a table")
        self.raw: dict[str, Any] = raw
        self.where = where
        self.what = what
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.what}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is ...:
                raise self.error(f"missing key {self.key(key)!r}")
            return default
        v = self.raw[key]
        ok = isinstance(v, kind) and not (
            isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        )
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(f"{self.key(key)!r} must be {names}, got {v!r}")
        return v

    def num(
        self,
        key: str,
        default: Any = ...,
        *,
        lo: float = 0.0,
        hi: float = float("inf"),
        positive: bool = False,
    ) -> float:
        v = float(self.get(key, (int, float), default))
        if not lo <= v <= hi or (positive and v <= 0):
            rng = f"> {lo}" if positive else f"{lo}..{hi}"
            raise self.error(f"{self.key(key)!r} = {v} is out of range ({rng})")
        return v

    def strings(self, key: str, default: list[str] | None = None) -> list[str]:
        v = self.get(key, list, [] if default is None else default)
        if not all(isinstance(x, str) for x in v):
            raise self.error(f"{self.key(key)!r} must be a list of strings")
        return list(v)

    def table(self, key: str) -> Table | None:
        self.used.add(key)
        if key not in self.raw:
            return None
        return Table(self.raw[key], self.key(key), self.what)

    def tables(self, key: str) -> list[Table]:
        self.used.add(key)
        v = self.raw.get(key, [])
        if not isinstance(v, list):
            raise self.error(f"{self.key(key)!r} must be an array of tables ([[{key}]])")
        return [Table(t, f"{self.key(key)}[{i}]", self.what) for i, t in enumerate(v)]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise self.error(f"unknown key {self.key(unknown[0])!r}")


def override_dataclass(t: Table | None, base: T, *, exclude: tuple[str, ...] = ()) -> T:
    """``base`` (a dataclass of bool/int/float/optional-number fields) with the
    table's values; unknown or excluded keys are errors."""
    if t is None:
        return base
    known = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key in list(t.raw):
        if key not in known or key in exclude:
            t.used.add(key)
            raise t.error(f"unknown key {t.key(key)!r}")
        current = getattr(base, key)
        if isinstance(current, bool):
            changes[key] = t.get(key, bool)
        elif isinstance(current, int):
            changes[key] = int(t.num(key, lo=0, hi=1e9))
        else:
            changes[key] = t.num(key, lo=0, hi=1e12)
    t.done()
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]
