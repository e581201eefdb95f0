"""How many tokens is this prompt? The target server's own tokenizer where it has one.

llama-server: `POST /tokenize {"content"}` -> `{"tokens": [...]}`; vLLM: `POST /tokenize
{"model", "prompt"}` -> `{"count"}`; llama-cpp-python: `POST /extras/tokenize {"input"}` ->
`{"tokens": [...]}` (always with the BOS token: a count is taken net of what "" gives). Otherwise
the offline tokenizer of tokens.py, or a word count (our synthetic words are one token each in
common tokenizers), marked approximate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp

from tpsload.config import RunConfig, server_root
from tpsload.httpjson import post_json
from tpsload.workload.tokenizer import Tokenizer


@dataclass
class Counter:
    name: str
    exact: bool
    count: Callable[[str], Awaitable[int]]
    overhead: int = 0  # tokens the server adds around the content (BOS, chat template)


TIMEOUT_S = 30.0


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """The JSON of a 200 reply, else None."""
    return (await post_json(session, url, body, headers, TIMEOUT_S)).ok_json


async def server_counter(cfg: RunConfig, session: aiohttp.ClientSession, model: str) -> Counter | None:
    """The server's /tokenize (or /extras/tokenize), when it has one that answers sensibly."""
    url = server_root(cfg.target.base_url) + "/tokenize"
    headers = cfg.request_headers()
    try:
        probe = await _post(session, url, {"content": "hello world", "model": model, "prompt": "hello world"},
                            headers)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    if not isinstance(probe, dict):
        return await _extras_counter(cfg, session, model, headers)
    if isinstance(probe.get("tokens"), list) and "count" not in probe:  # llama.cpp

        async def llama(text: str) -> int:
            r = await _post(session, url, {"content": text}, headers)
            return len(r["tokens"])

        return Counter("server /tokenize (llama.cpp)", True, llama)
    if isinstance(probe.get("count"), int):  # vLLM

        async def vllm(text: str) -> int:
            r = await _post(session, url, {"model": model, "prompt": text, "add_special_tokens": False}, headers)
            return int(r["count"])

        return Counter("server /tokenize (vLLM)", True, vllm)
    return await _extras_counter(cfg, session, model, headers)


async def _extras_counter(cfg: RunConfig, session: aiohttp.ClientSession, model: str,
                          headers: dict[str, str]) -> Counter | None:
    """llama-cpp-python's /extras/tokenize, which adds the BOS token to whatever it is given."""
    url = server_root(cfg.target.base_url) + "/extras/tokenize"
    try:
        empty = await _post(session, url, {"input": "", "model": model}, headers)
        probe = await _post(session, url, {"input": "hello world", "model": model}, headers)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    if not (isinstance(empty, dict) and isinstance(empty.get("tokens"), list) and isinstance(probe, dict)
            and isinstance(probe.get("tokens"), list) and len(probe["tokens"]) > len(empty["tokens"])):
        return None
    base = len(empty["tokens"])

    async def extras(text: str) -> int:
        r = await _post(session, url, {"input": text, "model": model}, headers)
        return len(r["tokens"]) - base

    return Counter("server /extras/tokenize (llama-cpp-python)", True, extras)


def offline_counter(tokenizer: Tokenizer) -> Counter:
    async def tiktoken_count(text: str) -> int:
        n = tokenizer.count(text)
        return n if n is not None else len(text.split())

    if tokenizer.count("probe") is not None:
        return Counter(f"{tokenizer.name} (approximate: not the server's tokenizer)", False, tiktoken_count)

    async def words(text: str) -> int:
        return len(text.split())

    return Counter("word count (approximate)", False, words)


async def measure_overhead(cfg: RunConfig, session: aiohttp.ClientSession, model: str, counter: Counter,
                           build: Callable[[str], dict[str, Any]]) -> int | None:
    """Tokens the server adds around our content (BOS, chat template), from one 1-token request."""
    probe = "Count these words please"
    body = build(probe)
    body.update({"stream": False, "max_tokens": 1})
    body.pop("stream_options", None)
    try:
        r = await _post(session, cfg.url, body, cfg.request_headers())
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    usage = r.get("usage") if isinstance(r, dict) else None
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    return max(0, usage["prompt_tokens"] - await counter.count(probe))
