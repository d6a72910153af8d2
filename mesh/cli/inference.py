"""Inference commands: ``edgemesh infer`` and ``edgemesh rollback`` (DESIGN §5).

Both talk to a running node's local API, found through ``--api URL`` or the
``node.json`` the node writes in its data dir.  ``rollback`` also works with no node
running: it changes the persisted active version, which the next start activates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import trio

from mesh.cli._common import _data_dir, _emit, _fail, cli, data_dir_option, json_option
from mesh.runtime.activefile import rollback_persisted
from mesh.runtime.v2client import ApiError, V2Client, error_message, parse_api

_PRINT_VALUES = 16  # values shown per output without --json


def _api_address(api: str | None, data_dir: Path | None, *, required: bool) -> str | None:
    if api is not None:
        return api
    dd = _data_dir(data_dir)
    node = dd.running_node()
    if node is None:
        if required:
            _fail(
                f"no edgemesh node is running for data dir {dd.root} (start one with "
                "'edgemesh join', or pass --api URL)"
            )
        return None
    if not isinstance(node.get("api"), str) or not node["api"]:
        # changing active.json under a running node would be overwritten by it
        _fail(
            f"the edgemesh node running for data dir {dd.root} (pid {node['pid']}) has no "
            "local API; restart it with --api HOST:PORT, or stop it first"
        )
    url: str = node["api"]
    return url


def _load_input(spec: str) -> tuple[str, np.ndarray[Any, Any]]:
    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise click.BadParameter(f"{spec!r} is not NAME=FILE.npy", param_hint="--input")
    try:
        arr = np.load(Path(file), allow_pickle=False)
    except FileNotFoundError:
        _fail(f"input file {file} does not exist")
    except (OSError, ValueError) as e:
        _fail(f"input file {file} is not a .npy array: {e}")
    if not isinstance(arr, np.ndarray):
        _fail(f"input file {file} holds several arrays; give one .npy file per input")
    return name, arr


@cli.command()
@click.argument("name")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    metavar="NAME=FILE.npy",
    help="A model input and the .npy file holding it (repeat for each input).",
)
@click.option(
    "--api", default=None, metavar="URL", help="The node's API, e.g. http://127.0.0.1:8000."
)
@data_dir_option
@json_option
def infer(
    name: str, inputs: tuple[str, ...], api: str | None, data_dir: Path | None, as_json: bool
) -> None:
    """Run one inference on the active version of model NAME on a running node."""
    arrays = dict(_load_input(s) for s in inputs)
    url = _api_address(api, data_dir, required=True)
    assert url is not None
    host, port = parse_api(url)

    async def run() -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
        async with V2Client(host, port) as c:
            return await c.infer(name, arrays, binary=True)

    try:
        version, outputs = trio.run(run)
    except ApiError as e:
        _fail(f"inference on {name!r} failed: {e}")
    if as_json:
        _emit(
            {
                "model": name,
                "model_version": version,
                "outputs": {
                    k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
                    for k, v in outputs.items()
                },
            }
        )
        return
    click.echo(f"model {name} v{version}")
    for k, v in outputs.items():
        flat = v.ravel()
        shown = np.array2string(flat[:_PRINT_VALUES], precision=6, separator=", ")
        more = f" ... ({flat.size} values)" if flat.size > _PRINT_VALUES else ""
        click.echo(f"{k}: {v.dtype}[{','.join(map(str, v.shape))}] = {shown}{more}")


@cli.command()
@click.argument("name")
@click.option(
    "--api", default=None, metavar="URL", help="The node's API, e.g. http://127.0.0.1:8000."
)
@data_dir_option
@json_option
def rollback(name: str, api: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Reactivate the previous version of model NAME.

    On a running node (found through --data-dir or given by --api) this happens at
    once; with no node running, the next start activates the previous version."""
    url = _api_address(api, data_dir, required=False)
    if url is None:
        dd = _data_dir(data_dir)
        version = rollback_persisted(dd, name)
        if as_json:
            _emit({"model": name, "active_version": version, "running": False})
        else:
            click.echo(
                f"model {name}: v{version} is now the active version in {dd.root}; no node is "
                "running, so the next start activates it"
            )
        return
    host, port = parse_api(url)

    async def run() -> Any:
        async with V2Client(host, port) as c:
            reply = await c.request("POST", f"/edgemesh/models/{name}/rollback")
            if reply.status != 200:
                raise ApiError(error_message(reply), reply.status)
            return reply.json()

    try:
        doc = trio.run(run)
    except ApiError as e:
        _fail(f"rollback of {name!r} failed: {e}")
    if as_json:
        _emit({"model": name, "active_version": doc["active_version"], "running": True})
    else:
        click.echo(f"model {name}: rolled back, v{doc['active_version']} is serving")
