"""Output token counts, from the best source there is (METRICS.md "Token counts").

usage.completion_tokens > llama.cpp timings.predicted_n > a tokenizer on the text
> the number of output chunks (an estimate). The tokenizer is loaded only when a
count needs it, never downloads behind the user's back for long, and is never fatal.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
from typing import Any, Callable, Iterable

from .protocol import Decoded
from .records import RequestRecord

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# cl100k's split pattern; used for a user-supplied .tiktoken file too.
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)


def apply_counts(rec: RequestRecord, dec: Decoded) -> None:
    """Fill a record's token fields from what the server sent; keep text only if still needed."""
    counts = rec.token_counts
    usage = dec.usage or {}
    timings = dec.timings or {}
    ct = usage.get("completion_tokens")
    if isinstance(ct, int):
        counts["usage"] = ct
    pn = timings.get("predicted_n")
    if isinstance(pn, int):
        counts["timings"] = pn
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
    if "usage" in counts:
        rec.output_tokens, rec.token_source = counts["usage"], "usage"
    elif "timings" in counts:
        rec.output_tokens, rec.token_source = counts["timings"], "timings"
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
            rec.token_counts["tokenizer"] = n
            rec.output_tokens, rec.token_source = n, "tokenizer"
        else:
            rec.output_tokens = rec.token_counts.get("chunks", 0)
            rec.token_source = "estimate"
        rec.text = None


class Tokenizer:
    """A lazily loaded tiktoken encoding. `count()` returns None when no tokenizer can load."""

    def __init__(self, path: str | None = None, notice: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._enc: Any = None
        self._tried = False
        self.name: str | None = None
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    def count(self, text: str) -> int | None:
        if not self._tried:
            self._tried = True
            self._enc = self._load()
        if self._enc is None:
            return None
        return len(self._enc.encode(text, disallowed_special=()))

    def _load(self) -> Any:
        try:
            import tiktoken
            import tiktoken.load
        except ImportError:
            self.notice("tpsload: tiktoken is not installed; output tokens counted from chunks (estimate)")
            return None
        if self.path:
            try:
                ranks = tiktoken.load.load_tiktoken_bpe(self.path)
                self.name = os.path.basename(self.path)
                return tiktoken.Encoding(name=self.name, pat_str=CL100K_PAT, mergeable_ranks=ranks,
                                         special_tokens={})
            except Exception as e:  # a bad file must not end the run
                self.notice(f"tpsload: cannot load tokenizer file {self.path} ({e}); "
                            "output tokens counted from chunks (estimate)")
                return None
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        cached = os.path.exists(os.path.join(cache, hashlib.sha1(CL100K_URL.encode()).hexdigest()))
        result: list[Any] = []

        def load() -> None:
            try:
                result.append(tiktoken.get_encoding("cl100k_base"))
            except Exception as e:
                result.append(e)

        t = threading.Thread(target=load, daemon=True)
        t.start()
        t.join(None if cached else 10.0)
        if result and not isinstance(result[0], Exception):
            self.name = "tiktoken:cl100k_base"
            return result[0]
        why = result[0] if result else "download timed out"
        self.notice(f"tpsload: no tokenizer available offline (cl100k_base: {str(why)[:120]}); output tokens "
                    "counted from chunks, marked 'estimate' (pass --tokenizer FILE.tiktoken)")
        return None
