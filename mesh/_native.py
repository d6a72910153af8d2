"""Which edgemesh modules are compiled with mypyc, and whether this process uses them.

``setup.py`` compiles :data:`COMPILED` (the swarm core's hot modules and the
simulator's engine) into C extensions when it can (ADR 0008) and records the sha256
of each source file it compiled in ``mesh/_native.json``.  Python would import a
compiled module in preference to its ``.py`` file; :func:`select` (run by
``mesh/__init__.py``, before any of them is imported) lets it do so only when

* every module of :data:`COMPILED` has its extension (they call each other natively:
  all or none), and
* every source file they depend on still has the digest it had when they were
  compiled (an editable install whose source was edited since ``pip install -e .``
  runs the source), and
* ``EDGEMESH_PURE_PYTHON`` is not set (tests use it to compare both builds).

Otherwise a finder at the front of ``sys.meta_path`` loads those modules from their
``.py`` files.  Both builds give identical results (same trace digests); the compiled
one is faster.  Standard library only: ``setup.py`` imports this file on its own.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

COMPILED = (
    "mesh.core.node",
    "mesh.core.pipeline",
    "mesh.core.ratelimit",
    "mesh.sim.engine",
    "mesh.sim.network",
)
STAMP = "_native.json"
ENV = "EDGEMESH_PURE_PYTHON"

#: "compiled" or "pure Python (<why>)": what :func:`select` decided in this process.
mode = "pure Python (not decided yet)"


def _source(root: Path, module: str) -> Path:
    """``root`` holds the ``mesh`` package."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def _dependencies(root: Path) -> list[Path]:
    """The sources whose content the compiled code depends on: the compiled modules
    and every module whose types they were compiled against (mypyc bakes in the
    declared types of what they import, e.g. that a message field is ``bytes``).
    That is all of ``mesh`` except the packages above the simulator in the layers,
    which nothing compiled imports (import-linter keeps it so)."""
    mesh = root / "mesh"
    above = {"runtime", "cli", "store"}
    return sorted(
        p
        for p in mesh.rglob("*.py")
        if p.relative_to(mesh).parts[0] not in above and p.name != "_native.py"
    )


def source_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _dependencies(root)
    }


def _has_extension(root: Path, module: str) -> bool:
    src = _source(root, module)
    stem = src.with_suffix("")
    return any(
        stem.with_name(stem.name + suffix).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _decide(root: Path) -> tuple[bool, str]:
    """(use the compiled modules, why)."""
    if os.environ.get(ENV):
        return False, f"{ENV} is set"
    have = [m for m in COMPILED if _has_extension(root, m)]
    if not have:
        return False, "not compiled"
    if len(have) < len(COMPILED):
        return False, "only some modules compiled"
    try:
        stamp = json.loads((root / "mesh" / STAMP).read_text())
        sources = stamp["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"no readable mesh/{STAMP}"
    try:
        if sources != source_digests(root):
            return False, "source changed since it was compiled: pip install -e . again"
    except OSError as e:
        return False, f"cannot read a source file: {e.strerror}"
    return True, "compiled"


class _SourceFinder(MetaPathFinder):
    """Loads the modules of :data:`COMPILED` from their ``.py`` files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(self.root, fullname))


def select() -> str:
    """Decide once per process (see the module docstring); returns :data:`mode`."""
    global mode
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path) or mode == "compiled":
        return mode
    root = Path(__file__).resolve().parents[1]
    use, why = _decide(root)
    if use:
        mode = "compiled"
    else:
        mode = f"pure Python ({why})"
        sys.meta_path.insert(0, _SourceFinder(root))
    return mode
