"""The client's own instruments: event-loop lag sampler and CPU meter (the verdict is analysis.health)."""

from __future__ import annotations

import asyncio
import time
from array import array

from tpsload.core.clock import Alarm

LAG_INTERVAL_S = 0.010


class LoopLagSampler:
    """Wakes every 10 ms and records how late the wake-up was, on the run's alarm (core.clock): where it is
    precise, the lag is the loop's own (and an idle CPU's time to wake), not its timers' (uvloop's are whole
    milliseconds: they read a loop with nothing to do as up to 1 ms early or late)."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval = interval_s
        self.lags_ms = array("d")  # 100 a second: 8 bytes each, not a float object
        self._task: asyncio.Task[None] | None = None

    def start(self, alarm: Alarm) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(alarm))

    async def _run(self, alarm: Alarm) -> None:
        clock = time.perf_counter_ns
        step = round(self.interval * 1e9)
        append = self.lags_ms.append
        while True:
            due = clock() + step
            await alarm.until(due, lead_ns=0)  # no yielding to the loop before: 3 % of a core, for a sample
            append((clock() - due) / 1e6)

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


class CpuMeter:
    """Process CPU time (all threads) against wall time, from start() (when the load starts: time
    spent before it, in pre-flight, preparation or waiting for the workers' shared start, would
    dilute the share that says whether the client kept up)."""

    def __init__(self) -> None:
        self.cpu0: float | None = None
        self.wall0 = 0.0

    def start(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def read(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since start(); nothing before it."""
        if self.cpu0 is None:
            return 0.0, 0.0
        return time.process_time() - self.cpu0, time.perf_counter() - self.wall0
