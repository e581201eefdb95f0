"""The request's phases, checked against the servers' own logs; pre-connect; the send-path verdict.

The mock logs, per request, when it had the whole request (`arrival_ns`), when it wrote the first and
last token, and the client's port (one port, one connection); the lean server logs arrival and
first-token times. Both stamp perf_counter_ns (CLOCK_MONOTONIC, machine-wide), the clock of our records,
so each phase is compared with what the server saw, on one clock.
"""

import json
import statistics
import urllib.request

from conftest import load_json, tpsload
from tpsload.analysis.health import SendPath, send_lags, verdict
from tpsload.core import client as client_mod
from tpsload.mock import MockProcess
from tpsload.records import ConnectionUse, RequestRecord

MS = 1_000_000


def _run(base_url, tmp_path, *args, n, prompts=None, env=None):
    """A CLI run whose request i has the prompt 'p<i> ...' (so server log entries map to records)."""
    prompts = prompts or n
    pf = tmp_path / "prompts.txt"
    pf.write_text("".join(f"p{i} tell a story\n" for i in range(prompts)))
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    tpsload("run", "--base-url", base_url, "-n", str(n), "--prompt-file", str(pf), "--json", str(out),
            "--records", str(rec), "-q", *args, env=env, check=0)
    res = load_json(out)
    t0 = res["clock"]["t0_ns"]
    records = [json.loads(line) for line in rec.read_text().splitlines()]
    for r in records:  # back to absolute perf_counter_ns, the servers' clock
        for k in ("t_sched", "t_send", "t_connected", "t_written", "t_headers", "t_first", "t_last", "t_end"):
            v = r[f"{k}_ms"]
            r[k] = None if v is None else t0 + round(v * 1e6)
    return res, records


def _mock_log(m):
    with urllib.request.urlopen(m.base_url.rsplit("/v1", 1)[0] + "/mock/log", timeout=10) as fh:
        return {e["prompt"].split()[0]: e for e in json.load(fh)}


def _matched(records, log):
    pairs = [(r, log[f"p{r['index']}"]) for r in records]
    assert len(pairs) == len(records) == len(log)
    return pairs


def test_stream_phases_against_the_mock_log(tmp_path):
    with MockProcess(ttft_ms=40, itl_ms=5) as m:
        res, records = _run(m.base_url, tmp_path, "-c", "4", "--max-tokens", "4", n=16)
        log = _mock_log(m)
    assert res["summary"]["requests_ok"] == 16
    for r, e in _matched(records, log):
        # what the clock allows, whatever the load: we hold the connection before anything of ours can
        # reach the server; the server has the whole request before it answers; headers before tokens
        assert r["t_sched"] <= r["t_send"] <= r["t_connected"] <= e["arrival_ns"] <= r["t_headers"], (r, e)
        assert r["t_connected"] <= r["t_written"] <= r["t_headers"] <= r["t_first"]
        assert e["first_ns"] <= r["t_first"] and e["last_ns"] <= r["t_last"]
        # the mock answers with its headers as soon as it has the request, and its first token 40 ms after:
        # the request was written when the server got it, and the response headers came long before the token
        assert abs(e["arrival_ns"] - r["t_written"]) < 15 * MS, (e["arrival_ns"] - r["t_written"]) / MS
        assert r["t_headers"] - e["arrival_ns"] < 15 * MS
        assert e["first_ns"] - r["t_headers"] > 25 * MS
    s = res["summary"]
    by_hand = sorted((r["t_written"] - r["t_sched"]) / MS for r in records)
    assert s["send_ms"]["n"] == 16 and abs(s["send_ms"]["max"] - by_hand[-1]) < 0.01
    assert s["ttfb_ms"]["n"] == 16 and s["ttfb_ms"]["max"] < 30  # headers, not the first token


def test_non_stream_headers_come_with_the_whole_answer(tmp_path):
    # a non-streamed answer is written at once, after ttft + (n-1) itl: its headers mark the response
    with MockProcess(ttft_ms=30, itl_ms=10) as m:
        res, records = _run(m.base_url, tmp_path, "-c", "2", "--max-tokens", "4", "--no-stream", n=6)
        log = _mock_log(m)
    for r, e in _matched(records, log):
        assert r["t_connected"] <= e["arrival_ns"] and abs(e["arrival_ns"] - r["t_written"]) < 15 * MS
        assert e["first_ns"] <= r["t_headers"]
        # the answer is written ~60 ms after the request (the mock's own clock); its headers reach us with
        # it. Our t_written may trail the server's arrival a little (aiohttp < 3.10 finishes the write on a
        # task of its own), never by the 15 ms bound above
        assert r["t_headers"] - e["first_ns"] < 15 * MS
        assert 45 * MS <= r["t_headers"] - r["t_written"] < 100 * MS
    assert 45 <= res["summary"]["ttfb_ms"]["p50"] < 100


def _connections_as_the_server_saw_them(pairs):
    """Per request in order of arrival: 'new' when its port had not carried a request before, else 'reused'."""
    seen, out = set(), {}
    for r, e in sorted(pairs, key=lambda p: p[1]["arrival_ns"]):
        out[r["index"]] = "reused" if e["peer"] in seen else "new"
        seen.add(e["peer"])
    return out, seen


def test_preconnect_opens_the_runs_connections_before_its_first_send(tmp_path):
    c, n = 8, 32
    with MockProcess(ttft_ms=20, itl_ms=5) as m:
        res, records = _run(m.base_url, tmp_path, "-c", str(c), "--max-tokens", "4", n=n)
        _, ports = _connections_as_the_server_saw_them(_matched(records, _mock_log(m)))
    s = res["summary"]
    assert s["preconnected"] == c and res["config"]["preconnect"] is True
    # not one connection opened once the clock started: each request found one in the pool
    assert s["connections_opened"] == 0 and s["connections_reused"] == n and s["connect_ms"] is None
    assert all(r["connection"] == "reused" for r in records)
    assert len(ports) == c  # the server saw exactly c connections carry the run


def test_without_preconnect_the_first_wave_opens_the_connections(tmp_path):
    c, n = 8, 32
    with MockProcess(ttft_ms=20, itl_ms=5) as m:
        res, records = _run(m.base_url, tmp_path, "-c", str(c), "--max-tokens", "4", "--no-preconnect", n=n)
        truth, ports = _connections_as_the_server_saw_them(_matched(records, _mock_log(m)))
    s = res["summary"]
    assert s["preconnected"] is None and res["config"]["preconnect"] is False
    assert s["connections_opened"] == c == len(ports) and s["connections_reused"] == n - c
    # each record says what the server saw: the first request on a port opened it
    assert {r["index"]: r["connection"] for r in records} == truth
    new = [r for r in records if r["connection"] == "new"]
    assert sorted(r["index"] for r in new) == list(range(c))  # the first wave: one per stream
    assert s["connect_ms"]["n"] == c
    by_hand = sorted((r["t_connected"] - r["t_send"]) / MS for r in new)
    assert abs(s["connect_ms"]["max"] - by_hand[-1]) < 0.01 and by_hand[0] > 0


def test_a_server_that_closes_after_each_stream_gets_a_connection_per_request(tmp_path):
    # llama-server's way (it answers /props): no pool to fill, so no pre-connect; every TTFT includes a connect
    n = 12
    with MockProcess(ttft_ms=20, itl_ms=5, close_after_stream=True, llama_props=4) as m:
        res, records = _run(m.base_url, tmp_path, "-c", "3", "--max-tokens", "4", n=n)
        truth, ports = _connections_as_the_server_saw_them(_matched(records, _mock_log(m)))
    s = res["summary"]
    assert s["requests_ok"] == n and s["preconnected"] == 0
    assert s["connections_opened"] == n == len(ports) and s["connections_reused"] == 0
    assert all(v == "new" for v in truth.values()) and all(r["connection"] == "new" for r in records)
    assert s["connect_ms"]["n"] == n and s["connect_ms"]["max"] < s["ttft_ms"]["min"]


# -- the verdict on the send path --------------------------------------------------------------------------

def _rec(i, due_ms, send_ms, connected_ms, written_ms, use=ConnectionUse.REUSED, cap_ms=0.0):
    return RequestRecord(index=i, t_sched=round(due_ms * MS), t_send=round(send_ms * MS),
                         t_connected=round(connected_ms * MS), t_written=round(written_ms * MS), connection=use,
                         cap_wait_ns=round(cap_ms * MS))


def _health(records):
    send, cap = send_lags(records)
    return verdict([0.1] * 50, send, 1.0, 10.0, cap, SendPath(records))


def test_a_slow_request_path_on_warm_connections_is_client_bound():
    # sent on time, but 3 of 100 took 2.5 ms from the start of the send to the last byte written
    recs = [_rec(i, 10 * i, 10 * i, 10 * i + 0.05, 10 * i + (2.5 if i % 33 == 5 else 0.2)) for i in range(100)]
    h = _health(recs)
    assert h["client_bound"] is True and h["late_send_share"] == 0.0 and h["slow_send_share"] == 0.03
    assert len(h["reasons"]) == 1 and h["reasons"][0].startswith("send path: 3.0% of requests were written > 1 ms")
    assert "2.5 ms in the client's request path" in h["reasons"][0] and "task of its own" not in h["reasons"][0]
    assert abs(h["send_delay_ms"]["max"] - 2.5) < 1e-9
    # where each request was written on a lazily started task, the reason says so
    assert "written on a task of its own" in SendPath(recs, deferred_writes=True).reason()


def test_late_starts_are_one_send_path_reason_not_two():
    # 5 of 100 began 3 ms after they were due: the late-send rule and the send path see the same delay
    recs = [_rec(i, 10 * i, 10 * i + (3 if i < 5 else 0), 10 * i + (3 if i < 5 else 0) + 0.05,
                 10 * i + (3 if i < 5 else 0) + 0.2) for i in range(100)]
    h = _health(recs)
    assert h["late_send_share"] == 0.05 and h["client_bound"] is True
    assert len(h["reasons"]) == 1 and "p99 3.0 ms before the client began them" in h["reasons"][0]


def test_cap_waits_and_connection_setups_are_not_the_clients_send_delay():
    # each waited 50 ms for the -c cap, or 5 ms for a new connection (network and the server's accept):
    # neither is the client's own delay, which was 0.2 ms each
    capped = [_rec(i, 10 * i, 10 * i + 50, 10 * i + 50.05, 10 * i + 50.2, cap_ms=50) for i in range(50)]
    fresh = [_rec(i, 10 * i, 10 * i, 10 * i + 5, 10 * i + 5.2, use=ConnectionUse.NEW) for i in range(50, 100)]
    h = _health(capped + fresh)
    assert h["client_bound"] is False and h["reasons"] == [] and h["slow_send_share"] == 0.0
    assert abs(h["send_delay_ms"]["max"] - 0.2) < 1e-6
    # the same 5 ms on warm connections is the client's
    warm = [_rec(i, 10 * i, 10 * i, 10 * i + 5, 10 * i + 5.2) for i in range(100)]
    assert _health(warm)["client_bound"] is True


def test_a_starved_client_is_flagged_by_its_send_path(tmp_path):
    # 128 streams on two shared cores, each request sent the slow way (ClientSession.post, its write
    # deferred to a task of its own: what tpsload did before its direct path): each wave of 128 answers,
    # ending together, is turned into 128 new requests one after another, ~0.2 ms of CPU each. The lean
    # server's log gives the whole TTFT error.
    n = 384
    slow = {"TPSLOAD_SEND_PATH": "session", "TPSLOAD_DEFERRED_WRITES": "1"}
    with MockProcess(module="tpsload.mock.lean", ttft_ms=20, itl_ms=2, tokens=4) as m:
        res, records = _run(m.base_url, tmp_path, "-c", "128", "--max-tokens", "4", n=n, env=slow)
        with urllib.request.urlopen(m.base_url.rsplit("/v1", 1)[0] + "/log", timeout=10) as fh:
            lean = json.load(fh)
    entries = lean["requests"] if isinstance(lean, dict) else lean
    server = {e[0].split()[0]: e for e in entries}
    errors = []
    for r in records:
        _, arrival, first = server[f"p{r['index']}"][:3]
        # ours minus the server's own TTFT (request arrival -> first token written): the whole error
        errors.append(((r["t_first"] - r["t_send"]) - (first - arrival)) / MS)
    h = res["client_health"]
    assert res["summary"]["requests_ok"] == n
    # the promise: a run whose TTFT is several ms off does not call the client fine, and names the send path
    assert statistics.mean(errors) > 2.0
    assert h["client_bound"] is True and any(x.startswith("send path:") for x in h["reasons"]), h["reasons"]
    assert h["send_delay_ms"]["p99"] > 1.0


def _wave_order(tmp_path, env):
    """A closed-loop run whose waves end together (one token, 30 ms TTFT: the lean server answers each wave
    in one timer tick); the warm requests in the order the client began them."""
    out, rec = tmp_path / f"r{len(env)}.json", tmp_path / f"r{len(env)}.jsonl"
    with MockProcess(module="tpsload.mock.lean", ttft_ms=30, itl_ms=0, tokens=1) as m:
        tpsload("run", "--base-url", m.base_url, "-c", "16", "-n", "64", "--max-tokens", "1", "--json", str(out),
                "--records", str(rec), "-q", env=env, check=0)
    records = [json.loads(line) for line in rec.read_text().splitlines()]
    warm = sorted((r for r in records if r["connection"] == "reused" and r["t_written_ms"] is not None),
                  key=lambda r: r["t_send_ms"])
    return load_json(out), warm


def _written_after_the_next_began(warm):
    return [a["index"] for a, b in zip(warm, warm[1:], strict=False) if a["t_written_ms"] > b["t_send_ms"]]


def test_each_request_is_written_before_the_next_one_is_built(tmp_path):
    # Python 3.11: aiohttp writes a request on a task that would run after every task already due, so a
    # wave's requests would all be built before the first was written. tpsload writes each request in the
    # task that sends it (on aiohttp's connection directly; or, through ClientSession.post, by starting
    # aiohttp's writer itself): each request is on the wire before the client begins the next.
    session = {"TPSLOAD_SEND_PATH": "session"}
    for env, path in (({}, "direct"), (session, "eager" if client_mod.DEFERRED_WRITES else "task")):
        res, warm = _wave_order(tmp_path, env)
        assert res["summary"]["requests_ok"] == 64 and len(warm) >= 48
        assert not _written_after_the_next_began(warm)
        assert res["client_health"]["write_path"] == path
    if client_mod.DEFERRED_WRITES:  # on a Python where aiohttp would defer: the other way
        res, warm = _wave_order(tmp_path, session | {"TPSLOAD_DEFERRED_WRITES": "1"})
        late = _written_after_the_next_began(warm)
        h = res["client_health"]
        assert h["write_path"] == "deferred"
        assert h["write_path_reason"] == "TPSLOAD_SEND_PATH=session; TPSLOAD_DEFERRED_WRITES=1"
        assert len(late) > len(warm) / 2, (len(late), len(warm))
