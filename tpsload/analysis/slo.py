"""Service-level objectives: `ttft_p99<=2s`, `tpot_p50<=80ms`, `decode_tps_p10>=10`, `error_rate<=1%`.

Parsed strictly (an unknown metric, statistic or unit is an error that says what is
allowed), evaluated against a run's per-request metrics, and turned into goodput: the
requests that met every per-request objective, per second (METRICS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tpsload.analysis.ledger import GapHistogram
from tpsload.analysis.stats import PerRequest, Summary
from tpsload.errors import TpsloadError

TIME_METRICS = ("ttft", "itl", "icl", "tpot", "e2e_latency", "ttft_sched", "e2e_latency_sched", "ttfa")
RATE_METRICS = ("decode_tps", "e2e_tps", "prefill_tps", "reasoning_decode_tps", "answer_decode_tps")
RUN_METRICS = {"error_rate": "fraction", "output_throughput": "tok/s", "steady_output_throughput": "tok/s",
               "request_throughput": "req/s"}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_SPEC = re.compile(r"^\s*([a-z_]+?)(?:_(p\d+(?:[._]\d+)?|mean|min|max))?"  # metric, statistic
                   r"\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*([a-z/%]*)\s*$")  # comparison, number, unit


@dataclass(frozen=True)
class SLO:
    text: str
    metric: str  # e.g. "ttft", "decode_tps", "error_rate"
    stat: str | None  # "p99", "mean", ... for per-request metrics; None for run metrics
    op: str
    threshold: float  # ms for times, tokens/s or requests/s for rates, a fraction for error_rate

    @property
    def key(self) -> str:
        """The summary key it reads: `ttft_ms`, `decode_tps`, `error_rate`."""
        return f"{self.metric}_ms" if self.metric in TIME_METRICS else self.metric

    def ok(self, value: float) -> bool:
        return {"<=": value <= self.threshold, ">=": value >= self.threshold,
                "<": value < self.threshold, ">": value > self.threshold}[self.op]


def parse(text: str) -> SLO:
    m = _SPEC.match(text)
    hint = "e.g. ttft_p99<=2s, tpot_p50<=80ms, decode_tps_p10>=10, error_rate<=1%"
    if not m:
        raise TpsloadError(f"--slo {text!r}: expected METRIC[_STAT]<=VALUE[UNIT] ({hint})")
    metric, stat, op, num, unit = m.groups()
    try:
        value = float(num)
    except ValueError:
        raise TpsloadError(f"--slo {text!r}: {num!r} is not a number") from None
    if metric in RUN_METRICS:
        if stat:
            raise TpsloadError(f"--slo {text!r}: {metric} is one number per run; drop '_{stat}'")
        if metric == "error_rate":
            if unit == "%":
                value /= 100
            elif unit:
                raise TpsloadError(f"--slo {text!r}: error_rate takes a fraction or a percentage (1%)")
        elif unit not in ("", RUN_METRICS[metric]):
            raise TpsloadError(f"--slo {text!r}: {metric} is in {RUN_METRICS[metric]}")
        return SLO(text.strip(), metric, None, op, value)
    if metric not in TIME_METRICS + RATE_METRICS:
        known = ", ".join(TIME_METRICS + RATE_METRICS + tuple(RUN_METRICS))
        raise TpsloadError(f"--slo {text!r}: unknown metric {metric!r}; one of {known}")
    if not stat:
        raise TpsloadError(f"--slo {text!r}: say which statistic: {metric}_p99, {metric}_p50, {metric}_mean, ...")
    stat = stat.replace(".", "_")
    if stat.startswith("p"):
        q = float(stat[1:].replace("_", "."))
        if not 0 <= q <= 100:
            raise TpsloadError(f"--slo {text!r}: percentile must be within 0..100")
    if metric in TIME_METRICS:
        if unit not in _TIME_UNITS:
            raise TpsloadError(f"--slo {text!r}: {metric} needs a time unit: ms, s or us")
        value *= _TIME_UNITS[unit]
    elif unit not in ("", "tok/s"):
        raise TpsloadError(f"--slo {text!r}: {metric} is in tokens/s (no unit or tok/s)")
    return SLO(text.strip(), metric, stat, op, value)


def _stat(values: np.ndarray | GapHistogram, stat: str) -> float | None:
    if isinstance(values, GapHistogram):  # a long run's gaps (analysis.ledger)
        if not values.n:
            return None
        if stat in ("mean", "min", "max"):
            return float(getattr(values, stat))
        return values.percentiles((float(stat[1:].replace("_", ".")),))[0]
    if values.size == 0:
        return None
    if stat == "mean":
        return float(values.mean())
    if stat == "min":
        return float(values.min())
    if stat == "max":
        return float(values.max())
    return float(np.percentile(values, float(stat[1:].replace("_", "."))))


@dataclass(frozen=True, slots=True)
class Objective:
    """One objective's verdict: the measured value, and whether it met the threshold."""

    slo: str  # as the user wrote it
    metric: str  # the summary key it reads
    stat: str | None
    op: str
    threshold: float
    value: float | None
    met: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The `slo` object of the result JSON; goodput is also the summary's."""

    objectives: list[Objective]
    all_met: bool
    good_requests: int
    goodput: float | None
    goodput_tokens: float | None


def evaluate(slos: Sequence[SLO], pr: PerRequest, summary: Summary) -> Verdict:
    """Each objective met or missed with its measured value; goodput over the per-request ones."""
    verdicts = []
    per_request = [s for s in slos if s.stat and s.metric not in ("itl", "icl")]
    for s in slos:
        if s.stat is None:
            value = getattr(summary, s.metric)  # one of RUN_METRICS, all summary fields
        elif s.metric in ("itl", "icl"):
            value = _stat(getattr(pr, f"{s.metric}_ms"), s.stat)
        else:
            value = _stat(pr.column(s.key), s.stat)
        verdicts.append(Objective(slo=s.text, metric=s.key, stat=s.stat, op=s.op, threshold=s.threshold,
                                  value=value, met=value is not None and s.ok(value)))
    # goodput: a request counts when it meets every per-request objective (a missing metric is a miss)
    good = np.ones(len(pr), bool)
    for s in per_request:
        col = pr.cols.get(s.key)
        good &= np.zeros(len(pr), bool) if col is None else (~np.isnan(col) & s.ok(col))
    n_good = int(good.sum())
    tokens = int(pr.cols["output_tokens"][good].sum())
    duration = summary.duration_s or 0
    return Verdict(
        objectives=verdicts,
        all_met=all(v.met for v in verdicts),
        good_requests=n_good,
        goodput=n_good / duration if duration else None,
        goodput_tokens=tokens / duration if duration else None,
    )
