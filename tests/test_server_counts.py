"""Counts from the server where it has them, unknown counts left unknown, and the warnings that
say what a server ignored or returned (issue 19). Against the mock, whose truth is known: it
counts one token per word, its output is ' w0 w1 ...' (a word per token), one token per chunk."""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

from conftest import load_json, tpsload


def run_json(tmp_path, url, *args, check=0):
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", url, "--json", str(out), *args, check=check)
    return load_json(out), p


def test_output_counted_by_the_servers_tokenizer_before_any_client_side_one(mock_server, tmp_path):
    """No usage, but a /tokenize route: its counts win, exact (before: chunk counts, marked 'estimate')."""
    for route in ("llama", "vllm", "extras"):
        m = mock_server(ttft_ms=2, itl_ms=1, no_usage=True, tokenize=route)
        r, p = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--max-tokens", "12")
        s = r["summary"]
        assert s["token_sources"] == {"server_tokenizer": 4}, route
        # 12 words; llama-cpp-python's /extras/tokenize adds a BOS token, taken off
        assert s["output_tokens"]["min"] == s["output_tokens"]["max"] == 12, route
        assert s["token_source_diff"] == {"chunks_vs_server_tokenizer": {"n": 4, "mean": 0.0, "max_abs": 0}}
        assert "no tokenizer available" not in p.stderr  # no client-side tokenizer was needed


def test_chunks_are_exact_from_a_server_that_sends_a_token_per_chunk(mock_server, tmp_path):
    """llama-cpp-python streams one token per chunk and no usage: its chunk counts are the counts
    (before: 'estimate'), checked against its own tokenizer."""
    m = mock_server(ttft_ms=2, itl_ms=1, imitate="llama-cpp-python")
    r, _ = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--max-tokens", "10")
    s = r["summary"]
    assert r["server"]["kind"] == "llama-cpp-python"
    assert s["token_sources"] == {"chunks": 4} and s["output_tokens"]["mean"] == 10
    assert s["token_source_diff"] == {"server_tokenizer_vs_chunks": {"n": 4, "mean": 0.0, "max_abs": 0}}


def test_an_estimate_is_not_compared_with_itself(mock_server, tmp_path):
    """Before: token_source_diff.chunks_vs_estimate, the chunk count minus itself, always 0."""
    m = mock_server(ttft_ms=2, itl_ms=1, no_usage=True)
    r, _ = run_json(tmp_path, m.base_url, "-n", "2", "--max-tokens", "6", "--no-stream")
    assert r["summary"]["token_sources"] == {"estimate": 2}
    r, _ = run_json(tmp_path, m.base_url, "-n", "2", "--max-tokens", "6")
    assert r["summary"]["token_sources"] == {"estimate": 2} and r["summary"]["token_source_diff"] == {}


def test_unknown_prompt_tokens_are_null_with_a_note_not_zero(mock_server, tmp_path):
    """Before: total token throughput (prompt + output) silently equalled output throughput."""
    m = mock_server(ttft_ms=2, itl_ms=1, no_usage=True, tokenize="llama")
    r, p = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--max-tokens", "8")
    s = r["summary"]
    assert s["output_throughput"] > 0
    assert s["total_token_throughput"] is None and s["prompt_tokens_total"] is None and s["prompt_tokens"] is None
    note = next(w for w in r["warnings"] if w.startswith("prompt tokens unknown for 4 of 4 requests"))
    assert "total_token_throughput" in note and "--no-stream" in note
    assert re.search(r"Total token throughput\s+–\s+tok/s", p.stdout), p.stdout
    # with usage, the prompt counts are there and the sum is the sum
    m = mock_server(ttft_ms=2, itl_ms=1)
    r, _ = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--max-tokens", "8", "--prompt", "a b c d e")
    s = r["summary"]
    assert s["prompt_tokens_total"] == 20
    assert abs(s["total_token_throughput"] - (20 + 32) / s["duration_s"]) < 1e-6
    assert not any(w.startswith("prompt tokens unknown") for w in r["warnings"])


def test_non_streaming_runs_have_a_steady_throughput(mock_server, tmp_path):
    """Before: 'steady state 0.0 tok/s' beside a real output throughput. Each request of the mock
    takes ttft + (n-1) * itl = 20 + 19 * 10 = 210 ms for 20 tokens; 4 at a time: 4 * 20 / 0.21 s."""
    m = mock_server(ttft_ms=20, itl_ms=10)
    r, p = run_json(tmp_path, m.base_url, "-c", "4", "-n", "16", "--max-tokens", "20", "--no-stream")
    s = r["summary"]
    truth = 4 * 20 / 0.210
    assert 0.75 * truth < s["steady_output_throughput"] < 1.1 * truth, (s["steady_output_throughput"], truth)
    assert s["steady_output_throughput"] >= 0.9 * s["output_throughput"]


def test_min_tokens_goes_to_servers_that_accept_it_and_the_warning_names_the_ignored_flag(mock_server, tmp_path):
    """The model stops after 5 tokens. llama-cpp-python drops ignore_eos but honours min_tokens,
    which tpsload now sends it (before: 5 tokens each, and a warning that named no flag)."""
    m = mock_server(ttft_ms=2, itl_ms=1, imitate="llama-cpp-python", eos_at=5)
    r, _ = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--output-tokens", "20")
    assert r["summary"]["output_tokens"]["min"] == 20
    assert not any("stopped before" in w for w in r["warnings"])
    assert r["workload"]["observed"]["stopped_early"] == 0
    # a server that drops ignore_eos and is not known to take min_tokens: the warning says so
    m = mock_server(ttft_ms=2, itl_ms=1, eos_at=5, drop_ignore_eos=True)
    r, _ = run_json(tmp_path, m.base_url, "-n", "2", "--output-tokens", "20")
    assert r["summary"]["output_tokens"]["max"] == 5
    w = next(w for w in r["warnings"] if "stopped before their max_tokens" in w)
    assert w.startswith("2 of 2 requests stopped before their max_tokens although ignore_eos was sent: "
                        "the server ignored ignore_eos") and "min_tokens" in w
    # both sent and both ignored
    r, _ = run_json(tmp_path, m.base_url, "-n", "2", "--output-tokens", "20", "--extra-body", '{"min_tokens": 3}')
    assert any("ignore_eos and min_tokens were sent: the server ignored both" in w for w in r["warnings"])


def test_empty_replies_are_warned_about(mock_server, tmp_path):
    """Before: 0 output tokens on every request passed as a fine run with throughput 0.0."""
    m = mock_server(ttft_ms=2, itl_ms=1, empty_replies=True)
    for mode in ("--stream", "--no-stream"):
        r, p = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", mode)
        assert r["summary"]["requests_ok"] == 4 and r["summary"]["output_tokens_total"] == 0
        w = next(w for w in r["warnings"] if "returned no output" in w)
        assert w.startswith("4 of 4 successful requests returned no output (0 tokens)") and "chat template" in w
        assert w in " ".join(p.stdout.split())


def test_prompt_sizing_through_extras_tokenize(mock_server, tmp_path):
    """A server whose only tokenize route is llama-cpp-python's /extras/tokenize (before: a word count,
    marked approximate)."""
    m = mock_server(ttft_ms=2, itl_ms=1, tokenize="extras")
    r, _ = run_json(tmp_path, m.base_url, "-c", "2", "-n", "4", "--max-tokens", "4", "--input-tokens", "32",
                    "--no-stream")
    w = r["workload"]
    assert w["length_counter"] == "server /extras/tokenize (llama-cpp-python)" and w["lengths_exact"] is True
    assert w["observed"]["prompt_tokens"]["min"] == w["observed"]["prompt_tokens"]["max"] == 32


def test_the_offline_tokenizer_notice_is_never_cut_inside_a_url(tmp_path):
    """A proxy that refuses the tunnel: urllib3's message names the pool, host and URL before its
    cause, and the notice cut it at 120 characters, inside the URL."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def refuse():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.recv(4096)
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=refuse, daemon=True)
    t.start()
    code = ("from tpsload.workload.tokenizer import Tokenizer; n = []; Tokenizer(notice=n.append).count('x'); "
            "print(n[0])")
    env = dict(os.environ, HTTPS_PROXY=f"http://127.0.0.1:{srv.getsockname()[1]}",
               TIKTOKEN_CACHE_DIR=tempfile.mkdtemp(dir=tmp_path))
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    try:
        notice = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                timeout=60).stdout.strip()
    finally:
        stop.set()
        srv.close()
    assert notice.startswith("tpsload: no tokenizer available offline (cl100k_base: ")
    assert "403 Forbidden" in notice and notice.endswith("(pass --tokenizer FILE.tiktoken)")
    assert "/encodings/cl" not in notice or "/encodings/cl100k_base.tiktoken" in notice
    assert "\n" not in notice
