"""Every fault the mock can inject, with real sockets: classified, accounted for, nothing measured lost."""

import json
import subprocess
import sys
import time

import pytest

from conftest import load_json, tpsload
from tpsload.mock.faults import FaultPlan, parse_fault

KEY = "sk-fault-SECRET-99"


def run(m, tmp_path, *args, n=6, check=None):
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    p = tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", str(n), "--max-tokens", "10", "--json", str(out),
                "--records", str(rec), *args, check=check)
    res = load_json(out)
    records = [json.loads(line) for line in rec.read_text().splitlines()]
    acct = res["accounting"]
    assert acct["balanced"] and acct["started"] == n == len(records), acct
    return res, records, p


# fault -> (error class of the faulted request, extra run args)
CLASSIFIED = {
    "http_500": ("http_5xx", ()),
    "http_503": ("http_5xx", ()),
    "http_429": ("http_429", ()),
    "http_400": ("http_4xx", ()),
    "disconnect": ("disconnect", ()),
    "stall_first": ("timeout_first_byte", ("--first-byte-timeout", "0.5")),
    "stall_stream": ("timeout_stream", ("--timeout", "1.5")),
    "malformed": ("protocol", ()),
    "non_utf8": ("protocol", ()),
    "error_event": ("stream_error", ()),
}


@pytest.mark.parametrize("fault", sorted(CLASSIFIED))
def test_fault_is_classified_and_the_rest_is_measured(mock_server, tmp_path, fault):
    cls, args = CLASSIFIED[fault]
    m = mock_server(ttft_ms=20, itl_ms=5, fault=[f"{fault}:n=3"], stall_s=5, api_key=KEY)
    res, records, p = run(m, tmp_path, "--api-key", KEY, *args)
    assert res["errors"]["by_class"] == {cls: 1}, res["errors"]
    s = res["summary"]
    assert s["requests_ok"] == 5 and s["requests_failed"] == 1 and s["error_rate"] == pytest.approx(1 / 6)
    # errors never enter latency statistics
    assert s["ttft_ms"]["n"] == 5 and s["output_tokens"]["n"] == 5
    bad = [r for r in records if not r["ok"]]
    assert len(bad) == 1 and bad[0]["error_class"] == cls and bad[0]["error"]
    if fault in ("disconnect", "stall_stream", "malformed", "non_utf8", "error_event"):
        # it failed mid-stream: what came before is kept
        assert bad[0]["t_first_ms"] is not None and bad[0]["token_counts"]["chunks"] >= 5
    for text in (json.dumps(res), json.dumps(records), p.stdout, p.stderr):
        assert KEY not in text
    assert res["errors"]["examples"][cls] in p.stdout  # first message of each class is shown
    if fault == "http_429":
        assert "Retry-After: 1" in bad[0]["error"]


@pytest.mark.parametrize("fault", ["no_done", "oversized", "slow_headers"])
def test_survivable_faults_succeed(mock_server, tmp_path, fault):
    m = mock_server(ttft_ms=20, itl_ms=5, fault=[f"{fault}:n=2"])
    res, records, _ = run(m, tmp_path, check=0)
    assert res["summary"]["requests_ok"] == 6, res["errors"]
    assert all(r["output_tokens"] == 10 for r in records)
    if fault == "slow_headers":
        slow = [r for r in records if r["t_first_ms"] - r["t_send_ms"] > 700]
        assert len(slow) == 1  # four header lines, 0.2 s apart


def test_oversized_response_limit(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, fault=["oversized:n=1"])
    res, _, _ = run(m, tmp_path, "--max-response-mb", "1")
    assert res["errors"]["by_class"] == {"protocol": 1}
    assert "larger than" in res["errors"]["examples"]["protocol"]


def test_reset_before_headers_is_a_disconnect(mock_server, tmp_path):
    m = mock_server(fault=["reset"])
    # without pre-connect each request's first connection is fresh, and a fresh connection that fails is not
    # retried (a pre-connected one has carried a reply: it may have gone stale in the pool, and is retried once)
    res, records, p = run(m, tmp_path, "--no-preconnect", check=1)
    assert res["errors"]["by_class"] == {"disconnect": 6}
    assert all(r["retries"] == 0 for r in records)
    assert "Traceback" not in p.stderr
    res, records, p = run(m, tmp_path, check=1)
    assert res["errors"]["by_class"] == {"disconnect": 6} and "Traceback" not in p.stderr


def test_max_errors_stops_early_with_reason(mock_server, tmp_path):
    m = mock_server(ttft_ms=2, itl_ms=1, fault=["http_500:every=2"])
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "1000", "--max-tokens", "5", "--max-errors", "5",
                "--json", str(out), check=1)
    res = load_json(out)
    assert res["partial"] is True and "--max-errors 5" in res["stop_reason"]
    assert 5 <= res["summary"]["requests_failed"] <= 7 and res["requests_started"] < 20
    assert res["accounting"]["balanced"]
    assert "stopped early" in p.stderr


def test_max_error_rate(mock_server, tmp_path):
    m = mock_server(ttft_ms=2, itl_ms=1, fault=["http_503:p=0.5"], seed=1)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "1000", "--max-tokens", "5", "--max-error-rate",
            "10%", "--json", str(out), check=1)
    res = load_json(out)
    assert "--max-error-rate 10.0%" in res["stop_reason"] and res["requests_started"] < 40


def test_server_killed_mid_run_leaves_a_partial_result(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "100000", "--max-tokens", "40", "--json", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    m.kill()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    res = load_json(out)
    assert res["partial"] is True and "server unreachable" in res["stop_reason"]
    by_class = res["errors"]["by_class"]
    assert by_class.get("connect", 0) >= 16
    assert res["summary"]["requests_ok"] >= 4  # what was measured before the crash is kept
    assert res["accounting"]["balanced"]
    assert "server unreachable" in stderr and "Traceback" not in stderr


def test_tls_to_a_plain_http_server_is_one_line(mock_server):
    m = mock_server()
    p = tpsload("run", "--base-url", m.base_url.replace("http://", "https://"), check=2)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_fault_specs():
    assert parse_fault("http_500:n=3").n == 3
    assert parse_fault("reset:p=0.25").p == 0.25
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("nope")
    with pytest.raises(ValueError):
        parse_fault("reset:p=2")
    plan = FaultPlan((parse_fault("http_500:every=3"), parse_fault("reset:n=4")))
    assert [plan.pick(i) for i in range(1, 7)] == [None, None, "http_500", "reset", None, "http_500"]
    a = FaultPlan((parse_fault("reset:p=0.5"),), seed=7)
    b = FaultPlan((parse_fault("reset:p=0.5"),), seed=7)
    assert [a.pick(i) for i in range(50)] == [b.pick(i) for i in range(50)]


def test_a_stopped_mock_ends_at_once_with_a_request_stalled():
    # a handler asleep in a stall (its client long gone) must not hold the mock's exit: stop() sends SIGTERM and
    # would wait 5 s before SIGKILL, which every test that stalls a request paid in its teardown
    import urllib.request

    from tpsload.mock import MockProcess

    with MockProcess(ttft_ms=1, itl_ms=1, fault=["stall_first:n=1"], stall_s=60) as m:
        body = json.dumps({"model": "tpsload-mock", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(m.base_url + "/chat/completions", body, {"Content-Type": "application/json"})
        with pytest.raises(OSError):  # TimeoutError (an OSError): the stall holds the reply
            urllib.request.urlopen(req, timeout=0.5)
        t = time.monotonic()
        m.stop()
        took = time.monotonic() - t
    assert m.proc.returncode == 0 and took < 3, (m.proc.returncode, took)
