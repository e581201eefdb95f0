"""A server process tpsload starts and stops itself: `tpsload matrix` (a server per configuration),
and the tests' real servers.

It runs in its own session (so its own process group: a terminal's Ctrl-C reaches only tpsload,
which then stops it), with its output in a log file (never an undrained pipe that would stall it),
is ready when its health route answers 200 (llama-server answers 503 while it loads the model), and
is stopped by process group: SIGTERM, then SIGKILL after a grace period, so a wrapper script's
children go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import aiohttp

from tpsload.httpjson import get_json

TAIL_LINES = 20
POLL_S = 0.2
PR_SET_PDEATHSIG = 1


def _libc_prctl() -> object | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM if tpsload dies. A safety net for the one
    way past every `finally` (tpsload killed with SIGKILL); stop() remains the way it is stopped."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[operator]


def free_port() -> int:
    """A loopback port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ended(code: int) -> str:
    """How a process ended, for people: 'exited with code 1', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class StartFailed(Exception):
    """The server exited or was not ready in time; the message says which, with its own last error line."""


@contextmanager
def signals_held() -> Iterator[None]:
    """Signals wait until the block ends: a Ctrl-C in the middle of stopping must not leave the server running."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class ServerProcess:
    """`argv` started with `env` added to ours, output to `log_path`; `ready_url` answering 200 means ready."""

    name = "server"

    def __init__(self, argv: Sequence[str], log_path: Path | str, ready_url: str,
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.ready_url = ready_url
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             env={**os.environ, **self.env}, preexec_fn=_die_with_parent)
            except OSError as e:  # no such program, not executable
                raise StartFailed(f"{self.name} could not be started: {e.strerror or e}: {self.argv[0]}") from None
        self.started = time.monotonic()

    async def wait_ready(self, timeout_s: float) -> float:
        """Poll until ready; the seconds it took since spawn. Raises StartFailed (after stopping it)."""
        assert self.proc is not None
        deadline = self.started + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise StartFailed(f"{self.name} {ended(code)} while starting: {self.error_line()}")
                try:
                    if (await get_json(session, self.ready_url, {}, 2.0)).status == 200:
                        return time.monotonic() - self.started
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise StartFailed(f"{self.name} not ready after {timeout_s:g} s (no 200 from {self.ready_url}); "
                                      f"its last line: {self.error_line()}")
                await asyncio.sleep(POLL_S)

    def start(self, timeout_s: float = 120.0) -> "ServerProcess":
        """Spawn and wait until ready (for callers without an event loop of their own)."""
        self.spawn()
        try:
            asyncio.run(self.wait_ready(timeout_s))
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM to the process group, SIGKILL after `grace_s`; waits for every member to go. Its exit code."""
        p = self.proc
        if p is None:
            return None
        with signals_held():
            pgid = p.pid  # its own session: the group id is its pid
            if self._signal(pgid, signal.SIGTERM):
                if not self._gone(p, pgid, grace_s):
                    self._signal(pgid, signal.SIGKILL)
                    self._gone(p, pgid, 10.0)
            else:  # the group was gone already: the leader may still wait to be reaped, for its exit code
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=grace_s)
        return p.returncode

    @staticmethod
    def _signal(pgid: int, sig: int) -> bool:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return False  # nothing left in the group
        return True

    @staticmethod
    def _gone(p: subprocess.Popen[bytes], pgid: int, within_s: float) -> bool:
        """Whether the leader was reaped and no member of its group is left, within `within_s`."""
        deadline = time.monotonic() + within_s
        while True:
            p.poll()
            if p.returncode is not None:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def log_tail(self, n: int = TAIL_LINES) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64 * 1024))
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-n:]

    def error_line(self) -> str:
        """The line of its log that says what went wrong: the last one naming an error, else its last line."""
        tail = self.log_tail(200)
        for ln in reversed(tail):
            if any(w in ln.lower() for w in ("error", "invalid", "unknown", "failed", "usage:")):
                return ln.strip()
        return tail[-1].strip() if tail else "(no output)"

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def about(root: str, timeout_s: float = 5.0) -> dict[str, object]:
    """What the server says about itself: llama-server's /props, vLLM's (and others') /version, each
    only where it answers 200 with JSON."""
    out: dict[str, object] = {}
    async with aiohttp.ClientSession() as session:
        for key, route in (("props", "/props"), ("version", "/version")):
            try:
                body = (await get_json(session, root + route, {}, timeout_s)).ok_json
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                body = None
            if body is not None:
                out[key] = body
    return out
