"""Records -> the summary numbers of METRICS.md. Pure (numpy, no I/O, no clock).

Every per-request metric is computed here and nowhere else: TTFT is `t_first - t_send`
in `metric_columns()` (every request at once: a column per metric, not a dict per request).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence, TypedDict

import numpy as np

from tpsload.analysis.failures import DEFAULT_MAX_FAILED_SHARE, likely_causes, too_many_failed
from tpsload.analysis.ledger import GapHistogram
from tpsload.records import INLINE, OPTIONAL, ConnectionUse, ErrorClass, RequestRecord, TokenSource

_Q = (50, 90, 95, 99, 99.9)
NS = 1e9
MS = 1e6


class Dist(TypedDict):
    """A distribution as the result JSON writes it (METRICS.md): a plain object, read by key."""

    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    p99_9: float
    max: float


def dist(values: Any) -> Dist | None:
    """n, mean, std, min, p50..p99.9, max with linear interpolation; None when empty, never 0. A long
    run's gaps come as a histogram (analysis.ledger): its percentiles are within 0.1 %."""
    if isinstance(values, GapHistogram):
        if not values.n:
            return None
        p50, p90, p95, p99, p99_9 = values.percentiles(_Q)
        return Dist(n=values.n, mean=values.mean, std=float(np.sqrt(values.m2 / values.n)), min=values.min,
                    p50=p50, p90=p90, p95=p95, p99=p99, p99_9=p99_9, max=values.max)
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return None
    p50, p90, p95, p99, p99_9 = (float(v) for v in np.percentile(a, _Q))
    return Dist(n=int(a.size), mean=float(a.mean()), std=float(a.std()), min=float(a.min()), p50=p50, p90=p90,
                p95=p95, p99=p99, p99_9=p99_9, max=float(a.max()))


REQUEST_METRICS = ("ttft_ms", "e2e_latency_ms", "tpot_ms", "decode_tps", "e2e_tps", "prefill_tps",
                   "ttft_sched_ms", "e2e_latency_sched_ms", "connect_ms", "send_ms", "ttfb_ms",
                   "ttfa_ms", "reasoning_tokens", "answer_tokens", "reasoning_decode_tps", "answer_decode_tps")


def gaps(r: RequestRecord) -> tuple[np.ndarray, np.ndarray]:
    """(icl, itl) in ms: gaps between output chunks, and the same spread over the tokens each carried."""
    if len(r.chunk_times) < 2:
        return np.empty(0), np.empty(0)
    icl = np.diff(np.frombuffer(r.chunk_times, dtype=np.int64)) / MS
    k = r.chunk_tokens
    if k is None or len(k) != len(r.chunk_times):
        return icl, icl
    # a gap that brought k tokens counts as k samples of gap / k
    kk = np.frombuffer(k, dtype=np.int64)[1:]
    pos = kk > 0
    return icl, np.repeat(icl[pos] / kk[pos], kk[pos])


@dataclass(frozen=True, slots=True)
class PerRequest:
    """Per-request metrics over successful measured requests: a column each (NaN where a request has
    none; one float a request, not a dict), plus pooled gaps."""

    cols: dict[str, np.ndarray]
    icl_ms: np.ndarray | GapHistogram
    itl_ms: np.ndarray | GapHistogram

    def column(self, name: str) -> np.ndarray:
        """One metric over the requests where it is defined."""
        c = self.cols.get(name)
        return np.empty(0) if c is None else c[~np.isnan(c)]

    def __len__(self) -> int:
        return len(self.cols["output_tokens"])


_NONE = -(2**63)


def _stamps(ok: Sequence[RequestRecord], name: str) -> np.ndarray:
    return np.fromiter((_NONE if (v := getattr(r, name)) is None else v for r in ok), np.int64, len(ok))


def metric_columns(ok: Sequence[RequestRecord]) -> dict[str, np.ndarray]:
    """The per-request metrics of METRICS.md for successful requests, a column each (NaN where a request
    has none). Phases: `connect` (new connections only), `send` (meant to go -> last byte written:
    everything before the server could see it), `ttfb`. TTFT: first output-bearing chunk minus send."""
    n = len(ok)
    t = {f: _stamps(ok, f) for f in ("t_send", "t_sched", "t_connected", "t_written", "t_headers", "t_first",
                                     "t_last", "output_tokens", "prompt_tokens", "t_answer", "reasoning_tokens")}
    has = {f: v != _NONE for f, v in t.items()}
    send, out = t["t_send"], np.where(has["output_tokens"], t["output_tokens"], 0)
    new = np.fromiter((r.connection is ConnectionUse.NEW for r in ok), bool, n)
    cols: dict[str, np.ndarray] = {"output_tokens": out.astype(np.float64)}

    def put(name: str, mask: np.ndarray, value: np.ndarray) -> None:
        cols[name] = np.where(mask, value, np.nan)

    with np.errstate(all="ignore"):  # undefined rows compute garbage, then NaN
        put("connect_ms", new & has["t_connected"] & has["t_send"], (t["t_connected"] - send) / MS)
        wrote = has["t_written"]
        put("send_ms", wrote & has["t_sched"], (t["t_written"] - t["t_sched"]) / MS)
        put("ttfb_ms", wrote & has["t_headers"], (t["t_headers"] - t["t_written"]) / MS)
        lat = t["t_last"] - send
        e2e = has["t_last"] & (t["t_last"] > send)
        put("e2e_latency_ms", e2e, lat / MS)
        put("e2e_tps", e2e, out * NS / lat)
        put("e2e_latency_sched_ms", e2e & has["t_sched"], (t["t_last"] - t["t_sched"]) / MS)
        first = has["t_first"]
        ttft = t["t_first"] - send
        put("ttft_ms", first, ttft / MS)
        put("ttft_sched_ms", first & has["t_sched"], (t["t_first"] - t["t_sched"]) / MS)
        prompt = t["prompt_tokens"]
        put("prefill_tps", first & has["prompt_tokens"] & (prompt != 0) & (ttft > 0), prompt * NS / ttft)
        span = np.where(has["t_last"], t["t_last"] - t["t_first"], 0)
        decode = first & (out > 1) & (span > 0)
        put("tpot_ms", decode, span / (out - 1) / MS)
        put("decode_tps", decode, (out - 1) * NS / span)
        # thinking models (METRICS.md): the reasoning part runs from the first output to the first answer, the
        # answer part from there to the last chunk; without reasoning, ttfa is ttft and the answer is the output
        rt, has_rt = t["reasoning_tokens"], has["reasoning_tokens"]
        answer = np.maximum(0, out - rt)
        put("reasoning_tokens", has_rt, rt)
        put("answer_tokens", has_rt & has["output_tokens"], answer)
        ans, has_ans = t["t_answer"], has["t_answer"] & has["t_send"]
        put("ttfa_ms", has_ans, (ans - send) / MS)
        cut = ~has_ans & has_rt & (rt > 1) & first & has["t_last"] & (t["t_last"] > t["t_first"])  # no answer came
        put("reasoning_decode_tps", np.where(cut, True, has_ans & has_rt & (rt > 0) & first & (ans > t["t_first"])),
            np.where(cut, (rt - 1) * NS / (t["t_last"] - t["t_first"]), rt * NS / (ans - t["t_first"])))
        put("answer_decode_tps", has_ans & has_rt & has["output_tokens"] & (answer > 1) & has["t_last"]
            & (t["t_last"] > ans), (answer - 1) * NS / (t["t_last"] - ans))
    return cols


def per_request(ok: Sequence[RequestRecord], gaps_hist: tuple[GapHistogram, GapHistogram] | None = None
                ) -> PerRequest:
    """`gaps_hist`: (ICL, ITL) of a long run whose chunk times were folded (analysis.ledger)."""
    cols = metric_columns(ok)
    if gaps_hist is not None:
        return PerRequest(cols, *gaps_hist)
    icl_parts, itl_parts = [], []
    for r in ok:
        icl, itl = gaps(r)
        icl_parts.append(icl)
        itl_parts.append(itl)
    return PerRequest(cols, np.concatenate(icl_parts) if ok else np.empty(0),
                      np.concatenate(itl_parts) if ok else np.empty(0))


def _end(r: RequestRecord) -> int:
    return r.t_done or r.t_end or r.t_last or r.t_send


def load_shape(measured: Sequence[RequestRecord], target: int | None) -> tuple[float | None, float | None]:
    """(concurrency_achieved, steady_output_throughput) from the in-flight timeline.

    Steady throughput counts only tokens whose chunks arrived in the steady window, over
    that window's length (METRICS.md): closed loop (`target` = the concurrency), while the
    number in flight was at its target; open loop (`target` None), after ramp-up (the
    first send plus a median request's latency) and before drain (the last send). A reply
    that came whole (non-streaming) has no arrival times for its tokens: they are spread
    evenly over its request's span, and the share of that span inside the window counts.
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
    if target is not None:
        steady_mask = c[:-1] >= target
        window = int(dt[steady_mask].sum())
        # steady time before each timeline point, for the overlap of a span with the window
        steady_before = np.concatenate([[0], np.cumsum(np.where(steady_mask, dt, 0))])

        def inside(ct: np.ndarray) -> np.ndarray:
            idx = np.searchsorted(t, ct, side="right") - 1
            ok = (idx < len(dt)) & (idx >= 0)
            ok[ok] = steady_mask[idx[ok]]
            return ok

        def steady_until(x: int) -> float:
            i = int(np.searchsorted(t, x, side="right")) - 1
            if i < 0:
                return 0.0
            if i >= len(dt):
                return float(steady_before[-1])
            return float(steady_before[i] + (x - t[i] if steady_mask[i] else 0))

        def overlap(a: int, b: int) -> float:
            return steady_until(b) - steady_until(a)
    else:
        lat = [r.t_last - r.t_send for r in sent if r.ok and r.t_last is not None]
        lo = int(starts.min() + (np.median(lat) if lat else 0))
        hi = int(starts.max())
        window = hi - lo

        def inside(ct: np.ndarray) -> np.ndarray:
            return (ct >= lo) & (ct < hi)

        def overlap(a: int, b: int) -> float:
            return float(max(0, min(b, hi) - max(a, lo)))
    if window <= 0:
        return conc, None
    tokens = 0.0
    for r in sent:
        n = len(r.chunk_times)
        if not r.ok or not r.output_tokens:
            continue
        if r.chunks_dropped and r.t_first is not None and r.t_last is not None:
            # a long run's chunk times are gone (analysis.ledger): its tokens spread evenly over its chunks' span
            if r.t_last > r.t_first:
                tokens += r.output_tokens * overlap(r.t_first, r.t_last) / (r.t_last - r.t_first)
            elif inside(np.asarray([r.t_first], dtype=np.int64))[0]:
                tokens += r.output_tokens
            continue
        if n == 0 or not r.stream:  # the reply came whole: its tokens spread over the request's span
            end = _end(r)
            if end > r.t_send:
                tokens += r.output_tokens * overlap(r.t_send, end) / (end - r.t_send)
            continue
        mask = inside(np.frombuffer(r.chunk_times, dtype=np.int64))
        if r.chunk_tokens is not None and len(r.chunk_tokens) == n:
            tokens += float(np.frombuffer(r.chunk_tokens, dtype=np.int64)[mask].sum())
        else:
            tokens += r.output_tokens * float(mask.sum()) / n
    return conc, tokens * NS / window


@dataclass(frozen=True, slots=True)
class Schedule:
    """Open loop: how well the schedule was kept, and latencies from the scheduled send (which
    include any wait for the client or the cap: no coordinated omission)."""

    achieved_rate: float | None
    send_lag_ms: Dist | None
    ttft_sched_ms: Dist | None
    e2e_latency_sched_ms: Dist | None


def schedule(measured: Sequence[RequestRecord], pr: PerRequest) -> Schedule:
    sends = sorted(r.t_send for r in measured if r.t_send is not None)
    achieved = (len(sends) - 1) * NS / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else None
    return Schedule(
        achieved_rate=achieved,
        send_lag_ms=dist([(r.t_send - r.t_sched) / MS for r in measured
                          if r.t_send is not None and r.t_sched is not None]),
        ttft_sched_ms=dist(pr.column("ttft_sched_ms")),
        e2e_latency_sched_ms=dist(pr.column("e2e_latency_sched_ms")),
    )


@dataclass(frozen=True, slots=True)
class SourceDiff:
    """Where two token counts exist for a request: how far the other is from the chosen one."""

    n: int
    mean: float
    max_abs: int


@dataclass(frozen=True, slots=True)
class Summary:
    """The `summary` object of the result JSON (METRICS.md); its field names are the JSON keys."""

    requests_ok: int
    requests_failed: int
    requests_cancelled: int
    requests_retried: int
    duration_s: float
    output_throughput: float | None
    total_token_throughput: float | None
    request_throughput: float | None
    steady_output_throughput: float | None
    concurrency_achieved: float | None
    error_rate: float | None
    output_tokens_total: int
    prompt_tokens_total: int | None  # None when the server gave no prompt count for some request
    ttft_ms: Dist | None
    itl_ms: Dist | None
    icl_ms: Dist | None
    tpot_ms: Dist | None
    e2e_latency_ms: Dist | None
    decode_tps: Dist | None
    e2e_tps: Dist | None
    prefill_tps: Dist | None
    output_tokens: Dist | None
    prompt_tokens: Dist | None
    cached_tokens: Dist | None
    token_sources: dict[TokenSource, int]
    token_source_diff: dict[str, SourceDiff]
    server_predicted_tps: Dist | None
    # where the request half of TTFT went (successful requests; connect_ms over new connections only)
    connect_ms: Dist | None = None
    send_ms: Dist | None = None
    ttfb_ms: Dist | None = None
    # measured requests by their connection: opened for them, or kept alive (pre-connected ones included)
    connections_opened: int = 0
    connections_reused: int = 0
    # connections opened before the first send (keep-alive servers); 0: none (a server that closes after
    # each stream, an uncapped open loop); None: not tried (--no-preconnect)
    preconnected: int | None = None
    schedule: Schedule | None = field(default=None, metadata=INLINE)  # open loop only
    # requests/s (and their tokens/s) that met every per-request SLO: all of them without SLOs
    goodput: float | None = None
    goodput_tokens: float | None = None
    offered_rate: float | None = field(default=None, metadata=OPTIONAL)  # open loop only: --rate
    # thinking models (METRICS.md): time to the first answer token, the output's reasoning and answer
    # parts and their decode speeds; for a model that does not reason ttfa is ttft and the answer all output
    requests_reasoning: int = 0  # successful requests with reasoning tokens
    ttfa_ms: Dist | None = None
    reasoning_tokens: Dist | None = None
    answer_tokens: Dist | None = None
    reasoning_decode_tps: Dist | None = None
    answer_decode_tps: Dist | None = None
    reasoning_sources: dict[TokenSource, int] = field(default_factory=dict)  # requests with reasoning, by source


def summarize(records: Sequence[RequestRecord], concurrency: int, open_loop: bool = False,
              pr: PerRequest | None = None) -> Summary:
    """The summary of a run's records; goodput is the SLO verdict's to fill in (app.result)."""
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if r.failed]
    sends = [r.t_send for r in measured if r.t_send is not None]
    ends = [_end(r) for r in measured if r.t_send is not None]
    duration = (max(ends) - min(sends)) / NS if sends else 0.0
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    # unknown for one request (no usage from the server) is unknown for the sum: never counted as 0
    prompt_known = all(r.prompt_tokens is not None for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok) if prompt_known else None
    pr = pr or per_request(ok)
    target = None if open_loop else max(1, min(concurrency, len(measured)))
    conc, steady = load_shape(measured, target)

    def rate(x: float) -> float | None:
        return x / duration if duration > 0 else None

    return Summary(
        requests_ok=len(ok),
        requests_failed=len(failed),
        requests_cancelled=sum(1 for r in measured if r.error_class == ErrorClass.CANCELLED),
        requests_retried=sum(1 for r in measured if r.retries),
        duration_s=duration,
        output_throughput=rate(out_tokens),
        total_token_throughput=rate(out_tokens + prompt_tokens) if prompt_tokens is not None else None,
        request_throughput=rate(len(ok)),
        steady_output_throughput=steady,
        concurrency_achieved=conc,
        error_rate=len(failed) / (len(ok) + len(failed)) if (ok or failed) else None,
        output_tokens_total=out_tokens,
        prompt_tokens_total=prompt_tokens,
        ttft_ms=dist(pr.column("ttft_ms")),
        itl_ms=dist(pr.itl_ms),
        icl_ms=dist(pr.icl_ms),
        tpot_ms=dist(pr.column("tpot_ms")),
        e2e_latency_ms=dist(pr.column("e2e_latency_ms")),
        decode_tps=dist(pr.column("decode_tps")),
        e2e_tps=dist(pr.column("e2e_tps")),
        prefill_tps=dist(pr.column("prefill_tps")),
        output_tokens=dist([r.output_tokens for r in ok if r.output_tokens is not None]),
        prompt_tokens=dist([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
        cached_tokens=dist([r.cached_tokens for r in ok if r.cached_tokens is not None]),
        token_sources=dict(Counter(r.token_source for r in ok if r.token_source)),
        token_source_diff=token_source_diff(ok),
        server_predicted_tps=dist([r.server_timings["predicted_per_second"] for r in ok
                                   if r.server_timings and r.server_timings.get("predicted_per_second")]),
        connect_ms=dist(pr.column("connect_ms")),
        send_ms=dist(pr.column("send_ms")),
        ttfb_ms=dist(pr.column("ttfb_ms")),
        connections_opened=sum(1 for r in measured if r.connection is ConnectionUse.NEW),
        connections_reused=sum(1 for r in measured if r.connection is ConnectionUse.REUSED),
        schedule=schedule(measured, pr) if open_loop else None,
        requests_reasoning=sum(1 for r in ok if r.reasoning_tokens),
        ttfa_ms=dist(pr.column("ttfa_ms")),
        reasoning_tokens=dist(pr.column("reasoning_tokens")),
        answer_tokens=dist(pr.column("answer_tokens")),
        reasoning_decode_tps=dist(pr.column("reasoning_decode_tps")),
        answer_decode_tps=dist(pr.column("answer_decode_tps")),
        reasoning_sources=dict(Counter(r.reasoning_source for r in ok if r.reasoning_source)),
    )


UNKNOWN_PROMPT = "prompt tokens unknown"


def unknown_counts(records: Sequence[RequestRecord]) -> list[str]:
    """Notes for counts the server did not give, which the result leaves null rather than 0."""
    ok = [r for r in records if r.ok and not r.warmup]
    missing = sum(1 for r in ok if r.prompt_tokens is None)
    if not missing:
        return []
    return [f"{UNKNOWN_PROMPT} for {missing} of {len(ok)} requests (the server sent no usage"
            f"{' when streaming: try --no-stream' if any(r.stream for r in ok) else ''}): total_token_throughput "
            "and prefill speed are null, not 0"]


def token_source_diff(ok: Sequence[RequestRecord]) -> dict[str, SourceDiff]:
    """Where two token sources exist, how far apart they are (other − chosen)."""
    diffs: dict[str, list[int]] = {}
    for r in ok:
        if r.output_tokens is None:
            continue
        for src, n in r.token_counts.items():
            # an estimate is the chunk count: comparing the two would always give 0
            if src != r.token_source and not (src == TokenSource.CHUNKS and r.token_source == TokenSource.ESTIMATE):
                diffs.setdefault(f"{src}_vs_{r.token_source}", []).append(n - r.output_tokens)
    return {k: SourceDiff(n=len(v), mean=float(np.mean(v)), max_abs=int(np.max(np.abs(v))))
            for k, v in diffs.items()}


@dataclass(frozen=True, slots=True)
class Errors:
    """Measured requests that did not succeed, by class, with the first message of each class, the
    likely cause of a class where the records show it, and the loud line when too many failed."""

    by_class: dict[ErrorClass, int]
    examples: dict[ErrorClass, str]
    causes: dict[ErrorClass, str] = field(default_factory=dict)
    too_many_failed: str | None = None  # over --max-failed-share: the numbers say little


def errors(records: Sequence[RequestRecord], max_failed_share: float | None = DEFAULT_MAX_FAILED_SHARE) -> Errors:
    measured = [r for r in records if not r.warmup]
    by_class = Counter(r.error_class for r in measured if r.error_class)
    examples: dict[ErrorClass, str] = {}
    for r in measured:
        if r.error_class and r.error_class not in examples:
            examples[r.error_class] = r.error or ""
    causes = likely_causes(measured)
    ok = sum(1 for r in measured if r.ok)
    failed = sum(1 for r in measured if r.failed)
    return Errors(by_class=dict(by_class), examples=examples, causes=causes,
                  too_many_failed=too_many_failed(ok, failed, dict(by_class), causes, max_failed_share))


@dataclass(frozen=True, slots=True)
class Legacy:
    """The original benchmark.py's output fields, kept at the top level of a one-request run."""

    mode: str  # "stream" or "non-stream"
    tokens: int
    elapsed_seconds: float | None
    tokens_per_second: float | None


def legacy_fields(r: RequestRecord) -> Legacy:
    """The original script's numbers for one request (METRICS.md)."""
    tokens = r.output_tokens or 0
    if r.stream:
        elapsed = (r.t_last - r.t_first) / NS if r.t_first is not None and r.t_last is not None else None
    else:
        elapsed = (r.t_end - r.t_send) / NS if r.t_end is not None else None
    return Legacy(mode="stream" if r.stream else "non-stream", tokens=tokens, elapsed_seconds=elapsed,
                  tokens_per_second=tokens / elapsed if elapsed else None)
