"""One request over aiohttp. Owns the socket and the clock.

The hot loop is: await bytes, stamp them, hand them to the decoder. The stamp is
taken before any parsing (METRICS.md "Timestamps").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import weakref
from array import array
from contextvars import ContextVar
from functools import partial
from time import perf_counter_ns
from typing import Any, Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

try:
    from aiohttp.client_proto import ResponseHandler  # for the tap's self-test only
except ImportError:  # a later aiohttp: _tap_problem() says so, and streams are read the public way
    ResponseHandler = None  # type: ignore[assignment,misc]

from tpsload.config import RunConfig, redact
from tpsload.core import eager
from tpsload.core.tokens import apply_counts
from tpsload.protocol.openai import Decoded, StreamDecoder, decode_body, error_from_body
from tpsload.records import ConnectionUse, ErrorClass, RequestRecord

_MAX_ERROR_BODY = 64 * 1024
READ_BUFSIZE = 1 << 18  # one read buffer large enough for big chunks
# pre-connect: each connection is opened by a GET of the API's model list, answered within this
PRECONNECT_TIMEOUT_S = 30.0

# The record of the request this task is sending, for the session's hooks below to stamp its phases
# (a task's context is copied into the tasks it starts, so aiohttp's body writer sees it too).
_CURRENT: ContextVar[RequestRecord | None] = ContextVar("tpsload_request", default=None)

# Phases are stamped by subclassing the connector, request and response classes (each a documented
# extension point of ClientSession), not with a TraceConfig: once any TraceConfig is set, aiohttp builds a
# parameter object and awaits a signal for each of about six events of every request, listened to or
# not (~15 µs of CPU a request here).


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector; stamps when a request has its connection in hand, and whether it is new."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._known: weakref.WeakSet[Any] = weakref.WeakSet()
        self.opened = 0  # connections opened so far, for any request or the pre-connect

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        t = perf_counter_ns()
        proto = conn.protocol
        if proto in self._known:
            use = ConnectionUse.REUSED
        else:
            self._known.add(proto)
            self.opened += 1
            use = ConnectionUse.NEW
        rec = _CURRENT.get()
        if rec is not None:
            rec.t_connected = t
            rec.connection = use
        return conn


class _Request(aiohttp.ClientRequest):
    """Stamps when the request's last byte was handed to the socket, and has it handed over at once
    (used where requests go through ClientSession.post rather than the direct path, _Direct).

    aiohttp writes the body on a task of its own, made from this coroutine (its signature differs across
    aiohttp versions, hence *args). On Python 3.11 that task starts only after every task already due: when
    a wave of requests ends together (a batch finishing in one decode step), every new request's bytes
    would wait until the whole wave's requests were built, ~0.15 ms each. So the coroutine is started here,
    in the sending task (core.eager): a small body is on the wire before the next request is built."""

    def write_bytes(self, *args: Any, **kw: Any) -> Any:  # a coroutine, as aiohttp's: it makes a task of it
        coro = self._write_stamped(*args, **kw)
        return eager.start(coro) if EAGER_WRITES else coro

    async def _write_stamped(self, *args: Any, **kw: Any) -> None:
        await super().write_bytes(*args, **kw)
        rec = _CURRENT.get()
        if rec is not None:
            rec.t_written = perf_counter_ns()


class _Response(aiohttp.ClientResponse):
    """Stamps when the response's status line and headers were read."""

    async def start(self, connection: Any) -> Any:
        resp = await super().start(connection)
        rec = _CURRENT.get()
        if rec is not None:
            rec.t_headers = perf_counter_ns()
        return resp


def make_session(limit: int, timeout_s: float | None, insecure: bool,
                 force_close: bool = False) -> aiohttp.ClientSession:
    """One shared session; its pool holds at least one connection per concurrent request (0: no limit).

    `force_close` opens a connection per request: for servers that close the socket
    after a stream while claiming keep-alive (llama-server), where a pooled
    connection would be dead by the time it is reused.
    """
    # True: aiohttp's own verified default context, made once at its import (loading a CA store
    # again costs ~25 ms of CPU)
    ssl_ctx: Any = False if insecure else True
    connector = _Connector(limit=limit, limit_per_host=0, ssl=ssl_ctx, enable_cleanup_closed=False,
                           ttl_dns_cache=None, force_close=force_close)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        read_bufsize=READ_BUFSIZE,
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # a load test keeps no cookies: none to store or filter per request
        request_class=_Request,
        response_class=_Response,
    )


def _status_class(status: int) -> ErrorClass:
    if status == 429:
        return ErrorClass.HTTP_429
    return ErrorClass.HTTP_5XX if status >= 500 else ErrorClass.HTTP_4XX


# Where a stream's bytes go while aiohttp's parser delivers them (see _Tap).
_TAPS: dict[int, "_Sink"] = {}


class _Stop(Exception):
    """The sink refuses more data: the stream failed (error event, bad data, too large)."""


class _Sink:
    """Receives a stream's bytes with their arrival stamps and decodes them on the spot."""

    __slots__ = ("dec", "budget", "error", "stop", "t_eof", "limit")

    def __init__(self, limit: int | None) -> None:
        self.dec = StreamDecoder()
        self.limit = limit
        self.budget = limit or (1 << 62)
        self.error: str | None = None
        self.stop = False
        self.t_eof: int | None = None

    def __call__(self, ts: int, data: bytes) -> None:
        if self.stop:
            return
        self.budget -= len(data)
        if self.budget < 0:
            # decode exactly the first `limit` bytes, however the reads were split; a failure within them
            # (an error event, bad data) came first in the stream and is the reason, as it is when those
            # bytes arrive in a read of their own
            self.stop = True
            if len(data) + self.budget > 0 and not self.dec.feed(ts, data[:len(data) + self.budget]):
                return
            self.error = f"response larger than {self.limit} bytes"
        elif not self.dec.feed(ts, data):
            self.stop = True  # the decoder has the reason (stream_error or protocol)


class _Tap(aiohttp.StreamReader):
    """aiohttp's reader, with data handed to a sink instead of buffered for a read() call.

    Installed by swapping the class of a response's reader (same slots, no new state), and
    only for streams; the sink is found by the reader's id.
    """

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        sink = _TAPS.get(id(self))
        if sink is None:
            return super().feed_data(data, size)
        if data and not sink.stop:
            sink(perf_counter_ns(), data)  # stamp first: the moment the bytes reached us
            if sink.stop:
                self.set_exception(_Stop())
        return False

    def feed_eof(self) -> None:
        sink = _TAPS.get(id(self))
        if sink is not None:
            sink.t_eof = perf_counter_ns()
        super().feed_eof()


def _tap_problem() -> str | None:
    """Why the tap cannot read streams with the installed aiohttp; None when it can.

    The tap leans on aiohttp internals that no release promises to keep: the response's
    reader is a StreamReader whose class can be swapped; the parser hands it the body
    through feed_data(data, size) and ends with feed_eof(); wait_eof() returns at feed_eof()
    or raises what set_exception() set; read_nowait() returns what came with the headers;
    and a response keeps its total timeout in `_timer`. Checked once per process, on a
    reader with no socket (well under a millisecond), so an aiohttp that changed any of it
    is read through the public readany() loop instead of misread.
    """
    if os.environ.get("TPSLOAD_READ_LOOP") == "1":
        return "TPSLOAD_READ_LOOP=1"
    where = f"aiohttp {aiohttp.__version__}"
    for name in ("feed_data", "feed_eof", "wait_eof", "read_nowait", "is_eof", "exception", "set_exception"):
        if not callable(getattr(aiohttp.StreamReader, name, None)):
            return f"{where}: StreamReader has no {name}()"
    if ResponseHandler is None:
        return f"{where}: no aiohttp.client_proto.ResponseHandler to check its StreamReader with"
    if "timer" not in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        return f"{where}: ClientResponse takes no timer (the tap keeps the total timeout through resp._timer)"
    loop = asyncio.new_event_loop()
    try:
        # readers as a response gets them: on aiohttp's own protocol (here without a connection)
        protocol = ResponseHandler(loop)
        return _tap_selftest(aiohttp.StreamReader(protocol, 1 << 16, loop=loop), fail=False) \
            or _tap_selftest(aiohttp.StreamReader(protocol, 1 << 16, loop=loop), fail=True)
    except Exception as e:  # any surprise in aiohttp's reader: the public loop is the safe way
        return f"{where}: its StreamReader cannot be tapped ({e.__class__.__name__}: {e})"
    finally:
        loop.close()


def _tap_selftest(reader: aiohttp.StreamReader, fail: bool) -> str | None:
    """One stream through a tapped reader, driven by hand (no loop runs): ends at eof, or
    (`fail`) with the sink refusing data, which must wake the waiter with _Stop."""
    where = f"aiohttp {aiohttp.__version__}"
    reader.__class__ = _Tap  # TypeError when the reader's layout is not _Tap's
    sink = _Sink(8 if fail else None)
    _TAPS[id(reader)] = sink
    waiting = reader.wait_eof()
    try:
        parked = waiting.send(None)  # the eof future it waits on, as _tap_stream does
        reader.feed_data(b"data: {}\n\n", 10)
        if fail:
            if not isinstance(reader.exception(), _Stop) or not parked.done():
                return f"{where}: StreamReader.set_exception() did not wake wait_eof()"
            try:
                waiting.send(None)
            except _Stop:
                return None
            return f"{where}: StreamReader.wait_eof() did not raise what set_exception() set"
        if sink.dec.out.events != 1 or reader.read_nowait():
            return f"{where}: StreamReader.feed_data() did not reach the tap"
        reader.feed_eof()
        if not parked.done():
            return f"{where}: StreamReader.wait_eof() did not return at feed_eof()"
        with contextlib.suppress(StopIteration):
            waiting.send(None)
        if sink.t_eof is None or not reader.is_eof():
            return f"{where}: StreamReader.feed_eof() did not reach the tap"
        return None
    finally:
        _TAPS.pop(id(reader), None)
        waiting.close()


# None: streams are read by the tap; else why they are read by the public readany() loop
TAP_PROBLEM = _tap_problem()


def _deferred_writes() -> bool:
    """Whether aiohttp writes a request on a task that runs only after every task already due (all but
    Python 3.12+ with aiohttp 3.10+, which start that task eagerly): in a wave of sends, each request's
    last byte then waits for the whole wave to be built."""
    try:
        version = tuple(int(x) for x in aiohttp.__version__.split(".")[:2])
    except ValueError:
        return True
    return sys.version_info < (3, 12) or version < (3, 10)


DEFERRED_WRITES = _deferred_writes()


def _eager_problem() -> str | None:
    """Why a request's write cannot be started in the sending task here; None when it can.

    It relies on aiohttp making its writer task from the coroutine that ClientRequest.write_bytes returns
    (3.9 to 3.14 do): a coroutine function of that name is checked for. TPSLOAD_DEFERRED_WRITES=1 turns it
    off, to measure what it changes."""
    if not DEFERRED_WRITES:
        return "not needed: aiohttp starts its writer task eagerly here"
    if os.environ.get("TPSLOAD_DEFERRED_WRITES") == "1":
        return "TPSLOAD_DEFERRED_WRITES=1"
    if not inspect.iscoroutinefunction(getattr(aiohttp.ClientRequest, "write_bytes", None)):
        return f"aiohttp {aiohttp.__version__}: ClientRequest.write_bytes is not a coroutine function"
    return None


# None: _Request starts aiohttp's writer itself (Python 3.11, or an aiohttp before 3.10); else why not
EAGER_PROBLEM = _eager_problem()
EAGER_WRITES = EAGER_PROBLEM is None


def io_paths(direct_problem: str | None = "") -> dict[str, str | None]:
    """How this process reads streamed responses and writes requests, for the result's client_health.
    `direct_problem`: why a client did not write requests directly (None: it did; default: this process's
    start-up check)."""
    if direct_problem == "":
        direct_problem = DIRECT_PROBLEM
    if direct_problem is None:
        write, why = "direct", None
    elif EAGER_WRITES:
        write, why = "eager", direct_problem
    elif not DEFERRED_WRITES:
        write, why = "task", direct_problem  # aiohttp starts its writer task eagerly itself
    else:
        write, why = "deferred", f"{direct_problem}; {EAGER_PROBLEM}"
    return {"read_path": "readany" if TAP_PROBLEM else "tap", "read_path_reason": TAP_PROBLEM,
            "write_path": write, "write_path_reason": why}


def _direct_problem() -> str | None:
    """Why requests cannot be sent on aiohttp's connections directly here; None when they can.

    The direct path leans on aiohttp internals that ClientSession itself uses for every request and no
    release promises to keep: connector.connect(req, traces, timeout) hands out a pooled Connection
    (protocol, transport, release(), close()); its ResponseHandler takes set_response_params() with
    these keywords, and its read() returns the (message, payload) of the next response. Checked once
    per process; where any of it differs, requests go through ClientSession.post as before.
    TPSLOAD_SEND_PATH=session turns it off, to measure what it changes."""
    if os.environ.get("TPSLOAD_SEND_PATH") == "session":
        return "TPSLOAD_SEND_PATH=session"
    where = f"aiohttp {aiohttp.__version__}"
    if sys.version_info < (3, 11):
        return "Python < 3.11 (no asyncio.timeout for the request's own deadline)"
    if ResponseHandler is None:
        return f"{where}: no aiohttp.client_proto.ResponseHandler"
    params = inspect.signature(ResponseHandler.set_response_params).parameters
    for name in ("timer", "read_until_eof", "auto_decompress", "read_timeout", "read_bufsize"):
        if name not in params:
            return f"{where}: ResponseHandler.set_response_params() takes no {name}"
    if not inspect.iscoroutinefunction(getattr(ResponseHandler, "read", None)):
        return f"{where}: ResponseHandler.read() is not a coroutine function"
    if list(inspect.signature(aiohttp.BaseConnector.connect).parameters)[1:] != ["req", "traces", "timeout"]:
        return f"{where}: BaseConnector.connect() does not take (req, traces, timeout)"
    for name in ("release", "close", "protocol", "transport"):
        if not hasattr(aiohttp.connector.Connection, name):
            return f"{where}: its Connection has no {name}"
    return None


# None: requests are written on aiohttp's pooled connections directly; else why through ClientSession.post
DIRECT_PROBLEM = _direct_problem()


class _Answer:
    """A response read on aiohttp's connection directly: what Client.send uses of a ClientResponse."""

    __slots__ = ("status", "headers", "content", "_conn", "_timer")

    def __init__(self, conn: Any, message: Any, payload: aiohttp.StreamReader) -> None:
        self.status = message.code
        self.headers = message.headers
        self.content = payload
        self._conn = conn
        self._timer = None  # the request's deadline is Client.send's own (asyncio.timeout)
        # back to the pool the moment the body ends, as aiohttp's own response does
        payload.on_eof(conn.release)

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """Back to the pool when the whole answer was read; else the connection is closed (aiohttp's
        protocol says which: should_close)."""
        self._conn.release()

    def close(self) -> None:
        self._conn.close()


class _Direct:
    """Sends a request on one of aiohttp's pooled connections without ClientSession's per-request work.

    ClientSession.post builds a ClientRequest (URL, headers, body payload, cookies, auth, proxy, ...),
    a writer, a response object and their timers for every request: ~90 µs of CPU here, most of a
    request's start. The request line and headers are made once, by aiohttp (the template request's
    own headers: Host, Accept, Accept-Encoding, User-Agent, ours), and each request is one write of
    them with its Content-Length and body; the answer is read by aiohttp's own protocol and parser.
    """

    def __init__(self, session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str]) -> None:
        self.connector = session.connector
        self.timeout = session.timeout
        # the connection key, TLS settings and headers of every request to this URL
        self.template = aiohttp.ClientRequest("POST", url, headers=headers, loop=asyncio.get_running_loop())
        lines = [f"POST {url.raw_path_qs} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.template.headers.items() if k.lower() != "content-length"]
        if self.connector.force_close:
            lines.append("Connection: close")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a header with a line break")  # aiohttp's writer refuses these too
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("utf-8")

    async def start(self, rec: RequestRecord, body: bytes) -> _Answer:
        conn = await self.connector.connect(self.template, [], self.timeout)
        try:
            proto = conn.protocol
            proto.set_response_params(timer=None, read_until_eof=True, auto_decompress=True, read_timeout=None,
                                      read_bufsize=READ_BUFSIZE)
            transport = conn.transport
            if transport is None or transport.is_closing():  # closed by the server while pooled: retried
                raise aiohttp.ServerDisconnectedError()
            transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
            rec.t_written = perf_counter_ns()
            while True:
                try:
                    message, payload = await proto.read()
                except aiohttp.http_exceptions.HttpProcessingError as e:
                    raise aiohttp.ClientResponseError(self.template.request_info, (), status=e.code,
                                                      message=e.message) from e
                if not 100 <= message.code <= 199 or message.code == 101:
                    break
            rec.t_headers = perf_counter_ns()
            return _Answer(conn, message, payload)
        except BaseException:
            conn.close()
            raise


class Client:
    """Sends requests to one endpoint and fills their records."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool,
                 secrets: tuple[str, ...] = (), fresh_session: Callable[[], aiohttp.ClientSession] | None = None,
                 first_byte_timeout_s: float | None = None, max_response_bytes: int | None = None,
                 tap: bool = True, preconnect_url: str | None = None, keep_text: bool = False,
                 direct: bool = True) -> None:
        self.session = session
        # multi-turn sessions resend each reply: its text is kept on the record even when usage counted it
        self.keep_text = keep_text
        # False: read streams with the public readany() loop (as when this aiohttp cannot be tapped)
        self.tap = tap and TAP_PROBLEM is None
        self.first_byte_timeout_s = first_byte_timeout_s
        self.max_response_bytes = max_response_bytes
        # parsed and merged once, not on every request
        self.url = URL(url)
        self.headers = CIMultiDict(headers)
        self.stream = stream
        self.secrets = secrets
        self.preconnect_url = preconnect_url
        # Makes a session that opens a connection per request; switched to the first
        # time a pooled connection turns out to have been closed by the server.
        self._fresh_session = fresh_session
        self.sessions = [session]
        # requests written on aiohttp's connections directly (_Direct), made for the current session
        self.direct = direct and DIRECT_PROBLEM is None
        self.direct_problem = DIRECT_PROBLEM if direct else "not asked for"
        self._direct: _Direct | None = None

    def paths(self) -> dict[str, str | None]:
        """io_paths() as this client used them."""
        return io_paths(None if self.direct else self.direct_problem)

    def _direct_path(self) -> _Direct | None:
        if not self.direct:
            return None
        d = self._direct
        if d is None or d.connector is not self.session.connector:
            try:
                d = self._direct = _Direct(self.session, self.url, self.headers)
            except (ValueError, TypeError, AttributeError) as e:  # headers aiohttp would refuse, an odd aiohttp
                self.direct, self.direct_problem = False, f"{e.__class__.__name__}: {e}"
                return None
        return d

    def _reconnect(self) -> None:
        if self._fresh_session is not None:
            self.session = self._fresh_session()
            self.sessions.append(self.session)
            self._fresh_session = None

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()

    async def preconnect(self, n: int) -> int:
        """Open `n` pooled connections before the load starts, so that its first wave is not a burst of
        connection set-ups that no long-running client makes. Returns how many were opened: 0 for a
        session that opens a connection per request (servers that close after each stream).

        Each is opened by a GET of the model list, and all are held until every answer is in, so that
        none is reused for another: `n` distinct connections go back to the pool. A failure here is
        not the run's: the run opens what it lacks as it goes, and the records say so (`connection`).
        """
        connector = self.session.connector
        if n <= 0 or self.preconnect_url is None or not isinstance(connector, _Connector) \
                or connector.force_close:
            return 0
        before = connector.opened
        timeout = aiohttp.ClientTimeout(total=PRECONNECT_TIMEOUT_S)
        got = await asyncio.gather(*(self.session.get(self.preconnect_url, headers=self.headers, timeout=timeout)
                                     for _ in range(n)), return_exceptions=True)
        for resp in got:
            if isinstance(resp, aiohttp.ClientResponse):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    await resp.read()  # read to the end: the connection goes back to the pool
                resp.release()
        return connector.opened - before

    async def send(self, rec: RequestRecord, body: bytes) -> None:
        """Send one request and fill `rec`. Never raises except CancelledError.

        The request's phases are stamped on `rec` by the session's connector, request and
        response classes, which find it in this task's context (on the direct path, by _Direct)."""
        direct = self._direct_path()
        total = self.session.timeout.total
        if direct is None or not total:
            return await self._send(rec, body, direct)
        try:  # the session's total timeout, which the direct path does not go through
            async with asyncio.timeout(total):
                await self._send(rec, body, direct)
        except TimeoutError:
            if rec.t_first is not None:
                self._fail(rec, ErrorClass.TIMEOUT_STREAM, "response not complete before the timeout")
            else:
                self._fail(rec, ErrorClass.TIMEOUT_FIRST_BYTE, "no response before the timeout")

    async def _send(self, rec: RequestRecord, body: bytes, direct: _Direct | None) -> None:
        rec.stream = self.stream
        now = perf_counter_ns
        resp: Any = None  # aiohttp's ClientResponse, or the direct path's _Answer
        _CURRENT.set(rec)
        if EAGER_WRITES:  # a write done at once leaves aiohttp no task to wait for (eager.task_factory)
            eager.install(asyncio.get_running_loop())
        while True:
            rec.t_send = now()
            if rec.t_sched is None:  # a caller that keeps no schedule: meant to go now
                rec.t_sched = rec.t_send
            try:
                if direct is not None:
                    if self.first_byte_timeout_s:
                        async with asyncio.timeout(self.first_byte_timeout_s):
                            resp = await direct.start(rec, body)
                    else:
                        resp = await direct.start(rec, body)
                    break
                req = self.session.post(self.url, data=body, headers=self.headers)
                if self.first_byte_timeout_s:
                    resp = await asyncio.wait_for(req, self.first_byte_timeout_s)
                else:
                    resp = await req
                break
            except aiohttp.ClientConnectorError as e:
                return self._fail(rec, ErrorClass.CONNECT, f"cannot connect: {e.os_error or e}")
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # A pooled connection the server had closed after its last reply: nothing
                # was measured yet, so retry once on a fresh connection, transparently.
                # A fresh connection that fails is the server's failure, not retried.
                if rec.connection is ConnectionUse.REUSED and rec.retries == 0:
                    rec.retries = 1
                    rec.t_connected = rec.t_written = rec.t_headers = rec.connection = None
                    self._reconnect()
                    direct = self._direct_path()
                    continue
                return self._fail(rec, ErrorClass.DISCONNECT, f"connection lost before the response: {e}")
            except asyncio.TimeoutError:
                return self._fail(rec, ErrorClass.TIMEOUT_FIRST_BYTE, "no response before the first-byte timeout")
            except aiohttp.ClientError as e:
                return self._fail(rec, ErrorClass.CONNECT, str(e) or e.__class__.__name__)
            except ValueError as e:  # a request aiohttp refuses to write (a header with a line break)
                return self._fail(rec, ErrorClass.CONNECT, f"cannot send the request: {e}")
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
                    return self._fail(rec, ErrorClass.PROTOCOL, f"response larger than {self.max_response_bytes} bytes")
                rec.t_end = rec.t_last = now()
                self._finish(rec, decode_body(raw))
        except asyncio.TimeoutError:
            cls = ErrorClass.TIMEOUT_STREAM if rec.t_first is not None else ErrorClass.TIMEOUT_FIRST_BYTE
            self._fail(rec, cls, "response not complete before the timeout")
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as e:
            close = True
            self._fail(rec, ErrorClass.DISCONNECT, f"connection lost mid-response: {e}")
        finally:
            if close:
                resp.close()
            else:
                resp.release()

    async def _read_stream(self, resp: Any, rec: RequestRecord) -> None:
        content = resp.content
        sink = _Sink(self.max_response_bytes)
        # a reader of another class (a wrapper, an aiohttp change) is read the public way
        if self.tap and type(content) is aiohttp.StreamReader and not content.exception():
            content.__class__ = _Tap
            return await self._tap_stream(resp, rec, sink)
        now = perf_counter_ns
        read = content.readany  # everything buffered: one stamp for what arrived together
        try:
            while True:
                data = await read()
                ts = now()
                if not data:
                    break
                sink(ts, data)
                if sink.stop:
                    break
            if sink.error:
                self._fail(rec, ErrorClass.PROTOCOL, sink.error)
                resp.close()
            elif rec.error_class is None:
                rec.t_end = ts
        finally:
            # On cancel or error too: keep what was measured before it.
            self._finish(rec, sink.dec.close(perf_counter_ns()))

    async def _tap_stream(self, resp: Any, rec: RequestRecord, sink: "_Sink") -> None:
        """Bytes are stamped and parsed in aiohttp's data callback as they arrive; this task
        only waits for the end. No wake-up per chunk, and no task-switch delay in the stamps."""
        content = resp.content
        key = id(content)
        try:
            buffered = content.read_nowait()  # what came in with the headers
            if buffered:
                sink(perf_counter_ns(), buffered)
            _TAPS[key] = sink
            if not content.is_eof() and not sink.stop:
                # aiohttp's total timeout, which its own read calls enter as they wait
                timeout = resp._timer  # noqa: SLF001
                with timeout if timeout is not None else contextlib.nullcontext():
                    await content.wait_eof()
            if sink.error:
                self._fail(rec, ErrorClass.PROTOCOL, sink.error)
                resp.close()
            elif rec.error_class is None:
                rec.t_end = sink.t_eof or perf_counter_ns()
        except _Stop:
            if sink.error:
                self._fail(rec, ErrorClass.PROTOCOL, sink.error)
            resp.close()
        finally:
            _TAPS.pop(key, None)
            self._finish(rec, sink.dec.close(perf_counter_ns()))

    def _finish(self, rec: RequestRecord, out: Decoded) -> None:
        if out.chunk_times:
            rec.chunk_times = array("q", out.chunk_times)
            rec.t_first = out.chunk_times[0]
            rec.t_last = out.chunk_times[-1]
            if out.first_answer >= 0:  # after the request: which stamp was the first answer's
                rec.t_answer = out.chunk_times[out.first_answer]
            if out.chunk_usage:
                prev = 0
                k = array("q")
                for c in out.chunk_usage:
                    k.append(c - prev)
                    prev = c
                rec.chunk_tokens = k
        rec.content_chunks = out.content_chunks
        rec.reasoning_chunks = out.reasoning_chunks
        rec.finish_reason = out.finish_reason
        apply_counts(rec, out)
        if self.keep_text:  # a conversation resends the answer, not the thinking that preceded it
            rec.reply = out.texts()[1]
        if rec.error_class:
            return
        if out.error:
            self._fail(rec, ErrorClass.STREAM_ERROR, out.error)
        elif out.protocol_error:
            self._fail(rec, ErrorClass.PROTOCOL, out.protocol_error)
        elif rec.stream and out.events == 0 and rec.t_end is not None:
            self._fail(rec, ErrorClass.PROTOCOL,
                       "streamed response carried no SSE events (does the server stream? try --no-stream)")

    def _fail(self, rec: RequestRecord, cls: ErrorClass, msg: str) -> None:
        if rec.error_class is None:
            rec.error_class = cls
            rec.error = redact(msg, self.secrets)[:500] if msg else msg


def open_client(cfg: RunConfig, llama_cpp: bool) -> Client:
    """The run's HTTP client: one session, a connection per request for servers that close after streams."""
    limit = cfg.load.concurrency + 4 if cfg.load.concurrency else 0  # 0: no limit (uncapped open loop)
    session = partial(make_session, limit, cfg.limits.timeout_s, cfg.target.insecure)
    return Client(session(force_close=llama_cpp), cfg.url, cfg.request_headers(), cfg.workload.stream, cfg.secrets(),
                  fresh_session=partial(session, force_close=True),
                  first_byte_timeout_s=cfg.limits.first_byte_timeout_s,
                  max_response_bytes=cfg.limits.max_response_bytes,
                  preconnect_url=cfg.target.base_url.rstrip("/") + "/models",
                  keep_text=cfg.workload.turns is not None)
