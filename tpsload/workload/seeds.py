"""Seeds for the runs of a sweep and of `--repeat`: each run gets prompts of its own.

A run that finds another's prompts in the server's prompt cache measures the cache, not the
server, so no two (level, repetition) pairs may share a seed. Adding a fixed step per level and
per repetition collides (level i + 1 equals repetition 1 of level i when the steps are equal, and
another --seed lands on a neighbour's); a hash of the whole triple does not.
"""

from __future__ import annotations

import hashlib

# Small enough that a cache-bust tag ("Request <seed>-<i>: ") stays a few tokens, large enough that
# two runs of a sweep share a seed with odds of about n^2 / 2^49 (1e-11 for a hundred runs).
SEED_BITS = 48


def derive(seed: int, level: float | None = None, repetition: int = 0) -> int:
    """The seed of repetition `repetition` at sweep level `level` (None: a plain run) for the user's
    `seed`. The first repetition of a plain run keeps `seed` itself, so `run --seed S` stays reproducible
    with S; every other pair gets a hash of (seed, level, repetition)."""
    if level is None and repetition == 0:
        return seed
    text = f"tpsload-seed|{seed}|{'-' if level is None else repr(float(level))}|{repetition}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)
