"""The data directory: where a node or publisher keeps its store and trust settings.

Layout::

    DATA_DIR/store/        the chunk store (see mesh.store.fs)
    DATA_DIR/trust.json    trusted publisher keys and the model patterns each may sign
    DATA_DIR/node.json     written by a running node: its pid, peer id, API URL
                           (``edgemesh status/infer/rollback`` find the node through it)
    DATA_DIR/identity/     the node's persisted libp2p (Ed25519) identity

``DATA_DIR`` is ``--data-dir``, else ``$EDGEMESH_HOME``, else
``$XDG_DATA_HOME/edgemesh`` (``~/.local/share/edgemesh``).

Rules: ``trust.json`` is rewritten atomically; a corrupt one is an error, never
silently treated as empty (that would turn "trust nobody" into "trust nobody, quietly").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.core.trust import TrustedKey, TrustStore
from mesh.crypto import PublicKey
from mesh.errors import ConfigError, KeyFileError
from mesh.ids import KeyId
from mesh.store.fs import FsStore

TRUST_FORMAT = 1


def write_file_atomic(path: Path, data: bytes, *, what: str = "", mode: int = 0o644) -> None:
    """Replace ``path`` atomically: temp file (``mode``), fsync, rename, fsync the
    directory (so the rename survives a power loss).  ``OSError`` becomes
    ``ConfigError("cannot write WHAT PATH: ...")``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        label = f"{what} {path}" if what else str(path)
        raise ConfigError(f"cannot write {label}: {e.strerror}") from None


def read_json_document(path: Path, fmt: int, key: str, kind: type, *, what: str) -> Any:
    """The ``key`` member of the versioned JSON document at ``path`` (``None`` when
    there is no file).  A damaged file, another format or a ``key`` that is not a
    ``kind`` is a ``ConfigError`` naming WHAT and PATH, never silently empty."""
    label = f"{what} {path}"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{label} is unreadable: {e}; fix or remove it") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise ConfigError(f"{label} has an unknown format; fix or remove it")
    value = raw.get(key)
    if not isinstance(value, kind):
        shape = "a list" if kind is list else "an object"
        raise ConfigError(f"{label}: {key!r} must be {shape}")
    return value


def default_data_dir() -> Path:
    env = os.environ.get("EDGEMESH_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "edgemesh"


def parse_patterns(text: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if not patterns:
        raise ConfigError(f"empty model pattern list {text!r}")
    return patterns


def trusted_key_from_spec(spec: str) -> TrustedKey:
    """``PUBFILE`` or ``PUBFILE:GLOB[,GLOB...]`` -> a trusted key limited to those models."""
    path_text, sep, pats = spec.partition(":")
    patterns = parse_patterns(pats) if sep else ("*",)
    key = PublicKey.load(Path(path_text))
    return TrustedKey(key, patterns, label=Path(path_text).name)


@dataclass
class DataDir:
    root: Path

    @property
    def store_root(self) -> Path:
        return self.root / "store"

    @property
    def trust_file(self) -> Path:
        return self.root / "trust.json"

    @property
    def node_file(self) -> Path:
        return self.root / "node.json"

    @property
    def identity_dir(self) -> Path:
        return self.root / "identity"

    def write_node_info(self, info: dict[str, Any]) -> None:
        """Record the running node's ``pid``, ``peer_id`` and ``api`` URL (atomic)."""
        write_file_atomic(self.node_file, (json.dumps(info, sort_keys=True) + "\n").encode())

    def clear_node_info(self) -> None:
        try:
            info = json.loads(self.node_file.read_text())
        except (OSError, ValueError):
            return
        if isinstance(info, dict) and info.get("pid") == os.getpid():
            self.node_file.unlink(missing_ok=True)

    def running_node(self) -> dict[str, Any] | None:
        """The node recorded in ``node.json`` if its process is still alive, else None."""
        try:
            info = json.loads(self.node_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            return None
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return info

    def open_store(self, *, readonly: bool = False) -> FsStore:
        return FsStore(self.store_root, readonly=readonly)

    # -- trust store --------------------------------------------------------------------

    def _read_trust(self) -> list[dict[str, Any]]:
        keys = read_json_document(self.trust_file, TRUST_FORMAT, "keys", list, what="trust store")
        return [] if keys is None else keys

    def load_trust(self) -> TrustStore:
        store = TrustStore()
        for i, entry in enumerate(self._read_trust()):
            try:
                key = PublicKey.from_pem(
                    entry["public_key"].encode(), f"{self.trust_file} key #{i}"
                )
                patterns = tuple(entry.get("models") or ("*",))
                label = str(entry.get("label", ""))
            except (KeyError, AttributeError, TypeError):
                raise ConfigError(
                    f"trust store {self.trust_file}: entry #{i} is malformed"
                ) from None
            except KeyFileError as e:
                raise ConfigError(str(e)) from None
            if entry.get("id") != key.key_id.hex():
                raise ConfigError(
                    f"trust store {self.trust_file}: entry #{i} id does not match its key"
                )
            store.add(TrustedKey(key, patterns, label))
        return store

    def add_trusted(
        self, key: PublicKey, patterns: tuple[str, ...] = ("*",), label: str = ""
    ) -> bool:
        """Add or update a trusted key; True if it was new."""
        entries = [e for e in self._read_trust() if e.get("id") != key.key_id.hex()]
        new = len(entries) == len(self._read_trust())
        entries.append(
            {
                "id": key.key_id.hex(),
                "label": label,
                "models": list(patterns),
                "public_key": key.to_pem().decode(),
            }
        )
        self._write_trust(entries)
        return new

    def remove_trusted(self, key_id_prefix: str) -> KeyId:
        entries = self._read_trust()
        matches = [e for e in entries if str(e.get("id", "")).startswith(key_id_prefix.lower())]
        if len(matches) != 1:
            raise ConfigError(
                f"key id {key_id_prefix!r} matches {len(matches)} trusted keys; give more digits"
            )
        self._write_trust([e for e in entries if e is not matches[0]])
        return KeyId.from_hex(matches[0]["id"])

    def _write_trust(self, entries: list[dict[str, Any]]) -> None:
        data = json.dumps({"format": TRUST_FORMAT, "keys": entries}, indent=2) + "\n"
        write_file_atomic(self.trust_file, data.encode(), what="trust store")
