"""--ray: workers as Ray actors (a local Ray instance, few CPUs, bounded runs)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import load_json, mock_arrivals, tpsload, wait_until

ray = pytest.importorskip("ray", reason="tpsload[ray] is not installed")
pytestmark = pytest.mark.slow
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # loopback only: no usage reports


def run(base_url, tmp_path, name, *args, timeout=240):
    out, rec = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
    tpsload("run", "--base-url", base_url, "--json", str(out), "--records", str(rec), *args, check=0,
            timeout=timeout, env=RAY_ENV)
    return load_json(out), [json.loads(line) for line in rec.read_text().splitlines()]


def test_ray_run_matches_local_workers(mock_server, tmp_path):
    m = mock_server(ttft_ms=50, itl_ms=10)
    load = ("-c", "8", "-n", "48", "--max-tokens", "24", "--workers", "2")
    local, _ = run(m.base_url, tmp_path, "local", *load)
    t = time.monotonic()
    remote, recs = run(m.base_url, tmp_path, "ray", *load, "--ray")
    ray_wall = time.monotonic() - t
    a, b = local["summary"], remote["summary"]
    assert b["requests_ok"] == a["requests_ok"] == 48 and b["output_tokens_total"] == a["output_tokens_total"]
    assert sorted(r["index"] for r in recs) == list(range(48))
    assert b["ttft_ms"]["mean"] == pytest.approx(a["ttft_ms"]["mean"], abs=5.0)
    assert b["itl_ms"]["mean"] == pytest.approx(a["itl_ms"]["mean"], rel=0.03)
    assert b["concurrency_achieved"] == pytest.approx(a["concurrency_achieved"], rel=0.15)
    assert remote["backend"]["kind"] == "ray" and len(remote["client_health"]["workers"]) == 2
    node = remote["nodes"][0]
    assert node["workers"] == 2
    # one host, one wall clock: the true offset is 0, so what was measured is the measurement's error,
    # within half the (shortest) round trip, which on one machine is short
    assert 0 < node["clock_rtt_ms"] < 20 and abs(node["clock_offset_ms"]) <= node["clock_rtt_ms"] / 2
    print(f"ray run wall {ray_wall:.1f} s (starts a local Ray instance)")



def test_stages_over_ray_actors(mock_server, tmp_path):
    """--stages over Ray actors: the stages split as over worker processes, each stage's time-weighted
    concurrency within 5 % of what it asked, the records mapped onto the coordinator's one timeline."""
    m = mock_server(ttft_ms=20, itl_ms=4)
    r, recs = run(m.base_url, tmp_path, "ray", "--max-tokens", "12", "--stages", "1s:c=4,0.5s:c=10,1s:c=3",
                  "--workers", "2", "--ray")
    assert r["backend"]["kind"] == "ray" and [s["asked"] for s in r["stages"]] == [4, 10, 3]
    for s in r["stages"]:
        assert s["concurrency_achieved"] == pytest.approx(s["asked"], rel=0.05), s
    assert {x["stage"] for x in recs} == {0, 1, 2} and max(r["timeline"]["in_flight"]) == 10

def _actor_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline").read()
            except OSError:
                continue
            if cmd.startswith("ray::_Worker"):
                pids.append(int(d))
    return sorted(pids)


def test_a_lost_actor_leaves_a_partial_result_naming_it(mock_server, tmp_path):
    m = mock_server(ttft_ms=10, itl_ms=5)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n", "120",
                             "--max-tokens", "20", "--workers", "2", "--ray", "--json", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **RAY_ENV))
    deadline = time.monotonic() + 90
    pids = []
    while len(pids) < 2 and time.monotonic() < deadline:
        pids = _actor_pids()
        time.sleep(0.3)
    assert len(pids) == 2, "the run's actors never appeared"
    wait_until(lambda: mock_arrivals(m) >= 8, "the load to be under way")
    os.kill(pids[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    res = load_json(out)
    assert res["partial"] is True and "Ray worker" in res["stop_reason"] and "lost" in res["stop_reason"]
    assert 0 < res["summary"]["requests_ok"] < 120 and res["accounting"]["balanced"]
    assert len(res["client_health"]["workers"]) == 1
    assert "Traceback" not in err


def test_core_runs_without_ray(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from tpsload.cli import main; "
            f"sys.argv = ['tpsload', 'run', '--mock', '-n', '2', '--max-tokens', '4', "
            f"'--json', '{tmp_path / 'r.json'}', '-q'] + sys.argv[1:]; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert load_json(tmp_path / "r.json")["summary"]["requests_ok"] == 2
    p = subprocess.run([sys.executable, "-c", code, "--ray"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "pip install 'tpsload[ray]'" in p.stderr


def test_ctrl_c_stops_every_actor(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "100000", "--max-tokens", "30", "--workers", "2", "--ray", "--grace", "0.5", "--json",
                             str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **RAY_ENV))
    deadline = time.monotonic() + 90
    while len(_actor_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    wait_until(lambda: mock_arrivals(m) >= 12, "12 requests at the mock", 90)  # so 8 or more have finished
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    res = load_json(out)
    assert res["partial"] is True and res["summary"]["requests_ok"] > 4 and res["accounting"]["balanced"]
    assert len(res["client_health"]["workers"]) == 2  # both stopped cleanly and sent what they measured
