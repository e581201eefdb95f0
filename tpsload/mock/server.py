"""The bundled OpenAI-compatible mock server, with deterministic timing.

Token i of a request is written at `arrival + ttft + i * itl` on an absolute
schedule, so timing does not drift with sleep overshoot. With `--slots K` at most K
requests generate at once and the rest wait (like llama-server), and `--slowdown s`
stretches the time between tokens by s for every other busy slot, so the knee of a
sweep against the mock is known in advance. Like vLLM, a chat stream
sends its role-only chunk as soon as the request arrives, long before the first
token: a client that takes it for the first token fails the tests.

With `--close-after-stream` it behaves like llama-server: it claims keep-alive but
closes the connection after every streamed response. `--interrupt` behaves like
llama-cpp-python's default `--interrupt_requests True`: a running stream that sees another
request arrive sends `data: [DONE]` and closes without ending its chunked body. `--imitate
KIND` answers the routes and headers by which tpsload tells servers apart (servers.detect),
with that server's quirks where the mock can show them. `--eos-at N` makes the model end its
reply after N tokens unless the request forces the length with a flag the server honours.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from aiohttp import web

from tpsload.mock.faults import FaultPlan, FaultSpec

# requests kept in /mock/log (the latest): far more than a test or a benchmark reads
LOG_LIMIT = 100_000


@dataclass(frozen=True)
class MockConfig:
    host: str = "127.0.0.1"
    port: int = 0
    ttft_ms: float = 50.0
    itl_ms: float = 10.0
    tokens: int = 64
    model: str = "tpsload-mock"
    api_key: str | None = None
    close_after_stream: bool = False
    llama_props: int = 0  # > 0: answer /props like llama-server with this many slots
    n_ctx: int = 4096
    no_usage: bool = False  # never send usage (servers that do not support include_usage)
    tokens_per_chunk: int = 1  # > 1: after the first token, chunks carry this many tokens
    slots: int = 0  # > 0: at most this many requests generate at once; the rest queue (like llama-server)
    slowdown: float = 0.0  # each busy slot beyond the first stretches the time between tokens by this fraction
    faults: tuple[FaultSpec, ...] = ()
    stall_s: float = 30.0
    seed: int = 0
    metrics: bool = False  # serve /metrics with vLLM's names, from the mock's own counts
    metrics_delay_s: float = 0.0  # /metrics answers this late (a hanging endpoint)
    models_delay_s: float = 0.0  # /v1/models answers this late (a slow pre-connect)
    tls_cert: str | None = None  # serve https with this certificate (PEM) and key
    tls_key: str | None = None
    interrupt: bool = False  # end a running stream ([DONE], unfinished body) when another request arrives
    imitate: str | None = None  # one of IMITATE: its identifying routes, headers and quirks
    eos_at: int = 0  # > 0: replies end ("stop") after this many tokens unless forced to max_tokens
    tokenize: str | None = None  # a tokenize route: "llama" (/tokenize), "vllm" (/tokenize), "extras"
    drop_ignore_eos: bool = False  # ignore `ignore_eos` (as llama-cpp-python does); `min_tokens` still forces
    empty_replies: bool = False  # every reply carries no text (a model without a chat template)
    # a thinking model (chat only): the first `reasoning_tokens` tokens of a reply are reasoning, sent in
    # `reasoning_field` ("reasoning_content": llama.cpp, SGLang, older vLLM; "reasoning": newer vLLM, Ollama),
    # counted in usage.completion_tokens_details.reasoning_tokens unless `reasoning_usage` is off
    reasoning_tokens: int = 0
    reasoning_field: str = "reasoning_content"
    reasoning_usage: bool = True
    # prefill: TTFT grows by this much per prompt token (no prompt cache), so a conversation's later turns,
    # whose prompts repeat the earlier ones, start later
    prefill_ms_per_token: float = 0.0


# What each imitation answers (servers.detect reads the same things from real servers): its Server
# header, /v1/models' owned_by, the routes that name it, and its tokenize route.
IMITATE = {
    "llama-server": {"server": "llama.cpp", "owned_by": "llamacpp", "tokenize": "llama"},
    "llama-cpp-python": {"server": "uvicorn", "owned_by": "me", "tokenize": "extras"},
    "vllm": {"server": "uvicorn", "owned_by": "vllm", "tokenize": "vllm"},
    "sglang": {"server": "uvicorn", "owned_by": "sglang", "tokenize": None},
    "ollama": {"server": None, "owned_by": "library", "tokenize": None},
    "lmstudio": {"server": None, "owned_by": "organization_owner", "tokenize": None},
}
# a BOS token that llama-cpp-python's /extras/tokenize adds to any text
BOS = 2


def _chunk(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    return str(body.get("prompt", ""))


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, len(_prompt_text(body).split()))


class MockServer:
    def __init__(self, cfg: MockConfig) -> None:
        self.cfg = cfg
        self.requests = 0
        self.faults = FaultPlan(cfg.faults, cfg.seed)
        self.slots = asyncio.Semaphore(cfg.slots) if cfg.slots else None
        self.busy = 0
        self.stats = _Stats()
        self.arrivals = 0  # generation requests that arrived (--interrupt: a later one ends a running stream)
        self.kind = IMITATE.get(cfg.imitate or "", {})
        self.tokenize_route = cfg.tokenize or self.kind.get("tokenize")
        # per request: when it arrived and when its first/last token was written, on the
        # machine-wide monotonic clock, so tests can compare a client's stamps with the truth;
        # the last LOG_LIMIT requests only, so a soak run against the mock does not grow it forever
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/mock/log", self.get_log)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        if self.cfg.llama_props or self.cfg.imitate == "llama-server":
            app.router.add_get("/props", self.props)
        if self.cfg.metrics:
            app.router.add_get("/metrics", self.metrics)
        if self.tokenize_route in ("llama", "vllm"):
            app.router.add_post("/tokenize", self.tokenize)
        elif self.tokenize_route == "extras":
            app.router.add_post("/extras/tokenize", self.tokenize)
            app.router.add_post("/extras/tokenize/count", self.tokenize)
        imitate = self.cfg.imitate
        fixed = {
            "llama-cpp-python": [("/openapi.json", {"openapi": "3.1.0", "info": {
                "title": "\U0001f999 llama.cpp Python API", "version": "0.3.16"}})],
            "vllm": [("/version", {"version": "0.11.0"})],
            "sglang": [("/get_server_info", {"version": "0.5.3", "tp_size": 1}),
                       ("/get_model_info", {"model_path": self.cfg.model, "is_generation": True})],
            "ollama": [("/api/version", {"version": "0.12.6"})],
            "lmstudio": [("/api/v0/models", {"object": "list", "data": [
                {"id": self.cfg.model, "object": "model", "type": "llm", "publisher": "tpsload", "arch": "mock",
                 "state": "loaded", "max_context_length": self.cfg.n_ctx}]})],
        }.get(imitate or "", [])
        for path, body in fixed:
            app.router.add_get(path, _fixed(body))
        if self.kind.get("server"):
            async def server_header(request: web.Request, response: web.StreamResponse) -> None:
                response.headers["Server"] = self.kind["server"]

            app.on_response_prepare.append(server_header)
        return app

    async def tokenize(self, request: web.Request) -> web.Response:
        """One token per word, as the mock counts (llama.cpp, vLLM or llama-cpp-python's shape)."""
        body = await request.json()
        if self.tokenize_route == "extras":
            n = len(str(body.get("input", "")).split())
            tokens = [BOS] + list(range(10, 10 + n))  # llama-cpp-python adds BOS to any text
            if request.path.endswith("/count"):
                return web.json_response({"count": len(tokens)})
            return web.json_response({"tokens": tokens})
        text = str(body.get("content", body.get("prompt", "")))
        tokens = list(range(10, 10 + len(text.split())))
        if self.tokenize_route == "vllm":
            return web.json_response({"count": len(tokens), "max_model_len": self.cfg.n_ctx, "tokens": tokens})
        return web.json_response({"tokens": tokens})

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.cfg.api_key and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return web.json_response({"error": {"message": "Invalid API key", "type": "authentication_error",
                                                "code": 401}}, status=401)
        return None

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        if self.cfg.models_delay_s:
            await asyncio.sleep(self.cfg.models_delay_s)
        return self._auth(request) or web.json_response(
            {"object": "list", "data": [{"id": self.cfg.model, "object": "model",
                                         "owned_by": self.kind.get("owned_by", "tpsload")}]})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.log))

    async def props(self, request: web.Request) -> web.Response:
        return web.json_response({"total_slots": self.cfg.llama_props or 4, "model_path": "/mock/model.gguf",
                                  "build_info": "tpsload-mock",
                                  "default_generation_settings": {"n_ctx": self.cfg.n_ctx}})

    async def metrics(self, request: web.Request) -> web.Response:
        if self.cfg.metrics_delay_s:
            await asyncio.sleep(self.cfg.metrics_delay_s)
        return web.Response(text=self.stats.page(self.cfg.model), content_type="text/plain")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        denied = self._auth(request)
        if denied:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        st = self.stats
        t_in = perf_counter_ns()
        self.arrivals += 1
        st.waiting += 1
        queued = True
        try:
            if self.slots is not None:
                await self.slots.acquire()  # queued until a slot is free: the wait is part of TTFT
            st.waiting -= 1
            queued = False
            st.running += 1
            self.busy += self.slots is not None
            try:
                return await self._reply(request, body, chat, t_in)
            finally:
                self.busy -= self.slots is not None
                st.running -= 1
                if self.slots is not None:
                    self.slots.release()
        finally:
            if queued:
                st.waiting -= 1

    def _itl(self) -> float:
        return self.cfg.itl_ms / 1e3 * (1 + self.cfg.slowdown * max(0, self.busy - 1))

    async def _reply(self, request: web.Request, body: dict[str, Any], chat: bool,
                     t_in: int) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        arrival_ns = perf_counter_ns()
        self.requests += 1
        cfg = self.cfg
        fault = self.faults.pick(self.requests)
        n = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("n_predict") or cfg.tokens
        n = int(n)
        finish = "length"
        if cfg.eos_at and cfg.eos_at < n:
            # the model would stop here; llama-cpp-python drops ignore_eos but honours min_tokens
            honours_ignore_eos = cfg.imitate != "llama-cpp-python" and not cfg.drop_ignore_eos
            forced = int(body.get("min_tokens") or 0)
            if honours_ignore_eos and body.get("ignore_eos"):
                forced = n
            if forced < n:
                n, finish = max(cfg.eos_at, min(forced, n)), "stop"
        if cfg.empty_replies:
            n, finish = 0, "stop"
        my_arrival = self.arrivals
        no_usage = cfg.no_usage or (cfg.imitate == "llama-cpp-python" and bool(body.get("stream")))
        prompt = _prompt_tokens(body)
        ttft, itl = (cfg.ttft_ms + cfg.prefill_ms_per_token * prompt) / 1e3, self._itl()
        rid = f"mock-{self.requests}"
        created = int(time.time())
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        # reasoning is part of the reply's length, as on real servers: a tight max_tokens cuts the answer
        r = min(cfg.reasoning_tokens, n) if chat else 0
        if cfg.reasoning_tokens and chat and cfg.reasoning_usage:
            usage["completion_tokens_details"] = {"reasoning_tokens": r}
        kind = "chat.completion" if chat else "text_completion"
        # peer: the client's port, which tells one connection from another
        peer = request.transport.get_extra_info("peername")[1] if request.transport else None
        entry: dict[str, Any] = {"prompt": _prompt_text(body)[:200], "arrival_ns": arrival_ns, "n": n,
                                 "fault": fault, "peer": peer}
        self.log.append(entry)
        early = await self._early_fault(fault, request)
        if early is not None:
            return early
        st = self.stats
        st.prompt_tokens += usage["prompt_tokens"]
        st.queue_time.observe((arrival_ns - t_in) / 1e9)
        if not body.get("stream"):
            await asyncio.sleep(max(0.0, arrival + ttft + (n - 1) * itl - loop.time()))
            entry["first_ns"] = entry["last_ns"] = perf_counter_ns()
            st.ttft.observe((entry["first_ns"] - t_in) / 1e9)
            st.generated_tokens += n
            text = "".join(f" w{i}" for i in range(r, n))
            message = {"role": "assistant", "content": text}
            if r:
                message[cfg.reasoning_field] = "".join(f" r{i}" for i in range(r))
            choice = ({"index": 0, "message": message, "finish_reason": finish}
                      if chat else {"index": 0, "text": text, "finish_reason": finish})
            reply = {"id": rid, "object": kind, "created": created, "model": cfg.model, "choices": [choice]}
            if not no_usage:
                reply["usage"] = usage
            return web.json_response(reply)
        obj = kind + ".chunk" if chat else kind
        base = {"id": rid, "object": obj, "created": created, "model": cfg.model}
        # (seconds after the previous chunk's due time, or None: `k` inter-token gaps; k; bytes)
        chunks: list[tuple[float | None, int, bytes]] = []
        if chat:
            chunks.append((0.0, 0, _chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                     "content": ""},
                                                                  "finish_reason": None}]})))
        # the first token alone, then `tokens_per_chunk` at a time (vLLM's --stream-interval); no chunk
        # mixes reasoning and answer
        k = cfg.tokens_per_chunk
        groups = ([[0]] if n else []) + [list(range(i, min(b, i + k))) for a, b in ((1, r), (max(r, 1), n))
                                         for i in range(a, b, k)]
        continuous = bool((body.get("stream_options") or {}).get("continuous_usage_stats")) and not no_usage
        for g in groups:
            if g[0] < r:
                delta = {cfg.reasoning_field: "".join(f" r{i}" for i in g)}
            else:
                delta = {"content": "".join(f" w{i}" for i in g)}
            choice = ({"index": 0, "delta": delta, "finish_reason": None} if chat
                      else {"index": 0, "text": delta["content"], "finish_reason": None})
            obj = {**base, "choices": [choice]}
            if continuous:
                done = g[-1] + 1
                obj["usage"] = {**usage, "completion_tokens": done, "total_tokens": usage["prompt_tokens"] + done}
            chunks.append((ttft if g[0] == 0 else None, len(g), _chunk(obj)))
        m = len(groups)  # chunks that carry tokens
        first_token = 1 if chat else 0
        last = {"index": 0, "delta": {}, "finish_reason": finish} if chat else \
            {"index": 0, "text": "", "finish_reason": finish}
        chunks.append((0.0, 0, _chunk({**base, "choices": [last]})))
        if (body.get("stream_options") or {}).get("include_usage") and not no_usage:
            chunks.append((0.0, 0, _chunk({**base, "choices": [], "usage": usage})))
        if fault != "no_done":
            chunks.append((0.0, 0, b"data: [DONE]\n\n"))
        half = first_token + m // 2
        if fault == "slow_headers":
            return await self._raw_slow(request, chunks, entry, first_token)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        due = arrival
        for j, (gap, k, data) in enumerate(chunks):
            # absolute due times: a late wake-up does not delay the tokens after it
            due += k * self._itl() if gap is None else gap
            if j == half and fault in MID_STREAM:
                if await self._mid_fault(fault, request, resp):
                    return resp
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if j == first_token:
                entry["first_ns"] = perf_counter_ns()  # just before the bytes go to the socket
                st.ttft.observe((entry["first_ns"] - t_in) / 1e9)
            if first_token <= j < first_token + m:
                entry["last_ns"] = perf_counter_ns()
                st.generated_tokens += k
            await resp.write(data)
            if cfg.interrupt and self.arrivals > my_arrival and request.transport is not None:
                # llama-cpp-python --interrupt_requests True: [DONE], then the connection closes
                # before the chunked body's last chunk
                await resp.write(b"data: [DONE]\n\n")
                request.transport.close()
                return resp
        await resp.write_eof()
        if cfg.close_after_stream and request.transport is not None:
            request.transport.close()
        return resp

    async def _early_fault(self, fault: str | None, request: web.Request) -> web.StreamResponse | None:
        if fault == "http_500":
            return _error(500, "Internal server error (injected)")
        if fault == "http_503":
            return _error(503, "Loading model")
        if fault == "http_429":
            return _error(429, "Rate limit reached (injected)", headers={"Retry-After": "1"})
        if fault == "http_400":
            # a careless server echoing the credentials back: the client must not save them
            return _error(400, f"Bad request from {request.headers.get('Authorization', '-')}")
        if fault == "reset":
            _abort(request)
            return web.Response()  # never sent: the socket is gone
        if fault == "stall_first":
            await asyncio.sleep(self.cfg.stall_s)
        return None

    async def _mid_fault(self, fault: str, request: web.Request, resp: web.StreamResponse) -> bool:
        """Misbehave mid-stream. True when the response is over."""
        if fault == "disconnect":
            _abort(request)
            return True
        if fault == "stall_stream":
            await asyncio.sleep(self.cfg.stall_s)
            return False
        if fault == "malformed":
            await resp.write(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            return False
        if fault == "non_utf8":
            await resp.write(b'data: {"choices": [{"delta": {"content": "\xff\xfe\xfd"}}]}\n\n')
            return False
        if fault == "error_event":
            await resp.write(_chunk({"error": {"message": "out of memory (injected)", "type": "server_error",
                                               "code": 500}}))
            await resp.write_eof()
            return True
        if fault == "oversized":
            big = "x" * (4 * 1024 * 1024)
            await resp.write(_chunk({"choices": [{"index": 0, "delta": {"content": big}, "finish_reason": None}]}))
        return False

    async def _raw_slow(self, request: web.Request, chunks: list[tuple[float | None, int, bytes]],
                        entry: dict[str, Any],
                        first_token: int) -> web.StreamResponse:
        """Write the HTTP response by hand, headers one line every 0.2 s, then the events, then close."""
        transport = request.transport
        assert transport is not None
        head = [b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/event-stream\r\n", b"Connection: close\r\n",
                b"\r\n"]
        for line in head:
            transport.write(line)
            await asyncio.sleep(0.2)
        for j, (_, _, data) in enumerate(chunks):
            if j == first_token:
                entry["first_ns"] = perf_counter_ns()
            transport.write(data)
        entry["last_ns"] = perf_counter_ns()
        transport.close()
        return web.Response()


# vLLM's TTFT buckets (v1/metrics/loggers.py), so the mock's page reads like vLLM's
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: +Inf
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.sum += v
        for i, b in enumerate(self.bounds):
            if v <= b:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        acc = 0
        for b, c in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {acc}')
        out += [f"{name}_count{{{labels}}} {acc}", f"{name}_sum{{{labels}}} {self.sum}"]
        return out


class _Stats:
    """The mock's own counts, published on /metrics under vLLM's names (with --metrics)."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.queue_time = _Histogram(TTFT_BUCKETS)

    def page(self, model: str) -> str:
        lb = f'engine="0",model_name="{model}"'
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{lb}}} {self.running}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{lb}}} {self.waiting}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{{{lb}}} {self.prompt_tokens}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lb}}} {self.generated_tokens}",
            *self.ttft.lines("vllm:time_to_first_token_seconds", lb),
            *self.queue_time.lines("vllm:request_queue_time_seconds", lb),
        ]
        return "\n".join(lines) + "\n"


MID_STREAM = {"disconnect", "stall_stream", "malformed", "non_utf8", "error_event", "oversized"}


def _fixed(body: dict[str, Any]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    return handler


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    etype = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": etype, "code": status}}, status=status,
                             headers=headers)


def _abort(request: web.Request) -> None:
    """Close with a TCP reset (SO_LINGER 0), like a crashed or overloaded server."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        import socket
        import struct

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def serve(cfg: MockConfig, ready_line: bool = True) -> None:
    server = MockServer(cfg)
    # stopped, it drops what is still in flight: a handler asleep in a stall or a --metrics-delay would hold
    # the exit for aiohttp's default 60 s (and whoever stops it, for its SIGKILL timeout)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=0.25)
    await runner.setup()
    tls = None
    if cfg.tls_cert:
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    site = web.TCPSite(runner, cfg.host, cfg.port, backlog=1024, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if ready_line:
        # The parent (`tpsload run --mock`, tests) reads this line to learn the port.
        print(f"tpsload-mock listening on {'https' if tls else 'http'}://{cfg.host}:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(cfg: MockConfig) -> None:
    import signal

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        try:
            await serve(cfg)
        except asyncio.CancelledError:
            pass

    try:
        import uvloop

        uvloop.run(_main())
    except ImportError:
        asyncio.run(_main())
    sys.stdout.flush()
