"""Multi-turn conversations (--turns): what each turn sends. Pure: no network, no clock.

A conversation is a list of turns, each a new user message (and, from a dataset, the
reply that followed it there). Turn t sends the whole history: every earlier user
message with the assistant's reply to it (the server's own reply as it came, or with
`--history dataset` the dataset's), then turn t's message. So every turn of one
conversation starts with its previous turn's prompt, and a prefix cache can serve it.

Cache busting salts a conversation once, in its first message (workload.spec.synthesize's
tag): turns of one conversation share their prefix, conversations do not.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Sequence

from tpsload.config import ThinkTime
from tpsload.errors import TpsloadError
from tpsload.records import RequestRecord
from tpsload.workload.spec import RequestSpec, Workload, WorkloadParams, request_body


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message of a conversation, and what the dataset answered it with (if known)."""

    user: str
    reply: str | None = None
    max_tokens: int | None = None  # this turn's output length, when it has one of its own
    input_tokens: int | None = None  # the message's measured size as a one-message prompt (synthetic)


@dataclass(frozen=True, slots=True)
class Conversation:
    """The turns of one conversation, after the system messages that open it (datasets)."""

    turns: tuple[Turn, ...]
    system: tuple[dict[str, Any], ...] = ()


def turn_counts(n: int, turns: tuple[int, int], seed: int) -> list[int]:
    """Turns of each of `n` conversations: fixed, or drawn uniformly from the range with the seed."""
    lo, hi = turns
    rng = random.Random(f"turns-{seed}")
    return [lo if lo == hi else rng.randint(lo, hi) for _ in range(n)]


def later_seed(seed: int) -> int:
    """The seed of the messages after each conversation's first: words of their own, not the first's."""
    return int.from_bytes(hashlib.blake2s(f"tpsload-later-turns|{seed}".encode(), digest_size=6).digest(), "big")


def think_ns(think: ThinkTime | None, seed: int, conversation: int, turn: int) -> int:
    """The pause before `turn` (1-based; the first has none) of `conversation`, seeded by both."""
    if think is None or turn <= 1:
        return 0
    if think.kind == "fixed":
        s = think.lo_s
    else:
        rng = random.Random(f"think-{seed}-{conversation}-{turn}")
        if think.kind == "uniform":
            s = rng.uniform(think.lo_s, think.hi_s)
        else:
            s = rng.expovariate(1.0 / think.lo_s) if think.lo_s > 0 else 0.0
    return int(s * 1e9)


def from_messages(messages: Sequence[dict[str, Any]], where: str) -> Conversation:
    """A chat transcript -> its turns: each user message with the assistant reply that follows it."""
    system: list[dict[str, Any]] = []
    turns: list[Turn] = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            raise TpsloadError(f"{where}: --turns replays text messages; a 'content' is not a string")
        if role == "system" and not turns:
            system.append({"role": "system", "content": content})
        elif role == "user":
            turns.append(Turn(user=content))
        elif role == "assistant" and turns and turns[-1].reply is None:
            turns[-1] = Turn(user=turns[-1].user, reply=content)
    if not turns:
        raise TpsloadError(f"{where}: no user message to replay")
    return Conversation(tuple(turns), tuple(system))


def from_sharegpt(conv: Sequence[dict[str, Any]], where: str) -> Conversation:
    """ShareGPT turns ({"from": human|gpt|system, "value"}) as chat messages."""
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
    return from_messages([{"role": roles.get(str(t.get("from")), "other"), "content": t.get("value")}
                          for t in conv], where)


def cap_turns(c: Conversation, n: int) -> Conversation:
    return c if len(c.turns) <= n else Conversation(c.turns[:n], c.system)


class Sessions(Workload):
    """The conversations of a run: conversation k is `conversations[k % len]`, and turn t's body holds its
    history. `items` (the Workload's) are the first turns, for the checks made on requests."""

    def __init__(self, conversations: Sequence[Conversation], params: WorkloadParams, description: dict[str, Any],
                 think: ThinkTime | None = None, seed: int = 0, history: str = "replies",
                 slots: int | None = None) -> None:
        if not conversations:
            raise ValueError("sessions need at least one conversation")
        self.conversations = list(conversations)
        firsts = [RequestSpec(messages=(*c.system, {"role": "user", "content": c.turns[0].user}),
                              max_tokens=c.turns[0].max_tokens, input_tokens=c.turns[0].input_tokens)
                  for c in self.conversations]
        super().__init__(firsts, params, description)
        self.think = think
        self.seed = seed
        self.history = history
        self.slots = slots  # slot affinity: conversation k goes to llama-server slot k % slots

    def conversation(self, k: int) -> Conversation:
        return self.conversations[k % len(self.conversations)]

    def turns_of(self, k: int) -> int:
        return len(self.conversation(k).turns)

    def total_turns(self, conversations: int) -> int:
        """Requests that the first `conversations` conversations send when every turn is sent."""
        return sum(self.turns_of(k) for k in range(conversations))

    def think_ns(self, k: int, turn: int) -> int:
        return think_ns(self.think, self.seed, k, turn)

    def slot(self, k: int) -> int | None:
        return k % self.slots if self.slots else None

    def messages(self, k: int, turn: int, replies: Sequence[str]) -> list[dict[str, Any]]:
        """Turn `turn` (1-based) of conversation k: its history, with `replies` (the server's replies to the
        earlier turns) or the dataset's, then the turn's own message."""
        c = self.conversation(k)
        msgs = list(c.system)
        for j in range(turn - 1):
            reply = replies[j] if self.history == "replies" else (c.turns[j].reply or "")
            msgs += [{"role": "user", "content": c.turns[j].user}, {"role": "assistant", "content": reply}]
        msgs.append({"role": "user", "content": c.turns[turn - 1].user})
        return msgs

    def turn_body(self, k: int, turn: int, replies: Sequence[str]) -> bytes:
        t = self.conversation(k).turns[turn - 1]
        body = request_body(RequestSpec(messages=tuple(self.messages(k, turn, replies)), max_tokens=t.max_tokens),
                            self.params)
        slot = self.slot(k)
        if slot is not None:
            body["id_slot"] = slot
        return json.dumps(body).encode()

    def last_turn_tokens(self) -> int:
        """About how many tokens the longest conversation's last turn needs (its whole history and reply):
        what must fit a llama-server slot."""
        default = self.params.max_tokens or 0

        def size(c: Conversation) -> int:
            words = sum(len(m["content"]) for m in c.system) // 4
            for t in c.turns:
                reply = t.max_tokens or default or len(t.reply or "") // 4
                words += (t.input_tokens or len(t.user) // 4) + reply
            return words

        return max(size(c) for c in self.conversations)

    def item_for(self, rec: RequestRecord) -> RequestSpec | None:
        """A first turn was built to a length; a later turn is its history plus a message (no asked length)."""
        if rec.session is None or rec.turn is None:
            return None
        if rec.turn == 1:
            return self.items[rec.session % len(self.items)]
        t = self.conversation(rec.session).turns[rec.turn - 1]
        return RequestSpec(max_tokens=t.max_tokens)

    def describe(self) -> dict[str, Any]:
        counts = [len(c.turns) for c in self.conversations]
        think = self.think
        return {
            **super().describe(),
            "sessions": {
                "conversations": len(self.conversations),
                "turns": {"min": min(counts), "max": max(counts), "total": sum(counts)},
                "think_time": None if think is None else {"kind": think.kind, "lo_s": think.lo_s, "hi_s": think.hi_s},
                "history": self.history,
                "slot_affinity": self.slots is not None,
                "slots": self.slots,
            },
        }

    def dump(self) -> str:
        """The conversations as a JSONL dataset of `messages` (replies where the dataset had them)."""
        lines = []
        for c in self.conversations:
            msgs = list(c.system)
            for t in c.turns:
                msgs.append({"role": "user", "content": t.user})
                if t.reply is not None:
                    msgs.append({"role": "assistant", "content": t.reply})
            lines.append(json.dumps({"messages": msgs}) + "\n")
        return "".join(lines)
