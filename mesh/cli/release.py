"""Release commands: keygen, example-model, publish, verify, releases, gc, trust."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from mesh.cli._common import (
    _data_dir,
    _emit,
    _fail,
    _human_bytes,
    cli,
    data_dir_option,
    json_option,
)
from mesh.core.manifest import DEFAULT_CHUNK_SIZE
from mesh.core.trust import TrustStore
from mesh.crypto import PrivateKey, PublicKey
from mesh.datadir import DataDir, parse_patterns, trusted_key_from_spec
from mesh.errors import TrustError
from mesh.modelgen import write_example_model
from mesh.publish import publish as publish_release
from mesh.runtime.activefile import pinned_releases
from mesh.store.fs import FsStore

# -- keys ---


@cli.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file to create (KEYFILE.pub is written beside it).",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@json_option
def keygen(out: Path, force: bool, as_json: bool) -> None:
    """Create a publisher key pair (ECDSA P-256)."""
    key = PrivateKey.generate()
    pub = key.save(out, force=force)
    if as_json:
        _emit({"key_id": key.key_id.hex(), "private_key": str(out), "public_key": str(pub)})
    else:
        click.echo(f"key id      {key.key_id.hex()}")
        click.echo(f"private key {out}  (mode 0600: keep it secret)")
        click.echo(f"public key  {pub}  (give this to the nodes that should trust you)")


# -- example model ---


@cli.command("example-model")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--size-mb",
    type=click.FloatRange(0.001, 2047),
    default=1.0,
    show_default=True,
    help="Approximate size of the weights.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Weights seed: another seed gives another version of the same interface.",
)
@json_option
def example_model(out: Path, size_mb: float, seed: int, as_json: bool) -> None:
    """Write a runnable example ONNX model (an MLP: y = relu(x @ W + b))."""
    width = write_example_model(out, size_bytes=int(size_mb * 1024 * 1024), seed=seed)
    size = out.stat().st_size
    if as_json:
        _emit(
            {
                "path": str(out),
                "bytes": size,
                "input": f"x: float32[batch,{width}]",
                "output": f"y: float32[batch,{width}]",
            }
        )
    else:
        click.echo(
            f"wrote {out} ({_human_bytes(size)}): x float32[batch,{width}] -> "
            f"y float32[batch,{width}]"
        )


# -- publish ---


@cli.command()
@click.argument("model_file", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, help="Model name (a-z 0-9 . _ -).")
@click.option(
    "--version",
    "version",
    required=True,
    type=click.IntRange(min=1),
    help="Version number; must be above every stored version of this model.",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Publisher private key (from edgemesh keygen).",
)
@data_dir_option
@click.option("--mesh", "mesh_name", default="default", show_default=True, help="Mesh name.")
@click.option(
    "--chunk-size",
    type=int,
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Chunk size in bytes (power of two, 64 KiB .. 16 MiB).",
)
@click.option(
    "--breaking", is_flag=True, help="This version changes the model's inputs/outputs on purpose."
)
@click.option(
    "--no-load-check",
    is_flag=True,
    help="Skip loading the model in onnxruntime (structure is still checked).",
)
@json_option
def publish(
    model_file: Path,
    model: str,
    version: int,
    key_file: Path,
    data_dir: Path | None,
    mesh_name: str,
    chunk_size: int,
    breaking: bool,
    no_load_check: bool,
    as_json: bool,
) -> None:
    """Sign MODEL.onnx as version N of a model and store it as content-addressed chunks."""
    from mesh.runtime.onnx import load_check  # onnxruntime import is slow; only here

    signer = PrivateKey.load(key_file)
    dd = _data_dir(data_dir)
    start = time.perf_counter()
    with dd.open_store() as store:
        result = publish_release(
            store,
            model_file,
            mesh=mesh_name,
            model=model,
            version=version,
            signer=signer,
            created=int(time.time()),
            chunk_size=chunk_size,
            breaking=breaking,
            load_check=None if no_load_check else load_check,
        )
    if dd.add_trusted(signer.public_key, ("*",), label=f"publisher key {key_file.name}"):
        trust_note = f"key {signer.key_id.short()} added to {dd.trust_file}"
    else:
        trust_note = ""
    elapsed = time.perf_counter() - start
    m = result.release.manifest
    rate = result.bytes_hashed / elapsed if elapsed > 0 else 0.0
    if as_json:
        _emit(
            {
                "model": m.model,
                "version": m.version,
                "mesh": m.mesh,
                "release_id": m.release_id.hex(),
                "key_id": signer.key_id.hex(),
                "bytes": m.total_size,
                "chunk_size": m.chunk_size,
                "chunks_total": m.chunk_total,
                "chunks_new": result.chunks_new,
                "chunks_reused": result.chunks_reused,
                "files": [f.path for f in m.files],
                "load_checked": result.load_checked,
                "inputs": [t.describe() for t in m.interface.inputs],
                "outputs": [t.describe() for t in m.interface.outputs],
                "seconds": round(elapsed, 3),
                "data_dir": str(dd.root),
            }
        )
        return
    click.echo(f"published {m.model} v{m.version}  release {m.release_id.hex()}")
    click.echo(
        f"  {_human_bytes(m.total_size)} in {m.chunk_total} chunks of "
        f"{_human_bytes(m.chunk_size)} ({result.chunks_new} new, "
        f"{result.chunks_reused} already stored), {_human_bytes(rate)}/s"
    )
    for t in m.interface.inputs:
        click.echo(f"  input   {t.describe()}")
    for t in m.interface.outputs:
        click.echo(f"  output  {t.describe()}")
    if not result.load_checked and not no_load_check:
        click.echo(
            "  onnxruntime load check skipped (model too large); nodes check before activating"
        )
    click.echo(f"  signed by {signer.key_id.short()}, stored in {dd.store_root}")
    if trust_note:
        click.echo(f"  {trust_note}")


# -- verify ---


def _trust_from(specs: tuple[str, ...], dd: DataDir) -> TrustStore:
    if specs:
        return TrustStore(trusted_key_from_spec(s) for s in specs)
    return dd.load_trust()


@cli.command()
@click.option("--model", "model", required=True, help="Model name.")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    default=None,
    help="Version to verify [default: the newest stored].",
)
@data_dir_option
@click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="PUBFILE[:GLOB,...]",
    help="Trust this publisher key (optionally only for matching model names); "
    "default: the data dir's trust store.",
)
@json_option
def verify(
    model: str, version: int | None, data_dir: Path | None, trust: tuple[str, ...], as_json: bool
) -> None:
    """Check a stored release: publisher signature, trust, and every chunk's hash."""
    dd = _data_dir(data_dir)
    trust_store = _trust_from(trust, dd)
    store = FsStore(dd.store_root, readonly=True)
    report: dict[str, Any] = {"model": model, "ok": False}
    found = store.candidates(model, version)
    if not found:
        store.find_release(model, version)  # raises the precise "not found" error
    release, damage = found[0]
    problem = damage or ""
    m = release.manifest
    report.update(
        {
            "version": m.version,
            "release_id": m.release_id.hex(),
            "mesh": m.mesh,
            "chunks_total": m.chunk_total,
        }
    )
    try:
        signer = trust_store.check_release(release)
        report["signed_by"] = signer.hex()
    except TrustError as e:
        report["signed_by"] = None
        problem = f"{problem}; {e}" if problem else str(e)
    if not problem:
        result = store.verify_release(m.release_id)
        report["chunks_verified"] = result.chunks_verified
        report["bad_chunks"] = [
            {"index": b.index, "path": b.path, "chunk_id": b.chunk_id.hex(), "reason": b.reason}
            for b in result.bad
        ]
        if not result.ok:
            first = result.bad[0]
            more = f" (and {len(result.bad) - 1} more)" if len(result.bad) > 1 else ""
            problem = f"release {m.describe()}: {first.describe()}{more}; re-fetch or re-publish it"
    else:
        report["chunks_verified"] = 0
        report["bad_chunks"] = []
    report["ok"] = not problem
    if problem:
        report["error"] = problem
    if as_json:
        _emit(report)
    elif not problem:
        click.echo(f"ok: {m.model} v{m.version} release {m.release_id.hex()}")
        click.echo(
            f"  signed by trusted key {report['signed_by'][:12]}; "
            f"{m.chunk_total}/{m.chunk_total} chunks verified "
            f"({_human_bytes(m.total_size)})"
        )
    else:
        for b in report["bad_chunks"]:
            click.echo(
                f"  bad chunk #{b['index']} {b['chunk_id'][:12]} in {b['path']}: {b['reason']}"
            )
    if problem:
        _fail(problem)


# -- releases / gc ---


@cli.command()
@data_dir_option
@json_option
def releases(data_dir: Path | None, as_json: bool) -> None:
    """List the releases stored in the data dir."""
    dd = _data_dir(data_dir)
    store = FsStore(dd.store_root, readonly=True)
    infos = store.releases()
    if as_json:
        _emit(
            {
                "releases": [
                    {
                        "model": i.model,
                        "version": i.version,
                        "release_id": i.release_id.hex(),
                        "bytes": i.size,
                        "chunks_total": i.chunks_total,
                        "chunks_present": i.chunks_present,
                        "assembled": i.assembled,
                    }
                    for i in infos
                ],
                "damaged": store.damaged_releases(),
            }
        )
        return
    if not infos:
        click.echo(f"no releases in {dd.store_root}")
    for i in infos:
        click.echo(
            f"{i.model:<20} v{i.version:<6} {i.release_id.short()}  "
            f"{_human_bytes(i.size):>10}  {i.chunks_present}/{i.chunks_total} chunks"
        )
    for name, why in store.damaged_releases().items():
        click.echo(f"damaged release file {name[:12]}: {why}")


@cli.command()
@data_dir_option
@click.option(
    "--keep",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Versions to keep per model (at least the current and previous one).",
)
@json_option
def gc(data_dir: Path | None, keep: int, as_json: bool) -> None:
    """Remove old releases and every chunk no kept release references."""
    dd = _data_dir(data_dir)
    with dd.open_store() as store:
        # the active and previous versions stay, even when newer releases exist
        report = store.gc(keep=keep, pinned=pinned_releases(dd))
    if as_json:
        _emit(
            {
                "releases_removed": [r.hex() for r in report.releases_removed],
                "chunks_removed": report.chunks_removed,
                "bytes_freed": report.bytes_freed,
            }
        )
    else:
        click.echo(
            f"removed {len(report.releases_removed)} releases and "
            f"{report.chunks_removed} chunks, freed {_human_bytes(report.bytes_freed)}"
        )


# -- trust ---


@cli.group()
def trust() -> None:
    """Manage the publisher keys this data dir trusts."""


@trust.command("add")
@click.argument("pubfile", type=click.Path(path_type=Path))
@click.option(
    "--models",
    default="*",
    show_default=True,
    metavar="GLOB[,GLOB...]",
    help="Model names this key may sign.",
)
@data_dir_option
def trust_add(pubfile: Path, models: str, data_dir: Path | None) -> None:
    """Trust the publisher key in PUBFILE."""
    key = PublicKey.load(pubfile)
    dd = _data_dir(data_dir)
    patterns = parse_patterns(models)
    new = dd.add_trusted(key, patterns, label=pubfile.name)
    verb = "trusted" if new else "updated"
    click.echo(f"{verb} key {key.key_id.hex()} for models {', '.join(patterns)}")


@trust.command("list")
@data_dir_option
@json_option
def trust_list(data_dir: Path | None, as_json: bool) -> None:
    """List trusted publisher keys."""
    keys = _data_dir(data_dir).load_trust().keys()
    if as_json:
        _emit(
            {
                "keys": [
                    {"key_id": k.key_id.hex(), "models": list(k.patterns), "label": k.label}
                    for k in keys
                ]
            }
        )
        return
    for k in keys:
        click.echo(f"{k.key_id.hex()}  models: {', '.join(k.patterns)}  {k.label}")
    if not keys:
        click.echo("no trusted keys")


@trust.command("remove")
@click.argument("key_id")
@data_dir_option
def trust_remove(key_id: str, data_dir: Path | None) -> None:
    """Stop trusting a key (by id or unique id prefix)."""
    removed = _data_dir(data_dir).remove_trusted(key_id)
    click.echo(f"removed key {removed.hex()}")


# -- simulate ------------------------------------------------------------------------------
