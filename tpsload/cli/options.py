"""The flags, declared once: shared by `run` and `sweep`. config.from_flags turns them into a RunConfig."""

from __future__ import annotations

from typing import Any, Callable

import click

from tpsload.core.runner import MIN_REQUESTS_FOR_RATE

DEFAULT_MAX_TOKENS = 256

COMMON = [
    click.option("--base-url", envvar="OPENAI_BASE_URL", help="Server's OpenAI base URL, e.g. http://127.0.0.1:8080/v1 "
                  "[env OPENAI_BASE_URL]"),
    click.option("--host", default=None, help="Server host (the original script's flag; http, /v1)."),
    click.option("--port", type=click.IntRange(1, 65535), default=None, help="Server port (with --host)."),
    click.option("--api-key", envvar="OPENAI_API_KEY", show_envvar=False,
                  help="Sent as a Bearer token; never printed or saved [env OPENAI_API_KEY]."),
    click.option("--model", default=None, help="Model id [default: the first id of GET /v1/models]."),
    click.option("--endpoint", type=click.Choice(["chat", "completions"]), default="chat", show_default=True),
    click.option("--stream/--no-stream", default=True, show_default=True, help="Stream tokens (SSE)."),
    click.option("--header", multiple=True, metavar="'K: V'", help="Extra HTTP header (repeatable)."),
    click.option("--extra-body", metavar="JSON", help="JSON object merged into every request body."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
                  help="Per-request timeout, seconds."),
    click.option("--first-byte-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Seconds to wait for the response headers [default: --timeout]."),
    click.option("--max-response-mb", type=click.FloatRange(min=0), default=64.0, show_default=True,
                  help="Fail a request whose response is larger (0 = no limit)."),
    click.option("--max-errors", type=click.IntRange(min=1), default=None,
                 help="Stop after this many failed requests."),
    click.option("--max-error-rate", default=None, metavar="RATE",
                 help=f"Stop when more than this share fails (e.g. 5%), judged after {MIN_REQUESTS_FOR_RATE} "
                      "requests."),
    click.option("--max-failed-share", default="5%", show_default=True, metavar="RATE",
                 help="A run (or sweep level) whose failed share is above this says its numbers mean little "
                      "and exits 1."),
    click.option("--insecure", is_flag=True, help="Skip TLS certificate verification."),
    click.option("--prompt", default=None, help="Prompt text [default: a short story request]."),
    click.option("--prompt-file", type=click.Path(dir_okay=False), help="One prompt per line, used in turn."),
    click.option("--dataset", type=click.Path(dir_okay=False),
                  help="Prompts from a dataset: .txt (a line each), .jsonl (prompt or messages), .json (ShareGPT)."),
    click.option("--dataset-format", type=click.Choice(["auto", "text", "jsonl", "sharegpt"]), default="auto",
                  show_default=True),
    click.option("--input-tokens", type=click.IntRange(min=1), default=None,
                  help="Synthetic prompts of this many tokens, sized with the server's own tokenizer when it has one."),
    click.option("--input-tokens-stddev", type=click.FloatRange(min=0), default=0.0, show_default=True),
    click.option("--input-tokens-min", type=click.IntRange(min=1), default=None),
    click.option("--input-tokens-max", type=click.IntRange(min=1), default=None),
    click.option("--output-tokens", default=None, metavar="M|dataset",
                  help="Generate exactly M tokens (max_tokens + ignore_eos), or the dataset's reply lengths."),
    click.option("--shared-prefix", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Synthetic prompts share their first N tokens (measures prompt caching)."),
    click.option("--no-cache-bust", is_flag=True,
                  help="Do not start each synthetic prompt with a unique tag (prompt caches may then hit)."),
    click.option("--cache-salt", metavar="VALUE",
                 help="Salt the cache-busting tags with VALUE, for the same bytes every run [default: a fresh "
                      "salt each run, so a rerun of one --seed cannot find the last run's prompts cached]."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for synthetic prompts and order."),
    click.option("--continuous-usage", is_flag=True,
                 help="Ask for usage on every chunk (vLLM, SGLang): exact tokens per chunk for ITL."),
    click.option("--system", default=None, help="System prompt (chat)."),
    click.option("--save-prompts", metavar="PATH", help="Write the requests' prompts as a JSONL dataset."),
    click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True),
    click.option("--ignore-eos", is_flag=True, help="Ask the server to generate exactly --max-tokens."),
    click.option("--temperature", type=float, default=None),
    click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False),
                  help="A local .tiktoken file, used only when the server reports no token counts."),
    click.option("--no-preconnect", is_flag=True,
                 help="Open connections as the requests need them, not before the run starts (keep-alive servers)."),
    click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
                  help="After Ctrl-C, seconds in-flight requests get to finish."),
    click.option("--mock", is_flag=True, help="Benchmark the bundled mock server (started in its own process)."),
    click.option("--mock-ttft-ms", type=click.FloatRange(min=0), default=50.0, show_default=True),
    click.option("--mock-itl-ms", type=click.FloatRange(min=0), default=10.0, show_default=True),
    click.option("-q", "--quiet", is_flag=True, help="No progress and no table."),
    click.option("--debug", is_flag=True, help="Show tracebacks."),
    click.option("--workers", default="1", show_default=True, metavar="N|auto",
                 help="Split the load over N processes (auto: one per 128 streams, at most the cores)."),
    click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                 help="Run the workers as Ray actors: on a cluster (auto, or its address), or on a Ray instance "
                      "started for the run (no address). Needs tpsload[ray]."),
    click.option("--ray-spread", is_flag=True, help="With --ray: put the workers on distinct nodes."),
    click.option("--label", default=None, help="A name for this result in comparisons and reports."),
    click.option("--tag", multiple=True, metavar="KEY=VALUE", help="Describe the setup (repeatable): gpu=H100."),
    click.option("--server-metrics-interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
                 metavar="S", help="Scrape the server's own /metrics (and llama-server's /slots) this often."),
    click.option("--no-server-metrics", is_flag=True, help="Do not scrape the server's /metrics."),
    click.option("--turns", default=None, metavar="N|A-B",
                 help="Multi-turn conversations of N turns (or A to B, seeded): each turn resends the history "
                      "plus a new user message; -c counts conversations in flight, -n conversations, --rate "
                      "conversation starts per second. Chat only."),
    click.option("--think-time", default=None, metavar="T",
                 help="With --turns: pause between a reply and the next turn: 2s, 500ms, 1s-3s (uniform) or "
                      "exp:2s (exponential mean), seeded [default: 0]."),
    click.option("--history", type=click.Choice(["replies", "dataset"]), default="replies", show_default=True,
                 help="With --turns: resend the server's own replies, or a dataset conversation's replies."),
    click.option("--slot-affinity", is_flag=True,
                 help="With --turns on llama-server: pin each conversation to one slot (id_slot), so its "
                      "cached prefix stays where its next turn goes."),
]

# Load shape and outputs of one run; `sweep` declares its own (lists of levels).
RUN_LOAD = [
    click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Independent repetitions; the result reports their spread (and compare resamples them)."),
    click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
                  help="Requests in flight (closed loop) [default 1]."),
    click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Open loop: start requests at this rate (per second) on a fixed schedule; -c caps it."),
    click.option("--arrival", type=click.Choice(["poisson", "constant", "gamma"]), default="poisson", show_default=True,
                  help="Open loop: how send times are spread."),
    click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                  help="Gamma arrivals: < 1 burstier than Poisson, > 1 smoother."),
    click.option("--slo", multiple=True, metavar="OBJECTIVE",
                  help="Service-level objective, repeatable: ttft_p99<=2s, tpot_p50<=80ms, decode_tps_p10>=10, "
                       "error_rate<=1%. Reported met/missed, with goodput."),
    click.option("--fail-on-slo", is_flag=True, help="Exit 1 when an objective is missed."),
    click.option("-n", "--requests", type=click.IntRange(min=1), default=None,
                  help="Measured requests [default 4 x concurrency; 1 with no load flags]."),
    click.option("--duration", default=None, help="Stop starting requests after this long (30s, 5m)."),
    click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Requests sent first and left out of the statistics."),
    click.option("--stages", default=None, metavar="SPEC",
                 help="A run in stages of steps, ramps and spikes: '60s:c=4,120s:c=4->32,30s:c=64,60s:c=8' (closed "
                      "loop) or '30s:rate=2,60s:rate=2->10' (open loop; -c caps it). Results per stage."),
    click.option("--trace", type=click.Path(dir_okay=False), default=None,
                 help="Replay a trace: each request at its recorded time with its recorded input and output lengths "
                      "(Mooncake JSONL, Azure LLM CSV, BurstGPT CSV, or JSONL with timestamp in ms)."),
    click.option("--trace-format", type=click.Choice(["auto", "mooncake", "azure", "burstgpt", "jsonl"]),
                 default="auto", show_default=True),
    click.option("--trace-speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                 help="Replay the trace this many times faster (0.5: twice as slow)."),
    click.option("--trace-window", default=None, metavar="START:END",
                 help="Replay only this slice of the trace, in seconds from its first request (60:120, 30s:2m, 60:)."),
    click.option("--trace-block", type=click.IntRange(min=1), default=512, show_default=True,
                 help="Tokens per hash_id block of the trace (prompts that share hash_ids share those tokens)."),
    click.option("--json", "json_path", metavar="PATH", help="Write the full result as JSON ('-' = stdout)."),
    click.option("--records", "records_path", metavar="PATH", help="Write one JSON line per request."),
    click.option("--checkpoint-interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
                 metavar="S", help="With --json: rewrite the partial result there this often while the run goes "
                                   "on, so a killed run loses at most S seconds (0: only at the end)."),
    click.option("--status-interval", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="S",
                 help="Off a terminal (CI logs): print the live numbers in one line this often (0: never)."),
    click.option("--serve-metrics", metavar="[HOST:]PORT",
                 help="Serve the live numbers as Prometheus metrics at http://HOST:PORT/metrics while the run goes "
                      "on [host: 127.0.0.1]."),
    click.option("--serve-metrics-linger", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 metavar="S", help="After the run, keep serving until the final numbers are scraped once, at most "
                                   "S seconds (set it to your scrape interval)."),
]


def given(ctx: click.Context) -> set[str]:
    """The flags given on the command line (not defaults or environment)."""
    return {p.name for p in ctx.command.params
            if p.name and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}


def apply(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """Decorate a command with options, in the order listed."""

    def deco(f: Any) -> Any:
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco
