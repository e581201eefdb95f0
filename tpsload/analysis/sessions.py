"""Multi-turn runs (--turns): the numbers per turn index. Pure.

Turn t of every conversation resends the history of turns 1..t-1, so the table's rows
show how prompts grow and how much of each the server's prefix cache served: the shape
of prefix caching in one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tpsload.analysis.numbers import fmt
from tpsload.analysis.stats import Dist, dist, per_request
from tpsload.records import RequestRecord


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One turn index (1 = each conversation's first request) over every measured conversation."""

    turn: int
    requests: int  # measured requests of this turn index that started
    ok: int
    ttft_ms: Dist | None
    tpot_ms: Dist | None
    prompt_tokens: Dist | None
    cached_tokens: Dist | None
    cache_hit_ratio: float | None  # cached / prompt tokens, summed over the requests that report both


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A --turns run: its conversations and the per-turn table."""

    conversations: int  # measured conversations that started
    conversations_ok: int  # ... whose every started turn succeeded (a failed turn ends its conversation)
    turns: int  # the highest turn index reached
    per_turn: list[TurnRow]


def per_turn(records: Sequence[RequestRecord]) -> list[TurnRow]:
    """The per-turn-index table over measured requests (warm-up left out)."""
    by: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.turn is not None and not r.warmup:
            by.setdefault(r.turn, []).append(r)
    rows = []
    for turn in sorted(by):
        rs = by[turn]
        ok = [r for r in rs if r.ok]
        pr = per_request(ok)
        both = [(r.prompt_tokens, r.cached_tokens) for r in ok if r.prompt_tokens and r.cached_tokens is not None]
        prompt = sum(p for p, _ in both)
        rows.append(TurnRow(
            turn=turn, requests=len(rs), ok=len(ok), ttft_ms=dist(pr.column("ttft_ms")),
            tpot_ms=dist(pr.column("tpot_ms")),
            prompt_tokens=dist([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
            cached_tokens=dist([r.cached_tokens for r in ok if r.cached_tokens is not None]),
            cache_hit_ratio=sum(c for _, c in both) / prompt if prompt else None))
    return rows


def summarize_sessions(records: Sequence[RequestRecord]) -> SessionSummary | None:
    """None for a run without conversations."""
    convs: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.session is not None and not r.warmup:
            convs.setdefault(r.session, []).append(r)
    if not convs:
        return None
    rows = per_turn(records)
    ok = sum(all(r.ok for r in rs) for rs in convs.values())
    return SessionSummary(conversations=len(convs), conversations_ok=ok, turns=max(row.turn for row in rows),
                          per_turn=rows)


# the per-turn table as the console and reports print it: (header, key, what of it, digits)
TURN_COLUMNS = (("ok", "ok", None, 0), ("TTFT p50 ms", "ttft_ms", "p50", 1), ("TTFT p99 ms", "ttft_ms", "p99", 1),
                ("TPOT p50 ms", "tpot_ms", "p50", 1), ("prompt tok p50", "prompt_tokens", "p50", 0),
                ("cached tok p50", "cached_tokens", "p50", 0), ("cache hit", "cache_hit_ratio", None, 2))


def turn_table(sessions: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The result JSON's per-turn table as text cells (header, rows): one place for console and reports."""
    rows = []
    for row in sessions["per_turn"]:
        cells = [str(row["turn"])]
        for _, key, part, digits in TURN_COLUMNS:
            v = row.get(key)
            if part is not None:
                v = None if v is None else v.get(part)
            if key == "cache_hit_ratio":
                cells.append("–" if v is None else f"{v:.0%}")
            elif key == "ok":
                cells.append(f"{row['ok']}/{row['requests']}")
            else:
                cells.append(fmt(v, digits))
        rows.append(cells)
    return ["turn", *(h for h, _, _, _ in TURN_COLUMNS)], rows
