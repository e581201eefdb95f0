"""A report as Markdown, for pasting into an issue or a wiki."""

from __future__ import annotations

from typing import Any, Sequence

from tpsload.analysis import matrix, report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def dumps(named: Sequence[tuple[str, dict[str, Any]]]) -> str:
    out = ["# tpsload report\n"]
    for name, r in named:
        out.append(f"## {name}\n")
        if r.get("kind") == "matrix":
            out.append(_table(("", ""), report.matrix_describe(r)))
            out.append(_table(*matrix.table(r)))
            out += [f"**{label}:** {text}\n" for label, text in matrix.verdicts(r)]
            continue
        out.append(_table(("", ""), report.describe(r)))
        if r.get("kind") == "sweep":
            out.append(_table(*report.level_table(r)))
            turns = report.sweep_turn_table(r)
            if turns:
                out.append(_table(*turns))
            out += [f"**{label}:** {text}\n" for label, text in report.sweep_verdicts(r)]
        else:
            t = report.run_tables(r)
            out.append(_table(("", ""), t["top"]))
            out.append(_table(("metric", "unit", "mean", "p50", "p90", "p99", "max"), t["dists"]))
            if t["turns"]:
                out.append(_table(*t["turns"]))
            if r.get("stages"):
                out.append(_table(*report.stage_table(r)))
            if t["slo"]:
                out.append(_table(("objective", "measured", "verdict"), t["slo"]))
            out.append(f"{t['health']}\n")
    for c in report.comparison(named):
        out.append(f"## {c['title']}\n")
        for w in c["incomparable"]:
            out.append(f"> not comparable: {w}\n")
        out.append(_table(("metric", "base", "other", "ratio", "95% CI", "significant"), c["rows"]))
    return "\n".join(out)
