"""Each server's Prometheus names, mapped to one set of common meanings.

The names come from the servers' own sources and docs (llama.cpp tools/server,
vLLM v1/metrics/loggers.py, SGLang srt/metrics/collector.py). Builds differ: a
meaning lists every raw name it has gone by, newest first, and the first one a
server actually publishes is used. The raw name always travels with the value,
so a reader can check what a number was made from.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


@dataclass(frozen=True, slots=True)
class Meaning:
    """One common meaning and the raw names a server has published it under (newest first)."""

    key: str
    kind: str  # counter | gauge | histogram
    raw: tuple[str, ...]  # counters with their `_total`; histograms by their base name
    # how label sets combine (vLLM labels each data-parallel engine; SGLang each rank):
    # counts add up, ratios do not
    across: str = "sum"
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ServerMap:
    """What one server publishes, and how to read it."""

    server: str  # "llama.cpp" | "vllm" | "sglang"
    prefix: str
    meanings: tuple[Meaning, ...]
    # llama.cpp counts prompt tokens without the cached ones; SGLang counts them all
    prompt_includes_cached: bool = True
    # the one line a user needs when /metrics is not there
    enable_hint: str = ""

    def meaning(self, key: str) -> Meaning | None:
        for m in self.meanings:
            if m.key == key:
                return m
        return None


LLAMA_CPP = ServerMap(
    "llama.cpp", "llamacpp:",
    (
        Meaning("generated_tokens", COUNTER, ("llamacpp:tokens_predicted_total",),
                doc="tokens generated (counted when a request finishes)"),
        Meaning("prompt_tokens", COUNTER, ("llamacpp:prompt_tokens_total",),
                doc="prompt tokens processed, without those reused from the cache"),
        Meaning("prompt_tokens_cached", COUNTER, ("llamacpp:prompt_tokens_cached_total",),
                doc="prompt tokens reused from the cache"),
        Meaning("prompt_seconds", COUNTER, ("llamacpp:prompt_seconds_total",), doc="time spent on prompts"),
        Meaning("generation_seconds", COUNTER, ("llamacpp:tokens_predicted_seconds_total",),
                doc="time spent generating"),
        Meaning("decode_calls", COUNTER, ("llamacpp:n_decode_total",), doc="llama_decode() calls"),
        Meaning("requests_running", GAUGE, ("llamacpp:requests_processing",), doc="requests in a slot"),
        Meaning("requests_waiting", GAUGE, ("llamacpp:requests_deferred",),
                doc="requests deferred until a slot frees"),
        Meaning("busy_slots_per_decode", GAUGE, ("llamacpp:n_busy_slots_per_decode",),
                doc="mean busy slots per decode call, since the server started"),
        Meaning("kv_cache_usage", GAUGE, ("llamacpp:kv_cache_usage_ratio",), across="max",
                doc="KV cache in use, 0-1 (older builds)"),
        Meaning("kv_cache_tokens", GAUGE, ("llamacpp:kv_cache_tokens",), doc="tokens in the KV cache (older builds)"),
        Meaning("spec_draft_tokens", COUNTER, ("llamacpp:spec_decode_num_draft_tokens_total",),
                doc="speculative draft tokens"),
        Meaning("spec_accepted_tokens", COUNTER, ("llamacpp:spec_decode_num_accepted_tokens_total",),
                doc="speculative draft tokens accepted"),
    ),
    prompt_includes_cached=False,
    enable_hint="llama-server: start it with --metrics to see its queue and token counters beside ours",
)

VLLM = ServerMap(
    "vllm", "vllm:",
    (
        Meaning("generated_tokens", COUNTER, ("vllm:generation_tokens_total",), doc="tokens generated"),
        Meaning("prompt_tokens", COUNTER, ("vllm:prompt_tokens_total",), doc="prompt tokens processed"),
        Meaning("requests_running", GAUGE, ("vllm:num_requests_running",), doc="requests in the running batch"),
        Meaning("requests_waiting", GAUGE, ("vllm:num_requests_waiting",), doc="requests waiting to be scheduled"),
        Meaning("kv_cache_usage", GAUGE, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), across="max",
                doc="KV cache in use, 0-1"),
        Meaning("prefix_cache_queries", COUNTER,
                ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
                doc="prompt tokens looked up in the prefix cache"),
        Meaning("prefix_cache_hits", COUNTER, ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
                doc="prompt tokens found in the prefix cache"),
        Meaning("preemptions", COUNTER, ("vllm:num_preemptions_total",),
                doc="requests preempted (KV cache ran out)"),
        Meaning("requests_finished", COUNTER, ("vllm:request_success_total",), doc="requests finished"),
        Meaning("ttft", HISTOGRAM, ("vllm:time_to_first_token_seconds",), doc="time to first token, s"),
        Meaning("itl", HISTOGRAM, ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
                doc="time between output tokens, s"),
        Meaning("queue_time", HISTOGRAM, ("vllm:request_queue_time_seconds",), doc="time waiting, s"),
        Meaning("prefill_time", HISTOGRAM, ("vllm:request_prefill_time_seconds",), doc="time in prefill, s"),
        Meaning("decode_time", HISTOGRAM, ("vllm:request_decode_time_seconds",), doc="time in decode, s"),
        Meaning("e2e_latency", HISTOGRAM, ("vllm:e2e_request_latency_seconds",), doc="request latency, s"),
    ),
)

SGLANG = ServerMap(
    "sglang", "sglang:",
    (
        Meaning("generated_tokens", COUNTER, ("sglang:generation_tokens_total",),
                doc="tokens generated (counted when a request finishes)"),
        Meaning("prompt_tokens", COUNTER, ("sglang:prompt_tokens_total",), doc="prompt tokens, cached included"),
        Meaning("prompt_tokens_cached", COUNTER, ("sglang:cached_tokens_total",), doc="prompt tokens from the cache"),
        Meaning("requests_running", GAUGE, ("sglang:num_running_reqs",), doc="requests in the running batch"),
        Meaning("requests_waiting", GAUGE, ("sglang:num_queue_reqs",), doc="requests in the waiting queue"),
        Meaning("kv_cache_usage", GAUGE, ("sglang:token_usage",), across="max", doc="KV cache pool in use, 0-1"),
        Meaning("prefix_cache_hit_rate", GAUGE, ("sglang:cache_hit_rate",), across="max",
                doc="prefix cache hit rate, 0-1 (the server's own recent average)"),
        Meaning("gen_throughput", GAUGE, ("sglang:gen_throughput",), doc="the server's own tokens/s"),
        Meaning("preemptions", COUNTER, ("sglang:num_retracted_requests_total",),
                doc="requests retracted (KV cache ran out)"),
        Meaning("requests_finished", COUNTER, ("sglang:num_requests_total",), doc="requests finished"),
        Meaning("ttft", HISTOGRAM, ("sglang:time_to_first_token_seconds",), doc="time to first token, s"),
        Meaning("itl", HISTOGRAM, ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
                doc="time between output tokens, s"),
        Meaning("queue_time", HISTOGRAM, ("sglang:queue_time_seconds",), doc="time waiting, s"),
        Meaning("e2e_latency", HISTOGRAM, ("sglang:e2e_request_latency_seconds",), doc="request latency, s"),
    ),
    enable_hint="SGLang: start it with --enable-metrics to see its queue and token counters beside ours",
)

SERVERS = (LLAMA_CPP, VLLM, SGLANG)
PREFIXES = tuple(s.prefix for s in SERVERS)
GENERIC_HINT = ("the server has no Prometheus /metrics (llama-server: start it with --metrics; "
                "SGLang: --enable-metrics)")


def detect(names: set[str] | list[str]) -> ServerMap | None:
    """The server whose prefix most of these sample names carry; None when none does."""
    counts = {s.server: sum(1 for n in names if n.startswith(s.prefix)) for s in SERVERS}
    best = max(SERVERS, key=lambda s: counts[s.server])
    return best if counts[best.server] else None


def by_name(server: str | None) -> ServerMap | None:
    return next((s for s in SERVERS if s.server == server), None)
