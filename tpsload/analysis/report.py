"""Results -> the content of a shareable report (tables as rows of text). Pure.

export/html.py and export/markdown.py render the same content, so the two formats
never disagree.
"""

from __future__ import annotations

from typing import Any, Sequence

from tpsload.analysis import compare as cmp
from tpsload.analysis.sweep import csv_row

DISTS = (("TTFT", "ttft_ms", "ms"), ("ITL", "itl_ms", "ms"), ("TPOT", "tpot_ms", "ms"),
         ("E2E latency", "e2e_latency_ms", "ms"), ("Decode speed", "decode_tps", "tok/s"))
LEVEL_COLUMNS = (("level", "level"), ("ok", "requests_ok"), ("failed", "requests_failed"),
                 ("out tok/s", "output_throughput"), ("steady tok/s", "steady_output_throughput"),
                 ("TTFT p50 ms", "ttft_p50_ms"), ("TTFT p99 ms", "ttft_p99_ms"), ("TPOT p50 ms", "tpot_p50_ms"),
                 ("TPOT p99 ms", "tpot_p99_ms"), ("SLOs met", "slo_all_met"))


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


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
    if r.get("kind") == "sweep":
        lines.append(("sweep", f"{r['key']} levels {', '.join(fmt(lv[r['key']]) for lv in r['levels'])}"))
    else:
        load = f"rate {c.get('rate')}/s" if c.get("rate") else f"concurrency {c.get('concurrency')}"
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
             for label, key, unit in DISTS]
    slo = [[o["slo"], fmt(o["value"]), "met" if o["met"] else "MISSED"]
           for o in ((r.get("slo") or {}).get("objectives") or [])]
    h = r["client_health"]
    health = "client-bound: " + "; ".join(h["reasons"]) if h["client_bound"] else \
        f"client ok (CPU {h['cpu_share']:.0%})"
    return {"top": top, "dists": dists, "slo": slo, "health": health}


def level_rows(sweep: dict[str, Any]) -> list[list[str]]:
    return [[fmt(csv_row(lv, sweep["key"])[k]) for _, k in LEVEL_COLUMNS] for lv in sweep["levels"]]


def comparison(named: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each later result against the first (runs only; sweeps level by level)."""
    if len(named) < 2:
        return []
    (bname, base), out = named[0], []
    for oname, other in named[1:]:
        why = cmp.incomparable(base, other)
        if base.get("kind") == "sweep" and other.get("kind") == "sweep":
            lb, lo = cmp.levels(base), cmp.levels(other)
            pairs = [(f"{base['key']} {k:g}", lb[k], lo[k]) for k in sorted(set(lb) & set(lo))]
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
