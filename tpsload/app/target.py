"""The server a run measures: the one given, or with --mock the bundled mock, started for the run."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from tpsload.config import RunConfig
from tpsload.mock import MockProcess


@dataclass(frozen=True)
class MockSettings:
    """The bundled mock's timing (--mock-ttft-ms, --mock-itl-ms)."""

    ttft_ms: float = 50.0
    itl_ms: float = 10.0

    def public(self) -> dict[str, float]:
        return {"ttft_ms": self.ttft_ms, "itl_ms": self.itl_ms}


@contextmanager
def serving(cfg: RunConfig, mock: MockSettings) -> Iterator[str]:
    """The base URL to measure for the block: cfg's own, or with --mock that of a mock started in its
    own process (never in the client's event loop) and stopped when the block ends, however it ends."""
    if not cfg.target.mock:
        yield cfg.target.base_url
        return
    # with its own /metrics, so a first run shows the server's view beside ours
    m = MockProcess(ttft_ms=mock.ttft_ms, itl_ms=mock.itl_ms, metrics=True).start()
    try:
        yield m.base_url
    finally:
        m.stop()
