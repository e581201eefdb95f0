"""The user's workload options -> a Workload, before the first measured request.

Reads prompt files and datasets, and for synthetic prompts asks the target server's
tokenizer (lengths.py) so that prompts have the length that was asked for.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import click

from tpsload.config import RunConfig, TpsloadError
from tpsload.kinds import ACCEPT_MIN_TOKENS
from tpsload.workload import datasets, traces
from tpsload.workload.lengths import Counter, measure_overhead, offline_counter, server_counter
from tpsload.workload.sessions import Conversation, Sessions, Turn, cap_turns, later_seed, turn_counts
from tpsload.workload.spec import RequestSpec, Workload, WorkloadParams, length_targets, synthesize
from tpsload.workload.tokenizer import Tokenizer

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
# prompts made up front for a --duration run of synthetic prompts; they repeat after that
DURATION_POOL = 512
# conversations made up front for a --duration run of --turns (each turn's message is sized on the server)
SESSION_POOL = 64


def params(cfg: RunConfig, model: str, server: dict[str, Any]) -> WorkloadParams:
    w = cfg.workload
    extra = dict(w.extra_body)
    accepts = server.get("kind") in ACCEPT_MIN_TOKENS or "vllm_version" in server
    if w.ignore_eos and w.max_tokens and accepts and "min_tokens" not in extra:
        # vLLM honours both (belt and braces for exact lengths); llama-cpp-python drops ignore_eos
        extra["min_tokens"] = w.max_tokens
    return WorkloadParams(endpoint=w.endpoint, model=model, stream=w.stream, max_tokens=w.max_tokens,
                          ignore_eos=w.ignore_eos, temperature=w.temperature, system=w.system,
                          extra_body=extra, continuous_usage=w.continuous_usage)


def n_distinct(cfg: RunConfig) -> int:
    if cfg.load.requests is not None:
        return cfg.load.requests + cfg.load.warmup
    return DURATION_POOL


async def build(cfg: RunConfig, session: aiohttp.ClientSession, model: str, server: dict[str, Any],
                tokenizer: Tokenizer) -> Workload:
    p = params(cfg, model, server)
    desc: dict[str, Any] = {"seed": cfg.workload.seed}
    if cfg.workload.turns is not None:
        return await _sessions(cfg, session, model, p, server, tokenizer, desc)
    if cfg.workload.trace:
        return await _trace(cfg, session, model, p, tokenizer, desc)
    if cfg.workload.input_tokens is not None:
        items = await _synthetic(cfg, session, model, p, tokenizer, desc)
    elif cfg.workload.dataset:
        items = await _dataset(cfg, session, model, tokenizer, desc)
    elif cfg.workload.prompt_file:
        items = datasets.load_text(cfg.workload.prompt_file)
        desc.update(source=f"prompt file {cfg.workload.prompt_file}", prompts=len(items))
    else:
        items = [RequestSpec(prompt=cfg.workload.prompt if cfg.workload.prompt is not None else DEFAULT_PROMPT)]
        desc.update(source="prompt")
    return Workload(items, p, desc)


async def _counter(cfg: RunConfig, session: aiohttp.ClientSession, model: str, tokenizer: Tokenizer) -> Counter:
    counter = await server_counter(cfg, session, model)
    if counter is None:
        await tokenizer.load()  # off the loop: reading tiktoken's tables or trying a download
    return counter or offline_counter(tokenizer)


async def _sessions(cfg: RunConfig, session: aiohttp.ClientSession, model: str, p: WorkloadParams,
                    server: dict[str, Any], tokenizer: Tokenizer, desc: dict[str, Any]) -> Sessions:
    """--turns: conversations of synthetic messages, or a dataset's conversations replayed turn by turn."""
    w = cfg.workload
    assert w.turns is not None
    slots = None
    if w.slot_affinity:
        slots = (server.get("llama_cpp") or {}).get("total_slots")
        if not isinstance(slots, int) or slots < 1:
            raise TpsloadError("--slot-affinity pins conversations to llama-server slots (id_slot), and this server "
                               "names no slots (no /props total_slots): drop --slot-affinity")
    n = cfg.load.requests + cfg.load.warmup if cfg.load.requests is not None else SESSION_POOL
    counts = turn_counts(n, w.turns, w.seed)
    if w.input_tokens is not None:
        # every message is sized like a one-message prompt of --input-tokens; only the first is tagged, so
        # a conversation is salted once and its turns share their prefix
        firsts = await _synthetic(cfg, session, model, p, tokenizer, desc, n)
        later = await _synthetic(cfg, session, model, p, tokenizer, {}, sum(counts) - n,
                                 seed=later_seed(w.seed), cache_bust=False)
        convs, k = [], 0
        for first, c in zip(firsts, counts, strict=True):
            msgs = [first, *later[k:k + c - 1]]
            k += c - 1
            convs.append(Conversation(tuple(Turn(user=m.prompt or "", input_tokens=m.input_tokens) for m in msgs)))
        desc["pool"] = n if cfg.load.requests is None else None
    else:
        path = w.dataset or ""
        fmt = datasets.detect_format(path) if w.dataset_format == "auto" else w.dataset_format
        loaded = datasets.load_conversations(path, fmt)
        if w.history == "dataset" and any(t.reply is None for c in loaded for t in c.turns[:-1]):
            raise TpsloadError(f"--history dataset: a conversation of --dataset {path} has a user turn with no "
                               "assistant reply after it (use --history replies)")
        if w.output_from_dataset:
            counter = await _counter(cfg, session, model, tokenizer)
            sized = []
            for c in loaded:  # each turn's output length: its dataset reply's, where it has one
                turns = [Turn(t.user, t.reply, max(1, await counter.count(t.reply)) if t.reply else t.max_tokens)
                         for t in c.turns]
                sized.append(Conversation(tuple(turns), c.system))
            loaded = sized
            desc["output_length_counter"] = counter.name
        order = datasets.shuffled(loaded, w.seed)
        convs = [cap_turns(order[k % len(order)], counts[k]) for k in range(min(n, max(len(order), 1)))]
        desc.update(source=f"dataset {path}", format=fmt, entries=len(loaded))
    return Sessions(convs, p, desc, w.think_time, w.seed, w.history, slots)


async def _synthetic(cfg: RunConfig, session: aiohttp.ClientSession, model: str, p: WorkloadParams,
                     tokenizer: Tokenizer, desc: dict[str, Any], n: int | None = None, seed: int | None = None,
                     cache_bust: bool | None = None) -> list[RequestSpec]:
    """`n` prompts (default: the run's), with `seed` and `cache_bust` (default: the run's)."""
    w = cfg.workload
    n = n_distinct(cfg) if n is None else n
    if n == 0:
        return []
    seed = w.seed if seed is None else seed
    cache_bust = w.cache_bust if cache_bust is None else cache_bust
    counter = await _counter(cfg, session, model, tokenizer)

    def probe_body(text: str) -> dict[str, Any]:
        return Workload([RequestSpec(prompt=text)], p, {}).request(0)

    overhead = await measure_overhead(cfg, session, model, counter, probe_body)
    targets = length_targets(n, w.input_tokens or 1, w.input_tokens_stddev, w.input_tokens_min, w.input_tokens_max,
                             seed)
    click.echo(f"tpsload: preparing {n} prompts of ~{w.input_tokens} tokens ({counter.name})", err=True)
    # a fresh salt unless fixed: a rerun of this seed must not find this run's prompts in the server's cache
    salt = (w.cache_salt if w.cache_salt is not None else secrets.token_hex(3)) if cache_bust else None
    prompts, measured = await synthesize(counter.count, targets, seed, w.shared_prefix, cache_bust, overhead or 0,
                                         salt or "")
    desc.update(
        source="synthetic",
        input_tokens={"mean": w.input_tokens, "stddev": w.input_tokens_stddev, "min": w.input_tokens_min,
                      "max": w.input_tokens_max},
        length_counter=counter.name,
        lengths_exact=counter.exact and overhead is not None,
        server_overhead_tokens=overhead,
        shared_prefix_tokens=w.shared_prefix,
        cache_bust=cache_bust,
        cache_salt=salt,
        cache_salt_fixed=w.cache_salt is not None,
        pool=n if cfg.load.requests is None else None,
    )
    return [RequestSpec(prompt=t, input_tokens=m) for t, m in zip(prompts, measured, strict=True)]


async def _trace(cfg: RunConfig, session: aiohttp.ClientSession, model: str, p: WorkloadParams,
                 tokenizer: Tokenizer, desc: dict[str, Any]) -> Workload:
    """A trace replay: its requests, each at its recorded time (divided by --trace-speed)."""
    w, load = cfg.workload, cfg.load
    trace = traces.load(w.trace or "", w.trace_format)
    start, end = load.trace_window or (0.0, None)
    entries = traces.window(trace, start, end)
    if not entries:
        raise TpsloadError(f"--trace-window {start:g}:{'' if end is None else f'{end:g}'}: no request of "
                           f"{w.trace} falls in it (the trace spans {trace.span_s:,.1f} s)")
    counter = await _counter(cfg, session, model, tokenizer)

    def probe_body(text: str) -> dict[str, Any]:
        return Workload([RequestSpec(prompt=text)], p, {}).request(0)

    overhead = await measure_overhead(cfg, session, model, counter, probe_body)
    click.echo(f"tpsload: preparing {len(entries)} requests of trace {w.trace} ({trace.format}, {counter.name})",
               err=True)
    salt = (w.cache_salt if w.cache_salt is not None else secrets.token_hex(3)) if w.cache_bust else ""
    items, measured = await traces.requests(entries, counter.count, w.trace_block, w.seed, salt, overhead or 0)
    synthetic = [m for m in measured if m >= 0]
    desc.update(
        source=f"trace {w.trace}",
        trace={"file": w.trace, "format": trace.format, "requests": len(entries), "recorded_requests":
               len(trace.entries), "window_s": [start, end], "span_s": entries[-1].t_s, "speed": load.trace_speed,
               "block_tokens": w.trace_block, "prefix_groups": traces.prefix_groups(entries),
               "shared_tokens": traces.shared_tokens(entries, w.trace_block, overhead or 0)},
        length_counter=counter.name if synthetic else None,
        lengths_exact=counter.exact and overhead is not None if synthetic else None,
        server_overhead_tokens=overhead,
        cache_salt=salt or None,
    )
    workload = Workload(items, p, desc)
    workload.schedule = [e.t_s / load.trace_speed for e in entries]
    return workload


def fitted(cfg: RunConfig, workload: Workload) -> RunConfig:
    """A trace replay's config once the trace is read: open loop at the trace's mean rate, one request
    per recorded one (the runner sends each at its own time, workload.schedule)."""
    if workload.schedule is None:
        return cfg
    n, span = len(workload.schedule), workload.schedule[-1]
    return cfg.replace(requests=n, rate=(n - 1) / span if n > 1 and span > 0 else float(n), single=False)


async def _dataset(cfg: RunConfig, session: aiohttp.ClientSession, model: str, tokenizer: Tokenizer,
                   desc: dict[str, Any]) -> list[RequestSpec]:
    path = cfg.workload.dataset or ""
    fmt = datasets.detect_format(path) if cfg.workload.dataset_format == "auto" else cfg.workload.dataset_format
    if fmt == "text":
        items = datasets.load_text(path, "--dataset")
    elif fmt == "jsonl":
        items = datasets.load_jsonl(path)
    elif fmt == "sharegpt":
        pairs = datasets.load_sharegpt(path)
        if cfg.workload.output_from_dataset:
            counter = await _counter(cfg, session, model, tokenizer)
            items = [RequestSpec(prompt=s.prompt, max_tokens=max(1, await counter.count(reply)) if reply else None)
                     for s, reply in pairs]
            desc["output_length_counter"] = counter.name
        else:
            items = [s for s, _ in pairs]
    else:
        raise TpsloadError(f"--dataset-format {fmt!r}: one of auto, text, jsonl, sharegpt")
    if cfg.workload.output_from_dataset and fmt == "text":
        raise TpsloadError("--output-tokens dataset needs a JSONL or ShareGPT dataset that has output lengths")
    desc.update(source=f"dataset {path}", format=fmt, entries=len(items))
    return datasets.shuffled(items, cfg.workload.seed)
