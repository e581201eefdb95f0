"""--ray: the workers of --workers as Ray actors, placed on the nodes of a Ray cluster.

Each actor runs the same worker code as a local process (workers.run_share). What
changes across machines is the clock: monotonic clocks of different nodes share no
origin, so the coordinator measures each node's wall-clock offset (a round trip, the
midpoint), gives every actor the shared start and schedule in its own monotonic time,
and maps records back onto its own timeline. Ray is imported only here, only when asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import time
from time import perf_counter_ns
from typing import Any, Callable

from tpsload.config import RunConfig
from tpsload.core.runner import RunState, Share
from tpsload.errors import TpsloadError
from tpsload.records import TIMESTAMPS
from tpsload.scale.processes import START_LEAD_NS, Control, merge, run_share, split
from tpsload.workload.spec import Workload

NAMESPACE = "tpsload"


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


def shift(share: Share, delta: int) -> Share:
    """The share in another clock's monotonic time."""
    return dataclasses.replace(
        share, start_ns=None if share.start_ns is None else share.start_ns + delta,
        deadline_ns=None if share.deadline_ns is None else share.deadline_ns + delta,
        times_ns=None if share.times_ns is None else tuple(t + delta for t in share.times_ns))


class _Worker:
    """The actor (decorated with ray.remote at run time, so this module imports without Ray)."""

    def __init__(self) -> None:
        self.control = Control()

    async def clock(self) -> tuple[int, int, str]:
        return time.time_ns(), time.time_ns() - perf_counter_ns(), socket.gethostname()

    async def run(self, cfg: RunConfig, share: Share, workload: Workload, llama_cpp: bool, delta: int
                  ) -> dict[str, Any]:
        return await run_share(cfg, shift(share, delta), workload, llama_cpp, control=self.control)

    async def stop(self, reason: str, grace_s: float) -> None:
        self.control.stop(reason, grace_s)


async def run_ray(cfg: RunConfig, workload: Workload, llama_cpp: bool, n: int, state: RunState,
                  progress: Callable[[RunState], None] | None) -> None:
    ray = connect(cfg.scale.ray_address or "local", n)
    options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_concurrency": 4}
    if cfg.scale.ray_spread:
        options["scheduling_strategy"] = "SPREAD"  # distinct nodes where there are enough
    actor_cls = ray.remote(_Worker)
    run_id = f"{os.getpid()}-{time.time_ns()}"
    actors = [actor_cls.options(name=f"tpsload-{run_id}-worker-{w}", **options).remote() for w in range(n)]
    my_wmm, my_host = time.time_ns() - perf_counter_ns(), socket.gethostname()
    # each node's clock: the round-trip midpoint against ours
    offsets, hosts, deltas = [], [], []
    for a in actors:
        t0 = time.time_ns()
        their_wall, their_wmm, host = await a.clock.remote()
        t1 = time.time_ns()
        off = 0 if host == my_host else their_wall - (t0 + t1) // 2
        offsets.append(off)
        hosts.append(host)
        # our monotonic time -> theirs: the same instant on both clocks
        deltas.append(0 if host == my_host else off + my_wmm - their_wmm)
    loop = asyncio.get_running_loop()
    start = perf_counter_ns() + START_LEAD_NS
    refs = [a.run.remote(sub, share, workload, llama_cpp, deltas[w])
            for w, (a, (sub, share)) in enumerate(zip(actors, split(cfg, n, start), strict=True))]

    def forward(sig: int) -> None:
        if state.signal is None:
            state.signal = sig
            state.stop_reason = f"interrupted ({signal.Signals(sig).name})"
            for a in actors:
                a.stop.remote(state.stop_reason, cfg.load.grace_s)
        else:  # a second Ctrl-C: stop now
            for a in actors:
                a.stop.remote(state.stop_reason or "interrupted", 0.0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, forward, sig)
        except (NotImplementedError, RuntimeError):
            pass
    results = []
    try:
        for w, ref in enumerate(refs):
            try:
                r = await ref
            except Exception as e:  # RayActorError and friends: that part is missing, the rest stands
                why = str(e).strip().splitlines()[-1][:200] if str(e).strip() else e.__class__.__name__
                missing = (f"Ray worker {w} on {hosts[w]} was lost ({e.__class__.__name__}: {why}); "
                           "its requests are missing")
                state.stop_reason = f"{state.stop_reason}; {missing}" if state.stop_reason else missing
                continue
            if hosts[w] != my_host:  # their monotonic clock -> ours
                for rec in r["records"]:
                    _rebase(rec, -deltas[w])
                r["t0"] -= deltas[w]
            r["clock_offset_ms"] = offsets[w] / 1e6
            results.append(r)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        for a in actors:
            ray.kill(a)
    merge(state, results)
    nodes: dict[str, dict[str, Any]] = {}
    for w, r in zip(state.workers, results, strict=True):
        node = nodes.setdefault(r["host"], {"host": r["host"], "workers": 0, "clock_offset_ms": r["clock_offset_ms"],
                                            "client_bound": False, "reasons": []})
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
        from array import array

        rec.chunk_times = array("q", (t + delta for t in rec.chunk_times))
