"""Start the mock in its own process (never in the client's event loop) and stop it after."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

from tpsload.errors import TpsloadError


class MockProcess:
    """`with MockProcess(ttft_ms=..., itl_ms=...) as m: m.base_url` -> a live mock on a free port."""

    def __init__(self, startup_timeout_s: float = 20.0, module: str = "tpsload", cpus: set[int] | None = None,
                 **options: object) -> None:
        self.options = options
        # Linux CPUs the server may run on: apart from the client's, a server on the same machine does not
        # take the client's CPU each time a request wakes it (the kernel runs the woken reader where the
        # writer was), which makes the client's sends late by the server's work
        self.cpus = cpus
        self.module = module  # "tpsload" runs `tpsload mock`; "tpsload.mock.lean" the lean server
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", self.module] + (["mock"] if self.module == "tpsload" else [])
        args += ["--host", "127.0.0.1", "--port", "0"]
        for k, v in self.options.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                args.append(flag)
            elif isinstance(v, (list, tuple)):
                for item in v:
                    args += [flag, str(item)]
            elif v is not None and v is not False:
                args += [flag, str(v)]
        return args

    def start(self) -> "MockProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # stderr to a file, not a pipe: an undrained pipe would stall the server mid-run
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env=env, start_new_session=True)
        if self.cpus:
            os.sched_setaffinity(self.proc.pid, self.cpus)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.startup_timeout_s
        line = ""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = self.proc.stdout.readline()  # type: ignore[union-attr]
                break
            if self.proc.poll() is not None:
                break
        sel.close()
        if "listening on " not in line:
            err = ""
            if self.proc.poll() is not None:
                self._err.seek(0)
                err = " ".join(self._err.read().strip().splitlines()[-1:])
            self.stop()
            raise TpsloadError(f"the bundled mock server did not start: {err or 'no answer in time'}")
        self.base_url = line.split("listening on ", 1)[1].strip()
        return self

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def kill(self) -> None:
        """Kill it outright (tests of a server dying mid-run)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self) -> "MockProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
