"""The per-request record: what happened to one request, in raw monotonic nanoseconds.

Everything downstream (statistics, reports, merging workers) reads these and
nothing else, so they hold raw timestamps, not rounded aggregates.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any, Iterable


class _StrEnum(str, Enum):
    """A name that is its string: equal to it, hashed like it and written as it (JSON, f-strings),
    so a record or result holds a checked name while the JSON stays the plain word."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ErrorClass(_StrEnum):
    """Why a request failed (METRICS.md, issue 5). `CANCELLED` is neither success nor failure."""

    CONNECT = "connect"
    TIMEOUT_FIRST_BYTE = "timeout_first_byte"
    TIMEOUT_STREAM = "timeout_stream"
    HTTP_4XX = "http_4xx"
    HTTP_429 = "http_429"
    HTTP_5XX = "http_5xx"
    STREAM_ERROR = "stream_error"
    PROTOCOL = "protocol"
    DISCONNECT = "disconnect"
    CANCELLED = "cancelled"


class TokenSource(_StrEnum):
    """Where a request's output token count came from, best first (METRICS.md "Token counts")."""

    USAGE = "usage"  # usage.completion_tokens
    TIMINGS = "timings"  # llama.cpp's timings.predicted_n
    CHUNKS = "chunks"  # output chunks, from a server known to send one token per chunk: exact
    SERVER_TOKENIZER = "server_tokenizer"  # the server's own tokenizer on the generated text, after the run
    TOKENIZER = "tokenizer"  # a client-side tokenizer on the generated text
    ESTIMATE = "estimate"  # the number of output chunks, from a server that may merge tokens


class ConnectionUse(_StrEnum):
    """Whether a request's connection was opened for it or taken from the pool (METRICS.md "Timestamps")."""

    NEW = "new"  # opened for this request: its connect time is part of its TTFT
    REUSED = "reused"  # kept alive from an earlier request (or opened before the run: pre-connect)


# How a result dataclass field is written as JSON (render.json.plain): OPTIONAL leaves the key
# out while the value is None (a key that exists only in some runs); INLINE writes a nested
# dataclass's keys into its parent's object (a group of keys that come and go together).
OPTIONAL = {"json": "optional"}
INLINE = {"json": "inline"}


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
    # the request's phases (METRICS.md): connection in hand (new or reused), request written, response headers
    t_connected: int | None = None
    t_written: int | None = None
    t_headers: int | None = None
    connection: ConnectionUse | None = None
    t_first: int | None = None
    t_last: int | None = None
    t_end: int | None = None
    t_done: int | None = None  # when the client stopped handling it: success, failure or cancel
    # arrival of every output-bearing chunk; compact, since a run holds millions
    chunk_times: array = field(default_factory=lambda: array("q"))
    # tokens carried by each output chunk, when the server told us (cumulative usage)
    chunk_tokens: array | None = None
    output_tokens: int | None = None
    token_source: TokenSource | None = None
    # every count that was available: by TokenSource, and "chunks" (what an estimate would use)
    token_counts: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    content_chunks: int = 0
    reasoning_chunks: int = 0  # reasoning output, counted apart from content
    finish_reason: str | None = None
    saw_done: bool = False  # the stream's `data: [DONE]` arrived (whatever happened to the body after it)
    status: int | None = None
    error_class: ErrorClass | None = None
    error: str | None = None
    retries: int = 0
    server_timings: dict[str, Any] | None = None
    text: str | None = None  # generated text, kept only until a tokenizer has counted it
    # thinking models: arrival of the first chunk with answer text (content/text), after any reasoning
    t_answer: int | None = None
    # reasoning tokens among output_tokens (0: no reasoning seen), and where that count came from (None: no
    # reasoning to count, or none it could be counted from)
    reasoning_tokens: int | None = None
    reasoning_source: TokenSource | None = None
    reasoning_text: str | None = None  # reasoning text, kept only until a tokenizer has counted it

    @property
    def answer_tokens(self) -> int | None:
        """Output tokens that are not reasoning: the answer."""
        if self.output_tokens is None or self.reasoning_tokens is None:
            return None
        return max(0, self.output_tokens - self.reasoning_tokens)
    # multi-turn sessions (--turns): the conversation, its turn (1 first), and the llama-server slot it was
    # pinned to (--slot-affinity: the server names no slot in its answers, so only a pinned one is known)
    session: int | None = None
    turn: int | None = None
    slot: int | None = None
    reply: str | None = None  # --turns: the answer's text, until the conversation's next turn is built
    stage: int | None = None  # --stages: the stage it was started in (from 0)
    # a long run's chunk times past the exact budget (analysis.ledger): the gaps went to histograms
    chunks_dropped: bool = False

    @property
    def ok(self) -> bool:
        return self.error_class is None and self.t_end is not None

    @property
    def failed(self) -> bool:
        return self.error_class is not None and self.error_class != ErrorClass.CANCELLED

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
            "t_connected_ms": rel(self.t_connected),
            "t_written_ms": rel(self.t_written),
            "t_headers_ms": rel(self.t_headers),
            "connection": self.connection,
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
            "saw_done": self.saw_done,
            "retries": self.retries,
            # microseconds after t_send: exact enough, and a quarter of the size
            "chunk_offsets_us": [(t - send) // 1000 for t in self.chunk_times],
            "chunk_tokens": list(self.chunk_tokens) if self.chunk_tokens is not None else None,
            "server_timings": self.server_timings,
            "t_answer_ms": rel(self.t_answer),
            "reasoning_tokens": self.reasoning_tokens,
            "reasoning_source": self.reasoning_source,
            "answer_tokens": self.answer_tokens,
            "stage": self.stage,
        }
        if self.session is not None:
            d.update(session=self.session, turn=self.turn, slot=self.slot)
        return d


# every field that holds a perf_counter_ns() stamp (a worker on another machine has them shifted onto ours)
TIMESTAMPS = ("t_sched", "t_send", "t_connected", "t_written", "t_headers", "t_first", "t_last", "t_end", "t_done",
              "t_answer")


def write_jsonl(records: Iterable[RequestRecord], t0: int, fh: IO[str]) -> int:
    n = 0
    for r in records:
        fh.write(json.dumps(r.to_json(t0), separators=(",", ":")))
        fh.write("\n")
        n += 1
    return n
