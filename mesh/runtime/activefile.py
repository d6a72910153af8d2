"""``DATA_DIR/active.json``: which release of each model is active, and the ones before.

What it owns: reading and atomically rewriting the file (temp file, fsync, rename,
fsync the directory), and the two things done to it while no node runs: rollback
(the next start activates the previous version) and listing the releases garbage
collection must keep.  The content per model is :meth:`ModelRollout.to_json`.

Rules: a damaged file is an error, never silently treated as empty (that would undo a
rollback and let ``gc`` delete the serving version).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mesh.core.rollout import ModelRollout, RolloutError, offline_rollback
from mesh.datadir import DataDir, read_json_document, write_file_atomic
from mesh.ids import ReleaseId

ACTIVE_FORMAT = 1


def active_file(data_dir: DataDir) -> Path:
    return data_dir.root / "active.json"


def read_active(path: Path) -> dict[str, Any]:
    """The persisted rollouts by model ({} when there is no file); a damaged file is an
    error, never silently empty (that would undo a rollback)."""
    models = read_json_document(path, ACTIVE_FORMAT, "models", dict, what="active file")
    return {} if models is None else models


def write_active(path: Path, models: dict[str, Any]) -> None:
    """Atomically replace ``active.json`` (temp file, fsync, rename, fsync the dir)."""
    data = json.dumps({"format": ACTIVE_FORMAT, "models": models}, indent=2, sort_keys=True)
    write_file_atomic(path, (data + "\n").encode())


def pinned_releases(data_dir: DataDir) -> set[ReleaseId]:
    """The active and previous releases recorded in ``active.json`` (for ``gc`` while no
    node runs); a damaged file is an error, so nothing is collected blindly."""
    out: set[ReleaseId] = set()
    for model, raw in read_active(active_file(data_dir)).items():
        r = ModelRollout.from_json(model, raw)
        out.update(r.pending())  # the persisted active release
        out.update(r.previous)
    return out


def rollback_persisted(data_dir: DataDir, model: str) -> int:
    """Rollback for a node that is not running: the next start activates the previous
    version.  Returns that version."""
    path = active_file(data_dir)
    models = read_active(path)
    if model not in models:
        raise RolloutError(f"model {model!r} has no active version recorded in {path}")
    new, version = offline_rollback(models[model])
    models[model] = new
    write_active(path, models)
    return version
