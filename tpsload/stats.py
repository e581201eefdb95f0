"""Records -> the summary numbers of METRICS.md. Pure (numpy, no I/O, no clock).

Every per-request metric is computed here and nowhere else: TTFT is `t_first - t_send`
in `per_request()`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .records import RequestRecord

_Q = (50, 90, 95, 99, 99.9)
_QNAMES = ("p50", "p90", "p95", "p99", "p99_9")
NS = 1e9
MS = 1e6


def dist(values: Any) -> dict[str, float] | None:
    """n, mean, std, min, p50..p99.9, max with linear interpolation; None when empty, never 0."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return None
    q = np.percentile(a, _Q)
    d: dict[str, float] = {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()),
                           "min": float(a.min())}
    for name, v in zip(_QNAMES, q, strict=True):
        d[name] = float(v)
    d["max"] = float(a.max())
    return d


@dataclass(frozen=True, slots=True)
class PerRequest:
    """Per-request metric arrays over successful measured requests (ms, tokens/s)."""

    ttft_ms: np.ndarray
    e2e_latency_ms: np.ndarray
    tpot_ms: np.ndarray
    decode_tps: np.ndarray
    e2e_tps: np.ndarray
    prefill_tps: np.ndarray
    icl_ms: np.ndarray
    itl_ms: np.ndarray


def per_request(ok: Sequence[RequestRecord]) -> PerRequest:
    ttft, e2e, tpot, dtps, etps, ptps = [], [], [], [], [], []
    icl_parts: list[np.ndarray] = []
    itl_parts: list[np.ndarray] = []
    for r in ok:
        send = r.t_send
        out = r.output_tokens or 0
        if r.t_last is not None and r.t_last > send:
            lat = r.t_last - send
            e2e.append(lat / MS)
            etps.append(out * NS / lat)
        if r.t_first is None:
            continue
        t = r.t_first - send
        ttft.append(t / MS)
        if r.prompt_tokens and t > 0:
            ptps.append(r.prompt_tokens * NS / t)
        span = r.t_last - r.t_first
        if out > 1 and span > 0:
            tpot.append(span / (out - 1) / MS)
            dtps.append((out - 1) * NS / span)
        if len(r.chunk_times) > 1:
            gaps = np.diff(np.frombuffer(r.chunk_times, dtype=np.int64)) / MS
            icl_parts.append(gaps)
            k = r.chunk_tokens
            if k is not None and len(k) == len(r.chunk_times):
                # a gap that brought k tokens counts as k samples of gap / k
                kk = np.frombuffer(k, dtype=np.int64)[1:]
                pos = kk > 0
                itl_parts.append(np.repeat(gaps[pos] / kk[pos], kk[pos]))
            else:
                itl_parts.append(gaps)
    def f(xs: list[float]) -> np.ndarray:
        return np.asarray(xs, dtype=np.float64)

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0)

    return PerRequest(f(ttft), f(e2e), f(tpot), f(dtps), f(etps), f(ptps), cat(icl_parts), cat(itl_parts))


def _end(r: RequestRecord) -> int:
    return r.t_done or r.t_end or r.t_last or r.t_send


def load_shape(measured: Sequence[RequestRecord], target: int) -> tuple[float | None, float | None]:
    """(concurrency_achieved, steady_output_throughput) from the in-flight timeline.

    Steady throughput counts only tokens whose chunks arrived while the number of
    requests in flight was at its target, over that window's length (METRICS.md).
    """
    sent = [r for r in measured if r.t_send is not None]
    if not sent:
        return None, None
    starts = np.fromiter((r.t_send for r in sent), np.int64, len(sent))
    ends = np.fromiter((_end(r) for r in sent), np.int64, len(sent))
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(sent), np.int64), -np.ones(len(sent), np.int64)])
    order = np.argsort(times, kind="stable")
    t = times[order]
    c = np.cumsum(steps[order])  # in flight on [t[i], t[i+1])
    dt = np.diff(t)
    span = t[-1] - t[0]
    conc = float((c[:-1] * dt).sum() / span) if span > 0 else None
    steady_mask = c[:-1] >= target
    window = int(dt[steady_mask].sum())
    if window <= 0:
        return conc, None
    tokens = 0.0
    for r in sent:
        n = len(r.chunk_times)
        if not r.ok or n == 0 or not r.output_tokens:
            continue
        ct = np.frombuffer(r.chunk_times, dtype=np.int64)
        idx = np.searchsorted(t, ct, side="right") - 1
        inside = (idx < len(dt)) & (idx >= 0)
        inside[inside] = steady_mask[idx[inside]]
        if r.chunk_tokens is not None and len(r.chunk_tokens) == n:
            tokens += float(np.frombuffer(r.chunk_tokens, dtype=np.int64)[inside].sum())
        else:
            tokens += r.output_tokens * float(inside.sum()) / n
    return conc, tokens * NS / window


def summarize(records: Sequence[RequestRecord], concurrency: int) -> dict[str, Any]:
    """The `summary` object of the result JSON."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if r.failed]
    sends = [r.t_send for r in measured if r.t_send is not None]
    ends = [_end(r) for r in measured if r.t_send is not None]
    duration = (max(ends) - min(sends)) / NS if sends else 0.0
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    pr = per_request(ok)
    target = max(1, min(concurrency, len(measured)))
    conc, steady = load_shape(measured, target)

    def rate(x: float) -> float | None:
        return x / duration if duration > 0 else None

    by_class = Counter(r.error_class for r in measured if r.error_class)
    return {
        "requests_ok": len(ok),
        "requests_failed": len(failed),
        "requests_cancelled": by_class.get("cancelled", 0),
        "requests_retried": sum(1 for r in measured if r.retries),
        "duration_s": duration,
        "output_throughput": rate(out_tokens),
        "total_token_throughput": rate(out_tokens + prompt_tokens),
        "request_throughput": rate(len(ok)),
        "steady_output_throughput": steady,
        "concurrency_achieved": conc,
        "error_rate": len(failed) / (len(ok) + len(failed)) if (ok or failed) else None,
        "output_tokens_total": out_tokens,
        "prompt_tokens_total": prompt_tokens,
        "ttft_ms": dist(pr.ttft_ms),
        "itl_ms": dist(pr.itl_ms),
        "icl_ms": dist(pr.icl_ms),
        "tpot_ms": dist(pr.tpot_ms),
        "e2e_latency_ms": dist(pr.e2e_latency_ms),
        "decode_tps": dist(pr.decode_tps),
        "e2e_tps": dist(pr.e2e_tps),
        "prefill_tps": dist(pr.prefill_tps),
        "output_tokens": dist([r.output_tokens for r in ok if r.output_tokens is not None]),
        "prompt_tokens": dist([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
        "cached_tokens": dist([r.cached_tokens for r in ok if r.cached_tokens is not None]),
        "token_sources": dict(Counter(r.token_source for r in ok if r.token_source)),
        "token_source_diff": token_source_diff(ok),
        "server_predicted_tps": dist([r.server_timings["predicted_per_second"] for r in ok
                                      if r.server_timings and r.server_timings.get("predicted_per_second")]),
    }


def token_source_diff(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    """Where two token sources exist, how far apart they are (other − chosen)."""
    diffs: dict[str, list[int]] = {}
    for r in ok:
        if r.output_tokens is None:
            continue
        for src, n in r.token_counts.items():
            if src != r.token_source:
                diffs.setdefault(f"{src}_vs_{r.token_source}", []).append(n - r.output_tokens)
    return {k: {"n": len(v), "mean": float(np.mean(v)), "max_abs": int(np.max(np.abs(v)))}
            for k, v in diffs.items()}


def errors(records: Sequence[RequestRecord]) -> dict[str, Any]:
    measured = [r for r in records if not r.warmup]
    by_class = Counter(r.error_class for r in measured if r.error_class)
    examples: dict[str, str] = {}
    for r in measured:
        if r.error_class and r.error_class not in examples:
            examples[r.error_class] = r.error or ""
    return {"by_class": dict(by_class), "examples": examples}


def legacy_fields(r: RequestRecord) -> dict[str, Any]:
    """The original benchmark.py's output fields for a one-request run (METRICS.md)."""
    tokens = r.output_tokens or 0
    if r.stream:
        elapsed = (r.t_last - r.t_first) / NS if r.t_first is not None and r.t_last is not None else None
    else:
        elapsed = (r.t_end - r.t_send) / NS if r.t_end is not None else None
    return {
        "mode": "stream" if r.stream else "non-stream",
        "tokens": tokens,
        "elapsed_seconds": elapsed,
        "tokens_per_second": tokens / elapsed if elapsed else None,
    }
