"""The client-health verdict: late sends are the client's only when the -c cap did not cause them."""

from conftest import apart, load_json, tpsload
from tpsload.analysis.health import send_lags, verdict
from tpsload.records import RequestRecord

MS = 1_000_000


def test_cap_wait_is_not_the_clients_lateness():
    # 100 open-loop sends: 40 held 300 ms by the cap, then sent 0.2 ms after it freed; 60 on time
    recs = [RequestRecord(index=i, t_sched=i * 10 * MS, cap_wait_ns=300 * MS if i % 5 < 2 else 0,
                          t_send=i * 10 * MS + (300 * MS if i % 5 < 2 else 0) + MS // 5) for i in range(100)]
    send, cap = send_lags(recs)
    h = verdict([0.1] * 50, send, 1.0, 10.0, cap)
    assert h["client_bound"] is False and h["late_send_share"] == 0.0
    assert h["cap_wait_share"] == 0.4 and h["cap_wait_ms"]["max"] == 300 and h["cap_wait_ms"]["n"] == 100
    assert "40%" in h["cap_note"] and "-c" in h["cap_note"]
    assert h["send_lag_ms"]["max"] == 300.2  # the raw lag is still reported


def test_a_late_client_is_still_flagged_with_a_cap():
    # the cap held 10 of them; 5 others were 3 ms late with the cap free: that is the client
    recs = [RequestRecord(index=i, t_sched=i * 10 * MS, cap_wait_ns=50 * MS if i < 10 else 0,
                          t_send=i * 10 * MS + (50 * MS if i < 10 else 3 * MS if i >= 95 else 0)) for i in range(100)]
    send, cap = send_lags(recs)
    h = verdict([0.1] * 50, send, 1.0, 10.0, cap)
    assert h["client_bound"] is True and h["late_send_share"] == 0.05
    assert h["reasons"] == ["5.0% of requests sent > 1 ms late (limit 1%)"]
    # without a cap wait, the same lags would all count against the client
    h = verdict([0.1] * 50, send, 1.0, 10.0)
    assert h["late_send_share"] == 0.15 and h["cap_wait_ms"] is None and h["cap_note"] is None


def test_closed_loop_and_warmup():
    recs = [RequestRecord(index=0, warmup=True, t_sched=0, t_send=5 * MS), RequestRecord(index=1)]
    assert send_lags(recs) == ([], [])
    h = verdict([], [], 0.0, 0.0, [])
    assert h["late_send_share"] is None and h["cap_wait_share"] is None and h["client_bound"] is False


def test_rate_above_the_cap_is_not_client_bound(mock_server, tmp_path):
    # 100 req/s of ~65 ms requests needs ~7 in flight; -c 2 holds the schedule back by seconds
    server_cpus, client_cpus = apart()  # (the mock on a CPU of its own: see test_traffic's trace replay)
    m = mock_server(ttft_ms=20, itl_ms=5, cpus=server_cpus)
    out = tmp_path / "r.json"
    # (warm-up: on a busy machine the first sends of any open loop can be a few ms late, cap or none)
    p = tpsload("run", "--base-url", m.base_url, "--rate", "100", "-c", "2", "-n", "120", "--warmup", "3",
                "--max-tokens", "10", "--json", str(out), check=0, cpus=client_cpus)
    res = load_json(out)
    s, h = res["summary"], res["client_health"]
    assert s["requests_ok"] == 120 and s["achieved_rate"] < 40 and s["send_lag_ms"]["p90"] > 1000
    assert h["cap_wait_share"] > 0.9 and h["cap_wait_ms"]["p90"] > 1000
    # net of the cap's wait, the client sent on time: no late-send blame, and the console says why
    assert h["late_send_share"] <= 0.01 and not any("late" in r for r in h["reasons"]), h
    assert "Concurrency cap" in p.stdout and "load shaping" in p.stdout
