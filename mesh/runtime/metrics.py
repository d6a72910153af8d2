"""Counters of the local API and their Prometheus text form (format 0.0.4).

What it owns: request, error and latency counts per served model, API byte and
request counts, and rendering them with the node's active versions, swaps, peers and
mesh bytes.  Labels only ever carry names of models this node serves (anything else
is counted under ``model=""``), so clients cannot grow the label set.
"""

from __future__ import annotations

import math
from typing import Any

#: Latency histogram buckets (seconds): sub-millisecond to seconds, for CPU models.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Counters for ``/metrics``; labels only for models this node serves."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.http_requests = 0
        self.bytes_in = self.bytes_out = 0

    def observe(self, model: str, seconds: float, error: str | None) -> None:
        self.requests[model] = self.requests.get(model, 0) + 1
        if error is not None:
            self.errors[(model, error)] = self.errors.get((model, error), 0) + 1
        counts = self.latency.setdefault(model, [0] * (len(BUCKETS) + 1))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sum[model] = self.latency_sum.get(model, 0.0) + seconds


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    mt: Metrics,
    models: dict[str, dict[str, Any]],
    swaps: dict[str, int],
    node: dict[str, Any] | None,
) -> str:
    """The Prometheus text: ``models`` is the inference status, ``swaps`` the swap
    counts, ``node`` the node status (peers, bytes) when a driver gives one."""
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")

    family("edgemesh_inference_requests_total", "counter", "Inference requests by model.")
    for model, n in sorted(mt.requests.items()):
        lines.append(f'edgemesh_inference_requests_total{{model="{_esc(model)}"}} {n}')
    family("edgemesh_inference_errors_total", "counter", "Failed inference requests.")
    for (model, kind), n in sorted(mt.errors.items()):
        lines.append(f'edgemesh_inference_errors_total{{model="{_esc(model)}",kind="{kind}"}} {n}')
    family("edgemesh_inference_latency_seconds", "histogram", "Inference request latency.")
    for model, counts in sorted(mt.latency.items()):
        acc = 0
        lab = f'model="{_esc(model)}"'
        for bound, c in zip([*BUCKETS, math.inf], counts, strict=True):
            acc += c
            le = "+Inf" if bound == math.inf else repr(bound)
            lines.append(f'edgemesh_inference_latency_seconds_bucket{{{lab},le="{le}"}} {acc}')
        lines.append(f"edgemesh_inference_latency_seconds_sum{{{lab}}} {mt.latency_sum[model]:.6f}")
        lines.append(f"edgemesh_inference_latency_seconds_count{{{lab}}} {acc}")
    family("edgemesh_model_active_version", "gauge", "Active version per model.")
    for model, st in models.items():
        if st["active_version"] is not None:
            lines.append(
                f'edgemesh_model_active_version{{model="{_esc(model)}"}} {st["active_version"]}'
            )
    family("edgemesh_model_swaps_total", "counter", "Version swaps (incl. rollbacks).")
    for model, n in sorted(swaps.items()):
        lines.append(f'edgemesh_model_swaps_total{{model="{_esc(model)}"}} {n}')
    family("edgemesh_api_requests_total", "counter", "HTTP requests answered by the API.")
    lines.append(f"edgemesh_api_requests_total {mt.http_requests}")
    family("edgemesh_api_bytes_total", "counter", "HTTP bytes received and sent by the API.")
    lines.append(f'edgemesh_api_bytes_total{{direction="in"}} {mt.bytes_in}')
    lines.append(f'edgemesh_api_bytes_total{{direction="out"}} {mt.bytes_out}')
    if node is not None:
        st = node
        family("edgemesh_peers", "gauge", "Connected mesh peers.")
        lines.append(f"edgemesh_peers {len(st.get('peers', []))}")
        family("edgemesh_mesh_bytes_total", "counter", "Bytes moved over the mesh.")
        up, down = st.get("bytes_uploaded", 0), st.get("bytes_downloaded", 0)
        lines.append(f'edgemesh_mesh_bytes_total{{direction="uploaded"}} {up}')
        lines.append(f'edgemesh_mesh_bytes_total{{direction="downloaded"}} {down}')
    return "\n".join(lines) + "\n"
