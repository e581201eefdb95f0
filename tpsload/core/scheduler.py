"""When each request should start (open loop): a pure, seeded plan computed up front.

Send times are offsets from one start instant. The runner waits for each absolute time
rather than sleeping between sends, so a late wake-up never shifts the rest of the
schedule (no drift), and lateness is measured per request (`send_lag`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from tpsload.config import RunConfig, Stage

ARRIVALS = ("constant", "poisson", "gamma")


def arrival_offsets(n: int, rate: float, arrival: str = "poisson", burstiness: float = 1.0,
                    seed: int = 0) -> np.ndarray:
    """Offsets in seconds of n sends at `rate` per second; the first at 0.

    poisson: exponential gaps; gamma: gaps with shape `burstiness` (< 1 burstier than
    Poisson, > 1 smoother; 1 is Poisson), mean 1/rate; constant: evenly spaced.
    """
    if n <= 0:
        return np.empty(0)
    if rate <= 0:
        raise ValueError("rate must be positive")
    mean = 1.0 / rate
    if arrival == "constant":
        gaps = np.full(n - 1, mean)
    else:
        rng = np.random.default_rng(seed)
        if arrival == "poisson":
            gaps = rng.exponential(mean, n - 1)
        elif arrival == "gamma":
            if burstiness <= 0:
                raise ValueError("burstiness must be positive")
            gaps = rng.gamma(burstiness, mean / burstiness, n - 1)
        else:
            raise ValueError(f"unknown arrival {arrival!r}; one of {', '.join(ARRIVALS)}")
        # Rescale so the plan's own rate is exactly `rate`: random gaps keep their shape
        # (bursts), but a short run does not offer 10 % more or less load than asked.
        total = gaps.sum()
        if total > 0:
            gaps *= (n - 1) * mean / total
    return np.concatenate([[0.0], np.cumsum(gaps)])


def stage_starts(stages: Sequence[Stage]) -> list[float]:
    """Each stage's start, and the end of the last, in seconds from the run's start."""
    out = [0.0]
    for s in stages:
        out.append(out[-1] + s.duration_s)
    return out


def _expected(s: Stage, tau: float) -> float:
    """Requests a rate stage asks for in its first `tau` seconds (the integral of its rate)."""
    return s.start * tau + (s.end - s.start) * tau * tau / (2 * s.duration_s)


def _when(s: Stage, x: float) -> float:
    """The inverse of _expected: the time into the stage by which it has asked for x requests."""
    if s.end == s.start:
        return x / s.start
    a = (s.end - s.start) / (2 * s.duration_s)
    return (-s.start + math.sqrt(max(0.0, s.start * s.start + 4 * a * x))) / (2 * a)


def staged_offsets(stages: Sequence[Stage], arrival: str = "poisson", burstiness: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """Send offsets in seconds of an open-loop staged run (rate steps and linear ramps).

    The arrivals of a unit rate (`arrival_offsets`: the same constant, Poisson or gamma gaps) are
    carried through the inverse of the stages' cumulative rate (time rescaling), so the rate at
    every moment is the stages' rate there, and the gaps keep their shape.
    """
    cum = [0.0]
    for s in stages:
        cum.append(cum[-1] + _expected(s, s.duration_s))
    n = math.ceil(cum[-1])
    unit = arrival_offsets(n, 1.0, arrival, burstiness, seed)
    starts = stage_starts(stages)
    out = np.empty(len(unit))
    k = 0
    for j, x in enumerate(unit.tolist()):
        while k < len(stages) - 1 and x >= cum[k + 1]:
            k += 1
        out[j] = starts[k] + min(stages[k].duration_s, _when(stages[k], x - cum[k]))
    return out


def concurrency_plan(stages: Sequence[Stage]) -> list[tuple[float, int, int]]:
    """Closed loop: (offset s, streams wanted, stage) at the start of each stage and at every change
    within a ramp. A ramp from a to b moves one stream at a time, each move half a step early, so
    that its time-weighted mean is (a + b) / 2, the middle of the ramp."""
    plan: list[tuple[float, int, int]] = []
    for k, (s, t0) in enumerate(zip(stages, stage_starts(stages), strict=False)):
        a, b = int(s.start), int(s.end)
        plan.append((t0, a, k))
        step = 1 if b > a else -1
        for level in range(a + step, b + step, step):
            plan.append((t0 + (abs(level - a) - 0.5) / abs(b - a) * s.duration_s, level, k))
    return plan


def stage_at(starts: Sequence[float], t: float) -> int:
    """The stage that offset `t` (s) falls in (the last one for t at or past the end)."""
    return max(0, min(len(starts) - 2, int(np.searchsorted(starts, t, side="right")) - 1))


def open_plan(cfg: RunConfig, start_ns: int, offsets_s: Sequence[float] | None = None
              ) -> tuple[list[int], int | None]:
    """The open-loop plan: every request's absolute send time (warm-up first), and with
    --duration the end of the measured time, which starts after the warm-up requests.

    `offsets_s` (a trace replay) are the send times, as given; --stages plan their own."""
    load = cfg.load
    if offsets_s is not None:
        return [start_ns + round(off * 1e9) for off in offsets_s], None
    if load.stages:
        offsets = staged_offsets(load.stages, load.arrival, load.burstiness, cfg.workload.seed)
        return [start_ns + round(off * 1e9) for off in offsets.tolist()], \
            start_ns + round(stage_starts(load.stages)[-1] * 1e9)
    n = (load.requests + load.warmup) if load.requests is not None else \
        int((load.duration_s or 0) * (load.rate or 1.0)) + 1 + load.warmup
    offsets = (arrival_offsets(n, load.rate or 1.0, load.arrival, load.burstiness, cfg.workload.seed) * 1e9
               ).astype(np.int64)
    times = [start_ns + off for off in offsets.tolist()]
    deadline = times[min(cfg.load.warmup, n - 1)] + int(cfg.load.duration_s * 1e9) if cfg.load.duration_s else None
    return times, deadline
