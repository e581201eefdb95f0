"""The load in this process: one runner on one client, stopped through a Relay.

A worker process or a Ray actor runs the same code on its share of the run (run_share)
and returns raw records and its client health for the coordinator to merge.
"""

from __future__ import annotations

import os
import socket
import time
from time import perf_counter_ns
from typing import Any, Callable

from tpsload.analysis.health import send_lags
from tpsload.config import RunConfig
from tpsload.core.client import open_client
from tpsload.core.runner import Runner, RunState, Share
from tpsload.core.sessions import SessionRunner
from tpsload.core.signals import Relay
from tpsload.workload.sessions import Sessions
from tpsload.workload.spec import Workload


async def run_local(cfg: RunConfig, workload: Workload, llama_cpp: bool, state: RunState,
                    progress: Callable[[RunState], None] | None, relay: Relay, share: Share | None = None) -> None:
    client = open_client(cfg, llama_cpp)
    # --turns: conversations are the unit of load (core/sessions.py)
    kind = SessionRunner if isinstance(workload, Sessions) else Runner
    runner = kind(cfg, client, workload, state, progress=progress, share=share)
    relay.attach(runner)
    try:
        await runner.run()
    finally:
        relay.detach()
        await client.close()


async def run_share(cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool, relay: Relay,
                    progress: Callable[[RunState], None] | None = None) -> dict[str, Any]:
    """One worker's part of a run (in a local process or a Ray actor): raw records and health."""
    wall_minus_mono = time.time_ns() - perf_counter_ns()
    state = RunState()
    try:
        await run_local(cfg, workload, llama_cpp, state, progress, relay, share)
    except Exception as e:  # keep what was measured
        state.stop(f"internal error in a worker: {e.__class__.__name__}: {e}")
    send, cap_wait = send_lags(state.records)
    return {"pid": os.getpid(), "host": socket.gethostname(), "wall_minus_mono_ns": wall_minus_mono,
            "records": state.records, "lags_ms": state.lags.lags_ms, "cpu_s": state.cpu_s, "wall_s": state.wall_s,
            "stop_reason": state.stop_reason, "signal": state.signal, "t0": state.t0,
            "preconnected": state.preconnected, "send_lags_ms": send, "cap_waits_ms": cap_wait}
