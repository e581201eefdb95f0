"""Prompt datasets from files: plain text, JSONL (prompt or messages) and ShareGPT JSON.

A malformed entry is an error that names the file and the line (or entry), never a skip:
a workload that silently lost half its prompts would not be the workload the user stated.
"""

from __future__ import annotations

import json
import random
from typing import Any, Iterator

from tpsload.errors import TpsloadError
from tpsload.workload.sessions import Conversation, Turn, from_messages, from_sharegpt
from tpsload.workload.spec import RequestSpec


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise TpsloadError(f"{flag} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise TpsloadError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_text(path: str, flag: str = "--prompt-file") -> list[RequestSpec]:
    """One prompt per non-empty line."""
    items = [RequestSpec(prompt=line) for line in _read(path, flag).splitlines() if line.strip()]
    if not items:
        raise TpsloadError(f"{flag} {path}: no prompts (the file has no non-empty line)")
    return items


def _messages(v: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(v, list) or not v:
        raise TpsloadError(f"{where}: 'messages' must be a non-empty list")
    for m in v:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise TpsloadError(f"{where}: each message needs 'role' and 'content'")
    return tuple(v)


def json_lines(text: str, flag: str, path: str, expected: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A JSONL file's objects, each with where it stands (`--flag path:line`, for its errors); blank lines
    skipped; a line that is not a JSON object is a one-line error saying what was `expected`."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{flag} {path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise TpsloadError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise TpsloadError(f"{where}: expected {expected}")
        yield where, obj


def load_jsonl(path: str) -> list[RequestSpec]:
    """Each line: {"prompt": str} or {"messages": [...]}; optional "max_tokens" (or "output_tokens")."""
    items = []
    for where, obj in json_lines(_read(path, "--dataset"), "--dataset", path,
                                 "a JSON object with 'prompt' or 'messages'"):
        mt = obj.get("max_tokens", obj.get("output_tokens"))
        if mt is not None and (not isinstance(mt, int) or mt < 1):
            raise TpsloadError(f"{where}: 'max_tokens' must be a positive integer")
        if isinstance(obj.get("prompt"), str):
            items.append(RequestSpec(prompt=obj["prompt"], max_tokens=mt))
        elif "messages" in obj:
            items.append(RequestSpec(messages=_messages(obj["messages"], where), max_tokens=mt))
        else:
            raise TpsloadError(f"{where}: expected a string 'prompt' or a 'messages' list")
    if not items:
        raise TpsloadError(f"--dataset {path}: no requests in the file")
    return items


def _sharegpt_entries(path: str) -> list[tuple[str, list[Any]]]:
    """A ShareGPT file's conversations as (where, turns), each a list; any other shape is a one-line error."""
    text = _read(path, "--dataset")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TpsloadError(f"--dataset {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise TpsloadError(f"--dataset {path}: a ShareGPT file is a JSON list of conversations")
    out = []
    for n, conv in enumerate(data):
        where = f"--dataset {path}: entry {n}"
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise TpsloadError(f"{where}: no 'conversations' list")
        out.append((where, turns))
    return out


def load_sharegpt(path: str) -> list[tuple[RequestSpec, str]]:
    """ShareGPT: a list of {"conversations": [{"from": "human", "value"}, {"from": "gpt", "value"}]}.

    Returns (first human turn as the prompt, the reply that followed it, "" if none).
    """
    out = []
    for where, turns in _sharegpt_entries(path):
        for j, t in enumerate(turns):
            if not isinstance(t, dict) or not isinstance(t.get("value"), str):
                raise TpsloadError(f"{where}: turn {j} needs 'from' and a string 'value'")
            if t.get("from") in ("human", "user"):
                reply = next((u["value"] for u in turns[j + 1:] if u.get("from") in ("gpt", "assistant")), "")
                if t["value"].strip():
                    out.append((RequestSpec(prompt=t["value"]), reply))
                break
    if not out:
        raise TpsloadError(f"--dataset {path}: no conversation with a human turn")
    return out


def detect_format(path: str) -> str:
    if path.endswith(".jsonl"):
        return "jsonl"
    if path.endswith(".json"):
        return "sharegpt"
    return "text"


def shuffled(items: list[Any], seed: int) -> list[Any]:
    """The order requests are sent in: a seeded permutation, the same for the same seed."""
    order = list(items)
    random.Random(f"order-{seed}").shuffle(order)
    return order


def load_conversations(path: str, fmt: str) -> list[Conversation]:
    """Whole conversations for --turns: JSONL lines with 'messages' (or a one-turn 'prompt'), or ShareGPT
    entries, each replayed turn by turn (a user message, then the reply that followed it)."""
    if fmt == "jsonl":
        out = [from_messages(item.messages, f"--dataset {path}: line {n}") if item.messages
               else Conversation((Turn(user=item.prompt or "", max_tokens=item.max_tokens),))
               for n, item in enumerate(load_jsonl(path), 1)]
    elif fmt == "sharegpt":
        out = []
        for where, turns in _sharegpt_entries(path):
            if not all(isinstance(t, dict) for t in turns):
                raise TpsloadError(f"{where}: no 'conversations' list")
            if any(t.get("from") in ("human", "user") for t in turns):
                out.append(from_sharegpt(turns, where))
    else:
        raise TpsloadError(f"--turns with --dataset {path}: needs conversations (a .jsonl of 'messages' or a "
                           "ShareGPT .json), not one prompt per line")
    if not out:
        raise TpsloadError(f"--dataset {path}: no conversation with a user turn")
    return out
