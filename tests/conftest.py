import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tpsload.mock import MockProcess

# Tests never use a downloaded tokenizer (no network here): tiktoken gets an empty cache of
# its own, outside the repository, for this session and the CLIs it starts.
if "TIKTOKEN_CACHE_DIR" not in os.environ:
    os.environ["TIKTOKEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="tpsload-test-tiktoken-")
    atexit.register(shutil.rmtree, os.environ["TIKTOKEN_CACHE_DIR"], True)


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


def tpsload(*args, timeout=120, env=None, check=None):
    """Run the real CLI in a subprocess; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.pop("OPENAI_API_KEY", None)
    e.pop("OPENAI_BASE_URL", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "tpsload", *args], capture_output=True, text=True, timeout=timeout,
                       env=e, stdin=subprocess.DEVNULL)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


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
