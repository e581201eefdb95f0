"""The run over time, on the server-metrics scrape times: what we had in flight and what we received. Pure.

Set beside the server's own series (requests running and waiting, tokens generated), this shows where
the time went: a queue on the server, or a client that did not keep up.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tpsload.records import RequestRecord


def client_series(records: Sequence[RequestRecord], t0_ns: int, t_ms: Sequence[float]) -> dict[str, list[Any]]:
    """At each time (ms after `t0_ns`): our requests in flight, and our output tokens/s since the time before."""
    times = np.asarray([t0_ns + t * 1e6 for t in t_ms], dtype=np.float64)
    sent = [r for r in records if r.t_send is not None]
    starts = np.asarray([r.t_send for r in sent], dtype=np.float64)
    ends = np.asarray([r.t_done or r.t_end or r.t_last or r.t_send for r in sent], dtype=np.float64)
    in_flight = [int(((starts <= t) & (ends > t)).sum()) for t in times]
    # tokens by arrival: each output chunk carries its share of the request's tokens (or its own count)
    arrivals: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for r in sent:
        n = len(r.chunk_times)
        if not r.ok or n == 0 or not r.output_tokens:
            continue
        arrivals.append(np.frombuffer(r.chunk_times, dtype=np.int64).astype(np.float64))
        if r.chunk_tokens is not None and len(r.chunk_tokens) == n:
            weights.append(np.frombuffer(r.chunk_tokens, dtype=np.int64).astype(np.float64))
        else:
            weights.append(np.full(n, r.output_tokens / n))
    at = np.concatenate(arrivals) if arrivals else np.empty(0)
    spread = _spread(sent, times)
    w = np.concatenate(weights) if weights else np.empty(0)
    order = np.argsort(at, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(w[order])])
    at = at[order]
    received = cum[np.searchsorted(at, times, side="right")] + spread
    tps: list[float | None] = [None]
    for i in range(1, len(times)):
        dt = (times[i] - times[i - 1]) / 1e9
        tps.append(round(float(received[i] - received[i - 1]) / dt, 2) if dt > 0 else None)
    return {"in_flight": in_flight, "output_tps": tps}


def _spread(sent: Sequence[RequestRecord], times: np.ndarray) -> np.ndarray:
    """Tokens received by each time from requests whose chunk times a long run let go (analysis.ledger):
    spread evenly between their first and last chunk."""
    out = np.zeros(len(times))
    rows = [(r.t_first, r.t_last, r.output_tokens) for r in sent
            if r.chunks_dropped and r.ok and r.output_tokens and r.t_first is not None and r.t_last is not None]
    if not rows:
        return out
    a = np.asarray(rows, dtype=np.float64)
    first, span, tokens = a[:, 0], np.maximum(a[:, 1] - a[:, 0], 1.0), a[:, 2]
    for i, t in enumerate(times):
        out[i] = float((tokens * np.clip((t - first) / span, 0.0, 1.0)).sum())
    return out


def rate(t_ms: Sequence[float], counter: Sequence[float | None]) -> list[float | None]:
    """A counter's increase per second between consecutive samples (None where unknown or reset)."""
    out: list[float | None] = [None]
    for i in range(1, len(t_ms)):
        a, b, dt = counter[i - 1], counter[i], (t_ms[i] - t_ms[i - 1]) / 1e3
        out.append(round((b - a) / dt, 2) if a is not None and b is not None and b >= a and dt > 0 else None)
    return out
