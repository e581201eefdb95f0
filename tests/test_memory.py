"""Issue 17: a run's memory does not grow with its length (analysis.ledger), and worker runs hand their
records on as they go. `make soak` checks the same at c=256 for 10 minutes; these check the slope small."""

import asyncio
import gc
import json
import random
import subprocess
import sys
import tracemalloc
from array import array

import pytest

from conftest import wait_until
from tpsload.analysis import ledger as ledger_module
from tpsload.analysis import stats
from tpsload.analysis.ledger import Ledger
from tpsload.app.measure import measure
from tpsload.config import RunConfig
from tpsload.core.runner import RunState
from tpsload.core.signals import Relay
from tpsload.core.spill import SpillFile
from tpsload.mock import MockProcess, lean, server
from tpsload.records import ConnectionUse, ErrorClass, RequestRecord, TokenSource
from tpsload.render.jsonl import RecordsFile
from tpsload.scale import run_load
from tpsload.workload.prepare import params
from tpsload.workload.spec import RequestSpec, Workload


def _records(n, rng, chunks=40, usage_every=7):
    """Records of every shape the summary reads: ok, failed, cancelled, warm-up, per-chunk token counts."""
    out = []
    t = 1_000_000_000
    for i in range(n):
        send = t + rng.randrange(0, 5_000_000)
        first = send + rng.randrange(1_000_000, 90_000_000)
        times = array("q", [first])
        for _ in range(rng.randrange(1, chunks)):
            times.append(times[-1] + rng.randrange(0, 30_000_000))
        r = RequestRecord(index=i, warmup=i < 3, t_sched=send - rng.randrange(0, 2_000_000), t_send=send,
                          cap_wait_ns=rng.randrange(0, 3) * 1000, t_connected=send + 1000,
                          t_written=send + 50_000, t_headers=first - 1000,
                          connection=ConnectionUse.NEW if i % 5 == 0 else ConnectionUse.REUSED)
        if i % 11 == 5:
            r.error_class, r.error, r.status = ErrorClass.HTTP_5XX, "http 503: busy", 503
            r.t_done = send + 3_000_000
        elif i % 13 == 6:
            r.error_class, r.error, r.t_done = ErrorClass.CANCELLED, "interrupted", send + 9_000
        else:
            r.chunk_times, r.t_first, r.t_last = times, times[0], times[-1]
            r.t_end, r.t_done = times[-1] + 10_000, times[-1] + 20_000
            n_out = len(times) + rng.randrange(0, 3)
            r.output_tokens, r.token_source = n_out, TokenSource.USAGE
            r.token_counts = {TokenSource.USAGE: n_out, TokenSource.CHUNKS: len(times)}
            r.prompt_tokens, r.cached_tokens = rng.randrange(10, 90), (8 if i % 3 else None)
            r.finish_reason, r.saw_done, r.status = "length", True, 200
            r.server_timings = {"predicted_per_second": 50.0 + i, "prompt_n": 3}
            r.content_chunks = len(times)
            if i % usage_every == 0:
                r.chunk_tokens = array("q", [1] + [rng.randrange(1, 3) for _ in range(len(times) - 1)])
            if i % 4 == 1:  # a thinking model's answer, in a conversation's turn, in a stage
                r.t_answer, r.reasoning_tokens, r.reasoning_source = times[len(times) // 2], 1, TokenSource.USAGE
                r.session, r.turn, r.slot, r.stage = i // 3, i % 3 + 1, i % 2, i % 4
        out.append(r)
        t += rng.randrange(1_000_000, 20_000_000)
    return out


def test_a_ledger_gives_back_what_the_summary_reads_and_the_same_summary():
    recs = _records(300, random.Random(1))
    led = Ledger()
    for r in reversed(recs):  # they finish in any order: the ledger gives them back in index order
        led.append(r)
    back = list(led)
    assert [r.index for r in back] == [r.index for r in recs]
    for a, b in zip(recs, back, strict=True):
        for f in RequestRecord.__slots__:
            if f == "server_timings":
                assert (b.server_timings or {}).get("predicted_per_second") == \
                    (a.server_timings or {}).get("predicted_per_second")
            else:
                assert getattr(a, f) == getattr(b, f), (a.index, f)
    assert stats.summarize(back, 8) == stats.summarize(recs, 8)
    assert stats.errors(back) == stats.errors(recs)


def test_past_the_exact_budget_gaps_are_a_histogram_within_its_bound():
    recs = _records(600, random.Random(2), chunks=80)
    ok = [r for r in recs if r.ok and not r.warmup]
    exact = stats.summarize(recs, 8, pr=stats.per_request(ok))
    led = Ledger(exact_chunks=2_000)  # a tenth of the run's chunks
    for r in recs:
        led.append(r)
    assert led.gaps() is not None and len(led._times) == 0  # the chunk times are let go
    back = list(led)
    assert all(r.chunks_dropped and not len(r.chunk_times) for r in back if r.ok)
    approx = stats.summarize(back, 8, pr=stats.per_request([r for r in back if r.ok and not r.warmup], led.gaps()))
    for key in ("itl_ms", "icl_ms"):
        e, a = getattr(exact, key), getattr(approx, key)
        assert a["n"] == e["n"] and a["min"] == e["min"] and a["max"] == e["max"]
        assert a["mean"] == pytest.approx(e["mean"], rel=1e-9) and a["std"] == pytest.approx(e["std"], rel=1e-6)
        for q in ("p50", "p90", "p95", "p99", "p99_9"):
            # a bucket is 1/1024 of an octave: its middle is within 0.05 % of any value in it
            assert a[q] == pytest.approx(e[q], rel=1e-3), (key, q)
    # the request-level numbers do not depend on chunk times
    assert approx.ttft_ms == exact.ttft_ms and approx.tpot_ms == exact.tpot_ms
    assert approx.output_tokens_total == exact.output_tokens_total


def _workload(cfg):
    return Workload([RequestSpec(prompt="memory")], params(cfg, "lean", {}), {})


def _traced_load(cfg):
    """Run the load in this process (workers in their own), tracing this process's memory: returns
    (done, traced bytes) at every progress tick, the peak over the load, and what the run's state still
    holds once it is over (nothing in flight: what a finished request costs, times the requests)."""
    state = RunState()
    samples = []

    def progress(st):
        samples.append((st.done, tracemalloc.get_traced_memory()[0]))

    async def main():
        tracemalloc.reset_peak()
        await run_load(cfg, _workload(cfg), False, state, progress, Relay())

    tracemalloc.start()
    try:
        asyncio.run(main())
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(state.records) == cfg.load.requests and all(r.ok for r in state.records)
    return samples, peak, held


def test_a_runs_memory_grows_by_a_small_row_per_request_not_by_its_records(monkeypatch):
    # past a small exact budget, a finished request costs its ~240-byte row (and its gaps' share of two
    # histograms); a record held whole (64 chunk times, its dicts and int objects) costs ~1.4 kB: the old
    # code's. Measured as what two runs of different lengths still hold when they are over (nothing in
    # flight then, so the difference is the finished requests alone: a fit over a fast run's few progress
    # ticks read anywhere from 360 to 1,000 bytes, in-flight requests coming and going).
    monkeypatch.setattr(ledger_module, "EXACT_CHUNKS", 10_000)
    monkeypatch.setattr(ledger_module, "BLOCK_ROWS", 32)  # no 240 kB block allocated at once
    held = {}
    with MockProcess(module="tpsload.mock.lean", ttft_ms=1, itl_ms=1, tokens=64) as m:
        for n in (600, 1800):
            cfg = RunConfig.of(base_url=m.base_url, model="lean", concurrency=32, requests=n, max_tokens=64,
                               single=False, preconnect=False)
            held[n] = _traced_load(cfg)[2]
    per_request = (held[1800] - held[600]) / 1200
    assert per_request < 800, f"{per_request:.0f} bytes per finished request"  # measured: ~555


def test_worker_runs_hand_records_on_as_they_go(monkeypatch):
    # the parent's peak over the load: 4x the requests must not cost 4x the memory (the old code got
    # every record in one message at the end, pickled and then unpickled: ~2.2 kB a request here; now
    # ~0.6 kB: its row in the ledger, in blocks)
    monkeypatch.setattr(ledger_module, "EXACT_CHUNKS", 10_000)
    peaks = {}
    with MockProcess(module="tpsload.mock.lean", ttft_ms=1, itl_ms=1, tokens=32) as m:
        for n in (32, 400, 1600):  # the first: whatever a first run imports or caches, out of the way
            cfg = RunConfig.of(base_url=m.base_url, model="lean", concurrency=16, requests=n, max_tokens=32,
                               workers=2, single=False, preconnect=False)
            peaks[n] = _traced_load(cfg)[1]
    per_request = (peaks[1600] - peaks[400]) / 1200
    assert per_request < 1200, f"{per_request:.0f} bytes of parent peak per request ({peaks})"


def test_the_mock_servers_keep_only_their_latest_requests_in_the_log(monkeypatch):
    monkeypatch.setattr(lean, "LOG_LIMIT", 3)
    monkeypatch.setattr(server, "LOG_LIMIT", 3)
    for log in (lean.LeanServer(1, 1, 4).log, server.MockServer(server.MockConfig()).log):
        for i in range(5):
            log.append([i])
        assert list(log) == [[2], [3], [4]]


def test_a_records_file_that_fails_stops_but_the_run_keeps_every_request():
    class Full:
        def __call__(self, rec):
            raise OSError(28, "No space left on device")

    led = Ledger()
    led.sink = Full()
    recs = _records(20, random.Random(4))
    for r in recs:
        led.append(r)
    assert len(led) == 20 and led.sink is None and "No space left" in led.sink_error


def test_records_are_on_disk_while_the_run_goes_and_survive_a_kill(tmp_path):
    # lines are written as requests finish: a run killed mid-way (OOM, kill -9) leaves them behind
    rec = tmp_path / "r.jsonl"
    with MockProcess(module="tpsload.mock.lean", ttft_ms=1, itl_ms=5, tokens=16) as m:
        p = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "--model", "lean",
                              "-c", "8", "--duration", "120s", "--max-tokens", "16", "-q", "--no-server-metrics",
                              "--records", str(rec)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: rec.exists() and rec.read_text().count("\n") >= 128, "128 lines on disk", timeout=60)
            assert p.poll() is None  # still running
        finally:
            p.kill()
            p.wait(timeout=10)
    lines = rec.read_text().split("\n")
    done = [json.loads(ln) for ln in lines[:-1]]  # the last may have been cut by the kill
    assert len(done) >= 128 and all(r["ok"] and r["output_tokens"] == 16 for r in done)
    assert len({r["index"] for r in done}) == len(done)


def test_records_waiting_for_a_count_are_parked_on_disk_then_all_counted(monkeypatch, tmp_path):
    # a server that sends no token counts: each record keeps its text until the counts are resolved after
    # the run; past HOLD_BATCH they wait in the spill file, not in memory
    monkeypatch.setattr(ledger_module, "HOLD_BATCH", 8)
    parked = []
    write = SpillFile.__call__

    def spy(self, batch):
        parked.append(len(batch))
        write(self, batch)

    monkeypatch.setattr(SpillFile, "__call__", spy)
    path = tmp_path / "r.jsonl"
    with MockProcess(ttft_ms=5, itl_ms=1, no_usage=True) as m:
        cfg = RunConfig.of(base_url=m.base_url, concurrency=4, requests=40, max_tokens=10, single=False)
        records = RecordsFile(str(path))
        result, _ = asyncio.run(measure(cfg, show_progress=False, records=records))
        records.close()
    s = result["summary"]
    assert sum(parked) >= 32 and all(n == 8 for n in parked)
    assert s["requests_ok"] == 40 and s["output_tokens_total"] == 400 and sum(s["token_sources"].values()) == 40
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == list(range(40)) and all(r["output_tokens"] == 10 for r in lines)
