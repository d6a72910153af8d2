"""The ``edgemesh`` command line (DESIGN §5).

The only module that knows about argv, exit codes and printing.  Each command parses
its options, calls into the library, and prints either human-readable lines or, with
``--json``, exactly one JSON object on stdout.  Every :class:`~mesh.errors.EdgemeshError`
and every usage mistake becomes one line on stderr and a non-zero exit status (1 for
a failed operation, 2 for a usage error); a traceback means a bug in edgemesh.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mesh import __version__
from mesh.core.manifest import DEFAULT_CHUNK_SIZE
from mesh.core.trust import TrustStore
from mesh.crypto import PrivateKey, PublicKey
from mesh.datadir import DataDir, default_data_dir, parse_patterns, trusted_key_from_spec
from mesh.errors import EdgemeshError, TrustError
from mesh.modelgen import write_example_model
from mesh.publish import publish as publish_release
from mesh.store.fs import FsStore

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
        report = store.gc(keep=keep)
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


@cli.command()
@click.argument("scenario_file", metavar="SCENARIO.toml", type=click.Path(path_type=Path))
@click.option("--seed", "seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--strategy",
    type=click.Choice(["swarm", "naive"]),
    default="swarm",
    show_default=True,
    help="swarm: peers share chunks; naive: all pull from the seed.",
)
@click.option(
    "--baseline",
    is_flag=True,
    help="Also run the naive strategy and show it beside the swarm (plot and table).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full report as JSON here ('-' for stdout).",
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG: completion CDF and seed upload over time.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(
    scenario_file: Path,
    seed: int,
    strategy: str,
    baseline: bool,
    json_out: Path | None,
    plot_out: Path | None,
    quiet: bool,
) -> None:
    """Simulate distributing a release over the network described in SCENARIO.toml."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from mesh.sim.engine import Simulation
    from mesh.sim.report import build_report
    from mesh.sim.scenario import load_scenario

    scenario = load_scenario(scenario_file)
    to_stdout = json_out is not None and str(json_out) == "-"
    console = Console(stderr=to_stdout)
    strategies = [strategy] + (["naive"] if baseline and strategy != "naive" else [])
    reports = []
    for strat in strategies:
        sim = Simulation(scenario, seed=seed, strategy=strat)
        start = time.perf_counter()
        with Progress(
            TextColumn(f"[bold]{scenario.name}[/] {strat}"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.total} nodes, t={task.fields[t]:.1f}s"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=quiet,
        ) as bar:
            task = bar.add_task("sim", total=scenario.node_count, done=0, t=0.0)

            def progress(
                now: float, done: int, total: int, task: Any = task, bar: Any = bar
            ) -> None:
                bar.update(task, completed=done, total=total, done=done, t=now)

            result = sim.run(progress)
        reports.append(build_report(result, wall_s=time.perf_counter() - start))

    table = Table(title=f"edgemesh simulate {scenario.name} (seed {seed})")
    table.add_column("figure")
    for rep in reports:
        table.add_column(rep["strategy"], justify="right")

    def row(name: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(name, *(fmt(r) for r in reports))

    def opt(v: Any, spec: str, unit: str = "") -> str:
        return "-" if v is None else f"{v:{spec}}{unit}"

    row("nodes completed", lambda r: f"{r['nodes_completed']}/{r['nodes_present_at_end']}")
    row("lower bound", lambda r: opt(r["lower_bound_s"], ".2f", " s"))
    row("completion (last)", lambda r: opt(r["completion_s"], ".2f", " s"))
    row("completion / lower bound", lambda r: opt(r["completion_ratio"], ".3f"))
    row(
        "completion p50 / p90",
        lambda r: f"{opt(r['completion_p50_s'], '.2f')} / {opt(r['completion_p90_s'], '.2f')} s",
    )
    row("seed upload / model", lambda r: f"{r['seed_upload_ratio']:.3f}")
    row("wasted", lambda r: _human_bytes(r["wasted_bytes"]))
    if scenario.sites:
        row(
            "WAN / model per site",
            lambda r: ", ".join(f"{k} {v:.2f}" for k, v in r["wan_ratio_per_site"].items()),
        )
    if reports[0].get("hostile"):
        row(
            "hostile: penalties / bans",
            lambda r: (
                f"{r['hostile']['penalty_points_from_honest_nodes']:.0f} / "
                f"{r['hostile']['bans_by_honest_nodes']}"
            ),
        )
    row("events / wall", lambda r: f"{r['events']} / {r['wall_s']:.1f} s")
    row("trace digest", lambda r: r["trace_digest"][:16])
    console.print(table)

    if plot_out is not None:
        from mesh.sim.plot import plot_reports

        plot_reports(reports, plot_out)
        console.print(f"plot written to {plot_out}")
    if json_out is not None:
        doc = reports[0] if len(reports) == 1 else {**reports[0], "baseline": reports[1]}
        text = json.dumps(doc, indent=1, sort_keys=True)
        if to_stdout:
            click.echo(text)
        else:
            try:
                json_out.write_text(text + "\n")
            except OSError as e:
                raise EdgemeshError(f"cannot write {json_out}: {e.strerror}") from None
            console.print(f"report written to {json_out}")
    if not reports[0]["all_completed"]:
        raise Failed(
            f"{reports[0]['nodes_present_at_end'] - reports[0]['nodes_completed']} node(s) did "
            f"not complete within the scenario's time limit ({scenario.time_limit_s:.0f} s)"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map errors to one stderr line and an exit status."""
    args = sys.argv[1:] if argv is None else argv
    prog = "edgemesh"
    try:
        cli.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else prog
        click.echo(f"{where}: error: {e.format_message()} (see '{where} --help')", err=True)
        return EXIT_USAGE
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}", err=True)
        return e.exit_code
    except (EdgemeshError, Failed) as e:
        click.echo(f"{prog}: error: {e}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
