"""Fault injection for the mock: which request misbehaves, and how. Pure (seeded RNG).

A spec is `KIND`, `KIND:n=5` (the 5th request), `KIND:every=3`, or `KIND:p=0.1`
(each request with probability 0.1); bare `KIND` means every request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FAULTS = {
    "http_500": "HTTP 500 with an OpenAI error body",
    "http_503": "HTTP 503 (model loading)",
    "http_429": "HTTP 429 with Retry-After",
    "http_400": "HTTP 400 with an OpenAI error body (echoes the Authorization header, to test redaction)",
    "reset": "connection reset before the response headers",
    "disconnect": "connection dropped mid-stream (after half the tokens)",
    "stall_first": "no response for --stall-s seconds before the headers",
    "stall_stream": "stream stops for --stall-s seconds after half the tokens",
    "malformed": "unparseable JSON in a data: line mid-stream",
    "error_event": "a data: {\"error\": ...} event mid-stream, then the end",
    "no_done": "stream ends without data: [DONE]",
    "non_utf8": "invalid UTF-8 bytes in a data: line mid-stream",
    "oversized": "one multi-MB content chunk mid-stream",
    "slow_headers": "response headers trickled out one line every 0.2 s",
}


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    n: int | None = None
    every: int | None = None
    p: float | None = None

    def hits(self, request_no: int, rng: random.Random) -> bool:
        if self.n is not None:
            return request_no == self.n
        if self.every is not None:
            return request_no % self.every == 0
        if self.p is not None:
            return rng.random() < self.p
        return True


def parse_fault(spec: str) -> FaultSpec:
    kind, _, cond = spec.partition(":")
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r}; one of: {', '.join(FAULTS)}")
    if not cond:
        return FaultSpec(kind)
    key, _, value = cond.partition("=")
    try:
        if key == "n":
            return FaultSpec(kind, n=int(value))
        if key == "every":
            return FaultSpec(kind, every=max(1, int(value)))
        if key == "p" and 0.0 <= float(value) <= 1.0:
            return FaultSpec(kind, p=float(value))
    except ValueError:
        pass
    raise ValueError(f"fault {spec!r}: expected {kind}:n=N, {kind}:every=N or {kind}:p=0..1")


class FaultPlan:
    def __init__(self, specs: tuple[FaultSpec, ...], seed: int = 0) -> None:
        self.specs = specs
        self.rng = random.Random(seed)

    def pick(self, request_no: int) -> str | None:
        """The fault for the request_no-th request (1-based), or None."""
        for s in self.specs:
            if s.hits(request_no, self.rng):
                return s.kind
        return None
