"""Output token counts, from the best source there is (METRICS.md "Token counts").

usage.completion_tokens > llama.cpp timings.predicted_n > the output chunks, from a server
known to send one token per chunk > the server's own tokenizer on the text (after the run)
> a client-side tokenizer on the text > the number of output chunks (an estimate). The
client-side tokenizer is loaded only when a count needs it (workload.tokenizer).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from tpsload.protocol.openai import Decoded
from tpsload.records import RequestRecord, TokenSource

if TYPE_CHECKING:
    from tpsload.workload.tokenizer import Tokenizer

def apply_counts(rec: RequestRecord, dec: Decoded) -> None:
    """Fill a record's token fields from what the server sent; keep text only if still needed."""
    counts = rec.token_counts
    usage = dec.usage or {}
    timings = dec.timings or {}
    ct = usage.get("completion_tokens")
    if isinstance(ct, int):
        counts[TokenSource.USAGE] = ct
    pn = timings.get("predicted_n")
    if isinstance(pn, int):
        counts[TokenSource.TIMINGS] = pn
    if rec.stream:
        counts[TokenSource.CHUNKS] = len(dec.chunk_times)
    rec.saw_done = dec.done
    pt = usage.get("prompt_tokens")
    if not isinstance(pt, int):
        pt = timings.get("prompt_n") if isinstance(timings.get("prompt_n"), int) else None
        if pt is not None and isinstance(timings.get("cache_n"), int):
            pt += timings["cache_n"]  # llama.cpp's prompt_n counts only the tokens it evaluated
    rec.prompt_tokens = pt
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(cached, int):
        cached = timings.get("cache_n") if isinstance(timings.get("cache_n"), int) else None
    rec.cached_tokens = cached
    if TokenSource.USAGE in counts:
        rec.output_tokens, rec.token_source = counts[TokenSource.USAGE], TokenSource.USAGE
    elif TokenSource.TIMINGS in counts:
        rec.output_tokens, rec.token_source = counts[TokenSource.TIMINGS], TokenSource.TIMINGS
    if timings:
        rec.server_timings = timings
    reasoning = None
    if rec.output_tokens is None:
        reasoning, answer = dec.texts()
        rec.text = reasoning + answer  # resolved after the run, off the event loop
    apply_reasoning(rec, dec, usage, reasoning)


def apply_reasoning(rec: RequestRecord, dec: Decoded, usage: dict[str, Any], text: str | None) -> None:
    """Reasoning tokens (METRICS.md "Thinking models"): usage.completion_tokens_details.reasoning_tokens
    when sent; 0 when no reasoning came. Else the reasoning text is counted after the run where it is at
    hand anyway (a non-streamed reply; a stream whose output is counted from its text, `text`). A stream
    the server counted gets its reasoning count from its chunks instead, since decoding and keeping the
    reasoning of every request for one count would load the client: the cumulative usage at the last
    reasoning chunk when every reasoning chunk came before the answer (exact), else the output tokens
    shared in proportion to the chunks (an estimate, exact for servers that send a token per chunk)."""
    details = usage.get("completion_tokens_details")
    rt = details.get("reasoning_tokens") if isinstance(details, dict) else None
    k = dec.reasoning_chunks
    if isinstance(rt, int):
        rec.reasoning_tokens, rec.reasoning_source = rt, TokenSource.USAGE
    elif not k:
        rec.reasoning_tokens = 0
    elif not rec.stream:
        rec.reasoning_text = dec.texts()[0]  # a reply decoded whole: its text is at hand
    elif text is not None:
        rec.reasoning_text = text
    elif dec.chunk_usage and (dec.first_answer == k or not dec.content_chunks):
        rec.reasoning_tokens, rec.reasoning_source = dec.chunk_usage[k - 1], TokenSource.USAGE
    elif rec.output_tokens is not None and dec.chunk_times:
        rec.reasoning_tokens = min(rec.output_tokens, round(rec.output_tokens * k / len(dec.chunk_times)))
        rec.reasoning_source = TokenSource.ESTIMATE


def _output_pending(r: RequestRecord) -> bool:
    return r.output_tokens is None and r.text is not None


def _reasoning_pending(r: RequestRecord) -> bool:
    return r.reasoning_tokens is None and r.reasoning_text is not None


def pending(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Successful requests the server sent no count for, whose text (output or reasoning) is still to be
    counted."""
    return [r for r in records if r.ok and (_output_pending(r) or _reasoning_pending(r))]


async def count_on_server(records: Iterable[RequestRecord], count: Callable[[str], Awaitable[int]],
                          concurrency: int = 8) -> int:
    """The server's own tokenizer on each pending record's text (after the run: off the hot path).
    Stops at the first failure (the server went away); returns how many were counted."""
    todo = pending(records)
    gate = asyncio.Semaphore(concurrency)
    failed = False

    async def one(rec: RequestRecord) -> bool:
        nonlocal failed
        async with gate:
            if failed:
                return False
            try:
                if _output_pending(rec):
                    rec.token_counts[TokenSource.SERVER_TOKENIZER] = await count(rec.text or "")
                if _reasoning_pending(rec):
                    rec.reasoning_tokens = await count(rec.reasoning_text or "")
                    rec.reasoning_source = TokenSource.SERVER_TOKENIZER
                return True
            except Exception:  # any failure: the client-side fallbacks count instead
                failed = True
                return False

    return sum(await asyncio.gather(*(one(r) for r in todo)))


def resolve_pending(records: Iterable[RequestRecord], tokenizer: "Tokenizer", chunks_exact: bool = False) -> None:
    """Count tokens for records the server gave no count for (after the run). `chunks_exact`: the
    server sends one token per output chunk (llama-cpp-python), so the chunk count is the count."""
    for rec in records:
        if rec.reasoning_text is not None:
            resolve_reasoning(rec, tokenizer, chunks_exact)
        if rec.output_tokens is not None or rec.text is None:
            continue
        counts = rec.token_counts
        if chunks_exact and TokenSource.CHUNKS in counts:
            rec.output_tokens, rec.token_source = counts[TokenSource.CHUNKS], TokenSource.CHUNKS
        elif TokenSource.SERVER_TOKENIZER in counts:
            rec.output_tokens = counts[TokenSource.SERVER_TOKENIZER]
            rec.token_source = TokenSource.SERVER_TOKENIZER
        # failed or cancelled requests are not worth loading a tokenizer for
        elif rec.ok and (n := tokenizer.count(rec.text)) is not None:
            counts[TokenSource.TOKENIZER] = n
            rec.output_tokens, rec.token_source = n, TokenSource.TOKENIZER
        else:
            rec.output_tokens = counts.get(TokenSource.CHUNKS, 0)
            rec.token_source = TokenSource.ESTIMATE
        rec.text = None


def resolve_reasoning(rec: RequestRecord, tokenizer: "Tokenizer", chunks_exact: bool) -> None:
    """Reasoning tokens from the text kept for them, ranked as output tokens are: exact chunks > the
    server's tokenizer (count_on_server, before this) > a client-side tokenizer > the number of reasoning
    chunks (an estimate; a non-streamed reply has no chunks to estimate from: unknown)."""
    if chunks_exact and rec.stream:
        rec.reasoning_tokens, rec.reasoning_source = rec.reasoning_chunks, TokenSource.CHUNKS
    elif rec.reasoning_tokens is None:
        if rec.ok and (n := tokenizer.count(rec.reasoning_text or "")) is not None:
            rec.reasoning_tokens, rec.reasoning_source = n, TokenSource.TOKENIZER
        elif rec.stream:
            rec.reasoning_tokens, rec.reasoning_source = rec.reasoning_chunks, TokenSource.ESTIMATE
    rec.reasoning_text = None
