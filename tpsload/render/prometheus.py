"""--serve-metrics [HOST:]PORT: the run's live numbers (core.live.LiveStats) as Prometheus metrics, so a
soak run shows in Grafana beside the server's own.

The page is built from the LiveStats when it is scraped (a custom collector: nothing is kept twice) and
served by prometheus_client's WSGI app on a thread of its own; a scrape costs that thread a few
milliseconds of the GIL, not the event loop a turn. The endpoint opens before the run (a port in
use is a one-line error) and closes after the result is written; with a linger it waits, at most that
long, for one scrape of the final numbers first.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from tpsload.core.live import HISTOGRAMS, LiveStats
from tpsload.errors import TpsloadError

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: the numbers say what the server can take
HELP = {
    "ttft": "Time to first token of successful measured requests (METRICS.md ttft_ms), seconds.",
    "itl": "Inter-token latency: each gap between output chunks spread over its tokens (itl_ms), seconds.",
    "tpot": "Time per output token after the first, per request (tpot_ms), seconds.",
    "e2e_latency": "End-to-end latency, send to last token, per request (e2e_latency_ms), seconds.",
}


def parse_address(value: str) -> tuple[str, int]:
    """'9464' -> (loopback, 9464); 'HOST:PORT' and '[v6]:PORT' as given."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535 or (sep and not host):
        raise TpsloadError(f"--serve-metrics {value!r}: expected [HOST:]PORT, e.g. 9464 or 0.0.0.0:9464")
    return host, n


class LiveCollector(Collector):
    """The LiveStats as metric families, read at each scrape."""

    def __init__(self, live: LiveStats) -> None:
        self.live = live
        self.final_scraped = threading.Event()  # a scrape's answer with the final numbers was sent whole
        self._served = threading.local()  # per scrape (each is answered on a thread of its own): was it final

    def collect(self) -> Iterator[Any]:
        final = self.live.final
        t = self.live.totals()
        c = t.counts
        v = self.live.view()
        req = CounterMetricFamily("tpsload_requests", "Measured requests finished, by outcome (warm-up left out).",
                                  labels=["outcome"])
        for outcome, n in (("ok", c.ok), ("failed", c.failed), ("cancelled", c.cancelled)):
            req.add_metric([outcome], n)
        yield req
        err = CounterMetricFamily("tpsload_request_errors", "Failed measured requests by error class (METRICS.md).",
                                  labels=["error_class"])
        for cls, n in sorted(c.by_class.items()):
            err.add_metric([cls], n)
        yield err
        yield CounterMetricFamily("tpsload_warmup_requests", "Warm-up requests finished.", value=c.warmup_done)
        yield CounterMetricFamily("tpsload_output_tokens", "Output tokens of successful measured requests, as the "
                                  "server counted them (output chunks where it sent no count).",
                                  value=c.output_tokens)
        yield CounterMetricFamily("tpsload_prompt_tokens", "Prompt tokens of successful measured requests, as the "
                                  "server counted them.", value=c.prompt_tokens)
        for name in HISTOGRAMS:
            h = t.histograms[name]
            yield HistogramMetricFamily(f"tpsload_{name}_seconds", HELP[name],
                                        buckets=[("+Inf" if b == float("inf") else repr(b), n)
                                                 for b, n in h.cumulative()], sum_value=h.sum)
        yield GaugeMetricFamily("tpsload_requests_in_flight", "Requests sent and not yet finished (warm-up included).",
                                value=c.in_flight)
        lag = GaugeMetricFamily("tpsload_client_loop_lag_p99_seconds", "The client's event-loop lag p99 over the "
                                f"last {v.window_s:g} s (client-bound above 5 ms).")
        if v.loop_lag_p99_ms is not None:
            lag.add_metric([], v.loop_lag_p99_ms / 1e3)
        yield lag
        cpu = GaugeMetricFamily("tpsload_client_cpu_share", "tpsload's CPU over the last window, of one core.")
        if v.cpu_share is not None:
            cpu.add_metric([], v.cpu_share)
        yield cpu
        slow = GaugeMetricFamily("tpsload_client_slow_send_share", "Share of the last window's requests the client "
                                 "wrote over 1 ms after they were due.")
        if v.slow_send_share is not None:
            slow.add_metric([], v.slow_send_share)
        yield slow
        yield GaugeMetricFamily("tpsload_client_bound", "1 while the last window is over one of the client's health "
                                "limits (loop lag, CPU, send delay).", value=1 if v.client_bound else 0)
        yield GaugeMetricFamily("tpsload_run_finished", "1 once the load is over: the counters are final.",
                                value=1 if final else 0)
        self._served.final = final

    def sent(self) -> None:
        """This thread's scrape has been answered whole: if it had the final numbers, the run may end (had it
        ended on collect(), the process could exit while the answer was still being written)."""
        if getattr(self._served, "final", False):
            self.final_scraped.set()


class _Quiet(WSGIRequestHandler):
    collector: LiveCollector | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass

    def handle(self) -> None:
        super().handle()  # the request answered, the answer written
        if self.collector is not None:
            self.collector.sent()


class MetricsEndpoint:
    """The HTTP server for one run command's metrics; a context manager."""

    def __init__(self, live: LiveStats, host: str, port: int) -> None:
        self.collector = LiveCollector(live)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server_class = type("Server", (ThreadingMixIn, WSGIServer), {"daemon_threads": True,
                                                                          "address_family": family})
            handler = type("Handler", (_Quiet,), {"collector": self.collector})
            self.server = make_server(host, port, make_wsgi_app(registry), server_class, handler_class=handler)
        except OSError as e:
            raise TpsloadError(f"--serve-metrics {host}:{port}: {e.strerror or e}") from None
        self.port = self.server.server_port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, name="tpsload-metrics", daemon=True)
        self.thread.start()

    def linger(self, seconds: float) -> bool:
        """Keep serving until the final numbers have been scraped once, at most `seconds` (Ctrl-C ends it)."""
        if seconds <= 0:
            return self.collector.final_scraped.is_set()
        try:
            return self.collector.final_scraped.wait(seconds)
        except KeyboardInterrupt:
            return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> MetricsEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
