"""`tpsload compare BASE.json OTHER.json [...]`: is it really faster, and by how much?"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tpsload.analysis import compare as cmp
from tpsload.analysis.numbers import fmt
from tpsload.config import parse_rate
from tpsload.errors import TpsloadError
from tpsload.render import json as export_json


def load(path: str, matrix: bool = False) -> dict[str, Any]:
    """A run or sweep result (or, with `matrix`, a matrix result too); one line when it is not."""
    try:
        with open(path) as fh:
            r = json.load(fh)
    except OSError as e:
        raise TpsloadError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:
        raise TpsloadError(f"{path}: not JSON ({e})") from None
    if isinstance(r, dict) and r.get("kind") == "matrix" and matrix:
        return r
    if isinstance(r, dict) and r.get("kind") == "matrix":
        raise TpsloadError(f"{path}: a matrix result: its verdict already compares its configurations "
                           "(`tpsload report` shows it)")
    if not isinstance(r, dict) or not ("summary" in r or r.get("kind") == "sweep"):
        raise TpsloadError(f"{path}: not a tpsload result (run or sweep JSON)")
    return r


def row_json(r: cmp.Row) -> dict[str, Any]:
    return {"metric": r.metric, "unit": r.unit, "base": r.base, "other": r.other, "ratio": r.ratio,
            "ci95": list(r.ci) if r.ci else None, "significant": r.significant, "better": r.better,
            "note": r.note}


def pairs(base: dict[str, Any], other: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(level name, base, other) to compare: the runs, or a sweep's levels present in both."""
    if base.get("kind") == "sweep" and other.get("kind") == "sweep":
        lb, lo = cmp.levels(base), cmp.levels(other)
        return [(f"{base['key']} {k:g}", lb[k], lo[k]) for k in sorted(set(lb) & set(lo))]
    if base.get("kind") == "sweep" or other.get("kind") == "sweep":
        raise TpsloadError("compare a run with a run, or a sweep with a sweep")
    return [("", base, other)]


def table(rows: list[cmp.Row], base_name: str, other_name: str) -> Table:
    t = Table(show_edge=False, header_style="bold")
    for col in ("metric", escape(base_name), escape(other_name), "ratio", "95% CI", ""):
        t.add_column(col, justify="left" if col in ("metric", "") else "right")
    for r in rows:
        ci = f"{r.ci[0]:.3f} – {r.ci[1]:.3f}" if r.ci else "–"
        verdict = ""
        if r.significant:
            verdict = "[green]better[/]" if r.better else "[red]worse[/]"
        elif r.note:
            verdict = f"[dim]{escape(r.note)}[/]"
        elif r.ratio is not None and r.ci:
            verdict = "[dim]no significant change[/]"
        unit = f" {r.unit}" if r.unit else ""
        t.add_row(r.metric + unit, fmt(r.base), fmt(r.other), "–" if r.ratio is None else f"{r.ratio:.3f}×",
                  ci, verdict)
    return t


@click.command("compare")
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("others", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--fail-if", "gates", multiple=True, metavar="'METRIC < -5%'",
              help="Exit 1 when a significant change crosses this (repeatable): 'output_throughput < -5%', "
                   "'ttft_p99 > +10%'.")
@click.option("--min-effect", default="5%", show_default=True, metavar="SHARE",
              help="Smallest change called significant, even when its interval excludes 1.")
@click.option("--json", "json_path", metavar="PATH", help="Write the comparison as JSON ('-' = stdout).")
def compare_command(base: str, others: tuple[str, ...], gates: tuple[str, ...], min_effect: str,
                    json_path: str | None) -> None:
    """Compare results with BASE: each metric as a ratio with a 95 % bootstrap interval."""
    parsed = [cmp.parse_gate(g) for g in gates]
    effect = parse_rate(min_effect, "--min-effect") or 0.0
    b = load(base)
    out = sys.stderr if json_path == "-" else sys.stdout
    con = Console(file=out, highlight=False, soft_wrap=True, width=None if out.isatty() else 140)
    report: dict[str, Any] = {"base": cmp.name(b, base), "min_effect": effect, "comparisons": []}
    failures: list[str] = []
    for path in others:
        o = load(path)
        why = cmp.incomparable(b, o)
        for w in why:
            con.print(f"[yellow]warning[/]: {escape(cmp.name(o, path))} is not comparable with "
                      f"{escape(cmp.name(b, base))}: {escape(w)}")
        entry: dict[str, Any] = {"other": cmp.name(o, path), "incomparable": why, "levels": []}
        for level, lb, lo in pairs(b, o):
            rows = cmp.compare_pair(lb, lo, effect)
            title = f"{cmp.name(o, path)} vs {cmp.name(b, base)}" + (f" at {level}" if level else "")
            con.print(f"[bold]{escape(title)}[/]")
            con.print(table(rows, cmp.name(b, base), cmp.name(o, path)))
            failures += cmp.gate_failures(parsed, rows, title)
            entry["levels"].append({"level": level or None, "rows": [row_json(r) for r in rows]})
        report["comparisons"].append(entry)
    report["gate_failures"] = failures
    if json_path:
        export_json.write(report, json_path)
    for f in failures:
        click.echo(f"tpsload: regression: {f}", err=True)
    sys.exit(1 if failures else 0)
