"""The real CLI in a subprocess: the original script's flags, Ctrl-C, secrets, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import load_json, mock_arrivals, tpsload, wait_for_line, wait_until

KEY = "sk-test-SECRET-4242"


def test_original_script_invocation(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=5, api_key=KEY)
    port = m.base_url.split(":")[-1].split("/")[0]
    out = tmp_path / "r.json"
    p = tpsload("run", "--host", "127.0.0.1", "--port", port, "--api-key", KEY, "--model", "tpsload-mock",
                "--prompt", "Say hi", "--stream", "--max-tokens", "20", "--json", str(out), check=0)
    res = load_json(out)
    assert res["mode"] == "stream" and res["tokens"] == 20
    # stream: elapsed = t_last - t_first = 19 gaps of 5 ms
    assert res["elapsed_seconds"] == pytest.approx(0.095, abs=0.004)
    assert res["tokens_per_second"] == pytest.approx(20 / res["elapsed_seconds"])
    assert res["summary"]["requests_ok"] == 1
    assert "Single request: 20 tokens" in p.stdout


def test_benchmark_py_shim_prints_original_json(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=2)
    port = m.base_url.split(":")[-1].split("/")[0]
    root = os.path.dirname(os.path.dirname(__file__))
    p = subprocess.run([sys.executable, os.path.join(root, "benchmark.py"), "--host", "127.0.0.1", "--port", port,
                        "--prompt", "hi", "--endpoint", "completions"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["mode"] == "non-stream" and res["tokens"] > 0 and res["tokens_per_second"] > 0


def test_api_key_never_printed_or_saved(mock_server, tmp_path):
    m = mock_server(ttft_ms=2, itl_ms=1, api_key=KEY)
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    p = tpsload("run", "--base-url", m.base_url, "--api-key", KEY, "--header", f"X-Api-Key: {KEY}", "-c", "2",
                "-n", "4", "--max-tokens", "5", "--json", str(out), "--records", str(rec), check=0)
    for text in (out.read_text(), rec.read_text(), p.stdout, p.stderr):
        assert KEY not in text
    assert load_json(out)["config"]["api_key_set"] is True
    # a wrong key: one line, exit 2, and the key is not echoed
    p = tpsload("run", "--base-url", m.base_url, "--api-key", "sk-WRONG-77", check=2)
    assert "refused the API key" in p.stderr and "sk-WRONG-77" not in p.stderr + p.stdout
    assert "Traceback" not in p.stderr


def test_ctrl_c_writes_partial_result(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "8", "-n",
                             "100000", "--max-tokens", "50", "--json", str(out), "--grace", "0.2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: mock_arrivals(m) >= 20, "20 requests at the mock")  # so 12 or more have finished
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    res = load_json(out)
    assert res["partial"] is True and "SIGINT" in res["stop_reason"]
    s = res["summary"]
    assert s["requests_ok"] > 8
    # every started request is accounted for: done, failed or cancelled
    assert res["requests_started"] == s["requests_ok"] + s["requests_failed"] + s["requests_cancelled"]
    assert s["requests_cancelled"] <= 8


def test_sigterm_writes_partial_result(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=10)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4",
                             "--duration", "60s", "--json", str(out), "--grace", "0", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: mock_arrivals(m) >= 4, "the load to start")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert load_json(out)["partial"] is True


@pytest.mark.parametrize("args,needle", [
    (["--base-url", "http://127.0.0.1:9/v1"], "cannot reach"),
    (["--base-url", "ftp://x/v1"], "--base-url"),
    (["--mock", "-c", "0"], "--concurrency"),
    (["--mock", "--duration", "-5"], "--duration"),
    (["--mock", "--extra-body", "[1]"], "--extra-body"),
    (["--mock", "--header", "nocolon"], "--header"),
    ([], "no server given"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    p = tpsload("run", *args, check=2)
    assert needle in p.stderr
    assert p.stderr.count("\n") == 1, p.stderr  # one line
    assert "Traceback" not in p.stderr


def test_unknown_model_is_one_line(mock_server):
    m = mock_server()
    p = tpsload("run", "--base-url", m.base_url, "--model", "nope", check=2)
    assert "'nope' is not served here" in p.stderr and "tpsload-mock" in p.stderr


def test_mock_flag_runs_and_stops_its_server(tmp_path):
    out = tmp_path / "r.json"
    tpsload("run", "--mock", "-c", "4", "-n", "8", "--max-tokens", "8", "--json", str(out), check=0)
    res = load_json(out)
    assert res["summary"]["requests_ok"] == 8
    cpus = sorted(os.sched_getaffinity(0))  # the mock on the last CPU, the client on the others
    apart = len(cpus) >= 2
    assert res["mock"] == {"ttft_ms": 50.0, "itl_ms": 10.0, "cpus": cpus[-1:] if apart else None,
                           "client_cpus": cpus[:-1] if apart else None}
    url = res["config"]["base_url"]
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/models", timeout=2)


def test_the_mock_and_the_client_are_kept_apart_for_the_block():
    """serving(): the mock runs on the last CPU, this thread on the others until the block ends; not where
    the client's processes would have fewer CPUs than there are of them, nor with Ray."""
    from tpsload.app.target import MockSettings, apart, serving
    from tpsload.config import RunConfig
    from tpsload.mock import MockProcess

    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    cfg = RunConfig.of(base_url="http://127.0.0.1:1/v1", mock=True, concurrency=8, single=False)
    if len(cpus) < 2:
        assert apart(cfg) is None
        return
    with serving(cfg, MockSettings()) as served:
        assert os.sched_getaffinity(0) == set(cpus[:-1]) == set(served.mock["client_cpus"])
        assert served.mock["cpus"] == cpus[-1:]
    assert os.sched_getaffinity(0) == before
    assert apart(cfg.replace(workers=len(cpus))) is None and apart(cfg.replace(ray_address="local")) is None
    assert apart(cfg.replace(workers=len(cpus) - 1)) == ({cpus[-1]}, set(cpus[:-1]))
    with MockProcess(cpus={cpus[0]}) as m:  # pinned as it starts
        assert os.sched_getaffinity(m.proc.pid) == {cpus[0]}


def test_json_to_stdout_and_table_to_stderr(tmp_path):
    p = tpsload("run", "--mock", "-n", "2", "--max-tokens", "4", "--json", "-", check=0)
    res = json.loads(p.stdout)
    assert res["summary"]["requests_ok"] == 2
    assert "TTFT" in p.stderr


def test_second_ctrl_c_stops_at_once_and_still_writes(mock_server, tmp_path):
    m = mock_server(ttft_ms=20, itl_ms=50)
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", m.base_url, "-c", "4", "-n",
                             "1000", "--max-tokens", "200", "--json", str(out), "--grace", "60", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: mock_arrivals(m) >= 4, "4 requests in flight")
    proc.send_signal(signal.SIGINT)
    wait_for_line(proc.stderr, "SIGINT again")  # the first was heard (two signals at once may merge into one)
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert time.monotonic() - t < 5  # not the 60 s grace, nor the 10 s of a 200-token reply
    assert proc.returncode == 130
    res = load_json(out)
    assert res["partial"] and res["summary"]["requests_cancelled"] == 4
    assert list(res["errors"]["by_class"]) == ["cancelled"]


PASSWORD, COOKIE, GOOG = "s3cretpw", "abcdef123", "K123"
BASIC = "dXNlcjpzM2NyZXRwdw=="  # base64 of user:s3cretpw, as the Authorization header carries it


def _with_userinfo(url):
    return url.replace("http://", f"http://user:{PASSWORD}@", 1)


def test_url_credentials_and_header_values_never_printed_or_saved(mock_server, tmp_path):
    # every other request is answered 400 with the Authorization header echoed back (a careless server)
    m = mock_server(ttft_ms=2, itl_ms=1, fault="http_400:every=2")
    out, rec = tmp_path / "r.json", tmp_path / "r.jsonl"
    p = tpsload("run", "--base-url", _with_userinfo(m.base_url), "--header", f"Cookie: session={COOKIE}",
                "--header", f"x-goog-api-key: {GOOG}", "-c", "2", "-n", "6", "--max-tokens", "5",
                "--json", str(out), "--records", str(rec))
    for text in (out.read_text(), rec.read_text(), p.stdout, p.stderr):
        for secret in (PASSWORD, COOKIE, GOOG, BASIC, "user:"):
            assert secret not in text
    res = load_json(out)
    assert res["summary"]["requests_ok"] == 3 and res["summary"]["requests_failed"] == 3
    assert res["config"]["base_url"] == res["server"]["base_url"] == m.base_url
    assert res["config"]["url_auth_set"] is True
    assert res["config"]["headers"] == {"Cookie": "***", "x-goog-api-key": "***"}
    # the credentials did reach the server (as Basic auth), and came back masked
    assert "Bad request from Basic ***" in res["errors"]["examples"]["http_4xx"]
    assert m.base_url in p.stdout  # the console title: the URL, without its userinfo


def test_url_credentials_kept_out_of_errors_and_sweeps(mock_server, tmp_path):
    for url in (f"http://user:{PASSWORD}@127.0.0.1:9/v1", f"ftp://user:{PASSWORD}@x/v1",
                f"http://user:{PASSWORD}@[::1/v1"):
        p = tpsload("run", "--base-url", url, check=2)
        assert PASSWORD not in p.stderr + p.stdout and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = tpsload("run", "--base-url", f"http://user:{PASSWORD}@127.0.0.1:9/v1", "--api-key", "sk-x", check=2)
    assert "give one" in p.stderr and PASSWORD not in p.stderr
    m = mock_server(ttft_ms=2, itl_ms=1)
    out = tmp_path / "s.json"
    p = tpsload("sweep", "--base-url", _with_userinfo(m.base_url), "--header", f"Cookie: session={COOKIE}",
                "-c", "1,2", "-n", "2", "--max-tokens", "3", "--json", str(out), check=0)
    for text in (out.read_text(), p.stdout, p.stderr):
        assert PASSWORD not in text and COOKIE not in text
    assert load_json(out)["base_config"]["base_url"] == m.base_url


class StalledServer:
    """Accepts connections on 127.0.0.1 and never answers: a server hung in pre-flight."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.asked = threading.Event()
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                if conn.recv(65536):  # the request arrived: the client now waits for an answer
                    self.asked.set()
        except OSError:  # closed
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("stage", ["preflight", "preparation"])
def test_ctrl_c_before_the_load_ends_the_run_at_once(mock_server, tmp_path, stage):
    out = tmp_path / "r.json"
    stalled = None
    if stage == "preflight":
        stalled = StalledServer()
        base_url, args, ready = stalled.base_url, [], stalled.asked.is_set
    else:  # the first request is the prompt preparation's probe of the server's template overhead
        m = mock_server(ttft_ms=5, itl_ms=1, fault=["stall_first:n=1"], stall_s=60)
        base_url, args, ready = m.base_url, ["--input-tokens", "16"], lambda: mock_arrivals(m) >= 1
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tpsload", "run", "--base-url", base_url, "-c", "2", "-n",
                                 "4", "--max-tokens", "4", "--json", str(out), "--grace", "30", "-q", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(ready, f"the {stage} request to arrive")
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
        took = time.monotonic() - t
    finally:
        if stalled:
            stalled.close()
    assert proc.returncode == 130, err
    assert took < 5, took  # not the pre-flight's 10 s timeout, nor the 60 s stall, nor --grace
    res = load_json(out)
    assert res["partial"] is True and "SIGINT" in res["stop_reason"]
    assert res["requests_started"] == 0 and res["accounting"]["balanced"]
    assert "Traceback" not in err


def test_a_header_or_key_with_a_line_break_is_one_line_and_not_echoed():
    p = tpsload("run", "--base-url", "http://127.0.0.1:9/v1", "--header", "X-Token: s3cret\nInjected: 1")
    assert p.returncode == 2 and "--header 'X-Token'" in p.stderr and "s3cret" not in p.stderr + p.stdout
    p = tpsload("run", "--base-url", "http://127.0.0.1:9/v1", env={"OPENAI_API_KEY": "sk-abc\n"})
    assert p.returncode == 2 and "API key" in p.stderr and "sk-abc" not in p.stderr + p.stdout
    assert len(p.stderr.strip().splitlines()) == 1


def test_commands_load_lazily_and_list_their_own_help_lines():
    import click

    from tpsload.cli import COMMANDS, cli

    # `tpsload --help` lists every command from the table without importing any of them
    code = ("import sys; from tpsload.cli import main; sys.argv = ['tpsload', '--help']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.startswith('tpsload.cli.')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "[]", p.stdout
    for name, (_, _, line) in COMMANDS.items():
        shown = click.Command(name, help=line).get_short_help_str(45).removesuffix("...")
        assert f"  {name}  " in p.stdout and shown in p.stdout
    # the table says what each command's own docstring says, so the two cannot drift apart
    for name, (_, _, line) in COMMANDS.items():
        cmd = cli.get_command(None, name)
        assert cmd is not None and cmd.name == name and cmd.get_short_help_str(10_000) == line
