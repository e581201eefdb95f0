"""`tpsload run`: flags -> RunConfig -> pre-flight -> runner -> records -> statistics -> reports."""

from __future__ import annotations

import sys
from typing import Any

import click

from tpsload.app.measure import measure_repeated
from tpsload.cli import options
from tpsload.config import RunConfig, from_flags
from tpsload.mock import MockProcess
from tpsload.render import json as export_json
from tpsload.render import jsonl as export_jsonl
from tpsload.render.console import render


def execute(cfg: RunConfig, json_path: str | None, records_path: str | None, quiet: bool,
            mock_options: dict[str, Any], fail_on_slo: bool = False, repeat: int = 1) -> int:
    mock = None
    if cfg.target.mock:
        mock = MockProcess(**mock_options).start()
        cfg = cfg.replace(base_url=mock.base_url)
    try:
        result, state = measure_repeated(cfg, repeat, show_progress=not quiet)
    finally:
        if mock:
            mock.stop()
    if json_path:
        export_json.write(result, json_path)
    if records_path:
        export_jsonl.write(state.records, state.t0, records_path)
    if not quiet:
        render(result, sys.stderr if json_path == "-" else sys.stdout)
    err = state.internal_error
    if err is not None:
        click.echo(f"tpsload: internal error ({err.__class__.__name__}: {err}); partial result written. "
                   "Rerun with --debug for a traceback.", err=True)
        raise err
    if state.signal is not None:
        return 128 + state.signal
    if state.stop_reason:
        click.echo(f"tpsload: stopped early: {state.stop_reason}", err=True)
        return 1
    s = result["summary"]
    if s["requests_ok"] == 0 and s["requests_failed"] > 0:
        return 1
    if fail_on_slo and result["slo"] and not result["slo"]["all_met"]:
        missed = [v["slo"] for v in result["slo"]["objectives"] if not v["met"]]
        click.echo(f"tpsload: SLO missed: {', '.join(missed)}", err=True)
        return 1
    return 0


@click.command("run")
@options.apply(options.COMMON + options.RUN_LOAD)
@click.pass_context
def run_command(ctx: click.Context, **o: Any) -> None:
    """Measure a server under load: TTFT, ITL, TPOT, latency and tokens/s."""
    cfg = from_flags(o, options.given(ctx))
    code = execute(cfg, o["json_path"], o["records_path"], o["quiet"],
                   {"ttft_ms": o["mock_ttft_ms"], "itl_ms": o["mock_itl_ms"]}, fail_on_slo=o["fail_on_slo"],
                   repeat=o["repeat"])
    ctx.exit(code)
