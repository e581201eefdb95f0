"""`tpsload run`: flags -> RunConfig -> app.run (pre-flight, load, result) -> outputs -> exit code."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from tpsload.app import run as app_run
from tpsload.app.measure import Watch
from tpsload.app.target import MockSettings
from tpsload.cli import options
from tpsload.config import from_flags
from tpsload.core.live import LiveStats
from tpsload.render import json as export_json
from tpsload.render import jsonl as export_jsonl
from tpsload.render import prometheus
from tpsload.render.console import render


@click.command("run")
@options.apply(options.COMMON + options.RUN_LOAD)
@click.pass_context
def run_command(ctx: click.Context, **o: Any) -> None:
    """Measure a server under load: TTFT, ITL, TPOT, latency and tokens/s."""
    cfg = from_flags(o, options.given(ctx))
    live = LiveStats() if o["serve_metrics"] or not o["quiet"] else None
    records = export_jsonl.RecordsFile(o["records_path"]) if o["records_path"] else None
    with contextlib.ExitStack() as stack:
        endpoint = None
        if o["serve_metrics"] and live is not None:  # opened first: a port in use is said before the run
            endpoint = stack.enter_context(prometheus.MetricsEndpoint(live, *prometheus.parse_address(
                o["serve_metrics"])))
            click.echo(f"serving live metrics at {endpoint.url}", err=True)
        watch = Watch(live=live, checkpoint_path=o["json_path"], checkpoint_interval_s=o["checkpoint_interval"],
                      status_interval_s=o["status_interval"])
        out = app_run.run(cfg, app_run.RunOptions(repeat=o["repeat"], fail_on_slo=o["fail_on_slo"],
                                                  show_progress=not o["quiet"], mock=mock_settings(o), watch=watch,
                                                  records=records))
        if records is not None:  # written as the requests finished
            records.close()
        if o["json_path"]:
            export_json.write(out.result, o["json_path"])
        if endpoint is not None:
            endpoint.linger(o["serve_metrics_linger"])
    if not o["quiet"]:
        render(out.result, sys.stderr if o["json_path"] == "-" else sys.stdout)
    report_internal_error(out.state.internal_error)
    if out.message:
        click.echo(f"tpsload: {out.message}", err=True)
    ctx.exit(out.exit_code)


def mock_settings(o: dict[str, Any]) -> MockSettings:
    return MockSettings(ttft_ms=o["mock_ttft_ms"], itl_ms=o["mock_itl_ms"])


def report_internal_error(err: BaseException | None) -> None:
    """A bug of ours: say so after the (partial) result was written, then raise it (exit 1)."""
    if err is not None:
        click.echo(f"tpsload: internal error ({err.__class__.__name__}: {err}); partial result written. "
                   "Rerun with --debug for a traceback.", err=True)
        raise err
