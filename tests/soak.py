"""`make soak`: does tpsload's memory stay flat over a long run? (A benchmark, not a test.)

One `tpsload run` subprocess at -c 256 for --minutes against the lean server (its own process;
256-token replies at 50 tokens/s a stream after a 100 ms TTFT: ~12k tokens/s, ~48 requests/s),
with tpsload's resident memory (VmRSS) and CPU read from /proc every few seconds. Prints, per
minute, the RSS at the minute's end and the CPU used in it, then the growth from minute 1 to the
last minute and the peak RSS. Exit 1 when growth passes --max-growth or the peak passes --max-rss-mb
(issue 17: within 10 % between minute 1 and 10, under 150 MB).

    python tests/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tpsload.mock.launch import MockProcess

TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` in MB (VmRSS), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def soak(minutes: float, concurrency: int, ttft_ms: float, itl_ms: float, tokens: int, sample_s: float,
         extra: list[str]) -> dict[str, object]:
    with MockProcess(module="tpsload.mock.lean", ttft_ms=ttft_ms, itl_ms=itl_ms, tokens=tokens) as server, \
            tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "soak.json")
        argv = [sys.executable, "-m", "tpsload", "run", "--base-url", server.base_url, "-c", str(concurrency),
                "--duration", f"{minutes * 60:g}s", "--max-tokens", str(tokens), "--model", "lean", "-q",
                "--no-server-metrics", "--json", out, *extra]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        per_minute: list[dict[str, float]] = []
        peak = 0.0
        last_cpu = 0.0
        next_minute = 60.0
        rss = None
        while p.poll() is None:
            time.sleep(sample_s)
            now_rss, now_cpu = rss_mb(p.pid), cpu_s(p.pid)
            if now_rss is None or now_cpu is None:
                break
            rss = now_rss
            peak = max(peak, now_rss)
            if time.monotonic() - t0 >= next_minute and len(per_minute) < int(minutes):
                per_minute.append({"minute": len(per_minute) + 1, "rss_mb": now_rss,
                                   "cpu_share": (now_cpu - last_cpu) / 60})
                print(f"minute {len(per_minute):3d}: RSS {now_rss:6.1f} MB, CPU {(now_cpu - last_cpu) / 60:4.0%} "
                      "of a core", flush=True)
                last_cpu = now_cpu
                next_minute += 60.0
        err = p.communicate()[1]
        if p.returncode != 0:
            raise SystemExit(f"tpsload failed ({p.returncode}): {err[-800:]}")
        with open(out) as fh:
            result = json.load(fh)
    s = result["summary"]
    first, last = (per_minute[0]["rss_mb"], per_minute[-1]["rss_mb"]) if per_minute else (rss, rss)
    return {"minutes": per_minute, "first_rss_mb": first, "last_rss_mb": last,
            "growth": (last - first) / first if first else None, "peak_rss_mb": peak,
            "requests_ok": s["requests_ok"], "output_tokens_total": s["output_tokens_total"],
            "output_throughput": s["output_throughput"], "client_bound": result["client_health"]["client_bound"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("-c", "--concurrency", type=int, default=256)
    ap.add_argument("--ttft-ms", type=float, default=100.0)
    ap.add_argument("--itl-ms", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--sample-s", type=float, default=2.0, help="RSS is sampled this often for the peak.")
    ap.add_argument("--max-growth", type=float, default=0.10)
    ap.add_argument("--max-rss-mb", type=float, default=150.0)
    ap.add_argument("--json", metavar="PATH", help="Also write the numbers as JSON.")
    a, extra = ap.parse_known_args()
    r = soak(a.minutes, a.concurrency, a.ttft_ms, a.itl_ms, a.tokens, a.sample_s, extra)
    growth = r["growth"]
    print(f"{r['requests_ok']:,} requests, {r['output_tokens_total']:,} output tokens "
          f"({r['output_throughput']:,.0f} tok/s), client-bound: {r['client_bound']}")
    print(f"RSS minute 1 -> {len(r['minutes'])}: {r['first_rss_mb']:.1f} -> {r['last_rss_mb']:.1f} MB "
          f"({growth:+.1%}); peak {r['peak_rss_mb']:.1f} MB")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=2)
    if growth is not None and growth > a.max_growth or r["peak_rss_mb"] > a.max_rss_mb:
        print(f"FAIL: growth over {a.max_growth:.0%} or peak over {a.max_rss_mb:g} MB")
        sys.exit(1)


if __name__ == "__main__":
    main()
