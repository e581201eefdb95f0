"""How the sample traces beside this file were made (seeded: rerunning it writes the same bytes).

They are written for tpsload's tests and walk-through, in the formats of the published traces, not
taken from them: the lengths are small, so a replay runs on a laptop's llama-server.

    python examples/traces/make_samples.py
"""

import csv
import json
import pathlib
import random

HERE = pathlib.Path(__file__).resolve().parent
BLOCK = 64  # tokens per hash_id block in these samples (--trace-block 64); Mooncake's own is 512


def mooncake(path: pathlib.Path, n: int = 200, mean_gap_ms: float = 20.0) -> None:
    """n requests over ~n * mean_gap_ms: five prefix groups (a shared first block), the rest unique."""
    rng = random.Random(18)
    t, next_id, lines = 0.0, 5, []
    for _ in range(n):
        blocks = rng.randint(2, 4)
        ids = [rng.randrange(5)] + list(range(next_id, next_id + blocks - 1))
        next_id += blocks - 1
        lines.append({"timestamp": int(t), "input_length": BLOCK * blocks - rng.randrange(BLOCK),
                      "output_length": rng.randint(4, 32), "hash_ids": ids})
        t += rng.expovariate(1 / mean_gap_ms)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def prefix_groups(path: pathlib.Path) -> None:
    """Eight requests 0.7 s apart: four open a prefix group, four continue one (cached tokens expected)."""
    rows = [([100, 101], 120), ([200, 201], 100), ([100, 102, 103], 180), ([300], 50),
            ([200, 201, 202], 170), ([100, 102, 104], 190), ([400, 401], 110), ([300, 301], 100)]
    path.write_text("".join(json.dumps({"timestamp": 700 * i, "input_length": n, "output_length": 8, "hash_ids": ids})
                            + "\n" for i, (ids, n) in enumerate(rows)))


def azure(path: pathlib.Path) -> None:
    """The Azure LLM inference trace's columns: TIMESTAMP (UTC date-time, 7 decimals), ContextTokens, GeneratedTokens."""
    rng = random.Random(7)
    t = 46.0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for _ in range(20):
            w.writerow([f"2023-11-16 18:15:{t:010.7f}", rng.randint(20, 300), rng.randint(1, 40)])
            t += rng.uniform(0.01, 0.4)


def burstgpt(path: pathlib.Path) -> None:
    """BurstGPT's columns: Timestamp (s), Model, Request tokens, Response tokens, Total tokens, Log Type."""
    rng = random.Random(8)
    t = 5.0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"])
        for _ in range(20):
            a, b = rng.randint(20, 300), rng.randint(1, 40)
            w.writerow([int(t), rng.choice(["ChatGPT", "GPT-4"]), a, b, a + b, "Conversation log"])
            t += rng.choice([0, 1, 1, 2])


def plain(path: pathlib.Path) -> None:
    """tpsload's plain JSONL: timestamp (ms), then input_tokens, or a prompt, or messages; output_tokens."""
    lines = [{"timestamp": 0, "input_tokens": 40, "output_tokens": 8},
             {"timestamp": 150, "prompt": "Name three rivers in Europe.", "output_tokens": 12},
             {"timestamp": 150, "messages": [{"role": "user", "content": "Say hello in French."}], "output_tokens": 4},
             {"timestamp": 420, "input_tokens": 120, "output_tokens": 16},
             {"timestamp": 900, "input_tokens": 60}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    mooncake(HERE / "mooncake.jsonl")
    prefix_groups(HERE / "prefix-groups.jsonl")
    azure(HERE / "azure.csv")
    burstgpt(HERE / "burstgpt.csv")
    plain(HERE / "plain.jsonl")
