"""The server's own metrics during the run: scraped beside the load, summarised over the measured window.

`MetricsScraper` polls `<root>/metrics` (and llama-server's `/slots`) on its own
task, its own session and its own timeout, so a slow or hanging endpoint only loses
samples and never delays a measured request. Each sample is stamped with
`perf_counter_ns()` when the response arrived: the clock every request record uses.

Parsing waits until the run is over: a vLLM page is ~40 KB and prometheus_client's
parser takes ~10 ms of CPU on it, which on the client's event loop would delay the
stamps of the very requests being measured. During the run a scrape costs one GET
and a fast zlib compression of the body.

`server_metrics(scrape, t_start, t_end, ...)` turns what was collected into the
result's `server_metrics`: counters as increases over the window, gauges as
mean/max, histograms as quantiles of the window's bucket increases, a cross-check
of the server's generated tokens against ours, and a few lines in words.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Iterable, Sequence

import aiohttp

from tpsload.config import RunConfig, server_root
from tpsload.servers import maps, prom
from tpsload.servers.maps import COUNTER, GAUGE, HISTOGRAM, ServerMap

QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Scrape:
    """What a scraper collected, unparsed: bodies with their arrival stamps (perf_counter_ns)."""

    url: str
    interval_s: float
    available: bool = False  # /metrics answered with Prometheus text
    hint: str | None = None  # why there is nothing, in one line for the user
    metrics: list[tuple[int, bytes]] = field(default_factory=list)  # (t_ns, zlib-compressed body)
    slots: list[tuple[int, bytes]] = field(default_factory=list)  # llama-server /slots: (t_ns, zlib(body))
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by reason: timeout, connect, http_500, ...

    def body(self, i: int) -> bytes:
        return zlib.decompress(self.metrics[i][1])


class MetricsScraper:
    """Polls the server's /metrics (and /slots) every `interval_s` until `stop()`.

        scraper = MetricsScraper(root, headers, interval_s=1.0)
        hint = await scraper.start()      # probes; one sample before the load
        ...the measured run...
        scrape = await scraper.stop()     # one sample after the load
    """

    def __init__(self, root_url: str, headers: dict[str, str] | None = None, interval_s: float = 1.0,
                 timeout_s: float | None = None, insecure: bool = False, llama_cpp: bool = False) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.root = root_url.rstrip("/")
        # the run's auth, not its body type: a GET carries no JSON
        self.headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
        self.interval_s = interval_s
        # a scrape never outlives its tick by much: a hanging endpoint costs samples, not time
        self.timeout_s = timeout_s if timeout_s is not None else min(max(interval_s, 0.5), 5.0)
        self.insecure = insecure
        self.llama_cpp = llama_cpp
        self.scrape = Scrape(url=self.root + "/metrics", interval_s=interval_s)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._metrics_on = False
        self._slots_on = False

    @classmethod
    def for_run(cls, cfg: RunConfig, interval_s: float = 1.0, llama_cpp: bool = False) -> MetricsScraper:
        return cls(server_root(cfg.target.base_url), cfg.request_headers(), interval_s=interval_s,
                   insecure=cfg.target.insecure, llama_cpp=llama_cpp)

    async def start(self) -> str | None:
        """Probe /metrics and /slots (the first sample) and start polling. Returns the hint, if any."""
        # A connection per scrape: llama-server's HTTP library keeps one of its few threads on a
        # keep-alive connection until it closes, a thread the load may need. Once a second, a new
        # loopback connection costs nothing worth measuring.
        connector = aiohttp.TCPConnector(limit=2, force_close=True, ssl=False if self.insecure else True)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        status, body = await self._scrape_metrics()
        if status == 200 and body is not None and _is_prometheus(body):
            self._metrics_on = self.scrape.available = True
        elif status is None and self.scrape.failures.get("timeout"):
            # there, but slow: keep trying; a slow endpoint only loses samples
            self._metrics_on = True
        else:
            if self.scrape.metrics:
                self.scrape.metrics.clear()
            self.scrape.hint = self._hint(status, body)
        slots_status = await self._scrape_slots()
        self._slots_on = slots_status == 200
        if self._slots_on and self.scrape.hint and not self.llama_cpp:
            self.scrape.hint = self._hint(status, body, llama=True)
        if self._metrics_on or self._slots_on:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self.scrape.hint

    async def stop(self) -> Scrape:
        """Stop polling, take one last sample (the window's end is covered), close the session."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            await self._tick()
        if self._session is not None:
            await self._session.close()
            self._session = None
        return self.scrape

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._tick()  # one scrape at a time: the next waits for this one (or its timeout)
            due += self.interval_s
            now = loop.time()
            if due < now:  # ticks missed while a scrape hung are skipped, not made up
                due = now + self.interval_s - (now - due) % self.interval_s

    async def _tick(self) -> None:
        if self._metrics_on:
            await self._scrape_metrics()
        if self._slots_on:
            await self._scrape_slots()

    async def _get(self, path: str) -> tuple[int | None, bytes | None, int]:
        assert self._session is not None
        try:
            async with self._session.get(self.root + path, headers=self.headers,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                t = perf_counter_ns()  # the response arrived: the server's state is from just before
                body = await r.read()
                self.scrape.attempts += path == "/metrics"
                return r.status, body, t
        except asyncio.TimeoutError:
            reason = "timeout"
        except aiohttp.ClientConnectionError:
            reason = "connect"
        except aiohttp.ClientError:
            reason = "protocol"
        if path == "/metrics":  # a scrape cut short by stop() is neither an attempt nor a failure
            self.scrape.attempts += 1
            self.scrape.failures[reason] += 1
        return None, None, 0

    async def _scrape_metrics(self) -> tuple[int | None, bytes | None]:
        status, body, t = await self._get("/metrics")
        if status == 200 and body is not None:
            self.scrape.metrics.append((t, zlib.compress(body, 1)))
        elif status is not None:
            self.scrape.failures[f"http_{status}"] += 1
        return status, body

    async def _scrape_slots(self) -> int | None:
        status, body, t = await self._get("/slots")
        if status == 200 and body is not None and body.lstrip()[:1] == b"[":
            self.scrape.slots.append((t, zlib.compress(body, 1)))
            return 200
        return status if status != 200 else None

    def _hint(self, status: int | None, body: bytes | None, llama: bool = False) -> str:
        said = "did not answer" if status is None else (
            f"answered HTTP {status}" if status != 200 else "answered with something that is not Prometheus text")
        if status in (401, 403):
            return f"server metrics: {self.root}/metrics refused our API key (HTTP {status}); none collected"
        text = (body or b"")[:500].decode("utf-8", "replace")
        if llama or self.llama_cpp or "--metrics" in text:
            how = maps.LLAMA_CPP.enable_hint
        elif "sglang" in text.lower():
            how = maps.SGLANG.enable_hint
        else:
            how = maps.GENERIC_HINT
        return f"server metrics: /metrics {said}; {how}"


def _is_prometheus(body: bytes) -> bool:
    try:
        return bool(prom.parse(body.decode("utf-8", "replace")))
    except ValueError:
        return False


# --- after the run: parse and summarise ------------------------------------------------------

@dataclass
class Series:
    """The scalar samples of every scrape, aligned: values[key][i] belongs to t_ns[i] (None: absent)."""

    t_ns: list[int]
    values: dict[prom.Key, list[float | None]]
    server: ServerMap | None


def parse_series(scrape: Scrape) -> Series:
    """Every scrape's non-bucket samples under the detected server's prefix, in one aligned table."""
    server: ServerMap | None = None
    rows: list[tuple[int, dict[prom.Key, float]]] = []
    for i, (t, _) in enumerate(scrape.metrics):
        body = scrape.body(i)
        if server is None:
            try:
                server = maps.detect({k[0] for k in prom.parse(prom.select(body, maps.PREFIXES, buckets=False))})
            except ValueError:
                continue
            if server is None:
                break  # Prometheus text, but none of the servers we know
        try:
            rows.append((t, prom.parse(prom.select(body, (server.prefix,), buckets=False))))
        except ValueError:
            continue  # one garbled page is one lost sample
    keys: dict[prom.Key, None] = {}
    for _, row in rows:
        keys.update(dict.fromkeys(row))
    values = {k: [row.get(k) for _, row in rows] for k in keys if not k[0].endswith("_created")}
    return Series([t for t, _ in rows], values, server)


def _full(scrape: Scrape, t: int, server: ServerMap) -> dict[prom.Key, float]:
    """The complete sample (buckets included) taken at t."""
    for i, (ti, _) in enumerate(scrape.metrics):
        if ti == t:
            try:
                return prom.parse(prom.select(scrape.body(i), (server.prefix,), buckets=True))
            except ValueError:
                return {}
    return {}


def _slots_series(scrape: Scrape) -> tuple[list[int], list[int], list[int]]:
    ts, busy, total = [], [], []
    for t, raw in scrape.slots:
        try:
            slots = json.loads(zlib.decompress(raw))
        except ValueError:
            continue
        if not isinstance(slots, list):
            continue
        ts.append(t)
        total.append(len(slots))
        busy.append(sum(1 for s in slots if isinstance(s, dict) and (s.get("is_processing") or s.get("state") == 1)))
    return ts, busy, total


def _combined(series: Series, names: Sequence[str], across: str) -> tuple[str, list[float | None]] | None:
    """The first raw name present, its label sets combined (sum or max) per sample."""
    for name in names:
        cols = [v for k, v in series.values.items() if k[0] == name]
        if not cols:
            continue
        out: list[float | None] = []
        for i in range(len(series.t_ns)):
            present = [c[i] for c in cols if c[i] is not None]
            out.append(None if not present else (sum(present) if across == "sum" else max(present)))  # type: ignore
        return name, out
    return None


def _num(x: float | None, nd: int = 3) -> float | int | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if float(x).is_integer():
        return int(x)
    return round(x, nd)


def measured_window(records: Iterable[Any]) -> tuple[int, int] | None:
    """(first t_send, last t_end) of the measured requests: the window the run's summary covers."""
    sends = [r.t_send for r in records if not r.warmup and r.t_send is not None]
    ends = [r.t_end or r.t_done for r in records if not r.warmup and (r.t_end or r.t_done)]
    if not sends or not ends:
        return None
    return min(sends), max(ends)


def server_metrics(scrape: Scrape, t_start_ns: int, t_end_ns: int, *, client_output_tokens: int | None = None,
                   client_requests: Iterable[tuple[int, int]] | None = None,
                   client_ttft_ms: dict[str, Any] | None = None, concurrency: int | None = None,
                   t0_ns: int | None = None) -> dict[str, Any]:
    """The result's `server_metrics` for the window [t_start_ns, t_end_ns] (perf_counter_ns).

    The server's counters are read at the samples that bracket the window, so its
    token count covers whatever finished between them. `client_requests`, (t_end_ns,
    output_tokens) of every finished request, warm-up included, lets the cross-check
    count ours over exactly that span; `client_output_tokens` is the plain total.
    """
    t0 = t0_ns if t0_ns is not None else t_start_ns
    out: dict[str, Any] = {"server": None, "url": scrape.url, "interval_s": scrape.interval_s,
                           "available": scrape.available, "samples": None, "summary": {}, "text": [],
                           "warnings": []}
    if scrape.hint:
        out["hint"] = scrape.hint
        out["text"].append(scrape.hint)
    series = parse_series(scrape)
    s_t, s_busy, s_total = _slots_series(scrape)
    if scrape.available and series.server is None and series.t_ns == []:
        out["text"].append("server metrics: /metrics has none of llama.cpp's, vLLM's or SGLang's metrics; "
                           "nothing mapped")
    out["available"] = bool(series.t_ns)
    if not series.t_ns and not s_t:
        if scrape.failures and not scrape.hint:
            out["warnings"].append(_failures_line(scrape))
        return out
    sm = series.server
    out["server"] = sm.server if sm else ("llama.cpp" if s_t else None)
    rel = [_num((t - t0) / 1e6, 1) for t in series.t_ns]
    samples: dict[str, Any] = {"t0_ns": t0, "t_ms": rel,
                               "series": {prom.key_str(k): [_num(v) for v in vals]
                                          for k, vals in series.values.items()}}
    summary: dict[str, Any] = {}
    window_s = max((t_end_ns - t_start_ns) / 1e9, 1e-9)
    b = prom.bracket(series.t_ns, t_start_ns, t_end_ns)
    if b is not None:
        i0, i1 = b
        summary["window"] = {
            "t_start_ms": _num((t_start_ns - t0) / 1e6, 1), "t_end_ms": _num((t_end_ns - t0) / 1e6, 1),
            "from_ms": rel[i0], "to_ms": rel[i1], "duration_s": _num(window_s),
            "samples_inside": sum(1 for t in series.t_ns if t_start_ns <= t <= t_end_ns),
            "covered": series.t_ns[i0] <= t_start_ns and series.t_ns[i1] >= t_end_ns,
        }
    mapped_series: dict[str, list[Any]] = {}
    resets = []
    if sm is not None and b is not None:
        i0, i1 = b
        full0 = full1 = None
        for m in sm.meanings:
            if m.kind == HISTOGRAM:
                for name in m.raw:
                    if full0 is None:
                        full0 = _full(scrape, series.t_ns[i0], sm)
                        full1 = _full(scrape, series.t_ns[i1], sm)
                    h = prom.histogram_delta(full0, full1 or {}, name)
                    if h is None:
                        continue
                    summary[m.key + "_ms"] = _histogram_summary(name, h)
                    if h["reset"]:
                        resets.append(name)
                    break
                continue
            found = _combined(series, m.raw, m.across)
            if found is None:
                continue
            name, vals = found
            mapped_series[m.key] = [_num(v) for v in vals]
            if m.kind == COUNTER:
                delta, reset = prom.increase(vals, i0, i1)
                if reset:
                    resets.append(name)
                if delta is not None:
                    summary[m.key] = {"raw": name, "delta": _num(delta), "per_s": _num(delta / window_s, 2)}
            elif m.kind == GAUGE:
                g = prom.gauge_stats(series.t_ns, vals, t_start_ns, t_end_ns)
                if g is not None:
                    summary[m.key] = {"raw": name, **{k: _num(v) for k, v in g.items()}}
        _prefix_cache(summary, sm)
    if s_t:
        samples["slots"] = {"t_ms": [_num((t - t0) / 1e6, 1) for t in s_t], "busy": s_busy, "total": s_total}
        g = prom.gauge_stats(s_t, [float(x) for x in s_busy], t_start_ns, t_end_ns)
        summary["slots"] = {"raw": "/slots is_processing", "total": max(s_total), "busy_mean": _num(g["mean"]) if g
                            else None, "busy_max": _num(g["max"]) if g else None}
    samples["mapped"] = mapped_series
    out["samples"] = samples
    gen = (summary.get("generated_tokens") or {}).get("delta")
    if client_requests is not None and b is not None:
        lo, hi = series.t_ns[b[0]], series.t_ns[b[1]]
        client_output_tokens = sum(n for t, n in client_requests if lo < t <= hi)
    if client_output_tokens is not None and gen is not None:
        match = int(gen) == int(client_output_tokens)
        summary["cross_check"] = {"server_generated_tokens": gen, "client_output_tokens": client_output_tokens,
                                  "match": match}
        if not match:
            out["warnings"].append(
                f"the server counted {gen:,} generated tokens over the run, we counted {client_output_tokens:,} "
                f"output tokens ({summary['generated_tokens']['raw']} vs the sum of output_tokens): other clients "
                "on the server, requests outside the measured window, or token counts that are not the server's")
    if resets:
        out["warnings"].append(f"server counters went backwards during the run ({', '.join(sorted(set(resets)))}): "
                               "did the server restart? Increases are counted from the restart")
    if scrape.failures and not scrape.hint:
        out["warnings"].append(_failures_line(scrape))
    if summary.get("window") and not summary["window"]["covered"]:
        out["warnings"].append("server metrics cover the run only in part (no sample before its start or after "
                               "its end): counts over the window may be short")
    out["summary"] = summary
    out["text"] += describe(out["server"], summary, client_ttft_ms, concurrency)
    return out


def _histogram_summary(name: str, h: dict[str, Any]) -> dict[str, Any]:
    count = h["count"]
    d: dict[str, Any] = {"raw": name, "n": _num(count), "mean": _num(h["sum"] / count * 1e3, 2) if count else None}
    for q in QUANTILES:
        v = prom.histogram_quantile(q, h["buckets"])
        d[f"p{round(q * 100)}"] = None if v is None else _num(v * 1e3, 2)
    return d


def _prefix_cache(summary: dict[str, Any], sm: ServerMap) -> None:
    """One hit rate, from whatever the server counts: lookups and hits, cached prompt tokens, or its own gauge."""
    q, h = summary.get("prefix_cache_queries"), summary.get("prefix_cache_hits")
    cached, prompt = summary.get("prompt_tokens_cached"), summary.get("prompt_tokens")
    if q and h and q["delta"]:
        summary["prefix_cache_hit_rate"] = {"raw": [h["raw"], q["raw"]], "value": _num(h["delta"] / q["delta"], 4)}
    elif cached and prompt:
        whole = prompt["delta"] + (0 if sm.prompt_includes_cached else cached["delta"])
        if whole:
            summary["prefix_cache_hit_rate"] = {"raw": [cached["raw"], prompt["raw"]],
                                                "value": _num(cached["delta"] / whole, 4)}
    elif summary.get("prefix_cache_hit_rate") and "mean" in summary["prefix_cache_hit_rate"]:
        g = summary["prefix_cache_hit_rate"]
        summary["prefix_cache_hit_rate"] = {"raw": [g["raw"]], "value": g["mean"]}


def _failures_line(scrape: Scrape) -> str:
    reasons = ", ".join(f"{n} {r}" for r, n in scrape.failures.most_common())
    lost = sum(scrape.failures.values())
    return (f"server metrics: {lost} of {scrape.attempts} scrapes of /metrics failed ({reasons}); "
            "the series has gaps")


def describe(server: str | None, s: dict[str, Any], client_ttft_ms: dict[str, Any] | None = None,
             concurrency: int | None = None) -> list[str]:
    """A few lines that say what the server was doing."""
    lines: list[str] = []
    name = {"llama.cpp": "llama-server", "vllm": "vLLM", "sglang": "SGLang"}.get(server or "", "the server")
    gen, prompt = s.get("generated_tokens"), s.get("prompt_tokens")
    if gen:
        line = f"server ({name}): {gen['delta']:,} tokens generated in the run ({gen['per_s']:,.1f}/s)"
        if prompt:
            line += f", {prompt['delta']:,} prompt tokens"
            cached = s.get("prompt_tokens_cached")
            if cached and cached["delta"]:
                line += f" ({cached['delta']:,} more from its cache)" if server == "llama.cpp" else \
                    f" ({cached['delta']:,} from its cache)"
        lines.append(line)
    parts: list[str] = []
    waiting, running, slots = s.get("requests_waiting"), s.get("requests_running"), s.get("slots")
    if waiting and waiting["max"]:
        q = f"server queue: up to {waiting['max']:,} requests waiting, mean {waiting['mean']:.1f}"
        n_slots = slots["total"] if slots else None
        if server == "llama.cpp" and n_slots:
            want = concurrency or ((running or {}).get("max", 0) + waiting["max"])
            q += f" (llama-server deferred them: {n_slots} slots for {want} requests)"
        parts.append(q)
    elif waiting:
        top = f"; up to {running['max']} running" if running else ""
        parts.append(f"server queue: no request waited{top}")
    kv = s.get("kv_cache_usage")
    if kv and kv.get("max") is not None:
        parts.append(f"KV cache peaked at {kv['max'] * 100:.0f} %")
    pre = s.get("preemptions")
    if pre and pre["delta"]:
        parts.append(f"{pre['delta']:,} requests preempted (KV cache full)")
    if not running and slots and slots.get("busy_max") is not None:
        parts.append(f"llama-server slots: up to {slots['busy_max']} of {slots['total']} busy, "
                     f"mean {slots['busy_mean']:.1f}")
    if parts:
        lines.append("; ".join(parts))
    hit = s.get("prefix_cache_hit_rate")
    if hit and hit.get("value") is not None:
        lines.append(f"prefix cache hit rate {hit['value'] * 100:.0f} %")
    ttft = s.get("ttft_ms")
    if ttft and ttft.get("p50") is not None:
        line = f"server TTFT p50 {ttft['p50']:,.0f} ms, p99 {ttft['p99']:,.0f} ms (its own histogram)"
        if client_ttft_ms and client_ttft_ms.get("p50") is not None:
            gap = client_ttft_ms["p50"] - ttft["p50"]
            line += (f"; ours p50 {client_ttft_ms['p50']:,.0f} ms, p99 {client_ttft_ms['p99']:,.0f} ms: "
                     f"{gap:+,.0f} ms between the server and us at the median")
        lines.append(line)
    qt = s.get("queue_time_ms")
    if qt and qt.get("p50") is not None:
        lines.append(f"server queue time p50 {qt['p50']:,.0f} ms, p99 {qt['p99']:,.0f} ms")
    return lines


# --- during the run: the few gauges the live view shows ---------------------------------------

LIVE_GAUGES = ("requests_running", "requests_waiting", "kv_cache_usage")
_LIVE_NAMES = {raw: m for s in maps.SERVERS for k in LIVE_GAUGES if (m := s.meaning(k)) is not None for raw in m.raw}


def latest_gauges(scrape: Scrape) -> tuple[int, dict[str, float]] | None:
    """(its stamp, the server's queue and KV cache by meaning) in the latest sample; None before one.

    Only those lines are parsed (a regex picks them out first), so this costs the event loop well
    under a millisecond, not the ~10 ms of a whole page."""
    if not scrape.metrics:
        return None
    t = scrape.metrics[-1][0]
    try:
        samples = prom.parse(prom.select(scrape.body(-1), tuple(_LIVE_NAMES), buckets=False))
    except ValueError:
        return t, {}
    out: dict[str, float] = {}
    for key in LIVE_GAUGES:
        for raw, m in _LIVE_NAMES.items():
            vals = [v for (name, _), v in samples.items() if name == raw and m.key == key and not math.isnan(v)]
            if vals and key not in out:
                out[key] = sum(vals) if m.across == "sum" else max(vals)
    return t, out
