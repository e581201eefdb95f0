"""A report as one self-contained HTML file: inline CSS and SVG charts, no scripts, fonts or URLs."""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from tpsload.analysis import matrix, report
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


def dumps(named: Sequence[tuple[str, dict[str, Any]]]) -> str:
    body = ["<h1>tpsload report</h1>"]
    body += [svg.render(c) for c in report.run_charts(named)]
    for name, r in named:
        body.append(f"<h2>{escape(name)}</h2>")
        if r.get("kind") == "matrix":
            body.append(_table((), report.matrix_describe(r)))
            body += [svg.render(c) for c in report.matrix_charts(r)]
            header, rows = matrix.table(r)
            body.append(_table(header, rows, ["" if row[1] == "ok" else "worse" for row in rows]))
            body += [f"<p><b>{escape(label)}:</b> {escape(text)}</p>" for label, text in matrix.verdicts(r)]
            continue
        body.append(_table((), report.describe(r)))
        if r.get("kind") == "sweep":
            body += [svg.render(c) for panels in report.sweep_charts(r).values() for c in panels]
            header, rows = report.level_table(r)
            body.append(_table(header, rows, ["worse" if row[-1] == "missed" else "" for row in rows]))
            turns = report.sweep_turn_table(r)
            if turns:
                body.append(_table(*turns))
            body += [f"<p><b>{escape(label)}:</b> {escape(text)}</p>" for label, text in report.sweep_verdicts(r)]
        else:
            t = report.run_tables(r)
            body.append(_table((), t["top"]))
            body.append(_table(("metric", "unit", "mean", "p50", "p90", "p99", "max"), t["dists"]))
            body += [svg.render(c) for c in report.timeline_charts(r)]
            if t["turns"]:
                body.append(_table(*t["turns"]))
            if r.get("stages"):
                body.append(_table(*report.stage_table(r)))
            body += [svg.render(c) for c in report.traffic_charts(r)]
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
