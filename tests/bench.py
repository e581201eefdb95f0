"""`make bench`: the client's own cost and accuracy, against a server with exact send times.

Scenarios (TTFT 100 ms, ITL 10 ms, 256 tokens, streaming chat unless said):
concurrency 1, 16, 64 and 256 cold (no warm-up: the first wave is measured as a user
meets it) and warm (one wave of --warmup first); short (2 output tokens, c=64, TTFT and
ITL 0: the client's CPU per request); and ingest (ITL 0, 64 streams of 4096 tokens).
TTFT error is the full path: our TTFT minus the server's own (request arrival -> first
token written), split into the request half (our send -> arrival) and the response half
(first-token write -> our stamp); "from due" is the same error counted from when each request
was meant to go (closed loop: when its stream's slot freed), so it includes the client's lateness in
starting it. Each runs --repeat times on a fresh lean server; the
table shows medians. Benchmarks, not tests: these machines are noisy, so compare medians
and ratios, not single runs.

    python tests/bench.py [--repeat 3] [--json bench-results.json] [--only c256,ingest] [--workers 2] [--apart]

--apart runs the lean server on a CPU of its own and tpsload on the others (as `run --mock` does): a
server sharing the client's CPUs is woken onto the client's by each request and takes it mid-send, so the
difference between the two is the machine's doing, not the client's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from typing import Any

from tpsload.app.calibrate import HONEST_MEAN_MS, Scenario, run, startup_cpu_s

SCENARIOS = [
    Scenario("c1", 1, 8),
    Scenario("c16", 16, 64),
    Scenario("c16-warm", 16, 64, warmup=16),
    Scenario("c64", 64, 256),
    Scenario("c64-warm", 64, 256, warmup=64),
    Scenario("c256", 256, 768),
    Scenario("c256-warm", 256, 768, warmup=256),
    Scenario("short", 64, 2048, ttft_ms=0, itl_ms=0, tokens=2),
    Scenario("ingest", 64, 64, ttft_ms=0, itl_ms=0, tokens=4096),
]


def median(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _stat(runs: list[dict[str, Any]], key: str, stat: str) -> Any:
    return median([(r[key] or {}).get(stat) for r in runs])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ttft_error_mean_ms": _stat(runs, "ttft_error_ms", "mean"),
        "ttft_error_p99_ms": _stat(runs, "ttft_error_ms", "p99"),
        "request_half_mean_ms": _stat(runs, "request_half_ms", "mean"),
        "request_half_p99_ms": _stat(runs, "request_half_ms", "p99"),
        "response_half_mean_ms": _stat(runs, "response_half_ms", "mean"),
        "response_half_p99_ms": _stat(runs, "response_half_ms", "p99"),
        "first_wave_error_mean_ms": _stat(runs, "first_wave_ttft_error_ms", "mean"),
        # from when each request was due (closed loop: its stream's slot freed), not when the client began it
        "sched_error_mean_ms": _stat(runs, "ttft_sched_error_ms", "mean"),
        "sched_error_p99_ms": _stat(runs, "ttft_sched_error_ms", "p99"),
        "itl_error": median([r["itl_error"] for r in runs]),
        "throughput_error": median([r["throughput_error"] for r in runs]),
        "server_kept_rate": median([r["server_kept_rate"] for r in runs]),
        "client_cpu_ms_per_1k_tokens": median([r["client_cpu_ms_per_1k_tokens"] for r in runs]),
        "client_cpu_us_per_request": median([r["client_cpu_us_per_request"] for r in runs]),
        "output_throughput": median([r["output_throughput"] for r in runs]),
        "requests_per_s": median([r["requests_per_s"] for r in runs]),
        "server_cpu_share": median([r["server_cpu_share"] for r in runs]),
        "loop_lag_p99_ms": median([r["loop_lag_p99_ms"] for r in runs]),
        "client_bound": [r["client_bound"] for r in runs],
        "verdict_missed": [r["verdict_missed"] for r in runs],
    }


def fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="bench-results.json")
    ap.add_argument("--only", default="")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--apart", action="store_true", help="the server on its own CPU, the client on the others")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    results: dict[str, Any] = {"machine": {"cpu": platform.processor(), "python": platform.python_version()},
                               "startup_cpu_s": median([startup_cpu_s() for _ in range(a.repeat)]),
                               "workers": a.workers, "apart": a.apart, "scenarios": {}}
    for sc in SCENARIOS:
        if only and sc.name not in only:
            continue
        if a.workers > 1 or a.apart:
            sc = Scenario(**{**sc.__dict__, "workers": a.workers, "apart": a.apart})
        runs = [run(sc) for _ in range(a.repeat)]
        results["scenarios"][sc.name] = {"scenario": sc.__dict__, "median": summarise(runs), "runs": runs}
        m = results["scenarios"][sc.name]["median"]
        cpu = (f"client CPU {fmt(m['client_cpu_ms_per_1k_tokens'], '.1f')} ms/1k tok, "
               f"{fmt(m['client_cpu_us_per_request'], ',.0f')} µs/request | server CPU "
               f"{fmt(m['server_cpu_share'], '.0%')}")
        if sc.name == "ingest":  # the server sends everything at once; only speed and cost mean anything
            print(f"{sc.name:>9}: {fmt(m['output_throughput'], ',.0f')} tok/s | {cpu}", flush=True)
            continue
        if sc.itl_ms == 0:  # short requests as fast as they go: the client's cost per request
            print(f"{sc.name:>9}: {fmt(m['requests_per_s'], ',.0f')} requests/s | {cpu} | TTFT error mean "
                  f"{fmt(m['ttft_error_mean_ms'], '.2f')} ms, p99 {fmt(m['ttft_error_p99_ms'], '.2f')} ms", flush=True)
            continue
        missed = sum(m["verdict_missed"])
        print(f"{sc.name:>9}: TTFT error mean {fmt(m['ttft_error_mean_ms'], '.2f')} ms, "
              f"p99 {fmt(m['ttft_error_p99_ms'], '.2f')} ms (request half {fmt(m['request_half_mean_ms'], '.2f')} / "
              f"{fmt(m['request_half_p99_ms'], '.2f')}, response half {fmt(m['response_half_mean_ms'], '.2f')} / "
              f"{fmt(m['response_half_p99_ms'], '.2f')}; first wave {fmt(m['first_wave_error_mean_ms'], '.2f')}; "
              f"from due {fmt(m['sched_error_mean_ms'], '.2f')} / {fmt(m['sched_error_p99_ms'], '.2f')}) | "
              f"ITL error {fmt(m['itl_error'], '+.2%')} | throughput error {fmt(m['throughput_error'], '+.2%')} | "
              f"server kept {fmt(m['server_kept_rate'], '.1%')} | {cpu} | "
              f"{fmt(m['output_throughput'], ',.0f')} tok/s | loop lag p99 {fmt(m['loop_lag_p99_ms'], '.1f')} ms"
              + (f" | client_bound {sum(m['client_bound'])}/{len(runs)}" if any(m["client_bound"]) else "")
              + (f" | MISSED: {missed}/{len(runs)} runs over {HONEST_MEAN_MS:g} ms said not client-bound"
                 if missed else ""), flush=True)
    print(f"start-up: {results['startup_cpu_s']:.2f} CPU-seconds (`tpsload run --help`)")
    with open(a.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
