"""What is sent: prompts -> request bodies. Pure apart from reading a prompt file.

A small seam on purpose: synthetic prompts of exact token length and datasets
(issue 4) plug in here as other prompt sources.
"""

from __future__ import annotations

import json
from typing import Any

from .config import RunConfig, TpsloadError
from .protocol import build_body


def read_prompt_file(path: str) -> tuple[str, ...]:
    """One prompt per non-empty line."""
    try:
        with open(path, encoding="utf-8") as fh:
            prompts = tuple(line.rstrip("\r\n") for line in fh if line.strip())
    except OSError as e:
        raise TpsloadError(f"--prompt-file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise TpsloadError(f"--prompt-file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not prompts:
        raise TpsloadError(f"--prompt-file {path}: no prompts (the file has no non-empty line)")
    return prompts


class Workload:
    """Request i's body; bodies for one prompt are encoded once and reused."""

    def __init__(self, cfg: RunConfig, model: str) -> None:
        self.cfg = cfg
        self.model = model
        self._bodies: dict[int, bytes] = {}

    def body(self, i: int) -> bytes:
        k = i % len(self.cfg.prompts)
        b = self._bodies.get(k)
        if b is None:
            c = self.cfg
            body = build_body(c.endpoint, self.model, c.prompts[k], stream=c.stream, max_tokens=c.max_tokens,
                              ignore_eos=c.ignore_eos, temperature=c.temperature, extra_body=c.extra_body)
            b = self._bodies[k] = json.dumps(body).encode()
        return b

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        lens = [len(p) for p in c.prompts]
        return {
            "source": c.prompt_source,
            "prompts": len(c.prompts),
            "prompt_chars": {"min": min(lens), "max": max(lens), "mean": sum(lens) / len(lens)},
            "endpoint": c.endpoint,
            "stream": c.stream,
            "max_tokens": c.max_tokens,
            "ignore_eos": c.ignore_eos,
            "temperature": c.temperature,
            "extra_body_keys": sorted(c.extra_body),
        }
