"""How right are tpsload's numbers on this machine? Run it against the lean server, whose
arrival and send times are exact and recorded, and compare (`tpsload calibrate`, `make bench`).

All comparisons use the server's own clock readings on the same machine-wide monotonic
clock as the client's stamps. Per request:

- full TTFT error = our TTFT (first token - t_send) - the server's own TTFT (request
  arrival -> first-token write): everything the client adds, on both halves of the path;
- request half = server arrival - our t_send: connection set-up, writing the request,
  and any wait before the bytes left (a connection storm shows here);
- response half = our first-token stamp - the server's write of it: delivery plus
  everything the client did before looking at the bytes.

The two halves add up to the full error. A cold run (no warm-up) is the first wave as a
user meets it; a warm one starts measuring after one wave of `--warmup` requests.
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

from tpsload.app.target import split_cpus
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
    warmup: int = 0  # 0: cold, the first measured wave opens its connections
    apart: bool = False  # the server on a CPU of its own, the client on the others (app.target.split_cpus)

    def cpus(self) -> tuple[set[int], set[int]] | None:
        """(the server's CPUs, the client's) when `apart` and the machine has enough, else None."""
        return split_cpus(self.workers) if self.apart else None


# the prompt of request i: what the lean server names it by, so its log matches our records one to one
REQUEST_ID = "tpsload-calibrate-{}"
# a run whose full TTFT error passes this mean must say it is client-bound (issue 12)
HONEST_MEAN_MS = 2.0


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def lean_server(sc: Scenario) -> MockProcess:
    """The scenario's lean server, to use as a context manager."""
    cpus = sc.cpus()
    return MockProcess(module="tpsload.mock.lean", ttft_ms=sc.ttft_ms, itl_ms=sc.itl_ms, tokens=sc.tokens,
                       cpus=cpus[0] if cpus else None)


def run(sc: Scenario, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One scenario: a fresh lean server, one `tpsload run` subprocess, the comparison."""
    with lean_server(sc) as server:
        return measure(sc, server.base_url, server.base_url.rsplit("/v1", 1)[0] + "/log", extra)


def measure(sc: Scenario, base_url: str, log_url: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`tpsload run` at `base_url` (the lean server, or a path to it), compared with the server's log."""
    with tempfile.TemporaryDirectory() as d:
        prompts = os.path.join(d, "prompts.txt")
        with open(prompts, "w") as fh:
            fh.writelines(REQUEST_ID.format(i) + "\n" for i in range(sc.warmup + sc.requests))
        out, rec = os.path.join(d, "r.json"), os.path.join(d, "r.jsonl")
        argv = [sys.executable, "-m", "tpsload", "run", "--base-url", base_url, "-c", str(sc.concurrency),
                "-n", str(sc.requests), "--max-tokens", str(sc.tokens), "--prompt-file", prompts,
                "--json", out, "--records", rec, "-q", "--model", "lean", *extra]
        if sc.workers > 1:
            argv += ["--workers", str(sc.workers)]
        if sc.warmup:
            argv += ["--warmup", str(sc.warmup)]
        cpus = sc.cpus()
        pin = (lambda: os.sched_setaffinity(0, cpus[1])) if cpus else None
        cpu0, t0 = _child_cpu(), time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600, preexec_fn=pin)
        wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
        if p.returncode != 0:
            raise RuntimeError(f"tpsload failed ({p.returncode}): {p.stderr[-500:]}")
        with urllib.request.urlopen(log_url, timeout=10) as r:
            log = json.load(r)
        with open(out) as fh:
            result = json.load(fh)
        with open(rec) as fh:
            records = [json.loads(line) for line in fh]
    return compare(sc, result, records, log, wall, cpu)


def _dist(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    a = np.asarray(xs)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def match(sc: Scenario, records: list[dict[str, Any]], log: dict[str, Any]) -> list[tuple[dict[str, Any], list[Any]]]:
    """Each measured, successful record with the server's log entry for it; exactly one each, or an error."""
    truth: dict[str, list[Any]] = {}
    dup = set()
    for e in log["requests"]:
        if e[0] in truth:
            dup.add(e[0])
        truth[e[0]] = e
    total = sc.warmup + sc.requests
    pairs = []
    for r in records:
        if not r["ok"] or r["warmup"]:
            continue
        rid = REQUEST_ID.format(r["index"] % total)
        if rid in dup or rid not in truth:
            raise RuntimeError(f"request {r['index']} ({rid}) is {'logged twice' if rid in dup else 'not logged'} "
                               "by the lean server: records and server log cannot be matched")
        pairs.append((r, truth[rid]))
    return pairs


def compare(sc: Scenario, result: dict[str, Any], records: list[dict[str, Any]], log: dict[str, Any],
            wall_s: float, process_cpu_s: float) -> dict[str, Any]:
    t0 = result["clock"]["t0_ns"]
    pairs = match(sc, records, log)
    full, req_half, resp_half, server_ttft, sched_full, send_delay = [], [], [], [], [], []
    itl_client, itl_server, sends, ends = [], [], [], []
    for r, (_, arrival_ns, first_ns, last_ns, n) in pairs:
        server_ms = (first_ns - arrival_ns) / 1e6
        ours = r["t_first_ms"] - r["t_send_ms"]
        full.append(ours - server_ms)
        req_half.append((arrival_ns - t0) / 1e6 - r["t_send_ms"])
        resp_half.append(r["t_first_ms"] - (first_ns - t0) / 1e6)
        server_ttft.append(server_ms)
        if r.get("t_sched_ms") is not None:  # when the request was meant to go: the client's own delay shows
            send_delay.append(r["t_send_ms"] - r["t_sched_ms"])
            sched_full.append(r["t_first_ms"] - r["t_sched_ms"] - server_ms)
        if r["output_tokens"] > 1:
            itl_client.append((r["t_last_ms"] - r["t_first_ms"]) / (r["output_tokens"] - 1))
            itl_server.append((last_ns - first_ns) / 1e6 / (n - 1))
        sends.append(t0 + r["t_send_ms"] * 1e6)
        ends.append(last_ns)
    # the first wave: the sends a cold run makes all at once
    order = sorted(range(len(pairs)), key=lambda k: sends[k])[:sc.concurrency]
    s = result["summary"]
    tokens = sum(r["output_tokens"] for r, _ in pairs)
    span = (max(ends) - min(sends)) / 1e9
    per_request_s = (sc.ttft_ms + (sc.tokens - 1) * sc.itl_ms) / 1e3
    waves = -(-sc.requests // sc.concurrency)
    h = result["client_health"]
    full_d = _dist(full)
    assert full_d is not None
    sent = sum(1 for r in records if r["ok"])  # warm-up included: the CPU meter covers it too
    return {
        "scenario": asdict(sc),
        "requests_ok": len(pairs),
        "ttft_error_ms": full_d,  # the full path: our TTFT minus the server's own
        "request_half_ms": _dist(req_half),
        "response_half_ms": _dist(resp_half),
        "first_wave_ttft_error_ms": _dist([full[k] for k in order]),
        "server_ttft_ms": _dist(server_ttft),
        "send_delay_ms": _dist(send_delay),
        "ttft_sched_error_ms": _dist(sched_full),
        "itl_error": (float(np.mean(itl_client)) / float(np.mean(itl_server)) - 1) if itl_server else None,
        "throughput_error": s["output_throughput"] / (tokens / span) - 1,
        "server_kept_rate": waves * per_request_s / span if sc.itl_ms > 0 else None,
        "output_throughput": s["output_throughput"],
        "requests_per_s": len(pairs) / span,
        "client_cpu_s": h["cpu_s"],
        "client_cpu_ms_per_1k_tokens": h["cpu_s"] * 1e6 / tokens,  # CPU seconds per token x 1e6
        "client_cpu_us_per_request": h["cpu_s"] * 1e6 / sent,
        "process_cpu_s": process_cpu_s,
        "server_cpu_share": log["cpu_s"] / wall_s if wall_s else None,
        "client_bound": h["client_bound"],
        "client_reasons": h["reasons"],
        # tpsload's own verdict missed its error: the number users see was off and nothing said so
        "verdict_missed": full_d["mean"] > HONEST_MEAN_MS and not h["client_bound"],
        "loop_lag_p99_ms": (h["loop_lag_ms"] or {}).get("p99"),
        "wall_s": wall_s,
    }


def startup_cpu_s() -> float:
    """CPU seconds for the CLI to start and exit (imports included)."""
    cpu0 = _child_cpu()
    subprocess.run([sys.executable, "-m", "tpsload", "run", "--help"], capture_output=True, check=True)
    return _child_cpu() - cpu0
