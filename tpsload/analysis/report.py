"""Results -> the content of a shareable report: tables as rows of text, charts as data. Pure.

The console (render/console.py), Markdown and HTML print the same tables, and the SVG and PNG
renderers draw the same charts, so no two formats disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from tpsload.analysis import compare as cmp
from tpsload.analysis import matrix as mx
from tpsload.analysis import timeline
from tpsload.analysis.numbers import MISSING, fmt
from tpsload.analysis.sessions import turn_table
from tpsload.analysis.sweep import csv_row, finished
from tpsload.analysis.sweep import name as sweep_name

DISTS = (("TTFT", "ttft_ms", "ms"), ("ITL", "itl_ms", "ms"), ("TPOT", "tpot_ms", "ms"),
         ("E2E latency", "e2e_latency_ms", "ms"), ("Decode speed", "decode_tps", "tok/s"))
# shown where a request reasoned: TTFT is then when thinking began, TTFA when the answer did
REASONING_DISTS = (("TTFA (first answer)", "ttfa_ms", "ms"), ("Reasoning tokens", "reasoning_tokens", "tok"),
                   ("Answer tokens", "answer_tokens", "tok"), ("Reasoning speed", "reasoning_decode_tps", "tok/s"),
                   ("Answer speed", "answer_decode_tps", "tok/s"))


def dists_of(summary: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The distributions a run's tables show: the reasoning ones too where any request reasoned."""
    return DISTS + REASONING_DISTS if summary.get("requests_reasoning") else DISTS

# The sweep table, one row per level: (header, csv_row field, decimals; None for counts)
LEVEL_COLUMNS = (("ok", "requests_ok", None), ("failed", "requests_failed", None),
                 ("out tok/s", "output_throughput", 0), ("steady tok/s", "steady_output_throughput", 0),
                 ("TTFT p50 ms", "ttft_p50_ms", 1), ("TTFT p99 ms", "ttft_p99_ms", 1),
                 ("TPOT p50 ms", "tpot_p50_ms", 1), ("TPOT p99 ms", "tpot_p99_ms", 1))


def describe(r: dict[str, Any]) -> list[tuple[str, str]]:
    c, w, srv = r.get("config") or r.get("base_config") or {}, r.get("workload") or {}, r.get("server") or {}
    first = (r.get("levels") or [{}])[0]  # a sweep: its levels say what the server is
    srv = srv or first.get("server") or {}
    w = w or first.get("workload") or {}
    lines = [("server", str(srv.get("base_url") or c.get("base_url", ""))),
             ("model", str(r.get("model") or first.get("model") or c.get("model")))]
    lc = srv.get("llama_cpp")
    if lc:
        lines.append(("llama.cpp", f"{lc.get('total_slots')} slots, {lc.get('n_ctx_per_slot')} tokens per slot, "
                                   f"build {lc.get('build_info')}"))
    for k in ("vllm_version", "sglang_version", "server_header"):
        if srv.get(k):
            lines.append((k.replace("_", " "), str(srv[k])))
    if w:
        mode = "stream" if w.get("stream") else "no stream"
        eos = ", ignore_eos" if w.get("ignore_eos") else ""
        lines.append(("workload", f"{w.get('source')}, {w.get('endpoint')} {mode}, "
                                  f"max_tokens {w.get('max_tokens')}{eos}"))
        conv = w.get("sessions")
        if conv:
            turns = conv["turns"]
            span = f"{turns['min']}" if turns["min"] == turns["max"] else f"{turns['min']}–{turns['max']}"
            think = conv.get("think_time") or {}
            pause = {"fixed": f"{think.get('lo_s', 0):g} s", "uniform": f"{think.get('lo_s', 0):g}–"
                     f"{think.get('hi_s', 0):g} s", "exponential": f"mean {think.get('lo_s', 0):g} s"}
            lines.append(("conversations", f"{span} turns each, history: {conv['history']}"
                          + (f", think time {pause[think['kind']]}" if think else "")
                          + (", slot affinity" if conv.get("slot_affinity") else "")))
    if r.get("kind") == "sweep":
        key = r["key"]
        lines.append(("sweep", f"{key} levels " + ", ".join(f"{lv[key]:g}" for lv in r["levels"])))
    else:
        load = f"rate {c.get('rate')}/s" if c.get("rate") else f"concurrency {c.get('concurrency')}"
        if c.get("stages"):
            load = "stages " + ", ".join(f"{s['duration_s']:g}s:{s['kind']}={s['start']:g}"
                                         + (f"->{s['end']:g}" if s["end"] != s["start"] else "") for s in c["stages"])
        elif c.get("trace"):
            load = f"trace {c['trace']} at {c.get('trace_speed', 1):g}x"
        lines.append(("load", f"{load}, {(r.get('summary') or {}).get('requests_ok')} requests ok"))
    if r.get("tags"):
        lines.append(("tags", ", ".join(f"{k}={v}" for k, v in r["tags"].items())))
    client = r.get("client") or {}
    if client:
        lines.append(("client", f"{client.get('cpu')}, {client.get('cores')} cores, Python {client.get('python')}"))
    lines.append(("tpsload", f"{r.get('tpsload_version')}, {r.get('started_at')}"
                             + (" — PARTIAL: " + str(r.get("stop_reason")) if r.get("partial") else "")))
    return lines


def run_tables(r: dict[str, Any]) -> dict[str, Any]:
    s = r["summary"]
    top = [("Requests ok / failed", f"{s['requests_ok']} / {s['requests_failed']}"),
           ("Output throughput", f"{fmt(s['output_throughput'])} tok/s"),
           ("Steady-state throughput", f"{fmt(s['steady_output_throughput'])} tok/s"),
           ("Request throughput", f"{fmt(s['request_throughput'])} req/s"),
           ("Concurrency achieved", fmt(s["concurrency_achieved"])),
           ("Error rate", fmt(s["error_rate"])),
           ("Token counts from", ", ".join(f"{k} {v}" for k, v in s["token_sources"].items()) or "–")]
    dists = [[label, unit] + [fmt((s.get(key) or {}).get(q)) for q in ("mean", "p50", "p90", "p99", "max")]
             for label, key, unit in dists_of(s)]
    slo = [[o["slo"], fmt(o["value"]), "met" if o["met"] else "MISSED"]
           for o in ((r.get("slo") or {}).get("objectives") or [])]
    h = r["client_health"]
    health = "client-bound: " + "; ".join(h["reasons"]) if h["client_bound"] else \
        f"client ok (CPU {h['cpu_share']:.0%})"
    # --turns: the per-turn table (header, rows), as the console prints it
    turns = turn_table(r["sessions"]) if r.get("sessions") else None
    return {"top": top, "dists": dists, "slo": slo, "health": health, "turns": turns}


def level_table(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The sweep table (header, rows): the level, its counts, throughput and latency, and whether it
    met every SLO ('met', 'missed', or '–' without SLOs)."""
    key = sweep["key"]
    rows = []
    for lv in sweep["levels"]:
        r = csv_row(lv, key)
        slo = MISSING if r["slo_all_met"] is None else ("met" if r["slo_all_met"] else "missed")
        rows.append([f"{r['level']:g}" + (" (partial)" if r["partial"] else ""),
                     *(fmt(r[field], digits) for _, field, digits in LEVEL_COLUMNS), slo])
    return [key, *(h for h, _, _ in LEVEL_COLUMNS), "SLO"], rows


def sweep_turn_table(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """A --turns sweep: each level's per-turn table, one block of rows per level; None without turns."""
    key = sweep["key"]
    rows, header = [], None
    for lv in sweep["levels"]:
        if lv.get("sessions"):
            header, turn_rows = turn_table(lv["sessions"])
            rows += [[f"{lv[key]:g}", *row] for row in turn_rows]
    return ([key, *header], rows) if header else None


def sweep_verdicts(sweep: dict[str, Any]) -> list[tuple[str, str]]:
    """The sweep's conclusions in words: (label, text)."""
    out = [(label, sweep[k]["text"]) for k, label in (("saturation", "Saturation"), ("slo_frontier", "SLO frontier"))
           if sweep.get(k)]
    if sweep.get("stop_reason"):
        out.append(("Sweep", str(sweep["stop_reason"])))
    return out


@dataclass(frozen=True)
class Mark:
    """A labelled place on a chart: a vertical line at x, or (with y) a circled point."""

    label: str
    x: float
    color: str
    y: float | None = None


@dataclass(frozen=True)
class Chart:
    """One chart's content, for any renderer: lines over shared x values, or (with `groups`) grouped bars."""

    title: str
    ylabel: str
    series: tuple[tuple[str, tuple[float | None, ...]], ...]
    xs: tuple[float, ...] = ()
    xlabel: str = ""
    groups: tuple[str, ...] = ()
    marks: tuple[Mark, ...] = ()
    point_labels: tuple[str, ...] = ()  # a label at each point (lines)
    ticks_at_points: bool = True  # x labels at the points (levels), or evenly spaced (a measured x)
    log2_x: bool = False

    @property
    def bars(self) -> bool:
        return bool(self.groups)


SATURATION_COLOR, FRONTIER_COLOR = "#d62728", "#2ca02c"
# the colours of a chart's series, in order (matplotlib's default cycle, so SVG and PNG agree)
SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def sweep_charts(sweep: dict[str, Any]) -> dict[str, list[Chart]]:
    """A sweep's pictures, name -> panels: throughput against load; TTFT and TPOT (p50, p99) against
    load; and the latency-throughput curve, with the saturation point and the SLO frontier marked."""
    key = sweep["key"]
    rows = [csv_row(lv, key) for lv in finished(sweep["levels"])]
    xs = tuple(r["level"] for r in rows)
    xlabel = "concurrency (requests in flight)" if key == "concurrency" else "offered rate (requests/s)"
    sat = (sweep.get("saturation") or {}).get("level")
    front = (sweep.get("slo_frontier") or {}).get("level")
    at_level = tuple(Mark(f"{label} ({x:g})", x, color) for label, x, color in
                     (("saturation", sat, SATURATION_COLOR), ("SLO frontier", front, FRONTIER_COLOR)) if x is not None)
    doubling = len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8

    def col(field: str) -> tuple[float | None, ...]:
        return tuple(r[field] for r in rows)

    def over_load(title: str, ylabel: str, series: tuple[tuple[str, tuple[float | None, ...]], ...]) -> Chart:
        return Chart(title, ylabel, series, xs, xlabel, marks=at_level, log2_x=doubling)

    tput = tuple(r["steady_output_throughput"] or r["output_throughput"] for r in rows)
    e2e = col("e2e_latency_p99_ms")
    points = tuple(Mark(label, t, color, y) for r, t, y in zip(rows, tput, e2e, strict=True) if y is not None
                   for label, at, color in (("saturation", sat, SATURATION_COLOR),
                                            ("SLO frontier", front, FRONTIER_COLOR)) if r["level"] == at)
    return {
        "throughput": [over_load("Aggregate output throughput", "tokens/s",
                                 (("output throughput", col("output_throughput")),
                                  ("steady-state throughput", col("steady_output_throughput"))))],
        "latency": [over_load(title, "ms", (("p50", col(f"{m}_p50_ms")), ("p99", col(f"{m}_p99_ms"))))
                    for m, title in (("ttft", "Time to first token"), ("tpot", "Time per output token"))],
        "latency_throughput": [Chart("Latency against throughput", "ms",
                                     (("e2e latency p99", e2e), ("TTFT p99", col("ttft_p99_ms"))), tput,
                                     "throughput (tokens/s)", marks=points,
                                     point_labels=tuple(f"{x:g}" for x in xs), ticks_at_points=False)],
    }


def run_charts(named: Sequence[tuple[str, dict[str, Any]]]) -> list[Chart]:
    """Runs side by side: latency percentiles, time per output token, throughput (bars per run)."""
    runs = [(n, r) for n, r in named if r.get("kind") not in ("sweep", "matrix")]
    if not runs:
        return []

    def pick(r: dict[str, Any], metric: str, q: str) -> float | None:
        return (r["summary"].get(metric) or {}).get(q)

    # TTFT and TPOT differ by orders of magnitude: two charts keep both readable
    lat = (("TTFT p50", "ttft_ms", "p50"), ("TTFT p99", "ttft_ms", "p99"), ("E2E p50", "e2e_latency_ms", "p50"),
           ("E2E p99", "e2e_latency_ms", "p99"))
    tpot = (("TPOT p50", "tpot_ms", "p50"), ("TPOT p99", "tpot_ms", "p99"))
    return [
        Chart("Latency percentiles", "ms", tuple((n, tuple(pick(r, m, q) for _, m, q in lat)) for n, r in runs),
              groups=tuple(g for g, _, _ in lat)),
        Chart("Time per output token", "ms", tuple((n, tuple(pick(r, m, q) for _, m, q in tpot)) for n, r in runs),
              groups=tuple(g for g, _, _ in tpot)),
        Chart("Throughput", "tokens/s", tuple((n, (r["summary"].get("output_throughput"),
                                                   r["summary"].get("steady_output_throughput"))) for n, r in runs),
              groups=("output", "steady state")),
    ]


def timeline_charts(r: dict[str, Any]) -> list[Chart]:
    """A run over time, where the server's metrics were scraped: requests in flight (ours) against
    running and waiting (the server's), and output tokens per second, ours and the server's."""
    samples = (r.get("server_metrics") or {}).get("samples") or {}
    t_ms = samples.get("t_ms") or []
    client = samples.get("client") or {}
    if len(t_ms) < 2 or not client:
        return []
    mapped = samples.get("mapped") or {}
    xs = tuple(t / 1e3 for t in t_ms)

    def present(*series: tuple[str, Any]) -> tuple[tuple[str, tuple[float | None, ...]], ...]:
        return tuple((name, tuple(v)) for name, v in series if v and len(v) == len(xs))

    requests = present(("in flight (tpsload)", client.get("in_flight")),
                       ("running (server)", mapped.get("requests_running")),
                       ("waiting (server)", mapped.get("requests_waiting")))
    tokens = present(("received (tpsload)", client.get("output_tps")),
                     ("generated (server)", timeline.rate(t_ms, mapped["generated_tokens"])
                      if mapped.get("generated_tokens") else None))
    return [Chart(title, ylabel, series, xs, "time since the run started (s)", ticks_at_points=False)
            for title, ylabel, series in (("Requests over time", "requests", requests),
                                           ("Output tokens per second over time", "tokens/s", tokens)) if series]


STAGE_COLOR = "#7f7f7f"


def traffic_charts(r: dict[str, Any]) -> list[Chart]:
    """A staged run or a trace replay over time: the load asked and what was in flight (or sent),
    output tokens per second and the median TTFT, each with the stage boundaries marked."""
    tl = r.get("timeline") or {}
    t_ms = tl.get("t_ms") or []
    if len(t_ms) < 2:
        return []
    xs = tuple(t / 1e3 for t in t_ms)
    stages = r.get("stages") or []
    marks = tuple(Mark(f"{st['spec']}", st["start_s"], STAGE_COLOR) for st in stages)
    rate = bool(stages) and stages[0]["kind"] == "rate" or bool(r.get("trace"))

    def line(name: str, key: str) -> tuple[str, tuple[float | None, ...]]:
        return name, tuple(tl.get(key) or (None,) * len(xs))

    load = ((line("asked (req/s)", "asked"),) if stages and rate else
            (line("asked (in flight)", "asked"),) if stages else ()) + \
        ((line("sent (req/s)", "sends_per_s"),) if rate else ()) + (line("in flight", "in_flight"),)
    x = "time since the run started (s)"
    return [Chart("Load over time", "requests in flight / requests per second" if rate else "requests in flight",
                  load, xs, x, marks=marks, ticks_at_points=False),
            Chart("Output throughput over time", "tokens/s", (line("received", "output_tps"),), xs, x, marks=marks,
                  ticks_at_points=False),
            Chart("Time to first token over time", "ms", (line("TTFT p50 of requests sent", "ttft_p50_ms"),), xs, x,
                  marks=marks, ticks_at_points=False)]


def stage_table(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each stage in a row (header, rows): what it asked, what it got in its steady window, its latencies."""
    header = ["stage", "asked", "achieved", "steady s", "ok", "failed", "out tok/s", "TTFT p50 ms", "TTFT p99 ms",
              "TPOT p50 ms", "TPOT p99 ms"]
    rows = []
    for st in r.get("stages") or []:
        got = st["concurrency_achieved"] if st["kind"] == "concurrency" else st["achieved_rate"]
        rows.append([st["spec"], fmt(st["asked"], 2), fmt(got, 2), fmt(st["steady_s"], 2), str(st["requests_ok"]),
                     str(st["requests_failed"]), fmt(st["output_throughput"], 0),
                     *(fmt((st.get(m) or {}).get(q), 1) for m in ("ttft_ms", "tpot_ms") for q in ("p50", "p99"))])
    return header, rows


def comparison(named: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each later result against the first (runs only; sweeps level by level)."""
    named = [(n, r) for n, r in named if r.get("kind") != "matrix"]  # a matrix compares its own configurations
    if len(named) < 2:
        return []
    (bname, base), out = named[0], []
    for oname, other in named[1:]:
        why = cmp.incomparable(base, other)
        if base.get("kind") == "sweep" and other.get("kind") == "sweep":
            lb, lo = cmp.levels(base), cmp.levels(other)
            pairs = [(sweep_name(base["key"], k), lb[k], lo[k]) for k in sorted(set(lb) & set(lo))]
        elif base.get("kind") == other.get("kind"):
            pairs = [("", base, other)]
        else:
            pairs = []
        for level, b, o in pairs:
            rows = [[r.metric + (f" ({r.unit})" if r.unit else ""), fmt(r.base), fmt(r.other),
                     "–" if r.ratio is None else f"{r.ratio:.3f}×",
                     f"{r.ci[0]:.3f} – {r.ci[1]:.3f}" if r.ci else "–",
                     ("better" if r.better else "worse") if r.significant else "–"]
                    for r in cmp.compare_pair(b, o)]
            out.append({"title": f"{oname} vs {bname}" + (f" at {level}" if level else ""), "rows": rows,
                        "incomparable": why})
    return out


def matrix_charts(matrix: dict[str, Any]) -> list[Chart]:
    """Throughput and TTFT p99 against load, a line per configuration, each one's SLO frontier marked
    in its colour (its saturation point where no SLOs were given)."""
    key = matrix["key"]
    v = matrix.get("verdict") or mx.verdict(matrix)
    judged = {j["name"]: j for j in v["configurations"]}
    rows = {c["name"]: {r["level"]: r for r in (csv_row(lv, key) for lv in finished(mx.levels(c, key)))}
            for c in matrix["configurations"]}
    rows = {n: r for n, r in rows.items() if r}
    xs = tuple(sorted({x for r in rows.values() for x in r}))
    if not xs:
        return []
    xlabel = "concurrency (requests in flight)" if key == "concurrency" else "offered rate (requests/s)"
    doubling = len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8

    def tput(r: dict[str, Any]) -> float | None:
        return r["steady_output_throughput"] or r["output_throughput"]

    charts = []
    for title, ylabel, pick in (("Throughput against load, per configuration", "tokens/s", tput),
                                ("TTFT p99 against load, per configuration", "ms",
                                 lambda r: r["ttft_p99_ms"])):
        series = tuple((n, tuple(pick(r[x]) if x in r else None for x in xs)) for n, r in rows.items())
        marks = []
        for k, (n, r) in enumerate(rows.items()):
            j = judged.get(n) or {}
            at, what = (j.get("frontier_level"), "SLO frontier") if j.get("slos") else \
                (j.get("saturation_level"), "saturation")
            if at is not None and at in r and pick(r[at]) is not None:
                marks.append(Mark(f"{n} {what}", at, SERIES_COLORS[k % len(SERIES_COLORS)], pick(r[at])))
        charts.append(Chart(title, ylabel, series, xs, xlabel, marks=tuple(marks), log2_x=doubling))
    return charts


def matrix_describe(matrix: dict[str, Any]) -> list[tuple[str, str]]:
    """What a matrix measured: the server command, its parameters, the load, the model."""
    key = matrix["key"]
    first = next((c["result"] for c in matrix["configurations"] if c.get("result")), None) or {}
    lines = [("server", str(matrix.get("server"))),
             ("parameters", "; ".join(f"{k} = {', '.join(v)}" for k, v in (matrix.get("params") or {}).items())),
             ("load", f"{key} " + ", ".join(f"{x:g}" for x in matrix.get("levels") or [])
              + (" (a sweep per configuration)" if len(matrix.get("levels") or []) > 1 else "")),
             ("model", str(first.get("model") or ((first.get("levels") or [{}])[0]).get("model") or MISSING))]
    if matrix.get("server_env"):
        lines.append(("server env", ", ".join(f"{k}={v}" for k, v in matrix["server_env"].items())))
    lines.append(("tpsload", f"{matrix.get('tpsload_version')}, {matrix.get('started_at')}"
                             + (" — PARTIAL: " + str(matrix.get("stop_reason")) if matrix.get("partial") else "")))
    return lines
