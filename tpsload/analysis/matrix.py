"""Server configurations compared: what each carries, and which carries the most. Pure.

A matrix result holds a run or a sweep per configuration. Each configuration is judged as a
sweep is (analysis.sweep: best throughput, saturation point, SLO frontier), and the configurations
against each other as `tpsload compare` judges two results (analysis.compare: a ratio with a 95 %
bootstrap interval, from repetitions where there are several), at the load each carries: with SLOs
the frontier (the most load meeting every objective), without them its best level.
"""

from __future__ import annotations

from typing import Any

from tpsload.analysis import compare as cmp
from tpsload.analysis import sweep as sw
from tpsload.analysis.numbers import fmt


def levels(conf: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A configuration's measured levels, each a run result with its load under `key` (a run is one level)."""
    r = conf.get("result")
    if not r:
        return []
    if r.get("kind") == "sweep":
        return list(r.get("levels") or [])
    return [{**r, key: (r.get("config") or {}).get(key)}]


def _at(level: dict[str, Any] | None, metric: str, stat: str) -> float | None:
    if level is None:
        return None
    v = level["summary"].get(metric)
    return v.get(stat) if v else None


def judge(conf: dict[str, Any], key: str, tolerance: float) -> dict[str, Any]:
    """One configuration: best throughput (and where), saturation point, SLO frontier, the throughput
    and TTFT/TPOT there. `capacity` is what the verdict ranks: the throughput at the frontier when
    SLOs were given (None when no level met them), else the best throughput."""
    lvs = levels(conf, key)
    done = sw.finished(lvs)
    out: dict[str, Any] = {"name": conf["name"], "status": conf["status"], "levels": [lv[key] for lv in done],
                           "best_level": None, "best_throughput": None, "saturation_level": None,
                           "frontier_level": None, "frontier_throughput": None, "ttft_p99_ms": None,
                           "tpot_p50_ms": None, "slos": False, "capacity": None, "capacity_level": None,
                           "startup_s": conf.get("startup_s")}
    if not done:
        return out
    sat = sw.saturation(lvs, key, tolerance)
    if sat:
        out.update(best_level=sat["best_level"], best_throughput=sat["best_throughput"])
        if sat["saturated"]:
            out["saturation_level"] = sat["level"]
    front = sw.slo_frontier(lvs, key)
    out["slos"] = front is not None
    at = None
    if front is not None:
        if front.get("level") is not None:
            out.update(frontier_level=front["level"], frontier_throughput=front["throughput"])
            at = next(lv for lv in done if lv[key] == front["level"])
    else:
        at = next(lv for lv in done if lv[key] == out["best_level"])
    if at is not None:
        out.update(ttft_p99_ms=_at(at, "ttft_ms", "p99"), tpot_p50_ms=_at(at, "tpot_ms", "p50"),
                   capacity=sw.throughput(at), capacity_level=at[key])
    return out


def _metric(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The throughput the verdicts use (analysis.sweep.throughput): steady state where both have it."""
    steady = all(x["summary"].get("steady_output_throughput") is not None for x in (a, b))
    return "steady_output_throughput" if steady else "output_throughput"


def verdict(matrix: dict[str, Any], tolerance: float = 0.05, min_effect: float = 0.05) -> dict[str, Any]:
    """Per configuration (`configurations`, as `judge`), then which carries the most load within the
    SLOs (or the most throughput, without SLOs) and by how much more than the runner-up, with the
    95 % interval of that ratio; `significant` as `tpsload compare` calls it."""
    key = matrix["key"]
    judged = [judge(c, key, tolerance) for c in matrix["configurations"]]
    out: dict[str, Any] = {"basis": None, "best": None, "runner_up": None, "winner": None, "ratio": None,
                           "ci95": None, "significant": None, "metric": None, "text": "", "configurations": judged}
    measured = [j for j in judged if j["levels"]]
    if not measured:
        out["text"] = "no configuration was measured"
        return out
    slos = any(j["slos"] for j in measured)
    out["basis"] = "slo_frontier" if slos else "best_throughput"
    ranked = sorted((j for j in measured if j["capacity"] is not None), key=lambda j: -j["capacity"])
    load = "the most load within the SLOs" if slos else "the most throughput"
    if not ranked:
        out["text"] = "no configuration met every SLO at any level"
        return out
    best = ranked[0]
    out["best"] = best["name"]
    where = f"{fmt(best['capacity'], 0)} tok/s at {sw.name(key, best['capacity_level'])}"
    if len(ranked) == 1:
        out["winner"] = best["name"]
        others = [j["name"] for j in measured if j is not best]
        why = f" ({', '.join(others)} met no SLO at any level)" if others else " (the only configuration measured)"
        out["text"] = f"{best['name']} carries {load}: {where}{why}"
        return out
    second = ranked[1]
    out["runner_up"] = second["name"]
    confs = {c["name"]: c for c in matrix["configurations"]}
    a = next(lv for lv in levels(confs[best["name"]], key) if lv[key] == best["capacity_level"])
    b = next(lv for lv in levels(confs[second["name"]], key) if lv[key] == second["capacity_level"])
    metric = _metric(a, b)
    row = next(r for r in cmp.compare_pair(b, a, min_effect) if r.metric == metric)
    out.update(metric=metric, ratio=row.ratio, ci95=list(row.ci) if row.ci else None, significant=row.significant)
    ci = f" (95% CI {row.ci[0]:.2f}–{row.ci[1]:.2f}×)" if row.ci else " (no interval: too few requests)"
    ratio = "–" if row.ratio is None else f"{row.ratio:.2f}×"
    there = f"{fmt(second['capacity'], 0)} tok/s at {sw.name(key, second['capacity_level'])}"
    if row.significant:
        out["winner"] = best["name"]
        out["text"] = f"{best['name']} carries {load}: {where}, {ratio} {second['name']}'s {there}{ci}"
    else:
        out["text"] = (f"no significant difference between {best['name']} ({where}) and {second['name']} "
                       f"({there}): {ratio}{ci}")
    return out


def failures(matrix: dict[str, Any]) -> list[tuple[str, str]]:
    """The configurations that failed or were interrupted: (name, why)."""
    return [(c["name"], str(c.get("error") or c["status"])) for c in matrix["configurations"]
            if c["status"] != "ok"]


def verdicts(matrix: dict[str, Any]) -> list[tuple[str, str]]:
    """A matrix's conclusion in words, then each configuration that failed and why: (label, text)."""
    v = matrix.get("verdict") or verdict(matrix)
    out = [("Verdict", v["text"])] if v.get("text") else []
    out += [(f"{name} failed" if not why.startswith("interrupted") else name, why) for name, why in failures(matrix)]
    if matrix.get("partial"):
        out.append(("Matrix", f"PARTIAL: {matrix.get('stop_reason')}"))
    return out


def table(matrix: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The matrix table (header, rows), one row per configuration."""
    key = matrix["key"]
    v = matrix.get("verdict") or verdict(matrix)
    header = ["configuration", "status", "start-up s", "best tok/s", f"at {key}", "saturates at",
              "SLO frontier", "tok/s there", "TTFT p99 ms", "TPOT p50 ms"]
    rows = []
    for j in v["configurations"]:
        front = fmt(j["frontier_level"]) if j["slos"] else "–"
        if j["slos"] and j["frontier_level"] is None:
            front = "none met"
        rows.append([j["name"], j["status"], fmt(j["startup_s"], 1), fmt(j["best_throughput"], 0),
                     fmt(j["best_level"]), fmt(j["saturation_level"]), front, fmt(j["frontier_throughput"], 0),
                     fmt(j["ttft_p99_ms"], 1), fmt(j["tpot_p50_ms"], 1)])
    return header, rows


CSV_LEAD = ("configuration", "status")


def csv_clash(names: list[str]) -> str | None:
    """A parameter name that cannot be a CSV column of its own: the CSV already has that column."""
    return next((n for n in names if n in CSV_LEAD or n in sw.CSV_COLUMNS), None)


def csv_columns(matrix: dict[str, Any]) -> list[str]:
    """The configuration's name, its parameters, its status, then a sweep CSV's columns (one script reads both)."""
    return [CSV_LEAD[0], *matrix["params"], CSV_LEAD[1], *sw.CSV_COLUMNS]


def csv_rows(matrix: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per configuration and measured level, as a sweep's CSV has per level; a configuration that
    measured nothing (its server would not start) still has its row, its numbers empty."""
    key = matrix["key"]
    rows: list[dict[str, Any]] = []
    for c in matrix["configurations"]:
        lead = {CSV_LEAD[0]: c["name"], **c["params"], CSV_LEAD[1]: c["status"]}
        rows += [{**lead, **sw.csv_row(lv, key)} for lv in levels(c, key)] or [lead]
    return rows
