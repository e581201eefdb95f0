"""What is sent: prompt sources -> a reproducible list of requests -> request bodies.

Sources: a fixed prompt, a prompt file, a dataset (datasets.py), or synthetic prompts of
a known token length. Synthetic prompts are built from seeded random common words and
sized with a token counter (lengths.py), so the same seed gives the same requests in
the same order. Nothing here touches the network except through the counter it is given.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from tpsload.protocol.openai import build_body
from tpsload.records import RequestRecord

# Common short English words: one token each, with a leading space, in GPT-style, Llama and
# Gemma tokenizers, so a word count is a fair estimate when no tokenizer is at hand.
WORDS = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put end does "
    "another well large must big even such because turn here why ask went men read need land different home "
    "us move try kind hand picture again change off play spell air away animal house point page letter mother "
    "answer found study still learn should world high every near add food between own below country plant"
).split()


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request's content: a prompt (or chat messages) and, optionally, its own output length."""

    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    max_tokens: int | None = None
    input_tokens: int | None = None  # the length it was built to, when known

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"messages": list(self.messages)} if self.messages else {"prompt": self.prompt}
        if self.max_tokens is not None:
            d["max_tokens"] = self.max_tokens
        return d


def length_targets(n: int, mean: int, stddev: float, lo: int | None, hi: int | None, seed: int) -> list[int]:
    """Per-request input lengths: `mean`, or normal(mean, stddev) clipped to [lo, hi] (at least 1)."""
    rng = random.Random(f"lengths-{seed}")
    lo = max(1, lo or 1)
    hi = hi or 1 << 30
    out = []
    for _ in range(n):
        v = round(rng.gauss(mean, stddev)) if stddev > 0 else mean
        out.append(min(hi, max(lo, v)))
    return out


def _words(seed: int, i: int, n: int) -> list[str]:
    rng = random.Random(f"words-{seed}-{i}")
    return [rng.choice(WORDS) for _ in range(n)]


async def fit(count: Callable[[str], Awaitable[int]], head: str, words: list[str], target: int) -> tuple[str, int]:
    """`head` + as many of `words` as make `target` tokens, topped up with one-token words when a
    word boundary overshoots. Returns (text, measured tokens). A few counts per prompt."""

    def text(k: int) -> str:
        return head + " ".join(words[:k])

    lo, lo_c = 0, (await count(head) if head else 0)  # count(text(lo)) == lo_c <= target
    hi = len(words) + 1  # count(text(hi)) > target
    k = min(target - lo_c, len(words))
    for _ in range(32):
        if not lo < k < hi:
            k = (lo + hi) // 2
            if not lo < k < hi:
                break
        c = await count(text(k))
        if c == target:
            return text(k), c
        if c < target:
            lo, lo_c = k, c
            k += target - c
        else:
            hi = k
            k -= c - target
    t, c = text(lo), lo_c
    for _ in range(16):  # one-token words close the last gap
        if c >= target:
            break
        t += "a" if not t or t.endswith((" ", "\n")) else " a"
        c = await count(t)
    return t, c


def _tag_hash(salt: str, seed: int, i: int) -> str:
    return hashlib.blake2s(f"{salt}|{seed}|{i}".encode(), digest_size=4).hexdigest()


async def synthesize(count: Callable[[str], Awaitable[int]], targets: Sequence[int], seed: int, shared_prefix: int,
                     cache_bust: bool, overhead: int = 0, salt: str = "") -> tuple[list[str], list[int]]:
    """Prompts whose server-side length (content + `overhead`) is each target.

    With cache busting, each prompt starts with a unique tag, so no two prompts share
    their first tokens; `shared_prefix` N puts the same N tokens first, on purpose. The
    tag opens with a hash of (`salt`, seed, request): a run with a salt of its own sends
    the same words in the same order as another run of its seed, yet no prompt that
    starts like one of that run's (or like another of its own), so it cannot find them
    in a prompt cache. A hash rather than the salt itself: the salt is the same in every
    prompt of a run, and prompts that began with it would share those tokens.
    """
    shared = ""
    if shared_prefix > 0:
        shared, _ = await fit(count, "", _words(seed, -1, shared_prefix * 2), shared_prefix)
        shared += "\n"
    prompts, measured = [], []
    for i, target in enumerate(targets):
        tag = f"{_tag_hash(salt, seed, i)} Request {i}: " if cache_bust else ""
        want = max(1, target - overhead)
        t, c = await fit(count, shared + tag, _words(seed, i, want * 2 + 8), want)
        prompts.append(t)
        measured.append(c + overhead)
    return prompts, measured


def request_body(item: RequestSpec, p: WorkloadParams) -> dict[str, Any]:
    """One request's body: the item's prompt or messages (after --system), shaped by the run's parameters."""
    if item.messages:
        content: Any = list(item.messages)
    else:
        content = item.prompt or ""
    if p.system and p.endpoint == "chat":
        msgs = content if isinstance(content, list) else [{"role": "user", "content": content}]
        content = [{"role": "system", "content": p.system}, *msgs]
    max_tokens = item.max_tokens if item.max_tokens is not None else p.max_tokens
    extra = p.extra_body
    if item.max_tokens is not None and extra and "min_tokens" in extra and p.ignore_eos:
        # exact lengths per request (a trace, a dataset's replies): vLLM refuses min_tokens > max_tokens
        extra = {**extra, "min_tokens": item.max_tokens}
    return build_body(p.endpoint, p.model, content, stream=p.stream, max_tokens=max_tokens,
                      ignore_eos=p.ignore_eos, temperature=p.temperature, extra_body=extra,
                      continuous_usage=p.continuous_usage)


@dataclass
class WorkloadParams:
    endpoint: str = "chat"
    model: str = ""
    stream: bool = True
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float | None = None
    system: str | None = None
    extra_body: dict[str, Any] | None = None
    continuous_usage: bool = False


class Workload:
    """Request i's body: items in turn (i modulo their number); each body encoded once."""

    def __init__(self, items: Sequence[RequestSpec], params: WorkloadParams, description: dict[str, Any]) -> None:
        if not items:
            raise ValueError("a workload needs at least one request")
        self.items = list(items)
        self.params = params
        self.description = description
        self._bodies: dict[int, bytes] = {}
        # a trace replay: request i's send time, seconds from the run's start (None: the load flags decide)
        self.schedule: list[float] | None = None

    def request(self, i: int) -> dict[str, Any]:
        return request_body(self.items[i % len(self.items)], self.params)

    def item_for(self, rec: RequestRecord) -> RequestSpec | None:
        """What the request of `rec` was built from (the checks compare asked and observed lengths)."""
        return self.items[rec.index % len(self.items)]

    def body(self, i: int) -> bytes:
        k = i % len(self.items)
        b = self._bodies.get(k)
        if b is None:
            b = self._bodies[k] = json.dumps(self.request(k)).encode()
        return b

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            **self.description,
            "distinct_requests": len(self.items),
            "endpoint": p.endpoint,
            "stream": p.stream,
            "max_tokens": p.max_tokens,
            "ignore_eos": p.ignore_eos,
            "temperature": p.temperature,
            "system_prompt": p.system is not None,
            "extra_body_keys": sorted(p.extra_body or {}),
        }

    def dump(self) -> str:
        """The requests as a JSONL dataset (`--save-prompts`): loadable again with --dataset."""
        return "".join(json.dumps(it.to_json()) + "\n" for it in self.items)
