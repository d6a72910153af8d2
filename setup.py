"""Build hook: compile the swarm core and the simulator's engine with mypyc (ADR 0008).

The compiled modules are the very same source files, turned into C extensions: the
simulator runs about 1.8x faster with them, and so does a node's scheduler.  Where
no C compiler (or no Python headers) is available the build goes on without them and
edgemesh runs as pure Python, with identical results.  ``EDGEMESH_PURE_PYTHON=1`` at
build time skips the compilation; at run time it ignores compiled modules (see
``mesh/_native.py``, which also ignores them when their source changed since the
build: an editable install never runs stale code).

Everything else lives in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).resolve().parent / "mesh"))
from _native import COMPILED, STAMP, source_digests

sys.path.pop(0)


class BuildExt(build_ext):  # type: ignore[misc]
    """Build the optional extensions, then record which sources they came from."""

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        built = [Path(self.get_ext_fullpath(e.name)) for e in self.extensions]
        if not all(p.exists() for p in built):
            print("edgemesh: mypyc extensions not built; running as pure Python")
            return
        # next to the compiled modules' package root: <out>/mesh/_native.json
        root = Path(self.get_ext_fullpath(COMPILED[0])).parents[1]
        here = Path(__file__).resolve().parent
        stamp = {"sources": source_digests(here), "python": sys.implementation.cache_tag}
        (root / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def extensions() -> list[Any]:
    if os.environ.get("EDGEMESH_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    paths = [m.replace(".", "/") + ".py" for m in COMPILED]
    try:
        exts = mypycify(
            # Type-checked again here, in pip's isolated build environment, which lacks
            # the project's dependencies (their types become Any): without the strict
            # settings of pyproject.toml, which CI applies to the real environment.
            [
                "--config-file=",
                "--ignore-missing-imports",
                "--follow-imports=silent",
                "--python-version=3.11",
                *paths,
            ],
            opt_level="3",
            group_name="mesh._native",
        )
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- the build must go on
        print(f"edgemesh: mypyc failed ({e}); running as pure Python")
        return []
    for ext in exts:
        ext.optional = True  # no compiler: a warning, and pure Python
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
