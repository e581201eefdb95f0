"""`tpsload sweep`: the same run at rising load, then where it saturates and how much load meets the SLOs."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tpsload import __version__
from tpsload.analysis import sweep as sw
from tpsload.app.measure import measure_repeated
from tpsload.cli import options
from tpsload.config import RunConfig, from_flags, parse_rate
from tpsload.errors import TpsloadError
from tpsload.mock import MockProcess
from tpsload.render import csv as export_csv
from tpsload.render import json as export_json
from tpsload.render import png as export_png

SWEEP_LOAD = [
    click.option("-c", "--concurrency", "levels_c", metavar="LEVELS",
                 help="Closed-loop levels: 1,2,4,8 or 1..64 (doubling)."),
    click.option("--rate", "levels_r", metavar="LEVELS",
                 help="Open-loop levels in requests/s: 0.5,1,2 or 1..16 (doubling)."),
    click.option("--max-concurrency", type=click.IntRange(min=1), default=None,
                 help="With --rate: cap on requests in flight."),
    click.option("--arrival", type=click.Choice(["poisson", "constant", "gamma"]), default="poisson",
                 show_default=True),
    click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
    click.option("-n", "--requests", type=click.IntRange(min=1), default=None,
                 help="Measured requests per level [default 4 x concurrency, or 10 s of --rate]."),
    click.option("--duration", default=None, help="Length of each level instead (30s, 2m)."),
    click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Warm-up requests before each level."),
    click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Repetitions of each level; each level then reports their spread."),
    click.option("--slo", multiple=True, metavar="OBJECTIVE",
                 help="Objective per level, repeatable (ttft_p99<=2s, tpot_p50<=80ms, error_rate<=1%)."),
    click.option("--saturation-tolerance", default="5%", show_default=True, metavar="SHARE",
                 help="The saturation point is the smallest level within this share of the best throughput."),
    click.option("--no-early-stop", is_flag=True,
                 help="Run every level, even after throughput stopped growing and SLOs were missed."),
    click.option("--json", "json_path", metavar="PATH", help="The sweep as JSON, rewritten after every level."),
    click.option("--csv", "csv_path", metavar="PATH", help="One row per level, rewritten after every level."),
    click.option("--plot", "plot_dir", metavar="DIR", help="PNG plots into DIR (needs tpsload[plot])."),
    click.option("--resume", is_flag=True, help="Continue the sweep saved at --json: keep its finished levels."),
]

LEVEL_SEED_STEP = 100_003

# settings that must match for --resume to continue an earlier sweep
RESUME_KEYS = ("base_url", "model", "endpoint", "stream", "max_tokens", "ignore_eos", "input_tokens", "prompt",
               "prompt_file", "dataset", "requests", "duration_s", "warmup", "slos", "arrival", "seed")


def level_config(o: dict[str, Any], given: set[str], key: str, value: float, index: int) -> RunConfig:
    # Each level gets prompts of its own (a seed derived from --seed and the level), or a
    # level would find the previous level's prompts in the server's prompt cache.
    flags = dict(o, seed=o["seed"] + LEVEL_SEED_STEP * index)
    if key == "concurrency":
        flags.update(concurrency=int(value), rate=None)
    else:
        flags.update(rate=float(value), concurrency=o["max_concurrency"])
    flags.update(json_path=None, records_path=None)
    cfg = from_flags(flags, given | {"concurrency"})
    return cfg.replace(single=False)


def load_resume(path: str | None, key: str, cfg: RunConfig) -> list[dict[str, Any]]:
    if not path or not os.path.exists(path):
        raise TpsloadError("--resume needs --json PATH of the sweep to continue, and that file must exist")
    try:
        with open(path) as fh:
            old = json.load(fh)
    except ValueError as e:
        raise TpsloadError(f"--resume: {path} is not a sweep result ({e})") from None
    if old.get("kind") != "sweep" or old.get("key") != key:
        raise TpsloadError(f"--resume: {path} is not a {key} sweep")
    mine = cfg.public()
    for k in RESUME_KEYS:
        theirs = (old.get("base_config") or {}).get(k)
        if k != "base_url" and theirs != mine.get(k) and not (k == "slos" and list(mine.get(k)) == theirs):
            raise TpsloadError(f"--resume: the saved sweep used {k}={theirs!r}, this one {mine.get(k)!r}")
    return [lv for lv in old.get("levels", []) if not lv.get("partial")]


def row_table(sweep: dict[str, Any]) -> Table:
    key = sweep["key"]
    t = Table(show_edge=False, header_style="bold")
    for col in (key, "ok", "failed", "out tok/s", "steady tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
                "SLO"):
        t.add_column(col, justify="right")
    for lv in sweep["levels"]:
        r = sw.csv_row(lv, key)

        def f(v: Any, d: int = 1) -> str:
            return "–" if v is None else f"{v:,.{d}f}"

        slo = "–" if r["slo_all_met"] is None else ("met" if r["slo_all_met"] else "[red]missed[/]")
        t.add_row(f"{r['level']:g}" + (" (partial)" if r["partial"] else ""), str(r["requests_ok"]),
                  str(r["requests_failed"]), f(r["output_throughput"], 0), f(r["steady_output_throughput"], 0),
                  f(r["ttft_p50_ms"]), f(r["ttft_p99_ms"]), f(r["tpot_p50_ms"]), f(r["tpot_p99_ms"]), slo)
    return t


def analyse(sweep: dict[str, Any], tolerance: float) -> None:
    sweep["saturation"] = sw.saturation(sweep["levels"], sweep["key"], tolerance)
    sweep["slo_frontier"] = sw.slo_frontier(sweep["levels"], sweep["key"])


def save(sweep: dict[str, Any], json_path: str | None, csv_path: str | None) -> None:
    if json_path:
        export_json.write(sweep, json_path)
    if csv_path:
        export_csv.write(sweep, csv_path)


@click.command("sweep")
@options.apply(options.COMMON + SWEEP_LOAD)
@click.pass_context
def sweep_command(ctx: click.Context, **o: Any) -> None:
    """Run the same load at rising levels; report the saturation point and the SLO frontier."""
    given = options.given(ctx)
    if bool(o["levels_c"]) == bool(o["levels_r"]):
        raise TpsloadError("give the levels with either -c/--concurrency LEVELS or --rate LEVELS")
    key = "concurrency" if o["levels_c"] else "rate"
    levels = sw.parse_levels(o["levels_c"] or o["levels_r"], "--concurrency" if o["levels_c"] else "--rate",
                             integer=key == "concurrency")
    tolerance = parse_rate(o["saturation_tolerance"], "--saturation-tolerance") or 0.0
    json_path, csv_path = o["json_path"], o["csv_path"]
    configs = [level_config(o, given, key, v, i) for i, v in enumerate(levels)]  # all validated before any runs
    base = configs[0]
    out = sys.stderr if json_path == "-" else sys.stdout
    con = Console(file=out, highlight=False, soft_wrap=True, width=None if out.isatty() else 140)
    mock = MockProcess(ttft_ms=o["mock_ttft_ms"], itl_ms=o["mock_itl_ms"]).start() if base.target.mock else None
    sweep: dict[str, Any] = {
        "tpsload_version": __version__, "kind": "sweep", "key": key, "partial": False, "stop_reason": None,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_config": {k: v for k, v in base.public().items() if k not in ("concurrency", "rate")},
        "levels": load_resume(json_path, key, base) if o["resume"] else [],
    }
    done = {lv[key] for lv in sweep["levels"]}
    code = 0
    try:
        for value, cfg in zip(levels, configs, strict=True):
            if value in done:
                continue
            if mock:
                cfg = cfg.replace(base_url=mock.base_url)
            con.print(f"[bold]{key} {value:g}[/] …")
            result, state = measure_repeated(cfg, o["repeat"], show_progress=not o["quiet"])
            result[key] = value
            sweep["levels"].append(result)
            sweep["levels"].sort(key=lambda lv: lv[key])
            analyse(sweep, tolerance)
            # after every level: an interrupted sweep keeps what it finished
            save(sweep, None if json_path == "-" else json_path, csv_path)
            if state.signal is not None:
                sweep["partial"], sweep["stop_reason"] = True, result["stop_reason"]
                code = 128 + state.signal
                break
            why = None if o["no_early_stop"] else sw.should_stop(sweep["levels"], tolerance)
            if why:
                sweep["stop_reason"] = f"stopped early: {why}"
                break
    finally:
        if mock:
            mock.stop()
    analyse(sweep, tolerance)
    save(sweep, None if json_path == "-" else json_path, csv_path)
    if o["plot_dir"]:
        if export_png.available():
            for p in export_png.write(sweep, o["plot_dir"]):
                con.print(f"plot: {escape(p)}")
        else:
            con.print(f"[yellow]note[/]: {escape(export_png.HINT)}")
    if json_path == "-":
        sys.stdout.write(export_json.dumps(sweep) + "\n")
    if not o["quiet"]:
        con.print(row_table(sweep))
        for name in ("saturation", "slo_frontier"):
            if sweep.get(name):
                con.print(f"[bold]{'Saturation' if name == 'saturation' else 'SLO frontier'}[/]: "
                          f"{escape(sweep[name]['text'])}")
        if sweep["stop_reason"]:
            con.print(f"[yellow]{escape(sweep['stop_reason'])}[/]")
    ctx.exit(code)
