"""Charts as PNG (matplotlib, the optional `tpsload[plot]` extra).

`render` draws the panels of any `analysis.report.Chart` figure (the SVG renderer draws the same
charts); `write` saves a sweep's pictures (analysis.report.sweep_charts).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from tpsload.analysis.report import Chart, sweep_charts

HINT = "plots need matplotlib: pip install 'tpsload[plot]' (the JSON and CSV have the same data)"
STYLES = ("o-", "^-", "s--", "D:", "v-")


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _panel(ax: Any, c: Chart) -> None:
    if c.bars:
        width = 0.8 / max(1, len(c.series))
        for k, (name, vals) in enumerate(c.series):
            ax.bar([g + width * (k - (len(c.series) - 1) / 2) for g in range(len(c.groups))],
                   [v if v is not None else 0 for v in vals], width, label=name)
        ax.set_xticks(range(len(c.groups)), c.groups)
    else:
        for k, (name, vals) in enumerate(c.series):
            ax.plot(c.xs, [float("nan") if v is None else v for v in vals], STYLES[k % len(STYLES)], label=name)
        if c.point_labels and c.series:
            for x, y, label in zip(c.xs, c.series[0][1], c.point_labels, strict=True):
                ax.annotate(label, (x, y or 0), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for m in c.marks:
            if m.y is None:
                ax.axvline(m.x, color=m.color, linestyle="--", linewidth=1, label=m.label)
            else:
                ax.plot([m.x], [m.y], "o", color=m.color, markersize=12, fillstyle="none", label=m.label)
        if c.log2_x:
            ax.set_xscale("log", base=2)
        if c.ticks_at_points:
            ax.set_xticks(c.xs, [f"{x:g}" for x in c.xs])
    ax.set(xlabel=c.xlabel, ylabel=c.ylabel, title=c.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def render(panels: Sequence[Chart]) -> Any:
    """Charts side by side in one matplotlib Figure; the plotted series are exactly the charts' numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 if len(panels) == 1 else 5 * len(panels), 4.2),
                             squeeze=False)
    for ax, c in zip(axes[0], panels, strict=True):
        _panel(ax, c)
    fig.tight_layout()
    return fig


def figures(sweep: dict[str, Any]) -> dict[str, Any]:
    """name -> matplotlib Figure of a sweep."""
    return {name: render(panels) for name, panels in sweep_charts(sweep).items()}


def write(sweep: dict[str, Any], directory: str) -> list[str]:
    """Write a sweep's pictures as DIRECTORY/<name>.png; returns the paths."""
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, fig in figures(sweep).items():
        path = os.path.join(directory, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
