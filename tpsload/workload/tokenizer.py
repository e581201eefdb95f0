"""The client-side tokenizer: a lazily loaded tiktoken encoding, never fatal, never a long wait.

Loading runs off the event loop (`await Tokenizer.load()`); offline, it gives up at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import socket
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from typing import Any, Callable

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# cl100k's split pattern; used for a user-supplied .tiktoken file too.
CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
# Offline shows as no connection (name lookup included) within this time; online, the
# encoding's host answers in a fraction of it.
CONNECT_S = 0.5
DOWNLOAD_S = 10.0


class Tokenizer:
    """A lazily loaded tiktoken encoding. `count()` returns None when no tokenizer can load."""

    def __init__(self, path: str | None = None, notice: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._enc: Any = None
        self._tried = False
        self._lock = threading.Lock()
        self.name: str | None = None
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    async def load(self) -> bool:
        """Load once, in a thread of its own, so that the event loop keeps running while a file
        is read, tiktoken builds its tables or a download is tried. True when one is ready.

        A daemon thread rather than the loop's executor: a download that outlives a Ctrl-C
        must not hold up the exit."""
        if not self._tried:
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def finished() -> None:
                if not done.done():
                    done.set_result(None)

            def run() -> None:
                try:
                    self._load_once()
                finally:
                    try:
                        loop.call_soon_threadsafe(finished)
                    except RuntimeError:  # the loop is gone (the run was interrupted)
                        pass

            threading.Thread(target=run, name="tpsload-tokenizer", daemon=True).start()
            await done
        return self._enc is not None

    def count(self, text: str) -> int | None:
        """Tokens in `text`; loads first if `load()` was not awaited (call it off the loop then)."""
        if not self._tried:
            self._load_once()
        if self._enc is None:
            return None
        return len(self._enc.encode(text, disallowed_special=()))

    def _load_once(self) -> None:
        with self._lock:
            if not self._tried:
                self._enc = self._load()
                self._tried = True

    def _load(self) -> Any:
        try:
            import tiktoken
        except ImportError:
            self.notice("tpsload: tiktoken is not installed; output tokens counted from chunks (estimate)")
            return None
        if self.path:
            try:
                ranks = read_ranks(self.path)
                self.name = os.path.basename(self.path)
                return tiktoken.Encoding(name=self.name, pat_str=CL100K_PAT, mergeable_ranks=ranks,
                                         special_tokens={})
            except Exception as e:  # a bad file must not end the run
                self.notice(f"tpsload: cannot load tokenizer file {self.path} ({e}); "
                            "output tokens counted from chunks (estimate)")
                return None
        cached = cl100k_cached()
        why = None if cached else unreachable(CL100K_URL, CONNECT_S)
        result: list[Any] = []
        if why is None:

            def load() -> None:
                try:
                    result.append(tiktoken.get_encoding("cl100k_base"))
                except Exception as e:
                    result.append(e)

            t = threading.Thread(target=load, daemon=True)
            t.start()
            t.join(None if cached else DOWNLOAD_S)
            if result and not isinstance(result[0], Exception):
                self.name = "tiktoken:cl100k_base"
                return result[0]
            why = str(result[0]) if result else f"download not complete in {DOWNLOAD_S:g} s"
        self.notice(f"tpsload: no tokenizer available offline (cl100k_base: {short_reason(why)}); output tokens "
                    "counted from chunks, marked 'estimate' (pass --tokenizer FILE.tiktoken)")
        return None


REASON_CHARS = 160


def short_reason(why: str, limit: int = REASON_CHARS) -> str:
    """A download error in a few words: what caused it (urllib3 wraps the cause in the pool, host and
    URL), cut only between words, never inside a host name or a URL."""
    caused = re.search(r"\(Caused by (.*)\)\s*$", why, re.S)
    text = " ".join((caused.group(1) if caused else why).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text if cut <= 0 else text[:cut].rstrip(",;:") + " …"


def read_ranks(path: str) -> dict[bytes, int]:
    """A .tiktoken file's ranks. Read here rather than by tiktoken.load, which files a copy of
    every local file it reads in its download cache."""
    with open(path, "rb") as fh:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in fh if line.strip())}


def cl100k_cached() -> bool:
    """Whether tiktoken finds cl100k_base in its cache (the directory it would look in)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return bool(cache) and os.path.exists(os.path.join(cache, hashlib.sha1(CL100K_URL.encode()).hexdigest()))


def unreachable(url: str, budget_s: float) -> str | None:
    """Why no TCP connection to `url`'s host, or to the proxy a download would go through,
    opens within `budget_s` (name lookup included); None when one does."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or "", p.port or 80
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=budget_s).close()
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port}: {e.strerror or e}")
        else:
            outcome.append(None)

    t = threading.Thread(target=probe, name="tpsload-tokenizer-probe", daemon=True)
    t.start()
    t.join(budget_s)  # a name lookup that hangs is not bounded by the socket's timeout
    return outcome[0] if outcome else f"no connection to {host}:{port} within {budget_s:g} s"
