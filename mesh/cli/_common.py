"""Shared pieces of the ``edgemesh`` command line: the click group, options, errors.


Used by every command module in :mod:`mesh.cli`; see its docstring for the rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mesh import __version__
from mesh.datadir import DataDir, default_data_dir

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED = 1
EXIT_USAGE = 2


class Failed(Exception):
    """An operation failed after printing its own report (e.g. ``verify --json``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, sort_keys=True))


def _fail(message: str) -> NoReturn:
    raise Failed(message)


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory [default: $EDGEMESH_HOME or ~/.local/share/edgemesh].",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(f)


def _data_dir(path: Path | None) -> DataDir:
    return DataDir(path if path is not None else default_data_dir())


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemesh")
def cli() -> None:
    """edgemesh: signed ML model releases, shared peer to peer across edge devices."""
