"""Calibration against the lean server: the whole TTFT path, request half included (issue 12)."""

import asyncio
import json
import socket
import threading
import time
import urllib.request
from time import perf_counter_ns

import pytest

from tpsload.app import calibrate as accuracy
from tpsload.mock import MockProcess


def lean_log(server):
    with urllib.request.urlopen(server.base_url.rsplit("/v1", 1)[0] + "/log", timeout=10) as r:
        return json.load(r)["requests"]


def read_response(sock):
    """One chunked response, to its terminating chunk."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        got = sock.recv(65536)
        assert got, "connection closed mid-response"
        data += got
    return data


def test_lean_server_logs_arrival_at_the_last_byte_and_names_requests():
    with MockProcess(module="tpsload.mock.lean", ttft_ms=30, itl_ms=1, tokens=3) as server:
        body = json.dumps({"messages": [{"role": "user", "content": "by prompt"}], "max_tokens": 3}).encode()
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-7\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        with socket.create_connection(("127.0.0.1", int(server.base_url.split(":")[2].split("/")[0]))) as s:
            s.sendall(head + body[:10])
            time.sleep(0.05)  # not a synchronisation: a gap, so the request cannot be whole before it
            t_last_byte = perf_counter_ns()
            s.sendall(body[10:])
            read_response(s)
            t_read = perf_counter_ns()
            # the same connection, no id header: named by its prompt
            s.sendall(head.replace(b"X-Request-Id: rid-7\r\n", b"") + body)
            read_response(s)
            for _ in range(30):  # its timers are never early (uvloop's alone can be, by up to 1 ms)
                s.sendall(head + body)
                read_response(s)
        log = lean_log(server)
    (rid, arrival, first, last, n), (rid2, *_rest) = log[:2]
    assert rid == "rid-7" and rid2 == "by prompt" and n == 3
    # one clock: the arrival is the last byte's, not the headers'; the server's own TTFT is its 30 ms
    assert t_last_byte <= arrival < t_last_byte + 100e6, (arrival - t_last_byte) / 1e6
    assert 30e6 <= first - arrival < 100e6 and first <= last <= t_read
    ttfts = [(e[2] - e[1]) / 1e6 for e in log]
    assert len(ttfts) == 32 and min(ttfts) >= 30.0, sorted(ttfts)[:3]


class DelayProxy:
    """A TCP proxy that holds every byte towards the server `delay_s` (the other way: at once).

    A known, purely request-side delay: calibration must put all of it in the request half.
    """

    def __init__(self, port, delay_s):
        self.upstream_port, self.delay = port, delay_s
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)

    def _main(self):
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self):
        self.stopping = asyncio.Event()
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await self.stopping.wait()
        server.close()
        await server.wait_closed()

    async def _conn(self, cr, cw):
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        loop = asyncio.get_running_loop()

        async def delayed(reader, writer):
            q = asyncio.Queue()

            async def send():
                while (item := await q.get()) is not None:
                    due, data = item
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    writer.write(data)
                writer.close()

            sender = loop.create_task(send())
            while data := await reader.read(65536):
                q.put_nowait((loop.time() + self.delay, data))
            q.put_nowait(None)
            await sender

        async def direct(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
            writer.close()

        await asyncio.gather(delayed(cr, uw), direct(ur, cw), return_exceptions=True)


def test_calibration_puts_a_request_side_delay_in_the_request_half():
    delay_ms = 30.0
    sc = accuracy.Scenario("proxy", 4, 8, ttft_ms=20, itl_ms=2, tokens=8)
    with accuracy.lean_server(sc) as server, \
            DelayProxy(int(server.base_url.split(":")[2].split("/")[0]), delay_ms / 1e3) as proxy:
        r = accuracy.measure(sc, f"http://127.0.0.1:{proxy.port}/v1", server.base_url.rsplit("/v1", 1)[0] + "/log")
    assert r["requests_ok"] == 8
    req, resp, full = r["request_half_ms"], r["response_half_ms"], r["ttft_error_ms"]
    # every request waited the proxy's 30 ms on its way in, and nothing more than a few ms besides
    assert delay_ms <= req["p50"] and req["mean"] < delay_ms + 15, req
    # ... while the way back is untouched, and the full error is the two halves
    assert resp["mean"] < 8, resp
    assert full["mean"] == pytest.approx(req["mean"] + resp["mean"], abs=1e-6)
    assert 20 <= r["server_ttft_ms"]["p50"] < 30  # the server's own TTFT does not include the proxy


def test_calibration_cold_and_warm_on_the_lean_server():
    cold = accuracy.run(accuracy.Scenario("cold", 4, 8, ttft_ms=20, itl_ms=2, tokens=8))
    warm = accuracy.run(accuracy.Scenario("warm", 4, 8, ttft_ms=20, itl_ms=2, tokens=8, warmup=4))
    for r in (cold, warm):
        assert r["requests_ok"] == 8  # warm-up requests are not compared
        # causal on one clock: the server cannot have a request before we send it, nor we a token before it
        assert r["request_half_ms"]["mean"] > 0 and r["response_half_ms"]["mean"] > 0
        assert r["ttft_error_ms"]["p99"] < 50 and r["client_cpu_us_per_request"] > 0
        assert r["verdict_missed"] == (r["ttft_error_ms"]["mean"] > accuracy.HONEST_MEAN_MS and not r["client_bound"])
    assert warm["scenario"]["warmup"] == 4 and cold["scenario"]["warmup"] == 0


def _fake(n_log, log_ids):
    sc = accuracy.Scenario("unit", 1, n_log)
    records = [{"index": i, "ok": True, "warmup": False} for i in range(n_log)]
    log = {"requests": [[rid, 0, 0, 0, 1] for rid in log_ids]}
    return sc, records, log


def test_matching_is_one_to_one_or_fails():
    sc, records, log = _fake(2, [accuracy.REQUEST_ID.format(1), "probe", accuracy.REQUEST_ID.format(0)])
    pairs = accuracy.match(sc, records, log)
    assert [e[0] for _, e in pairs] == [accuracy.REQUEST_ID.format(0), accuracy.REQUEST_ID.format(1)]
    sc, records, log = _fake(2, [accuracy.REQUEST_ID.format(0)])
    with pytest.raises(RuntimeError, match="not logged"):
        accuracy.match(sc, records, log)
    sc, records, log = _fake(2, [accuracy.REQUEST_ID.format(0), accuracy.REQUEST_ID.format(1),
                                 accuracy.REQUEST_ID.format(1)])
    with pytest.raises(RuntimeError, match="logged twice"):
        accuracy.match(sc, records, log)
