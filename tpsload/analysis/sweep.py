"""Sweeps: the levels to run, and what the finished levels say. Pure.

Two verdicts for capacity planning: the saturation point (the smallest load whose
throughput is within a tolerance of the best) and the SLO frontier (the highest load
that meets every objective).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from tpsload.analysis.failures import DEFAULT_MAX_FAILED_SHARE
from tpsload.analysis.numbers import fmt
from tpsload.errors import TpsloadError


def parse_levels(text: str, flag: str, integer: bool) -> list[float]:
    """'1,2,4,8' or '1..64' (doubling from the first to the last) -> ascending levels."""
    try:
        if ".." in text:
            lo_s, hi_s = text.split("..", 1)
            lo, hi = float(lo_s), float(hi_s)
            if lo <= 0 or hi < lo:
                raise ValueError
            levels = []
            v = lo
            while v <= hi * (1 + 1e-9):
                levels.append(v)
                v *= 2
        else:
            levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TpsloadError(f"{flag} {text!r}: expected a list (1,2,4,8) or a doubling range (1..64)") from None
    if not levels or any(v <= 0 for v in levels):
        raise TpsloadError(f"{flag} {text!r}: levels must be positive")
    if integer:
        if any(v != int(v) for v in levels):
            raise TpsloadError(f"{flag} {text!r}: concurrency levels are whole numbers")
        levels = [int(v) for v in levels]
    return sorted(set(levels))


def name(key: str, value: float) -> str:
    """A level as people read it: 'concurrency 4', 'rate 0.5'."""
    return f"{key} {value:g}"


def too_many_failed(level: dict[str, Any]) -> str | None:
    """Why a level's numbers say little: more of its requests failed than --max-failed-share allows
    (a level saved by an older tpsload is judged by its error rate against the default share)."""
    said = (level.get("errors") or {}).get("too_many_failed")
    if said:
        return str(said)
    s = level["summary"]
    share = (level.get("config") or {}).get("max_failed_share", DEFAULT_MAX_FAILED_SHARE)
    rate = s.get("error_rate")
    if share is not None and rate is not None and rate > share:
        return f"{s['requests_failed']} of {s['requests_ok'] + s['requests_failed']} requests failed ({rate:.0%})"
    return None


def finished(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The levels that measured something: ran to the end, had successful requests, and no more
    failures than --max-failed-share. Only these enter the verdicts, and only these does --resume keep."""
    return [lv for lv in levels if not lv.get("partial") and lv["summary"]["requests_ok"] > 0
            and not too_many_failed(lv)]


def failed_levels(levels: Sequence[dict[str, Any]], key: str) -> list[str]:
    """The levels that ran to the end but whose requests (mostly) failed, as '<level> (<failed> of <n>)'."""
    out = []
    for lv in levels:
        s = lv["summary"]
        if lv.get("partial") or lv in finished([lv]) or not (s["requests_ok"] + s["requests_failed"]):
            continue
        out.append(f"{name(key, lv[key])} ({s['requests_failed']} of {s['requests_ok'] + s['requests_failed']} "
                   "failed)")
    return out


def level_failure(level: dict[str, Any], max_error_rate: float | None) -> str | None:
    """Why a level failed (the sweep then stops and exits 1), or None: it stopped early (a limit
    such as --max-errors, or the server went away), no request succeeded, its error rate is above
    --max-error-rate (a level too short for the runner to judge the rate during the run), or more
    of its requests failed than --max-failed-share allows (its numbers say little)."""
    s = level["summary"]
    if level.get("stop_reason"):
        return f"stopped early: {level['stop_reason']}"
    if s["requests_ok"] == 0:
        by_class = (level.get("errors") or {}).get("by_class") or {}
        detail = ", ".join(f"{k} {v}" for k, v in sorted(by_class.items()))
        return "every request failed" + (f" ({detail})" if detail else "") if s["requests_failed"] else \
            "no request finished"
    rate = s.get("error_rate")
    if max_error_rate is not None and rate is not None and rate > max_error_rate:
        return f"error rate {rate:.1%} is above --max-error-rate {max_error_rate:.1%}"
    return too_many_failed(level)


def throughput(result: dict[str, Any]) -> float:
    """A level's throughput for the verdicts: steady state where known (free of ramp-up and drain)."""
    s = result["summary"]
    v = s.get("steady_output_throughput")
    if v is None:  # 0.0 is a measured steady rate, not a missing one
        v = s.get("output_throughput")
    return float(v or 0.0)


def saturation(levels: Sequence[dict[str, Any]], key: str, tolerance: float) -> dict[str, Any] | None:
    """The smallest level whose throughput is within `tolerance` of the best level's."""
    done = finished(levels)
    failed = failed_levels(levels, key)
    not_judged = f"; not judged, most of their requests failed: {', '.join(failed)}" if failed else ""
    if not done:  # the sweep's stop_reason says which level failed
        return None
    best = max(done, key=throughput)
    best_t = throughput(best)
    knee = next(lv for lv in done if throughput(lv) >= (1 - tolerance) * best_t)
    t = throughput(knee)
    grows = knee is done[-1] and knee is best
    failed_above = failed and max(lv[key] for lv in levels) > done[-1][key]
    if grows and failed_above:
        text = (f"throughput grew up to {name(key, knee[key])} ({fmt(t, 0)} tok/s), the highest level whose "
                "requests succeeded; where it saturates is unknown")
    elif grows:
        text = (f"throughput was still growing at the highest level ({name(key, knee[key])}: {fmt(t, 0)} tok/s); "
                "sweep higher to find where it saturates")
    else:
        text = (f"throughput stops growing at {name(key, knee[key])}: {fmt(t, 0)} tok/s, within {tolerance:.0%} of "
                f"the best {fmt(best_t, 0)} tok/s (at {best[key]:g})")
    server = server_state(knee)
    if server and not grows:
        text += f"; the server there: {'; '.join(server)}"
    return {"level": knee[key], "throughput": t, "best_level": best[key], "best_throughput": best_t,
            "tolerance": tolerance, "saturated": not grows, "failed_levels": failed, "text": text + not_judged,
            "server": server}


def server_state(level: dict[str, Any]) -> list[str]:
    """What the server said it was doing at a level (queueing, KV cache, slots), from its own metrics."""
    lines = (level.get("server_metrics") or {}).get("text") or []
    return [line for line in lines if any(w in line for w in ("queue:", "KV cache", "slots", "batch"))]


def slo_frontier(levels: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The highest level meeting every objective (None when no SLOs were given)."""
    judged = [lv for lv in finished(levels) if lv.get("slo")]
    if not judged:
        return None
    meeting = [lv for lv in judged if lv["slo"]["all_met"]]
    if not meeting:
        missed = [o["slo"] for o in judged[0]["slo"]["objectives"] if not o["met"]]
        return {"level": None, "text": f"no level met every SLO (lowest, {name(key, judged[0][key])}, missed "
                                       f"{', '.join(missed)})"}
    top = meeting[-1]
    nxt = next((lv for lv in judged if lv[key] > top[key]), None)
    why = ""
    if nxt is not None:
        why = f"; {name(key, nxt[key])} missed " + ", ".join(o["slo"] for o in nxt["slo"]["objectives"]
                                                            if not o["met"])
    return {"level": top[key], "throughput": throughput(top), "goodput": top["summary"].get("goodput"),
            "text": f"the most load that meets every SLO is {name(key, top[key])} "
                    f"({fmt(throughput(top), 0)} tok/s){why}"}


def should_stop(levels: Sequence[dict[str, Any]], tolerance: float) -> str | None:
    """Stop early once throughput has not grown for two levels and the last level missed an SLO
    (or no SLOs were given). Returns the reason, or None to go on."""
    done = finished(levels)
    if len(done) < 3:
        return None
    before = max(throughput(lv) for lv in done[:-2])
    flat = all(throughput(lv) <= before * (1 + tolerance) for lv in done[-2:])
    last = done[-1]
    missed = last.get("slo") is None or not last["slo"]["all_met"]
    if flat and missed:
        return ("throughput stopped growing for two levels" +
                (" and SLOs were missed" if last.get("slo") else "") + " (--no-early-stop runs every level)")
    return None


# Config fields that change neither what is sent nor how it is measured: a resumed sweep may differ
# in these. Every other field of the run's config must match (new fields are compared by default).
RESUME_FREE = frozenset({
    "save_prompts",  # an output file
    "label", "tags",  # names for reports
    "workers", "ray_address", "ray_spread",  # where the load comes from, not what it is
    "grace_s",  # only shapes a level ended by Ctrl-C, and --resume runs such a level again
    "insecure", "api_key_set", "url_auth_set",  # how the server is reached, not what it is asked
    "server_metrics_s",  # what is read from the server beside the load, not the load
    "max_failed_share",  # judges the levels, shapes none
})


def resume_mismatch(saved: dict[str, Any], mine: dict[str, Any], ignore: Iterable[str] = ()) -> str | None:
    """The first config field (RunConfig.public() names) in which a saved sweep differs from this one,
    as 'field=saved, this one field=mine', or None. A field the saved file lacks (an older tpsload)
    is not compared; nor is base_url between two --mock sweeps (each mock gets a fresh port)."""
    mine = json.loads(json.dumps(mine, default=str))  # tuples as lists, as the saved file has them
    skip = RESUME_FREE | set(ignore)
    if saved.get("mock") and mine.get("mock"):
        skip |= {"base_url"}
    for k, v in mine.items():
        if k not in skip and k in saved and saved[k] != v:
            return f"{k}={saved[k]!r}, this one {k}={v!r}"
    return None


CSV_COLUMNS = (
    "level", "concurrency", "rate", "partial", "requests_ok", "requests_failed", "duration_s", "output_throughput",
    "steady_output_throughput", "request_throughput", "concurrency_achieved", "error_rate", "goodput",
    "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_latency_p50_ms",
    "e2e_latency_p99_ms", "decode_tps_p50", "send_lag_p99_ms", "slo_all_met", "client_bound",
)


def csv_row(level: dict[str, Any], key: str) -> dict[str, Any]:
    """One level as a flat row (CSV and the console table read the same numbers)."""
    s = level["summary"]

    def d(name: str, stat: str) -> Any:
        v = s.get(name)
        return v[stat] if v else None

    return {
        "level": level[key], "concurrency": level.get("concurrency"), "rate": level.get("rate"),
        "partial": bool(level.get("partial")), "requests_ok": s["requests_ok"],
        "requests_failed": s["requests_failed"], "duration_s": s["duration_s"],
        "output_throughput": s["output_throughput"], "steady_output_throughput": s["steady_output_throughput"],
        "request_throughput": s["request_throughput"], "concurrency_achieved": s["concurrency_achieved"],
        "error_rate": s["error_rate"], "goodput": s.get("goodput"),
        "ttft_p50_ms": d("ttft_ms", "p50"), "ttft_p99_ms": d("ttft_ms", "p99"),
        "tpot_p50_ms": d("tpot_ms", "p50"), "tpot_p99_ms": d("tpot_ms", "p99"),
        "itl_p50_ms": d("itl_ms", "p50"), "itl_p99_ms": d("itl_ms", "p99"),
        "e2e_latency_p50_ms": d("e2e_latency_ms", "p50"), "e2e_latency_p99_ms": d("e2e_latency_ms", "p99"),
        "decode_tps_p50": d("decode_tps", "p50"), "send_lag_p99_ms": d("send_lag_ms", "p99"),
        "slo_all_met": level["slo"]["all_met"] if level.get("slo") else None,
        "client_bound": level["client_health"]["client_bound"],
    }
