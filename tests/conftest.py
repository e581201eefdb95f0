import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tpsload.app.target import split_cpus
from tpsload.mock import MockProcess

# Tests never use a downloaded tokenizer (no network here): tiktoken gets an empty cache of
# its own, outside the repository, for this session and the CLIs it starts.
if "TIKTOKEN_CACHE_DIR" not in os.environ:
    os.environ["TIKTOKEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="tpsload-test-tiktoken-")
    atexit.register(shutil.rmtree, os.environ["TIKTOKEN_CACHE_DIR"], True)

# The suite starts hundreds of Python processes (the CLI, mocks, workers). Where bytecode writing is off, each
# one compiled tpsload's sources again (~0.07 CPU-s apiece); they share one bytecode cache of this session's
# instead, outside the repository, so the tree stays as clean as the environment asked.
if os.environ.get("PYTHONDONTWRITEBYTECODE") and "PYTHONPYCACHEPREFIX" not in os.environ:
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="tpsload-test-pycache-")
    atexit.register(shutil.rmtree, os.environ["PYTHONPYCACHEPREFIX"], True)


@pytest.fixture
def mock_server():
    """Factory: mock_server(ttft_ms=..., itl_ms=...) -> a running MockProcess, stopped after the test."""
    started = []

    def start(**options):
        m = MockProcess(**options).start()
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def tpsload(*args, timeout=120, env=None, check=None, cpus=None):
    """Run the real CLI in a subprocess (on the Linux CPUs `cpus` when given); returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.pop("OPENAI_BASE_URL", None)
    e.update(env or {})
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    p = subprocess.run([sys.executable, "-m", "tpsload", *args], capture_output=True, text=True, timeout=timeout,
                       env=e, stdin=subprocess.DEVNULL, preexec_fn=pin)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def apart():
    """(server CPUs, client CPUs) as `run --mock` keeps them (app.target.split_cpus); (None, None) with
    fewer than two CPUs."""
    return split_cpus(1) or (None, None)


def load_json(path):
    with open(path) as fh:
        return json.load(fh)


@pytest.fixture(scope="session")
def llama_server():
    """Factory: llama_server(np=4, ctx=4096) -> a running real llama-server (one per config per session)."""
    from llama_server import LlamaServer

    running = {}

    def get(np=4, ctx=4096, extra=()):
        key = (np, ctx, tuple(extra))
        if key not in running:
            running[key] = LlamaServer(np=np, ctx=ctx, extra=tuple(extra)).start()
        return running[key]

    yield get
    for s in running.values():
        s.stop()


def mock_arrivals(m):
    """How many requests the mock has received so far (its /mock/log): a run's progress, seen from the server."""
    import urllib.request

    with urllib.request.urlopen(m.base_url.rsplit("/v1", 1)[0] + "/mock/log", timeout=10) as r:
        return len(json.load(r))


def wait_until(check, what, timeout=60.0):
    """Poll check() until it holds: wait for readiness instead of guessing how long it takes."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_for_line(stream, needle, timeout=60.0):
    """Read a pipe (straight from its fd: nothing is left in a buffer for a later communicate()) until
    `needle` shows; returns what was read."""
    import os
    import selectors
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream.fileno(), selectors.EVENT_READ)
        while needle.encode() not in seen:
            assert time.monotonic() < deadline, f"timed out waiting for {needle!r} in {seen!r}"
            if sel.select(timeout=0.1):
                chunk = os.read(stream.fileno(), 65536)
                assert chunk, f"the stream ended before {needle!r}: {seen!r}"
                seen += chunk
    return seen.decode(errors="replace")


def screenshot_colours(html, tmp_path, height=1600):
    """Render a report in headless Chromium (offline) and count the pixels of the first two chart
    colours (blue, orange). Fails on any console error."""
    png = tmp_path / "r.png"
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        f"--window-size=1100,{height}", f"--screenshot={png}", html.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert png.exists() and png.stat().st_size > 20_000, p.stderr[-2000:]
    assert "CONSOLE" not in p.stderr and "Uncaught" not in p.stderr
    from matplotlib.image import imread

    pixels = (imread(str(png))[..., :3] * 255).round()
    blue = ((abs(pixels[..., 0] - 31) < 4) & (abs(pixels[..., 1] - 119) < 4) & (abs(pixels[..., 2] - 180) < 4)).sum()
    orange = ((abs(pixels[..., 0] - 255) < 4) & (abs(pixels[..., 1] - 127) < 4) & (abs(pixels[..., 2] - 14) < 4)).sum()
    return int(blue), int(orange)


@pytest.fixture(scope="session")
def llama_cpp_python():
    """Factory: llama_cpp_python(interrupt=True) -> llama-cpp-python's real server on Gemma 3 270M
    (one per setting per session). interrupt=True is that server's default --interrupt_requests."""
    from llama_cpp_python import LlamaCppPython

    running = {}

    def get(interrupt=True):
        if interrupt not in running:
            running[interrupt] = LlamaCppPython(interrupt=interrupt).start()
        return running[interrupt]

    yield get
    for s in running.values():
        s.stop()
