"""When each request should start (open loop): a pure, seeded plan computed up front.

Send times are offsets from one start instant. The runner waits for each absolute time
rather than sleeping between sends, so a late wake-up never shifts the rest of the
schedule (no drift), and lateness is measured per request (`send_lag`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tpsload.config import RunConfig

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


def open_plan(cfg: RunConfig, start_ns: int) -> tuple[list[int], int | None]:
    """The open-loop plan: every request's absolute send time (warm-up first), and with
    --duration the end of the measured time, which starts after the warm-up requests."""
    load = cfg.load
    n = (load.requests + load.warmup) if load.requests is not None else \
        int((load.duration_s or 0) * (load.rate or 1.0)) + 1 + load.warmup
    offsets = (arrival_offsets(n, load.rate or 1.0, load.arrival, load.burstiness, cfg.workload.seed) * 1e9
               ).astype(np.int64)
    times = [start_ns + off for off in offsets.tolist()]
    deadline = times[min(cfg.load.warmup, n - 1)] + int(cfg.load.duration_s * 1e9) if cfg.load.duration_s else None
    return times, deadline
