"""The terminal: progress notices while running (the live view is render.live), then the tables."""

from __future__ import annotations

import sys
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tpsload.analysis.matrix import table as matrix_table
from tpsload.analysis.matrix import verdicts as matrix_verdicts
from tpsload.analysis.numbers import fmt
from tpsload.analysis.report import dists_of, level_table, stage_table, sweep_verdicts
from tpsload.analysis.sessions import turn_table


def notice(message: str) -> None:
    """A progress message (which level or repetition runs now): one line on stderr, so that it never
    mixes with a table or JSON on stdout."""
    print(message, file=sys.stderr, flush=True)


def console(file: IO[str]) -> Console:
    return Console(file=file, highlight=False, soft_wrap=True, width=None if file.isatty() else 140)


def render(result: dict[str, Any], file: IO[str]) -> None:
    con = console(file)
    s = result["summary"]
    cfg = result["config"]
    mode = f"{cfg['endpoint']} {'stream' if cfg['stream'] else 'non-stream'}"
    title = f"tpsload · {result['server'].get('base_url', cfg['base_url'])} · {result.get('model', cfg.get('model'))}"
    con.print(f"[bold]{escape(title)}[/] · {mode} · concurrency {cfg['concurrency']}")
    if result.get("partial"):
        con.print(f"[bold yellow]PARTIAL result[/]: {escape(str(result.get('stop_reason')))}")
    if result["errors"].get("too_many_failed"):
        con.print(f"[bold red]TOO MANY FAILURES[/]: {escape(result['errors']['too_many_failed'])}")
    errs = result["errors"]["by_class"]
    failed = ", ".join(f"{k} {v}" for k, v in sorted(errs.items())) if errs else ""
    top = Table.grid(padding=(0, 2))
    top.add_column(style="bold")
    top.add_column(justify="right")
    top.add_column()
    failed_txt = f"{s['requests_failed']} failed" + (f" ({failed})" if failed else "")
    top.add_row("Requests", f"{s['requests_ok']} ok", failed_txt)
    top.add_row("Duration", fmt(s["duration_s"], 2), "s")
    spread = (result.get("repeat_spread") or {}).get("output_throughput")
    top.add_row("Output throughput", fmt(s["output_throughput"], 1),
                "tok/s" + (f" (mean of {spread['n']} repetitions ± {fmt(spread['std'], 1)}, range "
                           f"{fmt(spread['min'], 1)} … {fmt(spread['max'], 1)})" if spread else ""))
    top.add_row("  steady state", fmt(s["steady_output_throughput"], 1), "tok/s (while at target concurrency)")
    top.add_row("Total token throughput", fmt(s["total_token_throughput"], 1), "tok/s (prompt + output)")
    top.add_row("Request throughput", fmt(s["request_throughput"], 2), "req/s")
    top.add_row("Concurrency achieved", fmt(s["concurrency_achieved"], 2), "requests in flight (time-weighted)")
    srcs = ", ".join(f"{k} {v}" for k, v in s["token_sources"].items()) or "–"
    top.add_row("Token counts from", srcs, "")
    if s.get("requests_reasoning"):
        rsrcs = ", ".join(f"{k} {v}" for k, v in (s.get("reasoning_sources") or {}).items()) or "–"
        top.add_row("Reasoning requests", str(s["requests_reasoning"]), f"(reasoning counts from {rsrcs})")
    con.print(top)
    t = Table(show_edge=False, header_style="bold")
    for col in ("", "unit", "mean", "p50", "p90", "p99", "max", "n"):
        t.add_column(col, justify="left" if col in ("", "unit") else "right")
    for label, key, unit in dists_of(s):
        d = s.get(key)
        if d is None:
            t.add_row(label, unit, *(["–"] * 6))
        else:
            t.add_row(label, unit, *(fmt(d[k], 1) for k in ("mean", "p50", "p90", "p99", "max")), str(d["n"]))
    con.print(t)
    if result.get("sessions"):
        render_turns(con, result["sessions"])
    if result.get("stages"):
        header, rows = stage_table(result)
        st = Table(show_edge=False, header_style="bold", title="Stages (each over its own steady window)")
        for col in header:
            st.add_column(col, justify="left" if col == "stage" else "right")
        for row in rows:
            st.add_row(*(escape(v) for v in row))
        con.print(st)
    trace = result.get("trace")
    if trace:
        lag = trace.get("schedule_lag_ms") or {}
        con.print(f"Trace {escape(str(trace.get('file')))} ({trace.get('format')}): {trace.get('requests')} requests "
                  f"at {fmt(trace.get('speed'))}x, schedule lag p50 {fmt(lag.get('p50'), 2)} / p99 "
                  f"{fmt(lag.get('p99'), 2)} ms" + ("" if trace.get("schedule_kept") else
                                                   " [bold red](schedule NOT kept)[/]"))
    if s.get("send_ms"):  # where the request half of TTFT went
        send, ttfb, conn, pre = s["send_ms"], s.get("ttfb_ms") or {}, s.get("connect_ms"), s.get("preconnected")
        con.print(f"Request path: send (due → written) p50 {fmt(send['p50'], 2)} / p99 {fmt(send['p99'], 2)} ms, "
                  f"ttfb p50 {fmt(ttfb.get('p50'), 2)} ms; connections {s['connections_opened']} opened"
                  + (f" (connect p50 {fmt(conn['p50'], 2)} ms)" if conn else "")
                  + f", {s['connections_reused']} reused" + (f", {pre} opened before the run" if pre else ""))
    h = result["client_health"]
    lag = h["loop_lag_ms"]
    lag_txt = f"loop lag p99 {fmt(lag['p99'], 2)} ms" if lag else "loop lag –"
    if h["client_bound"]:
        con.print(f"[bold red]Client-bound[/]: {escape('; '.join(h['reasons']))}. Latencies include the client's own "
                  "delay (spread the load with --workers N; `tpsload calibrate` recommends a count).")
    elif h.get("workers"):
        con.print(f"Client: ok ({lag_txt}, {len(h['workers'])} worker processes, CPU "
                  f"{max(w['cpu_share'] for w in h['workers']):.0%} of a core at most)")
    else:
        con.print(f"Client: ok ({lag_txt}, CPU {h['cpu_share']:.0%} of one core)")
    if h.get("cap_note"):
        con.print(f"[yellow]Concurrency cap[/]: {escape(h['cap_note'])}")
    for line in (result.get("server_metrics") or {}).get("text") or ():
        con.print(escape(line))
    if result.get("slo"):
        v = result["slo"]
        parts = []
        for o in v["objectives"]:
            shown = fmt(o["value"])
            parts.append(f"{'[green]met[/]' if o['met'] else '[red]MISSED[/]'} {escape(o['slo'])} ({shown})")
        con.print("SLOs: " + "; ".join(parts))
        con.print(f"Goodput: {fmt(s['goodput'], 2)} req/s, {fmt(s['goodput_tokens'], 1)} tok/s "
                  f"({v['good_requests']} of {s['requests_ok']} requests met every per-request objective)")
    if "tokens_per_second" in result:
        con.print(f"Single request: {result['tokens']} tokens, {fmt(result['elapsed_seconds'], 3)} s, "
                  f"{fmt(result['tokens_per_second'], 1)} tok/s ({result['mode']})")
    for w in result.get("warnings", []):
        con.print(f"[yellow]warning[/]: {escape(w)}")
    causes = result["errors"].get("causes") or {}
    for k, msg in result["errors"]["examples"].items():
        con.print(f"[red]{k}[/]: {escape(msg)}" + (f" [bold](likely: {escape(causes[k])})[/]" if k in causes else ""))


def render_turns(con: Console, sessions: dict[str, Any]) -> None:
    """--turns: the per-turn table (how prompts grow and how much of them the prefix cache served)."""
    con.print(f"Conversations: {sessions['conversations']} ({sessions['conversations_ok']} with every turn ok), "
              f"up to {sessions['turns']} turns")
    header, rows = turn_table(sessions)
    t = Table(show_edge=False, header_style="bold")
    for col in header:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*(escape(v) for v in row))
    con.print(t)


def render_sweep(sweep: dict[str, Any], file: IO[str]) -> None:
    """The sweep table (the one Markdown and HTML reports print), then its verdicts in words."""
    con = console(file)
    header, rows = level_table(sweep)
    t = Table(show_edge=False, header_style="bold")
    for col in header:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*(escape(v) for v in row[:-1]), "[red]missed[/]" if row[-1] == "missed" else row[-1])
    con.print(t)
    for label, text in sweep_verdicts(sweep):
        con.print(f"[{'yellow' if label == 'Sweep' else 'bold'}]{label}[/]: {escape(text)}")


def render_matrix(matrix: dict[str, Any], file: IO[str]) -> None:
    """The configurations side by side (the table the reports print), the verdict, and for each failed
    configuration why, with the last lines of its server's log."""
    con = console(file)
    header, rows = matrix_table(matrix)
    t = Table(show_edge=False, header_style="bold")
    for col in header:
        t.add_column(col, justify="left" if col in ("configuration", "status") else "right")
    for row in rows:
        t.add_row(*(escape(v) if i != 1 or v == "ok" else f"[red]{escape(v)}[/]" for i, v in enumerate(row)))
    con.print(t)
    for label, text in matrix_verdicts(matrix):
        con.print(f"[{'bold' if label == 'Verdict' else 'red'}]{escape(label)}[/]: {escape(text)}")
    for c in matrix["configurations"]:
        if c["status"] == "failed" and c.get("log_tail"):
            con.print(f"[dim]{escape(c['name'])}: the last lines of {escape(str(c.get('log')))}:[/]")
            for line in c["log_tail"][-5:]:
                con.print(f"  [dim]{escape(line)}[/]")
