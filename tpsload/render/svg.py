"""Charts as inline SVG: a report stays one self-contained file, with no library or URL.

`render` draws any `analysis.report.Chart` (the PNG renderer draws the same ones).
"""

from __future__ import annotations

import math
from html import escape
from typing import Callable, Sequence

from tpsload.analysis.numbers import fmt
from tpsload.analysis.report import SERIES_COLORS, Chart

COLORS = SERIES_COLORS
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 300, 64, 16, 30, 44
PW, PH = W - PAD_L - PAD_R, H - PAD_T - PAD_B


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def _open(title: str, y1: float) -> tuple[list[str], Callable[[float], float]]:
    """The chart's frame: title and horizontal grid with y labels; returns (parts, y -> pixel)."""

    def py(y: float) -> float:
        return PAD_T + PH - y / y1 * PH

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="chart" role="img" '
           f'aria-label="{escape(title)}">', f'<text x="{W / 2}" y="18" class="t">{escape(title)}</text>']
    for t in _ticks(0, y1):
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="g"/>'
                   f'<text x="{PAD_L - 6}" y="{py(t) + 4:.1f}" class="yl">{fmt(t)}</text>')
    return out, py


def _close(out: list[str], names: Sequence[str], ylabel: str) -> str:
    """Legend, y-axis label, end."""
    for k, name in enumerate(names):
        out.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 14 + 14 * k}" class="lg" '
                   f'fill="{COLORS[k % len(COLORS)]}">{escape(name)}</text>')
    out.append(f'<text x="14" y="{PAD_T + PH / 2}" class="al" transform="rotate(-90 14 {PAD_T + PH / 2})">'
               f'{escape(ylabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def _lines(c: Chart) -> str:
    ys = [y for _, vals in c.series for y in vals if y is not None]
    if not c.xs or not ys:
        return ""

    def scale(x: float) -> float:
        return math.log2(x) if c.log2_x else x

    x0, x1 = min(scale(x) for x in c.xs), max(scale(x) for x in c.xs)
    if not c.ticks_at_points:  # a measured x: room at both ends for the points' labels
        x0, x1 = x0 - (x1 - x0) * 0.05, x1 + (x1 - x0) * 0.05
    y1 = max(ys) * 1.1 or 1.0

    def px(x: float) -> float:
        return PAD_L + (0.5 if x1 == x0 else (scale(x) - x0) / (x1 - x0)) * PW

    out, py = _open(c.title, y1)
    raw0, raw1 = min(c.xs), max(c.xs)
    for x in (c.xs if c.ticks_at_points else _ticks(raw0, raw1, 4) if raw1 > raw0 else [raw0]):
        out.append(f'<text x="{px(x):.1f}" y="{H - PAD_B + 16}" class="xl">{fmt(x)}</text>')
    out.append(f'<text x="{PAD_L + PW / 2}" y="{H - 6}" class="al">{escape(c.xlabel)}</text>')
    for m in c.marks:
        if m.y is None:
            out.append(f'<line x1="{px(m.x):.1f}" x2="{px(m.x):.1f}" y1="{PAD_T}" y2="{PAD_T + PH}" '
                       f'stroke="{m.color}" stroke-dasharray="4 3"/><text x="{px(m.x) + 4:.1f}" y="{PAD_T + 12}" '
                       f'class="m" fill="{m.color}">{escape(m.label)}</text>')
        else:
            left = px(m.x) > PAD_L + PW / 2  # the label on the side with room
            anchor = ' text-anchor="end"' if left else ""
            out.append(f'<circle cx="{px(m.x):.1f}" cy="{py(m.y):.1f}" r="8" fill="none" stroke="{m.color}" '
                       f'stroke-width="2"/><text x="{px(m.x) + (-10 if left else 10):.1f}" y="{py(m.y) + 16:.1f}" '
                       f'class="m" fill="{m.color}"{anchor}>{escape(m.label)}</text>')
    for k, (_, vals) in enumerate(c.series):
        color = COLORS[k % len(COLORS)]
        pts = [(px(x), py(y)) for x, y in zip(c.xs, vals, strict=True) if y is not None]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
    if c.point_labels and c.series:
        first = c.series[0][1]
        out += [f'<text x="{px(x) + 4:.1f}" y="{py(y) - 4:.1f}" class="m">{escape(label)}</text>'
                for x, y, label in zip(c.xs, first, c.point_labels, strict=True) if y is not None]
    return _close(out, [name for name, _ in c.series], c.ylabel)


def _bars(c: Chart) -> str:
    ys = [y for _, vals in c.series for y in vals if y is not None]
    if not ys:
        return ""
    y1 = max(ys) * 1.15 or 1.0
    gw = PW / len(c.groups)
    bw = gw * 0.8 / max(1, len(c.series))
    out, py = _open(c.title, y1)
    for g, label in enumerate(c.groups):
        out.append(f'<text x="{PAD_L + gw * (g + 0.5):.1f}" y="{H - PAD_B + 16}" class="xl">{escape(label)}</text>')
        for k, (_, vals) in enumerate(c.series):
            v = vals[g]
            if v is None:
                continue
            x = PAD_L + gw * g + gw * 0.1 + bw * k
            out.append(f'<rect x="{x:.1f}" y="{py(v):.1f}" width="{bw - 2:.1f}" height="{PAD_T + PH - py(v):.1f}" '
                       f'fill="{COLORS[k % len(COLORS)]}"><title>{escape(fmt(v))}</title></rect>')
    return _close(out, [name for name, _ in c.series], c.ylabel)


def render(chart: Chart) -> str:
    """One chart as an <svg> element ('' when it has nothing to draw)."""
    return _bars(chart) if chart.bars else _lines(chart)
