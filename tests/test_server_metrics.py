"""The server's own metrics: parsing and mapping real /metrics pages, the window arithmetic, scraping
beside a run (mock and real llama-server), and proof that a hanging endpoint costs the run nothing."""

import asyncio
import json
import math
import shutil
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path
from time import perf_counter_ns

import numpy as np
import pytest

from conftest import load_json, screenshot_colours, tpsload
from tpsload.app.measure import measure
from tpsload.config import RunConfig
from tpsload.servers import maps, prom
from tpsload.servers.metrics import MetricsScraper, Scrape, measured_window, server_metrics

FIX = Path(__file__).parent / "fixtures"
S = 1_000_000_000  # ns


def page(name):
    return (FIX / f"{name}.txt").read_bytes()


def scrape_of(*pages, step_s=1.0):
    """A Scrape as the scraper would have left it: the pages at t = 0, step, 2*step, ... seconds."""
    sc = Scrape(url="http://127.0.0.1:1/metrics", interval_s=step_s, available=True)
    for i, p in enumerate(pages):
        sc.metrics.append((int(i * step_s * S), zlib.compress(page(p), 1)))
        sc.attempts += 1
    return sc


# --- the arithmetic ---------------------------------------------------------------------------

def test_histogram_quantile_interpolates_like_promql():
    b = [(0.1, 10), (0.2, 30), (0.5, 40), (math.inf, 40)]
    assert prom.histogram_quantile(0.5, b) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert prom.histogram_quantile(0.25, b) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert prom.histogram_quantile(0.1, b) == pytest.approx(0.04)  # the first bucket starts at 0
    assert prom.histogram_quantile(0.99, b) == pytest.approx(0.2 + 0.3 * (39.6 - 30) / 10)
    # ranks that fall in +Inf give the largest finite bound; no observations give None
    assert prom.histogram_quantile(0.99, [(0.1, 1), (math.inf, 10)]) == 0.1
    assert prom.histogram_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    # a bucket bounded at 0 (SGLang's queue time) answers 0 when it holds the rank
    assert prom.histogram_quantile(0.5, [(0.0, 6), (0.5, 10), (math.inf, 10)]) == 0.0


def test_counter_increase_survives_a_restart():
    vals = [100.0, 120.0, None, 150.0, 10.0, 30.0]
    assert prom.increase(vals, 0, 3) == (50.0, False)
    # 100 -> 150 is +50, the drop to 10 is a restart that counted 10, then +20
    assert prom.increase(vals, 0, 5) == (80.0, True)


def test_bracket_picks_samples_that_cover_the_window():
    t = [0, 10, 20, 30, 40]
    assert prom.bracket(t, 12, 28) == (1, 3)
    assert prom.bracket(t, 10, 30) == (1, 3)
    assert prom.bracket(t, -5, 99) == (0, 4)  # not covered on either side: the nearest stand in


def test_measured_window_skips_warmup():
    class R:
        def __init__(self, warmup, t_send, t_end, t_done=None):
            self.warmup, self.t_send, self.t_end, self.t_done = warmup, t_send, t_end, t_done

    recs = [R(True, 0, 50), R(False, 40, 90), R(False, 60, None, 120), R(False, None, None, 30)]
    assert measured_window(recs) == (40, 120)
    assert measured_window([R(True, 0, 5)]) is None


# --- real pages: vLLM -------------------------------------------------------------------------

def test_vllm_page_maps_every_meaning_with_its_raw_name():
    sm = server_metrics(scrape_of("vllm_metrics_before", "vllm_metrics_after"), 0, 1 * S,
                        client_output_tokens=11200)
    s = sm["summary"]
    assert sm["server"] == "vllm" and sm["available"] and sm["warnings"] == []
    # two data-parallel engines: counters and request counts add up over the `engine` label
    assert s["generated_tokens"] == {"raw": "vllm:generation_tokens_total", "delta": 11200, "per_s": 11200.0}
    assert s["prompt_tokens"]["delta"] == 51200
    assert s["requests_finished"]["delta"] == 100  # finished_reason label sets add up too
    assert s["preemptions"] == {"raw": "vllm:num_preemptions_total", "delta": 3, "per_s": 3.0}
    assert s["requests_running"] == {"raw": "vllm:num_requests_running", "mean": 7, "max": 14, "min": 0, "n": 2}
    assert s["requests_waiting"]["max"] == 5
    # a ratio does not add up over engines: the fuller one is the KV cache's peak; the newer name wins
    assert s["kv_cache_usage"]["raw"] == "vllm:kv_cache_usage_perc"
    assert s["kv_cache_usage"]["max"] == 0.97
    assert s["prefix_cache_hit_rate"] == {"raw": ["vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"],
                                          "value": 0.25}  # 12,800 of 51,200 tokens
    assert s["cross_check"] == {"server_generated_tokens": 11200, "client_output_tokens": 11200, "match": True}
    # quantiles of the window's bucket increases (engine 0's 20 earlier requests excluded), by hand:
    ttft = s["ttft_ms"]
    assert ttft["raw"] == "vllm:time_to_first_token_seconds" and ttft["n"] == 100
    assert ttft["mean"] == pytest.approx(175.0)  # (10*.05 + 20*.07 + 20*.09 + 30*.2 + 15*.3 + 4*.6 + .9) / 100
    assert ttft["p50"] == pytest.approx(100.0)  # rank 50 = top of (0.08, 0.1]: 30 below, 20 inside
    assert ttft["p90"] == pytest.approx(416.67, abs=0.01)  # rank 90 in (0.25, 0.5]: 80 below, 15 inside
    assert ttft["p99"] == pytest.approx(750.0)  # rank 99 = top of (0.5, 0.75]
    itl = s["itl_ms"]
    assert itl["raw"] == "vllm:inter_token_latency_seconds" and itl["n"] == 11100
    assert (itl["p50"], itl["p90"], itl["p99"]) == (pytest.approx(25.0), pytest.approx(62.5), pytest.approx(73.75))
    q = s["queue_time_ms"]
    assert (q["p50"], q["p90"], q["p99"]) == (pytest.approx(366.67, abs=0.01), pytest.approx(1000.0),
                                              pytest.approx(2450.0))
    assert s["e2e_latency_ms"]["n"] == 100 and s["e2e_latency_ms"]["mean"] == pytest.approx(6900.0)
    # raw series kept by their Prometheus names, buckets and _created left out
    series = sm["samples"]["series"]
    assert series['vllm:num_requests_running{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"}'] == [0, 6]
    assert not any("_bucket" in k or "_created" in k or k.startswith("python_") for k in series)
    assert sm["samples"]["mapped"]["requests_waiting"] == [0, 5]
    text = "\n".join(sm["text"])
    assert "server (vLLM): 11,200 tokens generated in the run (11,200.0/s), 51,200 prompt tokens" in text
    assert "server queue: up to 5 requests waiting, mean 2.5; KV cache peaked at 97 %; 3 requests preempted" in text
    assert "prefix cache hit rate 25 %" in text
    assert "server TTFT p50 100 ms, p99 750 ms" in text


def test_vllm_older_names_still_map():
    # before vLLM 0.10: gpu_cache_usage_perc and time_per_output_token_seconds, no kv_cache_usage_perc
    old = page("vllm_metrics_after").replace(b"vllm:kv_cache_usage_perc", b"vllm:something_else") \
        .replace(b"vllm:inter_token_latency_seconds", b"vllm:time_per_output_token_seconds")
    sc = Scrape(url="u", interval_s=1.0, available=True, metrics=[(0, zlib.compress(old))])
    s = server_metrics(sc, 0, 0)["summary"]
    assert s["kv_cache_usage"]["raw"] == "vllm:gpu_cache_usage_perc" and s["kv_cache_usage"]["max"] == 0.97
    assert s["itl_ms"]["raw"] == "vllm:time_per_output_token_seconds"


def test_cross_check_mismatch_names_both_numbers():
    sm = server_metrics(scrape_of("vllm_metrics_before", "vllm_metrics_after"), 0, 1 * S, client_output_tokens=11000)
    assert sm["summary"]["cross_check"]["match"] is False
    assert len(sm["warnings"]) == 1
    assert "11,200 generated tokens" in sm["warnings"][0] and "11,000 output tokens" in sm["warnings"][0]


def test_cross_check_counts_our_requests_between_the_bracketing_samples():
    # warm-up requests that ended before the first sample are not in the server's increase either
    ours = [(-S // 2, 900), (S // 4, 5000), (S // 2, 6000), (S, 200)]
    sm = server_metrics(scrape_of("vllm_metrics_before", "vllm_metrics_after"), S // 10, S // 2,
                        client_requests=ours)
    assert sm["summary"]["cross_check"]["client_output_tokens"] == 11200 and sm["warnings"] == []


# --- real pages: SGLang -----------------------------------------------------------------------

def test_sglang_page_maps_counters_gauges_and_histograms():
    sm = server_metrics(scrape_of("sglang_metrics_before", "sglang_metrics_mid", "sglang_metrics_after"), 0, 2 * S,
                        client_output_tokens=4096, client_ttft_ms={"p50": 530.0, "p99": 2000.0})
    s = sm["summary"]
    assert sm["server"] == "sglang" and sm["warnings"] == []
    assert s["generated_tokens"] == {"raw": "sglang:generation_tokens_total", "delta": 4096, "per_s": 2048.0}
    assert s["prompt_tokens"]["delta"] == 16384 and s["prompt_tokens_cached"]["delta"] == 8192
    assert s["requests_finished"]["delta"] == 32
    assert s["preemptions"] == {"raw": "sglang:num_retracted_requests_total", "delta": 2, "per_s": 1.0}
    assert s["requests_running"] == {"raw": "sglang:num_running_reqs", "mean": pytest.approx(40 / 3, abs=1e-3),
                                     "max": 24, "min": 0, "n": 3}
    assert s["requests_waiting"]["max"] == 40 and s["requests_waiting"]["mean"] == 16
    assert s["kv_cache_usage"] == {"raw": "sglang:token_usage", "mean": pytest.approx(0.573, abs=1e-3),
                                   "max": 0.92, "min": 0, "n": 3}
    assert s["gen_throughput"]["max"] == 2150.5
    # SGLang's prompt count includes the cached tokens: 8,192 of 16,384 (its counters win over its gauge)
    assert s["prefix_cache_hit_rate"]["value"] == 0.5
    ttft = s["ttft_ms"]
    assert ttft["n"] == 32 and ttft["mean"] == pytest.approx((8 * 0.15 + 16 * 0.5 + 8 * 1.5) / 32 * 1000)
    assert (ttft["p50"], ttft["p90"], ttft["p99"]) == (pytest.approx(500.0), pytest.approx(1600.0),
                                                       pytest.approx(1960.0))
    itl = s["itl_ms"]
    assert itl["raw"] == "sglang:inter_token_latency_seconds" and itl["n"] == 4064
    assert (itl["p50"], itl["p90"], itl["p99"]) == (pytest.approx(10.0), pytest.approx(14.0), pytest.approx(14.9))
    q = s["queue_time_ms"]
    assert (q["p50"], q["p90"], q["p99"]) == (0.0, pytest.approx(440.0), pytest.approx(494.0))
    text = "\n".join(sm["text"])
    assert "server queue: up to 40 requests waiting, mean 16.0; KV cache peaked at 92 %; 2 requests preempted" in text
    assert "ours p50 530 ms, p99 2,000 ms: +30 ms between the server and us at the median" in text


def test_sglang_hit_rate_falls_back_to_its_gauge():
    # builds without cached_tokens_total: the server's own hit-rate gauge, averaged over the window
    pages = [page(n).replace(b"sglang:cached_tokens", b"sglang:x_tokens")
             for n in ("sglang_metrics_before", "sglang_metrics_mid", "sglang_metrics_after")]
    sc = Scrape(url="u", interval_s=1.0, available=True,
                metrics=[(i * S, zlib.compress(p)) for i, p in enumerate(pages)])
    hit = server_metrics(sc, 0, 2 * S)["summary"]["prefix_cache_hit_rate"]
    assert hit == {"raw": ["sglang:cache_hit_rate"], "value": pytest.approx((0.4 + 0.45 + 0.48) / 3, abs=1e-3)}


# --- real pages: llama.cpp --------------------------------------------------------------------

def test_llama_cpp_page_counts_cached_prompt_tokens_apart():
    # captured from the real llama-server: two chat requests of 8 tokens between the pages,
    # with 22 + 1 of their 27 + 30 prompt tokens found in the prompt cache
    sm = server_metrics(scrape_of("llamacpp_metrics_before", "llamacpp_metrics_after"), 0, 1 * S,
                        client_output_tokens=16)
    s = sm["summary"]
    assert sm["server"] == "llama.cpp"
    assert s["generated_tokens"]["raw"] == "llamacpp:tokens_predicted_total"
    assert s["generated_tokens"]["delta"] == 16 and s["cross_check"]["match"]
    assert s["prompt_tokens"]["delta"] == 34 and s["prompt_tokens_cached"]["delta"] == 23
    assert s["decode_calls"]["delta"] == 18
    assert s["prefix_cache_hit_rate"]["value"] == pytest.approx(23 / 57, abs=1e-4)  # llama.cpp counts them apart
    assert s["requests_waiting"]["raw"] == "llamacpp:requests_deferred"
    assert "34 prompt tokens (23 more from its cache)" in sm["text"][0]


def test_unknown_prometheus_page_maps_nothing():
    sc = Scrape(url="u", interval_s=1.0, available=True, metrics=[(0, zlib.compress(b"# TYPE foo gauge\nfoo 1\n"))])
    sm = server_metrics(sc, 0, 0)
    assert sm["server"] is None and sm["summary"] == {} and "nothing mapped" in sm["text"][0]
    assert maps.detect(["vllm:a", "vllm:b", "llamacpp:c"]) is maps.VLLM


# --- scraping a live server -------------------------------------------------------------------

def run_cli(*args):
    return asyncio.create_subprocess_exec(sys.executable, "-m", "tpsload", "run", *args,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL)


async def scrape_around_run(root, interval_s, *args, headers=None):
    """Scrape while the real CLI runs in a subprocess; the window covers the whole run."""
    scraper = MetricsScraper(root, headers, interval_s=interval_s)
    hint = await scraper.start()
    t0 = perf_counter_ns()
    p = await run_cli(*args)
    _, err = await p.communicate()
    t1 = perf_counter_ns()
    scrape = await scraper.stop()
    assert p.returncode == 0, err.decode()[-2000:]
    return hint, scrape, t0, t1


def test_mock_scraped_during_a_run_matches_its_truth(mock_server, tmp_path):
    m = mock_server(ttft_ms=40, itl_ms=5, slots=2, metrics=True, api_key="sekrit")
    out = tmp_path / "r.json"
    hint, scrape, t0, t1 = asyncio.run(scrape_around_run(
        m.base_url[:-3], 0.05, "--base-url", m.base_url, "--api-key", "sekrit", "-c", "4", "-n", "12",
        "--max-tokens", "16", "--json", str(out), headers={"Authorization": "Bearer sekrit"}))
    res = load_json(out)
    assert hint is None and scrape.failures == {}
    sm = server_metrics(scrape, t0, t1, client_output_tokens=res["summary"]["output_tokens_total"],
                        t0_ns=res["clock"]["t0_ns"])
    s = sm["summary"]
    assert s["cross_check"] == {"server_generated_tokens": 192, "client_output_tokens": 192, "match": True}
    # 4 in flight on 2 slots: 2 generate, 2 wait
    assert s["requests_running"]["max"] == 2 and s["requests_waiting"]["max"] == 2
    assert s["ttft_ms"]["n"] == 12
    assert len(sm["samples"]["t_ms"]) >= 5 and sm["samples"]["t0_ns"] == res["clock"]["t0_ns"]


def test_missing_endpoint_is_a_hint_not_a_failure(mock_server):
    m = mock_server()  # no --metrics: /metrics is a 404

    async def go():
        scraper = MetricsScraper(m.base_url[:-3], interval_s=0.05)
        hint = await scraper.start()
        return hint, await scraper.stop()

    hint, scrape = asyncio.run(go())
    assert hint == ("server metrics: /metrics answered HTTP 404; the server has no Prometheus /metrics "
                    "(llama-server: start it with --metrics; SGLang: --enable-metrics)")
    sm = server_metrics(scrape, 0, 1)
    assert sm["available"] is False and sm["text"] == [hint] and sm["warnings"] == [] and sm["samples"] is None


# --- a hanging endpoint costs the measured requests nothing ----------------------------------

def test_hanging_metrics_endpoint_does_not_change_ttft(mock_server, tmp_path):
    """Scraper and load share one event loop; /metrics answers only after 3 s, each scrape times out
    after 0.3 s. Our TTFT error (our first-token stamp minus the mock's own write time, one clock)
    must be the same with the scraper running as without it."""
    m = mock_server(ttft_ms=50, itl_ms=10, metrics=True, metrics_delay=3)
    n = 96

    async def go(cfg, scraping):
        scraper = MetricsScraper(m.base_url[:-3], interval_s=0.05, timeout_s=0.3) if scraping else None
        if scraper:
            await scraper.start()
        _, state = await measure(cfg, show_progress=False)
        return state, (await scraper.stop() if scraper else None)

    errors = {}
    for run, scraping in enumerate((False, True, False, True)):
        prompts = tmp_path / f"p{run}.txt"
        prompts.write_text("".join(f"run {run} request {i}\n" for i in range(n)))
        cfg = RunConfig.of(base_url=m.base_url, concurrency=8, requests=n, max_tokens=16, prompt_file=str(prompts),
                           single=False)
        state, scrape = asyncio.run(go(cfg, scraping))
        if scraping:  # it really tried, through the whole run, and lost every sample to the timeout
            assert scrape.attempts >= 4 and scrape.failures["timeout"] == scrape.attempts
            assert scrape.metrics == []
        with urllib.request.urlopen(m.base_url[:-3] + "/mock/log") as r:
            log = {e["prompt"]: e for e in json.load(r)}
        errs = [(r.t_first - log[f"run {run} request {r.index}"]["first_ns"]) / 1e6 for r in state.records]
        assert len(errs) == n and min(errs) >= -0.05
        errors.setdefault(scraping, []).extend(errs)
    without, with_ = np.array(errors[False]), np.array(errors[True])
    # What the client adds to TTFT is the same, scraper or not. (A scrape that held one of the
    # load's connections, or blocked the loop, for its 0.3 s would add tens of ms to the mean.)
    # The tails are left alone: on 2 shared cores a run's p99 moves by several ms either way.
    report = (np.percentile(without, [50, 90, 99]), np.percentile(with_, [50, 90, 99]))
    assert np.median(with_) <= np.median(without) + 0.25, report
    assert with_.mean() <= without.mean() + 1.0, report


# --- the real llama-server --------------------------------------------------------------------

@pytest.mark.llama
@pytest.mark.slow
def test_llama_server_counts_match_ours_and_shows_the_queue(llama_server, tmp_path):
    srv = llama_server(np=2, ctx=2048, extra=("--metrics",))
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", srv.base_url, "-c", "4", "-n", "4", "--output-tokens", "32",
                "--server-metrics-interval", "0.1", "--json", str(out), check=0)
    res = load_json(out)
    total = res["summary"]["output_tokens_total"]
    assert res["summary"]["requests_ok"] == 4 and total == 4 * 32
    sm = res["server_metrics"]  # the run's own scrape
    s = sm["summary"]
    assert sm["server"] == "llama.cpp" and len(sm["samples"]["t_ms"]) >= 3 and "hint" not in sm
    assert s["generated_tokens"]["delta"] == total and s["cross_check"]["match"] is True
    deferred = sm["samples"]["mapped"]["requests_waiting"]
    assert max(deferred) > 0, deferred  # 4 requests on 2 slots: llama-server deferred some
    assert s["slots"]["total"] == 2 and s["slots"]["busy_max"] == 2
    assert any("llama-server deferred them: 2 slots for 4 requests" in line for line in sm["text"]), sm["text"]
    assert sm["warnings"] == [] and "deferred them" in p.stdout


@pytest.mark.llama
@pytest.mark.slow
def test_llama_server_without_metrics_gives_the_hint(tmp_path):
    from llama_server import LlamaServer

    with LlamaServer(np=2, ctx=1024, metrics=False) as srv:
        out = tmp_path / "r.json"
        p = tpsload("run", "--base-url", srv.base_url, "-n", "1", "--output-tokens", "4",
                    "--server-metrics-interval", "0.2", "--json", str(out), check=0)
    hint = ("server metrics: /metrics answered HTTP 501; llama-server: start it with --metrics to see "
            "its queue and token counters beside ours")
    res = load_json(out)
    assert res["summary"]["requests_ok"] == 1 and hint in p.stderr
    sm = res["server_metrics"]
    # /slots still answers: the busy slots are there even without /metrics
    assert sm["hint"] == hint and sm["server"] == "llama.cpp" and sm["summary"]["slots"]["total"] == 2
    assert sm["text"][0] == hint and sm["warnings"] == []
    assert sm["text"][1].startswith("llama-server slots: up to ") and " of 2 busy" in sm["text"][1]


def test_run_carries_server_metrics_and_the_report_draws_them(mock_server, tmp_path):
    """End to end through the CLI: the run scrapes the server beside the load, the server's token
    count matches ours, and the HTML report draws the run over time with both sides."""
    m = mock_server(ttft_ms=20, itl_ms=5, metrics=True)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-c", "4", "-n", "24", "--max-tokens", "32",
                "--server-metrics-interval", "0.2", "--json", str(out), check=0)
    res = load_json(out)
    sm = res["server_metrics"]
    assert sm["server"] == "vllm" and sm["warnings"] == []
    check = sm["summary"]["cross_check"]
    assert check["match"] and check["client_output_tokens"] == res["summary"]["output_tokens_total"] == 24 * 32
    client = sm["samples"]["client"]
    assert len(client["in_flight"]) == len(sm["samples"]["t_ms"]) >= 3 and max(client["in_flight"]) == 4
    assert any(line.startswith("server queue") for line in sm["text"]) and "server queue" in p.stdout
    html = tmp_path / "r.html"
    tpsload("report", str(out), "-o", str(html), check=0)
    text = html.read_text()
    assert "Requests over time" in text and "Output tokens per second over time" in text
    assert "in flight (tpsload)" in text and "running (server)" in text and "generated (server)" in text
    if shutil.which("chromium"):  # .ci/run installs it: the charts are drawn in a real browser
        with_timeline = screenshot_colours(html, tmp_path, height=4000)
        (tmp_path / "profile").rename(tmp_path / "profile0")
        res.pop("server_metrics")
        out.write_text(json.dumps(res))
        tpsload("report", str(out), "-o", str(html), check=0)
        without = screenshot_colours(html, tmp_path, height=4000)
        # the timeline charts are drawn: the server's series (the second colour) in both; ours, the first
        # colour, runs under it where the two agree, as they do against the mock
        assert with_timeline[1] > without[1] + 1_000


def test_no_server_metrics_flag_skips_the_scrape(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, metrics=True)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "4", "--max-tokens", "4", "--no-server-metrics",
            "--json", str(out), check=0)
    assert "server_metrics" not in load_json(out)
