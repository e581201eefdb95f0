"""Output token counts, from the best source there is (METRICS.md "Token counts").

usage.completion_tokens > llama.cpp timings.predicted_n > a tokenizer on the text
> the number of output chunks (an estimate). The tokenizer is loaded only when a
count needs it (workload.tokenizer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

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
        counts["chunks"] = len(dec.chunk_times)
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


def resolve_pending(records: Iterable[RequestRecord], tokenizer: "Tokenizer") -> None:
    """Count tokens for records the server gave no count for (after the run)."""
    for rec in records:
        if rec.output_tokens is not None or rec.text is None:
            continue
        # failed or cancelled requests are not worth loading a tokenizer for
        n = tokenizer.count(rec.text) if rec.ok else None
        if n is not None:
            rec.token_counts[TokenSource.TOKENIZER] = n
            rec.output_tokens, rec.token_source = n, TokenSource.TOKENIZER
        else:
            rec.output_tokens = rec.token_counts.get("chunks", 0)
            rec.token_source = TokenSource.ESTIMATE
        rec.text = None
