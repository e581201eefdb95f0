"""End to end against a second real server: llama-cpp-python's (`python -m llama_cpp.server`,
0.3.16, Gemma 3 270M, built by `make llama-cpp-python`). Issue 19's "done when", checked here.

Truth used: with --output-tokens M tpsload sends max_tokens = min_tokens = M (this server drops
ignore_eos but honours min_tokens), so every reply has exactly M tokens; the server's own usage
(non-streaming) counts prompts; --interrupt_requests is on by default there.
"""

import pytest

from conftest import load_json, tpsload
from tpsload.analysis.failures import INTERRUPTED

pytestmark = [pytest.mark.llama_cpp_python, pytest.mark.slow]

M = 12


def run(srv, tmp_path, *args, check=0, name="r.json"):
    out = tmp_path / name
    p = tpsload("run", "--base-url", srv.base_url, "--json", str(out), *args, timeout=300, check=check)
    return load_json(out), p


def test_defaults_interrupt_running_streams_and_the_run_says_so(llama_cpp_python, tmp_path):
    r, p = run(llama_cpp_python(interrupt=True), tmp_path, "-c", "4", "-n", "8", "--output-tokens", str(M), check=1)
    assert r["server"]["kind"] == "llama-cpp-python" and r["server"]["version"] == "0.3.16"
    s = r["summary"]
    assert s["requests_failed"] >= 4, s
    assert r["errors"]["causes"]["disconnect"] == INTERRUPTED
    assert "--interrupt_requests False" in p.stderr and r["errors"]["too_many_failed"] in p.stderr


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_streams_at_c4_without_interruption_are_exact(llama_cpp_python, tmp_path, endpoint):
    r, p = run(llama_cpp_python(interrupt=False), tmp_path, "-c", "4", "-n", "8", "--output-tokens", str(M),
               "--endpoint", endpoint)
    s = r["summary"]
    assert (s["requests_ok"], s["requests_failed"]) == (8, 0)
    # one token per chunk, and min_tokens forced M: the chunk counts are exact, not estimates
    assert s["token_sources"] == {"chunks": 8}
    assert s["output_tokens"]["min"] == s["output_tokens"]["max"] == M
    assert s["token_source_diff"]["server_tokenizer_vs_chunks"]["n"] == 8
    assert s["steady_output_throughput"] and s["steady_output_throughput"] > 0
    # no usage when streaming: prompt tokens unknown, and said so
    assert s["total_token_throughput"] is None
    assert any(w.startswith("prompt tokens unknown for 8 of 8") for w in r["warnings"])
    assert "no tokenizer available" not in p.stderr


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_non_streaming_has_usage_and_a_steady_throughput(llama_cpp_python, tmp_path, endpoint):
    r, _ = run(llama_cpp_python(interrupt=False), tmp_path, "-c", "4", "-n", "8", "--output-tokens", str(M),
               "--no-stream", "--endpoint", endpoint)
    s = r["summary"]
    assert (s["requests_ok"], s["token_sources"]) == (8, {"usage": 8})
    assert s["output_tokens"]["min"] == s["output_tokens"]["max"] == M
    assert s["steady_output_throughput"] is not None and s["steady_output_throughput"] > 0
    assert s["total_token_throughput"] > s["output_throughput"]


def test_one_at_a_time_the_default_server_is_fine(llama_cpp_python, tmp_path):
    r, _ = run(llama_cpp_python(interrupt=True), tmp_path, "-c", "1", "-n", "3", "--output-tokens", str(M))
    s = r["summary"]
    assert (s["requests_ok"], s["requests_failed"], s["token_sources"]) == (3, 0, {"chunks": 3})


def test_input_tokens_exact_by_the_servers_own_count(llama_cpp_python, tmp_path):
    r, _ = run(llama_cpp_python(interrupt=False), tmp_path, "-c", "2", "-n", "4", "--input-tokens", "128",
               "--max-tokens", "2", "--no-stream")
    w = r["workload"]
    assert w["length_counter"] == "server /extras/tokenize (llama-cpp-python)" and w["lengths_exact"]
    assert w["observed"]["prompt_tokens"]["min"] == w["observed"]["prompt_tokens"]["max"] == 128


def test_a_short_sweep(llama_cpp_python, tmp_path):
    out = tmp_path / "s.json"
    args = ("-c", "1,2", "-n", "4", "--output-tokens", str(M), "--json", str(out), "-q")
    tpsload("sweep", "--base-url", llama_cpp_python(interrupt=False).base_url, *args, timeout=300, check=0)
    sweep = load_json(out)
    assert [lv["concurrency"] for lv in sweep["levels"]] == [1, 2] and sweep["saturation"]["level"] in (1, 2)
    assert sweep["saturation"]["failed_levels"] == []
    # with its defaults, the level at 2 is interrupted: named, never judged
    p = tpsload("sweep", "--base-url", llama_cpp_python(interrupt=True).base_url, *args, timeout=300, check=1)
    sweep = load_json(out)
    assert sweep["stop_reason"].startswith("concurrency 2 failed: ") and "--interrupt_requests False" in p.stderr
    assert sweep["saturation"]["level"] == 1 and "concurrency 2 (" in sweep["saturation"]["text"]
