"""Results -> ratios with 95 % bootstrap confidence intervals, comparability, regression gates. Pure.

A difference is called significant only when its interval excludes 1 (METRICS.md
"Comparing runs") and it is at least `min_effect` large: a 0.3 % shift with a razor-thin
interval is real but does not matter, and between two runs of one configuration it is
usually the machine, not the configuration.

Intervals resample repetitions when both sides have several (--repeat): that captures
run-to-run noise. Otherwise they resample requests: latency percentiles directly, and
throughput through Little's law (tokens over time in flight, times the concurrency
achieved), so a throughput's interval reflects how much its requests varied.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tpsload.errors import TpsloadError


@dataclass(frozen=True, slots=True)
class Metric:
    """One comparable metric: where a result holds it, and how a request bootstrap re-estimates it
    (the table METRICS below)."""

    name: str  # in the table, the JSON and --fail-if
    unit: str
    higher_is_better: bool
    key: str
    stat: str | None  # "p50", "p99", "mean"
    samples: str | None
    little: bool

    @property
    def percentile(self) -> float | None:
        """99.0 for a p99; None for a mean or a per-run number."""
        return float(self.stat[1:].replace("_", ".")) if self.stat and self.stat.startswith("p") else None

    @property
    def per_request(self) -> bool:
        """Re-estimable from the requests of one run (else only from repetitions)."""
        return self.little or (self.stat is not None and self.samples is not None)


# The comparable metrics. key: where the value lives, result["summary"][key]; stat: set for a
# statistic of a per-request distribution; samples: the samples column its request bootstrap
# resamples; little: a throughput, re-estimated as the samples' work (a request each when
# None) per second in flight x concurrency. A metric with neither stat nor little has an
# interval only from repetitions.
#     name                        unit     higher  key                         stat   samples           little
METRICS: tuple[Metric, ...] = tuple(Metric(*row) for row in (
    ("output_throughput",          "tok/s", True,  "output_throughput",        None,  "output_tokens",  True),
    ("steady_output_throughput",   "tok/s", True,  "steady_output_throughput", None,  "output_tokens",  True),
    ("request_throughput",         "req/s", True,  "request_throughput",       None,  None,             True),
    ("ttft_p50",                   "ms",    False, "ttft_ms",                  "p50", "ttft_ms",        False),
    ("ttft_p99",                   "ms",    False, "ttft_ms",                  "p99", "ttft_ms",        False),
    ("tpot_p50",                   "ms",    False, "tpot_ms",                  "p50", "tpot_ms",        False),
    ("tpot_p99",                   "ms",    False, "tpot_ms",                  "p99", "tpot_ms",        False),
    ("ttfa_p50",                   "ms",    False, "ttfa_ms",                  "p50", "ttfa_ms",        False),
    ("ttfa_p99",                   "ms",    False, "ttfa_ms",                  "p99", "ttfa_ms",        False),
    ("e2e_latency_p50",            "ms",    False, "e2e_latency_ms",           "p50", "e2e_latency_ms", False),
    ("e2e_latency_p99",            "ms",    False, "e2e_latency_ms",           "p99", "e2e_latency_ms", False),
    ("decode_tps_p50",             "tok/s", True,  "decode_tps",               "p50", "decode_tps",     False),
    ("error_rate",                 "",      False, "error_rate",               None,  None,             False),
    ("goodput",                    "req/s", True,  "goodput",                  None,  None,             False),
))
BY_NAME = {m.name: m for m in METRICS}
B = 1000

# what must match for two results to be comparable
COMPARABLE = (("workload", "source"), ("workload", "input_tokens"), ("workload", "max_tokens"),
              ("workload", "endpoint"), ("workload", "stream"), ("workload", "ignore_eos"), ("model",),
              ("config", "slos"), ("config", "concurrency"), ("config", "rate"), ("kind",))


def value(result: dict[str, Any], metric: Metric) -> float | None:
    v = (result.get("summary") or {}).get(metric.key)
    if metric.stat is not None:
        return None if not v else v.get(metric.stat)
    return float(v) if isinstance(v, (int, float)) else None


def _column(result: dict[str, Any], name: str) -> np.ndarray:
    col = (result.get("samples") or {}).get(name) or []
    return np.asarray([np.nan if v is None else v for v in col], dtype=np.float64)


def _boot_stat(result: dict[str, Any], metric: Metric, idx: np.ndarray) -> np.ndarray:
    """The metric over B resamples of the result's requests (idx: B x n)."""
    if not metric.little:
        assert metric.samples is not None and metric.stat is not None
        col = _column(result, metric.samples)[idx]
        q = metric.percentile
        return np.nanmean(col, axis=1) if q is None else np.nanpercentile(col, q, axis=1)
    # throughput by Little's law: tokens (or requests) per second of time in flight x streams
    busy = np.nansum(_column(result, "e2e_latency_ms")[idx], axis=1) / 1e3
    conc = (result.get("summary") or {}).get("concurrency_achieved") or 1.0
    work = np.nansum(_column(result, metric.samples)[idx], axis=1) if metric.samples else \
        np.full(len(idx), idx.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return work / busy * conc


def ratio_ci(base: dict[str, Any], other: dict[str, Any], metric: Metric, seed: int = 0
             ) -> tuple[float, float] | None:
    """95 % bootstrap interval of other/base for one metric, or None when it cannot be estimated."""
    rng = np.random.default_rng(seed)
    reps_b, reps_o = base.get("repeats") or [], other.get("repeats") or []
    if len(reps_b) >= 2 and len(reps_o) >= 2:
        vb = np.asarray([value(r, metric) for r in reps_b], dtype=np.float64)
        vo = np.asarray([value(r, metric) for r in reps_o], dtype=np.float64)
        if np.isnan(vb).any() or np.isnan(vo).any():
            return None
        sb = vb[rng.integers(0, len(vb), (B, len(vb)))].mean(axis=1)
        so = vo[rng.integers(0, len(vo), (B, len(vo)))].mean(axis=1)
    else:
        if not metric.per_request:
            return None
        nb = len((base.get("samples") or {}).get("output_tokens") or [])
        no = len((other.get("samples") or {}).get("output_tokens") or [])
        if nb < 2 or no < 2:
            return None
        sb = _boot_stat(base, metric, rng.integers(0, nb, (B, nb)))
        so = _boot_stat(other, metric, rng.integers(0, no, (B, no)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = so / sb
    r = r[np.isfinite(r)]
    if r.size < B // 2:
        return None
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    higher_is_better: bool
    base: float | None
    other: float | None
    ratio: float | None
    ci: tuple[float, float] | None
    significant: bool
    note: str | None = None  # why a change is not judged (too few requests for a tail percentile)

    @property
    def change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1

    @property
    def better(self) -> bool | None:
        if not self.significant or self.ratio is None:
            return None
        return (self.ratio > 1) == self.higher_is_better


# compared only where a model reasoned (elsewhere TTFA is TTFT, already compared)
REASONING_ONLY = frozenset({"ttfa_p50", "ttfa_p99"})


def compare_pair(base: dict[str, Any], other: dict[str, Any], min_effect: float = 0.05) -> list[Row]:
    """Every metric of METRICS (TTFA only where a model reasoned), then turn by turn for conversations."""
    reasoned = any((r.get("summary") or {}).get("requests_reasoning") for r in (base, other))
    rows = [_row(base, other, m, min_effect) for m in METRICS if m.name not in REASONING_ONLY or reasoned]
    return rows + compare_turns(base, other, min_effect)


def _row(base: dict[str, Any], other: dict[str, Any], m: Metric, min_effect: float) -> Row:
    vb, vo = value(base, m), value(other, m)
    ratio = vo / vb if vb and vo is not None else None
    ci = ratio_ci(base, other, m) if ratio is not None else None
    sig = bool(ci and (ci[0] > 1 or ci[1] < 1) and ratio is not None and abs(ratio - 1) >= min_effect)
    note = _too_few(base, other, m)
    return Row(m.name, m.unit, m.higher_is_better, vb, vo, ratio, ci, sig and note is None, note)


# Conversations (--turns): these are judged turn by turn too, as "ttft_p50@turn2" (a later turn's prompt
# repeats the earlier ones, so a prompt cache shows there and not in the pooled numbers)
PER_TURN = ("ttft_p50", "ttft_p99", "tpot_p50")
TURN = "@turn"


def compare_turns(base: dict[str, Any], other: dict[str, Any], min_effect: float = 0.05) -> list[Row]:
    """Rows for each turn both conversation runs reached; none unless both have per-request turns."""
    tb, to = _turns(base), _turns(other)
    if tb is None or to is None:
        return []
    rows = []
    for t in sorted(set(tb.tolist()) & set(to.tolist())):
        vb, vo = _turn_view(base, tb == t), _turn_view(other, to == t)
        for name in PER_TURN:
            m = BY_NAME[name]
            rows.append(_row(vb, vo, dataclasses.replace(m, name=f"{name}{TURN}{t}"), min_effect))
    return rows


def _turns(result: dict[str, Any]) -> np.ndarray | None:
    turns = (result.get("samples") or {}).get("turn")
    return None if not turns else np.asarray(turns)


def _turn_view(result: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """The result as if it were only the requests of one turn: their samples, and the summary statistics
    the per-turn metrics read, from those samples (no repetitions: their runs are not split by turn)."""
    cols = {k: [v for v, keep in zip(col, mask, strict=True) if keep]
            for k, col in (result.get("samples") or {}).items() if isinstance(col, list)}
    summary = {}
    for name in PER_TURN:
        m = BY_NAME[name]
        assert m.samples is not None and m.percentile is not None
        x = np.asarray([v for v in cols.get(m.samples) or [] if v is not None], dtype=np.float64)
        summary.setdefault(m.key, {})[m.stat] = float(np.percentile(x, m.percentile)) if x.size else None
    return {"samples": cols, "summary": summary}


# A tail percentile needs requests beyond it: resampling 64 requests for a p99 draws the same
# one or two values again and again, so its interval is far too narrow to judge by.
MIN_TAIL = 5


def _too_few(base: dict[str, Any], other: dict[str, Any], metric: Metric) -> str | None:
    if metric.percentile is None or (base.get("repeats") and other.get("repeats")):
        return None
    q = metric.percentile / 100
    n = min(len((r.get("samples") or {}).get("output_tokens") or []) for r in (base, other))
    need = math.ceil(MIN_TAIL / max(min(q, 1 - q), 1e-9))
    return None if n >= need else f"{n} requests are too few to judge a {metric.stat} (needs {need})"


def _get(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = result
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    return v


def incomparable(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Why two results measure different things: one line per differing field."""
    out = []
    if base.get("kind") == "sweep" and other.get("kind") == "sweep":
        if base.get("key") != other.get("key"):
            out.append(f"sweep key differs: {base.get('key')!r} vs {other.get('key')!r}")
        if not base.get("levels") or not other.get("levels"):
            return out
        # levels are compared with levels: their workload, model and SLOs must match
        base, other = base["levels"][0], other["levels"][0]
        paths = [p for p in COMPARABLE if p not in (("config", "concurrency"), ("config", "rate"))]
    else:
        paths = list(COMPARABLE)
    for path in paths:
        a, b = _get(base, path), _get(other, path)
        if a != b:
            out.append(f"{'.'.join(path)} differs: {a!r} vs {b!r}")
    return out


def name(result: dict[str, Any], path: str) -> str:
    return result.get("label") or path


_GATE = re.compile(r"^\s*([a-z0-9_]+(?:@turn\d+)?)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    threshold: float  # a fraction: -0.05 for -5 %

    def fails(self, row: Row) -> bool:
        if not row.significant or row.change is None:
            return False
        return row.change < self.threshold if self.op == "<" else row.change > self.threshold


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if not m:
        raise TpsloadError(f"--fail-if {text!r}: expected METRIC < -5% or METRIC > +10%")
    metric, op, pct = m.groups()
    base, _, turn = metric.partition(TURN)
    if base not in BY_NAME or (turn and base not in PER_TURN):
        known = ", ".join([*BY_NAME, *(f"{n}{TURN}N" for n in PER_TURN)])
        raise TpsloadError(f"--fail-if {text!r}: unknown metric {metric!r}; one of {known}")
    return Gate(text.strip(), metric, op, float(pct) / 100)


def gate_failures(gates: Sequence[Gate], rows: Sequence[Row], label: str) -> list[str]:
    out = []
    by = {r.metric: r for r in rows}
    for g in gates:
        r = by.get(g.metric)
        if r is None and g.metric in REASONING_ONLY:  # no reasoning on either side: TTFA is TTFT
            r = by.get(g.metric.replace("ttfa", "ttft"))
        if r is None:  # a turn one of the two did not reach (or not conversations): not judged is not passed
            out.append(f"{label}: {g.metric} not compared: not in both results")
            continue
        if g.fails(r):
            assert r.ci is not None and r.change is not None
            out.append(f"{label}: {g.metric} changed {r.change:+.1%} (95% CI {r.ci[0] - 1:+.1%} to "
                       f"{r.ci[1] - 1:+.1%}), past {g.text}")
    return out


def levels(sweep: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {lv[sweep["key"]]: lv for lv in sweep.get("levels", []) if not lv.get("partial")}
