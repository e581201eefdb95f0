"""Thinking models end to end: the mock streams R reasoning tokens before A answer tokens, in either field
name, and the run must find the first answer R inter-token gaps after the first output, and split the
output into its reasoning and answer parts, streamed or not (issue 14)."""

import json

import numpy as np
import pytest

from conftest import load_json, tpsload

TTFT, ITL, R, A, N = 60.0, 20.0, 16, 8, 4


def run(base_url, tmp_path, *args):
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    p = tpsload("run", "--base-url", base_url, "--json", str(out), "--records", str(rec), "-n", str(N), "-c", "2",
                "--max-tokens", str(R + A), "--slo", "ttfa_p99<=5s", *args, check=0)
    return load_json(out), [json.loads(line) for line in rec.read_text().splitlines()], p.stdout


@pytest.mark.parametrize("field,usage", [("reasoning_content", True), ("reasoning", False)])
def test_reasoning_phase_streamed_and_not_and_none(mock_server, tmp_path, field, usage):
    # without reasoning in usage, a stream's count comes from its chunks (an estimate, exact here: one token
    # per chunk) and a whole reply's from the server's tokenizer on its reasoning text
    m = mock_server(ttft_ms=TTFT, itl_ms=ITL, reasoning_tokens=R, reasoning_field=field,
                    no_reasoning_usage=not usage, tokenize="llama")
    res, records, out = run(m.base_url, tmp_path)
    s = res["summary"]
    assert s["requests_ok"] == N and s["requests_reasoning"] == N
    assert s["reasoning_sources"] == {"usage" if usage else "estimate": N}
    assert all((r["output_tokens"], r["reasoning_tokens"], r["answer_tokens"]) == (R + A, R, A) for r in records)
    assert all(r["reasoning_chunks"] == R and r["content_chunks"] == A for r in records)
    # the answer begins R tokens into the output: ttfa - ttft = R x ITL, within the ITL tolerance
    gap = np.array([r["t_answer_ms"] - r["t_first_ms"] for r in records])
    assert gap.mean() == pytest.approx(R * ITL, rel=0.02), gap
    assert s["ttfa_ms"]["mean"] - s["ttft_ms"]["mean"] == pytest.approx(R * ITL, rel=0.02)
    assert s["ttft_ms"]["min"] >= TTFT - 1.0  # TTFT is still the first output of any kind
    assert s["reasoning_decode_tps"]["p50"] == pytest.approx(1000 / ITL, rel=0.03)
    assert s["answer_decode_tps"]["p50"] == pytest.approx(1000 / ITL, rel=0.03)
    assert (s["reasoning_tokens"]["mean"], s["answer_tokens"]["mean"]) == (R, A)
    assert res["slo"]["objectives"][0]["metric"] == "ttfa_ms" and res["slo"]["all_met"]
    assert "TTFA (first answer)" in out and "Reasoning tokens" in out

    res, records, _ = run(m.base_url, tmp_path, "--no-stream")
    s = res["summary"]
    assert s["requests_ok"] == N and s["requests_reasoning"] == N
    assert s["reasoning_sources"] == {"usage" if usage else "server_tokenizer": N}
    assert all((r["output_tokens"], r["reasoning_tokens"], r["answer_tokens"]) == (R + A, R, A) for r in records)
    # a reply that comes whole has no first token, nor a first answer: both null
    assert s["ttft_ms"] is None and s["ttfa_ms"] is None

    if usage:  # a model that does not reason (the mock's completions carry no reasoning): ttfa is ttft
        res, records, out = run(m.base_url, tmp_path, "--endpoint", "completions")
        s = res["summary"]
        assert all(r["t_answer_ms"] == r["t_first_ms"] and r["reasoning_tokens"] == 0
                   and r["reasoning_source"] is None and r["answer_tokens"] == r["output_tokens"] == R + A
                   for r in records)
        assert s["ttfa_ms"] == s["ttft_ms"] and s["answer_decode_tps"] == s["decode_tps"]
        assert s["requests_reasoning"] == 0 and s["reasoning_decode_tps"] is None and s["reasoning_sources"] == {}
        assert "TTFA" not in out  # the console shows it only where a request reasoned
