"""`tpsload mock`: the bundled OpenAI-compatible server with deterministic timing."""

from __future__ import annotations

from typing import Any

import click

from tpsload.mock.faults import FAULTS, parse_fault

# the kinds `--imitate` takes (mock.server.IMITATE: kept here so that --help needs no aiohttp.web)
IMITATE = ("llama-server", "llama-cpp-python", "vllm", "sglang", "ollama", "lmstudio")


@click.command("mock")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--ttft-ms", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Time from request arrival to the first token.")
@click.option("--itl-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Time between tokens.")
@click.option("--tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="Tokens per reply when the request sets no max_tokens.")
@click.option("--model", default="tpsload-mock", show_default=True)
@click.option("--api-key", default=None, help="Require this Bearer token.")
@click.option("--close-after-stream", is_flag=True, help="Close the connection after each stream, like llama-server.")
@click.option("--llama-props", type=click.IntRange(min=0), default=0,
              help="Answer /props like llama-server with this many slots.")
@click.option("--n-ctx", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Per-slot context reported by /props.")
@click.option("--no-usage", is_flag=True, help="Never report token usage.")
@click.option("--tokens-per-chunk", type=click.IntRange(min=1), default=1, show_default=True,
              help="After the first token, send this many tokens per chunk (like vLLM --stream-interval).")
@click.option("--slots", type=click.IntRange(min=0), default=0, show_default=True,
              help="At most this many requests generate at once; the rest queue (0 = no limit).")
@click.option("--slowdown", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Each busy slot beyond the first stretches the time between tokens by this fraction.")
@click.option("--fault", "faults", multiple=True, metavar="KIND[:n=N|every=N|p=P]",
              help="Inject a fault (repeatable): " + ", ".join(FAULTS) + ".")
@click.option("--stall-s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="How long the stall faults stall.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for p= faults.")
@click.option("--metrics", is_flag=True, help="Serve /metrics (Prometheus text, vLLM's names) from the mock's counts.")
@click.option("--metrics-delay", type=click.FloatRange(min=0), default=0.0, help="Answer /metrics this late (s).")
@click.option("--models-delay", type=click.FloatRange(min=0), default=0.0, help="Answer /v1/models this late (s).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve https with this PEM certificate (and --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="The certificate's key.")
@click.option("--interrupt", is_flag=True,
              help="End a running stream ([DONE], then close mid-body) when another request arrives, like "
                   "llama-cpp-python's --interrupt_requests True.")
@click.option("--imitate", type=click.Choice(IMITATE), default=None,
              help="Answer the routes and headers that identify this server, with its quirks.")
@click.option("--eos-at", type=click.IntRange(min=0), default=0, show_default=True,
              help="Replies end after this many tokens unless ignore_eos/min_tokens force max_tokens (0 = never).")
@click.option("--tokenize", type=click.Choice(["llama", "vllm", "extras"]), default=None,
              help="Serve a tokenize route: llama.cpp's or vLLM's /tokenize, llama-cpp-python's /extras/tokenize.")
@click.option("--drop-ignore-eos", is_flag=True, help="Ignore ignore_eos (min_tokens still forces the length).")
@click.option("--empty-replies", is_flag=True, help="Every reply carries no text.")
@click.option("--reasoning-tokens", type=click.IntRange(min=0), default=0, show_default=True,
              help="Chat replies begin with this many reasoning tokens (part of the reply's length), like a "
                   "thinking model.")
@click.option("--reasoning-field", type=click.Choice(["reasoning_content", "reasoning"]),
              default="reasoning_content", show_default=True,
              help="Where reasoning goes: reasoning_content (llama.cpp, SGLang) or reasoning (newer vLLM, Ollama).")
@click.option("--no-reasoning-usage", is_flag=True,
              help="Leave reasoning out of usage (no completion_tokens_details.reasoning_tokens).")
@click.option("--prefill-ms-per-token", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="TTFT grows by this much per prompt token (a prefill without prompt cache).")
def mock_command(**o: Any) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/models and /health with exact timing."""
    from tpsload.mock.server import MockConfig, main  # aiohttp.web: only when serving

    try:
        faults = tuple(parse_fault(f) for f in o["faults"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--fault") from None
    main(MockConfig(host=o["host"], port=o["port"], ttft_ms=o["ttft_ms"], itl_ms=o["itl_ms"], tokens=o["tokens"],
                    model=o["model"], api_key=o["api_key"], close_after_stream=o["close_after_stream"],
                    llama_props=o["llama_props"], n_ctx=o["n_ctx"], no_usage=o["no_usage"],
                    faults=faults, stall_s=o["stall_s"], seed=o["seed"], slots=o["slots"], slowdown=o["slowdown"],
                    tokens_per_chunk=o["tokens_per_chunk"], metrics=o["metrics"],
                    metrics_delay_s=o["metrics_delay"], models_delay_s=o["models_delay"],
                    tls_cert=o["tls_cert"], tls_key=o["tls_key"],
                    interrupt=o["interrupt"], imitate=o["imitate"], eos_at=o["eos_at"], tokenize=o["tokenize"],
                    drop_ignore_eos=o["drop_ignore_eos"], empty_replies=o["empty_replies"],
                    reasoning_tokens=o["reasoning_tokens"], reasoning_field=o["reasoning_field"],
                    reasoning_usage=not o["no_reasoning_usage"], prefill_ms_per_token=o["prefill_ms_per_token"]))
