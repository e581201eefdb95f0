"""`tpsload matrix` against the real llama-server: a server per configuration, started, measured and
stopped; the verdict; a bad flag; --csv and --records; --resume; Ctrl-C; the report. Plus the launcher on its own."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import load_json, screenshot_colours, tpsload, wait_until
from tpsload.servers.launch import ServerProcess, StartFailed

LOAD = ("--input-tokens", "16", "--endpoint", "completions", "--no-server-metrics")


def llama_template(marker, threads):
    """The server command, with a marker in its argv (the model alias) to find its processes by."""
    from llama_server import install

    binary, model = install()
    return (f"{binary} -m {model} --host 127.0.0.1 --port {{port}} -np {{np}} -c 2048 -t {threads} --no-webui "
            f"--alias {marker} {{flag}}")


def processes_with(marker, but=None):
    """The pids whose command line holds `marker` (our servers, wherever they are in the process tree),
    except `but` (the tpsload that has it in its --server)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == but:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """One matrix run serves most tests: np=1,4, each without and with a flag llama-server rejects,
    each a concurrency sweep 1,4 (4 requests a level); a generous SLO so both have a frontier at 4;
    with --csv and --records.

    Two threads, as the suite's llama-server has: on a CPU a batch of four costs little more than
    one there (with one thread, four times as much on this model, whose 262k-token output layer
    dominates), so four slots carry more than one even on a busy machine."""
    d = tmp_path_factory.mktemp("matrix")
    marker = f"mx-{uuid.uuid4().hex[:8]}"
    args = ("matrix", "--server", llama_template(marker, 2), "--param", "np=1,4", "--param",
            "flag=,--no-such-flag", "-c", "1,4", "-n", "4", "--output-tokens", "8", *LOAD,
            "--slo", "ttft_p99<=120s", "--json", str(d / "m.json"), "--csv", str(d / "m.csv"),
            "--records", str(d / "m.jsonl"))
    p = tpsload(*args, timeout=600)
    return {"p": p, "args": args, "path": d / "m.json", "dir": d, "marker": marker, "csv": d / "m.csv",
            "records": d / "m.jsonl"}


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_matrix_measures_each_configuration_and_names_the_winner(matrix):
    p, m = matrix["p"], load_json(matrix["path"])
    assert p.returncode == 1, p.stderr[-3000:]  # two configurations failed; the others ran
    assert processes_with(matrix["marker"]) == []  # every server it started is gone
    confs = {c["name"]: c for c in m["configurations"]}
    assert list(confs) == ["np=1", "np=1 flag=--no-such-flag", "np=4", "np=4 flag=--no-such-flag"]
    assert m["kind"] == "matrix" and m["key"] == "concurrency" and m["levels"] == [1, 4] and not m["partial"]
    at4 = {}
    for name, np_ in (("np=1", 1), ("np=4", 4)):
        c = confs[name]
        assert c["status"] == "ok" and c["server_exit_code"] is not None
        assert f"-np {np_} " in c["command"] and f"--port {c['port']} " in c["command"]
        assert c["about"]["props"]["total_slots"] == np_  # what the server said about itself
        assert c["version"] == c["about"]["props"]["build_info"]
        assert 0 < c["startup_s"] < 120
        sweep = c["result"]
        assert sweep["kind"] == "sweep" and [lv["concurrency"] for lv in sweep["levels"]] == [1, 4]
        lv4 = sweep["levels"][1]
        assert lv4["summary"]["requests_ok"] == 4 and lv4["server"]["llama_cpp"]["total_slots"] == np_
        at4[name] = lv4["summary"]["steady_output_throughput"] or lv4["summary"]["output_throughput"]
    assert at4["np=4"] > at4["np=1"], at4  # four slots serve four streams at once; one slot, one at a time
    v = m["verdict"]
    assert v["basis"] == "slo_frontier" and v["best"] == "np=4" and v["runner_up"] == "np=1"
    assert v["ratio"] == pytest.approx(at4["np=4"] / at4["np=1"], rel=1e-6)
    judged = {j["name"]: j for j in v["configurations"]}
    assert judged["np=4"]["frontier_level"] == 4 and judged["np=4"]["capacity"] == pytest.approx(at4["np=4"])
    assert v["text"].startswith("np=4 carries the most load within the SLOs") or \
        v["text"].startswith("no significant difference between np=4")
    assert "Verdict: " + v["text"][:40] in p.stdout
    # the bad flag: recorded as failed with the server's own error line, shown on the console
    for name in ("np=1 flag=--no-such-flag", "np=4 flag=--no-such-flag"):
        c = confs[name]
        assert c["status"] == "failed" and c["result"] is None
        assert "exited with code" in c["error"] and "invalid argument: --no-such-flag" in c["error"]
        assert any("--no-such-flag" in line for line in c["log_tail"])
        assert Path(c["log"]).exists()
    assert "invalid argument: --no-such-flag" in p.stdout
    assert "2 of 4 configurations failed" in p.stderr
    # --csv: a row per configuration and level (one for a configuration that measured nothing), its
    # parameters as columns, then the columns of a sweep's CSV with the JSON's numbers
    rows = read_csv(matrix["csv"])
    assert [(r["configuration"], r["np"], r["flag"], r["status"], r["level"]) for r in rows] == [
        ("np=1", "1", "", "ok", "1"), ("np=1", "1", "", "ok", "4"),
        ("np=1 flag=--no-such-flag", "1", "--no-such-flag", "failed", ""),
        ("np=4", "4", "", "ok", "1"), ("np=4", "4", "", "ok", "4"),
        ("np=4 flag=--no-such-flag", "4", "--no-such-flag", "failed", "")]
    from tpsload.analysis.sweep import CSV_COLUMNS
    assert list(rows[0])[-len(CSV_COLUMNS):] == list(CSV_COLUMNS)
    for r in rows:
        if r["status"] == "ok":
            lv = confs[r["configuration"]]["result"]["levels"][[1, 4].index(int(r["level"]))]
            s = lv["summary"]
            assert int(r["requests_ok"]) == s["requests_ok"] and int(r["requests_failed"]) == s["requests_failed"]
            assert float(r["output_throughput"]) == s["output_throughput"]
            assert float(r["ttft_p99_ms"]) == s["ttft_ms"]["p99"] and r["slo_all_met"] == str(lv["slo"]["all_met"])
        else:
            assert r["requests_ok"] == r["output_throughput"] == ""
    # --records: a line per request started, each tagged with its configuration's params and its level
    lines = read_records(matrix["records"])
    assert Counter((conf_name_of(ln["params"]), ln["level"]) for ln in lines) == {
        (name, lv["concurrency"]): lv["requests_started"] + lv["warmup_requests"]
        for name in ("np=1", "np=4") for lv in confs[name]["result"]["levels"]}
    assert all(ln["params"] == confs[conf_name_of(ln["params"])]["params"] for ln in lines)
    assert sum(ln["ok"] for ln in lines) == sum(lv["summary"]["requests_ok"] for name in ("np=1", "np=4")
                                                for lv in confs[name]["result"]["levels"])


def conf_name_of(params):
    return " ".join(f"{k}={v}" for k, v in params.items() if v)


def test_resume_keeps_finished_configurations(matrix):
    before = load_json(matrix["path"])
    kept_lines, kept_csv = matrix["records"].read_text(), matrix["csv"].read_text()
    # as an interrupted configuration leaves them: lines of one that did not finish, to be dropped
    with open(matrix["records"], "a") as fh:
        fh.write(json.dumps({"params": {"np": "4", "flag": "--no-such-flag"}, "level": 1, "index": 0}) + "\n")
    matrix["csv"].unlink()
    p = tpsload(*matrix["args"], "--resume", timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]  # the bad flag fails again
    assert "--resume: keeping np=1, np=4" in p.stderr
    assert "np=1: starting" not in p.stderr and "np=4: starting" not in p.stderr
    after = load_json(matrix["path"])
    old = {c["name"]: c for c in before["configurations"]}
    new = {c["name"]: c for c in after["configurations"]}
    assert list(new) == list(old)
    for name in ("np=1", "np=4"):
        assert new[name] == old[name]  # kept as measured
    assert new["np=4 flag=--no-such-flag"]["port"] != old["np=4 flag=--no-such-flag"]["port"] or \
        new["np=4 flag=--no-such-flag"]["log_tail"]  # started again
    assert after["verdict"]["best"] == "np=4"
    # the finished configurations' lines kept, the unfinished one's dropped (it wrote none again: it
    # failed to start); their CSV rows written again from the kept results
    assert matrix["records"].read_text() == kept_lines
    assert matrix["csv"].read_text() == kept_csv
    # a different load is not resumed into the same file
    p = tpsload(*[a if a != "1,4" else "1,2" for a in matrix["args"]], "--resume", check=2)
    assert "--resume" in p.stderr and "levels" in p.stderr


def test_report_of_a_matrix_renders(matrix, tmp_path):
    html = tmp_path / "m.html"
    tpsload("report", str(matrix["path"]), "-o", str(html), check=0)
    text = html.read_text()
    assert text.count("<svg") == 2  # throughput and TTFT p99 against load, a line per configuration
    assert "np=4 SLO frontier" in text and "np=1 SLO frontier" in text
    assert "invalid argument: --no-such-flag" in text and "Verdict:" in text
    blue, orange = screenshot_colours(html, tmp_path)
    assert blue > 1_000 and orange > 1_000  # np=1's line and np=4's
    # the PNG renderer draws the same chart description: a line per configuration, a mark per frontier
    from tpsload.analysis import report
    from tpsload.render import png

    fig = png.render(report.matrix_charts(load_json(matrix["path"])))
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()][:2] == ["np=1", "np=4"]
    assert {"np=1 SLO frontier", "np=4 SLO frontier"} <= {line.get_label() for line in ax.get_lines()}
    md = tmp_path / "m.md"
    tpsload("report", str(matrix["path"]), "--format", "markdown", "-o", str(md), check=0)
    assert "| np=4 | ok |" in md.read_text()
    p = tpsload("compare", str(matrix["path"]), str(matrix["path"]), check=2)
    assert "a matrix result" in p.stderr


def test_ctrl_c_mid_matrix_stops_the_server_and_keeps_what_finished(tmp_path):
    marker = f"mx-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "m.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    p = subprocess.Popen([sys.executable, "-m", "tpsload", "matrix", "--server", llama_template(marker, 1),
                          "--param", "np=1,4", "--param", "flag=", "-c", "1", "-n", "2", "--output-tokens", "8",
                          *LOAD, "--json", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         stdin=subprocess.DEVNULL)
    try:
        def first_done():
            assert p.poll() is None, p.communicate()
            return out.exists() and any(c["status"] == "ok" for c in load_json(out)["configurations"])

        wait_until(first_done, "the first configuration", timeout=300)
        wait_until(lambda: len(processes_with(marker, but=p.pid)) == 1, "the second server", timeout=60)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, stderr[-3000:]
    assert processes_with(marker) == []
    m = load_json(out)
    assert m["partial"] and "interrupted" in m["stop_reason"]
    confs = {c["name"]: c for c in m["configurations"]}
    assert confs["np=1"]["status"] == "ok" and confs["np=1"]["result"]["summary"]["requests_ok"] == 2
    assert confs["np=4"]["status"] == "interrupted" and confs["np=4"]["server_exit_code"] is not None, confs["np=4"]


def test_launcher_stops_the_whole_group_and_reports_the_servers_words(tmp_path):
    # a wrapper whose child ignores SIGTERM: the group gets SIGKILL after the grace period
    s = ServerProcess(["sh", "-c", "trap '' TERM; sleep 60 & echo started; wait"], tmp_path / "a.log",
                      "http://127.0.0.1:9/health")
    s.spawn()
    wait_until(lambda: "started" in s.log_tail(), "the wrapper")
    s.stop(grace_s=0.3)
    with pytest.raises(ProcessLookupError):
        os.killpg(s.proc.pid, 0)
    # dies at start-up: its own error line, not just an exit code
    s = ServerProcess(["sh", "-c", "echo loading; echo 'error: unknown model type x' >&2; echo bye; exit 3"],
                      tmp_path / "b.log", "http://127.0.0.1:9/health")
    with pytest.raises(StartFailed, match=r"exited with code 3 while starting: error: unknown model type x"):
        s.start(timeout_s=30)
    # never ready: stopped after the start-up timeout
    s = ServerProcess(["sleep", "60"], tmp_path / "c.log", "http://127.0.0.1:9/health")
    with pytest.raises(StartFailed, match=r"not ready after 0.5 s"):
        s.start(timeout_s=0.5)
    assert not s.alive


def test_bad_templates_are_one_line_errors():
    from tpsload.app.matrix import MatrixOptions
    from tpsload.config import RunConfig
    from tpsload.errors import TpsloadError

    levels = ((1, RunConfig.of(base_url="http://127.0.0.1:1/v1")),)
    for server, params, said in (
            ("llama-server --port 8080", (("np", ("1",)),), "--server must contain {port}"),
            ("s --port {port} -np {np}", (), "{np}, which is neither {port} nor a --param"),
            ("s --port {port}", (("np", ("1", "2")),), "--param np is not used"),
            ("s --port {port} '{np}", (("np", ("1",)),), "--server: No closing quotation")):
        with pytest.raises(TpsloadError, match=re.escape(said)):
            MatrixOptions(server=server, params=params, key="concurrency", levels=levels)
    p = tpsload("matrix", "--server", "s --port {port} {np}", "--param", "np", check=2)
    assert re.fullmatch(r"tpsload: --param 'np': expected NAME=V1,V2 [^\n]+\n", p.stderr), p.stderr
    p = tpsload("matrix", "--server", "s --port {port}", "--json", "-", "--records", "-", check=2)
    assert p.stderr == "tpsload: --json - and --records - cannot both go to stdout; give one a file\n"
    with pytest.raises(TpsloadError, match="--param rate: the CSV already has a column 'rate'"):
        MatrixOptions(server="s --port {port} {rate}", params=(("rate", ("1",)),), key="concurrency",
                      levels=levels, csv_path="m.csv")


def test_mock_matrix_verdict_with_repetitions(tmp_path):
    """The bundled mock as the server, behind a wrapper script that takes a parameter from --server-env:
    decoding 4x faster (itl 2 vs 8 ms) wins, significantly, with an interval from the repetitions; two
    configurations 1 ms of TTFT apart are "no significant difference". A run per configuration: --csv
    has a row each, --records a line per request of both repetitions, without a level."""
    from tpsload.analysis import compare as cmp
    from tpsload.analysis import matrix as mx

    out, rec, table = tmp_path / "m.json", tmp_path / "m.jsonl", tmp_path / "m.csv"
    p = tpsload("matrix", "--server", f"sh -c 'exec {sys.executable} -m tpsload mock --port {{port}} "
                "--ttft-ms {ttft} --itl-ms \"$ITL\"'", "--server-env", "ITL={itl}", "--server-env",
                "HF_TOKEN=hf_secret123", "--param", "itl=2,8", "--param", "ttft=20,21", "-c", "4", "-n", "8",
                "--max-tokens", "16", "--repeat", "2", "--min-effect", "20%", "--json", str(out), "--records", str(rec),
                "--csv", str(table), check=0)
    m = load_json(out)
    assert [c["name"] for c in m["configurations"]] == ["itl=2 ttft=20", "itl=2 ttft=21", "itl=8 ttft=20",
                                                        "itl=8 ttft=21"]
    assert all(c["status"] == "ok" and len(c["result"]["repeats"]) == 2 for c in m["configurations"])
    assert m["configurations"][2]["env"] == {"ITL": "8", "HF_TOKEN": "***"}
    assert "hf_secret123" not in out.read_text() + p.stdout + p.stderr
    rows = read_csv(table)
    assert [(r["configuration"], r["itl"], r["ttft"], r["level"]) for r in rows] == [
        (c["name"], c["params"]["itl"], c["params"]["ttft"], "4") for c in m["configurations"]]
    for r, c in zip(rows, m["configurations"], strict=True):
        assert int(r["requests_ok"]) == c["result"]["summary"]["requests_ok"] == 16
        assert float(r["tpot_p50_ms"]) == c["result"]["summary"]["tpot_ms"]["p50"]
    lines = read_records(rec)
    assert Counter(conf_name_of(ln["params"]) for ln in lines) == {c["name"]: 16 for c in m["configurations"]}
    assert not any("level" in ln for ln in lines)
    # each configuration's times from its own run's start: each starts before the first one ended
    # (times from the matrix's start would put every later configuration after it)
    first_end = max(ln["t_end_ms"] for ln in lines if ln["params"] == m["configurations"][0]["params"])
    for c in m["configurations"]:
        mine = [ln for ln in lines if ln["params"] == c["params"]]
        assert len({ln["index"] for ln in mine}) == 16  # the two repetitions' requests, numbered apart
        assert 0 <= min(ln["t_sched_ms"] for ln in mine) < first_end
    v = m["verdict"]
    assert v["basis"] == "best_throughput" and {v["best"], v["runner_up"]} == {"itl=2 ttft=20", "itl=2 ttft=21"}
    assert not v["significant"] and v["winner"] is None and v["text"].startswith("no significant difference")
    assert "no significant difference" in p.stdout
    # the fast against the slow: the same verdict over those two
    two = {**m, "configurations": [c for c in m["configurations"] if c["name"].endswith("ttft=20")]}
    v2 = mx.verdict(two, min_effect=0.2)
    assert v2["winner"] == "itl=2 ttft=20" and v2["significant"] and v2["ratio"] > 2
    assert v2["ci95"][0] > 1.5 and v2["ci95"][0] <= v2["ratio"] <= v2["ci95"][1]
    # its interval is the repetitions' (requests' samples are not needed for it)
    fast, slow = (dict(c["result"], samples=None) for c in two["configurations"])
    assert list(cmp.ratio_ci(slow, fast, cmp.BY_NAME[v2["metric"]])) == v2["ci95"]


def test_a_server_that_dies_mid_run_fails_its_configuration(tmp_path):
    """`timeout` kills the mock 8 s after it starts (itself too: it signals its process group), in the
    middle of the run: the configuration is failed with how it ended, its log tail is kept, and the
    command exits 1."""
    out = tmp_path / "m.json"
    p = tpsload("matrix", "--server", f"timeout -s KILL 8 {sys.executable} -m tpsload mock --port {{port}} --itl-ms 50",
                "-c", "1", "-n", "30", "--max-tokens", "64", "--json", str(out), check=1)
    (c,) = load_json(out)["configurations"]
    assert c["name"] == "default" and c["status"] == "failed" and c["result"]["summary"]["requests_failed"] > 0
    assert c["error"].startswith("the server was killed by SIGKILL during the measurement")
    assert c["log_tail"] and "1 of 1 configurations failed: default" in p.stderr
