"""How right are tpsload's numbers on this machine? Run it against the lean server, whose
send times are exact and recorded, and compare (used by `tpsload calibrate` and `make bench`).

Errors are against the server's own clock readings on the same machine-wide monotonic
clock: TTFT error = our first-token stamp minus the server's write of that token, i.e.
delivery plus everything the client did before looking at the bytes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tpsload.mock import MockProcess


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    requests: int
    ttft_ms: float = 100.0
    itl_ms: float = 10.0
    tokens: int = 256
    workers: int = 1


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(sc: Scenario, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One scenario: a fresh lean server, one `tpsload run` subprocess, the comparison."""
    with tempfile.TemporaryDirectory() as d, \
            MockProcess(module="tpsload.mock.lean", ttft_ms=sc.ttft_ms, itl_ms=sc.itl_ms,
                        tokens=sc.tokens) as server:
        prompts = os.path.join(d, "prompts.txt")
        with open(prompts, "w") as fh:
            fh.writelines(f"req{i}\n" for i in range(sc.requests))
        out, rec = os.path.join(d, "r.json"), os.path.join(d, "r.jsonl")
        argv = [sys.executable, "-m", "tpsload", "run", "--base-url", server.base_url, "-c", str(sc.concurrency),
                "-n", str(sc.requests), "--max-tokens", str(sc.tokens), "--prompt-file", prompts,
                "--json", out, "--records", rec, "-q", "--model", "lean", *extra]
        if sc.workers > 1:
            argv += ["--workers", str(sc.workers)]
        cpu0, t0 = _child_cpu(), time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
        if p.returncode != 0:
            raise RuntimeError(f"tpsload failed ({p.returncode}): {p.stderr[-500:]}")
        with urllib.request.urlopen(server.base_url.rsplit("/v1", 1)[0] + "/log", timeout=10) as r:
            log = json.load(r)
        with open(out) as fh:
            result = json.load(fh)
        with open(rec) as fh:
            records = [json.loads(line) for line in fh]
    return compare(sc, result, records, log, wall, cpu)


def compare(sc: Scenario, result: dict[str, Any], records: list[dict[str, Any]], log: dict[str, Any],
            wall_s: float, process_cpu_s: float) -> dict[str, Any]:
    truth = {e[0]: e for e in log["requests"]}
    t0 = result["clock"]["t0_ns"]
    ok = [r for r in records if r["ok"]]
    ttft_err, itl_client, itl_server, sends, ends = [], [], [], [], []
    for r in ok:
        tag = f"req{r['index']}"
        _, _, first_ns, last_ns, n = truth[tag]
        ttft_err.append(r["t_first_ms"] - (first_ns - t0) / 1e6)
        if r["output_tokens"] > 1:
            itl_client.append((r["t_last_ms"] - r["t_first_ms"]) / (r["output_tokens"] - 1))
            itl_server.append((last_ns - first_ns) / 1e6 / (n - 1))
        sends.append(t0 + r["t_send_ms"] * 1e6)
        ends.append(last_ns)
    s = result["summary"]
    tokens = sum(r["output_tokens"] for r in ok)
    true_tput = tokens / ((max(ends) - min(sends)) / 1e9)
    per_request_s = (sc.ttft_ms + (sc.tokens - 1) * sc.itl_ms) / 1e3
    waves = -(-sc.requests // sc.concurrency)
    ideal_span = waves * per_request_s
    span = (max(ends) - min(sends)) / 1e9
    e = np.asarray(ttft_err)
    h = result["client_health"]
    return {
        "scenario": asdict(sc),
        "requests_ok": len(ok),
        "ttft_error_ms": {"mean": float(e.mean()), "p50": float(np.percentile(e, 50)),
                          "p99": float(np.percentile(e, 99)), "max": float(e.max())},
        "itl_error": (float(np.mean(itl_client)) / float(np.mean(itl_server)) - 1) if itl_server else None,
        "throughput_error": s["output_throughput"] / true_tput - 1,
        "server_kept_rate": ideal_span / span if sc.itl_ms > 0 else None,
        "output_throughput": s["output_throughput"],
        "client_cpu_s": h["cpu_s"],
        "client_cpu_ms_per_1k_tokens": h["cpu_s"] * 1e6 / tokens,  # CPU seconds per token x 1e6
        "process_cpu_s": process_cpu_s,
        "server_cpu_share": log["cpu_s"] / wall_s if wall_s else None,
        "client_bound": h["client_bound"],
        "client_reasons": h["reasons"],
        "loop_lag_p99_ms": (h["loop_lag_ms"] or {}).get("p99"),
        "wall_s": wall_s,
    }


def startup_cpu_s() -> float:
    """CPU seconds for the CLI to start and exit (imports included)."""
    cpu0 = _child_cpu()
    subprocess.run([sys.executable, "-m", "tpsload", "run", "--help"], capture_output=True, check=True)
    return _child_cpu() - cpu0
