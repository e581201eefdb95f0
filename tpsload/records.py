"""The per-request record: what happened to one request, in raw monotonic nanoseconds.

Everything downstream (statistics, reports, merging workers) reads these and
nothing else, so they hold raw timestamps, not rounded aggregates.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from typing import IO, Any, Iterable

# Error classes (METRICS.md, issue 5). `cancelled` is neither success nor failure.
ERROR_CLASSES = (
    "connect",
    "timeout_first_byte",
    "timeout_stream",
    "http_4xx",
    "http_429",
    "http_5xx",
    "stream_error",
    "protocol",
    "disconnect",
    "cancelled",
)

TOKEN_SOURCES = ("usage", "timings", "tokenizer", "estimate")


@dataclass(slots=True)
class RequestRecord:
    """One request. Times are `perf_counter_ns()` values; None when the moment never came."""

    index: int
    warmup: bool = False
    stream: bool = True
    t_sched: int | None = None
    # open loop with a -c cap: how much of the send's lateness was spent waiting for the cap
    cap_wait_ns: int = 0
    t_send: int | None = None
    t_first: int | None = None
    t_last: int | None = None
    t_end: int | None = None
    t_done: int | None = None  # when the client stopped handling it: success, failure or cancel
    # arrival of every output-bearing chunk; compact, since a run holds millions
    chunk_times: array = field(default_factory=lambda: array("q"))
    # tokens carried by each output chunk, when the server told us (cumulative usage)
    chunk_tokens: array | None = None
    output_tokens: int | None = None
    token_source: str | None = None
    token_counts: dict[str, int] = field(default_factory=dict)  # every source that was available
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    content_chunks: int = 0
    reasoning_chunks: int = 0  # reasoning output, counted apart from content
    finish_reason: str | None = None
    status: int | None = None
    error_class: str | None = None
    error: str | None = None
    retries: int = 0
    server_timings: dict[str, Any] | None = None
    text: str | None = None  # generated text, kept only until a tokenizer has counted it

    @property
    def ok(self) -> bool:
        return self.error_class is None and self.t_end is not None

    @property
    def failed(self) -> bool:
        return self.error_class is not None and self.error_class != "cancelled"

    def to_json(self, t0: int) -> dict[str, Any]:
        """A JSON-able dict; times in ms relative to the run's start `t0`."""

        def rel(t: int | None) -> float | None:
            return None if t is None else round((t - t0) / 1e6, 4)

        send = self.t_send or t0
        d: dict[str, Any] = {
            "index": self.index,
            "warmup": self.warmup,
            "stream": self.stream,
            "ok": self.ok,
            "status": self.status,
            "error_class": self.error_class,
            "error": self.error,
            "t_sched_ms": rel(self.t_sched),
            "cap_wait_ms": round(self.cap_wait_ns / 1e6, 4),
            "t_send_ms": rel(self.t_send),
            "t_first_ms": rel(self.t_first),
            "t_last_ms": rel(self.t_last),
            "t_end_ms": rel(self.t_end),
            "t_done_ms": rel(self.t_done),
            "output_tokens": self.output_tokens,
            "token_source": self.token_source,
            "token_counts": self.token_counts,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "content_chunks": self.content_chunks,
            "reasoning_chunks": self.reasoning_chunks,
            "finish_reason": self.finish_reason,
            "retries": self.retries,
            # microseconds after t_send: exact enough, and a quarter of the size
            "chunk_offsets_us": [(t - send) // 1000 for t in self.chunk_times],
            "chunk_tokens": list(self.chunk_tokens) if self.chunk_tokens is not None else None,
            "server_timings": self.server_timings,
        }
        return d


def write_jsonl(records: Iterable[RequestRecord], t0: int, fh: IO[str]) -> int:
    n = 0
    for r in records:
        fh.write(json.dumps(r.to_json(t0), separators=(",", ":")))
        fh.write("\n")
        n += 1
    return n
