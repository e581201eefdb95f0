"""The servers tpsload tells apart (servers.detect), and what it knows of each that changes what it
sends or how it counts. A base module: workload, core and app read these without importing servers/."""

from __future__ import annotations

KINDS = ("llama-server", "llama-cpp-python", "vllm", "sglang", "ollama", "lmstudio")
# send exactly one token per output chunk: their chunk count is the token count
ONE_TOKEN_PER_CHUNK = frozenset({"llama-cpp-python"})
# accept `min_tokens` in the request body (llama-cpp-python drops `ignore_eos` but honours it)
ACCEPT_MIN_TOKENS = frozenset({"vllm", "sglang", "llama-cpp-python"})
# ignore `ignore_eos`
DROP_IGNORE_EOS = frozenset({"llama-cpp-python"})
