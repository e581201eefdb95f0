"""llama-cpp-python's server (`python -m llama_cpp.server`) for tests, CI and users: a second real
server beside llama-server, built once and cached outside the repo.

    python tests/llama_cpp_python.py install            # build it (cached) + the model
    python tests/llama_cpp_python.py serve              # run it on a free port until Ctrl-C
    python tests/llama_cpp_python.py serve --no-interrupt

The PyPI sdist compiles llama.cpp with CMake into its own virtual environment under
~/.cache/tpsload (or $TPSLOAD_CACHE); pip's wheel cache makes a fresh venv quick. Only the
shared library the bindings load is built (no multimodal library, tools, tests or examples).
The model is the Gemma 3 270M GGUF that tests/llama_server.py assembles.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from llama_server import ServerProcess, cache_dir
from llama_server import install as install_llama_server

PACKAGE = "llama-cpp-python[server]==0.3.16"
VERSION = "0.3.16"
# the bindings load libllama (and libggml); the multimodal library (LLAVA_BUILD) loads only for
# image chat formats, and llama.cpp's tools, server, tests and examples are never used
CMAKE_ARGS = ("-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF "
              "-DLLAMA_BUILD_SERVER=OFF")


def _venv() -> Path:
    return cache_dir() / "llama-cpp-python-venv"


def _log(msg: str) -> None:
    print(f"[llama-cpp-python] {msg}", file=sys.stderr, flush=True)


def _installed(py: Path) -> bool:
    if not py.exists():
        return False
    p = subprocess.run([str(py), "-c", "import llama_cpp, llama_cpp.server.app, uvicorn; "
                        "print(llama_cpp.__version__)"], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.strip() == VERSION


def install() -> tuple[Path, Path]:
    """(the venv's python, model), building on first use. Safe to call from parallel processes."""
    _, model = install_llama_server()  # the model (and the lock file's folder)
    root = cache_dir()
    py = _venv() / "bin" / "python"
    with open(root / ".install-llama-cpp-python.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(py):
            t = time.monotonic()
            if not py.exists():
                subprocess.run([sys.executable, "-m", "venv", str(_venv())], check=True)
            env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
            if shutil.which("ninja"):
                env["CMAKE_GENERATOR"] = "Ninja"
            _log(f"installing {PACKAGE} (compiles llama.cpp the first time: ~4 min on 2 cores)")
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", PACKAGE],
                           check=True, env=env)
            if not _installed(py):
                raise RuntimeError(f"{PACKAGE} installed but llama_cpp.server does not import")
            _log(f"ready in {time.monotonic() - t:.0f} s")
    return py, model


class LlamaCppPython(ServerProcess):
    """`with LlamaCppPython(interrupt=False) as s: s.base_url` -> its server, serving Gemma 3 270M.

    `interrupt` is the server's --interrupt_requests (on by default there): a running stream is
    ended with [DONE] and its connection closed when another request arrives."""

    name = "llama-cpp-python"
    ready_path = "/v1/models"  # the model loads before uvicorn listens: an answer means ready (there is no /health)

    def __init__(self, interrupt: bool = True, ctx: int = 4096, threads: int = 2, extra: tuple[str, ...] = ()
                 ) -> None:
        super().__init__(cache_dir() / f"llama-cpp-python{'' if interrupt else '-no-interrupt'}.log")
        self.interrupt, self.ctx, self.threads, self.extra = interrupt, ctx, threads, extra

    def argv(self) -> list[str]:
        py, model = install()
        return [str(py), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(self.port), "--chat_format", "gemma", "--n_ctx", str(self.ctx),
                "--n_threads", str(self.threads), "--interrupt_requests", str(self.interrupt), *self.extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="build/install llama-cpp-python's server and the model into the cache")
    s = sub.add_parser("serve", help="run it on a free loopback port until Ctrl-C")
    s.add_argument("--no-interrupt", action="store_true", help="--interrupt_requests False")
    a = ap.parse_args()
    if a.cmd == "install":
        py, model = install()
        print(f"llama-cpp-python: {py}\nmodel: {model}")
        return
    with LlamaCppPython(interrupt=not a.no_interrupt) as srv:
        srv.serve_until_interrupted(f"llama-cpp-python ready: --base-url {srv.base_url}")


if __name__ == "__main__":
    main()
