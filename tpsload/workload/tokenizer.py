"""The client-side tokenizer: a lazily loaded tiktoken encoding, never fatal, never a long download."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
from typing import Any, Callable

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# cl100k's split pattern; used for a user-supplied .tiktoken file too.
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)


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
