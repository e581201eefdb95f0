"""The server a run measures: the one given, or with --mock the bundled mock, started for the run."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from tpsload.config import RunConfig
from tpsload.mock import MockProcess
from tpsload.scale.processes import workers_for


@dataclass(frozen=True)
class MockSettings:
    """The bundled mock's timing (--mock-ttft-ms, --mock-itl-ms)."""

    ttft_ms: float = 50.0
    itl_ms: float = 10.0

    def public(self) -> dict[str, float]:
        return {"ttft_ms": self.ttft_ms, "itl_ms": self.itl_ms}


@dataclass(frozen=True)
class Served:
    """What a run measures: the base URL, and with --mock the mock's timing and the CPUs it and the
    client were given (`cpus`, `client_cpus`; null where they shared them)."""

    url: str
    mock: dict[str, Any] | None = None


def split_cpus(processes: int = 1) -> tuple[set[int], set[int]] | None:
    """(a local server's CPUs, the client's): the last CPU this process may use for the server, the others
    for the client's `processes`; None where that leaves the client fewer CPUs than processes. A server
    sharing the client's CPUs is woken onto the client's by each request it is sent (the kernel runs a
    woken reader where the writer was) and takes that CPU mid-send: measured on 2 cores, 14 % of a c=16
    run's requests were written > 1 ms late, and the run was called client-bound for the server's work."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) - 1 < max(processes, 1):
        return None
    return {cpus[-1]}, set(cpus[:-1])


def apart(cfg: RunConfig) -> tuple[set[int], set[int]] | None:
    """split_cpus for the run's mock and its client processes (not with Ray, whose processes are its own)."""
    return None if cfg.scale.ray_address else split_cpus(workers_for(cfg))


@contextmanager
def serving(cfg: RunConfig, mock: MockSettings) -> Iterator[Served]:
    """What to measure for the block: cfg's own base URL, or with --mock that of a mock started in its
    own process (never in the client's event loop, and on a CPU of its own where there are enough: apart)
    and stopped when the block ends, however it ends."""
    if not cfg.target.mock:
        yield Served(cfg.target.base_url)
        return
    server_cpus, client_cpus = apart(cfg) or (None, None)
    # with its own /metrics, so a first run shows the server's view beside ours
    m = MockProcess(ttft_ms=mock.ttft_ms, itl_ms=mock.itl_ms, metrics=True, cpus=server_cpus).start()
    before = None
    try:
        if client_cpus:
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, client_cpus)  # this thread, and the worker processes it starts
        yield Served(m.base_url, {**mock.public(), "cpus": sorted(server_cpus) if server_cpus else None,
                                  "client_cpus": sorted(client_cpus) if client_cpus else None})
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
        m.stop()
