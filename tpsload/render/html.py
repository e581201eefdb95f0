"""A report as one self-contained HTML file: inline CSS and SVG charts, no scripts, fonts or URLs."""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from tpsload.analysis import report
from tpsload.analysis.sweep import csv_row
from tpsload.render import svg

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f6f6f6}
.worse{color:#b00020}.better{color:#0a7a28}.warn{color:#9a6700}.note{color:#555}
svg.chart{width:100%;max-width:760px;height:auto;display:block;margin:1em 0}
svg .t{font-size:14px;text-anchor:middle;font-weight:600}svg .g{stroke:#e5e5e5}
svg .yl{font-size:11px;text-anchor:end}svg .xl{font-size:11px;text-anchor:middle}
svg .al{font-size:12px;text-anchor:middle}svg .lg{font-size:12px;text-anchor:end}svg .m{font-size:11px}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>")
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>")
    return "".join(out) + "</table>"


def _run_charts(named: Sequence[tuple[str, dict[str, Any]]]) -> str:
    runs = [(n, r) for n, r in named if r.get("kind") != "sweep"]
    if not runs:
        return ""
    groups = ["TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "E2E p99"]
    keys = [("ttft_ms", "p50"), ("ttft_ms", "p99"), ("tpot_ms", "p50"), ("tpot_ms", "p99"),
            ("e2e_latency_ms", "p50"), ("e2e_latency_ms", "p99")]
    lat = [(n, [(r["summary"].get(k) or {}).get(q) for k, q in keys]) for n, r in runs]
    thr = [(n, [r["summary"].get("output_throughput"), r["summary"].get("steady_output_throughput")])
           for n, r in runs]
    # TTFT and TPOT differ by orders of magnitude: two charts keep both readable
    return (svg.bar_chart("Latency percentiles", groups[:2] + groups[4:], [(n, v[:2] + v[4:]) for n, v in lat], "ms")
            + svg.bar_chart("Time per output token", groups[2:4], [(n, v[2:4]) for n, v in lat], "ms")
            + svg.bar_chart("Throughput", ["output", "steady state"], thr, "tokens/s"))


def _sweep_charts(name: str, sweep: dict[str, Any]) -> str:
    key = sweep["key"]
    rows = [csv_row(lv, key) for lv in sweep["levels"] if not lv.get("partial")]
    xs = [r["level"] for r in rows]
    marks = []
    if (sweep.get("saturation") or {}).get("level") is not None:
        marks.append(("saturation", sweep["saturation"]["level"], "#d62728"))
    if (sweep.get("slo_frontier") or {}).get("level") is not None:
        marks.append(("SLO frontier", sweep["slo_frontier"]["level"], "#2ca02c"))
    label = "concurrency" if key == "concurrency" else "rate (requests/s)"
    return (svg.line_chart(f"{name}: throughput", xs, [("output", [r["output_throughput"] for r in rows]),
                                                      ("steady state", [r["steady_output_throughput"] for r in rows])],
                           label, "tokens/s", marks)
            + svg.line_chart(f"{name}: latency", xs, [("TTFT p50", [r["ttft_p50_ms"] for r in rows]),
                                                     ("TTFT p99", [r["ttft_p99_ms"] for r in rows]),
                                                     ("TPOT p50", [r["tpot_p50_ms"] for r in rows])],
                             label, "ms", marks))


def dumps(named: Sequence[tuple[str, dict[str, Any]]]) -> str:
    body = ["<h1>tpsload report</h1>"]
    body.append(_run_charts(named))
    for name, r in named:
        body.append(f"<h2>{escape(name)}</h2>")
        body.append(_table((), report.describe(r)))
        if r.get("kind") == "sweep":
            body.append(_sweep_charts(name, r))
            body.append(_table([c for c, _ in report.LEVEL_COLUMNS], report.level_rows(r)))
            for key in ("saturation", "slo_frontier"):
                if r.get(key):
                    body.append(f"<p><b>{'Saturation' if key == 'saturation' else 'SLO frontier'}:</b> "
                                f"{escape(r[key]['text'])}</p>")
        else:
            t = report.run_tables(r)
            body.append(_table((), t["top"]))
            body.append(_table(("metric", "unit", "mean", "p50", "p90", "p99", "max"), t["dists"]))
            if t["slo"]:
                body.append(_table(("objective", "measured", "verdict"), t["slo"],
                                   ["" if row[2] == "met" else "worse" for row in t["slo"]]))
            body.append(f'<p class="note">{escape(t["health"])}</p>')
    for c in report.comparison(named):
        body.append(f"<h2>{escape(c['title'])}</h2>")
        for w in c["incomparable"]:
            body.append(f'<p class="warn">not comparable: {escape(w)}</p>')
        body.append(_table(("metric", "base", "other", "ratio", "95% CI", "significant"), c["rows"],
                           [row[5] if row[5] != "–" else "" for row in c["rows"]]))
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>tpsload report</title>'
            f"<style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n")
