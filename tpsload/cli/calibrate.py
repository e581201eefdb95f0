"""`tpsload calibrate`: how accurate is tpsload on this machine at the load you intend, and how many workers?"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from tpsload.app import calibrate as accuracy

# a worker count is good enough when its run is not client-bound and its TTFT, the whole path
# from our send to our first-token stamp, is this close to the server's own (cold and warm)
GOOD_TTFT_P99_MS = 5.0
GOOD_TTFT_MEAN_MS = 2.0


def _good(r: dict[str, Any]) -> bool:
    e = r["ttft_error_ms"]
    return not r["client_bound"] and e["p99"] <= GOOD_TTFT_P99_MS and e["mean"] <= GOOD_TTFT_MEAN_MS


def _line(label: str, r: dict[str, Any]) -> str:
    e, req, resp = r["ttft_error_ms"], r["request_half_ms"], r["response_half_ms"]
    verdict = ("; client-bound: " + "; ".join(r["client_reasons"]) if r["client_bound"]
               else "; NOT flagged client-bound" if r["verdict_missed"] else "")
    return (f"  {label}: TTFT error mean {e['mean']:.2f} ms, p99 {e['p99']:.2f} ms (request half "
            f"{req['mean']:.2f} / {req['p99']:.2f} ms, response half {resp['mean']:.2f} / {resp['p99']:.2f} ms); "
            f"ITL error {r['itl_error']:+.2%}; throughput error {r['throughput_error']:+.2%}; client CPU "
            f"{r['client_cpu_ms_per_1k_tokens']:.1f} ms/1k tokens{verdict}")


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
    """Measure tpsload's own timing error and ceiling here, against a local server with exact arrival and send times.

    TTFT error is the whole path: our TTFT minus the server's own (request arrival to first-token
    write), split into the request half (our send to arrival) and the response half (the server's
    write to our stamp). Each worker count runs cold (no warm-up) and warm (--warmup one wave).
    """
    itl = 1000.0 / tokens_per_second
    limit = max_workers or os.cpu_count() or 1
    requests = max(concurrency * 2, 8)
    click.echo(f"calibrating: {concurrency} streams x {tokens_per_second:g} tok/s, TTFT {ttft_ms:g} ms, "
               f"{tokens} tokens, on a local lean server (this machine's cores: {os.cpu_count()})")
    runs: list[dict[str, Any]] = []
    recommended = None
    warm_only = None  # the first count that is accurate once warmed up, while its cold start is not
    workers = 1
    while workers <= limit:
        both = []
        for warmup in (0, concurrency):
            sc = accuracy.Scenario(f"w{workers}-{'warm' if warmup else 'cold'}", concurrency, requests,
                                   ttft_ms=ttft_ms, itl_ms=itl, tokens=tokens, workers=workers, warmup=warmup)
            r = accuracy.run(sc)
            runs.append(r)
            both.append(r)
            click.echo(_line(f"--workers {workers}, {'--warmup ' + str(warmup) if warmup else 'no warm-up'}", r))
        cold, warm = both
        if _good(cold) and _good(warm):
            recommended = workers
            break
        if warm_only is None and _good(warm):
            warm_only = (workers, cold)
        workers *= 2
    ceiling = accuracy.run(accuracy.Scenario("ingest", 32, 32, ttft_ms=0, itl_ms=0, tokens=4096,
                                             workers=recommended or 1))
    click.echo(f"ingest ceiling: {ceiling['output_throughput']:,.0f} tok/s with --workers {recommended or 1} "
               f"({ceiling['client_cpu_ms_per_1k_tokens']:.1f} ms CPU per 1k tokens)")
    if recommended is not None:
        click.echo(f"recommendation: --workers {recommended}")
    elif warm_only is not None:
        w, cold = warm_only
        click.echo(f"recommendation: --workers {w} --warmup {concurrency} (without a warm-up the first requests' "
                   f"TTFT is {cold['ttft_error_ms']['mean']:.1f} ms too long on average, "
                   f"p99 {cold['ttft_error_ms']['p99']:.1f} ms)")
    else:
        click.echo(f"recommendation: this load is beyond what {limit} worker process(es) time within "
                   f"{GOOD_TTFT_MEAN_MS:g} ms here, request and response included; spread it over machines "
                   "(--ray) or lower it")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"recommended_workers": recommended,
                       "recommended_warmup": concurrency if recommended is None and warm_only else None,
                       "recommended_workers_with_warmup": warm_only[0] if warm_only else None,
                       "runs": runs, "ingest": ceiling}, fh, indent=2)
