"""The result of a finished or stopped run (METRICS.md "The result JSON"), typed, built in one place.

`run_result` builds the typed `RunResult`; render.json writes it, keys and values as
METRICS.md names them. `build_result` hands on that JSON form, which is also what a
result read back from a file is (compare, report and sweep --resume read those).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tpsload import __version__
from tpsload.analysis import slo, stats
from tpsload.analysis import stages as staged
from tpsload.analysis.health import LATE_SEND_MS, LATE_SHARE_LIMIT, SendPath, send_lags, verdict
from tpsload.analysis.numbers import fmt
from tpsload.analysis.sessions import SessionSummary, summarize_sessions
from tpsload.analysis.stats import Dist, Summary
from tpsload.config import RunConfig
from tpsload.core.client import io_paths
from tpsload.core.runner import RunState
from tpsload.records import INLINE, OPTIONAL, ErrorClass, RequestRecord
from tpsload.render import json as export_json


@dataclass(frozen=True, slots=True)
class ClientHost:
    """The machine tpsload ran on."""

    hostname: str
    cpu: str
    cores: int | None
    os: str
    python: str


def client_host() -> ClientHost:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return ClientHost(hostname=platform.node(), cpu=cpu, cores=os.cpu_count(), os=platform.platform(),
                      python=platform.python_version())


@dataclass(frozen=True, slots=True)
class ClientHealth:
    """Whether the client limited the run (analysis.health's verdict; per worker with --workers)."""

    loop_lag_ms: Dist | None
    send_lag_ms: Dist | None
    late_send_share: float | None  # late sends net of the wait for the user's -c cap
    send_delay_ms: Dist | None  # the client's own delay before the server could see a request (the send path)
    slow_send_share: float | None  # the share of requests whose send delay was over 1 ms
    cap_wait_ms: Dist | None  # open loop with -c: waiting for the cap is load shaping, not the client
    cap_wait_share: float | None
    cap_note: str | None
    cpu_s: float
    cpu_share: float
    client_bound: bool
    reasons: list[str]
    read_path: str  # "tap": stamped in aiohttp's data callback; "readany": its public read loop
    read_path_reason: str | None
    # "eager": each request written in the task that sends it (tpsload starts aiohttp's writer there, on
    # Python 3.11); "task": aiohttp's writer task starts eagerly itself (Python 3.12+, aiohttp 3.10+);
    # "deferred": written on a task run after every task already due, with write_path_reason saying why
    write_path: str
    write_path_reason: str | None
    workers: list[dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)  # each worker's own health


def client_health(state: RunState) -> ClientHealth:
    send, cap_wait = send_lags(state.records)
    paths = state.io_paths or io_paths()
    path = SendPath(state.records, deferred_writes=paths["write_path"] == "deferred")
    # the tap, or the public read loop where this aiohttp cannot be tapped
    health = ClientHealth(**verdict(state.lags.lags_ms, send, state.cpu_s, state.wall_s, cap_wait, path),
                          **paths)
    if not state.workers:
        return health
    # several processes: CPU is judged per worker (each has its own core), the rest pooled: the send
    # path over every worker's requests
    reasons = [f"worker {w['pid']}: {why}" for w in state.workers for why in w["reasons"]]
    pooled = path.reason()
    if pooled:
        reasons.append(pooled)
    return replace(health, cpu_share=state.cpu_s / state.wall_s if state.wall_s else 0.0, reasons=reasons,
                   client_bound=any(w["client_bound"] for w in state.workers) or bool(pooled),
                   workers=state.workers)


@dataclass(frozen=True, slots=True)
class Samples:
    """Per-request values of the key metrics (successful requests, rounded; null where a
    request has none): what `compare` resamples for its confidence intervals."""

    ttft_ms: list[float | None]
    tpot_ms: list[float | None]
    e2e_latency_ms: list[float | None]
    decode_tps: list[float | None]
    output_tokens: list[float | None]
    duration_s: float
    # thinking models only (a run with reasoning requests): elsewhere TTFA is TTFT, already above
    ttfa_ms: list[float | None] | None = field(default=None, metadata=OPTIONAL)
    # conversations only (--turns): each request's turn, so that compare can judge turn by turn
    turn: list[int] | None = field(default=None, metadata=OPTIONAL)


SAMPLE_COLUMNS = tuple(f.name for f in fields(Samples) if f.name not in ("duration_s", "turn"))


def samples(pr: stats.PerRequest, summary: Summary, turns: list[int | None] | None = None) -> Samples:
    """`turns`: the turn of each request in pr's order (None outside conversations)."""
    # NaN: the request has no such value (null in the JSON)
    cols = {c: [None if v != v else round(v, 4) for v in pr.cols[c].tolist()] for c in SAMPLE_COLUMNS
            if c != "ttfa_ms" or summary.requests_reasoning}
    cols["output_tokens"] = [int(v) for v in pr.cols["output_tokens"].tolist()]  # a count, as it was
    turn = [int(t) for t in turns] if turns and all(t is not None for t in turns) else None  # type: ignore[arg-type]
    return Samples(**cols, duration_s=summary.duration_s, turn=turn)


@dataclass(frozen=True, slots=True)
class Accounting:
    """Every started request must be ok, failed (by class) or cancelled (issue #5's invariant)."""

    started: int
    ok: int
    failed: int
    cancelled: int
    unaccounted: int
    balanced: bool


def accounting(measured: list[RequestRecord]) -> Accounting:
    ok = sum(1 for r in measured if r.ok)
    failed = sum(1 for r in measured if r.failed)
    cancelled = sum(1 for r in measured if r.error_class == ErrorClass.CANCELLED)
    unaccounted = len(measured) - ok - failed - cancelled
    return Accounting(started=len(measured), ok=ok, failed=failed, cancelled=cancelled, unaccounted=unaccounted,
                      balanced=unaccounted == 0)


@dataclass(frozen=True, slots=True)
class Clock:
    """Record times are relative to t0 on this clock (CLOCK_MONOTONIC on Linux: machine-wide)."""

    source: str
    t0_ns: int


@dataclass(frozen=True, slots=True)
class Cluster:
    """With --ray: the machines that ran the load, and how they were reached."""

    nodes: list[dict[str, Any]]
    backend: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Spread:
    """One per-run number across repetitions."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    cv: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """The result of a run (METRICS.md "The result JSON"): built once here, written by render.json.

    `config`, `workload` and `server` are the descriptions their own modules give (plain JSON
    objects); `repeats` holds each repetition's own sections as they were written."""

    tpsload_version: str
    label: str | None
    tags: dict[str, str]
    partial: bool
    stop_reason: str | None
    started_at: str
    config: dict[str, Any]
    workload: dict[str, Any]
    server: dict[str, Any]
    client: ClientHost
    summary: Summary
    client_health: ClientHealth
    samples: Samples
    slo: slo.Verdict | None  # None without --slo
    cluster: Cluster | None = field(metadata=INLINE)
    errors: stats.Errors
    warnings: list[str]
    requests_started: int
    accounting: Accounting
    clock: Clock
    warmup_requests: int
    legacy: stats.Legacy | None = field(metadata=INLINE)  # a one-request run: the original script's fields
    model: str | None
    repeat_spread: dict[str, Spread] | None = field(default=None, metadata=OPTIONAL)  # with --repeat
    repeats: list[dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    server_metrics: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)  # the server's own /metrics
    sessions: SessionSummary | None = field(default=None, metadata=OPTIONAL)  # --turns: the per-turn table
    checkpoint: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)  # a checkpoint (app.checkpoint)
    stages: list[dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)  # --stages: each stage's results
    trace: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)  # --trace: how the schedule was kept
    timeline: dict[str, list[Any]] | None = field(default=None, metadata=OPTIONAL)  # --stages, --trace: over time


def run_result(cfg: RunConfig, state: RunState, workload: dict[str, Any], server: dict[str, Any],
               started_at: _dt.datetime, warnings: list[str], model: str | None = None,
               server_metrics: dict[str, Any] | None = None, checkpoint: dict[str, Any] | None = None,
               runs: list[tuple[Any, int]] | None = None) -> RunResult:
    """The typed result of a finished or stopped run; `runs`: --repeat's repetitions, (records, measure_t0)
    each, for the stages and timeline (by default the state's own)."""
    records = state.records
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    pr = stats.per_request(ok, state.records.gaps())
    summary = stats.summarize(records, cfg.load.concurrency, open_loop=bool(cfg.load.rate), pr=pr)
    verdict_slo = slo.evaluate(cfg.report.slos, pr, summary)
    summary = replace(summary, goodput=verdict_slo.goodput, goodput_tokens=verdict_slo.goodput_tokens,
                      offered_rate=cfg.load.rate or None, preconnected=state.preconnected)
    # (a combined --repeat result recounts what its first repetition noted)
    warnings = [*(w for w in warnings if not w.startswith(stats.UNKNOWN_PROMPT)), *stats.unknown_counts(measured)]
    health = client_health(state)
    traffic = _traffic(cfg, state, workload, summary, health, runs)
    if traffic.get("trace") and not traffic["trace"]["schedule_kept"] and traffic["trace"]["note"] not in warnings:
        warnings = [*warnings, traffic["trace"]["note"]]
    acct = accounting(measured)
    if not acct.balanced:
        warnings = [*warnings, f"ACCOUNTING MISMATCH: {acct.unaccounted} started requests are neither ok, failed "
                    "nor cancelled; this is a tpsload bug, please report it with --records"]
    return RunResult(
        tpsload_version=__version__,
        label=cfg.report.label,
        tags=dict(cfg.report.tags),
        partial=state.partial,
        stop_reason=state.stop_reason,
        started_at=started_at.isoformat(timespec="seconds"),
        config=cfg.public(),
        workload=workload,
        server=server,
        client=client_host(),
        summary=summary,
        client_health=health,
        samples=samples(pr, summary, [r.turn for r in ok]),
        slo=verdict_slo if cfg.report.slos else None,
        cluster=Cluster(nodes=state.nodes, backend=state.backend) if state.backend else None,
        errors=stats.errors(records, cfg.limits.max_failed_share),
        warnings=warnings,
        requests_started=len(measured),
        accounting=acct,
        clock=Clock(source="time.perf_counter_ns", t0_ns=state.t0),
        warmup_requests=len(records) - len(measured),
        legacy=stats.legacy_fields(measured[0]) if cfg.load.single and len(measured) == 1 else None,
        model=model,
        server_metrics=server_metrics,
        sessions=summarize_sessions(records),
        checkpoint=checkpoint,
        **traffic,
    )


def _traffic(cfg: RunConfig, state: RunState, workload: dict[str, Any], summary: Summary,
             health: ClientHealth, runs: list[tuple[Any, int]] | None = None) -> dict[str, Any]:
    """A staged run's stages, a trace replay's schedule, and either over time."""
    if runs is None:
        runs = [(state.records, state.measure_t0)] if state.measure_t0 is not None else []
    if not runs or not (cfg.load.stages or cfg.workload.trace):
        return {}
    out: dict[str, Any] = {}
    if cfg.load.stages:
        out["stages"] = staged.pooled_stage_results(runs, cfg.load.stages)
        span = sum(s.duration_s for s in cfg.load.stages)
    else:
        sched = summary.schedule
        lag = sched.send_lag_ms if sched else None
        late = health.late_send_share
        kept = late is not None and late <= LATE_SHARE_LIMIT
        trace = workload.get("trace") or {}
        out["trace"] = {
            **trace,
            "schedule_lag_ms": lag,
            "late_share": late,
            "schedule_kept": kept,
            "note": None if kept else (
                f"the client did not keep the trace's schedule: {late or 0:.1%} of requests were sent more than "
                f"{LATE_SEND_MS:g} ms after their recorded time (p99 lag {fmt((lag or {}).get('p99'), 1)} ms); "
                "the server saw a different load than the trace's (slow it down with --trace-speed)"),
        }
        span = (trace.get("span_s") or 0) / (cfg.load.trace_speed or 1)
    for records, t0 in runs:
        ends = [r.t_done or r.t_end or 0 for r in records]
        span = max(span, ((max(ends) - t0) / 1e9) if ends else 0)
    out["timeline"] = staged.pooled_over_time(runs, span, cfg.load.stages)
    return out


def build_result(cfg: RunConfig, state: RunState, workload: dict[str, Any], server: dict[str, Any],
                 started_at: _dt.datetime, warnings: list[str], model: str | None = None,
                 server_metrics: dict[str, Any] | None = None, checkpoint: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The result JSON of a run, as the plain object that is written and read back."""
    return export_json.plain(run_result(cfg, state, workload, server, started_at, warnings, model, server_metrics,
                                        checkpoint))


# scalars that are a property of one run: across repetitions, their mean (and spread) is reported
PER_RUN = ("output_throughput", "total_token_throughput", "request_throughput", "steady_output_throughput",
           "concurrency_achieved", "goodput", "goodput_tokens", "achieved_rate")


def combine_repeats(cfg: RunConfig, reps: list[tuple[dict[str, Any], RunState]], started_at: _dt.datetime
                    ) -> tuple[dict[str, Any], RunState]:
    """N repetitions -> one result: distributions over all their requests, per-run numbers as
    the mean across repetitions, the spread in `repeat_spread`, each repetition in `repeats`."""
    import numpy as np

    pooled = RunState()
    for k, (_, st) in enumerate(reps):
        for r in st.records:
            r.index += k * REPEAT_INDEX_STEP  # unique across repetitions in --records
            if r.session is not None:  # --turns: each repetition's conversations are its own
                r.session += k * REPEAT_INDEX_STEP
        pooled.records.extend(st.records)
        pooled.lags.lags_ms.extend(st.lags.lags_ms)
        pooled.cpu_s += st.cpu_s
        pooled.wall_s += st.wall_s
        pooled.workers.extend(st.workers)
        if st.stop_reason and not pooled.stop_reason:
            pooled.stop_reason, pooled.signal = st.stop_reason, st.signal
    for _, st in reps:
        gaps = st.records.gaps()
        if gaps is not None:  # a long repetition's gaps were folded: so are the pool's
            pooled.records.merge_gaps(gaps)
    pooled.t0 = min(st.t0 for _, st in reps)
    tried = [st.preconnected for _, st in reps if st.preconnected is not None]
    pooled.preconnected = sum(tried) if tried else None
    first = reps[0][0]
    if cfg.workload.trace:  # each repetition ran open loop at the trace's rate, known once it was read
        cfg = cfg.replace(rate=first["config"]["rate"], requests=first["config"]["requests"], single=False)
    # stages and timeline as the summary: each repetition on its own clock, per-run numbers averaged
    runs = [(st.records, st.measure_t0) for _, st in reps if st.measure_t0 is not None]
    result = run_result(cfg, pooled, first["workload"], first["server"], started_at, first["warnings"],
                        first.get("model"), runs=runs)
    means: dict[str, float] = {}
    spread = {}
    for key in PER_RUN:
        vals = [r["summary"].get(key) for r, _ in reps]
        if all(isinstance(v, (int, float)) for v in vals) and vals:
            a = np.asarray(vals, dtype=np.float64)
            means[key] = float(a.mean())
            spread[key] = Spread(n=len(a), mean=float(a.mean()), std=float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                                 min=float(a.min()), max=float(a.max()),
                                 cv=float(a.std(ddof=1) / a.mean()) if len(a) > 1 and a.mean() else 0.0)
    summary = _with(result.summary, duration_s=sum(r["summary"]["duration_s"] for r, _ in reps), **means)
    result = replace(result, summary=summary, repeat_spread=spread,
                     repeats=[{"summary": r["summary"], "client_health": r["client_health"], "partial": r["partial"],
                               "started_at": r["started_at"],
                               **{k: r[k] for k in ("stages", "trace", "timeline") if r.get(k) is not None}}
                              for r, _ in reps])
    return export_json.plain(result), pooled


_SCHEDULE = {f.name for f in fields(stats.Schedule)}


def _with(summary: Summary, **values: Any) -> Summary:
    """The summary with some numbers replaced, wherever in it they live."""
    sched = {k: values.pop(k) for k in list(values) if k in _SCHEDULE}
    if sched and summary.schedule is not None:
        summary = replace(summary, schedule=replace(summary.schedule, **sched))
    return replace(summary, **values)


REPEAT_INDEX_STEP = 1_000_000
