"""Sweep plots as PNG (matplotlib, the optional `tpsload[plot]` extra).

Three pictures: throughput against load; TTFT and TPOT (p50, p99) against load; and
the latency-throughput curve, with the saturation point and the SLO frontier marked.
"""

from __future__ import annotations

import os
from typing import Any

from tpsload.analysis.sweep import csv_row

HINT = "plots need matplotlib: pip install 'tpsload[plot]' (the JSON and CSV have the same data)"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures(sweep: dict[str, Any]) -> dict[str, Any]:
    """name -> matplotlib Figure; the plotted series are exactly the sweep's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = sweep["key"]
    rows = [csv_row(lv, key) for lv in sweep["levels"] if not lv.get("partial")]
    x = [r["level"] for r in rows]
    label = "concurrency (requests in flight)" if key == "concurrency" else "offered rate (requests/s)"
    sat = (sweep.get("saturation") or {}).get("level")
    front = (sweep.get("slo_frontier") or {}).get("level")
    figs: dict[str, Any] = {}

    def mark(ax: Any, at_x: bool = True) -> None:
        if sat is not None and at_x:
            ax.axvline(sat, color="tab:red", linestyle="--", linewidth=1, label=f"saturation ({sat:g})")
        if front is not None and at_x:
            ax.axvline(front, color="tab:green", linestyle=":", linewidth=1.5, label=f"SLO frontier ({front:g})")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(x, [r["output_throughput"] for r in rows], "o-", label="output throughput")
    ax.plot(x, [r["steady_output_throughput"] for r in rows], "s--", label="steady-state throughput")
    mark(ax)
    ax.set(xlabel=label, ylabel="tokens/s", title="Aggregate output throughput")
    figs["throughput"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, metric, title in ((axes[0], "ttft", "Time to first token"), (axes[1], "tpot", "Time per output token")):
        ax.plot(x, [r[f"{metric}_p50_ms"] for r in rows], "o-", label="p50")
        ax.plot(x, [r[f"{metric}_p99_ms"] for r in rows], "^-", label="p99")
        mark(ax)
        ax.set(xlabel=label, ylabel="ms", title=title)
    figs["latency"] = fig

    fig, ax = plt.subplots(figsize=(7, 4.2))
    tput = [r["steady_output_throughput"] or r["output_throughput"] for r in rows]
    ax.plot(tput, [r["e2e_latency_p99_ms"] for r in rows], "o-", label="e2e latency p99")
    ax.plot(tput, [r["ttft_p99_ms"] for r in rows], "^-", label="TTFT p99")
    for r, t in zip(rows, tput, strict=True):
        ax.annotate(f"{r['level']:g}", (t, r["e2e_latency_p99_ms"] or 0), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
        if r["level"] == sat:
            ax.plot([t], [r["e2e_latency_p99_ms"]], "o", color="tab:red", markersize=12, fillstyle="none",
                    label="saturation")
        if r["level"] == front:
            ax.plot([t], [r["e2e_latency_p99_ms"]], "D", color="tab:green", markersize=10, fillstyle="none",
                    label="SLO frontier")
    ax.set(xlabel="throughput (tokens/s)", ylabel="ms", title="Latency against throughput")
    figs["latency_throughput"] = fig
    doubling = len(x) > 2 and min(x) > 0 and max(x) / min(x) >= 8
    for name, f in figs.items():
        for a in f.axes:
            if doubling and name != "latency_throughput":
                a.set_xscale("log", base=2)
                a.set_xticks(x, [f"{v:g}" for v in x])
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        f.tight_layout()
    return figs


def write(sweep: dict[str, Any], directory: str) -> list[str]:
    """Write the pictures as DIRECTORY/<name>.png; returns the paths."""
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, fig in figures(sweep).items():
        path = os.path.join(directory, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
