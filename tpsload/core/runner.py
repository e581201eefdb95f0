"""Plan -> concurrent requests -> records. Closed loop, warm-up, stop conditions.

A request's record goes to the run's ledger (analysis.ledger: compact, the memory of a long run)
when the request ends, however it ends (done, failed, cancelled, an exception), so whatever ends
the run (the plan, the duration, Ctrl-C) leaves every started request accounted for. Signals
reach the runner through its stop() and cancel_all() (core/signals.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Callable, Coroutine, TypeVar

from tpsload.analysis.ledger import Ledger
from tpsload.config import RunConfig
from tpsload.core import eager
from tpsload.core.client import Client
from tpsload.core.clock import Alarm
from tpsload.core.health import CpuMeter, LoopLagSampler
from tpsload.core.live import LiveStats
from tpsload.core.scheduler import concurrency_plan, open_plan, stage_at, stage_starts
from tpsload.core.spill import SpillFile
from tpsload.records import ErrorClass, RequestRecord
from tpsload.workload.spec import Workload

PROGRESS_INTERVAL_S = 0.25
# the schedule starts a moment after it is computed, so the first send is not already late
START_DELAY_NS = 20_000_000
# --max-error-rate is judged only once this many measured requests have finished
MIN_REQUESTS_FOR_RATE = 20
# the server is taken for gone after this many connection failures in a row (at least)
GONE_AFTER = 16


@dataclass(frozen=True)
class Share:
    """This process's part of a run split over worker processes or Ray actors (scale/).

    Its config already holds its own concurrency, request and warm-up counts; the share
    says which of the run's request indices are its, and the times all workers keep.
    """

    warmup_indices: tuple[int, ...] = ()
    indices: tuple[int, ...] | None = None  # None (a --duration run): first, first + stride, ...
    first: int = 0
    stride: int = 1
    times_ns: tuple[int, ...] | None = None  # open loop: absolute send times, warm-up first
    start_ns: int | None = None  # every worker starts at this instant
    deadline_ns: int | None = None  # open loop --duration: the shared end
    # closed-loop --stages: this worker's part of the run's plan, (offset s, streams, stage) as concurrency_plan's
    plan: tuple[tuple[float, int, int], ...] | None = None

    def index(self, k: int, warmup: bool) -> int:
        if warmup:
            return self.warmup_indices[k]
        if self.indices is not None:
            return self.indices[k]
        return self.first + k * self.stride

    def shifted(self, delta: int) -> "Share":
        """The same share `delta` ns later (or on another clock)."""
        return dataclasses.replace(
            self, start_ns=None if self.start_ns is None else self.start_ns + delta,
            deadline_ns=None if self.deadline_ns is None else self.deadline_ns + delta,
            times_ns=None if self.times_ns is None else tuple(t + delta for t in self.times_ns))


@dataclass
class RunState:
    """What the run has done so far; shared with the progress display and the final report."""

    records: Ledger = field(default_factory=lambda: Ledger.spilling(SpillFile()))
    t0: int = field(default_factory=perf_counter_ns)
    measure_t0: int | None = None
    done: int = 0
    failed: int = 0
    stopping: bool = False
    stop_reason: str | None = None
    signal: int | None = None
    lags: LoopLagSampler = field(default_factory=LoopLagSampler)
    cpu: CpuMeter = field(default_factory=CpuMeter)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    preconnected: int | None = None  # connections opened before the first send; None: not tried (--no-preconnect)
    internal_error: BaseException | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)  # per-worker health, with --workers
    nodes: list[dict[str, Any]] = field(default_factory=list)  # per-machine summary, with --ray
    backend: dict[str, Any] | None = None
    live: LiveStats | None = None  # told of each request as it starts and ends (the live view, --serve-metrics)
    started: int = 0  # requests this process started (those not yet in `records` are in flight)
    io_paths: dict[str, Any] | None = None  # how the client wrote requests and read answers (core.client.io_paths)

    def received(self, records: list[RequestRecord]) -> None:
        """Finished requests handed on by worker processes or Ray actors during the run."""
        self.records.extend(records)
        if self.live is not None:
            self.live.add_all(records)

    @property
    def partial(self) -> bool:
        return self.stop_reason is not None

    def stop(self, reason: str) -> None:
        """Start no new request; the first reason given is the one reported."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The event loop a run (or a worker's share of one) runs on: uvloop where installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Runner:
    def __init__(self, cfg: RunConfig, client: Client, workload: Workload, state: RunState,
                 progress: Callable[[RunState], None] | None = None, share: Share | None = None) -> None:
        self.cfg = cfg
        self.share = share
        self.client = client
        self.workload = workload
        self.state = state
        self.progress = progress
        self._tasks: set[asyncio.Task[None]] = set()
        self._next = 0
        self._connect_streak = 0
        self._measured_done = 0
        self._measured_failed = 0
        self._prepared = False
        self._alarm: Alarm | None = None  # the waits for due instants, while run() runs
        self._wanted = self._streams = self._stage = 0  # --stages, closed loop

    # -- stopping: --max-errors and the like here, signals through core/signals.py -------------------
    def stop(self, reason: str) -> None:
        """Start no new request; in-flight ones may finish."""
        self.state.stop(reason)

    def cancel_all(self) -> None:
        """Cancel every request in flight now (they are recorded as cancelled)."""
        for t in list(self._tasks):
            t.cancel()

    # -- the load ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Before the clock starts (once): keep-alive servers get the run's connections opened. A worker
        does this before it says it is ready, so that the shared start is not spent on it."""
        if self._prepared:
            return
        self._prepared = True
        self.state.preconnected = await self.client.preconnect(self.cfg.load.concurrency) \
            if self.cfg.load.preconnect else None

    async def run(self) -> RunState:
        st = self.state
        # Everything imported and set up so far lives for the whole run: move it out of the
        # collector's sight, or a full collection of it stalls the loop for ~10 ms mid-run.
        gc.collect()
        gc.freeze()
        alarm = self._alarm = Alarm.open()
        ticker = asyncio.get_running_loop().create_task(self._tick()) if self.progress else None
        try:
            await self.prepare()
            cfg = self.cfg
            if self.share and self.share.start_ns:  # every worker starts on this instant
                await self._until(self.share.start_ns)
            # the client's instruments cover the load only: not pre-flight, preparation or a start lead
            st.cpu.start()
            st.lags.start(alarm)
            if cfg.load.rate:
                await self._open_loop()
            elif cfg.load.stages:
                await self._staged()
            elif cfg.load.warmup and not st.stopping:
                await self._phase(cfg.load.warmup, None, warmup=True)
            if not st.stopping and not cfg.load.rate and not cfg.load.stages:
                st.measure_t0 = perf_counter_ns()
                deadline = st.measure_t0 + int(cfg.load.duration_s * 1e9) if cfg.load.duration_s else None
                limit = cfg.load.requests if cfg.load.requests is not None else None
                await self._phase(limit, deadline, warmup=False)
        finally:
            st.lags.stop()
            st.io_paths = self.client.paths()  # at the end: a client may have left its direct path
            if ticker:
                ticker.cancel()
            alarm.close()
            st.cpu_s, st.wall_s = st.cpu.read()
            if self.progress:
                self.progress(st)
        return st

    async def _until(self, when: int) -> None:
        """Wait for `when` (perf_counter_ns) to the microsecond (core.clock), during run()."""
        assert self._alarm is not None, "waits belong to run()"
        await self._alarm.until(when)

    def _counted(self) -> int:
        """How many units of load (-n counts these) have been started: requests here."""
        return self._next

    async def _phase(self, limit: int | None, deadline: int | None, warmup: bool) -> None:
        end = self._counted() + limit if limit is not None else None
        n_workers = self.cfg.load.concurrency if end is None else min(self.cfg.load.concurrency, limit or 0)
        loop = asyncio.get_running_loop()
        start = perf_counter_ns()
        tasks = [loop.create_task(self._worker(end, deadline, warmup, start)) for _ in range(n_workers)]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)

    async def _worker(self, end: int | None, deadline: int | None, warmup: bool, free: int) -> None:
        """One closed-loop stream. Each request is meant to go when the stream's slot is `free`: at the
        phase's start, then when its previous request ended (METRICS.md `t_sched`)."""
        st = self.state
        now = perf_counter_ns
        share = self.share
        while not st.stopping:
            i = self._next
            if end is not None and i >= end:
                return
            if deadline is not None and now() >= deadline:
                return
            self._next = i + 1
            if share is not None:  # this worker's part of the run's request indices
                i = share.index(i if warmup else i - self.cfg.load.warmup, warmup)
            rec = RequestRecord(index=i, warmup=warmup, t_sched=free)
            await self._request(rec, defer=True)
            free = rec.t_end or rec.t_done or now()

    async def _staged(self) -> None:
        """Closed loop through --stages: streams are added when a stage or a ramp asks for more, and
        when it asks for fewer, the streams over the count end as their current request does."""
        st = self.state
        loop = asyncio.get_running_loop()
        share = self.share
        # a worker's stages start on the shared instant, so that every worker's line up
        t0 = share.start_ns if share and share.start_ns else perf_counter_ns() + START_DELAY_NS
        st.measure_t0 = t0
        end = t0 + round(stage_starts(self.cfg.load.stages)[-1] * 1e9)
        self._wanted, self._streams, self._stage = 0, 0, 0
        tasks: list[asyncio.Task[None]] = []
        plan = share.plan if share and share.plan is not None else concurrency_plan(self.cfg.load.stages)
        try:
            for off, wanted, stage in plan:
                when = t0 + round(off * 1e9)
                await self._until(when)
                if st.stopping:
                    break
                self._wanted, self._stage = wanted, stage
                while self._streams < wanted:
                    self._streams += 1
                    task = loop.create_task(self._stream(when, end))
                    tasks.append(task)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, free: int, end: int) -> None:
        """One stream of a staged run; like `_worker`, each request is meant to go when its slot is free."""
        st = self.state
        now = perf_counter_ns
        try:
            while not st.stopping and now() < end:
                if self._streams > self._wanted:  # a step down: this stream is one too many
                    break
                i = self._next
                self._next = i + 1
                rec = RequestRecord(index=self.share.index(i, False) if self.share else i, t_sched=free,
                                    stage=self._stage)
                await self._request(rec, defer=True)
                free = rec.t_end or rec.t_done or now()
        finally:
            self._streams -= 1

    async def _request(self, rec: RequestRecord, body: bytes | None = None, defer: bool = False) -> None:
        """Send one request (the workload's body for its index, unless given) and account for it, whatever
        happens.

        `defer` (a closed-loop stream, which sends its next request as soon as this returns): a request that
        succeeded is accounted for (filed in the ledger and the --records file, told to the live view) once
        the callbacks already due have run. When a wave of requests ends together, every stream of the wave
        then sends its next request first: the bookkeeping, ~50-100 µs a request, would otherwise make the
        last of a wave of 64 a few ms late. A failed one is accounted for at once: it may stop the run."""
        st = self.state
        st.started += 1
        if st.live is not None:
            st.live.started(rec)
        try:
            await self.client.send(rec, self.workload.body(rec.index) if body is None else body)
            rec.t_done = perf_counter_ns()
        except BaseException as e:  # cancelled, or an internal error: filed, and out of the live view's in-flight
            if isinstance(e, asyncio.CancelledError):
                if rec.error_class is None:
                    rec.error_class = ErrorClass.CANCELLED
                    rec.error = st.stop_reason or "cancelled"
                rec.t_done = perf_counter_ns()
            self._account(rec, counted=False)
            raise
        if defer and not rec.failed:
            asyncio.get_running_loop().call_soon(self._account, rec)
        else:
            self._account(rec)

    def _account(self, rec: RequestRecord, counted: bool = True) -> None:
        """File a finished request; `counted`: it ended (not cancelled or cut short by an internal error),
        so it counts as done and for the stop conditions."""
        st = self.state
        st.records.append(rec)
        if st.live is not None:
            st.live.finished(rec)
        if not counted:
            return
        st.done += 1
        if rec.failed:
            st.failed += 1
        if not rec.warmup:
            self._limits(rec)

    async def _open_loop(self) -> None:
        """Send on an absolute schedule (--rate), optionally capped by --concurrency.

        A request whose time has come while the cap is reached waits, and its lateness
        shows as send lag and in the schedule-relative latencies: nothing is hidden. The part
        spent waiting for the cap (its own wait, or an earlier one that held the loop) is
        `cap_wait_ns`: the user's load shaping, not the client's slowness.
        """
        cfg = self.cfg
        st = self.state
        share = self.share
        if share is not None and share.times_ns is not None:
            plan = list(zip((*share.warmup_indices, *(share.indices or ())), share.times_ns, strict=True))
            n_warmup = len(share.warmup_indices)
            deadline = share.deadline_ns
            st.measure_t0 = share.start_ns
        else:
            t0 = perf_counter_ns() + START_DELAY_NS
            st.measure_t0 = t0
            times, deadline = open_plan(cfg, t0, self.workload.schedule)
            plan = list(enumerate(times))
            n_warmup = cfg.load.warmup
        starts = [st.measure_t0 + round(x * 1e9) for x in stage_starts(cfg.load.stages)] if cfg.load.stages else None
        cap = asyncio.Semaphore(cfg.load.concurrency) if cfg.load.concurrency else None
        pending: set[asyncio.Task[None]] = set()
        held = 0  # when the loop last got the cap after waiting: lateness up to then is the cap's

        async def one(rec: RequestRecord) -> None:
            try:
                await self._request(rec)
            finally:
                if cap:
                    cap.release()

        try:
            for k, (i, when) in enumerate(plan):
                if st.stopping or (deadline is not None and when >= deadline):
                    break
                self.workload.body(i)  # made (and kept) while there is time, not when it is due
                await self._until(when)
                if cap:
                    waited = cap.locked()
                    await cap.acquire()
                    if waited:
                        held = perf_counter_ns()
                if st.stopping:
                    if cap:
                        cap.release()
                    break
                rec = RequestRecord(index=i, warmup=k < n_warmup, t_sched=when, cap_wait_ns=max(0, held - when),
                                    stage=stage_at(starts, when) if starts else None)
                self._spawn(pending, one(rec))
            await self._settle(pending, cancelled=False)
        except asyncio.CancelledError:
            await self._settle(pending, cancelled=True)

    def _spawn(self, pending: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, Any]) -> None:
        """An open loop's request (or conversation) as a task: in `pending` while it runs, and cancelled with
        the rest by cancel_all(). Its first step runs now (core.eager.spawn): as a task of its own it would
        begin only after every callback already due, and the request it sends would be late by all of them."""
        task = eager.spawn(coro, asyncio.get_running_loop())
        pending.add(task)
        self._tasks.add(task)
        task.add_done_callback(pending.discard)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _settle(pending: set[asyncio.Task[Any]], cancelled: bool) -> None:
        """Wait for an open loop's tasks to end (cancelling them first when the loop itself was)."""
        if cancelled:
            for t in pending:
                t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _limits(self, rec: RequestRecord) -> None:
        """Stop early when errors pass the user's limits, or the server is clearly gone."""
        cfg = self.cfg
        self._measured_done += 1
        if not rec.failed:
            self._connect_streak = 0
            return
        self._measured_failed += 1
        self._connect_streak = self._connect_streak + 1 if rec.error_class == ErrorClass.CONNECT else 0
        if self._connect_streak >= max(GONE_AFTER, 2 * cfg.load.concurrency):
            self.stop(f"server unreachable: {self._connect_streak} connection failures in a row ({rec.error})")
        elif cfg.limits.max_errors is not None and self._measured_failed >= cfg.limits.max_errors:
            self.stop(f"--max-errors {cfg.limits.max_errors} reached")
        elif (cfg.limits.max_error_rate is not None and self._measured_done >= MIN_REQUESTS_FOR_RATE
              and self._measured_failed / self._measured_done > cfg.limits.max_error_rate):
            self.stop(f"error rate {self._measured_failed / self._measured_done:.1%} over --max-error-rate "
                      f"{cfg.limits.max_error_rate:.1%} after {self._measured_done} requests")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            self.progress(self.state)  # type: ignore[misc]
