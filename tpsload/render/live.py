"""The run while it runs: a panel redrawn in place on a terminal, one plain line every N seconds off one
(CI logs). Both read the run's core.live.LiveStats and are redrawn from the run's own loop (the
runner's progress tick), so no refresh thread competes with the measurement for the GIL.
"""

from __future__ import annotations

import time
from typing import IO, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tpsload.analysis.numbers import fmt
from tpsload.core.live import Counts, LiveStats, LiveView
from tpsload.core.runner import RunState
from tpsload.servers.metrics import Scrape, latest_gauges

DEFAULT_STATUS_INTERVAL_S = 10.0


class View(Protocol):
    def __call__(self, st: RunState) -> None: ...

    def watch_server(self, scrape: Scrape) -> None: ...

    def close(self) -> None: ...


class ServerNow:
    """The server's queue and KV cache from its latest /metrics sample, parsed once per new sample."""

    def __init__(self) -> None:
        self.scrape: Scrape | None = None
        self._t: int | None = None
        self._gauges: dict[str, float] = {}

    def text(self) -> str | None:
        if self.scrape is None or not self.scrape.metrics:
            return None
        if self.scrape.metrics[-1][0] != self._t:
            latest = latest_gauges(self.scrape)
            if latest is not None:
                self._t, self._gauges = latest
        g = self._gauges
        parts = [f"{label} {fmt(g[k])}" for k, label in (("requests_running", "running"),
                                                          ("requests_waiting", "waiting")) if k in g]
        if "kv_cache_usage" in g:
            parts.append(f"KV cache {g['kv_cache_usage']:.0%}")
        return ", ".join(parts) or None


def live_view(file: IO[str], stats: LiveStats, total: int | None, duration_s: float | None,
              status_interval_s: float) -> View | None:
    """The panel on a terminal, status lines elsewhere (None: neither, with a status interval of 0)."""
    con = Console(file=file, stderr=True)
    if con.is_terminal:
        return LivePanel(con, stats, total, duration_s)
    if status_interval_s > 0:
        return StatusLine(file, stats, status_interval_s, total)
    return None


def _errors(c: Counts) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(c.by_class.items()))


def _pair(a: float | None, b: float | None, digits: int | None = None) -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def _client(v: LiveView) -> tuple[bool, str]:
    """(client-bound now?, its numbers in words)."""
    parts = [f"loop lag p99 {fmt(v.loop_lag_p99_ms, 2)} ms", f"CPU {_share(v.cpu_share)} of a core",
             f"sends over 1 ms {_share(v.slow_send_share)}"]
    return bool(v.client_bound), ", ".join(parts)


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _coarse(v: LiveView, st: RunState) -> bool:
    """Worker processes count their requests for the parent, which sees each record only at the end."""
    c = v.counts
    return bool(st.done) and c.ok + c.failed + c.cancelled + c.warmup_done == 0


def status_text(v: LiveView, st: RunState, total: int | None = None, elapsed_s: float | None = None,
                server: str | None = None) -> str:
    """The run now, in one line (the status line; the panel shows the same numbers in rows). `elapsed_s`:
    the caller's own count, for a run whose requests this process does not see start (worker processes)."""
    if _coarse(v, st):
        return (f"{fmt(elapsed_s or v.elapsed_s, 0)} s: {st.done}" + (f"/{total}" if total else "")
                + f" done, {st.failed} failed (worker processes: the rest of the numbers come at the end)")
    c = v.counts
    done = c.ok + c.failed + c.cancelled
    line = (f"{fmt(v.elapsed_s, 0)} s: {c.ok} ok, {c.failed} failed" + (f" ({_errors(c)})" if c.by_class else "")
            + (f", {c.cancelled} cancelled" if c.cancelled else "") + (f" of {total}" if total else "")
            + f", {c.in_flight} in flight")
    if not done:
        return line
    bound, client = _client(v)
    return (line + f"; last {fmt(v.window_s, 0)} s: {fmt(v.output_tps, 1)} tok/s, {fmt(v.request_rate, 2)} req/s, "
            f"TTFT p50/p99 {_pair(v.ttft_p50_ms, v.ttft_p99_ms, 1)} ms, "
            f"TPOT p50/p99 {_pair(v.tpot_p50_ms, v.tpot_p99_ms, 2)} ms; "
            + (f"CLIENT-BOUND ({'; '.join(v.client_bound)})" if bound else f"client ok ({client})")
            + (f"; server: {server}" if server else "") + (f"; stopping: {st.stop_reason}" if st.stopping else ""))


class StatusLine:
    """Off a terminal: one plain line every `interval_s` seconds (none for a shorter run)."""

    def __init__(self, file: IO[str], stats: LiveStats, interval_s: float, total: int | None = None) -> None:
        self.file = file
        self.stats = stats
        self.interval_s = interval_s
        self.total = total
        self.t0 = time.monotonic()
        self.next = self.t0 + interval_s
        self.server = ServerNow()

    def __call__(self, st: RunState) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = max(self.next + self.interval_s, now)
        print("tpsload " + status_text(self.stats.view(), st, self.total, now - self.t0, self.server.text()),
              file=self.file, flush=True)

    def watch_server(self, scrape: Scrape) -> None:
        self.server.scrape = scrape

    def close(self) -> None:
        pass


class LivePanel:
    """On a terminal: the progress bar and the run's live numbers, redrawn in place; gone at the end
    (the result's tables follow)."""

    def __init__(self, con: Console, stats: LiveStats, total: int | None, duration_s: float | None) -> None:
        self.console = con
        self.stats = stats
        self.total = total
        self.duration_s = duration_s
        self.t0 = time.monotonic()
        # the bar is drawn as a part of the panel, never on its own
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=con,
                                 auto_refresh=False)
        self.task = self.progress.add_task("requests", total=total or duration_s or None, info="")
        self.live = Live(console=con, auto_refresh=False, transient=True)
        self.server = ServerNow()
        self.live.start()

    def __call__(self, st: RunState) -> None:
        v = self.stats.view()
        done = st.done
        completed: float = done if self.total else (time.monotonic() - self.t0)
        self.progress.update(self.task, completed=completed, info=f"{done} done, {st.failed} failed")
        self.live.update(Group(self.progress, panel(v, st, self.server.text())), refresh=True)

    def watch_server(self, scrape: Scrape) -> None:
        self.server.scrape = scrape

    def close(self) -> None:
        self.live.stop()


def panel(v: LiveView, st: RunState, server: str | None = None) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    if _coarse(v, st):
        t.add_row("Requests", f"{st.done} done, {st.failed} failed")
        t.add_row("", "[dim]worker processes: the other numbers come when they finish[/]")
        return t
    c = v.counts
    t.add_row("Requests", f"{c.in_flight} in flight · {c.ok} ok · {c.failed} failed"
              + (f" ({escape(_errors(c))})" if c.by_class else "")
              + (f" · {c.cancelled} cancelled" if c.cancelled else "")
              + (f" · {c.warmup_done} warm-up" if c.warmup_done else ""))
    w = f"last {fmt(v.window_s, 0)} s"
    t.add_row("Output", f"{fmt(v.output_tps, 1)} tok/s · {fmt(v.request_rate, 2)} req/s ({w})")
    t.add_row("TTFT", f"p50 {fmt(v.ttft_p50_ms, 1)} ms · p99 {fmt(v.ttft_p99_ms, 1)} ms ({w})")
    t.add_row("TPOT", f"p50 {fmt(v.tpot_p50_ms, 2)} ms · p99 {fmt(v.tpot_p99_ms, 2)} ms ({w})")
    bound, client = _client(v)
    t.add_row("Client", f"[bold red]client-bound[/]: {escape('; '.join(v.client_bound))}" if bound
              else f"ok ({client})")
    if server:
        t.add_row("Server", f"{escape(server)} (its /metrics)")
    if st.stopping:
        t.add_row("Stopping", escape(str(st.stop_reason)))
    return t

