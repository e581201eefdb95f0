"""Results and the workload -> warnings with hints. Pure.

Each warning says what happened and what to try, in the user's terms.
"""

from __future__ import annotations

from typing import Any, Sequence

from tpsload.analysis.stats import dist
from tpsload.records import RequestRecord
from tpsload.workload.sessions import Sessions
from tpsload.workload.spec import Workload

LENGTH_TOLERANCE = 0.05
# prompt tokens served from the server's prompt cache, past those the workload shares on purpose
# (--shared-prefix, the chat template): beyond this share of the rest, TTFT measures the cache
CACHE_TOLERANCE = 0.10
# ... and beyond this many per request: every prompt shares a few tokens (the template's, the
# tag's first word and digits), and finding those cached saves no measurable time
CACHE_SLACK_TOKENS = 16


def _input_estimate(workload: Workload, i: int) -> int:
    item = workload.items[i]
    if item.input_tokens is not None:
        return item.input_tokens
    text = item.prompt or " ".join(str(m.get("content", "")) for m in item.messages or ())
    return len(text) // 4  # a rough size, only for the context warning


def context_warning(server: dict[str, Any], workload: Workload) -> str | None:
    """llama-server splits -c over -np slots: a request that does not fit a slot fails with 400."""
    n_ctx = (server.get("llama_cpp") or {}).get("n_ctx_per_slot")
    if not isinstance(n_ctx, int):
        return None
    if isinstance(workload, Sessions):
        worst = workload.last_turn_tokens()
    else:
        worst = max(_input_estimate(workload, i) + (workload.items[i].max_tokens or workload.params.max_tokens or 0)
                    for i in range(len(workload.items)))
    if worst > n_ctx:
        return (f"prompt + output may need ~{worst} tokens but a llama-server slot holds {n_ctx} "
                "(it splits -c over -np slots): such requests fail with HTTP 400; raise -c or lower -np")
    return None


def _cache_hint(workload: Workload, measured: int) -> str:
    d = workload.description
    if d.get("source") == "synthetic":
        if not d.get("cache_bust", True):
            return "drop --no-cache-bust"
        if d.get("cache_salt_fixed"):
            return ("an earlier run sent the same prompts (same --seed and --cache-salt): drop --cache-salt for a "
                    "fresh salt each run")
        if measured > len(workload.items):
            return (f"this run reused its {len(workload.items)} prompts: run fewer requests, or clear the server's "
                    "prompt cache first")
        return "clear the server's prompt cache before the run"
    return ("these prompts were sent before (by an earlier run, or earlier in this one): use --input-tokens N "
            "(synthetic prompts, a fresh salt each run) or clear the server's prompt cache before the run")


def prompt_cache_check(ok: Sequence[RequestRecord], workload: Workload) -> tuple[dict[str, Any] | None, list[str]]:
    """Did the server answer from its prompt cache more than the workload meant it to?

    Only with the server's own cached-token counts (usage.prompt_tokens_details, llama.cpp's
    timings.cache_n). Every request sending one prompt is warned about unless such counts
    show the cache was not used.
    """
    warnings: list[str] = []
    same = len(workload.items) == 1 and len(ok) > 1
    d = workload.description
    intended = (d.get("shared_prefix_tokens") or 0) + (d.get("server_overhead_tokens") or 0)
    counted = [(r.prompt_tokens, r.cached_tokens) for r in ok if r.prompt_tokens and r.cached_tokens is not None]
    info = None
    if counted:
        prompt = sum(p for p, _ in counted)
        cached = sum(c for _, c in counted)
        # a trace's prefix groups share their blocks on purpose (workload.traces.shared_tokens)
        beyond = max(0, sum(max(0, c - intended) for _, c in counted) - ((d.get("trace") or {}).get("shared_tokens")
                                                                         or 0))
        rest = sum(max(1, p - intended) for p, _ in counted)
        info = {"prompt_tokens": prompt, "cached_tokens": cached, "intended_cached_per_request": intended,
                "cached_beyond_intended": beyond, "cached_beyond_share": beyond / rest}
        if beyond > CACHE_TOLERANCE * rest and beyond > CACHE_SLACK_TOKENS * len(counted):
            past = (f"; past the {intended} tokens a request shares by design (--shared-prefix, BOS, chat "
                    f"template), {beyond:,} ({beyond / rest:.0%} of the rest) were hits" if intended else "")
            why = "every request sent the same prompt" if same else _cache_hint(workload, len(ok))
            warnings.append(f"the server's prompt cache held {cached:,} of {prompt:,} prompt tokens{past}, so TTFT "
                            f"measured cache hits, not prefill: {why}")
    if same and not counted:
        warnings.append(f"every one of the {len(ok)} requests sent the same prompt: a server with a prompt cache "
                        "(llama-server, vLLM, SGLang) may answer all but the first from it, and TTFT then leaves "
                        "out prefill; use --input-tokens N or a --dataset for distinct prompts")
    return info, warnings


def workload_checks(records: Sequence[RequestRecord], workload: Workload) -> tuple[dict[str, Any], list[str]]:
    """What was observed against what was asked for; warnings past 5 % or for early stops."""
    ok = [r for r in records if r.ok and not r.warmup]
    warnings: list[str] = []
    input_err, in_req, in_obs = [], [], []
    early = 0
    out_req: list[int] = []
    for r in ok:
        item = workload.item_for(r)
        if item is None:
            continue
        if item.input_tokens is not None and r.prompt_tokens is not None:
            in_req.append(item.input_tokens)
            in_obs.append(r.prompt_tokens)
            input_err.append(abs(r.prompt_tokens - item.input_tokens) / item.input_tokens)
        want = item.max_tokens if item.max_tokens is not None else workload.params.max_tokens
        if want is not None and r.output_tokens is not None:
            out_req.append(want)
            if r.output_tokens < want:
                early += 1
    observed: dict[str, Any] = {
        "prompt_tokens": dist([r.prompt_tokens for r in ok if r.prompt_tokens is not None]),
        "output_tokens": dist([r.output_tokens for r in ok if r.output_tokens is not None]),
        "cached_tokens": dist([r.cached_tokens for r in ok if r.cached_tokens is not None]),
        "output_tokens_requested": dist(out_req),
        "stopped_early": early,
    }
    if input_err:
        mean_err = sum(input_err) / len(input_err)
        observed["input_tokens_requested"] = dist(in_req)
        observed["input_length_error"] = {"mean": mean_err, "max": max(input_err)}
        if mean_err > LENGTH_TOLERANCE:
            warnings.append(f"prompts were {mean_err:.0%} off their requested length on average (server counts "
                            f"{sum(in_obs) / len(in_obs):.0f} vs {sum(in_req) / len(in_req):.0f} asked); "
                            "without the server's /tokenize lengths are approximate")
    if early:
        warnings.append(early_stop_warning(early, len(ok), workload))
    empty = sum(1 for r in ok if r.output_tokens == 0)
    if empty:
        warnings.append(f"{empty} of {len(ok)} successful requests returned no output (0 tokens): their "
                        "throughput and latencies mean nothing; does the model have a chat template? "
                        "(try --endpoint completions)")
    # a conversation's later turns resend its history: their cache hits are the point, not a flaw
    cache, more = prompt_cache_check([r for r in ok if (r.turn or 1) == 1], workload)
    if cache is not None:
        observed["prompt_cache"] = cache
    warnings += more
    return observed, warnings


def early_stop_warning(early: int, ok: int, workload: Workload) -> str:
    """Requests that ended before max_tokens: what to add, or which length flag the server ignored."""
    p = workload.params
    said = f"{early} of {ok} requests stopped before their max_tokens"
    if not p.ignore_eos:
        return f"{said} (add --ignore-eos, or use --output-tokens M)"
    if "min_tokens" in (p.extra_body or {}):
        return (f"{said} although ignore_eos and min_tokens were sent: the server ignored both "
                "(it honours neither flag)")
    return (f"{said} although ignore_eos was sent: the server ignored ignore_eos (llama-cpp-python drops it but "
            "honours min_tokens: --extra-body '{\"min_tokens\": M}')")
