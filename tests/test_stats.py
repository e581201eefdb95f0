from array import array

import pytest

from tpsload.analysis.stats import dist, legacy_fields, load_shape, per_request, summarize
from tpsload.records import ErrorClass, RequestRecord, TokenSource

MS = 1_000_000


def rec(i, send_ms, chunk_ms, out, prompt=10, warmup=False, k=None, err=None):
    r = RequestRecord(index=i, warmup=warmup)
    r.t_send = r.t_sched = send_ms * MS
    r.chunk_times = array("q", [int(c * MS) for c in chunk_ms])
    if chunk_ms:
        r.t_first, r.t_last = r.chunk_times[0], r.chunk_times[-1]
    r.t_end = r.t_done = int((chunk_ms[-1] if chunk_ms else send_ms) * MS) + 1 * MS
    r.output_tokens, r.token_source, r.prompt_tokens = out, TokenSource.USAGE, prompt
    if k is not None:
        r.chunk_tokens = array("q", k)
    if err:
        r.error_class, r.error = err, "boom"
    return r


def test_dist_linear_percentiles_and_empty_is_none():
    d = dist([1, 2, 3, 4])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["min"] == 1 and d["max"] == 4
    assert d["p50"] == 2.5 and d["p90"] == pytest.approx(3.7)
    assert d["std"] == pytest.approx((((1.5**2 + 0.5**2) * 2) / 4) ** 0.5)  # population: sqrt(1.25)
    assert dist([]) is None


def test_per_request_hand_computed():
    # sent at 0, first token at 100 ms, then 3 more tokens every 20 ms -> last at 160
    r = rec(0, 0, [100, 120, 140, 160], out=4, prompt=50)
    pr = per_request([r])
    assert pr.column("ttft_ms").tolist() == [100.0]
    assert pr.column("e2e_latency_ms").tolist() == [160.0]
    assert pr.column("tpot_ms").tolist() == [20.0]
    assert pr.column("decode_tps").tolist() == pytest.approx([50.0])  # 3 tokens / 60 ms
    assert pr.column("e2e_tps").tolist() == pytest.approx([4 / 0.160])
    assert pr.column("prefill_tps").tolist() == pytest.approx([500.0])  # 50 tokens / 100 ms
    assert pr.icl_ms.tolist() == [20.0, 20.0, 20.0]
    assert pr.itl_ms.tolist() == [20.0, 20.0, 20.0]


def test_itl_spreads_multi_token_chunks():
    # chunk 2 carries 3 tokens after a 30 ms gap -> 3 samples of 10 ms
    r = rec(0, 0, [100, 130, 140], out=5, k=[1, 3, 1])
    pr = per_request([r])
    assert pr.icl_ms.tolist() == [30.0, 10.0]
    assert pr.itl_ms.tolist() == [10.0, 10.0, 10.0, 10.0]
    assert pr.column("tpot_ms").tolist() == [10.0]


def test_one_token_has_no_tpot_or_decode():
    pr = per_request([rec(0, 0, [50], out=1)])
    assert pr.column("ttft_ms").tolist() == [50.0]
    assert pr.column("tpot_ms").size == 0 and pr.column("decode_tps").size == 0


def test_summary_throughput_errors_and_warmup():
    records = [
        rec(0, 0, [10, 20], out=2, warmup=True),  # excluded
        rec(1, 100, [150, 200], out=2),
        rec(2, 100, [160, 300], out=4),
        rec(3, 120, [], out=None, err=ErrorClass.HTTP_5XX),
    ]
    records[3].t_done = 130 * MS
    s = summarize(records, concurrency=2)
    assert s.requests_ok == 2 and s.requests_failed == 1
    assert s.duration_s == pytest.approx(0.201)  # first send 100 ms, last end 301 ms
    assert s.output_throughput == pytest.approx(6 / 0.201)
    assert s.total_token_throughput == pytest.approx(26 / 0.201)
    assert s.error_rate == pytest.approx(1 / 3)
    assert s.ttft_ms["n"] == 2 and s.ttft_ms["mean"] == pytest.approx(55.0)
    assert s.token_sources == {"usage": 2}
    assert s.itl_ms["n"] == 2


def test_empty_run_is_all_null_not_zero():
    s = summarize([], concurrency=4)
    assert s.requests_ok == 0 and s.ttft_ms is None and s.output_throughput is None
    assert s.error_rate is None and s.steady_output_throughput is None


def test_load_shape_concurrency_and_steady_window():
    # two requests overlap on [100, 200] ms; alone before and after
    a = rec(0, 0, [50, 100, 150, 199], out=4)
    b = rec(1, 100, [120, 160, 250, 290], out=4)
    a.t_done, b.t_done = 200 * MS, 300 * MS
    conc, steady = load_shape([a, b], target=2)
    assert conc == pytest.approx((200 + 200) / 300)  # each in flight 200 ms over a 300 ms span
    # tokens arriving while 2 in flight ([100, 200)): a@100,150,199 + b@120,160 = 5 tokens in 0.1 s
    assert steady == pytest.approx(50.0)


def test_legacy_fields():
    r = rec(0, 0, [100, 120, 140, 160, 180], out=5)
    f = legacy_fields(r)
    assert f.mode == "stream" and f.tokens == 5
    assert f.elapsed_seconds == pytest.approx(0.08)
    assert f.tokens_per_second == pytest.approx(5 / 0.08)
    r.stream = False
    assert legacy_fields(r).elapsed_seconds == pytest.approx(0.181)
