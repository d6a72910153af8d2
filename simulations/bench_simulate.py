"""Benchmark: how fast the simulator plays a scenario, and how good the swarm is on it.

What it measures: one run of each given scenario (default ``lan-100``) at one seed,
in this process, with the real ``MeshNode`` and wire codec.  Reported per scenario:
``completion_ratio`` (completion / lower bound) and ``seed_upload_ratio`` (both
machine-independent), ``events``, and the run's CPU seconds (``time.process_time``) --
as they are and as a ratio against a fixed pure-Python calibration workload (heap
pushes and pops of tuples, dict updates: what the event loop does) timed in the same
run.  The machines this runs on are shared and busy, so wall seconds say little; the
calibrated ratio compares runs across machines and loads much better.

Run (from the repository root)::

    .venv/bin/python simulations/bench_simulate.py [SCENARIO ...] [--seed 1]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import time
from pathlib import Path

from mesh.sim.engine import Simulation, lower_bound
from mesh.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def calibrate(n: int = 400_000) -> float:
    """CPU seconds of a fixed loop shaped like the simulator's: the benchmark's unit."""
    start = time.process_time()
    heap: list[tuple[float, int, int, object]] = []
    table: dict[int, float] = {}
    t = 0.0
    for i in range(n):
        heapq.heappush(heap, (t + (i * 7919 % 1000) / 1000.0, i, i & 7, None))
        table[i & 1023] = table.get(i & 1023, 0.0) + 1.0
        if len(heap) > 1000:
            t = heapq.heappop(heap)[0]
    return time.process_time() - start


def run(name: str, seed: int) -> dict[str, object]:
    path = Path(name)
    if not path.exists():
        path = ROOT / "configs" / "scenarios" / f"{name}.toml"
    scenario = load_scenario(path)
    sim = Simulation(scenario, seed=seed)
    start = time.process_time()
    result = sim.run()
    cpu = time.process_time() - start
    honest = [n for n in result.nodes[1:] if not n.hostile and not n.left]
    done = [n.completed_at for n in honest if n.completed_at is not None]
    bound = lower_bound(scenario, result.nodes)
    last = max(done) if len(done) == len(honest) and done else None
    seed_up = result.nodes[0].bytes_up
    return {
        "scenario": scenario.name,
        "completion_ratio": None if last is None else round(last / bound, 4),
        "seed_upload_ratio": round(seed_up / scenario.model_bytes, 4),
        "events": result.events,
        "cpu_s": round(cpu, 2),
        "trace_digest": result.digest[:16],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=["lan-100"])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    unit = min(calibrate() for _ in range(3))
    out = []
    for name in args.scenarios:
        fig = run(name, args.seed)
        fig["cpu_vs_calibration"] = round(float(fig["cpu_s"]) / unit, 1)  # type: ignore[arg-type]
        print(json.dumps(fig), flush=True)
        out.append(fig)
    unit_after = min(calibrate() for _ in range(3))
    print(
        json.dumps(
            {
                "seed": args.seed,
                "calibration_cpu_s": round(unit, 4),
                "calibration_drift": round(unit_after / unit, 3),
                "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
                "runs": out,
            }
        )
    )


if __name__ == "__main__":
    main()
