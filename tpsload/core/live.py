"""The run's live numbers, fed as each request finishes: what the live panel, the status line and
--serve-metrics all read (one mechanism for the three).

O(1) per request (metrics and ITL gaps computed a batch of requests at a time, in vectorised calls)
and bounded memory: totals and
fixed-bucket histograms since the start, plus the requests that finished in the last `window_s` seconds
(at most `WINDOW_MAX` of them) for the rolling numbers. Updates come from the run's event loop, reads
also from the metrics endpoint's thread: both hold one lock, for microseconds.

Counts cover the measured requests, as the result does (warm-up requests only count as in flight and in
`warmup_done`); the histograms use the result's definitions (analysis.stats.metric_columns, gaps),
so their counts equal the result's `n` for the same requests.
"""

from __future__ import annotations

import threading
import time
from array import array
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Sequence

import numpy as np

from tpsload.analysis.health import CPU_SHARE_LIMIT, LAG_P99_LIMIT_MS, LATE_SHARE_LIMIT, SEND_DELAY_MS, SendPath
from tpsload.analysis.stats import gaps, metric_columns
from tpsload.records import ErrorClass, RequestRecord

WINDOW_S = 10.0
WINDOW_MAX = 8192  # a faster run's rolling numbers cover its last this-many requests, under the window
LAG_SAMPLES = 1000  # the loop-lag sampler's last 10 s (one sample per 10 ms)
# histogram upper bounds, seconds (the last, +Inf, is implied): 1 ms to 2 min, about 2.5x apart
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
             5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
HISTOGRAMS = ("ttft", "itl", "tpot", "e2e_latency")
_BOUNDS = np.asarray(BUCKETS_S)
# metrics and ITL gaps are computed this many requests at a time: numpy's cost is per call, not per value
ITL_BATCH = 64


class Histogram:
    """Cumulative counts per bucket (not yet summed up: Prometheus's `le` view is `cumulative()`)."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS_S, seconds)] += 1  # le: a value on a bound falls in it
        self.sum += seconds
        self.count += 1

    def observe_many(self, seconds: np.ndarray) -> None:
        if seconds.size == 0:
            return
        for i, n in enumerate(np.bincount(np.searchsorted(_BOUNDS, seconds, side="left"),
                                          minlength=len(self.counts)).tolist()):
            self.counts[i] += n
        self.sum += float(seconds.sum())
        self.count += int(seconds.size)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, requests at or under it), +Inf last."""
        out, acc = [], 0
        for bound, n in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            acc += n
            out.append((bound, acc))
        return out

    def copy(self) -> Histogram:
        h = Histogram()
        h.counts, h.sum, h.count = list(self.counts), self.sum, self.count
        return h


@dataclass(frozen=True, slots=True)
class Counts:
    """The requests and tokens since the start, as of one moment (measured requests; warm-up apart)."""

    in_flight: int
    ok: int
    failed: int
    cancelled: int
    by_class: dict[str, int]
    warmup_done: int
    output_tokens: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Totals:
    """The counts and histograms since the start, as of one moment (what --serve-metrics exports)."""

    counts: Counts
    histograms: dict[str, Histogram]


@dataclass(frozen=True, slots=True)
class LiveView:
    """What the run looks like now: totals plus the last `window_s` seconds. None: nothing to say yet."""

    elapsed_s: float
    counts: Counts
    window_s: float
    output_tps: float | None  # output tokens of the requests that finished in the window, per second
    request_rate: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    loop_lag_p99_ms: float | None
    cpu_share: float | None  # this process's CPU (all threads) over the window, of one core
    slow_send_share: float | None  # requests whose send delay (due -> written) was over 1 ms
    client_bound: list[str]  # which of the client's health limits the window is over (analysis.health's)


class LiveStats:
    """Fed by the runner (`started`, `finished`); read by `view()` and `totals()`."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._t0: int | None = None  # the first request's start: the live numbers' time 0
        self._in_flight = 0
        self._ok = 0
        self._failed = 0
        self._cancelled = 0
        self._by_class: Counter[str] = Counter()
        self._warmup_done = 0
        self._output_tokens = 0
        self._prompt_tokens = 0
        self._hist = {k: Histogram() for k in HISTOGRAMS}
        # a ring of the last WINDOW_MAX successful measured requests: (t_done ns, output tokens, ttft ms,
        # tpot ms, send delay ms), nan where undefined; `_n` rows written in all
        self._ring = np.full((WINDOW_MAX, 5), np.nan)
        self._n = 0
        self._cpu: deque[tuple[float, float]] = deque(maxlen=4096)  # (wall, process CPU) at each view()
        # chunk arrival times of requests whose ITL gaps are not binned yet, one after the other, and their lengths
        self._itl_times = array("q")
        self._itl_lens: list[int] = []
        self._pending: list[RequestRecord] = []  # finished ok, measured: metrics not yet computed (_flush)
        self.lags: Sequence[float] = ()  # the loop-lag sampler's list (core.health), set by whoever runs the load
        self.final = False  # the load is over: the totals will not change again

    def started(self, rec: RequestRecord) -> None:
        with self._lock:
            self._in_flight += 1
            if self._t0 is None:
                self._t0 = perf_counter_ns()

    def finished(self, rec: RequestRecord) -> None:
        """A started request is done (ok, failed or cancelled). Its metrics wait for a batch (`_flush`): the
        result's formulas run over columns, whose cost is per call, so one request alone would pay it all."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if rec.warmup:
                self._warmup_done += 1
                return
            if rec.error_class is ErrorClass.CANCELLED:
                self._cancelled += 1
            elif rec.failed:
                self._failed += 1
                self._by_class[str(rec.error_class)] += 1
            if not rec.ok:
                return
            self._ok += 1
            self._output_tokens += rec.output_tokens if rec.output_tokens is not None else rec.content_chunks
            self._prompt_tokens += rec.prompt_tokens or 0
            self._pending.append(rec)
            if len(self._pending) >= ITL_BATCH:
                self._flush()

    def _flush(self) -> None:
        """The pending requests' metrics (analysis.stats.metric_columns) into the histograms and the ring."""
        recs, self._pending = self._pending, []
        if not recs:
            return
        cols = metric_columns(recs)
        h = self._hist
        for name, key in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e_latency", "e2e_latency_ms")):
            v = cols[key]
            h[name].observe_many(v[~np.isnan(v)] / 1e3)
        nan = float("nan")
        for k, rec in enumerate(recs):
            # per-token gaps need the chunk's token counts (analysis.stats.gaps); plain chunk gaps are binned in batches
            if rec.chunk_tokens is not None and len(rec.chunk_tokens) == len(rec.chunk_times):
                h["itl"].observe_many(gaps(rec)[1] / 1e3)
            elif len(rec.chunk_times) > 1:
                self._itl_times.extend(rec.chunk_times)
                self._itl_lens.append(len(rec.chunk_times))
            send = SendPath((rec,)).delay_ms  # the client's own delay, as client_health has it
            out = rec.output_tokens if rec.output_tokens is not None else rec.content_chunks
            self._ring[self._n % WINDOW_MAX] = (rec.t_done or perf_counter_ns(), out, cols["ttft_ms"][k],
                                                cols["tpot_ms"][k], send[0] if send else nan)
            self._n += 1
        self._bin_itl()

    def _bin_itl(self) -> None:
        """The pending requests' chunk gaps (analysis.stats.gaps without token counts) into the ITL histogram."""
        if not self._itl_lens:
            return
        d = np.diff(np.frombuffer(self._itl_times, dtype=np.int64))
        d = np.delete(d, np.cumsum(self._itl_lens)[:-1] - 1)  # the steps from one request to the next
        self._hist["itl"].observe_many(d / 1e9)
        self._itl_times = array("q")
        self._itl_lens = []

    def add_all(self, records: Sequence[RequestRecord]) -> None:
        """Records that reached this process only at the end (worker processes): counted now."""
        for r in records:
            self.finished(r)

    def totals(self) -> Totals:
        with self._lock:
            self._flush()
            return Totals(self._counts(), {k: h.copy() for k, h in self._hist.items()})

    def _counts(self) -> Counts:  # under the lock
        return Counts(in_flight=self._in_flight, ok=self._ok, failed=self._failed, cancelled=self._cancelled,
                      by_class=dict(self._by_class), warmup_done=self._warmup_done,
                      output_tokens=self._output_tokens, prompt_tokens=self._prompt_tokens)

    def view(self) -> LiveView:
        now = perf_counter_ns()
        wall, cpu = time.perf_counter(), time.process_time()
        cut = now - int(self.window_s * 1e9)
        with self._lock:
            self._flush()
            rows = self._ring[: min(self._n, WINDOW_MAX)]
            rows = rows[rows[:, 0] >= cut]  # a copy
            full = self._n >= WINDOW_MAX
            self._cpu.append((wall, cpu))
            while len(self._cpu) > 1 and self._cpu[1][0] <= wall - self.window_s:
                self._cpu.popleft()
            w0, c0 = self._cpu[0]
            if self._t0 is None and self._n:  # fed only at the end (worker processes)
                self._t0 = int(np.nanmin(self._ring[: min(self._n, WINDOW_MAX), 0]))
            counts = self._counts()
        elapsed = (now - self._t0) / 1e9 if self._t0 is not None else 0.0
        # the window is the whole run until the run is that long
        span = min(self.window_s, elapsed) if elapsed > 0 else None
        if full and len(rows) == WINDOW_MAX and span:  # a run this fast: its window is its last WINDOW_MAX requests
            span = min(span, (now - rows[:, 0].min()) / 1e9)
        lag = _pct(np.asarray(self.lags[-LAG_SAMPLES:], dtype=np.float64), 99)
        cpu_share = (cpu - c0) / (wall - w0) if wall - w0 >= 0.5 else None
        sends = rows[:, 4][~np.isnan(rows[:, 4])]
        slow = float((sends > SEND_DELAY_MS).mean()) if sends.size else None
        bound = []
        if lag is not None and lag > LAG_P99_LIMIT_MS:
            bound.append(f"loop lag p99 {lag:.1f} ms")
        if cpu_share is not None and cpu_share > CPU_SHARE_LIMIT:
            bound.append(f"CPU {cpu_share:.0%}")
        if slow is not None and slow > LATE_SHARE_LIMIT and sends.size >= 20:
            bound.append(f"{slow:.0%} of sends over {SEND_DELAY_MS:g} ms")
        return LiveView(
            elapsed_s=elapsed, counts=counts, window_s=self.window_s,
            output_tps=float(rows[:, 1].sum()) / span if span else None,
            request_rate=len(rows) / span if span else None,
            ttft_p50_ms=_pct(rows[:, 2], 50), ttft_p99_ms=_pct(rows[:, 2], 99),
            tpot_p50_ms=_pct(rows[:, 3], 50), tpot_p99_ms=_pct(rows[:, 3], 99),
            loop_lag_p99_ms=lag, cpu_share=cpu_share, slow_send_share=slow, client_bound=bound)


def _pct(a: np.ndarray, q: float) -> float | None:
    a = a[~np.isnan(a)]
    return float(np.percentile(a, q)) if a.size else None
