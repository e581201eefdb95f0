"""Runs whose requests mostly failed say so, name the likely cause and exit 1; sweeps never judge
such levels. Against the mock's imitation of llama-cpp-python's --interrupt_requests (issue 19)."""

import json

from conftest import load_json, tpsload
from tpsload.analysis import sweep as sw
from tpsload.analysis.failures import INTERRUPTED

FLAG = "--interrupt_requests False"


def test_interrupted_streams_fail_the_run_and_name_the_server_flag(mock_server, tmp_path):
    """Before: 7 of 8 failed as 'connection lost mid-response' and the run exited 0, with no hint."""
    m = mock_server(ttft_ms=20, itl_ms=5, interrupt=True)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-c", "4", "-n", "8", "--max-tokens", "20", "--json", str(out),
                check=1)
    r = load_json(out)
    s = r["summary"]
    assert s["requests_failed"] >= 6 and s["requests_ok"] + s["requests_failed"] == 8
    assert r["errors"]["by_class"] == {"disconnect": s["requests_failed"]}
    assert r["errors"]["causes"] == {"disconnect": INTERRUPTED}
    loud = r["errors"]["too_many_failed"]
    assert loud.startswith(f"{s['requests_failed']} of 8 requests failed (") and "over --max-failed-share 5%" in loud
    assert FLAG in loud and f"tpsload: {loud}" in p.stderr
    assert "TOO MANY FAILURES" in p.stdout


def test_records_keep_done_and_one_request_at_a_time_is_not_interrupted(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=2, interrupt=True)
    rec = tmp_path / "r.jsonl"
    # closed loop at 1: a request is sent only after the last ended, so nothing interrupts it
    tpsload("run", "--base-url", m.base_url, "-c", "1", "-n", "4", "--max-tokens", "8", "--records", str(rec),
            check=0)
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert [x["ok"] for x in lines] == [True] * 4 and all(x["saw_done"] for x in lines)
    p = tpsload("run", "--base-url", m.base_url, "-c", "4", "-n", "8", "--max-tokens", "20", "--records", str(rec),
                check=1)
    failed = [json.loads(x) for x in rec.read_text().splitlines() if not json.loads(x)["ok"]]
    assert failed and all(x["saw_done"] and x["error_class"] == "disconnect" for x in failed)
    assert FLAG in p.stderr


def test_the_failed_share_limit_is_a_flag(mock_server, tmp_path):
    """One request in four fails (HTTP 500): over the default 5 %, within --max-failed-share 30%."""
    m = mock_server(ttft_ms=1, itl_ms=1, fault=["http_500:every=4"])
    out = tmp_path / "r.json"
    args = ("run", "--base-url", m.base_url, "-c", "2", "-n", "8", "--max-tokens", "4", "--json", str(out))
    p = tpsload(*args, check=1)
    assert "2 of 8 requests failed (25%, over --max-failed-share 5%)" in p.stderr and "http_5xx 2" in p.stderr
    tpsload(*args, "--max-failed-share", "30%", check=0)
    assert load_json(out)["errors"]["too_many_failed"] is None


def test_a_sweep_stops_at_the_level_that_mostly_failed_and_never_judges_it(mock_server, tmp_path):
    """Before: levels 2 and 4 lost most requests, the sweep went on and called throughput 'still growing
    at concurrency 4' from the one request that survived."""
    m = mock_server(ttft_ms=10, itl_ms=3, interrupt=True)
    out = tmp_path / "s.json"
    p = tpsload("sweep", "--base-url", m.base_url, "-c", "1,2,4", "-n", "6", "--max-tokens", "16", "--json", str(out),
                "-q", check=1)
    sweep = load_json(out)
    assert [lv["concurrency"] for lv in sweep["levels"]] == [1, 2]
    assert sweep["stop_reason"].startswith("concurrency 2 failed: ") and FLAG in sweep["stop_reason"]
    assert sweep["stop_reason"] in p.stderr
    sat = sweep["saturation"]
    assert sat["level"] == 1 and not sat["saturated"]
    assert "concurrency 2 (" in sat["text"] and "failed" in sat["text"] and "still growing" not in sat["text"]
    assert sat["failed_levels"] == [f"concurrency 2 ({sweep['levels'][1]['summary']['requests_failed']} of 6 failed)"]


def level(c, ok, failed, steady, out=None, share=None):
    return {"concurrency": c, "partial": False, "config": {"max_failed_share": 0.05},
            "errors": {"too_many_failed": share},
            "summary": {"requests_ok": ok, "requests_failed": failed, "error_rate": failed / (ok + failed),
                        "steady_output_throughput": steady, "output_throughput": out if out is not None else steady}}


def test_verdicts_rest_only_on_levels_that_mostly_succeeded():
    """The issue's sweep, as its results read: 1 fine, 2 and 4 with 5 of 6 failed and a steady rate of 0.0."""
    levels = [level(1, 6, 0, 24.0), level(2, 1, 5, 0.0, out=25.0), level(4, 1, 5, 0.0, out=25.0)]
    sat = sw.saturation(levels, "concurrency", 0.05)
    assert sat["level"] == 1 and sat["throughput"] == 24.0 and not sat["saturated"]
    assert "concurrency 2 (5 of 6 failed), concurrency 4 (5 of 6 failed)" in sat["text"]
    assert "still growing at the highest level" not in sat["text"]
    assert [lv["concurrency"] for lv in sw.finished(levels)] == [1]
    # a level saved without the loud line (an older tpsload) is judged by its error rate
    old = level(2, 1, 5, 0.0)
    del old["errors"]
    assert sw.too_many_failed(old) == "5 of 6 requests failed (83%)"
    # a measured steady rate of 0 stays 0: it is not replaced by the raw rate
    assert sw.throughput(level(1, 4, 0, 0.0, out=25.0)) == 0.0
