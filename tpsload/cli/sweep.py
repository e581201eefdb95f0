"""`tpsload sweep`: flags -> each level's RunConfig -> app.sweep (the levels, resume, mock) -> outputs -> exit code."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from tpsload.analysis import sweep as sw
from tpsload.app import sweep as app_sweep
from tpsload.cli import options
from tpsload.cli.run import mock_settings, report_internal_error
from tpsload.config import RunConfig, from_flags, parse_rate
from tpsload.errors import TpsloadError
from tpsload.render import json as export_json
from tpsload.render import png as export_png
from tpsload.render.console import console, render_sweep

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
    click.option("--records", "records_path", metavar="PATH",
                 help="One JSON line per request of every level, with the level as `level`, written as levels "
                      "finish."),
    click.option("--plot", "plot_dir", metavar="DIR", help="PNG plots into DIR (needs tpsload[plot])."),
    click.option("--resume", is_flag=True, help="Continue the sweep saved at --json: keep its finished levels."),
]


def level_config(o: dict[str, Any], given: set[str], key: str, value: float) -> RunConfig:
    """The level's flags parsed as `run` parses them (so -n and the defaults follow the level)."""
    flags = dict(o)
    if key == "concurrency":
        flags.update(concurrency=int(value), rate=None)
    else:
        flags.update(rate=float(value), concurrency=o["max_concurrency"])
    return from_flags(flags, given | {"concurrency"})


def sweep_options(o: dict[str, Any], given: set[str]) -> app_sweep.SweepOptions:
    if bool(o["levels_c"]) == bool(o["levels_r"]):
        raise TpsloadError("give the levels with either -c/--concurrency LEVELS or --rate LEVELS")
    key = "concurrency" if o["levels_c"] else "rate"
    levels = sw.parse_levels(o["levels_c"] or o["levels_r"], "--concurrency" if o["levels_c"] else "--rate",
                             integer=key == "concurrency")
    return app_sweep.SweepOptions(
        key=key, levels=tuple((v, level_config(o, given, key, v)) for v in levels),  # all validated before any runs
        repeat=o["repeat"], tolerance=parse_rate(o["saturation_tolerance"], "--saturation-tolerance") or 0.0,
        early_stop=not o["no_early_stop"], resume=o["resume"], json_path=o["json_path"], csv_path=o["csv_path"],
        records_path=o["records_path"], show_progress=not o["quiet"], mock=mock_settings(o))


@click.command("sweep")
@options.apply(options.COMMON + SWEEP_LOAD)
@click.pass_context
def sweep_command(ctx: click.Context, **o: Any) -> None:
    """Run the same load at rising levels; report the saturation point and the SLO frontier.

    Exit codes: 0 done (or stopped early by the verdict); 1 a level stopped early, had no successful
    request, or an error rate above --max-error-rate (the sweep stops there); 2 a problem with the input
    or the server's pre-flight; 130/143 interrupted (what was finished is saved; --resume continues).
    """
    out = app_sweep.run(sweep_options(o, options.given(ctx)))
    stdout_json = o["json_path"] == "-"
    con = console(sys.stderr if stdout_json else sys.stdout)
    if o["plot_dir"]:
        if export_png.available():
            for p in export_png.write(out.sweep, o["plot_dir"]):
                con.print(f"plot: {escape(p)}")
        else:
            con.print(f"[yellow]note[/]: {escape(export_png.HINT)}")
    if stdout_json:
        sys.stdout.write(export_json.dumps(out.sweep) + "\n")
    if not o["quiet"]:
        render_sweep(out.sweep, con.file)
    report_internal_error(out.internal_error)
    if out.message:
        click.echo(f"tpsload: {out.message}", err=True)
    ctx.exit(out.exit_code)
