"""One measured run: pre-flight -> workload -> load -> records -> result. Always returns what it has."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Any

import click

from tpsload.analysis import stats, timeline
from tpsload.app.checkpoint import Checkpoints
from tpsload.app.counts import resolve_counts
from tpsload.app.result import REPEAT_INDEX_STEP, build_result, combine_repeats
from tpsload.config import RunConfig, TpsloadError
from tpsload.core.client import make_session
from tpsload.core.live import LiveStats
from tpsload.core.runner import RunState, run_async
from tpsload.core.signals import Interrupted, Interrupts, interruptible
from tpsload.render import json as export_json
from tpsload.render.jsonl import RecordsFile
from tpsload.render.live import DEFAULT_STATUS_INTERVAL_S, live_view
from tpsload.scale import run_load
from tpsload.servers.metrics import MetricsScraper, Scrape, measured_window, server_metrics
from tpsload.servers.preflight import preflight
from tpsload.workload import prepare, seeds
from tpsload.workload.checks import context_warning, workload_checks
from tpsload.workload.sessions import Sessions
from tpsload.workload.spec import Workload
from tpsload.workload.tokenizer import Tokenizer


@dataclass(frozen=True)
class Watch:
    """How a run is watched while it goes on, beyond what it measures."""

    live: LiveStats | None = None  # fed as requests finish (the live view, --serve-metrics); one per run command
    checkpoint_path: str | None = None  # --json: the partial result is rewritten there while the load runs
    checkpoint_interval_s: float = 0.0  # 0: no checkpoints
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S  # off a terminal, a status line this often (0: none)


async def measure(cfg: RunConfig, show_progress: bool, watch: Watch = Watch(), records: RecordsFile | None = None
                  ) -> tuple[dict[str, Any], RunState]:
    """Pre-flight, run the load, and turn the records into the result. Always returns what it has.

    Ctrl-C is heard from the first line on: during pre-flight or preparation it ends the run
    at once (nothing is in flight yet), during the load it stops it (core/signals.py).
    `records`: the --records file, written as requests finish.
    """
    started_at = dt.datetime.now(dt.timezone.utc)
    state = RunState(live=watch.live or (LiveStats() if show_progress else None))
    if state.live is not None:
        state.live.lags = state.lags.lags_ms
    if records is not None:
        if records.t0 is None:
            records.t0 = state.t0
        state.records.sink = records
    interrupts = Interrupts(cfg.load.grace_s, notice=lambda m: click.echo(m, err=True))
    interrupts.install()
    try:
        return await _measure(cfg, show_progress, watch, started_at, state, interrupts)
    finally:
        interrupts.remove()


async def _measure(cfg: RunConfig, show_progress: bool, watch: Watch, started_at: dt.datetime, state: RunState,
                   interrupts: Interrupts) -> tuple[dict[str, Any], RunState]:
    server: dict[str, Any] = {"base_url": cfg.target.base_url}
    warnings: list[str] = []
    workload_desc: dict[str, Any] = {}
    model = cfg.target.model or ""
    progress = None
    tokenizer: Tokenizer | None = None
    workload: Workload | None = None
    scraper: MetricsScraper | None = None
    scrape: Scrape | None = None
    checkpoints: Checkpoints | None = None
    try:
        async with make_session(4, min(cfg.limits.timeout_s, 30.0), cfg.target.insecure) as probe:
            info = await interruptible(interrupts, preflight(cfg, probe))
        model = info.model
        server.update(info.server)
        warnings += info.warnings
        for w in info.warnings:
            click.echo(f"warning: {w}", err=True)
        tokenizer = Tokenizer(cfg.workload.tokenizer, notice=lambda m: click.echo(m, err=True))
        async with make_session(8, min(cfg.limits.timeout_s, 60.0), cfg.target.insecure) as prep:
            workload = await interruptible(interrupts, prepare.build(cfg, prep, model, server, tokenizer))
        cfg = prepare.fitted(cfg, workload)  # a trace replay: its rate and count are known now
        if cfg.workload.save_prompts:
            export_json.write_text(cfg.workload.save_prompts, workload.dump())
        workload_desc = workload.describe()
        ctx_warning = context_warning(server, workload)
        if ctx_warning:
            warnings.append(ctx_warning)
            click.echo(f"warning: {ctx_warning}", err=True)
        if show_progress and state.live is not None:
            total = (cfg.load.requests + cfg.load.warmup) if cfg.load.requests is not None else None
            if total is not None and isinstance(workload, Sessions):
                total = workload.total_turns(total)  # --turns: -n counts conversations
            progress = live_view(sys.stderr, state.live, total, None if total else cfg.load.duration_s,
                                 watch.status_interval_s)
        if cfg.report.server_metrics_s and not cfg.load.single:
            # the server's own view of the run, polled on its own session beside the load (not for
            # the original script's one request: one request says nothing about a queue)
            scraper = MetricsScraper.for_run(cfg, cfg.report.server_metrics_s, llama_cpp=info.llama_cpp)
            hint = await scraper.start()
            if hint:
                click.echo(hint, err=True)
            if progress is not None:
                progress.watch_server(scraper.scrape)
        if watch.checkpoint_path and watch.checkpoint_path != "-" and watch.checkpoint_interval_s > 0 \
                and not cfg.load.single:
            checkpoints = Checkpoints(
                watch.checkpoint_path, watch.checkpoint_interval_s, state,
                lambda snap, info: build_result(cfg, snap, workload_desc, server, started_at, warnings, model,
                                                checkpoint=info),
                notice=lambda m: click.echo(m, err=True))
            checkpoints.start()
        await run_load(cfg, workload, info.llama_cpp, state, progress, interrupts)
    except Interrupted:
        pass  # before the load: nothing was measured, and the result says so
    except TpsloadError:
        raise
    except Exception as e:  # a bug of ours must not lose what was measured
        state.stop(f"internal error: {e.__class__.__name__}: {e}")
        state.internal_error = e
    finally:
        if checkpoints is not None:
            await checkpoints.stop()
        if progress:
            progress.close()
        if scraper is not None:
            scrape = await scraper.stop()
    if interrupts.signal is not None:
        state.signal = interrupts.signal
        state.stop(interrupts.reason or "interrupted")
    if tokenizer is None:
        tokenizer = Tokenizer(cfg.workload.tokenizer, notice=lambda m: click.echo(m, err=True))
    await resolve_counts(cfg, state.records.unsettled(), state.records.settle, server, model, tokenizer)
    if state.records.sink_error:
        warnings.append(f"--records stopped being written ({state.records.sink_error}); the file lacks "
                        "the requests that finished after that")
        click.echo(f"warning: {warnings[-1]}", err=True)
    if workload is not None:
        observed, more = workload_checks(state.records, workload)
        workload_desc["observed"] = observed
        warnings += more
    sm = None
    window = measured_window(state.records)
    if scrape is not None and window is not None:
        ok = [r for r in state.records if r.ok and not r.warmup]
        sm = server_metrics(scrape, *window, t0_ns=state.t0,
                            client_requests=[(r.t_end, r.output_tokens or 0) for r in state.records
                                             if r.ok and r.t_end is not None],
                            client_ttft_ms=stats.dist(stats.per_request(ok).column("ttft_ms")),
                            concurrency=None if cfg.load.rate else cfg.load.concurrency)
        if sm.get("samples"):
            sm["samples"]["client"] = timeline.client_series(state.records, state.t0, sm["samples"]["t_ms"])
        warnings += sm["warnings"]
        for w in sm["warnings"]:
            click.echo(f"warning: {w}", err=True)
    result = build_result(cfg, state, workload_desc, server, started_at, warnings, model, sm)
    state.records.release()  # the records read back for the summary: the rows stay
    return result, state


def measure_repeated(cfg: RunConfig, repeat: int, show_progress: bool, watch: Watch = Watch(),
                     records: RecordsFile | None = None
                     ) -> tuple[dict[str, Any], RunState]:
    """`repeat` independent runs (stopping at the first that stopped early), combined into one result."""
    started_at = dt.datetime.now(dt.timezone.utc)
    reps = []
    for k in range(repeat):
        # each repetition gets its own prompts: a repeat must not find the last one's in the prompt cache
        rep_cfg = cfg.replace(seed=seeds.derive(cfg.workload.seed, repetition=k)) if k else cfg
        if repeat > 1 and show_progress:
            click.echo(f"repetition {k + 1} of {repeat}", err=True)
        if records is not None:  # as combine_repeats numbers them
            records.index_offset = k * REPEAT_INDEX_STEP
        reps.append(run_async(measure(rep_cfg, show_progress=show_progress, watch=watch, records=records)))
        if reps[-1][1].stop_reason:
            break
    return reps[0] if len(reps) == 1 else combine_repeats(cfg, reps, started_at)
