"""--workers N: one run split over N processes, each with its own event loop and connections.

The parent splits the run exactly (concurrency, request counts in proportion, or the
open-loop schedule round-robin), starts every worker on one shared instant of the
machine-wide monotonic clock, set once every worker has said it is ready (however long
their interpreters took to start), and merges the raw per-request records into one run:
the result has the same form as a single-process run, plus each worker's client health.
Records come over each worker's pipe in batches as they finish (RECORDS), read by the parent's
event loop as they arrive and folded into its ledger: neither side holds the run's records.

Workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C reaches the whole process group,
and a worker that took it as its own would count the parent's word as a second Ctrl-C
and cancel at once, ignoring --grace. The parent alone listens (core/signals.py) and
tells each worker over a pipe; a worker whose parent is gone cancels and ends.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from time import perf_counter_ns
from typing import Any, Callable, Sequence

from tpsload.analysis.health import verdict
from tpsload.config import RunConfig
from tpsload.core.runner import RunState, Share, run_async
from tpsload.core.scheduler import concurrency_plan, open_plan
from tpsload.core.signals import Relay, children_ignore_signals, ignore_signals
from tpsload.scale.local import run_share
from tpsload.workload.spec import Workload

# from the moment every worker is ready to the shared start: time for the word to reach them all
START_LEAD_NS = 200_000_000
# a worker per this many streams when --workers auto (and never more than the cores)
STREAMS_PER_WORKER = 128
# a worker's first word to the parent: it is in its event loop, waiting for the start
READY = ("ready",)
# the parent's words to a worker: start (at this instant), stop (start no new request; in-flight
# ones may finish), cancel (now)
START, STOP, CANCEL = "start", "stop", "cancel"
# a worker's words to the parent during the run: a batch of finished records; at the end, its health (a dict)
RECORDS = "records"


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_for(cfg: RunConfig) -> int:
    if cfg.load.single:
        return 1
    n = cfg.scale.workers or max(1, min(usable_cpus(), math.ceil((cfg.load.concurrency or 1) / STREAMS_PER_WORKER)))
    if not cfg.load.rate:
        n = min(n, cfg.load.concurrency)  # each worker needs at least one stream
    return max(1, n)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights`, exactly (largest remainders)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def split(cfg: RunConfig, n: int, start_ns: int, schedule: Sequence[float] | None = None
          ) -> list[tuple[RunConfig, Share]]:
    """Each worker's config and share of the run; `schedule`: a trace replay's send times (workload.schedule)."""
    parts: list[tuple[RunConfig, Share]] = []
    if cfg.load.rate:
        times, deadline = open_plan(cfg, start_ns, schedule)  # one plan, dealt out round-robin
        total = len(times)
        caps = apportion(cfg.load.concurrency, [1] * n) if cfg.load.concurrency else [0] * n
        for w in range(n):
            mine = range(w, total, n)  # round-robin: each worker keeps the schedule's shape
            wu = tuple(i for i in mine if i < cfg.load.warmup)
            meas = tuple(i for i in mine if i >= cfg.load.warmup)
            share = Share(warmup_indices=wu, indices=meas, times_ns=tuple(times[i] for i in mine),
                          start_ns=start_ns, deadline_ns=deadline)
            parts.append((_sub(cfg, max(caps[w], 0), len(meas) if cfg.load.requests is not None else None, len(wu)),
                          share))
        return parts
    if cfg.load.stages:  # closed loop: every step of the plan's streams split over the workers, as evenly as can be
        plan = concurrency_plan(cfg.load.stages)
        counts = [apportion(wanted, [1] * n) for _, wanted, _ in plan]
        for w in range(n):
            mine = tuple((off, c[w], stage) for (off, _, stage), c in zip(plan, counts, strict=True))
            # indices interleaved as a --duration run's: a stage's requests are not counted in advance
            parts.append((_sub(cfg, max(c for _, c, _ in mine), None, 0),
                          Share(first=w, stride=n, start_ns=start_ns, plan=mine)))
        return parts
    streams = apportion(cfg.load.concurrency, [1] * n)
    warm = apportion(cfg.load.warmup, streams)
    reqs = apportion(cfg.load.requests, streams) if cfg.load.requests is not None else [0] * n
    wu_at, at = 0, cfg.load.warmup
    for w in range(n):
        wu = tuple(range(wu_at, wu_at + warm[w]))
        wu_at += warm[w]
        if cfg.load.requests is not None:
            share = Share(warmup_indices=wu, indices=tuple(range(at, at + reqs[w])), start_ns=start_ns)
            at += reqs[w]
        else:  # --duration: unbounded, interleaved so indices never collide
            share = Share(warmup_indices=wu, first=cfg.load.warmup + w, stride=n, start_ns=start_ns)
        parts.append((_sub(cfg, streams[w], reqs[w] if cfg.load.requests is not None else None, warm[w]), share))
    return parts


def _sub(cfg: RunConfig, concurrency: int, requests: int | None, warmup: int) -> RunConfig:
    return cfg.replace(concurrency=concurrency, requests=requests, warmup=warmup, workers=1)


class _Workers:
    """The coordinator's stop and cancel, told to every worker (which ignore signals of their own)."""

    def __init__(self, state: RunState, controls: list[Connection]) -> None:
        self.state = state
        self.controls = controls

    def stop(self, reason: str) -> None:
        self.state.stop(reason)
        self._tell((STOP, reason))

    def cancel_all(self) -> None:
        self._tell((CANCEL,))

    def _tell(self, message: tuple[str, ...]) -> None:
        for c in self.controls:
            _send(c, message)


def _send(control: Connection, message: tuple[Any, ...]) -> None:
    try:
        control.send(message)
    except OSError:  # that worker has finished (or died) already
        pass


def _listen(control: Connection, relay: Relay, start: asyncio.Future[int | None]) -> Callable[[], None]:
    """The parent's messages -> the shared start and this worker's relay. Returns the function that
    stops listening."""
    loop = asyncio.get_running_loop()
    fd = control.fileno()

    def on_message() -> None:
        try:
            message = control.recv()
        except (EOFError, OSError):  # the parent is gone: nobody is left to wait for
            loop.remove_reader(fd)
            relay.stop("the parent process is gone")
            relay.cancel_all()
            if not start.done():
                start.set_result(None)
            return
        if message[0] == START:
            if not start.done():
                start.set_result(message[1])
        elif message[0] == STOP:
            relay.stop(message[1])
        elif message[0] == CANCEL:
            relay.cancel_all()

    loop.add_reader(fd, on_message)
    return lambda: loop.remove_reader(fd)


async def _worker(conn: Connection, control: Connection, cfg: RunConfig, share: Share, workload: Workload,
                  llama_cpp: bool, progress: Callable[[RunState], None]) -> dict[str, Any]:
    def send(batch: list[Any]) -> None:
        try:
            conn.send((RECORDS, batch))
        except OSError:  # the parent is gone: its relay cancels the run
            pass

    relay = Relay()
    start: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    unlisten = _listen(control, relay, start)
    async def ready() -> Share:
        # said once this worker's connections are open (Runner.prepare): the parent's start lead is not
        # spent opening them, which at hundreds of streams a worker takes longer than the lead
        conn.send(READY)
        start_ns = await start
        # the share was planned from instant 0: now it is on the shared start
        return share.shifted(start_ns if start_ns is not None else perf_counter_ns())

    try:
        return await run_share(cfg, share, workload, llama_cpp, relay, send, progress, ready)
    finally:
        unlisten()


def _worker_main(conn: Connection, control: Connection, cfg: RunConfig, share: Share, workload: Workload,
                 llama_cpp: bool, done: Any, slot: int) -> None:
    """A worker process: the same runner as a single-process run, on its share."""
    ignore_signals()  # a terminal's Ctrl-C reaches the whole group: only the parent's word counts

    def progress(st: RunState) -> None:
        done[slot] = st.done

    result = run_async(_worker(conn, control, cfg, share, workload, llama_cpp, progress))
    try:
        conn.send(result)
    except OSError:  # the parent is gone
        pass
    conn.close()


async def run_processes(cfg: RunConfig, workload: Workload, llama_cpp: bool, n: int, state: RunState,
                        progress: Callable[[RunState], None] | None, relay: Relay) -> None:
    """Run the load over n processes and merge their records into `state`."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: forking a running event loop is unsafe
    done = ctx.Array("l", n, lock=False)
    procs: list[tuple[Any, Connection, Connection]] = []
    with children_ignore_signals():
        # planned from 0, shifted onto the shared start
        for w, (sub, share) in enumerate(split(cfg, n, 0, workload.schedule)):
            results, child = ctx.Pipe(duplex=False)
            listen, control = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_main, args=(child, listen, sub, share, workload, llama_cpp, done, w),
                            daemon=True)
            p.start()
            child.close()
            listen.close()
            procs.append((p, results, control))
    loop = asyncio.get_running_loop()
    relay.attach(_Workers(state, [c for _, _, c in procs]))

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.25)
            state.done = sum(done)
            if progress:
                progress(state)

    ticker = loop.create_task(tick())
    received: list[dict[str, Any] | None] = []
    try:
        ready = [await loop.run_in_executor(None, _ready, conn) for _, conn, _ in procs]
        start_ns = perf_counter_ns() + START_LEAD_NS
        if cfg.load.rate or cfg.load.stages:  # a schedule's (or the stages') start, as a one-process run's
            state.measure_t0 = start_ns
        for (_, _, control), ok in zip(procs, ready, strict=True):
            if ok:
                _send(control, (START, start_ns))
        finals = [_drain(conn, state) if ok else None for (_, conn, _), ok in zip(procs, ready, strict=True)]
        for (p, _, _), final in zip(procs, finals, strict=True):
            try:
                if final is None:
                    raise EOFError
                received.append(await final)
            except EOFError:
                await loop.run_in_executor(None, p.join, 5)
                received.append(None)
                missing = (f"worker pid {p.pid} died (exit code {p.exitcode}); its requests in flight and those it "
                           "finished in its last moments are missing")
                state.stop_reason = f"{state.stop_reason}; {missing}" if state.stop_reason else missing
    finally:
        relay.detach()
        ticker.cancel()
        for p, conn, control in procs:
            if not conn.closed:
                loop.remove_reader(conn.fileno())
            control.close()
            p.join(5)
    merge(state, [r for r in received if r is not None])


def _ready(conn: Connection) -> bool:
    try:
        return conn.recv() == READY
    except EOFError:  # it died starting up
        return False


def _drain(conn: Connection, state: RunState) -> asyncio.Future[dict[str, Any]]:
    """Read a worker's pipe on this loop as messages arrive: record batches into the run's ledger, then
    its health (the future's result; EOFError if it died first)."""
    loop = asyncio.get_running_loop()
    final: asyncio.Future[dict[str, Any]] = loop.create_future()
    fd = conn.fileno()

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        if isinstance(message, tuple) and message[0] == RECORDS:
            state.received(message[1])
            return
        loop.remove_reader(fd)
        conn.close()
        if not final.done():
            if isinstance(message, dict):
                final.set_result(message)
            else:
                final.set_exception(EOFError())

    loop.add_reader(fd, on_message)
    return final


def merge(state: RunState, results: list[dict[str, Any]]) -> None:
    """Every worker's health into the run's, per worker and overall (their records are in already)."""
    for r in results:
        state.lags.lags_ms.extend(r["lags_ms"])
        state.workers.append({"pid": r["pid"], "host": r.get("host"),
                              **verdict(r["lags_ms"], r["send_lags_ms"], r["cpu_s"], r["wall_s"], r["cap_waits_ms"])})
        if r["stop_reason"] and not state.stop_reason:
            state.stop_reason = r["stop_reason"]
        if r["signal"] is not None and state.signal is None:
            state.signal = r["signal"]
    state.cpu_s = sum(r["cpu_s"] for r in results)
    state.wall_s = max((r["wall_s"] for r in results), default=0.0)
    tried = [r["preconnected"] for r in results if r.get("preconnected") is not None]
    state.preconnected = sum(tried) if tried else None
