"""--workers: the load split over processes, merged into one result of the same form."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from time import perf_counter_ns

import pytest

from conftest import load_json, mock_arrivals, tpsload, wait_until
from tpsload.config import RunConfig
from tpsload.core.client import open_client
from tpsload.core.runner import Runner, RunState, Share
from tpsload.mock import MockProcess
from tpsload.scale.processes import apportion, split
from tpsload.scale.ray_actors import clock_offset
from tpsload.workload.prepare import params
from tpsload.workload.spec import RequestSpec, Workload


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


def test_workers_open_their_connections_before_the_shared_start(mock_server, tmp_path):
    # the model list (pre-connect's GET) answers 400 ms late, twice the parent's start lead: a worker that
    # opened its connections after the start was given would send its first requests ~200 ms late
    m = mock_server(ttft_ms=5, itl_ms=1, models_delay=0.4)
    res, _ = run(m.base_url, tmp_path, "pre", "--rate", "40", "-n", "16", "-c", "8", "--max-tokens", "2",
                 "--workers", "2")
    s = res["summary"]
    assert s["requests_ok"] == 16 and s["preconnected"] == 8
    assert s["send_lag_ms"]["max"] < 100, s["send_lag_ms"]


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
    wait_until(lambda: mock_arrivals(m) >= 12, "12 requests at the mock")  # so 8 or more have finished
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    res = load_json(out)
    assert res["partial"] and res["summary"]["requests_ok"] > 4 and res["accounting"]["balanced"]
    assert len(res["client_health"]["workers"]) == 2


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _workers_of(pid, n, timeout=30):
    found = []
    deadline = time.monotonic() + timeout
    while len(found) < n:
        assert time.monotonic() < deadline, "the worker processes never appeared"
        found = [k for k in _children(pid) if "spawn_main" in open(f"/proc/{k}/cmdline").read().replace("\0", " ")]
        time.sleep(0.05)
    return found


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_a_killed_worker_leaves_a_partial_result_naming_it(mock_server, tmp_path):
    m = mock_server(ttft_ms=10, itl_ms=5)
    out = tmp_path / "r.json"
    # 120: the survivor still runs its 60 (~3 s) after the kill, which comes at the 8th request
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "120", "--max-tokens", "20", "--workers", "2", "--json", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victims = _workers_of(proc.pid, 2)
    wait_until(lambda: mock_arrivals(m) >= 8, "the load to be under way")
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    res = load_json(out)
    assert res["partial"] is True and f"worker pid {victims[0]} died" in res["stop_reason"]
    assert 0 < res["summary"]["requests_ok"] < 120
    assert len(res["client_health"]["workers"]) == 1
    assert "Traceback" not in err


def _in_own_group(m, out):
    """A long run with 2 workers in a process group of its own, as a shell starts a command."""
    return subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "1000", "--max-tokens", "40", "--workers", "2", "--json", str(out), "--grace", "30",
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_terminal_ctrl_c_reaches_every_worker_once_and_grace_holds(mock_server, tmp_path):
    # A terminal's Ctrl-C goes to the whole process group: the parent and every worker. The parent
    # tells the workers too, and a worker that counted both would cancel at once, ignoring --grace.
    m = mock_server(ttft_ms=20, itl_ms=30)  # a request takes ~1.2 s: well within --grace
    out = tmp_path / "r.json"
    proc = _in_own_group(m, out)
    try:
        workers = _workers_of(proc.pid, 2)
        wait_until(lambda: mock_arrivals(m) >= 4, "4 requests in flight")
        # what reaches the workers alone counts for nothing: the load goes on
        for w in workers:
            os.kill(w, signal.SIGINT)
        n = mock_arrivals(m)
        wait_until(lambda: mock_arrivals(m) >= n + 4, "the load to go on after the workers' own SIGINT", 20)
        # the whole group, as a terminal does it
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    res = load_json(out)
    s = res["summary"]
    # the requests in flight finished within --grace: none was cancelled
    assert s["requests_cancelled"] == 0 and s["requests_ok"] >= 8 and s["requests_ok"] == res["requests_started"]
    assert res["partial"] and "SIGINT" in res["stop_reason"] and res["accounting"]["balanced"]
    assert len(res["client_health"]["workers"]) == 2
    assert took < 20, took  # they finished, and nobody waited out the 30 s of grace
    assert "Traceback" not in err and err.count("SIGINT again") == 1


def test_terminal_ctrl_c_while_workers_start_up(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=30)
    out = tmp_path / "r.json"
    proc = _in_own_group(m, out)
    try:
        _workers_of(proc.pid, 2)  # spawned: still importing
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err  # no worker died of a KeyboardInterrupt
    res = load_json(out)
    assert res["partial"] and "SIGINT" in res["stop_reason"] and "died" not in res["stop_reason"]
    assert len(res["client_health"]["workers"]) == 2 and res["accounting"]["balanced"]


def test_workers_end_when_their_parent_is_killed(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=30)
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "100000", "--max-tokens", "40", "--workers", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _workers_of(proc.pid, 2)
    wait_until(lambda: mock_arrivals(m) >= 4, "the load to be under way")
    proc.kill()  # SIGKILL: no word to the workers, who would otherwise go on for 100000 requests
    proc.communicate(timeout=30)
    wait_until(lambda: not any(_running(w) for w in workers), "the orphaned workers to end", 30)


@pytest.mark.parametrize("workers", [1, 2])
def test_cpu_meter_covers_the_load_only(mock_server, tmp_path, workers):
    # the prompt preparation's first request (the template-overhead probe) stalls 3 s before the load
    m = mock_server(ttft_ms=20, itl_ms=5, fault=["stall_first:n=1"], stall_s=3)
    res, _ = run(m.base_url, tmp_path, "cpu", "-c", "2", "-n", "12", "--max-tokens", "10", "--input-tokens", "16",
                 "--workers", str(workers))
    assert res["summary"]["requests_ok"] == 12
    duration = res["summary"]["duration_s"]
    h = res["client_health"]
    meters = h["workers"] if workers > 1 else [h]
    assert len(meters) == workers
    for w in meters:
        wall = w["cpu_s"] / w["cpu_share"]  # the meter's wall time
        # from the start of the load (each worker's shared start instant) to its end: not the
        # pre-flight, the 3 s preparation, nor the workers' start lead
        assert wall < duration + 0.3, (wall, duration)


def test_a_workers_cpu_meter_starts_at_the_shared_start(mock_server):
    # a worker waits for the instant all workers start on; its CPU share is judged from there
    m = mock_server(ttft_ms=20, itl_ms=5)
    cfg = RunConfig.of(base_url=m.base_url, concurrency=2, requests=6, max_tokens=10, single=False)
    workload = Workload([RequestSpec(prompt="hi")], params(cfg, "tpsload-mock", {}), {})

    async def main():
        start = perf_counter_ns() + 1_000_000_000  # a start lead of 1 s
        state = RunState()
        client = open_client(cfg, False)
        try:
            await Runner(cfg, client, workload, state, share=Share(indices=tuple(range(6)), start_ns=start)).run()
        finally:
            await client.close()
        return state, start

    state, start = asyncio.run(main())
    assert len(state.records) == 6 and all(r.ok and r.t_send >= start for r in state.records)
    load_s = (max(r.t_done for r in state.records) - start) / 1e9
    assert 0 < state.wall_s < load_s + 0.1, (state.wall_s, load_s)  # not the 1 s of waiting before it


def test_clock_offset_is_the_shortest_round_trip_after_a_warm_up():
    true_offset = 123_456_789  # their wall clock minus ours, ns
    rng = random.Random(7)
    now = [10**15]
    trips = []

    async def read_remote():
        # the first call waits for the actor to start (2 s, all of it on the way out); then jittered, lopsided delays
        jitter = (rng.randint(50_000, 3_000_000), rng.randint(50_000, 3_000_000))
        out, back = (2_000_000_000, 0) if not trips else jitter
        now[0] += out
        theirs = now[0] + true_offset
        now[0] += back
        trips.append(out + back)
        return theirs

    offset, rtt = asyncio.run(clock_offset(read_remote, samples=7, now=lambda: now[0]))
    assert len(trips) == 8 and rtt == min(trips[1:])
    assert abs(offset - true_offset) <= rtt / 2  # the midpoint's bound, far inside the start-up's 1 s
    assert abs(offset - true_offset) < 1_500_000


def test_calibrate_reports_error_ceiling_and_workers(tmp_path):
    out = tmp_path / "cal.json"
    p = tpsload("calibrate", "-c", "8", "--tokens", "24", "--tokens-per-second", "200", "--ttft-ms", "20",
                "--json", str(out), check=0, timeout=300)
    assert "recommendation: " in p.stdout and "ingest ceiling" in p.stdout and "request half" in p.stdout
    cal = load_json(out)
    cold, warm = cal["runs"][:2]  # each worker count cold (no warm-up) and warm
    assert cold["scenario"]["warmup"] == 0 and warm["scenario"]["warmup"] == 8
    # the full TTFT error (both halves) decides, and on this shared machine it may pass 2 ms: the
    # response half alone (the old measure) stays small
    assert warm["response_half_ms"]["mean"] < 2.0 and abs(warm["itl_error"]) < 0.01
    if cal["recommended_workers"]:
        assert f"recommendation: --workers {cal['recommended_workers']}\n" in p.stdout
    assert cal["ingest"]["output_throughput"] > 10_000
