"""Checkpoints: a run killed with SIGKILL leaves a partial result no older than its interval, which
`report` and `compare` open."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from click.testing import CliRunner

from conftest import load_json, wait_until
from tpsload.cli import cli

INTERVAL_S = 1.0
# a checkpoint is written a moment after its snapshot (a thread builds it), on 2 shared cores
SLACK_S = 1.0


def mock_log(m):
    with urllib.request.urlopen(m.base_url.rsplit("/v1", 1)[0] + "/mock/log", timeout=10) as r:
        return json.load(r)


def test_kill_9_leaves_a_fresh_checkpoint_that_report_and_compare_open(mock_server, tmp_path):
    m = mock_server(ttft_ms=10, itl_ms=5)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4",
                             "--duration", "120s", "--max-tokens", "16", "--no-server-metrics",
                             "--checkpoint-interval", str(INTERVAL_S), "--json", str(out), "-q"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = set()

    def checkpoints():
        if out.exists():  # every read parses: a checkpoint is replaced whole, never written in place
            seen.add(load_json(out)["checkpoint"]["t_ms"])
        return len(seen) >= 2

    try:
        wait_until(checkpoints, "two checkpoints")
        os.kill(proc.pid, signal.SIGKILL)
        killed_ns = time.perf_counter_ns()  # CLOCK_MONOTONIC: the clock of the result and the mock's log
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    res = load_json(out)
    cp = res["checkpoint"]
    assert res["partial"] is True and res["stop_reason"] == "checkpoint: run in progress"
    assert cp["interval_s"] == INTERVAL_S
    taken_ns = res["clock"]["t0_ns"] + cp["t_ms"] * 1e6
    age_s = (killed_ns - taken_ns) / 1e9
    assert 0 < age_s <= INTERVAL_S + SLACK_S, age_s
    # the checkpoint holds every request finished by its snapshot: with those in flight, every request
    # the mock had received by then (a request started just before it may not have arrived yet)
    s = res["summary"]
    finished = s["requests_ok"] + s["requests_failed"] + s["requests_cancelled"]
    assert res["requests_started"] == finished and s["requests_ok"] >= 10 and s["requests_failed"] == 0
    log = mock_log(m)
    before = sum(1 for e in log if e["arrival_ns"] <= taken_ns)
    assert before <= finished + cp["requests_in_flight"] <= before + 4
    # what the kill lost: the requests started after the snapshot, at most its age of load
    lost = len(log) - finished - cp["requests_in_flight"]
    assert lost <= s["request_throughput"] * (age_s + 0.5) + 4, (lost, s["request_throughput"], age_s)
    assert s["output_tokens_total"] == 16 * s["requests_ok"]
    # it opens like any result
    p = CliRunner().invoke(cli, ["report", str(out), "--format", "markdown", "-o", "-"])
    assert p.exit_code == 0 and "PARTIAL: checkpoint: run in progress" in p.output, p.output
    p = CliRunner().invoke(cli, ["compare", str(out), str(out)])
    assert p.exit_code == 0 and "ttft" in p.output.lower(), p.output

