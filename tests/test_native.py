"""mesh._native: compiled modules are used only when all exist and match their source."""

from __future__ import annotations

import importlib.machinery
import json
from pathlib import Path

import pytest

from mesh import _native


def _tree(root: Path, *, compiled: tuple[str, ...] = _native.COMPILED) -> None:
    """A fake install under ``root``: every compiled module's source, an extension
    file for those in ``compiled``, one dependency and one module above the layers."""
    for m in _native.COMPILED:
        src = root.joinpath(*m.split(".")).with_suffix(".py")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {m}\n")
        if m in compiled:
            suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
            src.with_name(src.stem + suffix).write_bytes(b"\x7fELF")
    (root / "mesh" / "ids.py").write_text("# ids\n")
    (root / "mesh" / "runtime").mkdir()
    (root / "mesh" / "runtime" / "api.py").write_text("# api\n")


def _stamp(root: Path) -> None:
    doc = {"sources": _native.source_digests(root)}
    (root / "mesh" / _native.STAMP).write_text(json.dumps(doc))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_native.ENV, raising=False)


def test_matching_build_is_used(tmp_path: Path) -> None:
    _tree(tmp_path)
    _stamp(tmp_path)
    assert _native._decide(tmp_path) == (True, "compiled")


def test_no_extensions_means_pure_python(tmp_path: Path) -> None:
    _tree(tmp_path, compiled=())
    assert _native._decide(tmp_path) == (False, "not compiled")


def test_some_extensions_missing_means_none_is_used(tmp_path: Path) -> None:
    _tree(tmp_path, compiled=_native.COMPILED[:2])
    _stamp(tmp_path)
    assert _native._decide(tmp_path) == (False, "only some modules compiled")


@pytest.mark.parametrize("stamp", [None, "not json", '{"sources": 3}', "[]"])
def test_missing_or_broken_stamp_means_pure_python(tmp_path: Path, stamp: str | None) -> None:
    _tree(tmp_path)
    if stamp is not None:
        (tmp_path / "mesh" / _native.STAMP).write_text(stamp)
    use, why = _native._decide(tmp_path)
    assert not use
    assert "_native.json" in why or why.startswith("source changed")


@pytest.mark.parametrize("edited", ["mesh/core/node.py", "mesh/ids.py"])
def test_an_edited_source_or_dependency_means_pure_python(tmp_path: Path, edited: str) -> None:
    _tree(tmp_path)
    _stamp(tmp_path)
    with (tmp_path / edited).open("a") as f:
        f.write("x = 1\n")
    assert _native._decide(tmp_path) == (
        False,
        "source changed since it was compiled: pip install -e . again",
    )


def test_modules_above_the_simulator_do_not_matter(tmp_path: Path) -> None:
    _tree(tmp_path)
    _stamp(tmp_path)
    (tmp_path / "mesh" / "runtime" / "api.py").write_text("# edited\n")
    assert _native._decide(tmp_path) == (True, "compiled")


def test_the_environment_variable_forces_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path)
    _stamp(tmp_path)
    monkeypatch.setenv(_native.ENV, "1")
    assert _native._decide(tmp_path) == (False, f"{_native.ENV} is set")


def test_the_source_finder_loads_the_py_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    finder = _native._SourceFinder(tmp_path)
    spec = finder.find_spec("mesh.core.node", None)
    assert spec is not None
    assert spec.origin == str(tmp_path / "mesh" / "core" / "node.py")
    assert finder.find_spec("mesh.core.wire", None) is None


def test_this_process_decided_once() -> None:
    assert _native.mode == "compiled" or _native.mode.startswith("pure Python (")
    assert _native.select() == _native.mode
