"""Output token counts, from the best source there is (METRICS.md "Token counts").

usage.completion_tokens > llama.cpp timings.predicted_n > the output chunks, from a server
known to send one token per chunk > the server's own tokenizer on the text (after the run)
> a client-side tokenizer on the text > the number of output chunks (an estimate). The
client-side tokenizer is loaded only when a count needs it (workload.tokenizer).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable

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
    else:
        rec.text = dec.text  # resolved after the run, off the event loop
    if timings:
        rec.server_timings = timings


def pending(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """Successful requests the server sent no count for, whose text is still to be counted."""
    return [r for r in records if r.ok and r.output_tokens is None and r.text is not None]


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
                rec.token_counts[TokenSource.SERVER_TOKENIZER] = await count(rec.text or "")
                return True
            except Exception:  # any failure: the client-side fallbacks count instead
                failed = True
                return False

    return sum(await asyncio.gather(*(one(r) for r in todo)))


def resolve_pending(records: Iterable[RequestRecord], tokenizer: "Tokenizer", chunks_exact: bool = False) -> None:
    """Count tokens for records the server gave no count for (after the run). `chunks_exact`: the
    server sends one token per output chunk (llama-cpp-python), so the chunk count is the count."""
    for rec in records:
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
