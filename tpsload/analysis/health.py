"""Is the client itself the bottleneck? Loop lag, late sends and CPU (docs/metrics.md "Client health"). Pure.

In open loop with a -c cap, a request whose time has come waits while the cap is full: that lateness
is the load shaping the user asked for, not the client's slowness. It is taken out of the late-send
judgement and reported on its own (`cap_wait_ms`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from tpsload.analysis.stats import dist
from tpsload.records import RequestRecord

LAG_P99_LIMIT_MS = 5.0
LATE_SEND_MS = 1.0
LATE_SHARE_LIMIT = 0.01
CPU_SHARE_LIMIT = 0.90


def send_lags(records: Iterable[RequestRecord]) -> tuple[list[float], list[float]]:
    """(send lag, of which cap wait) in ms, per measured request that was sent."""
    send: list[float] = []
    cap: list[float] = []
    for r in records:
        if not r.warmup and r.t_send is not None and r.t_sched is not None:
            send.append((r.t_send - r.t_sched) / 1e6)
            cap.append(r.cap_wait_ns / 1e6)
    return send, cap


def verdict(lags_ms: Sequence[float], send_lags_ms: Sequence[float], cpu_s: float, wall_s: float,
            cap_waits_ms: Sequence[float] = ()) -> dict[str, Any]:
    """client_health for the result: the numbers and whether the client limited the run.

    `cap_waits_ms`, aligned with `send_lags_ms`, is the part of each send lag the -c cap caused.
    """
    lag = dist(lags_ms)
    share = cpu_s / wall_s if wall_s > 0 else 0.0
    cap = list(cap_waits_ms) if cap_waits_ms else [0.0] * len(send_lags_ms)
    own = [max(0.0, s - c) for s, c in zip(send_lags_ms, cap, strict=True)]
    late = (sum(1 for x in own if x > LATE_SEND_MS) / len(own)) if own else None
    capped = sum(1 for c in cap if c > LATE_SEND_MS)
    cap_share = capped / len(cap) if cap else None
    reasons = []
    if lag and lag["p99"] > LAG_P99_LIMIT_MS:
        reasons.append(f"event-loop lag p99 {lag['p99']:.1f} ms > {LAG_P99_LIMIT_MS:g} ms")
    if late is not None and late > LATE_SHARE_LIMIT:
        reasons.append(f"{late:.1%} of requests sent > {LATE_SEND_MS:g} ms late (limit {LATE_SHARE_LIMIT:.0%})")
    if share > CPU_SHARE_LIMIT:
        reasons.append(f"client CPU {share:.0%} of one core > {CPU_SHARE_LIMIT:.0%}")
    note = None
    if capped:
        note = (f"{cap_share:.0%} of requests waited for the -c/--concurrency cap before they could be sent (up to "
                f"{max(cap):,.0f} ms): the cap you set held back the --rate schedule; that is load shaping, not "
                "the client (raise or drop -c to keep the schedule)")
    return {
        "loop_lag_ms": lag,
        "send_lag_ms": dist(send_lags_ms),
        "late_send_share": late,  # late sends net of the cap wait
        "cap_wait_ms": dist(cap) if capped else None,
        "cap_wait_share": cap_share,
        "cap_note": note,
        "cpu_s": cpu_s,
        "cpu_share": share,
        "client_bound": bool(reasons),
        "reasons": reasons,
    }
