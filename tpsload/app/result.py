"""Assemble the result JSON (METRICS.md "The result JSON") from a finished or stopped run."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Any

from tpsload import __version__
from tpsload.analysis import slo
from tpsload.analysis.health import send_lags, verdict
from tpsload.analysis.stats import errors, legacy_fields, per_request, summarize
from tpsload.config import RunConfig
from tpsload.core.runner import RunState


def client_host() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"hostname": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


SAMPLE_COLUMNS = ("ttft_ms", "tpot_ms", "e2e_latency_ms", "decode_tps", "output_tokens")


def samples(pr: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Per-request values of the key metrics (successful requests, rounded): what `compare`
    resamples for its confidence intervals. A missing value is null."""
    cols: dict[str, Any] = {c: [None if c not in row else round(row[c], 4) for row in pr.rows]
                            for c in SAMPLE_COLUMNS}
    cols["duration_s"] = summary["duration_s"]
    return cols


def accounting(measured: list[Any]) -> dict[str, Any]:
    """Every started request must be ok, failed (by class) or cancelled (issue #5's invariant)."""
    ok = sum(1 for r in measured if r.ok)
    failed = sum(1 for r in measured if r.failed)
    cancelled = sum(1 for r in measured if r.error_class == "cancelled")
    unaccounted = len(measured) - ok - failed - cancelled
    return {"started": len(measured), "ok": ok, "failed": failed, "cancelled": cancelled,
            "unaccounted": unaccounted, "balanced": unaccounted == 0}


def build_result(cfg: RunConfig, state: RunState, workload: dict[str, Any], server: dict[str, Any],
                 started_at: _dt.datetime, warnings: list[str]) -> dict[str, Any]:
    records = state.records
    send, cap_wait = send_lags(records)
    health = verdict(state.lags.lags_ms, send, state.cpu_s, state.wall_s, cap_wait)
    if state.workers:
        # several processes: CPU is judged per worker (each has its own core), the rest pooled
        health["cpu_share"] = state.cpu_s / state.wall_s if state.wall_s else 0.0
        health["reasons"] = [f"worker {w['pid']}: {why}" for w in state.workers for why in w["reasons"]]
        health["client_bound"] = any(w["client_bound"] for w in state.workers)
        health["workers"] = state.workers
    measured = [r for r in records if not r.warmup]
    pr = per_request([r for r in measured if r.ok])
    summary = summarize(records, cfg.load.concurrency, open_loop=bool(cfg.load.rate), pr=pr)
    verdict_slo = slo.evaluate(cfg.report.slos, pr, summary)
    summary["goodput"] = verdict_slo["goodput"]
    summary["goodput_tokens"] = verdict_slo["goodput_tokens"]
    if cfg.load.rate:
        summary["offered_rate"] = cfg.load.rate
    acct = accounting(measured)
    if not acct["balanced"]:
        warnings = [*warnings, f"ACCOUNTING MISMATCH: {acct['unaccounted']} started requests are neither ok, failed "
                    "nor cancelled; this is a tpsload bug, please report it with --records"]
    result: dict[str, Any] = {
        "tpsload_version": __version__,
        "label": cfg.report.label,
        "tags": dict(cfg.report.tags),
        "partial": state.partial,
        "stop_reason": state.stop_reason,
        "started_at": started_at.isoformat(timespec="seconds"),
        "config": cfg.public(),
        "workload": workload,
        "server": server,
        "client": client_host(),
        "summary": summary,
        "client_health": health,
        "samples": samples(pr, summary),
        "slo": verdict_slo if cfg.report.slos else None,
        **({"nodes": state.nodes, "backend": state.backend} if state.backend else {}),
        "errors": errors(records),
        "warnings": warnings,
        "requests_started": len(measured),
        "accounting": acct,
        # record times are relative to t0 on this clock (CLOCK_MONOTONIC on Linux: machine-wide)
        "clock": {"source": "time.perf_counter_ns", "t0_ns": state.t0},
        "warmup_requests": len(records) - len(measured),
    }
    if cfg.load.single and len(measured) == 1:
        result.update(legacy_fields(measured[0]))
    return result


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
        pooled.records.extend(st.records)
        pooled.lags.lags_ms.extend(st.lags.lags_ms)
        pooled.cpu_s += st.cpu_s
        pooled.wall_s += st.wall_s
        pooled.workers.extend(st.workers)
        if st.stop_reason and not pooled.stop_reason:
            pooled.stop_reason, pooled.signal = st.stop_reason, st.signal
    pooled.t0 = min(st.t0 for _, st in reps)
    first = reps[0][0]
    result = build_result(cfg, pooled, first["workload"], first["server"], started_at, first["warnings"])
    result["model"] = first.get("model")
    s = result["summary"]
    s["duration_s"] = sum(r["summary"]["duration_s"] for r, _ in reps)
    spread = {}
    for key in PER_RUN:
        vals = [r["summary"].get(key) for r, _ in reps]
        if all(isinstance(v, (int, float)) for v in vals) and vals:
            a = np.asarray(vals, dtype=np.float64)
            s[key] = float(a.mean())
            spread[key] = {"n": len(a), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                           "min": float(a.min()), "max": float(a.max()),
                           "cv": float(a.std(ddof=1) / a.mean()) if len(a) > 1 and a.mean() else 0.0}
    result["repeat_spread"] = spread
    result["repeats"] = [{"summary": r["summary"], "client_health": r["client_health"], "partial": r["partial"],
                          "started_at": r["started_at"]} for r, _ in reps]
    return result, pooled


REPEAT_INDEX_STEP = 1_000_000
