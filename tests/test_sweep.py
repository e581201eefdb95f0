"""Open loop, SLOs and sweeps against a mock whose knee is known: 4 slots, 10 % slower per busy slot."""

import collections
import csv
import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import load_json, tpsload
from tpsload.analysis import slo
from tpsload.analysis.sweep import parse_levels
from tpsload.cli import cli
from tpsload.core.scheduler import arrival_offsets
from tpsload.errors import TpsloadError
from tpsload.workload import seeds

KNEE = dict(ttft_ms=20, itl_ms=10, slots=4, slowdown=0.1)
SLOS = ("--slo", "ttft_p99<=100ms", "--slo", "tpot_p50<=12ms", "--slo", "error_rate<=1%")


def test_arrival_offsets():
    c = arrival_offsets(5, 10, "constant")
    assert np.allclose(c, [0, 0.1, 0.2, 0.3, 0.4])
    p = arrival_offsets(1000, 50, "poisson", seed=3)
    assert p[-1] == pytest.approx(999 / 50)  # the plan offers exactly the asked rate
    assert np.array_equal(p, arrival_offsets(1000, 50, "poisson", seed=3))
    gaps = np.diff(p)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.15)  # exponential: CV 1
    g = np.diff(arrival_offsets(2000, 50, "gamma", burstiness=0.25, seed=1))
    assert np.std(g) / np.mean(g) == pytest.approx(2.0, abs=0.3)  # gamma shape k: CV 1/sqrt(k)


def test_levels():
    assert parse_levels("1..16", "-c", True) == [1, 2, 4, 8, 16]
    assert parse_levels("8,1,2", "-c", True) == [1, 2, 8]
    assert parse_levels("0.5..2", "--rate", False) == [0.5, 1.0, 2.0]
    for bad in ("0,1", "a,b", "4..2", "1.5,2"):
        with pytest.raises(TpsloadError):
            parse_levels(bad, "-c", True)


def test_slo_parsing():
    s = slo.parse("ttft_p99<=2s")
    assert (s.key, s.stat, s.op, s.threshold) == ("ttft_ms", "p99", "<=", 2000.0)
    assert slo.parse("tpot_p50 < 80ms").threshold == 80.0
    assert slo.parse("decode_tps_p10>=10").key == "decode_tps"
    assert slo.parse("error_rate<=1%").threshold == pytest.approx(0.01)
    assert slo.parse("itl_p99_9<=500us").threshold == pytest.approx(0.5)
    for bad, msg in (("ttft<=2s", "statistic"), ("ttft_p99<=2", "time unit"), ("nope_p99<=1s", "unknown metric"),
                     ("error_rate_p99<=1%", "one number per run"), ("ttft_p99=2s", "expected"),
                     ("decode_tps_p10>=10ms", "tokens/s")):
        with pytest.raises(TpsloadError, match=msg):
            slo.parse(bad)


def test_rate_mode_keeps_its_schedule(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=5)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "--rate", "25", "-n", "100", "--max-tokens", "10", "--json", str(out),
            check=0)
    res = load_json(out)
    s = res["summary"]
    assert s["offered_rate"] == 25 and s["achieved_rate"] == pytest.approx(25, rel=0.02)
    assert s["send_lag_ms"]["n"] == 100 and s["send_lag_ms"]["p50"] < 1.0 and s["send_lag_ms"]["p99"] < 5.0
    assert res["client_health"]["late_send_share"] is not None
    assert s["ttft_sched_ms"]["mean"] >= s["ttft_ms"]["mean"]
    # 25 req/s of 20 + 9 * 5 = 65 ms requests: about 1.6 in flight
    assert s["concurrency_achieved"] == pytest.approx(25 * 0.065, rel=0.25)


def test_rate_cap_shows_as_send_lag(mock_server, tmp_path):
    # 50 req/s of 200 ms requests needs 10 in flight; a cap of 2 makes the schedule slip, visibly
    m = mock_server(ttft_ms=100, itl_ms=10)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "--rate", "50", "-c", "2", "-n", "30", "--max-tokens", "10",
            "--json", str(out), check=0)
    res = load_json(out)
    s = res["summary"]
    assert s["send_lag_ms"]["p90"] > 500 and s["achieved_rate"] < 15
    assert s["ttft_sched_ms"]["p90"] > 5 * s["ttft_ms"]["p90"]
    # the lag is the cap's (load shaping the user asked for), reported as such, not blamed on the client
    h = res["client_health"]
    assert h["cap_wait_share"] > 0.5 and h["cap_wait_ms"]["p90"] > 500 and "-c" in h["cap_note"]


def test_slo_verdicts_goodput_and_fail_on_slo(mock_server, tmp_path):
    m = mock_server(**KNEE)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-c", "4", "-n", "16", "--max-tokens", "20", *SLOS, "--json",
                str(out), "--fail-on-slo", check=1)
    res = load_json(out)
    verdicts = {v["slo"]: v for v in res["slo"]["objectives"]}
    assert verdicts["ttft_p99<=100ms"]["met"] and verdicts["error_rate<=1%"]["met"]
    assert not verdicts["tpot_p50<=12ms"]["met"] and verdicts["tpot_p50<=12ms"]["value"] == pytest.approx(13, rel=0.05)
    assert res["slo"]["all_met"] is False and res["summary"]["goodput"] == 0
    assert "SLO missed: tpot_p50<=12ms" in p.stderr
    tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "8", "--max-tokens", "20", *SLOS, "--json", str(out),
            "--fail-on-slo", check=0)
    res = load_json(out)
    assert res["slo"]["all_met"] and res["summary"]["goodput"] == pytest.approx(res["summary"]["request_throughput"])


def test_sweep_finds_the_known_knee_and_frontier(mock_server, tmp_path):
    m = mock_server(**KNEE)
    out, table, plots = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "plots"
    p = tpsload("sweep", "--base-url", m.base_url, "-c", "1..16", "--max-tokens", "30", *SLOS, "--json", str(out),
                "--csv", str(table), "--plot", str(plots), check=0, timeout=300)
    sweep = load_json(out)
    assert [lv["concurrency"] for lv in sweep["levels"]] == [1, 2, 4, 8, 16]
    assert sweep["saturation"]["level"] == 4 and sweep["saturation"]["saturated"]
    assert sweep["slo_frontier"]["level"] == 2
    assert "throughput stops growing at concurrency 4" in p.stdout
    assert "the most load that meets every SLO is concurrency 2" in p.stdout
    # throughput: 1/itl per slot, 10 % slower per extra busy slot, flat past 4 slots
    tput = [lv["summary"]["steady_output_throughput"] for lv in sweep["levels"]]
    for c, t in zip([1, 2, 4], tput, strict=False):
        assert t == pytest.approx(c * 100 / (1 + 0.1 * (c - 1)), rel=0.05)
    assert tput[3] == pytest.approx(tput[2], rel=0.05) and tput[4] == pytest.approx(tput[2], rel=0.05)
    # CSV and JSON agree
    rows = list(csv.DictReader(table.open()))
    assert [int(r["concurrency"]) for r in rows] == [1, 2, 4, 8, 16]
    for r, lv in zip(rows, sweep["levels"], strict=True):
        assert float(r["output_throughput"]) == pytest.approx(lv["summary"]["output_throughput"])
        assert float(r["ttft_p99_ms"]) == pytest.approx(lv["summary"]["ttft_ms"]["p99"])
        assert (r["slo_all_met"] == "True") == lv["slo"]["all_met"]
    # plots exist, and plot the JSON's numbers
    for name in ("throughput", "latency", "latency_throughput"):
        assert (plots / f"{name}.png").stat().st_size > 10_000
    from tpsload.render.png import figures
    figs = figures(sweep)
    line = figs["throughput"].axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 4, 8, 16]
    assert list(line.get_ydata()) == [lv["summary"]["output_throughput"] for lv in sweep["levels"]]
    ttft_p99 = figs["latency"].axes[0].lines[1].get_ydata()
    assert list(ttft_p99) == [lv["summary"]["ttft_ms"]["p99"] for lv in sweep["levels"]]
    # one sweep table: the Markdown report prints the console's rows, cell for cell
    console_rows = [[c.strip() for c in line.split("│")] for line in p.stdout.splitlines() if "│" in line]
    md = tpsload("report", str(out), "--format", "markdown", "-o", "-", check=0).stdout.splitlines()
    top = next(i for i, line in enumerate(md) if line.startswith("| concurrency |"))
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in md[top + 2:] if line.startswith("|")]
    assert len(console_rows) == 5 and md_rows == console_rows
    assert console_rows[2][0] == "4" and console_rows[2][-1] == "missed" and console_rows[1][-1] == "met"
    # the HTML report draws the PNG's charts: 4 panels, each line through the 5 levels
    html = tpsload("report", str(out), "-o", "-", check=0).stdout
    assert html.count("<svg") == 4 and html.count("<polyline") == 8
    assert all(poly.split('"/>')[0].count(",") == 5 for poly in html.split('points="')[1:])


def test_sweep_stops_early_when_flat_and_missing_slos(mock_server, tmp_path):
    m = mock_server(**KNEE)
    out = tmp_path / "s.json"
    tpsload("sweep", "--base-url", m.base_url, "-c", "1,4,8,16,32,64", "--max-tokens", "20", *SLOS, "--json",
            str(out), check=0, timeout=300)
    sweep = load_json(out)
    assert [lv["concurrency"] for lv in sweep["levels"]] == [1, 4, 8, 16]
    assert "throughput stopped growing for two levels and SLOs were missed" in sweep["stop_reason"]


def test_interrupted_sweep_resumes(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "s.json"
    # 24 tokens: levels 3 and 4 still take ~1.8 s after level 2 is saved, for the SIGINT to land in them
    args = [sys.executable, "-m", "tpsload", "sweep", "--base-url", m.base_url, "-c", "1,2,3,4", "-n", "12",
            "--max-tokens", "24", "--json", str(out), "--no-early-stop", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and len(json.loads(out.read_text())["levels"]) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    first = load_json(out)
    finished = [lv for lv in first["levels"] if not lv["partial"]]
    assert 2 <= len(finished) < 4 and first["partial"] is True
    p = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    final = load_json(out)
    assert [lv["concurrency"] for lv in final["levels"]] == [1, 2, 3, 4]
    assert not any(lv["partial"] for lv in final["levels"]) and final["partial"] is False
    # the finished levels were kept, not run again
    for old, new in zip(finished, final["levels"], strict=False):
        assert old["started_at"] == new["started_at"] and old["clock"] == new["clock"]
    # a different workload cannot be resumed into this file
    p = subprocess.run(args[:-1] + ["--max-tokens", "25", "--resume"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "max_tokens" in p.stderr


def test_rate_sweep(mock_server, tmp_path):
    m = mock_server(ttft_ms=10, itl_ms=5)
    out = tmp_path / "s.json"
    tpsload("sweep", "--base-url", m.base_url, "--rate", "5,10,20", "-n", "30", "--max-tokens", "10", "--json",
            str(out), check=0, timeout=120)
    sweep = load_json(out)
    assert sweep["key"] == "rate" and [lv["rate"] for lv in sweep["levels"]] == [5, 10, 20]
    for lv in sweep["levels"]:
        assert lv["summary"]["achieved_rate"] == pytest.approx(lv["rate"], rel=0.02)


def test_plots_without_matplotlib_give_a_hint(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1)
    out = tmp_path / "s.json"
    code = ("import sys; sys.modules['matplotlib'] = None; from tpsload.cli import main; "
            f"sys.argv = ['tpsload', 'sweep', '--base-url', '{m.base_url}', '-c', '1,2', '-n', '2', "
            f"'--max-tokens', '4', '--json', '{out}', '--plot', '{tmp_path / 'plots'}']; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pip install 'tpsload[plot]'" in p.stdout
    assert len(load_json(out)["levels"]) == 2 and not (tmp_path / "plots").exists()


def test_seeds_never_collide():
    pairs = [(level, rep) for level in (None, 1, 2, 3, 4, 0.5, 1.5, 8, 16, 32, 64) for rep in range(10)]
    for seed in (0, 1, 100_003):
        derived = [seeds.derive(seed, level, rep) for level, rep in pairs]
        assert len(set(derived)) == len(pairs)
        assert seeds.derive(seed) == seed  # `run --seed S` keeps S
    # nor across neighbouring --seed values (a step-based scheme lands on a neighbour's seed)
    assert not {seeds.derive(0, 2, 1)} & {seeds.derive(s, lv, r) for s in range(1, 50) for lv, r in pairs}


def test_sweep_repetitions_get_prompts_of_their_own(mock_server, monkeypatch, tmp_path):
    """Every (level, repetition) of `sweep --repeat` sends its own prompts: none finds another's in a
    prompt cache. Captured from the real sweep against the mock, at the point the prompts are built."""
    from tpsload.cli import cli
    from tpsload.workload import prepare

    m = mock_server(ttft_ms=1, itl_ms=1)
    built = []
    real_build = prepare.build

    async def build(cfg, *args, **kwargs):
        w = await real_build(cfg, *args, **kwargs)
        built.append((cfg.load.concurrency, cfg.workload.seed, [item.prompt for item in w.items]))
        return w

    monkeypatch.setattr(prepare, "build", build)
    out = tmp_path / "s.json"
    code = cli.main(["sweep", "--base-url", m.base_url, "-c", "1,2,3", "--repeat", "3", "-n", "3", "--input-tokens",
                     "12", "--max-tokens", "2", "--no-early-stop", "--json", str(out), "-q"], standalone_mode=False)
    assert code == 0
    assert [c for c, _, _ in built] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert len({seed for _, seed, _ in built}) == 9
    prompts = [p for _, _, ps in built for p in ps]
    assert len(prompts) == 27 and len(set(prompts)) == 27
    assert [lv["summary"]["requests_ok"] for lv in load_json(out)["levels"]] == [9, 9, 9]


def dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_exit_codes(mock_server, tmp_path):
    out = tmp_path / "s.json"
    base = ["-n", "4", "--max-tokens", "4", "--json", str(out), "-q"]
    # every request fails: exit 1, the sweep stops at that level and says why
    failing = mock_server(ttft_ms=1, itl_ms=1, fault=["http_500"])
    p = tpsload("sweep", "--base-url", failing.base_url, "-c", "1,2,4", *base, check=1)
    sweep = load_json(out)
    assert [lv["concurrency"] for lv in sweep["levels"]] == [1] and sweep["partial"] is True
    assert "concurrency 1 failed: every request failed (http_5xx 4); higher levels not run" in sweep["stop_reason"]
    assert sweep["stop_reason"] in p.stderr and sweep["saturation"] is None
    # a level that stops early (--max-errors) fails the sweep too, after the levels before it
    flaky = mock_server(ttft_ms=1, itl_ms=1, fault=["http_500:every=3"])
    p = tpsload("sweep", "--base-url", flaky.base_url, "-c", "1,2", "-n", "12", "--max-tokens", "4",
                "--max-errors", "2", "--json", str(out), "-q", check=1)
    sweep = load_json(out)
    assert "concurrency 1 failed: stopped early: " in sweep["stop_reason"] and "--max-errors 2" in p.stderr
    # the error rate above --max-error-rate, in a level too short for the runner to judge it
    quarter = mock_server(ttft_ms=1, itl_ms=1, fault=["http_500:every=4"])
    p = tpsload("sweep", "--base-url", quarter.base_url, "-c", "1", *base, "--max-error-rate", "10%", check=1)
    assert re.search(r"concurrency 1 failed: error rate 2\d\.\d% is above --max-error-rate 10\.0%", p.stderr)
    # unreachable server: exit 2 with the one-line reason, as `run`
    p = tpsload("sweep", "--base-url", f"http://127.0.0.1:{dead_port()}/v1", "-c", "1,2", *base, check=2)
    assert "cannot reach" in p.stderr and "Traceback" not in p.stderr


def test_resume_refuses_any_other_workload(tmp_path):
    out, rec = tmp_path / "s.json", tmp_path / "r.jsonl"
    args = ["sweep", "--mock", "--mock-ttft-ms", "2", "--mock-itl-ms", "1", "-c", "1,2", "-n", "3", "--max-tokens",
            "4", "--json", str(out), "--records", str(rec), "-q"]
    tpsload(*args, check=0)
    first = load_json(out)
    assert first["mock"] == {"ttft_ms": 2.0, "itl_ms": 1.0}
    lines = [json.loads(line) for line in rec.read_text().splitlines()]
    assert collections.Counter(r["level"] for r in lines) == {1: 3, 2: 3}
    for extra, field in ((["--system", "be brief"], "system"), (["--extra-body", '{"top_k": 1}'], "extra_body"),
                         (["--temperature", "0.5"], "temperature"), (["--endpoint", "completions"], "endpoint"),
                         (["--no-cache-bust"], "cache_bust"), (["--seed", "7"], "seed"),
                         (["-n", "4"], "requests"), (["--slo", "ttft_p99<=1s"], "slos"),
                         (["--mock-itl-ms", "3"], "mock_itl_ms")):
        with pytest.raises(TpsloadError, match=f"was measured with {field}="):  # in-process: no interpreter start
            cli.main([*args, *extra, "--resume"], standalone_mode=False)
    p = tpsload(*args, "--seed", "7", "--resume", check=2)  # and as a user sees it: one line, exit 2
    assert p.stderr.startswith("tpsload: ") and "was measured with seed=" in p.stderr and p.stderr.count("\n") == 1
    # the same workload resumes (a fresh mock on another port is the same target); nothing is run again
    tpsload(*args, "-c", "1,2,4", "--resume", "--label", "more", check=0)
    final = load_json(out)
    assert [lv["concurrency"] for lv in final["levels"]] == [1, 2, 4]
    assert [lv["started_at"] for lv in final["levels"][:2]] == [lv["started_at"] for lv in first["levels"]]
    lines = [json.loads(line) for line in rec.read_text().splitlines()]
    assert collections.Counter(r["level"] for r in lines) == {1: 3, 2: 3, 4: 3}


def test_saturation_says_what_the_server_was_doing():
    def level(c, tput, text):
        return {"concurrency": c, "summary": {"steady_output_throughput": tput, "output_throughput": tput,
                                              "requests_ok": 8, "requests_failed": 0},
                "server_metrics": {"text": text}}

    levels = [level(1, 100.0, ["server queue: no request waited; up to 1 running"]),
              level(2, 190.0, ["server (llama.cpp): 512 tokens generated", "server queue: up to 2 requests waiting"]),
              level(4, 192.0, ["server queue: up to 6 requests waiting"])]
    from tpsload.analysis.sweep import saturation

    v = saturation(levels, "concurrency", 0.05)
    assert v["level"] == 2 and v["server"] == ["server queue: up to 2 requests waiting"]
    assert v["text"].endswith("the server there: server queue: up to 2 requests waiting")
