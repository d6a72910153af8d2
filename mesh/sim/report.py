"""The simulation report: the figures ``edgemesh simulate`` prints and writes as JSON.

Every report carries ``completion_s / lower_bound_s`` and
``seed_uploaded_bytes / model_bytes`` (DESIGN §4), plus per-node details.
"""

from __future__ import annotations

from typing import Any

from mesh import _native
from mesh.sim.engine import TIMELINE_BUCKET_S, RunResult, lower_bound


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def build_report(result: RunResult, *, wall_s: float) -> dict[str, Any]:
    sc = result.scenario
    nodes = result.nodes
    honest = [n for n in nodes[1:] if not n.hostile]
    present = [n for n in honest if not n.left]
    times = [n.completed_at for n in present if n.completed_at is not None]
    lb = lower_bound(sc, nodes)
    complete = len(times) == len(present)
    completion = max(times) if complete and times else None
    seed = nodes[0]
    report: dict[str, Any] = {
        "scenario": sc.name,
        "seed": result.seed,
        "strategy": result.strategy,
        "nodes": len(nodes) - 1,
        "honest_nodes": len(honest),
        "hostile_nodes": len(nodes) - 1 - len(honest),
        "nodes_present_at_end": len(present),
        "nodes_completed": len(times),
        "all_completed": complete,
        "model_bytes": sc.model_bytes,
        "chunk_bytes": sc.chunk_bytes,
        "lower_bound_s": round(lb, 4),
        "completion_s": None if completion is None else round(completion, 4),
        "completion_ratio": None if completion is None or lb <= 0 else round(completion / lb, 4),
        "completion_p50_s": _round(_pct(times, 0.5)),
        "completion_p90_s": _round(_pct(times, 0.9)),
        "seed_uploaded_bytes": seed.bytes_up,
        "seed_upload_ratio": round(seed.bytes_up / sc.model_bytes, 4),
        "total_transferred_bytes": result.total_transferred,
        "wasted_bytes": result.wasted_bytes,
        "lost_frames": result.lost_frames,
        "requests_timed_out": result.stats["timeouts"],
        "corrupt_chunks_detected": result.stats["corrupt_detected"],
        "events": result.events,
        "simulated_s": round(result.end_time, 4),
        "wall_s": round(wall_s, 3),
        # wall_s depends on it: "compiled" (mypyc, ADR 0008) or "pure Python (why)"
        "core": _native.mode,
        "trace_digest": result.digest,
        "seed_upload_timeline": {
            "bucket_s": TIMELINE_BUCKET_S,
            "bytes": result.seed_timeline,
        },
    }
    if sc.sites:
        report["wan_bytes"] = dict(result.wan_bytes)
        report["wan_ratio_per_site"] = {
            site: round(b / sc.model_bytes, 4) for site, b in result.wan_bytes.items()
        }
    if report["hostile_nodes"]:
        report["hostile"] = {
            "penalty_points_from_honest_nodes": round(result.hostile_penalties, 2),
            "bans_by_honest_nodes": result.hostile_bans,
        }
    report["per_node"] = [
        {
            "id": n.id,
            "class": n.klass,
            "site": n.site,
            "hostile": bool(n.hostile),
            "left": n.left,
            "joined_s": _round(n.joined_at),
            "completion_s": _round(n.completed_at),
            "downloaded_bytes": n.bytes_down,
            "uploaded_bytes": n.bytes_up,
        }
        for n in nodes[1:]
    ]
    return report


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
