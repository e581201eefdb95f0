"""The typed result: built once (app.result.run_result), written as METRICS.md's JSON by render.json.

Runs are real (the bundled mock on 127.0.0.1, in this process, so the typed value and the
records can be inspected next to the JSON they become).
"""

import datetime as dt
import io
import json
import pickle

import pytest

from tpsload.analysis import slo
from tpsload.analysis.stats import Errors, Summary
from tpsload.app.measure import measure_repeated
from tpsload.app.result import SAMPLE_COLUMNS, ClientHealth, RunResult, run_result
from tpsload.config import RunConfig
from tpsload.records import ErrorClass, RequestRecord, TokenSource, write_jsonl
from tpsload.render import json as export_json

# The result JSON's keys, in the order written today: the contract scripts read (METRICS.md).
TOP = ["tpsload_version", "label", "tags", "partial", "stop_reason", "started_at", "config", "workload", "server",
       "client", "summary", "client_health", "samples", "slo", "errors", "warnings", "requests_started",
       "accounting", "clock", "warmup_requests"]
SUMMARY = ["requests_ok", "requests_failed", "requests_cancelled", "requests_retried", "duration_s",
           "output_throughput", "total_token_throughput", "request_throughput", "steady_output_throughput",
           "concurrency_achieved", "error_rate", "output_tokens_total", "prompt_tokens_total", "ttft_ms", "itl_ms",
           "icl_ms", "tpot_ms", "e2e_latency_ms", "decode_tps", "e2e_tps", "prefill_tps", "output_tokens",
           "prompt_tokens", "cached_tokens", "token_sources", "token_source_diff", "server_predicted_tps",
           "connect_ms", "send_ms", "ttfb_ms", "connections_opened", "connections_reused", "preconnected"]
REASONING = ["requests_reasoning", "ttfa_ms", "reasoning_tokens", "answer_tokens", "reasoning_decode_tps",
             "answer_decode_tps", "reasoning_sources"]
OPEN_LOOP = ["achieved_rate", "send_lag_ms", "ttft_sched_ms", "e2e_latency_sched_ms"]
HEALTH = ["loop_lag_ms", "send_lag_ms", "late_send_share", "send_delay_ms", "slow_send_share", "cap_wait_ms",
          "cap_wait_share", "cap_note",
          "cpu_s", "cpu_share", "client_bound", "reasons",
          "read_path", "read_path_reason", "write_path", "write_path_reason"]
DIST = ["n", "mean", "std", "min", "p50", "p90", "p95", "p99", "p99_9", "max"]
TTFT, ITL, TOKENS = 20.0, 5.0, 8


def measure(base_url, repeat=1, **flat):
    cfg = RunConfig.of(base_url=base_url, max_tokens=TOKENS, **flat)
    result, state = measure_repeated(cfg, repeat, show_progress=False)
    return cfg, result, state


def retyped(cfg, result, state) -> RunResult:
    """The typed result again, from the run's own state and descriptions."""
    return run_result(cfg, state, result["workload"], result["server"], dt.datetime.fromisoformat(result["started_at"]),
                      result["warnings"], result["model"], result.get("server_metrics"))


def test_enums_are_their_words_in_every_form():
    for e in (*ErrorClass, *TokenSource):
        word = e.value
        assert e == word and hash(e) == hash(word) and {word: 1}[e] == 1
        # f-strings build keys such as token_source_diff's "chunks_vs_usage"
        assert f"{e}" == str(e) == word and f"{e:>20}" == f"{word:>20}"
        assert json.dumps({e: [e]}) == json.dumps({word: [word]})
        plain = export_json.plain({e: e})
        assert plain == {word: word} and all(type(x) is str for x in (*plain, *plain.values()))
        assert type(e)(word) is e and pickle.loads(pickle.dumps(e)) is e  # workers send records pickled


def test_closed_loop_result_is_typed_and_written_with_todays_keys(mock_server):
    m = mock_server(ttft_ms=TTFT, itl_ms=ITL, fault=["http_500:n=3", "disconnect:n=5"])
    slos = (slo.parse("ttft_p99<=2s"), slo.parse("error_rate<=1%"))
    cfg, result, state = measure(m.base_url, concurrency=2, requests=8, slos=slos, single=False, label="L",
                                 tags=(("gpu", "none"),))
    typed = retyped(cfg, result, state)
    assert isinstance(typed.summary, Summary) and isinstance(typed.client_health, ClientHealth)
    assert isinstance(typed.errors, Errors) and typed.slo is not None

    # one serialisation: the typed value written is exactly the result handed on
    assert export_json.plain(typed) == result
    assert json.loads(export_json.dumps(typed)) == result
    assert list(result) == TOP + ["model", "server_metrics"]
    assert list(result["summary"]) == SUMMARY + ["goodput", "goodput_tokens"] + REASONING
    assert list(result["client_health"]) == HEALTH and list(result["summary"]["ttft_ms"]) == DIST
    # ttfa_ms only where a request reasoned (this mock's do not)
    assert list(result["samples"]) == [*(c for c in SAMPLE_COLUMNS if c != "ttfa_ms"), "duration_s"]
    assert result["label"] == "L" and result["tags"] == {"gpu": "none"} and result["config"]["slos"] == [
        "ttft_p99<=2s", "error_rate<=1%"]

    # error classes and token sources: members in the records, plain words in the JSON
    failed = {r.index: r.error_class for r in state.records if r.error_class}
    assert sorted(failed.values()) == [ErrorClass.DISCONNECT, ErrorClass.HTTP_5XX]
    assert all(type(c) is ErrorClass for c in failed.values())
    assert typed.errors.by_class == {ErrorClass.HTTP_5XX: 1, ErrorClass.DISCONNECT: 1}
    assert result["errors"]["by_class"] == {"http_5xx": 1, "disconnect": 1}
    assert {type(r.token_source) for r in state.records if r.ok} == {TokenSource}
    assert typed.summary.token_sources == {TokenSource.USAGE: 6} and result["summary"]["token_sources"] == {"usage": 6}
    # keys made of two source names: the mock sends a token per chunk, so the chunk count agrees
    assert result["summary"]["token_source_diff"] == {"chunks_vs_usage": {"n": 6, "mean": 0.0, "max_abs": 0}}
    buf = io.StringIO()
    write_jsonl(state.records, state.t0, buf)
    lines = {r["index"]: r for r in map(json.loads, buf.getvalue().splitlines())}
    assert {lines[i]["error_class"] for i in failed} == {"http_5xx", "disconnect"}
    assert {r["token_source"] for r in lines.values() if r["ok"]} == {"usage"}

    s = result["summary"]
    assert s["requests_ok"] == 6 and s["requests_failed"] == 2 and s["error_rate"] == pytest.approx(2 / 8)
    v = {o["slo"]: o for o in result["slo"]["objectives"]}
    assert v["error_rate<=1%"]["value"] == pytest.approx(0.25) and not v["error_rate<=1%"]["met"]
    assert v["ttft_p99<=2s"]["met"] and not result["slo"]["all_met"]


def test_open_loop_repeats_keep_their_keys_and_means(mock_server):
    m = mock_server(ttft_ms=TTFT, itl_ms=ITL)
    cfg, result, state = measure(m.base_url, repeat=2, concurrency=0, rate=40.0, requests=6, single=False)
    assert list(result) == TOP + ["model", "repeat_spread", "repeats"]
    assert list(result["summary"]) == SUMMARY + OPEN_LOOP + ["goodput", "goodput_tokens", "offered_rate"] + REASONING
    s, reps = result["summary"], [r["summary"] for r in result["repeats"]]
    assert s["offered_rate"] == 40.0 and s["requests_ok"] == 12 and result["accounting"]["balanced"]
    # per-run numbers are the repetitions' mean, open loop's achieved rate included; durations add up
    for key in ("achieved_rate", "output_throughput", "goodput"):
        assert s[key] == pytest.approx((reps[0][key] + reps[1][key]) / 2) and result["repeat_spread"][key]["n"] == 2
    assert s["duration_s"] == pytest.approx(reps[0]["duration_s"] + reps[1]["duration_s"])
    assert list(result["repeat_spread"]["achieved_rate"]) == ["n", "mean", "std", "min", "max", "cv"]
    assert result["slo"] is None and list(result["repeats"][0]) == ["summary", "client_health", "partial",
                                                                   "started_at"]


def test_one_request_keeps_the_original_scripts_fields(mock_server):
    m = mock_server(ttft_ms=TTFT, itl_ms=ITL)
    cfg, result, state = measure(m.base_url)
    assert list(result) == TOP + ["mode", "tokens", "elapsed_seconds", "tokens_per_second", "model"]
    assert result["mode"] == "stream" and result["tokens"] == TOKENS
    assert result["elapsed_seconds"] == pytest.approx((TOKENS - 1) * ITL / 1000, rel=0.3)
    assert export_json.plain(retyped(cfg, result, state)) == result


def test_records_json_is_unchanged_by_the_enums():
    r = RequestRecord(index=0, t_send=0, t_end=10, error_class=ErrorClass.TIMEOUT_STREAM, error="late",
                      token_source=TokenSource.ESTIMATE, token_counts={"chunks": 3})
    buf = io.StringIO()
    write_jsonl([r], 0, buf)
    line = json.loads(buf.getvalue())
    assert line["error_class"] == "timeout_stream" and line["token_source"] == "estimate" and not line["ok"]
    assert '"error_class":"timeout_stream"' in buf.getvalue()


def test_a_written_result_is_as_readable_as_any_file_the_user_writes(tmp_path):
    # the atomic write goes through a private temp file: the result must not stay private (0600)
    ours, plain = tmp_path / "r.json", tmp_path / "plain.json"
    export_json.write_text(str(ours), "{}\n")
    plain.write_text("{}\n")
    assert ours.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tpsload-")]
