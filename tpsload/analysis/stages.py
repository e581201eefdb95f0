"""A staged run (--stages) stage by stage, and any run over time. Pure.

Each stage is judged on its own steady window: a step of concurrency from the moment the number in
flight first reached the stage's count (a step down waits for the extra requests to end) to the
stage's end; a ramp, and an open-loop stage, over the whole stage. Within it: the time-weighted
number in flight, the output tokens that arrived, and the requests that completed. Latency
percentiles are over the requests started in the stage.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tpsload.analysis import timeline
from tpsload.analysis.stats import dist, per_request
from tpsload.records import RequestRecord

NS = 1e9
# the over-time series: this many points at most, and at least this far apart
TIMELINE_POINTS = 200
TIMELINE_MIN_STEP_S = 0.1


def _end(r: RequestRecord) -> int:
    return r.t_done or r.t_end or r.t_last or r.t_send or 0


def in_flight(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The number of requests in flight as a step function: (times, counts), count[i] on [t[i], t[i+1])."""
    sent = [r for r in records if r.t_send is not None]
    if not sent:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    times = np.concatenate([np.fromiter((r.t_send for r in sent), np.int64, len(sent)),
                            np.fromiter((_end(r) for r in sent), np.int64, len(sent))])
    steps = np.concatenate([np.ones(len(sent), np.int64), -np.ones(len(sent), np.int64)])
    order = np.argsort(times, kind="stable")
    return times[order], np.cumsum(steps[order])


def mean_in_flight(t: np.ndarray, c: np.ndarray, a: int, b: int) -> float | None:
    """The time-weighted number in flight over [a, b)."""
    if b <= a:
        return None
    if not len(t):
        return 0.0
    edges = np.clip(np.concatenate([t, [b]]), a, b)
    return float((c * np.diff(edges)).sum() / (b - a))


def settled(t: np.ndarray, c: np.ndarray, a: int, b: int, wanted: int) -> int | None:
    """The first moment in [a, b) at which the number in flight is `wanted` (None: never)."""
    before = int(c[np.searchsorted(t, a, side="right") - 1]) if len(t) and t[0] <= a else 0
    if before == wanted:
        return a
    idx = np.nonzero((t >= a) & (t < b) & (c == wanted))[0]
    return int(t[idx[0]]) if len(idx) else None


def _tokens_in(records: Sequence[RequestRecord], a: int, b: int) -> float:
    """Output tokens whose chunks arrived in [a, b) (a reply that came whole: spread over its span)."""
    total = 0.0
    for r in records:
        if not r.ok or not r.output_tokens or r.t_send is None:
            continue
        n = len(r.chunk_times)
        if n == 0 or not r.stream:
            end = _end(r)
            if end > r.t_send:
                total += r.output_tokens * max(0, min(b, end) - max(a, r.t_send)) / (end - r.t_send)
            continue
        at = np.frombuffer(r.chunk_times, dtype=np.int64)
        mask = (at >= a) & (at < b)
        if r.chunk_tokens is not None and len(r.chunk_tokens) == n:
            total += float(np.frombuffer(r.chunk_tokens, dtype=np.int64)[mask].sum())
        else:
            total += r.output_tokens * float(mask.sum()) / n
    return total


def stage_results(records: Sequence[RequestRecord], stages: Sequence[Any], t0_ns: int) -> list[dict[str, Any]]:
    """One entry per stage (docs/metrics.md "Stages"); `stages` are config.Stage values and `t0_ns` the
    instant the first stage began."""
    return pooled_stage_results([(records, t0_ns)], stages)


# a stage's numbers that are a property of one run: over repetitions (--repeat), their mean
PER_RUN = ("steady_start_s", "steady_s", "concurrency_achieved", "achieved_rate", "output_throughput",
           "request_throughput")


def pooled_stage_results(runs: Sequence[tuple[Sequence[RequestRecord], int]], stages: Sequence[Any]
                         ) -> list[dict[str, Any]]:
    """Stage results over repetitions of one staged run, each (records, t0_ns) on its own clock, as --repeat
    reports a run: per-run numbers the mean over the repetitions (of those that have one), counts summed,
    latency distributions over the requests of all. One run's are its own."""
    each = [_stages_of(records, stages, t0) for records, t0 in runs]
    out = []
    start_s = 0.0
    for k, s in enumerate(stages):
        parts = [run[k] for run in each]
        pr = per_request([r for _, ok in parts for r in ok])
        numbers: dict[str, Any] = {}
        for key in PER_RUN:
            vals = [n[key] for n, _ in parts if n[key] is not None]
            numbers[key] = (vals[0] if len(vals) == 1 else sum(vals) / len(vals)) if vals else None
        out.append({
            "stage": k,
            "spec": s.text,
            "kind": "concurrency" if s.kind == "c" else "rate",
            "asked": s.mean,
            "asked_start": s.start,
            "asked_end": s.end,
            "start_s": start_s,
            "duration_s": s.duration_s,
            "steady_start_s": numbers["steady_start_s"],
            "steady_s": numbers["steady_s"],
            "concurrency_achieved": numbers["concurrency_achieved"],
            "achieved_rate": numbers["achieved_rate"],
            **{key: sum(n[key] for n, _ in parts) for key in ("requests_started", "requests_ok", "requests_failed")},
            "output_throughput": numbers["output_throughput"],
            "request_throughput": numbers["request_throughput"],
            "ttft_ms": dist(pr.column("ttft_ms")),
            "tpot_ms": dist(pr.column("tpot_ms")),
            "e2e_latency_ms": dist(pr.column("e2e_latency_ms")),
        })
        start_s += s.duration_s
    return out


def _stages_of(records: Sequence[RequestRecord], stages: Sequence[Any], t0_ns: int
               ) -> list[tuple[dict[str, Any], list[RequestRecord]]]:
    """One run's numbers of each stage, and the requests started in it that succeeded."""
    measured = [r for r in records if not r.warmup]
    t, c = in_flight(measured)
    out = []
    start = t0_ns
    for k, s in enumerate(stages):
        end = start + round(s.duration_s * NS)
        mine = [r for r in measured if r.stage == k]
        if s.kind == "c" and not s.ramp:
            lo = settled(t, c, start, end, int(s.start))
        else:
            lo = start
        window = (end - lo) / NS if lo is not None else 0.0
        sends = sum(1 for r in mine if r.t_send is not None)
        out.append(({
            "steady_start_s": None if lo is None else (lo - t0_ns) / NS,
            "steady_s": window,
            "concurrency_achieved": mean_in_flight(t, c, lo, end) if lo is not None else None,
            "achieved_rate": sends / s.duration_s if s.duration_s else None,
            "requests_started": len(mine),
            "requests_ok": sum(1 for r in mine if r.ok),
            "requests_failed": sum(1 for r in mine if r.failed),
            "output_throughput": _tokens_in(measured, lo, end) / window if lo is not None and window > 0 else None,
            "request_throughput": (sum(1 for r in measured if r.ok and r.t_end is not None and lo <= r.t_end < end)
                                   / window) if lo is not None and window > 0 else None,
        }, [r for r in mine if r.ok]))
        start = end
    return out


def asked_at(stages: Sequence[Any], t_s: float) -> float | None:
    """The load the stages ask for `t_s` seconds into the run (None after the last stage)."""
    start = 0.0
    for s in stages:
        if t_s < start + s.duration_s:
            return s.start + (s.end - s.start) * (t_s - start) / s.duration_s
        start += s.duration_s
    return None


def over_time(records: Sequence[RequestRecord], t0_ns: int, span_s: float,
              stages: Sequence[Any] = ()) -> dict[str, list[Any]]:
    """The run on an even grid from `t0_ns` over `span_s`: what was asked (with --stages), requests in
    flight and output tokens/s (analysis.timeline), sends per second, and the median TTFT of the
    requests sent in each interval."""
    return pooled_over_time([(records, t0_ns)], span_s, stages)


def pooled_over_time(runs: Sequence[tuple[Sequence[RequestRecord], int]], span_s: float,
                     stages: Sequence[Any] = ()) -> dict[str, list[Any]]:
    """`over_time` of repetitions of one run, each (records, t0_ns) on its own clock: at each point the
    mean over the repetitions of in flight, output tokens/s and sends per second, and the median TTFT of
    the requests all of them sent in the interval (--repeat: per-run numbers averaged, distributions
    pooled). One run's are its own."""
    step = max(TIMELINE_MIN_STEP_S, span_s / TIMELINE_POINTS)
    t_ms = [round(i * step * 1e3, 3) for i in range(int(span_s / step) + 1)]
    series = []
    sent_at: list[np.ndarray] = []
    sent_runs: list[list[RequestRecord]] = []
    for records, t0_ns in runs:
        measured = [r for r in records if not r.warmup]
        series.append(timeline.client_series(measured, t0_ns, t_ms))
        sent = sorted(((r.t_send - t0_ns, r) for r in measured if r.t_send is not None), key=lambda x: x[0])
        sent_at.append(np.asarray([s for s, _ in sent], dtype=np.int64))
        sent_runs.append([r for _, r in sent])
    sends: list[float | None] = [None]
    ttft: list[float | None] = [None]
    for i in range(1, len(t_ms)):
        n = 0
        firsts = []
        for at, sent in zip(sent_at, sent_runs, strict=True):
            a, b = np.searchsorted(at, [t_ms[i - 1] * 1e6, t_ms[i] * 1e6], side="right")
            n += b - a
            firsts += [(r.t_first - r.t_send) / 1e6 for r in sent[a:b] if r.ok and r.t_first is not None]
        sends.append(round(n / step / max(1, len(runs)), 2))
        ttft.append(round(float(np.median(firsts)), 3) if firsts else None)
    out: dict[str, list[Any]] = {"t_ms": t_ms}
    if stages:
        out["asked"] = [asked_at(stages, t / 1e3) for t in t_ms]
    out.update(in_flight=_mean(series, "in_flight"), output_tps=_mean(series, "output_tps"), sends_per_s=sends,
               ttft_p50_ms=ttft)
    return out


def _mean(series: list[dict[str, list[Any]]], key: str) -> list[Any]:
    """A series point by point over repetitions (one run's as it is)."""
    if len(series) == 1:
        return series[0][key]
    out: list[Any] = []
    for vals in zip(*(s[key] for s in series), strict=True):
        known = [v for v in vals if v is not None]
        out.append(round(sum(known) / len(known), 2) if known else None)
    return out
