"""Where the load runs: this process, worker processes or Ray actors, behind one call.

Every backend takes the run's config and workload, fills `state` with the records of
the whole run (each worker runs its share with the same runner, scale/local.py), and
obeys the same stop and cancel (core/signals.py).
"""

from __future__ import annotations

from typing import Callable

from tpsload.config import RunConfig
from tpsload.core.runner import RunState
from tpsload.core.signals import Relay
from tpsload.scale.local import run_local
from tpsload.scale.processes import run_processes, workers_for
from tpsload.scale.ray_actors import run_ray
from tpsload.workload.spec import Workload


async def run_load(cfg: RunConfig, workload: Workload, llama_cpp: bool, state: RunState,
                   progress: Callable[[RunState], None] | None, relay: Relay) -> None:
    """Run the load that `cfg` asks for, here or spread out, into `state`."""
    n = workers_for(cfg)
    if cfg.scale.ray_address:
        await run_ray(cfg, workload, llama_cpp, n, state, progress, relay)
    elif n > 1:
        await run_processes(cfg, workload, llama_cpp, n, state, progress, relay)
    else:
        await run_local(cfg, workload, llama_cpp, state, progress, relay)
