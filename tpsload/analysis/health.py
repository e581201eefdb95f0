"""Is the client itself the bottleneck? Loop lag, the send path and CPU (docs/metrics.md "Client health"). Pure.

In open loop with a -c cap, a request whose time has come waits while the cap is full: that lateness
is the load shaping the user asked for, not the client's slowness. It is taken out of the late-send
judgement and reported on its own (`cap_wait_ms`).

The send path is the request half of TTFT: from when a request was meant to go to its last byte
written. Net of the cap's wait and of a new connection's set-up (the network's and the server's
accept, reported as `connect_ms`), it is the client's own delay, which no server-side number
contains: a run whose requests reach the socket late says so, whatever its loop lag.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from tpsload.analysis.stats import dist
from tpsload.records import ConnectionUse, RequestRecord

LAG_P99_LIMIT_MS = 5.0
LATE_SEND_MS = 1.0
LATE_SHARE_LIMIT = 0.01
SEND_DELAY_MS = 1.0  # the client's own delay before the server could see a request
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


class SendPath:
    """Per measured request that was written: the client's own delay before the server could see it (ms),
    split into its lateness in starting the request and its time in the request path, and whether the
    request had a warm (kept-alive) connection.

    `deferred_writes`: aiohttp here writes each request on a task that runs after every task already due
    (core.client.DEFERRED_WRITES), so the reason says what would help."""

    __slots__ = ("delay_ms", "start_ms", "path_ms", "warm", "deferred_writes")

    def __init__(self, records: Iterable[RequestRecord], deferred_writes: bool = False) -> None:
        self.deferred_writes = deferred_writes
        self.delay_ms: list[float] = []
        self.start_ms: list[float] = []
        self.path_ms: list[float] = []
        self.warm: list[bool] = []
        for r in records:
            if r.warmup or r.t_written is None or r.t_send is None or r.t_sched is None:
                continue
            start = max(0, r.t_send - r.t_sched - r.cap_wait_ns)
            warm = r.connection is not ConnectionUse.NEW
            # a new connection's set-up is the network's and the server's accept: reported as connect_ms
            setup = r.t_connected - r.t_send if not warm and r.t_connected is not None else 0
            path = max(0, r.t_written - r.t_send - setup)
            self.start_ms.append(start / 1e6)
            self.path_ms.append(path / 1e6)
            self.delay_ms.append((start + path) / 1e6)
            self.warm.append(warm)

    def slow_share(self) -> float | None:
        return sum(1 for x in self.delay_ms if x > SEND_DELAY_MS) / len(self.delay_ms) if self.delay_ms else None

    def reason(self) -> str | None:
        """Why the send path makes the run client-bound, or None."""
        warm = [d for d, w in zip(self.delay_ms, self.warm, strict=True) if w]
        warm_p99 = float(np.percentile(warm, 99)) if warm else None
        slow = self.slow_share()
        if not ((warm_p99 is not None and warm_p99 > SEND_DELAY_MS) or (slow is not None and slow > LATE_SHARE_LIMIT)):
            return None
        parts = [f"{slow:.1%} of requests were written > {SEND_DELAY_MS:g} ms after they were due "
                 f"(limit {LATE_SHARE_LIMIT:.0%})"]
        if warm_p99 is not None:
            parts.append(f"p99 {warm_p99:.1f} ms on warm connections (limit {SEND_DELAY_MS:g} ms)")
        path_p99 = float(np.percentile(self.path_ms, 99))
        hint = ("; each request was written on a task of its own, run after every task already due "
                "(client_health.write_path: deferred, and why)") \
            if self.deferred_writes and path_p99 > SEND_DELAY_MS else ""
        return (f"send path: {', '.join(parts)}; of which p99 {np.percentile(self.start_ms, 99):.1f} ms before "
                f"the client began them and {path_p99:.1f} ms in the client's request path{hint}")


def verdict(lags_ms: Sequence[float], send_lags_ms: Sequence[float], cpu_s: float, wall_s: float,
            cap_waits_ms: Sequence[float] = (), send_path: SendPath | None = None) -> dict[str, Any]:
    """client_health for the result: the numbers and whether the client limited the run.

    `cap_waits_ms`, aligned with `send_lags_ms`, is the part of each send lag the -c cap caused.
    `send_path` (from the records' phases) judges the whole request half; a late start is part of it,
    so when it is given, late sends are not counted again as a reason of their own.
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
    path = send_path.reason() if send_path is not None and send_path.delay_ms else None
    if path:
        reasons.append(path)
    elif late is not None and late > LATE_SHARE_LIMIT:
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
        # the client's own delay before the server could see each request (SendPath)
        "send_delay_ms": dist(send_path.delay_ms) if send_path is not None else None,
        "slow_send_share": send_path.slow_share() if send_path is not None else None,
        "cap_wait_ms": dist(cap) if capped else None,
        "cap_wait_share": cap_share,
        "cap_note": note,
        "cpu_s": cpu_s,
        "cpu_share": share,
        "client_bound": bool(reasons),
        "reasons": reasons,
    }
