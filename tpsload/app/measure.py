"""One measured run: pre-flight -> workload -> load -> records -> result. Always returns what it has."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

import click

from tpsload.app.counts import resolve_counts
from tpsload.app.result import build_result, combine_repeats
from tpsload.config import RunConfig, TpsloadError
from tpsload.core.client import make_session, open_client
from tpsload.core.runner import Runner, RunState
from tpsload.render import json as export_json
from tpsload.render.console import LiveProgress
from tpsload.scale.processes import run_workers, workers_for
from tpsload.servers.preflight import preflight
from tpsload.workload import prepare, seeds
from tpsload.workload.checks import context_warning, workload_checks
from tpsload.workload.spec import Workload
from tpsload.workload.tokenizer import Tokenizer


async def measure(cfg: RunConfig, show_progress: bool) -> tuple[dict[str, Any], RunState]:
    """Pre-flight, run the load, and turn the records into the result. Always returns what it has."""
    started_at = dt.datetime.now(dt.timezone.utc)
    state = RunState()
    runner = Runner(cfg, None, None, state)  # type: ignore[arg-type]
    runner.install_signals()
    server: dict[str, Any] = {"base_url": cfg.target.base_url}
    warnings: list[str] = []
    workload_desc: dict[str, Any] = {}
    model = cfg.target.model or ""
    progress = None
    tokenizer: Tokenizer | None = None
    workload: Workload | None = None
    client = None
    try:
        async with make_session(4, min(cfg.limits.timeout_s, 30.0), cfg.target.insecure) as probe:
            info = await preflight(cfg, probe)
        model = info.model
        server.update(info.server)
        warnings += info.warnings
        for w in info.warnings:
            click.echo(f"warning: {w}", err=True)
        tokenizer = Tokenizer(cfg.workload.tokenizer, notice=lambda m: click.echo(m, err=True))
        async with make_session(8, min(cfg.limits.timeout_s, 60.0), cfg.target.insecure) as prep:
            workload = await prepare.build(cfg, prep, model, server, tokenizer)
        if cfg.workload.save_prompts:
            export_json.write_text(cfg.workload.save_prompts, workload.dump())
        workload_desc = workload.describe()
        ctx_warning = context_warning(server, workload)
        if ctx_warning:
            warnings.append(ctx_warning)
            click.echo(f"warning: {ctx_warning}", err=True)
        if show_progress:
            total = (cfg.load.requests + cfg.load.warmup) if cfg.load.requests is not None else None
            progress = LiveProgress(sys.stderr, total, None if total else cfg.load.duration_s)
        if cfg.scale.ray_address:
            from tpsload.scale.ray_actors import run_ray

            runner.remove_signals()
            await run_ray(cfg, workload, info.llama_cpp, workers_for(cfg), state, progress)
        elif workers_for(cfg) > 1:
            runner.remove_signals()
            await run_workers(cfg, workload, info.llama_cpp, workers_for(cfg), state, progress)
        else:
            client = open_client(cfg, info.llama_cpp)
            runner.client = client
            runner.workload = workload
            runner.progress = progress
            await runner.run()
    except TpsloadError:
        raise
    except Exception as e:  # a bug of ours must not lose what was measured
        runner.stop(f"internal error: {e.__class__.__name__}: {e}")
        state.cpu_s, state.wall_s = state.cpu.read()
        state.internal_error = e
    finally:
        runner.remove_signals()
        if client:
            await client.close()
        if progress:
            progress.close()
    if tokenizer is None:
        tokenizer = Tokenizer(cfg.workload.tokenizer, notice=lambda m: click.echo(m, err=True))
    await resolve_counts(cfg, state.records, server, model, tokenizer)
    if workload is not None:
        observed, more = workload_checks(state.records, workload)
        workload_desc["observed"] = observed
        warnings += more
    result = build_result(cfg, state, workload_desc, server, started_at, warnings)
    result["model"] = model
    return result, state


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure_repeated(cfg: RunConfig, repeat: int, show_progress: bool) -> tuple[dict[str, Any], RunState]:
    """`repeat` independent runs (stopping at the first that stopped early), combined into one result."""
    started_at = dt.datetime.now(dt.timezone.utc)
    reps = []
    for k in range(repeat):
        # each repetition gets its own prompts: a repeat must not find the last one's in the prompt cache
        rep_cfg = cfg.replace(seed=seeds.derive(cfg.workload.seed, repetition=k)) if k else cfg
        if repeat > 1 and show_progress:
            click.echo(f"repetition {k + 1} of {repeat}", err=True)
        reps.append(run_async(measure(rep_cfg, show_progress=show_progress)))
        if reps[-1][1].stop_reason:
            break
    return reps[0] if len(reps) == 1 else combine_repeats(cfg, reps, started_at)
