"""Token counts from the best source, and the offline tokenizer fallback."""

import base64

from conftest import load_json, tpsload
from tpsload.core.tokens import apply_counts, resolve_pending
from tpsload.protocol.openai import Decoded
from tpsload.records import RequestRecord
from tpsload.workload.tokenizer import Tokenizer


def byte_level_tiktoken(path):
    """A valid .tiktoken file with only the 256 single-byte tokens: one token per byte."""
    path.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    return path


def rec_with(usage=None, timings=None, chunks=3, text="abc"):
    r = RequestRecord(index=0)
    r.t_send, r.t_end = 1, 2
    d = Decoded(chunk_times=list(range(chunks)), usage=usage, timings=timings, text_parts=[text])
    apply_counts(r, d)
    return r


def test_usage_wins_over_timings_and_chunks():
    r = rec_with(usage={"completion_tokens": 5, "prompt_tokens": 9, "total_tokens": 14},
                 timings={"predicted_n": 6, "cache_n": 2, "prompt_n": 7})
    assert (r.output_tokens, r.token_source) == (5, "usage")
    assert r.token_counts == {"usage": 5, "timings": 6, "chunks": 3}
    assert r.prompt_tokens == 9 and r.cached_tokens == 2
    assert r.text is None  # not kept when a server count exists


def test_timings_when_no_usage():
    r = rec_with(timings={"predicted_n": 4, "prompt_n": 7, "cache_n": 3})
    assert (r.output_tokens, r.token_source) == (4, "timings")
    assert r.prompt_tokens == 10  # llama.cpp's prompt_n excludes cached tokens


def test_never_total_tokens():
    r = rec_with(usage={"total_tokens": 100, "prompt_tokens": 90})
    assert r.output_tokens is None and r.text == "abc"


def test_tokenizer_file_then_estimate(tmp_path):
    r = rec_with()
    resolve_pending([r], Tokenizer(str(byte_level_tiktoken(tmp_path / "b.tiktoken"))))
    assert (r.output_tokens, r.token_source) == (3, "tokenizer")
    notices = []
    r = rec_with(chunks=2)
    resolve_pending([r], Tokenizer(str(tmp_path / "missing.tiktoken"), notice=notices.append))
    assert (r.output_tokens, r.token_source) == (2, "estimate") and len(notices) == 1


def test_run_without_usage_uses_tokenizer_file(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, no_usage=True)
    tok = byte_level_tiktoken(tmp_path / "b.tiktoken")
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-n", "2", "--max-tokens", "10", "--tokenizer", str(tok),
            "--json", str(out), check=0)
    s = load_json(out)["summary"]
    text_bytes = len("".join(f" w{i}" for i in range(10)))
    assert s["token_sources"] == {"tokenizer": 2}
    assert s["output_tokens"]["mean"] == text_bytes
    assert s["token_source_diff"]["chunks_vs_tokenizer"]["mean"] == 10 - text_bytes


def test_run_without_usage_or_tokenizer_is_an_estimate_not_a_failure(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, no_usage=True)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-n", "2", "--max-tokens", "10", "--json", str(out), check=0)
    s = load_json(out)["summary"]
    assert s["token_sources"] == {"estimate": 2} and s["output_tokens"]["mean"] == 10
    assert p.stderr.count("no tokenizer available") == 1
