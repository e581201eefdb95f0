"""--ray: the workers of --workers as Ray actors, placed on the nodes of a Ray cluster.

Each actor runs the same worker code as a local process (scale/local.run_share). What
changes across machines is the clock: monotonic clocks of different nodes share no
origin, so the coordinator measures each node's wall-clock offset (the midpoint of the
shortest of several round trips, after one that wakes the actor up), gives every actor
the shared start and schedule in its own monotonic time, and maps records back onto its
own timeline. Ray is imported only here, only when asked.

Actors hear of Ctrl-C from the coordinator (stop, then cancel), as worker processes do
from their parent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from array import array
from time import perf_counter_ns
from typing import Any, Awaitable, Callable

from tpsload.config import RunConfig
from tpsload.core.runner import RunState, Share
from tpsload.core.signals import Relay
from tpsload.errors import TpsloadError
from tpsload.records import TIMESTAMPS
from tpsload.scale.local import run_share
from tpsload.scale.processes import merge, split
from tpsload.workload.spec import Workload

NAMESPACE = "tpsload"
# round trips per node for its clock offset; the shortest one is kept
CLOCK_SAMPLES = 7
# from the run calls (each carrying its share and the workload) to the shared start
START_LEAD_NS = 1_500_000_000
# how often the coordinator takes the actors' finished records while the run goes
TAKE_EVERY_S = 0.5


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TpsloadError("--ray needs Ray: pip install 'tpsload[ray]'") from None
    return ray


def connect(address: str, workers: int) -> Any:
    """'local' starts a Ray instance for this run; 'auto' or an address joins a running cluster."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave this machine
    ray = _ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": "ERROR", "log_to_driver": False}
        if address == "local":
            kwargs.update(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False)
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as e:  # Ray's own errors: unreachable address, version mismatch
            raise TpsloadError(f"--ray {address}: cannot connect to Ray ({e.__class__.__name__}: {e})") from None
    return ray


async def clock_offset(read_remote: Callable[[], Awaitable[int]], samples: int = CLOCK_SAMPLES,
                       now: Callable[[], int] = time.time_ns) -> tuple[int, int]:
    """(their wall clock minus ours, the round trip it was read in), in ns.

    Their reading lies somewhere within the round trip, so the midpoint is off by at most
    half of it: the shortest of several round trips bounds the error best. The first call
    is not one of them: it may include the actor's start-up (seconds, and all on one side).
    """
    await read_remote()
    trips = []
    for _ in range(max(1, samples)):
        t0 = now()
        theirs = await read_remote()
        t1 = now()
        trips.append((t1 - t0, theirs - (t0 + t1) // 2))
    rtt, offset = min(trips)
    return offset, rtt


class _Worker:
    """The actor (decorated with ray.remote at run time, so this module imports without Ray)."""

    def __init__(self) -> None:
        self.relay = Relay()
        self.records: list[Any] = []  # finished, not yet taken by the coordinator (take())

    async def where(self) -> tuple[int, str]:
        return time.time_ns() - perf_counter_ns(), socket.gethostname()

    async def clock(self) -> int:
        return time.time_ns()

    async def run(self, cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool, delta: int
                  ) -> dict[str, Any]:
        return await run_share(cfg, share.shifted(delta), workload, llama_cpp, self.relay, self.records.extend)

    async def take(self) -> list[Any]:
        """The records finished since the last call (the coordinator polls while the run goes)."""
        out = list(self.records)
        self.records.clear()  # in place: the run hands its batches to this list's extend
        return out

    async def stop(self, reason: str) -> None:
        self.relay.stop(reason)

    async def cancel_all(self) -> None:
        self.relay.cancel_all()


class _Actors:
    """The coordinator's stop and cancel, told to every actor."""

    def __init__(self, state: RunState, actors: list[Any]) -> None:
        self.state = state
        self.actors = actors

    def stop(self, reason: str) -> None:
        self.state.stop(reason)
        for a in self.actors:
            a.stop.remote(reason)

    def cancel_all(self) -> None:
        for a in self.actors:
            a.cancel_all.remote()


async def run_ray(cfg: RunConfig, workload: Workload, llama_cpp: bool, n: int, state: RunState,
                  progress: Callable[[RunState], None] | None, relay: Relay) -> None:
    ray = connect(cfg.scale.ray_address or "local", n)
    options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_concurrency": 4}
    if cfg.scale.ray_spread:
        options["scheduling_strategy"] = "SPREAD"  # distinct nodes where there are enough
    actor_cls = ray.remote(_Worker)
    run_id = f"{os.getpid()}-{time.time_ns()}"
    actors = [actor_cls.options(name=f"tpsload-{run_id}-worker-{w}", **options).remote() for w in range(n)]
    relay.attach(_Actors(state, actors))
    my_host = socket.gethostname()
    results = []
    hosts: list[str] = []
    try:
        wheres = await asyncio.gather(*(a.where.remote() for a in actors))  # every actor is up
        my_wmm = time.time_ns() - perf_counter_ns()
        hosts = [host for _, host in wheres]
        clocks = [await clock_offset(lambda a=a: a.clock.remote()) for a in actors]  # one at a time: no queueing
        # our monotonic time -> each actor's: the same instant on both clocks (one clock on one host)
        deltas = [0 if host == my_host else off + my_wmm - their_wmm
                  for (their_wmm, host), (off, _) in zip(wheres, clocks, strict=True)]
        start = perf_counter_ns() + START_LEAD_NS
        if cfg.load.rate or cfg.load.stages:  # a schedule's (or the stages') start, as a one-process run's
            state.measure_t0 = start
        refs = [] if state.stopping else [
            a.run.remote(sub, share, workload, llama_cpp, deltas[w])
            for w, (a, (sub, share)) in enumerate(zip(actors, split(cfg, n, start, workload.schedule), strict=True))]

        def fold(w: int, recs: list[Any]) -> None:
            if hosts[w] != my_host:  # their monotonic clock -> ours
                for rec in recs:
                    _rebase(rec, -deltas[w])
            state.received(recs)

        async def take_all() -> None:
            for w, a in enumerate(actors[:len(refs)]):
                try:
                    fold(w, await a.take.remote())
                except Exception:  # a lost actor: its run's ref says so below
                    pass

        pending = [asyncio.ensure_future(ref) for ref in refs]  # type: ignore[call-overload]
        while pending and not all(f.done() for f in pending):
            await asyncio.wait(pending, timeout=TAKE_EVERY_S, return_when=asyncio.ALL_COMPLETED)
            await take_all()
        await take_all()  # the last batches, sent before each run returned
        for w, ref in enumerate(pending):
            try:
                r = await ref
            except Exception as e:  # RayActorError and friends: that part is missing, the rest stands
                why = str(e).strip().splitlines()[-1][:200] if str(e).strip() else e.__class__.__name__
                missing = (f"Ray worker {w} on {hosts[w]} was lost ({e.__class__.__name__}: {why}); "
                           "its requests are missing")
                state.stop_reason = f"{state.stop_reason}; {missing}" if state.stop_reason else missing
                continue
            if hosts[w] != my_host:  # their monotonic clock -> ours
                r["t0"] -= deltas[w]
            r["clock_offset_ms"], r["clock_rtt_ms"] = clocks[w][0] / 1e6, clocks[w][1] / 1e6
            results.append(r)
    finally:
        relay.detach()
        for a in actors:
            ray.kill(a)
    merge(state, results)
    nodes: dict[str, dict[str, Any]] = {}
    for w, r in zip(state.workers, results, strict=True):
        node = nodes.setdefault(r["host"], {"host": r["host"], "workers": 0, "clock_offset_ms": r["clock_offset_ms"],
                                            "clock_rtt_ms": r["clock_rtt_ms"], "client_bound": False, "reasons": []})
        node["workers"] += 1
        node["client_bound"] = node["client_bound"] or w["client_bound"]
        node["reasons"] += w["reasons"]
    state.nodes = list(nodes.values())
    state.backend = {"kind": "ray", "address": cfg.scale.ray_address, "run": run_id, "workers": n}


def _rebase(rec: Any, delta: int) -> None:
    for f in TIMESTAMPS:
        v = getattr(rec, f)
        if v is not None:
            setattr(rec, f, v + delta)
    if len(rec.chunk_times):
        rec.chunk_times = array("q", (t + delta for t in rec.chunk_times))
