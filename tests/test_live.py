"""The live view: the panel in a real terminal (tmux), the status line off one, and --serve-metrics
scraped with prometheus_client's parser, its counters equal to the final result's."""

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import load_json, tpsload, wait_for_line, wait_until
from tpsload.config import RunConfig
from tpsload.core.client import open_client
from tpsload.core.live import LiveStats
from tpsload.core.runner import Runner, RunState
from tpsload.render.prometheus import MetricsEndpoint
from tpsload.workload.prepare import params
from tpsload.workload.spec import RequestSpec, Workload

TTFT_MS, ITL_MS = 40, 10


def _number(pattern, text):
    m = re.search(pattern, text)
    assert m, (pattern, text)
    return float(m.group(1).replace(",", ""))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_live_panel_in_a_terminal(mock_server, tmp_path):
    m = mock_server(ttft_ms=TTFT_MS, itl_ms=ITL_MS)
    sock = f"tpsload-test-{os.getpid()}"  # a tmux server of its own, stopped at the end
    tmux = ["tmux", "-L", sock]
    done = tmp_path / "exit"
    cmd = (f"cd {shlex.quote(os.getcwd())}; PYTHONPATH={shlex.quote(os.pathsep.join(sys.path))} "
           f"{shlex.quote(sys.executable)} -m tpsload run --base-url {m.base_url} -c 2 --duration 4s "
           f"--max-tokens 16 --no-server-metrics; echo $? > {done}; sleep 120")
    subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "40", cmd], check=True, timeout=30)

    def screen():
        return subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=30).stdout

    try:
        shot = {}

        def panel_with_numbers():
            shot["s"] = screen()
            return "TTFT" in shot["s"] and "p50 –" not in shot["s"] and " 0 ok" not in shot["s"]

        wait_until(panel_with_numbers, "the live panel with numbers")
        s = shot["s"]
        assert re.search(r"requests .*\d+ done, 0 failed", s), s
        assert _number(r"Requests\s+(\d+) in flight", s) <= 2 and _number(r"· (\d+) ok", s) >= 1
        # the mock's own latencies, seen live: TTFT is its first-token delay, TPOT its token gap
        assert TTFT_MS <= _number(r"TTFT\s+p50 ([\d.]+) ms", s) < TTFT_MS + 60, s
        assert ITL_MS * 0.9 <= _number(r"TPOT\s+p50 ([\d.]+) ms", s) < ITL_MS * 2, s
        assert _number(r"Output\s+([\d.,]+) tok/s", s) > 0 and "Client" in s
        wait_until(done.exists, "the run to end")
        end = screen()
        assert done.read_text().strip() in ("0", "1"), end  # 1: the client may be judged busy here
        assert "in flight ·" not in end and "Output throughput" in end  # the panel gave way to the tables
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=30)


def test_status_line_off_a_terminal_and_the_final_result_replaces_checkpoints(mock_server, tmp_path):
    m = mock_server(ttft_ms=TTFT_MS, itl_ms=ITL_MS, metrics=True)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-c", "2", "--duration", "3.5s", "--max-tokens", "16",
                "--status-interval", "1", "--checkpoint-interval", "0.5", "--json", str(out))
    assert p.returncode in (0, 1), p.stderr  # 1: the client may be judged busy on a loaded machine
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("tpsload ")]
    assert 2 <= len(lines) <= 4, p.stderr  # one a second, for 3.5 s
    last = lines[-1]
    assert re.match(r"tpsload \d+ s: \d+ ok, 0 failed, [0-2] in flight; last 10 s: [\d.,]+ tok/s", last), last
    assert TTFT_MS <= _number(r"TTFT p50/p99 ([\d.]+) /", last) < TTFT_MS + 60, last
    assert ITL_MS * 0.9 <= _number(r"TPOT p50/p99 ([\d.]+) /", last) < ITL_MS * 2, last
    assert re.search(r"; server: running [0-2], waiting 0", last), last  # the mock's /metrics, scraped
    assert "\x1b[" not in p.stderr  # plain text for a log
    res = load_json(out)  # checkpoints were written, then the final result replaced them
    assert res["partial"] is False and res["stop_reason"] is None and "checkpoint" not in res
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_serve_metrics_counters_equal_the_final_result(mock_server, tmp_path):
    # 3 in 40 fail with a 500, so the errors counter has a class to count
    m = mock_server(ttft_ms=TTFT_MS, itl_ms=ITL_MS, fault=["http_500:every=13"])
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n", "40",
                             "--warmup", "2", "--max-tokens", "16", "--no-server-metrics", "--max-failed-share",
                             "50%", "--serve-metrics", "0", "--serve-metrics-linger", "60", "--json", str(out), "-q",
                             "--status-interval", "0.5"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        err = wait_for_line(proc.stderr, "/metrics")
        url = re.search(r"serving live metrics at (\S+)", err).group(1)
        assert url.startswith("http://127.0.0.1:")  # loopback unless asked
        during = {}

        def scraped_in_flight():
            during.update(scrape(url))
            return during[("tpsload_requests_total", (("outcome", "ok"),))] >= 4

        wait_until(scraped_in_flight, "requests counted while the run goes on")
        assert during[("tpsload_run_finished", ())] == 0
        wait_until(lambda: out.exists(), "the result")
        final = scrape(url)  # the endpoint waits for this scrape (the linger) before the process ends
        proc.wait(timeout=30)
        err += proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == 0
    assert " ok, " not in err, err  # -q: no status lines, whatever --status-interval says
    res = load_json(out)
    s = res["summary"]
    assert final[("tpsload_run_finished", ())] == 1 and final[("tpsload_requests_in_flight", ())] == 0
    assert final[("tpsload_requests_total", (("outcome", "ok"),))] == s["requests_ok"]
    assert final[("tpsload_requests_total", (("outcome", "failed"),))] == s["requests_failed"] >= 1
    assert final[("tpsload_requests_total", (("outcome", "cancelled"),))] == s["requests_cancelled"]
    for cls, n in res["errors"]["by_class"].items():
        assert final[("tpsload_request_errors_total", (("error_class", cls),))] == n
    assert final[("tpsload_warmup_requests_total", ())] == res["warmup_requests"] == 2
    assert final[("tpsload_output_tokens_total", ())] == s["output_tokens_total"]
    assert final[("tpsload_prompt_tokens_total", ())] == s["prompt_tokens_total"]
    for name, key in (("ttft", "ttft_ms"), ("itl", "itl_ms"), ("tpot", "tpot_ms"), ("e2e_latency", "e2e_latency_ms")):
        assert final[(f"tpsload_{name}_seconds_count", ())] == s[key]["n"], name
        mean = final[(f"tpsload_{name}_seconds_sum", ())] / s[key]["n"] * 1e3
        assert mean == pytest.approx(s[key]["mean"], rel=1e-6), name
    # the TTFT histogram places the mock's first-token delay: none at or under 25 ms, all under 0.2 s
    assert final[("tpsload_ttft_seconds_bucket", (("le", "0.025"),))] == 0
    assert final[("tpsload_ttft_seconds_bucket", (("le", "0.2"),))] == s["ttft_ms"]["n"]
    assert during[("tpsload_requests_total", (("outcome", "ok"),))] <= s["requests_ok"]


def test_serve_metrics_bad_address_is_one_line():
    import socket

    from tpsload.core.live import LiveStats
    from tpsload.errors import TpsloadError
    from tpsload.render.prometheus import MetricsEndpoint, parse_address

    assert parse_address("9464") == ("127.0.0.1", 9464) and parse_address("[::1]:0") == ("::1", 0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(TpsloadError, match="in use"):
            MetricsEndpoint(LiveStats(), "127.0.0.1", taken.getsockname()[1])
    p = tpsload("run", "--mock", "--serve-metrics", "localhost:notaport", check=2)
    assert p.stderr.strip().count("\n") == 0 and "--serve-metrics 'localhost:notaport'" in p.stderr


def test_live_stats_rolling_numbers_and_histograms():
    """Known values in, the same percentiles and bucket counts out; requests older than the window drop out."""
    from time import perf_counter_ns

    import numpy as np

    from tpsload.core.live import LiveStats
    from tpsload.records import ErrorClass, RequestRecord

    live = LiveStats(window_s=5.0)
    now = perf_counter_ns()
    ttfts = [10, 20, 30, 40, 200]  # ms
    for i, ttft in enumerate(ttfts):
        t_send = now - 1_000_000_000
        r = RequestRecord(index=i, t_sched=t_send, t_send=t_send, t_written=t_send, t_first=t_send + ttft * 1_000_000,
                          output_tokens=5, status=200)
        r.t_last = r.t_end = r.t_first + 4 * 10_000_000  # 4 gaps of 10 ms: TPOT 10 ms
        r.t_done = now - (10_000_000_000 if i == 4 else 0)  # the last one finished 10 s ago: out of the window
        r.chunk_times.extend(r.t_first + k * 10_000_000 for k in range(5))
        live.started(r)
        live.finished(r)
    bad = RequestRecord(index=9, error_class=ErrorClass.HTTP_5XX, t_done=now)
    live.started(bad)
    live.finished(bad)
    v = live.view()
    assert (v.counts.ok, v.counts.failed, v.counts.by_class, v.counts.in_flight) == (5, 1, {"http_5xx": 1}, 0)
    assert v.ttft_p50_ms == pytest.approx(np.percentile(ttfts[:4], 50))
    assert v.ttft_p99_ms == pytest.approx(np.percentile(ttfts[:4], 99))
    assert v.tpot_p50_ms == pytest.approx(10.0)
    t = live.totals()
    assert t.counts.output_tokens == 25 and t.histograms["ttft"].count == 5 and t.histograms["itl"].count == 20
    # le buckets: 10 ms falls in le=0.01, 200 ms in le=0.2
    cum = dict(t.histograms["ttft"].cumulative())
    assert (cum[0.005], cum[0.01], cum[0.025], cum[0.15], cum[0.2], cum[float("inf")]) == (0, 1, 2, 4, 5, 5)
    assert dict(t.histograms["itl"].cumulative())[0.01] == 20


def test_a_request_that_ends_in_an_internal_error_is_counted_out_of_flight(mock_server):
    # a bug of ours inside a request (here: its record cannot be finished) must not leave the live view
    # counting it in flight for the rest of the run, nor lose its record
    m = mock_server(ttft_ms=5, itl_ms=1)
    cfg = RunConfig.of(base_url=m.base_url, concurrency=2, requests=4, max_tokens=4, single=False)
    workload = Workload([RequestSpec(prompt="hi")], params(cfg, "tpsload-mock", {}), {})

    async def main():
        state = RunState(live=LiveStats())
        client = open_client(cfg, False)
        finish = client._finish

        def broken(rec, out):
            finish(rec, out)
            if rec.index == 1:
                raise RuntimeError("a bug in finishing the record")

        client._finish = broken
        try:
            await Runner(cfg, client, workload, state).run()
        finally:
            await client.close()
        return state

    state = asyncio.run(main())
    assert state.live.totals().counts.in_flight == 0
    assert 1 in {r.index for r in state.records}


def test_the_final_scrape_counts_once_its_answer_was_sent_whole():
    # a run with --serve-metrics-linger ends after one scrape of its final numbers: it must not end while
    # that answer is still being written (the process would exit under it, and the scraper get half a page)
    live = LiveStats()
    live.final = True
    with MetricsEndpoint(live, "127.0.0.1", 0) as ep:
        list(ep.collector.collect())  # the numbers gathered, nothing sent yet
        assert not ep.collector.final_scraped.is_set()
        with urllib.request.urlopen(ep.url, timeout=10) as r:
            text = r.read().decode()
        assert text.rstrip().endswith("tpsload_run_finished 1.0")
        assert ep.linger(5)  # set once the handler had written the answer
