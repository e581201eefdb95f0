"""The run over time beside the server's series: hand-made records with known answers."""

from array import array

from tpsload.analysis import report, timeline
from tpsload.records import RequestRecord

MS = 1_000_000


def rec(i, send_ms, done_ms, chunk_ms, tokens):
    return RequestRecord(index=i, t_send=send_ms * MS, t_first=chunk_ms[0] * MS, t_last=chunk_ms[-1] * MS,
                         t_end=done_ms * MS, t_done=done_ms * MS, chunk_times=array("q", [c * MS for c in chunk_ms]),
                         output_tokens=tokens)


def test_in_flight_and_tokens_per_second_at_each_sample():
    records = [rec(0, 0, 1500, [100, 600, 1100], 3),  # 1 token per chunk
               rec(1, 500, 2500, [900, 1900], 4)]      # 2 tokens per chunk (counted from the total)
    s = timeline.client_series(records, t0_ns=0, t_ms=[250, 1000, 2000, 3000])
    assert s["in_flight"] == [1, 2, 1, 0]
    # (250, 1000]: chunks at 600 (1 token) and 900 (2 tokens) over 0.75 s; (1000, 2000]: 1100 (1) + 1900 (2)
    assert s["output_tps"] == [None, 4.0, 3.0, 0.0]


def test_counter_rate_skips_resets_and_gaps():
    assert timeline.rate([0, 1000, 2000, 3000], [10, 30, 5, None]) == [None, 20.0, None, None]


def test_timeline_charts_need_server_samples():
    run = {"summary": {}, "server_metrics": {"samples": {
        "t_ms": [0.0, 1000.0, 2000.0],
        "mapped": {"requests_running": [0, 2, 2], "requests_waiting": [0, 1, 0], "generated_tokens": [0, 50, 120]},
        "client": {"in_flight": [0, 3, 2], "output_tps": [None, 49.0, 70.0]}}}}
    requests, tokens = report.timeline_charts(run)
    assert [name for name, _ in requests.series] == ["in flight (tpsload)", "running (server)", "waiting (server)"]
    assert dict(tokens.series)["generated (server)"] == (None, 50.0, 70.0)
    assert requests.xs == (0.0, 1.0, 2.0)
    assert report.timeline_charts({"summary": {}}) == []
