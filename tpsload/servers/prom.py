"""Prometheus text in, numbers out: parsing (prometheus_client's parser) and the window arithmetic.

No I/O here. A sample is keyed by its raw name and its labels, so nothing the
server said is renamed; meanings are looked up later (maps.py).

Window arithmetic follows Prometheus: a counter's increase survives a reset (a
drop means the server restarted and counted again from zero), and a histogram
quantile interpolates linearly inside the bucket that holds the rank, like
PromQL's histogram_quantile.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]  # (raw sample name, sorted labels)


def parse(text: str) -> dict[Key, float]:
    """Every sample of a Prometheus text page. ValueError when the text is not Prometheus text."""
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _selector(prefixes: Sequence[str], buckets: bool) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(p.encode()) for p in prefixes)
    # `_created` (prometheus_client's creation stamps) is never needed; buckets only where asked
    skip = rb"(?![^\s{]*_created[\s{])" if buckets else rb"(?![^\s{]*_(?:bucket|created)[\s{])"
    # a sample line, or the TYPE line that tells the parser what follows (HELP text is not needed)
    return re.compile(rb"^(?:# TYPE )?(?:" + names + rb")" + skip + rb"[^\n]*", re.M)


_SELECTORS: dict[tuple[tuple[str, ...], bool], re.Pattern[bytes]] = {}


def select(body: bytes, prefixes: Sequence[str], buckets: bool = True) -> str:
    """The lines of `body` under the given name prefixes, histogram buckets only when asked.

    A vLLM page is ~40 KB, most of it histogram buckets and process/GC metrics; the
    time series needs none of that, and the parser's cost grows with every line.
    """
    key = (tuple(prefixes), buckets)
    rx = _SELECTORS.get(key) or _SELECTORS.setdefault(key, _selector(prefixes, buckets))
    return b"\n".join(rx.findall(body)).decode("utf-8", "replace") + "\n"


def key_str(key: Key) -> str:
    """`name{a="1",b="2"}`: the sample as Prometheus writes it."""
    name, labels = key
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def without(labels: Labels, *names: str) -> Labels:
    return tuple((k, v) for k, v in labels if k not in names)


# --- time series over scrapes ---------------------------------------------------------------

def bracket(t_ns: Sequence[int], t_start: int, t_end: int) -> tuple[int, int] | None:
    """Indices of the last sample at or before t_start and the first at or after t_end.

    Where no sample lies outside the window on one side, the nearest inside stands
    in: the window is then covered only partly, which the caller reports.
    """
    if not t_ns:
        return None
    i0 = 0
    for i, t in enumerate(t_ns):
        if t <= t_start:
            i0 = i
    i1 = len(t_ns) - 1
    for i in range(len(t_ns) - 1, -1, -1):
        if t_ns[i] >= t_end:
            i1 = i
    return (i0, max(i0, i1))


def increase(values: Sequence[float | None], i0: int, i1: int) -> tuple[float | None, bool]:
    """A counter's increase from sample i0 to i1, and whether it was reset on the way."""
    prev: float | None = None
    total = 0.0
    reset = False
    seen = False
    for v in values[i0:i1 + 1]:
        if v is None or math.isnan(v):
            continue
        if prev is not None:
            if v >= prev:
                total += v - prev
            else:
                total += v
                reset = True
        prev = v
        seen = True
    if not seen or prev is None:
        return None, reset
    return total, reset


def gauge_stats(t_ns: Sequence[int], values: Sequence[float | None], t_start: int,
                t_end: int) -> dict[str, float] | None:
    """Mean, max and min of a gauge's samples inside [t_start, t_end] (the bracketing ones if none lie inside)."""
    inside = [v for t, v in zip(t_ns, values, strict=True)
              if t_start <= t <= t_end and v is not None and not math.isnan(v)]
    if not inside:
        b = bracket(t_ns, t_start, t_end)
        if b is None:
            return None
        inside = [v for v in (values[b[0]], values[b[1]]) if v is not None and not math.isnan(v)]
    if not inside:
        return None
    return {"mean": sum(inside) / len(inside), "max": max(inside), "min": min(inside), "n": len(inside)}


# --- histograms -----------------------------------------------------------------------------

def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets [(upper bound, count)], as PromQL's histogram_quantile.

    The rank q*total falls in one bucket; the estimate interpolates linearly between
    that bucket's bounds (the first bucket starts at 0). A rank in the +Inf bucket
    gives the largest finite bound. None when there are no observations.
    """
    bs = sorted(buckets)
    if len(bs) < 2 or not math.isinf(bs[-1][0]):
        return None
    # counts must not fall with the bound; deltas of racing scrapes sometimes do
    fixed: list[tuple[float, float]] = []
    run = 0.0
    for le, c in bs:
        run = max(run, c)
        fixed.append((le, run))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    b = next((i for i, (_, c) in enumerate(fixed[:-1]) if c >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start = 0.0 if b == 0 else fixed[b - 1][0]
    below = 0.0 if b == 0 else fixed[b - 1][1]
    end, count = fixed[b][0], fixed[b][1] - below
    if count <= 0:
        return end
    return start + (end - start) * (rank - below) / count


def histogram_delta(before: dict[Key, float], after: dict[Key, float], base: str) -> dict[str, object] | None:
    """A histogram's buckets, sum and count gained between two scrapes, summed over label sets.

    A histogram counted again from zero (a restart between the scrapes) gives its
    `after` values, as a counter's increase would.
    """
    def collect(sample: dict[Key, float]) -> tuple[dict[float, float], float, float, bool]:
        bk: dict[float, float] = {}
        s = c = 0.0
        found = False
        for (name, labels), v in sample.items():
            if name == base + "_bucket":
                le = dict(labels).get("le")
                if le is None:
                    continue
                bound = math.inf if le in ("+Inf", "Inf", "inf") else float(le)
                bk[bound] = bk.get(bound, 0.0) + v
                found = True
            elif name == base + "_sum":
                s += v
            elif name == base + "_count":
                c += v
                found = True
        return bk, s, c, found

    b1, s1, c1, f1 = collect(after)
    if not f1:
        return None
    b0, s0, c0, _ = collect(before)
    reset = c1 < c0 or any(b1.get(le, 0.0) < v for le, v in b0.items())
    if reset:
        b0, s0, c0 = {}, 0.0, 0.0
    buckets = [(le, v - b0.get(le, 0.0)) for le, v in sorted(b1.items())]
    count = c1 - c0
    if not buckets and count:
        buckets = [(math.inf, count)]
    return {"buckets": buckets, "sum": s1 - s0, "count": count, "reset": reset}
