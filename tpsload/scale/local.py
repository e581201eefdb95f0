"""The load in this process: one runner on one client, stopped through a Relay.

A worker process or a Ray actor runs the same code on its share of the run (run_share),
hands its raw records on in batches as they finish (Batches: the coordinator folds them into
its own ledger, so neither side holds a run's records), and returns its client health at the end.
"""

from __future__ import annotations

import os
import socket
import time
from array import array
from time import monotonic, perf_counter_ns
from typing import Any, Awaitable, Callable

from tpsload.config import RunConfig
from tpsload.core.client import open_client
from tpsload.core.runner import Runner, RunState, Share
from tpsload.core.sessions import SessionRunner
from tpsload.core.signals import Relay
from tpsload.records import RequestRecord
from tpsload.workload.sessions import Sessions
from tpsload.workload.spec import Workload


async def run_local(cfg: RunConfig, workload: Workload, llama_cpp: bool, state: RunState,
                    progress: Callable[[RunState], None] | None, relay: Relay, share: Share | None = None,
                    ready: Callable[[], Awaitable[Share]] | None = None) -> None:
    """`ready`: a worker's go-ahead, awaited once its connections are open; it gives the share on the
    run's shared start."""
    client = open_client(cfg, llama_cpp)
    # --turns: conversations are the unit of load (core/sessions.py)
    kind = SessionRunner if isinstance(workload, Sessions) else Runner
    runner = kind(cfg, client, workload, state, progress=progress, share=share)
    relay.attach(runner)
    try:
        if ready is not None:
            await runner.prepare()
            runner.share = await ready()
        await runner.run()
    finally:
        relay.detach()
        await client.close()


# a worker's records go to the coordinator this many at a time, or after this long, whichever comes first
BATCH = 64
BATCH_EVERY_S = 0.25


class Batches:
    """A worker's finished records, handed to `send` in batches as the run goes (its ledger's `forward`),
    and the send lags its own health verdict needs (analysis.health.send_lags, kept as they come)."""

    def __init__(self, send: Callable[[list[RequestRecord]], None], size: int = BATCH,
                 every_s: float = BATCH_EVERY_S) -> None:
        self.send = send
        self.size = size
        self.every_s = every_s
        self.buf: list[RequestRecord] = []
        self.last = monotonic()
        self.send_lags_ms = array("d")
        self.cap_waits_ms = array("d")

    def __call__(self, rec: RequestRecord) -> None:
        if not rec.warmup and rec.t_send is not None and rec.t_sched is not None:
            self.send_lags_ms.append((rec.t_send - rec.t_sched) / 1e6)
            self.cap_waits_ms.append(rec.cap_wait_ns / 1e6)
        self.buf.append(rec)
        if len(self.buf) >= self.size or monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self.last = monotonic()
        if self.buf:
            buf, self.buf = self.buf, []
            self.send(buf)


async def run_share(cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool, relay: Relay,
                    send: Callable[[list[RequestRecord]], None],
                    progress: Callable[[RunState], None] | None = None,
                    ready: Callable[[], Awaitable[Share]] | None = None) -> dict[str, Any]:
    """One worker's part of a run (in a local process or a Ray actor): its records go to `send` in
    batches as they finish; returns its health (the last batch is sent before)."""
    wall_minus_mono = time.time_ns() - perf_counter_ns()
    state = RunState()
    batches = Batches(send)
    state.records.forward = batches
    try:
        await run_local(cfg, workload, llama_cpp, state, progress, relay, share, ready)
    except Exception as e:  # keep what was measured
        state.stop(f"internal error in a worker: {e.__class__.__name__}: {e}")
    batches.flush()
    return {"pid": os.getpid(), "host": socket.gethostname(), "wall_minus_mono_ns": wall_minus_mono,
            "lags_ms": state.lags.lags_ms, "cpu_s": state.cpu_s, "wall_s": state.wall_s,
            "stop_reason": state.stop_reason, "signal": state.signal, "t0": state.t0,
            "preconnected": state.preconnected, "send_lags_ms": batches.send_lags_ms,
            "cap_waits_ms": batches.cap_waits_ms}
