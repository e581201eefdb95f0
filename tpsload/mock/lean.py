"""A lean streaming server with exact, recorded send times: the truth for `make bench` and `calibrate`.

Unlike the feature-rich mock, it does almost nothing per token: a raw asyncio protocol,
HTTP/1.1 keep-alive with chunked bodies, and one prebuilt frame written per token at
its absolute due time. It records, per request, when the request arrived (the moment its
last byte was read) and when its first and last token were written (perf_counter_ns:
CLOCK_MONOTONIC, machine-wide, the client's clock too), and its own CPU time, so a
benchmark can split the client's TTFT error into the request's half (client send ->
arrival) and the response's half (first-token write -> client stamp), and see when the
server itself is the bottleneck. GET /log returns the record; each request is named by
its X-Request-Id header, or else by its prompt (the last message's content), so the
client needs to add nothing to be matched.

    python -m tpsload.mock.lean --port 0 --ttft-ms 100 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import deque
from time import perf_counter_ns
from typing import Any, Callable

# requests kept in GET /log (the latest): far more than a benchmark or calibration run reads
LOG_LIMIT = 100_000


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


TOKEN = _frame(b'data: {"choices":[{"index":0,"delta":{"content":" w"},"finish_reason":null}]}\n\n')
ROLE = _frame(b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n')
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n\r\n")


def _tail(n: int, prompt_tokens: int) -> bytes:
    usage = {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                      "total_tokens": prompt_tokens + n}}
    return _frame(b"data: " + json.dumps(usage).encode() + b"\n\n") + _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"


def _json_response(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


class LeanServer:
    def __init__(self, ttft_ms: float, itl_ms: float, tokens: int) -> None:
        self.ttft = round(ttft_ms * 1e6)  # ns, on perf_counter's clock
        self.itl = round(itl_ms * 1e6)
        self.tokens = tokens
        # [request id, arrival_ns, first_ns, last_ns, n] of the latest LOG_LIMIT requests: a soak runs for hours
        self.log: deque[list[Any]] = deque(maxlen=LOG_LIMIT)
        self.cpu0 = time.process_time()

    def protocol(self) -> "LeanProtocol":
        return LeanProtocol(self)


class LeanProtocol(asyncio.Protocol):
    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # a request arrives when its last byte has been read: this read, for whatever it completes
        now = perf_counter_ns()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            rid = None
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "x-request-id":
                    rid = value.strip()
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.handle(head.split(" ", 2), body, now, rid)

    def handle(self, request_line: list[str], body: bytes, arrival_ns: int, rid: str | None) -> None:
        t = self.transport
        assert t is not None
        path = request_line[1] if len(request_line) > 1 else "/"
        srv = self.server
        if request_line[0] == "GET":
            if path.startswith("/log"):
                t.write(_json_response({"requests": list(srv.log), "cpu_s": time.process_time() - srv.cpu0}))
            elif path.endswith("/models"):
                t.write(_json_response({"object": "list", "data": [{"id": "lean", "object": "model"}]}))
            else:
                t.write(_json_response({"status": "ok"}))
            return
        req = json.loads(body)
        msgs = req.get("messages")
        tag = msgs[-1]["content"] if msgs else req.get("prompt", "")
        n = int(req.get("max_tokens") or srv.tokens)
        entry = [rid or tag[:64], arrival_ns, None, None, n]
        srv.log.append(entry)
        t.write(HEAD + ROLE)
        tail = _tail(n, len(tag.split()))
        due = arrival_ns + srv.ttft
        if srv.itl <= 0:
            _at(due, self.burst, entry, n, tail)
        else:
            _at(due, self.token, entry, 0, n, due, tail)

    def token(self, entry: list[Any], i: int, n: int, due: int, tail: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        now = perf_counter_ns()
        if i == 0:
            entry[2] = now
        entry[3] = now
        t.write(TOKEN if i < n - 1 else TOKEN + tail)
        if i + 1 < n:
            due += self.server.itl  # absolute schedule: lateness does not accumulate
            _at(due, self.token, entry, i + 1, n, due, tail)

    def burst(self, entry: list[Any], n: int, tail: bytes) -> None:
        """ITL 0: every token as fast as the socket takes them (the client's ingest ceiling)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        entry[2] = perf_counter_ns()
        t.write(TOKEN * (n - 1))
        entry[3] = perf_counter_ns()
        t.write(TOKEN + tail)


def _at(due_ns: int, fn: Callable[..., None], *args: Any) -> None:
    """fn(*args) at `due_ns` (perf_counter_ns), never before. The loops' clock is perf_counter's
    (CLOCK_MONOTONIC, in seconds), but uvloop rounds a timer to whole milliseconds of a cached reading that
    lags the real one, so a timer set for the instant itself fires up to a millisecond early (a 30 ms TTFT
    was written after 29.46 ms): it is set half a millisecond late, and one that is early all the same is
    set again."""
    asyncio.get_running_loop().call_at(due_ns / 1e9 + 0.0005, _when_due, due_ns, fn, args)


def _when_due(due_ns: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    if perf_counter_ns() < due_ns:
        asyncio.get_running_loop().call_later(0.001, _when_due, due_ns, fn, args)
    else:
        fn(*args)


async def serve(host: str, port: int, ttft_ms: float, itl_ms: float, tokens: int) -> None:
    loop = asyncio.get_running_loop()
    srv = LeanServer(ttft_ms, itl_ms, tokens)
    server = await loop.create_server(srv.protocol, host, port, backlog=4096)
    print(f"tpsload-lean listening on http://{host}:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttft-ms", type=float, default=100.0)
    ap.add_argument("--itl-ms", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=256)
    a = ap.parse_args(argv)
    coro = serve(a.host, a.port, a.ttft_ms, a.itl_ms, a.tokens)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
