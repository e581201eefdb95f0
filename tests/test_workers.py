"""--workers: the load split over processes, merged into one result of the same form."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import load_json, tpsload
from tpsload.config import RunConfig
from tpsload.mock import MockProcess
from tpsload.scale.processes import apportion, split


def test_apportion_is_exact():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [2, 1]) == [5, 2]
    assert sum(apportion(1001, [3, 5, 7])) == 1001


def test_split_closed_loop_and_open_loop():
    cfg = RunConfig.of(base_url="http://x/v1", concurrency=5, requests=50, warmup=4, single=False)
    parts = split(cfg, 2, start_ns=123)
    assert [c.load.concurrency for c, _ in parts] == [3, 2]
    assert [c.load.requests for c, _ in parts] == [30, 20] and [c.load.warmup for c, _ in parts] == [2, 2]
    idx = [i for _, s in parts for i in (*s.warmup_indices, *s.indices)]
    assert sorted(idx) == list(range(54))
    assert all(s.start_ns == 123 for _, s in parts)
    cfg = RunConfig.of(base_url="http://x/v1", concurrency=0, rate=10, requests=20, warmup=2, single=False)
    parts = split(cfg, 2, start_ns=1_000)
    times = sorted(t for _, s in parts for t in s.times_ns)
    assert len(times) == 22 and times[0] == 1_000
    assert times[-1] - times[0] == pytest.approx(21 / 10 * 1e9, rel=1e-6)  # the one shared schedule


def run(base_url, tmp_path, name, *args):
    out, rec = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    tpsload("run", "--base-url", base_url, "--json", str(out), "--records", str(rec), *args, check=0)
    return load_json(out), [json.loads(line) for line in rec.read_text().splitlines()]


def test_two_workers_match_one_process(mock_server, tmp_path):
    m = mock_server(ttft_ms=50, itl_ms=10)
    load = ("-c", "8", "-n", "48", "--max-tokens", "24", "--warmup", "4")
    one, _ = run(m.base_url, tmp_path, "one", *load)
    two, recs = run(m.base_url, tmp_path, "two", *load, "--workers", "2")
    a, b = one["summary"], two["summary"]
    assert b["requests_ok"] == a["requests_ok"] == 48 and b["output_tokens_total"] == a["output_tokens_total"]
    assert sorted(r["index"] for r in recs) == list(range(52)) and sum(r["warmup"] for r in recs) == 4
    assert b["ttft_ms"]["mean"] == pytest.approx(a["ttft_ms"]["mean"], abs=3.0)
    assert b["itl_ms"]["n"] == a["itl_ms"]["n"] and b["itl_ms"]["mean"] == pytest.approx(a["itl_ms"]["mean"], rel=0.02)
    assert b["concurrency_achieved"] == pytest.approx(a["concurrency_achieved"], rel=0.1)
    assert b["output_throughput"] == pytest.approx(a["output_throughput"], rel=0.1)
    assert set(two) == set(one)  # the same form
    workers = two["client_health"]["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    assert two["accounting"]["balanced"]


def test_workers_keep_an_open_loop_schedule(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=5)
    res, recs = run(m.base_url, tmp_path, "rate", "--rate", "30", "-n", "90", "--max-tokens", "10",
                    "--workers", "2")
    s = res["summary"]
    assert s["requests_ok"] == 90 and s["achieved_rate"] == pytest.approx(30, rel=0.02)
    assert s["send_lag_ms"]["p50"] < 1.0
    assert sorted(r["index"] for r in recs) == list(range(90))


def test_client_bound_when_starved(tmp_path):
    # one process, 32 streams of tokens sent as fast as a socket takes them: the client is the limit
    with MockProcess(module="tpsload.mock.lean", ttft_ms=0, itl_ms=0, tokens=20000) as lean:
        out = tmp_path / "r.json"
        tpsload("run", "--base-url", lean.base_url, "--model", "lean", "-c", "32", "-n", "32", "--max-tokens",
                "20000", "--json", str(out), "-q", check=0, timeout=300)
    h = load_json(out)["client_health"]
    assert h["client_bound"] is True
    assert any("CPU" in r or "lag" in r for r in h["reasons"])


def test_ctrl_c_with_workers_writes_partial(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "100000", "--max-tokens", "30", "--workers", "2", "--json", str(out), "--grace", "0.5",
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    res = load_json(out)
    assert res["partial"] and res["summary"]["requests_ok"] > 4 and res["accounting"]["balanced"]
    assert len(res["client_health"]["workers"]) == 2


def _children(pid):
    kids = []
    for d in __import__("os").listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def test_a_killed_worker_leaves_a_partial_result_naming_it(mock_server, tmp_path):
    m = mock_server(ttft_ms=10, itl_ms=5)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "400", "--max-tokens", "20", "--workers", "2", "--json", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    victims = []
    while time.monotonic() < deadline and len(victims) < 2:
        victims = [k for k in _children(proc.pid)
                   if "spawn_main" in open(f"/proc/{k}/cmdline").read().replace("\0", " ")]
        time.sleep(0.2)
    time.sleep(2.5)  # both are sending by now
    __import__("os").kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    res = load_json(out)
    assert res["partial"] is True and f"worker pid {victims[0]} died" in res["stop_reason"]
    assert 0 < res["summary"]["requests_ok"] < 400
    assert len(res["client_health"]["workers"]) == 1
    assert "Traceback" not in err


def test_calibrate_reports_error_ceiling_and_workers(tmp_path):
    out = tmp_path / "cal.json"
    p = tpsload("calibrate", "-c", "8", "--tokens", "24", "--tokens-per-second", "200", "--ttft-ms", "20",
                "--json", str(out), check=0, timeout=300)
    assert "recommendation: " in p.stdout and "ingest ceiling" in p.stdout
    cal = load_json(out)
    run = cal["runs"][0]
    assert run["ttft_error_ms"]["mean"] < 2.0 and abs(run["itl_error"]) < 0.01
    assert cal["ingest"]["output_throughput"] > 10_000
    # one worker is recommended unless its run was client-bound: on two shared cores the request half of a
    # wave of 8 (the send path) can take over 1 ms, and then the run says so, with its reason
    if run["client_bound"]:
        assert cal["recommended_workers"] != 1 and run["client_reasons"][0] in p.stdout
    else:
        assert cal["recommended_workers"] == 1 and "recommendation: --workers 1" in p.stdout
