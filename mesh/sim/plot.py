"""Plotting a simulation report: completion-time CDF and the seed's upload over time.

Uses matplotlib's non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.errors import ConfigError


def plot_reports(reports: list[dict[str, Any]], out: Path) -> None:
    """Draw one or more reports (e.g. swarm and naive) into a PNG at ``out``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for rep in reports:
        times = sorted(
            n["completion_s"]
            for n in rep["per_node"]
            if n["completion_s"] is not None and not n["hostile"]
        )
        label = f"{rep['strategy']} (seed upload {rep['seed_upload_ratio']:.2f}x model)"
        if times:
            ys = [(i + 1) / len(times) for i in range(len(times))]
            ax1.step(times, ys, where="post", label=label)
        tl = rep["seed_upload_timeline"]
        bucket = tl["bucket_s"]
        xs = [i * bucket for i in range(len(tl["bytes"]))]
        ax2.plot(xs, [b * 8 / bucket / 1e6 for b in tl["bytes"]], label=rep["strategy"])
    lb = reports[0]["lower_bound_s"]
    ax1.axvline(lb, color="grey", linestyle="--", label=f"lower bound {lb:.1f} s")
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("fraction of nodes with the verified release")
    ax1.set_title(f"{reports[0]['scenario']}: completion CDF")
    ax1.legend(loc="lower right")
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("seed upload (Mbit/s)")
    ax2.set_title("seed uplink use")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise ConfigError(f"cannot write plot {out}: {e.strerror}") from None
    finally:
        plt.close(fig)
