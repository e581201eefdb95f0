"""Small charts as inline SVG: a report stays one self-contained file, with no library or URL."""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 300, 64, 16, 30, 44


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def _open(title: str, y1: float) -> tuple[list[str], Any]:
    """The chart's frame: title and horizontal grid with y labels; returns (parts, y -> pixel)."""
    ph = H - PAD_T - PAD_B

    def py(y: float) -> float:
        return PAD_T + ph - y / y1 * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="chart" role="img" '
           f'aria-label="{escape(title)}">', f'<text x="{W / 2}" y="18" class="t">{escape(title)}</text>']
    for t in _ticks(0, y1):
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="g"/>'
                   f'<text x="{PAD_L - 6}" y="{py(t) + 4:.1f}" class="yl">{_fmt(t)}</text>')
    return out, py


def _close(out: list[str], names: Sequence[str], ylabel: str) -> str:
    """Legend, y-axis label, end."""
    ph = H - PAD_T - PAD_B
    for k, name in enumerate(names):
        out.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 14 + 14 * k}" class="lg" '
                   f'fill="{COLORS[k % len(COLORS)]}">{escape(name)}</text>')
    out.append(f'<text x="14" y="{PAD_T + ph / 2}" class="al" transform="rotate(-90 14 {PAD_T + ph / 2})">'
               f'{escape(ylabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(title: str, xs: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]],
               xlabel: str, ylabel: str, marks: Sequence[tuple[str, float, str]] = ()) -> str:
    """Lines over shared x values; `marks` are labelled vertical lines (name, x, color)."""
    ys = [y for _, vals in series for y in vals if y is not None]
    if not xs or not ys:
        return ""
    x0, x1 = min(xs), max(xs)
    y1 = max(ys) * 1.1 or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + (0.5 if x1 == x0 else (x - x0) / (x1 - x0)) * pw

    out, py = _open(title, y1)
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{H - PAD_B + 16}" class="xl">{_fmt(x)}</text>')
    out.append(f'<text x="{PAD_L + pw / 2}" y="{H - 6}" class="al">{escape(xlabel)}</text>')
    for name, x, color in marks:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{PAD_T}" y2="{PAD_T + ph}" stroke="{color}" '
                   f'stroke-dasharray="4 3"/><text x="{px(x) + 4:.1f}" y="{PAD_T + 12}" class="m" '
                   f'fill="{color}">{escape(name)}</text>')
    for k, (_, vals) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        pts = [(px(x), py(y)) for x, y in zip(xs, vals, strict=True) if y is not None]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                   + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
    return _close(out, [name for name, _ in series], ylabel)


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
              ylabel: str) -> str:
    """Grouped bars: one group per label in `groups`, one bar per series."""
    ys = [y for _, vals in series for y in vals if y is not None]
    if not groups or not ys:
        return ""
    y1 = max(ys) * 1.15 or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    gw = pw / len(groups)
    bw = gw * 0.8 / max(1, len(series))
    out, py = _open(title, y1)
    for g, label in enumerate(groups):
        out.append(f'<text x="{PAD_L + gw * (g + 0.5):.1f}" y="{H - PAD_B + 16}" class="xl">{escape(label)}</text>')
        for k, (_, vals) in enumerate(series):
            v = vals[g]
            if v is None:
                continue
            x = PAD_L + gw * g + gw * 0.1 + bw * k
            out.append(f'<rect x="{x:.1f}" y="{py(v):.1f}" width="{bw - 2:.1f}" height="{PAD_T + ph - py(v):.1f}" '
                       f'fill="{COLORS[k % len(COLORS)]}"><title>{escape(_fmt(v))}</title></rect>')
    return _close(out, [name for name, _ in series], ylabel)
