"""Is the client itself the bottleneck? Loop lag, late sends and CPU (docs/metrics.md "Client health"). Pure."""

from __future__ import annotations

from typing import Any, Sequence

from tpsload.analysis.stats import dist

LAG_P99_LIMIT_MS = 5.0
LATE_SEND_MS = 1.0
LATE_SHARE_LIMIT = 0.01
CPU_SHARE_LIMIT = 0.90


def verdict(lags_ms: Sequence[float], send_lags_ms: Sequence[float], cpu_s: float, wall_s: float) -> dict[str, Any]:
    """client_health for the result: the numbers and whether the client limited the run."""
    lag = dist(lags_ms)
    share = cpu_s / wall_s if wall_s > 0 else 0.0
    late = (sum(1 for x in send_lags_ms if x > LATE_SEND_MS) / len(send_lags_ms)) if send_lags_ms else None
    reasons = []
    if lag and lag["p99"] > LAG_P99_LIMIT_MS:
        reasons.append(f"event-loop lag p99 {lag['p99']:.1f} ms > {LAG_P99_LIMIT_MS:g} ms")
    if late is not None and late > LATE_SHARE_LIMIT:
        reasons.append(f"{late:.1%} of requests sent > {LATE_SEND_MS:g} ms late (limit {LATE_SHARE_LIMIT:.0%})")
    if share > CPU_SHARE_LIMIT:
        reasons.append(f"client CPU {share:.0%} of one core > {CPU_SHARE_LIMIT:.0%}")
    return {
        "loop_lag_ms": lag,
        "send_lag_ms": dist(send_lags_ms),
        "late_send_share": late,
        "cpu_s": cpu_s,
        "cpu_share": share,
        "client_bound": bool(reasons),
        "reasons": reasons,
    }
