"""--checkpoint-interval: while the load runs, the partial result is rewritten to the --json path every
N seconds, so a killed process, an OOM kill or a power cut loses at most that much.

A checkpoint is the result of a run stopped now (the one builder, app.result), over the requests that
have finished: `partial` true, `stop_reason` CHECKPOINT_REASON, and a `checkpoint` object saying when it
was taken and how many requests were still in flight. It is written atomically (temp file + rename in
the same directory, render.json.write), so a reader never sees half of one; the final result replaces it.

The finished requests are copied on the event loop (the run's ledger, analysis.ledger: packed rows, a
memory copy); the result is built from the copy and written on a thread, so the loop is held only for
the copy. That thread still
takes the GIL from the loop in slices (sys.getswitchinterval, 5 ms), which the loop-lag sampler sees:
the cost is measured and stated in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from time import perf_counter, perf_counter_ns
from typing import Any, Callable

from tpsload.core.health import LoopLagSampler
from tpsload.core.runner import RunState
from tpsload.render import json as export_json

CHECKPOINT_REASON = "checkpoint: run in progress"
# while a checkpoint is built, the GIL changes hands this often (Python's default: every 5 ms), so the
# event loop, which wants it back for each arriving chunk, waits a tenth as long (measured: loop lag p50
# during a 20,000-request build 0.8-1.7 ms instead of 1.6-4.9 ms)
SWITCH_INTERVAL_S = 0.0005
DEFAULT_INTERVAL_S = 30.0


def snapshot(state: RunState) -> tuple[RunState, int]:
    """The run so far as a stopped run's state (its finished requests), and how many are in flight."""
    records = state.records.copy()  # finished requests only: one in flight is in no ledger yet
    lags = LoopLagSampler()
    lags.lags_ms = list(state.lags.lags_ms)
    cpu_s, wall_s = state.cpu.read()
    snap = RunState(records=records, t0=state.t0, measure_t0=state.measure_t0, done=state.done,
                    failed=state.failed, stopping=True, stop_reason=CHECKPOINT_REASON, lags=lags, cpu_s=cpu_s,
                    wall_s=wall_s, preconnected=state.preconnected, workers=list(state.workers),
                    nodes=list(state.nodes), backend=state.backend)
    return snap, max(0, state.started - len(records))


class Checkpoints:
    """Writes `build(snapshot, checkpoint)` to `path` every `interval_s` until stop()."""

    def __init__(self, path: str, interval_s: float, state: RunState,
                 build: Callable[[RunState, dict[str, Any]], dict[str, Any]],
                 notice: Callable[[str], None]) -> None:
        self.path = path
        self.interval_s = interval_s
        self.state = state
        self.build = build
        self.notice = notice
        self.written = 0
        self.build_s: list[float] = []  # how long each build + write took (on its thread)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """No more checkpoints; one being written is finished first, so none lands after the final result."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 1
        while True:
            try:  # on a fixed grid: a slow write does not push every later checkpoint back
                await asyncio.wait_for(self._stop.wait(), max(0.0, start + k * self.interval_s - loop.time()))
                return
            except asyncio.TimeoutError:
                pass
            taken = perf_counter_ns()
            snap, in_flight = snapshot(self.state)
            info = {"taken_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                    "t_ms": round((taken - self.state.t0) / 1e6, 3), "interval_s": self.interval_s,
                    "requests_in_flight": in_flight}
            await asyncio.to_thread(self._write, snap, info)
            k = max(k + 1, int((loop.time() - start) / self.interval_s) + 1)

    def _write(self, snap: RunState, info: dict[str, Any]) -> None:
        t = perf_counter()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            export_json.write(self.build(snap, info), self.path)
        except Exception as e:  # a checkpoint must never end the run it protects
            if not self._failed:
                self.notice(f"warning: checkpoint not written to {self.path}: {e.__class__.__name__}: {e}")
            self._failed = True
            return
        finally:
            sys.setswitchinterval(switch)
        self.written += 1
        self.build_s.append(perf_counter() - t)
