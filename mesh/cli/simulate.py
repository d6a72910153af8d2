"""``edgemesh simulate``: run a scenario through the simulator and report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mesh.cli._common import (
    Failed,
    _human_bytes,
    cli,
)
from mesh.errors import EdgemeshError


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

    build = "compiled core" if reports[0]["core"] == "compiled" else reports[0]["core"]
    table = Table(title=f"edgemesh simulate {scenario.name} (seed {seed}, {build})")
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
