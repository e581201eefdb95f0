"""`tpsload run`: flags -> RunConfig -> pre-flight -> runner -> records -> statistics -> reports."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from functools import partial
from typing import Any

import click

from .. import prepare, slo
from ..checks import context_warning, workload_checks
from ..client import Client, make_session
from ..config import RunConfig, TpsloadError, check_base_url, parse_extra_body, parse_header
from ..export import json as export_json
from ..export import jsonl as export_jsonl
from ..mock import MockProcess
from ..output.console import LiveProgress, render
from ..preflight import preflight
from ..result import build_result
from ..runner import MIN_REQUESTS_FOR_RATE, Runner, RunState
from ..tokens import Tokenizer, resolve_pending
from ..workload import Workload

DEFAULT_MAX_TOKENS = 256


def parse_duration(value: str | None) -> float | None:
    """'90', '90s', '5m', '1h' -> seconds."""
    if value is None:
        return None
    v = value.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(v[-1:], None)
    num = v[:-1] if mult else v
    try:
        secs = float(num) * (mult or 1)
    except ValueError:
        raise TpsloadError(f"--duration {value!r}: expected seconds, or a number with s/m/h (e.g. 30s, 5m)") from None
    if not secs > 0:
        raise TpsloadError(f"--duration {value!r}: must be positive")
    return secs


def parse_rate(value: str | None) -> float | None:
    """'5%' or '0.05' -> 0.05."""
    if value is None:
        return None
    v = value.strip()
    try:
        r = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    except ValueError:
        raise TpsloadError(f"--max-error-rate {value!r}: expected a fraction (0.05) or a percentage (5%)") from None
    if not 0 <= r <= 1:
        raise TpsloadError(f"--max-error-rate {value!r}: must be between 0 and 100%")
    return r


def build_config(o: dict[str, Any], sources: dict[str, Any]) -> RunConfig:
    def explicit(name: str) -> bool:
        return sources.get(name) == click.core.ParameterSource.COMMANDLINE

    if o["mock"]:
        if explicit("base_url") or o["host"] or o["port"]:
            raise TpsloadError("--mock starts its own server: drop --base-url/--host/--port")
        base_url = "http://127.0.0.1:0/v1"  # replaced by the mock's real address
    elif o["host"] or o["port"]:
        if explicit("base_url"):
            raise TpsloadError("give either --base-url or --host/--port, not both")
        base_url = f"http://{o['host'] or '127.0.0.1'}:{o['port'] or 8080}/v1"
    elif o["base_url"]:
        base_url = o["base_url"]
    else:
        raise TpsloadError("no server given: pass --base-url URL (or --host/--port, or set OPENAI_BASE_URL), "
                           "or --mock to benchmark the bundled mock server")
    base_url = check_base_url(base_url)
    given = [f for f in ("prompt", "prompt_file", "dataset", "input_tokens") if o[f] is not None]
    if len(given) > 1:
        raise TpsloadError("give one prompt source: " + " or ".join("--" + f.replace("_", "-") for f in given))
    max_tokens, ignore_eos, from_dataset = o["max_tokens"], o["ignore_eos"], False
    if o["output_tokens"] is not None:
        if explicit("max_tokens"):
            raise TpsloadError("give either --output-tokens or --max-tokens, not both")
        if o["output_tokens"] == "dataset":
            if not o["dataset"]:
                raise TpsloadError("--output-tokens dataset needs --dataset")
            from_dataset = True
        else:
            try:
                max_tokens = int(o["output_tokens"])
            except ValueError:
                raise TpsloadError(f"--output-tokens {o['output_tokens']!r}: a number of tokens, or 'dataset'") \
                    from None
            if max_tokens < 1:
                raise TpsloadError("--output-tokens must be at least 1")
        ignore_eos = True
    if o["shared_prefix"] and (o["input_tokens"] is None or o["shared_prefix"] >= o["input_tokens"]):
        raise TpsloadError("--shared-prefix N needs --input-tokens larger than N")
    if o["system"] is not None and o["endpoint"] != "chat":
        raise TpsloadError("--system needs --endpoint chat")
    if o["input_tokens_min"] and o["input_tokens_max"] and o["input_tokens_min"] > o["input_tokens_max"]:
        raise TpsloadError("--input-tokens-min is larger than --input-tokens-max")
    load_flags = any(o[k] is not None for k in ("concurrency", "requests", "duration", "rate"))
    rate = o["rate"]
    # closed loop: requests in flight; open loop (--rate): an optional cap, 0 = none
    concurrency = o["concurrency"] or (0 if rate else 1)
    duration = parse_duration(o["duration"])
    requests = o["requests"]
    if requests is None and duration is None:
        if rate:
            requests = max(16, int(rate * 10))  # about ten seconds of load
        else:
            requests = 4 * concurrency if load_flags else 1
    return RunConfig(
        base_url=base_url, model=o["model"], api_key=o["api_key"] or None, endpoint=o["endpoint"],
        stream=o["stream"], headers=tuple(parse_header(h) for h in o["header"]),
        extra_body=parse_extra_body(o["extra_body"]), timeout_s=o["timeout"], insecure=o["insecure"],
        first_byte_timeout_s=o["first_byte_timeout"],
        max_response_bytes=int(o["max_response_mb"] * 1024 * 1024) if o["max_response_mb"] else None,
        max_errors=o["max_errors"], max_error_rate=parse_rate(o["max_error_rate"]),
        prompt=o["prompt"], prompt_file=o["prompt_file"], dataset=o["dataset"], dataset_format=o["dataset_format"],
        input_tokens=o["input_tokens"], input_tokens_stddev=o["input_tokens_stddev"],
        input_tokens_min=o["input_tokens_min"], input_tokens_max=o["input_tokens_max"],
        output_from_dataset=from_dataset, shared_prefix=o["shared_prefix"], cache_bust=not o["no_cache_bust"],
        seed=o["seed"], system=o["system"], save_prompts=o["save_prompts"],
        max_tokens=max_tokens, ignore_eos=ignore_eos,
        temperature=o["temperature"], concurrency=concurrency, requests=requests, duration_s=duration,
        rate=rate, arrival=o["arrival"], burstiness=o["burstiness"],
        slos=tuple(slo.parse(t).text for t in o["slo"]),
        warmup=o["warmup"], grace_s=o["grace"], tokenizer=o["tokenizer"], single=not load_flags,
        mock=o["mock"],
    )


async def measure(cfg: RunConfig, show_progress: bool) -> tuple[dict[str, Any], RunState]:
    """Pre-flight, run the load, and turn the records into the result. Always returns what it has."""
    started_at = dt.datetime.now(dt.timezone.utc)
    state = RunState()
    runner = Runner(cfg, None, None, state)  # type: ignore[arg-type]
    runner.install_signals()
    server: dict[str, Any] = {"base_url": cfg.base_url}
    warnings: list[str] = []
    workload_desc: dict[str, Any] = {}
    model = cfg.model or ""
    progress = None
    tokenizer: Tokenizer | None = None
    workload: Workload | None = None
    client = None
    try:
        async with make_session(4, min(cfg.timeout_s, 30.0), cfg.insecure) as probe:
            info = await preflight(cfg, probe)
        model = info.model
        server.update(info.server)
        warnings += info.warnings
        for w in info.warnings:
            click.echo(f"warning: {w}", err=True)
        tokenizer = Tokenizer(cfg.tokenizer, notice=lambda m: click.echo(m, err=True))
        async with make_session(8, min(cfg.timeout_s, 60.0), cfg.insecure) as prep:
            workload = await prepare.build(cfg, prep, model, server, tokenizer)
        if cfg.save_prompts:
            export_json.write_text(cfg.save_prompts, workload.dump())
        workload_desc = workload.describe()
        ctx_warning = context_warning(server, workload)
        if ctx_warning:
            warnings.append(ctx_warning)
            click.echo(f"warning: {ctx_warning}", err=True)
        limit = cfg.concurrency + 4 if cfg.concurrency else 0  # 0: no limit (uncapped open loop)
        session = partial(make_session, limit, cfg.timeout_s, cfg.insecure)
        client = Client(session(force_close=info.llama_cpp), cfg.url, cfg.request_headers(), cfg.stream,
                        cfg.secrets(), fresh_session=partial(session, force_close=True),
                        first_byte_timeout_s=cfg.first_byte_timeout_s, max_response_bytes=cfg.max_response_bytes)
        runner.client = client
        runner.workload = workload
        if show_progress:
            total = (cfg.requests + cfg.warmup) if cfg.requests is not None else None
            progress = LiveProgress(sys.stderr, total, None if total else cfg.duration_s)
            runner.progress = progress
        await runner.run()
    except TpsloadError:
        raise
    except Exception as e:  # a bug of ours must not lose what was measured
        runner.stop(f"internal error: {e.__class__.__name__}: {e}")
        state.cpu_s, state.wall_s = state.cpu.read()
        state.internal_error = e
    finally:
        runner.remove_signals()
        if client:
            await client.close()
        if progress:
            progress.close()
    if tokenizer is None:
        tokenizer = Tokenizer(cfg.tokenizer, notice=lambda m: click.echo(m, err=True))
    resolve_pending(state.records, tokenizer)
    if workload is not None:
        observed, more = workload_checks(state.records, workload)
        workload_desc["observed"] = observed
        warnings += more
    result = build_result(cfg, state, workload_desc, server, started_at, warnings)
    result["model"] = model
    return result, state


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def execute(cfg: RunConfig, json_path: str | None, records_path: str | None, quiet: bool,
            mock_options: dict[str, Any], fail_on_slo: bool = False) -> int:
    mock = None
    if cfg.mock:
        mock = MockProcess(**mock_options).start()
        cfg = RunConfig(**{**cfg.__dict__, "base_url": mock.base_url})
    try:
        result, state = run_async(measure(cfg, show_progress=not quiet))
    finally:
        if mock:
            mock.stop()
    if json_path:
        export_json.write(result, json_path)
    if records_path:
        export_jsonl.write(state.records, state.t0, records_path)
    if not quiet:
        render(result, sys.stderr if json_path == "-" else sys.stdout)
    err = state.internal_error
    if err is not None:
        click.echo(f"tpsload: internal error ({err.__class__.__name__}: {err}); partial result written. "
                   "Rerun with --debug for a traceback.", err=True)
        raise err
    if state.signal is not None:
        return 128 + state.signal
    if state.stop_reason:
        click.echo(f"tpsload: stopped early: {state.stop_reason}", err=True)
        return 1
    s = result["summary"]
    if s["requests_ok"] == 0 and s["requests_failed"] > 0:
        return 1
    if fail_on_slo and result["slo"] and not result["slo"]["all_met"]:
        missed = [v["slo"] for v in result["slo"]["objectives"] if not v["met"]]
        click.echo(f"tpsload: SLO missed: {', '.join(missed)}", err=True)
        return 1
    return 0


@click.command("run")
@click.option("--base-url", envvar="OPENAI_BASE_URL", help="Server's OpenAI base URL, e.g. http://127.0.0.1:8080/v1 "
              "[env OPENAI_BASE_URL]")
@click.option("--host", default=None, help="Server host (the original script's flag; http, /v1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Server port (with --host).")
@click.option("--api-key", envvar="OPENAI_API_KEY", show_envvar=False,
              help="Sent as a Bearer token; never printed or saved [env OPENAI_API_KEY].")
@click.option("--model", default=None, help="Model id [default: the first id of GET /v1/models].")
@click.option("--endpoint", type=click.Choice(["chat", "completions"]), default="chat", show_default=True)
@click.option("--stream/--no-stream", default=True, show_default=True, help="Stream tokens (SSE).")
@click.option("--header", multiple=True, metavar="'K: V'", help="Extra HTTP header (repeatable).")
@click.option("--extra-body", metavar="JSON", help="JSON object merged into every request body.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Per-request timeout, seconds.")
@click.option("--first-byte-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds to wait for the response headers [default: --timeout].")
@click.option("--max-response-mb", type=click.FloatRange(min=0), default=64.0, show_default=True,
              help="Fail a request whose response is larger (0 = no limit).")
@click.option("--max-errors", type=click.IntRange(min=1), default=None, help="Stop after this many failed requests.")
@click.option("--max-error-rate", default=None, metavar="RATE",
              help=f"Stop when more than this share fails (e.g. 5%), judged after {MIN_REQUESTS_FOR_RATE} requests.")
@click.option("--insecure", is_flag=True, help="Skip TLS certificate verification.")
@click.option("--prompt", default=None, help="Prompt text [default: a short story request].")
@click.option("--prompt-file", type=click.Path(dir_okay=False), help="One prompt per line, used in turn.")
@click.option("--dataset", type=click.Path(dir_okay=False),
              help="Prompts from a dataset: .txt (a line each), .jsonl (prompt or messages), .json (ShareGPT).")
@click.option("--dataset-format", type=click.Choice(["auto", "text", "jsonl", "sharegpt"]), default="auto",
              show_default=True)
@click.option("--input-tokens", type=click.IntRange(min=1), default=None,
              help="Synthetic prompts of this many tokens, sized with the server's own tokenizer when it has one.")
@click.option("--input-tokens-stddev", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--input-tokens-min", type=click.IntRange(min=1), default=None)
@click.option("--input-tokens-max", type=click.IntRange(min=1), default=None)
@click.option("--output-tokens", default=None, metavar="M|dataset",
              help="Generate exactly M tokens (max_tokens + ignore_eos), or the dataset's reply lengths.")
@click.option("--shared-prefix", type=click.IntRange(min=0), default=0, show_default=True,
              help="Synthetic prompts share their first N tokens (measures prompt caching).")
@click.option("--no-cache-bust", is_flag=True,
              help="Do not start each synthetic prompt with a unique tag (prompt caches may then hit).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic prompts and order.")
@click.option("--system", default=None, help="System prompt (chat).")
@click.option("--save-prompts", metavar="PATH", help="Write the requests' prompts as a JSONL dataset.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True)
@click.option("--ignore-eos", is_flag=True, help="Ask the server to generate exactly --max-tokens.")
@click.option("--temperature", type=float, default=None)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Requests in flight (closed loop) [default 1].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Open loop: start requests at this rate (per second) on a fixed schedule; -c caps it.")
@click.option("--arrival", type=click.Choice(["poisson", "constant", "gamma"]), default="poisson", show_default=True,
              help="Open loop: how send times are spread.")
@click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Gamma arrivals: < 1 burstier than Poisson, > 1 smoother.")
@click.option("--slo", multiple=True, metavar="OBJECTIVE",
              help="Service-level objective, repeatable: ttft_p99<=2s, tpot_p50<=80ms, decode_tps_p10>=10, "
                   "error_rate<=1%. Reported met/missed, with goodput.")
@click.option("--fail-on-slo", is_flag=True, help="Exit 1 when an objective is missed.")
@click.option("-n", "--requests", type=click.IntRange(min=1), default=None,
              help="Measured requests [default 4 x concurrency; 1 with no load flags].")
@click.option("--duration", default=None, help="Stop starting requests after this long (30s, 5m).")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="Requests sent first and left out of the statistics.")
@click.option("--json", "json_path", metavar="PATH", help="Write the full result as JSON ('-' = stdout).")
@click.option("--records", "records_path", metavar="PATH", help="Write one JSON line per request.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False),
              help="A local .tiktoken file, used only when the server reports no token counts.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="After Ctrl-C, seconds in-flight requests get to finish.")
@click.option("--mock", is_flag=True, help="Benchmark the bundled mock server (started in its own process).")
@click.option("--mock-ttft-ms", type=click.FloatRange(min=0), default=50.0, show_default=True)
@click.option("--mock-itl-ms", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress and no table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def run_command(ctx: click.Context, **o: Any) -> None:
    """Measure a server under load: TTFT, ITL, TPOT, latency and tokens/s."""
    sources = {p.name: ctx.get_parameter_source(p.name) for p in ctx.command.params if p.name}
    ctx.obj = {"debug": o["debug"]}
    cfg = build_config(o, sources)
    code = execute(cfg, o["json_path"], o["records_path"], o["quiet"],
                   {"ttft_ms": o["mock_ttft_ms"], "itl_ms": o["mock_itl_ms"]}, fail_on_slo=o["fail_on_slo"])
    ctx.exit(code)

