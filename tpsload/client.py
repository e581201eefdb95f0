"""One request over aiohttp. Owns the socket and the clock.

The hot loop is: await bytes, stamp them, hand them to the decoder. The stamp is
taken before any parsing (METRICS.md "Timestamps").
"""

from __future__ import annotations

import asyncio
import ssl
from array import array
from time import perf_counter_ns
from typing import Any, Callable

import aiohttp

from .protocol import Decoded, StreamDecoder, decode_body, error_from_body
from .records import RequestRecord
from .tokens import apply_counts

_MAX_ERROR_BODY = 64 * 1024


def redact(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """Remove secrets from text a server may have echoed back (error bodies, messages)."""
    if not text:
        return text
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text


async def _on_reuse(session: Any, ctx: Any, params: Any) -> None:
    if ctx.trace_request_ctx is not None:
        ctx.trace_request_ctx.append(True)


def make_session(limit: int, timeout_s: float | None, insecure: bool,
                 force_close: bool = False) -> aiohttp.ClientSession:
    """One shared session; its pool holds at least one connection per concurrent request (0: no limit).

    `force_close` opens a connection per request: for servers that close the socket
    after a stream while claiming keep-alive (llama-server), where a pooled
    connection would be dead by the time it is reused.
    """
    ssl_ctx: Any = False if insecure else ssl.create_default_context()
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ssl=ssl_ctx,
                                     enable_cleanup_closed=False, ttl_dns_cache=None, force_close=force_close)
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_on_reuse)  # tells a stale pooled socket from a real reset
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        read_bufsize=1 << 18,  # one read buffer large enough for big chunks
        auto_decompress=True,
        trust_env=False,
        trace_configs=[trace],
    )


def _status_class(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


class Client:
    """Sends requests to one endpoint and fills their records."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool,
                 secrets: tuple[str, ...] = (), fresh_session: Callable[[], aiohttp.ClientSession] | None = None,
                 first_byte_timeout_s: float | None = None, max_response_bytes: int | None = None) -> None:
        self.session = session
        self.first_byte_timeout_s = first_byte_timeout_s
        self.max_response_bytes = max_response_bytes
        self.url = url
        self.headers = headers
        self.stream = stream
        self.secrets = secrets
        # Makes a session that opens a connection per request; switched to the first
        # time a pooled connection turns out to have been closed by the server.
        self._fresh_session = fresh_session
        self.sessions = [session]

    def _reconnect(self) -> None:
        if self._fresh_session is not None:
            self.session = self._fresh_session()
            self.sessions.append(self.session)
            self._fresh_session = None

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()

    async def send(self, rec: RequestRecord, body: bytes) -> None:
        """Send one request and fill `rec`. Never raises except CancelledError."""
        rec.stream = self.stream
        now = perf_counter_ns
        resp: aiohttp.ClientResponse | None = None
        closed_loop = rec.t_sched is None
        while True:
            reused: list[bool] = []
            rec.t_send = now()
            if closed_loop:
                rec.t_sched = rec.t_send
            try:
                req = self.session.post(self.url, data=body, headers=self.headers, trace_request_ctx=reused)
                if self.first_byte_timeout_s:
                    resp = await asyncio.wait_for(req, self.first_byte_timeout_s)
                else:
                    resp = await req
                break
            except aiohttp.ClientConnectorError as e:
                return self._fail(rec, "connect", f"cannot connect: {e.os_error or e}")
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # A pooled connection the server had closed after its last reply: nothing
                # was measured yet, so retry once on a fresh connection, transparently.
                # A fresh connection that fails is the server's failure, not retried.
                if reused and rec.retries == 0:
                    rec.retries = 1
                    self._reconnect()
                    continue
                return self._fail(rec, "disconnect", f"connection lost before the response: {e}")
            except asyncio.TimeoutError:
                return self._fail(rec, "timeout_first_byte", "no response before the first-byte timeout")
            except aiohttp.ClientError as e:
                return self._fail(rec, "connect", str(e) or e.__class__.__name__)
        rec.status = resp.status
        close = False
        try:
            if resp.status >= 400:
                rec.t_end = now()
                err = await resp.content.read(_MAX_ERROR_BODY)
                msg = f"HTTP {resp.status}: {error_from_body(err)}"
                if resp.headers.get("Retry-After"):
                    msg += f" (Retry-After: {resp.headers['Retry-After']})"
                return self._fail(rec, _status_class(resp.status), msg)
            if self.stream:
                await self._read_stream(resp, rec)
            else:
                raw = await resp.content.read(self.max_response_bytes + 1) if self.max_response_bytes \
                    else await resp.read()
                if self.max_response_bytes and len(raw) > self.max_response_bytes:
                    close = True
                    return self._fail(rec, "protocol", f"response larger than {self.max_response_bytes} bytes")
                rec.t_end = rec.t_last = now()
                self._finish(rec, decode_body(raw))
        except asyncio.TimeoutError:
            cls = "timeout_stream" if rec.t_first is not None else "timeout_first_byte"
            self._fail(rec, cls, "response not complete before the timeout")
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as e:
            close = True
            self._fail(rec, "disconnect", f"connection lost mid-response: {e}")
        finally:
            if close:
                resp.close()
            else:
                resp.release()

    async def _read_stream(self, resp: aiohttp.ClientResponse, rec: RequestRecord) -> None:
        now = perf_counter_ns
        read = resp.content.readany
        dec = StreamDecoder()
        feed = dec.feed
        budget = self.max_response_bytes or (1 << 62)
        try:
            while True:
                data = await read()
                ts = now()
                if not data:
                    break
                budget -= len(data)
                if budget < 0:
                    self._fail(rec, "protocol", f"response larger than {self.max_response_bytes} bytes")
                    resp.close()
                    break
                if not feed(ts, data):
                    break
            if rec.error_class is None:
                rec.t_end = ts
        finally:
            # On cancel or error too: keep what was measured before it.
            self._finish(rec, dec.close(perf_counter_ns()))

    def _finish(self, rec: RequestRecord, out: Decoded) -> None:
        if out.chunk_times:
            rec.chunk_times = array("q", out.chunk_times)
            rec.t_first = out.chunk_times[0]
            rec.t_last = out.chunk_times[-1]
            if out.chunk_usage:
                prev = 0
                k = array("q")
                for c in out.chunk_usage:
                    k.append(c - prev)
                    prev = c
                rec.chunk_tokens = k
        rec.content_chars = out.content_chars
        rec.reasoning_chars = out.reasoning_chars
        rec.finish_reason = out.finish_reason
        apply_counts(rec, out)
        if rec.error_class:
            return
        if out.error:
            self._fail(rec, "stream_error", out.error)
        elif out.protocol_error:
            self._fail(rec, "protocol", out.protocol_error)
        elif rec.stream and out.events == 0 and rec.t_end is not None:
            self._fail(rec, "protocol",
                       "streamed response carried no SSE events (does the server stream? try --no-stream)")

    def _fail(self, rec: RequestRecord, cls: str, msg: str) -> None:
        if rec.error_class is None:
            rec.error_class = cls
            rec.error = redact(msg, self.secrets)[:500] if msg else msg
