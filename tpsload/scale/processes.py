"""--workers N: one run split over N processes, each with its own event loop and connections.

The parent splits the run exactly (concurrency, request counts in proportion, or the
open-loop schedule round-robin), starts every worker on one shared instant of the
machine-wide monotonic clock, and merges the raw per-request records into one run: the
result has the same form as a single-process run, plus each worker's client health.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import signal
import socket
import time
from multiprocessing.connection import Connection
from time import perf_counter_ns
from typing import Any, Callable

from tpsload.analysis.health import send_lags, verdict
from tpsload.config import RunConfig
from tpsload.core.runner import Runner, RunState, Share
from tpsload.core.scheduler import open_plan
from tpsload.workload.spec import Workload

# time for spawned interpreters to import and connect before the shared start
START_LEAD_NS = 1_500_000_000
# a worker per this many streams when --workers auto (and never more than the cores)
STREAMS_PER_WORKER = 128


def workers_for(cfg: RunConfig) -> int:
    if cfg.load.single:
        return 1
    n = cfg.scale.workers or max(1, min(os.cpu_count() or 1,
                                        math.ceil((cfg.load.concurrency or 1) / STREAMS_PER_WORKER)))
    if not cfg.load.rate:
        n = min(n, cfg.load.concurrency)  # each worker needs at least one stream
    return max(1, n)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`, exactly (largest remainders)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def split(cfg: RunConfig, n: int, start_ns: int) -> list[tuple[RunConfig, Share]]:
    """Each worker's config and share of the run."""
    parts: list[tuple[RunConfig, Share]] = []
    if cfg.load.rate:
        times, deadline = open_plan(cfg, start_ns)  # one plan, dealt out round-robin
        total = len(times)
        caps = apportion(cfg.load.concurrency, [1] * n) if cfg.load.concurrency else [0] * n
        for w in range(n):
            mine = range(w, total, n)  # round-robin: each worker keeps the schedule's shape
            wu = tuple(i for i in mine if i < cfg.load.warmup)
            meas = tuple(i for i in mine if i >= cfg.load.warmup)
            share = Share(warmup_indices=wu, indices=meas, times_ns=tuple(times[i] for i in mine),
                          start_ns=start_ns, deadline_ns=deadline)
            parts.append((_sub(cfg, max(caps[w], 0), len(meas) if cfg.load.requests is not None else None, len(wu)),
                          share))
        return parts
    streams = apportion(cfg.load.concurrency, [1] * n)
    warm = apportion(cfg.load.warmup, streams)
    reqs = apportion(cfg.load.requests, streams) if cfg.load.requests is not None else [0] * n
    wu_at, at = 0, cfg.load.warmup
    for w in range(n):
        wu = tuple(range(wu_at, wu_at + warm[w]))
        wu_at += warm[w]
        if cfg.load.requests is not None:
            share = Share(warmup_indices=wu, indices=tuple(range(at, at + reqs[w])), start_ns=start_ns)
            at += reqs[w]
        else:  # --duration: unbounded, interleaved so indices never collide
            share = Share(warmup_indices=wu, first=cfg.load.warmup + w, stride=n, start_ns=start_ns)
        parts.append((_sub(cfg, streams[w], reqs[w] if cfg.load.requests is not None else None, warm[w]), share))
    return parts


def _sub(cfg: RunConfig, concurrency: int, requests: int | None, warmup: int) -> RunConfig:
    return cfg.replace(concurrency=concurrency, requests=requests, warmup=warmup, workers=1)


class Control:
    """Lets a coordinator stop a worker's run from outside (a Ray actor has no signals)."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def stop(self, reason: str, grace_s: float) -> None:
        r = self.runner
        if r is not None:
            r.stop(reason)
            r.state.signal = r.state.signal or signal.SIGINT
            asyncio.get_running_loop().call_later(grace_s, r.cancel_all)


async def run_share(cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool,
                    progress: Callable[[RunState], None] | None = None, control: Control | None = None
                    ) -> dict[str, Any]:
    """One worker's part of a run (in a local process or a Ray actor): raw records and health."""
    from tpsload.core.client import open_client

    wall_minus_mono = time.time_ns() - perf_counter_ns()
    state = RunState()
    client = open_client(cfg, llama_cpp)
    runner = Runner(cfg, client, workload, state, progress=progress, share=share)
    if control is not None:
        control.runner = runner
    runner.install_signals()
    try:
        await runner.run()
    except Exception as e:  # keep what was measured
        runner.stop(f"internal error in a worker: {e.__class__.__name__}: {e}")
        state.cpu_s, state.wall_s = state.cpu.read()
    finally:
        runner.remove_signals()
        await client.close()
    send, cap_wait = send_lags(state.records)
    return {"pid": os.getpid(), "host": socket.gethostname(), "wall_minus_mono_ns": wall_minus_mono,
            "records": state.records, "lags_ms": state.lags.lags_ms, "cpu_s": state.cpu_s, "wall_s": state.wall_s,
            "stop_reason": state.stop_reason, "signal": state.signal, "t0": state.t0,
            "preconnected": state.preconnected,
            "send_lags_ms": send, "cap_waits_ms": cap_wait}


def _worker_main(conn: Connection, cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool,
                 done: Any, slot: int) -> None:
    """A worker process: the same runner as a single-process run, on its share."""
    from tpsload.app.measure import run_async

    def progress(st: RunState) -> None:
        done[slot] = st.done

    conn.send(run_async(run_share(cfg, share, workload, llama_cpp, progress)))
    conn.close()


async def run_workers(cfg: RunConfig, workload: Workload, llama_cpp: bool, n: int, state: RunState,
                      progress: Callable[[RunState], None] | None) -> None:
    """Run the load over n processes and merge their records into `state`."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: forking a running event loop is unsafe
    done = ctx.Array("l", n, lock=False)
    start_ns = perf_counter_ns() + START_LEAD_NS
    procs: list[tuple[Any, Connection]] = []
    for w, (sub, share) in enumerate(split(cfg, n, start_ns)):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker_main, args=(child, sub, share, workload, llama_cpp, done, w), daemon=True)
        p.start()
        child.close()
        procs.append((p, parent))
    loop = asyncio.get_running_loop()

    def forward(sig: int) -> None:  # Ctrl-C / SIGTERM reach each worker, which stops like a single run
        if state.signal is None:
            state.signal = sig
            state.stopping = True
            state.stop_reason = f"interrupted ({signal.Signals(sig).name})"
        for p, _ in procs:
            if p.is_alive():
                os.kill(p.pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, forward, sig)

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.25)
            state.done = sum(done)
            if progress:
                progress(state)

    ticker = loop.create_task(tick())
    results: list[dict[str, Any] | None] = []
    try:
        for p, conn in procs:
            try:
                results.append(await loop.run_in_executor(None, _receive, conn))
            except EOFError:
                await loop.run_in_executor(None, p.join, 5)
                results.append(None)
                missing = f"worker pid {p.pid} died (exit code {p.exitcode}); its requests are missing"
                state.stop_reason = f"{state.stop_reason}; {missing}" if state.stop_reason else missing
    finally:
        ticker.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for p, _ in procs:
            p.join(5)
    merge(state, [r for r in results if r is not None])


def _receive(conn: Connection) -> dict[str, Any]:
    try:
        return conn.recv()
    finally:
        conn.close()


def merge(state: RunState, results: list[dict[str, Any]]) -> None:
    """Raw records from every worker into one run; health per worker and overall."""
    for r in results:
        state.records.extend(r["records"])
        state.lags.lags_ms.extend(r["lags_ms"])
        state.workers.append({"pid": r["pid"], "host": r.get("host"),
                              **verdict(r["lags_ms"], r["send_lags_ms"], r["cpu_s"], r["wall_s"], r["cap_waits_ms"])})
        if r["stop_reason"] and not state.stop_reason:
            state.stop_reason = r["stop_reason"]
        if r["signal"] is not None and state.signal is None:
            state.signal = r["signal"]
    state.records.sort(key=lambda rec: rec.index)
    state.t0 = min((r["t0"] for r in results), default=state.t0)
    state.cpu_s = sum(r["cpu_s"] for r in results)
    state.wall_s = max((r["wall_s"] for r in results), default=0.0)
    tried = [r["preconnected"] for r in results if r.get("preconnected") is not None]
    state.preconnected = sum(tried) if tried else None
