"""compare, the regression gate and reports: against mock runs whose difference is known."""

import re
import shutil

import pytest

from conftest import load_json, screenshot_colours, tpsload

LOAD = ("-c", "8", "-n", "64", "--max-tokens", "32")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two runs of one configuration (A, A2) and one with 25 % slower decoding (B: 80 % of A's speed)."""
    from tpsload.mock import MockProcess

    d = tmp_path_factory.mktemp("cmp")
    out = {}
    with MockProcess(ttft_ms=30, itl_ms=10) as a, MockProcess(ttft_ms=30, itl_ms=12.5) as b:
        for name, m in (("A", a), ("A2", a), ("B", b)):
            path = d / f"{name}.json"
            tpsload("run", "--base-url", m.base_url, *LOAD, "--label", name, "--tag", f"setup={name}",
                    "--json", str(path), "-q", check=0)
            out[name] = path
    return out


def compare(*args, check=None):
    return tpsload("compare", *map(str, args), check=check)


def rows(path):
    return {r["metric"]: r for r in load_json(path)["comparisons"][0]["levels"][0]["rows"]}


def test_catalogue_reads_what_a_result_holds(results):
    """Every comparable metric is found where the catalogue says, with the mock's known values."""
    from tpsload.analysis import compare as cmp

    res = load_json(results["A"])
    s = res["summary"]
    assert s["requests_reasoning"] == 0 and "ttfa_ms" not in res["samples"]  # no thinking: TTFA is TTFT
    for m in cmp.METRICS:
        if m.name in cmp.REASONING_ONLY:
            continue
        assert m.key in s and (m.samples is None or m.samples in res["samples"]), m
        assert cmp.value(res, m) is not None, m
    # only throughputs and distribution statistics can be re-estimated from one run's requests
    assert [m.name for m in cmp.METRICS if not m.per_request] == ["error_rate", "goodput"]
    v = {m.name: cmp.value(res, m) for m in cmp.METRICS}
    assert 29 <= v["ttft_p50"] <= 30 + 15  # the mock's own overhead on shared cores
    assert v["tpot_p50"] == pytest.approx(10, rel=0.05) and v["decode_tps_p50"] == pytest.approx(100, rel=0.05)
    assert v["e2e_latency_p99"] == s["e2e_latency_ms"]["p99"] and v["error_rate"] == 0
    assert v["output_throughput"] == s["output_throughput"] and v["goodput"] == s["request_throughput"]


def test_a_result_against_itself(results, tmp_path):
    """Each side is the result's own number, and the interval of a run against itself holds 1
    with room on both sides (both sides resampled apart): the same data is never called different."""
    out = tmp_path / "c.json"
    compare(results["A"], results["A"], "--json", out, check=0)
    a = load_json(results["A"])["summary"]
    own = {"output_throughput": a["output_throughput"], "ttft_p50": a["ttft_ms"]["p50"],
           "tpot_p99": a["tpot_ms"]["p99"], "e2e_latency_p50": a["e2e_latency_ms"]["p50"],
           "decode_tps_p50": a["decode_tps"]["p50"]}
    r = rows(out)
    assert "ttfa_p50" not in r  # a model that does not think: its TTFA is its TTFT, compared once
    for metric, v in own.items():
        assert r[metric]["base"] == r[metric]["other"] == pytest.approx(v), metric
        lo, hi = r[metric]["ci95"]
        assert lo < 1 < hi and not r[metric]["significant"], (metric, lo, hi)


def test_twenty_percent_slower_is_found_and_significant(results, tmp_path):
    out = tmp_path / "c.json"
    p = compare(results["A"], results["B"], "--json", out, check=0)
    r = rows(out)
    d = r["decode_tps_p50"]
    # the interval holds sampling noise only; the mock's own timing is good to ~0.3 %
    assert d["ratio"] == pytest.approx(0.8, abs=0.01) and d["ci95"][0] - 0.005 <= 0.8 <= d["ci95"][1] + 0.005
    assert d["significant"] and d["better"] is False
    t = r["output_throughput"]  # 30 ms + 31 x 10 ms vs 30 ms + 31 x 12.5 ms per request: 0.814
    assert t["ratio"] == pytest.approx(340 / 417.5, abs=0.02) and t["significant"] and t["better"] is False
    assert r["tpot_p50"]["ratio"] == pytest.approx(1.25, abs=0.01) and r["tpot_p50"]["significant"]
    assert "worse" in p.stdout


def test_same_configuration_is_not_flagged(results, tmp_path):
    out = tmp_path / "c.json"
    compare(results["A"], results["A2"], "--json", out, check=0)
    flagged = [m for m, r in rows(out).items() if r["significant"]]
    assert flagged == []


def test_regression_gate(results):
    p = compare(results["A"], results["B"], "--fail-if", "output_throughput < -5%", check=1)
    assert re.search(r"regression: B vs A: output_throughput changed -1\d\.\d% \(95% CI", p.stderr)
    compare(results["A"], results["B"], "--fail-if", "output_throughput < -25%", check=0)  # not that much
    compare(results["A"], results["A2"], "--fail-if", "output_throughput < -5%", "--fail-if", "ttft_p99 > +10%",
            check=0)
    p = compare(results["A"], results["B"], "--fail-if", "bogus < 5%", check=2)
    assert "unknown metric 'bogus'" in p.stderr
    # no model reasoned: a TTFA gate is judged on TTFT, which is what TTFA is there (it was a KeyError)
    compare(results["A"], results["A2"], "--fail-if", "ttfa_p99 > +10%", check=0)


def test_incomparable_results_are_named(results, mock_server, tmp_path):
    m = mock_server(ttft_ms=30, itl_ms=10)
    other = tmp_path / "other.json"
    tpsload("run", "--base-url", m.base_url, "-c", "8", "-n", "16", "--max-tokens", "16", "--json", str(other), "-q",
            check=0)
    p = compare(results["A"], other, check=0)
    assert "not comparable" in p.stdout and "workload.max_tokens differs: 32 vs 16" in p.stdout


def test_sweeps_compare_level_by_level(mock_server, tmp_path):
    fast, slow = mock_server(ttft_ms=10, itl_ms=5), mock_server(ttft_ms=10, itl_ms=10)
    for name, m in (("s1", fast), ("s2", slow)):
        tpsload("sweep", "--base-url", m.base_url, "-c", "1,2", "-n", "8", "--max-tokens", "16", "--json",
                str(tmp_path / f"{name}.json"), "-q", check=0)
    out = tmp_path / "c.json"
    compare(tmp_path / "s1.json", tmp_path / "s2.json", "--json", out, check=0)
    levels = load_json(out)["comparisons"][0]["levels"]
    assert [lv["level"] for lv in levels] == ["concurrency 1", "concurrency 2"]
    for lv in levels:
        tpot = next(r for r in lv["rows"] if r["metric"] == "tpot_p50")
        assert tpot["ratio"] == pytest.approx(2.0, abs=0.05)


def test_markdown_report_is_valid(results, tmp_path):
    out = tmp_path / "r.md"
    tpsload("report", str(results["A"]), str(results["B"]), "--format", "markdown", "-o", str(out), check=0)
    text = out.read_text()
    assert "## B vs A" in text and "setup=B" in text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            header, n = lines[i - 1], line.count("|")
            assert header.startswith("|") and header.count("|") == n
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") == n, lines[j]
                j += 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_html_report_renders_offline_in_chromium(results, tmp_path):
    html = tmp_path / "r.html"
    tpsload("report", str(results["A"]), str(results["B"]), "-o", str(html), check=0)
    text = html.read_text()
    # self-contained: no scripts, stylesheets, fonts or images from anywhere
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r'(src|href)\s*=', text)
    assert text.count("<svg") == 3
    blue, orange = screenshot_colours(html, tmp_path)
    assert blue > 5_000 and orange > 5_000  # the charts' bars for A and B are drawn


def test_repeats_report_spread_and_feed_the_intervals(mock_server, tmp_path):
    fast, slow = mock_server(ttft_ms=20, itl_ms=5), mock_server(ttft_ms=20, itl_ms=10)
    for name, m in (("r1", fast), ("r2", slow)):
        tpsload("run", "--base-url", m.base_url, "-c", "4", "-n", "12", "--max-tokens", "16", "--repeat", "3",
                "--json", str(tmp_path / f"{name}.json"), "-q", check=0)
    r1 = load_json(tmp_path / "r1.json")
    assert len(r1["repeats"]) == 3 and r1["summary"]["requests_ok"] == 36 and r1["accounting"]["balanced"]
    # per-run numbers: the mean of the repetitions' own, their spread from the same three values
    each = [rep["summary"]["output_throughput"] for rep in r1["repeats"]]
    spread = r1["repeat_spread"]["output_throughput"]
    assert r1["summary"]["output_throughput"] == pytest.approx(sum(each) / 3)
    assert (spread["n"], spread["min"], spread["max"]) == (3, min(each), max(each))
    out = tmp_path / "c.json"
    compare(tmp_path / "r1.json", tmp_path / "r2.json", "--json", out, check=0)
    tpot = rows(out)["tpot_p50"]
    assert tpot["ratio"] == pytest.approx(2.0, abs=0.05) and tpot["significant"]


def test_time_to_the_first_answer_is_compared_for_thinking_models(mock_server, tmp_path):
    """Two thinking models, 8 and 16 reasoning tokens at 10 ms each: the same TTFT, TTFA +80 ms. compare
    finds the TTFA change (and only there: TTFA rows appear only where a model reasoned)."""
    paths = {}
    for r in (8, 16):
        m = mock_server(ttft_ms=30, itl_ms=10, reasoning_tokens=r)
        paths[r] = tmp_path / f"r{r}.json"
        tpsload("run", "--base-url", m.base_url, "-c", "8", "-n", "48", "--max-tokens", "24", "--json", paths[r],
                "-q", check=0)
    out = tmp_path / "c.json"
    compare(paths[8], paths[16], "--json", out, check=0)
    r = rows(out)
    assert r["ttfa_p50"]["other"] - r["ttfa_p50"]["base"] == pytest.approx(80, abs=15)
    assert r["ttfa_p50"]["significant"] and r["ttfa_p50"]["ratio"] > 1.3
    assert not r["ttft_p50"]["significant"]
    compare(paths[8], paths[8], "--json", out, check=0)
    assert "ttfa_p50" in rows(out)


def test_conversations_are_compared_turn_by_turn(mock_server, tmp_path):
    """Conversations of 3 turns on a server without prefill cost (A) and one with 0.5 ms per prompt token
    (B): turn t's prompt is 40 t - 8 tokens, so B's TTFT is later by 16, 36 and 56 ms at turns 1-3.
    compare judges each turn (`ttft_p50@turnN`, from the turns in the samples) and finds that growth; a
    gate can name a turn, and a turn one result lacks fails the gate rather than passing it."""
    paths = {}
    for name, prefill in (("A", 0.0), ("B", 0.5)):
        m = mock_server(ttft_ms=20, itl_ms=2, prefill_ms_per_token=prefill)
        paths[name] = tmp_path / f"{name}.json"
        tpsload("run", "--base-url", m.base_url, "--turns", "3", "--input-tokens", "32", "-c", "4", "-n", "12",
                "--max-tokens", "8", "--json", paths[name], "-q", check=0)
    a = load_json(paths["A"])
    assert sorted(a["samples"]["turn"]) == [1] * 12 + [2] * 12 + [3] * 12
    out = tmp_path / "c.json"
    p = compare(paths["A"], paths["B"], "--json", out, "--fail-if", "ttft_p50@turn3>+50%",
                "--fail-if", "ttft_p50@turn4>+50%")
    r = rows(out)
    prompts = {row["turn"]: row["prompt_tokens"]["p50"] for row in a["sessions"]["per_turn"]}
    for t in (1, 2, 3):
        row = r[f"ttft_p50@turn{t}"]
        assert row["other"] - row["base"] == pytest.approx(0.5 * prompts[t], abs=4), (t, row)
        assert row["significant"]
    assert r["ttft_p50@turn3"]["ratio"] > r["ttft_p50@turn2"]["ratio"] > r["ttft_p50@turn1"]["ratio"]
    assert p.returncode == 1 and "ttft_p50@turn3 changed" in p.stdout + p.stderr
    assert "ttft_p50@turn4 not compared" in p.stdout + p.stderr
    compare(paths["A"], paths["A"], "--json", out, "--fail-if", "ttft_p50@turn2>+10%", check=0)
    assert not any(row["significant"] for k, row in rows(out).items() if "@turn" in k)
    bad = compare(paths["A"], paths["B"], "--fail-if", "e2e_latency_p50@turn2>+5%", check=2)
    assert "unknown metric 'e2e_latency_p50@turn2'" in bad.stderr
