"""Recorded traffic (--trace): when each request came, and how long its prompt and answer were.

Formats: Mooncake JSONL (`timestamp` ms, `input_length`, `output_length`, `hash_ids`), the Azure LLM
inference CSV (`TIMESTAMP` date-time, `ContextTokens`, `GeneratedTokens`), BurstGPT CSV (`Timestamp`
s, `Request tokens`, `Response tokens`), and a plain JSONL (`timestamp` ms from the trace's start;
`input_tokens`, or a `prompt` or `messages`; `output_tokens`). A malformed line is an error that
names the file and the line, never a skip: a replay that lost requests is not the trace.

Prompts for recorded lengths are synthetic, made of blocks of seeded words: the block of a
`hash_id` is the same words wherever that id appears, so requests that share leading hash_ids
share their leading tokens (and a prompt cache sees what the traced server saw); a request without
hash_ids has blocks of its own.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from tpsload.errors import TpsloadError
from tpsload.workload.datasets import _messages, _read, json_lines
from tpsload.workload.spec import WORDS, RequestSpec, fit

FORMATS = ("mooncake", "azure", "burstgpt", "jsonl")


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One recorded request: its time (seconds from the trace's first request) and lengths."""

    t_s: float
    input_tokens: int | None
    output_tokens: int | None
    hash_ids: tuple[int, ...] = ()
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class Trace:
    path: str
    format: str
    entries: list[TraceEntry]  # in time order, the first at 0

    @property
    def span_s(self) -> float:
        return self.entries[-1].t_s if self.entries else 0.0


def detect(path: str, text: str) -> str:
    """The format from the file's first line: a CSV header names its columns, a JSON line its keys."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.lstrip().startswith("{"):
        try:
            keys = json.loads(first)
        except ValueError:
            keys = {}
        return "mooncake" if isinstance(keys, dict) and "input_length" in keys else "jsonl"
    if "ContextTokens" in first:
        return "azure"
    if "Request tokens" in first:
        return "burstgpt"
    raise TpsloadError(f"--trace {path}: cannot tell its format from the first line; give --trace-format "
                       f"({', '.join(FORMATS)})")


def load(path: str, fmt: str = "auto") -> Trace:
    text = _read(path, "--trace")
    fmt = detect(path, text) if fmt == "auto" else fmt
    if fmt in ("mooncake", "jsonl"):
        rows = _jsonl(path, text, fmt)
    elif fmt in ("azure", "burstgpt"):
        rows = _csv(path, text, fmt)
    else:
        raise TpsloadError(f"--trace-format {fmt!r}: one of auto, {', '.join(FORMATS)}")
    if not rows:
        raise TpsloadError(f"--trace {path}: no requests in the file")
    rows.sort(key=lambda e: e.t_s)  # stable: requests of one instant keep the file's order
    t0 = rows[0].t_s
    entries = [TraceEntry(e.t_s - t0, e.input_tokens, e.output_tokens, e.hash_ids, e.prompt, e.messages) for e in rows]
    return Trace(path, fmt, entries)


def _count(obj: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
        raise TpsloadError(f"{where}: {key!r} must be a whole number of tokens, got {v!r}")
    return int(v)


def _jsonl(path: str, text: str, fmt: str) -> list[TraceEntry]:
    out = []
    for where, obj in json_lines(text, "--trace", path, "a JSON object"):
        ts = obj.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
            raise TpsloadError(f"{where}: 'timestamp' must be milliseconds from the trace's start, got {ts!r}")
        if fmt == "mooncake":
            ids = obj.get("hash_ids", [])
            if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
                raise TpsloadError(f"{where}: 'hash_ids' must be a list of integers")
            out.append(TraceEntry(ts / 1e3, _count(obj, "input_length", where), _count(obj, "output_length", where),
                                  tuple(ids)))
            continue
        output = _count(obj, "output_tokens", where, required=False)
        if isinstance(obj.get("prompt"), str):
            out.append(TraceEntry(ts / 1e3, None, output, prompt=obj["prompt"]))
        elif "messages" in obj:
            out.append(TraceEntry(ts / 1e3, None, output, messages=_messages(obj["messages"], where)))
        elif "input_tokens" in obj:
            ids = obj.get("hash_ids", [])
            if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
                raise TpsloadError(f"{where}: 'hash_ids' must be a list of integers")
            out.append(TraceEntry(ts / 1e3, _count(obj, "input_tokens", where), output, tuple(ids)))
        else:
            raise TpsloadError(f"{where}: expected 'input_tokens', a string 'prompt' or a 'messages' list")
    return out


# (time column, input column, output column) by format
_COLUMNS = {"azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
            "burstgpt": ("Timestamp", "Request tokens", "Response tokens")}


def _azure_time(v: str) -> float:
    """'2023-11-16 18:15:46.6805900' (seven decimals, more than fromisoformat takes before 3.11) -> s."""
    v = v.strip().rstrip("Z")
    head, dot, frac = v.partition(".")
    when = dt.datetime.fromisoformat(head.replace("T", " ").split("+")[0])
    return when.replace(tzinfo=dt.timezone.utc).timestamp() + (float("0." + frac.split("+")[0]) if dot else 0.0)


def _csv(path: str, text: str, fmt: str) -> list[TraceEntry]:
    t_col, in_col, out_col = _COLUMNS[fmt]
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in (t_col, in_col, out_col) if c not in (reader.fieldnames or [])]
    if missing:
        raise TpsloadError(f"--trace {path}:1: a {fmt} trace needs the columns {t_col!r}, {in_col!r} and "
                           f"{out_col!r}; missing {', '.join(map(repr, missing))}")
    out = []
    for row in reader:
        where = f"--trace {path}:{reader.line_num}"
        try:
            t = _azure_time(row[t_col]) if fmt == "azure" else float(row[t_col])
        except (TypeError, ValueError):
            raise TpsloadError(f"{where}: {t_col!r} is not a time: {row.get(t_col)!r}") from None
        try:
            n_in, n_out = int(float(row[in_col])), int(float(row[out_col]))
        except (TypeError, ValueError):
            raise TpsloadError(f"{where}: {in_col!r} and {out_col!r} must be token counts") from None
        if n_in < 0 or n_out < 0 or t < 0:
            raise TpsloadError(f"{where}: negative time or token count")
        out.append(TraceEntry(t, n_in, n_out))
    return out


def window(trace: Trace, start_s: float = 0.0, end_s: float | None = None) -> list[TraceEntry]:
    """The requests recorded in [start, end) seconds of the trace, with times from `start`."""
    return [TraceEntry(e.t_s - start_s, e.input_tokens, e.output_tokens, e.hash_ids, e.prompt, e.messages)
            for e in trace.entries if e.t_s >= start_s and (end_s is None or e.t_s < end_s)]


def prefix_groups(entries: Sequence[TraceEntry]) -> int:
    """How many first blocks (hash_ids) more than one request starts with: the trace's shared prefixes."""
    seen = Counter(e.hash_ids[0] for e in entries if e.hash_ids)
    return sum(1 for n in seen.values() if n > 1)


def shared_tokens(entries: Sequence[TraceEntry], block: int, overhead: int = 0) -> int:
    """Prompt tokens the trace shares on purpose: for each request, the longest run of leading hash_id
    blocks it has in common with an earlier request (within both lengths, net of the server's overhead)."""
    longest: dict[tuple[int, ...], int] = {}  # leading hash_ids -> the longest content an earlier request had
    total = 0
    for e in entries:
        if not e.hash_ids or e.input_tokens is None:
            continue
        mine = max(1, e.input_tokens - overhead)
        best = 0
        for j in range(1, len(e.hash_ids) + 1):
            seen = longest.get(e.hash_ids[:j])
            if seen is None:
                break
            best = min(j * block, seen, mine)
        total += best
        for j in range(1, len(e.hash_ids) + 1):
            key = e.hash_ids[:j]
            longest[key] = max(longest.get(key, 0), mine)
    return total


def block_words(salt: str, seed: int, key: str, n: int) -> list[str]:
    """The words of one block: the same for the same (salt, seed, key), unlike any other block's."""
    h = hashlib.blake2s(f"{salt}|{seed}|{key}".encode(), digest_size=8).hexdigest()
    rng = random.Random(h)
    return [rng.choice(WORDS) for _ in range(n)]


async def requests(entries: Sequence[TraceEntry], count: Callable[[str], Awaitable[int]], block: int, seed: int,
                   salt: str, overhead: int = 0) -> tuple[list[RequestSpec], list[int]]:
    """Each entry as a request: its own prompt, or one of its input length built from its hash_ids'
    blocks (then blocks of its own), with its output length as max_tokens. Returns the requests and
    the measured input length of each (content + the server's `overhead`)."""
    out, measured = [], []
    blocks: dict[str, list[str]] = {}
    for i, e in enumerate(entries):
        max_tokens = max(1, e.output_tokens) if e.output_tokens is not None else None
        if e.prompt is not None or e.messages is not None:
            out.append(RequestSpec(prompt=e.prompt, messages=e.messages, max_tokens=max_tokens))
            measured.append(-1)
            continue
        want = max(1, (e.input_tokens or 1) - overhead)
        keys = [f"h{h}" for h in e.hash_ids]
        keys += [f"r{i}-{k}" for k in range(-(-want // block) + 1 - len(keys))]  # blocks of its own after
        words: list[str] = []
        for key in keys:
            if key not in blocks:
                blocks[key] = block_words(salt, seed, key, block)
            words += blocks[key]
            if len(words) >= want + 8:
                break
        text, c = await fit(count, "", words, want)
        out.append(RequestSpec(prompt=text, max_tokens=max_tokens, input_tokens=c + overhead))
        measured.append(c + overhead)
    return out, measured
