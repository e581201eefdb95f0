"""`tpsload calibrate`: how accurate is tpsload on this machine at the load you intend, and how many workers?"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from tpsload.app import calibrate as accuracy

# a worker count is good enough when its run is not client-bound and its first-token stamps
# are this close to the server's own send times
GOOD_TTFT_P99_MS = 5.0
GOOD_TTFT_MEAN_MS = 2.0


@click.command("calibrate")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Streams you intend to run.")
@click.option("--tokens-per-second", type=click.FloatRange(min=1), default=100.0, show_default=True,
              help="Speed of each stream (the server's decode speed per request).")
@click.option("--ttft-ms", type=click.FloatRange(min=0), default=100.0, show_default=True)
@click.option("--tokens", type=click.IntRange(min=2), default=256, show_default=True, help="Tokens per reply.")
@click.option("--max-workers", type=click.IntRange(min=1), default=None,
              help="Try at most this many worker processes [default: the cores].")
@click.option("--json", "json_path", metavar="PATH", help="Write the measurements as JSON.")
def calibrate_command(concurrency: int, tokens_per_second: float, ttft_ms: float, tokens: int,
                      max_workers: int | None, json_path: str | None) -> None:
    """Measure tpsload's own timing error and ceiling here, against a local server with exact send times."""
    itl = 1000.0 / tokens_per_second
    limit = max_workers or os.cpu_count() or 1
    requests = max(concurrency * 2, 8)
    click.echo(f"calibrating: {concurrency} streams x {tokens_per_second:g} tok/s, TTFT {ttft_ms:g} ms, "
               f"{tokens} tokens, on a local lean server (this machine's cores: {os.cpu_count()})")
    runs: list[dict[str, Any]] = []
    recommended = None
    workers = 1
    while workers <= limit:
        sc = accuracy.Scenario(f"w{workers}", concurrency, requests, ttft_ms=ttft_ms, itl_ms=itl, tokens=tokens,
                               workers=workers)
        r = accuracy.run(sc)
        runs.append(r)
        e = r["ttft_error_ms"]
        click.echo(f"  --workers {workers}: TTFT error mean {e['mean']:.2f} ms, p99 {e['p99']:.2f} ms; ITL error "
                   f"{r['itl_error']:+.2%}; throughput error {r['throughput_error']:+.2%}; client CPU "
                   f"{r['client_cpu_ms_per_1k_tokens']:.1f} ms/1k tokens"
                   + ("; client-bound: " + "; ".join(r["client_reasons"]) if r["client_bound"] else ""))
        if not r["client_bound"] and e["p99"] <= GOOD_TTFT_P99_MS and e["mean"] <= GOOD_TTFT_MEAN_MS:
            recommended = workers
            break
        workers *= 2
    ceiling = accuracy.run(accuracy.Scenario("ingest", 32, 32, ttft_ms=0, itl_ms=0, tokens=4096,
                                             workers=recommended or 1))
    click.echo(f"ingest ceiling: {ceiling['output_throughput']:,.0f} tok/s with --workers {recommended or 1} "
               f"({ceiling['client_cpu_ms_per_1k_tokens']:.1f} ms CPU per 1k tokens)")
    if recommended is None:
        click.echo(f"recommendation: this load is beyond what {limit} worker process(es) time within "
                   f"{GOOD_TTFT_MEAN_MS:g} ms here; spread it over machines (--ray) or lower it")
    else:
        click.echo(f"recommendation: --workers {recommended}")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"recommended_workers": recommended, "runs": runs, "ingest": ceiling}, fh, indent=2)
