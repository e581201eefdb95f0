"""The fast path (the _Tap on aiohttp's reader) against aiohttp's public readany() loop, over real sockets.

The tap leans on aiohttp internals; these tests pin what it relies on, and CI runs them on the
oldest and the newest aiohttp that pyproject.toml allows (`make test-aiohttp-oldest`).
"""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_json, tpsload
from streams import ERROR_STREAMS, STREAMS, USAGE, chat_delta, ev
from tpsload.core import client as client_mod
from tpsload.core.client import Client, make_session
from tpsload.records import RequestRecord

# a mock-like stream of many chunks, so that random cuts land inside and between events
LONG = (ev(chat_delta("", role="assistant")) + b"".join(ev(chat_delta(f"t{i} ")) for i in range(24))
        + ev(chat_delta(None, finish="length")) + ev({"choices": [], "usage": USAGE | {"completion_tokens": 24}})
        + b"data: [DONE]\n\n")
BODIES = {name: s[0] for name, s in STREAMS.items()} | {name: s[0] for name, s in ERROR_STREAMS.items()}
BODIES["long"] = LONG


class WireServer:
    """Answers every request with a planned HTTP response written piece by piece, then closes.

    Between pieces the server drains and lets the loop turn, so each piece reaches the
    client as a read of its own (how the pieces are cut is what is tested, not how long they take).
    """

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                for _ in range(3):
                    await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up first (a refused stream): nothing more to write
        finally:
            writer.close()


def wire(body: bytes, framing: str, http_cuts: list[int], truncate_at: int | None, gzipped: bool) -> bytes:
    """The response as it crosses the socket: headers, then the body framed as `framing`,
    cut short at `truncate_at` (the server dies mid-body)."""
    if gzipped:
        body = gzip.compress(body)
    full = len(body)
    if truncate_at is not None:
        body = body[:truncate_at]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
    if gzipped:
        head += b"Content-Encoding: gzip\r\n"
    if framing == "chunked":
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in cut(body, http_cuts))
        if truncate_at is None:
            framed += b"0\r\n\r\n"
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + framed
    if framing == "length":
        head += b"Content-Length: %d\r\n" % full
    return head + b"\r\n" + body


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces, cut at the given offsets."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def outcome(rec: RequestRecord) -> dict:
    """Everything a record says except its clock readings."""
    return {
        "ok": rec.ok, "status": rec.status, "error_class": rec.error_class, "error": rec.error,
        "chunks": len(rec.chunk_times), "chunk_tokens": None if rec.chunk_tokens is None else list(rec.chunk_tokens),
        "content_chunks": rec.content_chunks, "reasoning_chunks": rec.reasoning_chunks,
        "output_tokens": rec.output_tokens, "token_source": rec.token_source, "token_counts": rec.token_counts,
        "prompt_tokens": rec.prompt_tokens, "cached_tokens": rec.cached_tokens, "finish_reason": rec.finish_reason,
        "server_timings": rec.server_timings, "text": rec.text,
        "answered": rec.t_answer is not None,
        "reasoning_tokens": rec.reasoning_tokens, "reasoning_source": rec.reasoning_source,
        "reasoning_text": rec.reasoning_text,
    }


async def fetch(url: str, fast: bool, limit: int | None, stream: bool = True) -> RequestRecord:
    """One request, on the fast path (written on aiohttp's connection directly, read by the tap) or the
    public one (ClientSession.post, read with readany())."""
    client = Client(make_session(4, 30.0, False, force_close=True), url, {}, stream, max_response_bytes=limit,
                    tap=fast, direct=fast)
    rec = RequestRecord(index=0)
    try:
        # the differential test needs the fast path to be usable
        assert client.tap is fast and client.direct is fast, (client_mod.TAP_PROBLEM, client_mod.DIRECT_PROBLEM)
        await client.send(rec, b"{}")
    finally:
        await client.close()
    return rec


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def wire_server(request):
    """(loop, server, url): tpsload runs on uvloop where it is installed, else on asyncio's loop."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    server = WireServer()
    url = loop.run_until_complete(server.start())
    yield loop, server, url
    loop.run_until_complete(server.stop())
    loop.close()


def both(wire_server, pieces: list[bytes], limit: int | None = None, stream: bool = True
         ) -> tuple[RequestRecord, RequestRecord]:
    loop, server, url = wire_server
    server.pieces = pieces
    tapped = loop.run_until_complete(fetch(url, True, limit, stream))
    plain = loop.run_until_complete(fetch(url, False, limit, stream))
    return tapped, plain


@st.composite
def responses(draw):
    name = draw(st.sampled_from(sorted(BODIES)))
    body = BODIES[name]
    gzipped = draw(st.booleans())
    framing = draw(st.sampled_from(["chunked", "length", "close"]))
    size = len(gzip.compress(body)) if gzipped else len(body)
    truncate_at = draw(st.none() | st.integers(1, size - 1))
    http_cuts = draw(st.lists(st.integers(1, size), max_size=12))
    raw = wire(body, framing, http_cuts, truncate_at, gzipped)
    pieces = cut(raw, draw(st.lists(st.integers(1, len(raw) - 1), max_size=16)))
    limit = draw(st.none() | st.integers(1, len(body) + 8))
    return name, pieces, limit, truncate_at is None and limit is None


@settings(max_examples=120, deadline=None)
@given(responses())
def test_fast_and_public_paths_make_identical_records(wire_server, case):
    name, pieces, limit, complete = case
    tapped, plain = both(wire_server, pieces, limit)
    assert outcome(tapped) == outcome(plain), (name, pieces, limit)
    if complete and name in STREAMS:
        _, n_chunks, _, usage_tokens, _ = STREAMS[name]
        assert tapped.ok and len(tapped.chunk_times) == n_chunks, outcome(tapped)
        if usage_tokens is not None:
            assert tapped.output_tokens == usage_tokens and tapped.token_source == "usage"
    elif complete and name in ERROR_STREAMS:
        _, cls, n_chunks = ERROR_STREAMS[name]
        assert tapped.error_class == cls and len(tapped.chunk_times) == n_chunks, outcome(tapped)


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
@pytest.mark.parametrize("gzipped", [False, True])
def test_whole_answers_and_errors_are_the_same_on_both_paths(wire_server, framing, gzipped):
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"},
                                    "finish_reason": "stop"}], "usage": USAGE | {"completion_tokens": 2}}).encode()
    for pieces in ([wire(body, framing, [7, 30], None, gzipped)],
                   [b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
                    b"Content-Length: 35\r\nConnection: close\r\n\r\n{\"error\": {\"message\": \"slow down\"}}"],
                   [b"NOT HTTP AT ALL\r\n\r\n"], []):  # a malformed status line; a server that closes at once
        fast, plain = both(wire_server, pieces, stream=False)
        assert outcome(fast) == outcome(plain), pieces
        if len(pieces) == 1 and pieces[0].startswith(b"HTTP/1.1 429"):
            error = fast
    fast = error
    assert fast.status == 429 and fast.error_class == "http_429" and "slow down" in fast.error, outcome(fast)
    assert "Retry-After: 2" in fast.error


def test_pieces_reach_the_tap_one_read_each(wire_server):
    """The server's pacing does cut the reads: otherwise the differential test would only ever
    see whole responses. Every event in its own piece: every chunk has its own stamp."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    events = [ev(chat_delta(f"t{i}")) for i in range(8)]
    tapped, plain = both(wire_server, [head, *events])
    for rec in (tapped, plain):
        assert rec.ok and len(rec.chunk_times) == 8
        assert len(set(rec.chunk_times)) == 8, list(rec.chunk_times)


def test_oversized_stream_decodes_the_same_bytes_however_split(wire_server):
    """--max-response-bytes: the events inside the limit count, whichever read crosses it
    (the tap once decoded whole reads up to the crossing one, the loop fewer)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    events = [ev(chat_delta(f"t{i}")) for i in range(6)]
    body = b"".join(events)
    limit = len(events[0]) * 3 + 5  # three whole events and a bit of the fourth
    for pieces in ([head, body], [head, *events], [head + events[0], body[len(events[0]):]]):
        tapped, plain = both(wire_server, pieces, limit)
        for rec in (tapped, plain):
            assert rec.error_class == "protocol" and "larger than" in rec.error
            assert len(rec.chunk_times) == 3, (pieces, list(rec.chunk_times))


def test_bad_data_inside_the_limit_is_the_reason_however_split(wire_server):
    """Malformed data within the first --max-response-bytes of a longer stream: the record says the data
    was bad (it came first), whether the read that crosses the limit holds it or an earlier one did. (The
    crossing read once reported only the size: found by the differential test, gzip, 155 bytes.)"""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    good, bad = ev(chat_delta("a")), b"data: {not json\n\n"
    body = good + bad + b"".join(ev(chat_delta(f"t{i}")) for i in range(4))
    limit = len(good) + len(bad) + 5
    for pieces in ([head, body], [head + good, body[len(good):]], [head, good, bad, body[len(good + bad):]]):
        tapped, plain = both(wire_server, pieces, limit)
        for rec in (tapped, plain):
            assert rec.error_class == "protocol" and rec.error.startswith("unparseable data line"), rec.error
            assert len(rec.chunk_times) == 1


def test_start_up_check_passes_on_this_aiohttp():
    """The declared aiohttp range is the tested one: on it the tap must be usable."""
    assert client_mod._tap_problem() is None
    # requests are written on aiohttp's connections directly
    assert client_mod._direct_problem() is None
    assert client_mod.io_paths() == {"read_path": "tap", "read_path_reason": None, "write_path": "direct",
                                     "write_path_reason": None}
    # and where that is off and aiohttp would write on a deferred task, the write starts in the sending task
    assert client_mod.io_paths("off")["write_path"] == ("eager" if client_mod.DEFERRED_WRITES else "task")


class _OtherLayout(aiohttp.StreamReader):
    """A reader laid out differently from the one _Tap was made from (a future aiohttp)."""

    __slots__ = ("_extra",)


def test_start_up_check_falls_back_when_the_reader_changed(monkeypatch):
    monkeypatch.setattr(aiohttp, "StreamReader", _OtherLayout)
    why = client_mod._tap_problem()
    assert why is not None and "cannot be tapped" in why and aiohttp.__version__ in why


@pytest.mark.parametrize("missing", ["read_nowait", "wait_eof", "feed_eof"])
def test_start_up_check_names_a_missing_method(monkeypatch, missing):
    monkeypatch.delattr(aiohttp.StreamReader, missing)
    assert client_mod._tap_problem() == f"aiohttp {aiohttp.__version__}: StreamReader has no {missing}()"


def test_the_direct_path_check_falls_back_where_aiohttp_differs(monkeypatch):
    def params(self, *, timer=None, skip_payload=False):  # a set_response_params that lost its keywords
        pass

    monkeypatch.setattr(client_mod.ResponseHandler, "set_response_params", params)
    assert client_mod._direct_problem() == \
        f"aiohttp {aiohttp.__version__}: ResponseHandler.set_response_params() takes no read_until_eof"
    monkeypatch.undo()
    monkeypatch.setattr(aiohttp.BaseConnector, "connect", lambda self, req: None)
    assert "BaseConnector.connect() does not take (req, traces, timeout)" in client_mod._direct_problem()
    monkeypatch.undo()
    monkeypatch.setenv("TPSLOAD_SEND_PATH", "session")
    assert client_mod._direct_problem() == "TPSLOAD_SEND_PATH=session"


def test_a_header_aiohttp_would_refuse_sends_through_the_session(wire_server):
    """A header value with a line break cannot go into the direct path's prebuilt head: that client sends
    through ClientSession.post, whose own check fails the request, and says why it is not direct."""
    loop, server, url = wire_server
    server.pieces = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                     ev(chat_delta("hi"))]

    async def one() -> tuple[Client, RequestRecord]:
        c = Client(make_session(4, 30.0, False, force_close=True), url, {"X-Bad": "a\r\nInjected: 1"}, True)
        rec = RequestRecord(index=0)
        await c.send(rec, b"{}")
        await c.close()
        return c, rec

    c, rec = loop.run_until_complete(one())
    assert c.direct is False and c.direct_problem.startswith("ValueError")
    assert c.paths()["write_path"] != "direct" and c.paths()["write_path_reason"].startswith("ValueError")
    assert not rec.ok and rec.error_class == "connect" and "Injected" not in (rec.error or "")


def test_start_up_check_needs_the_response_timer(monkeypatch):
    def init(self, method, url):  # a ClientResponse that no longer takes the total-timeout timer
        pass

    monkeypatch.setattr(aiohttp.ClientResponse, "__init__", init)
    assert "resp._timer" in client_mod._tap_problem()


def test_start_up_check_catches_an_eof_that_does_not_wake(monkeypatch):
    monkeypatch.setattr(aiohttp.StreamReader, "feed_eof", lambda self: None)
    assert "wait_eof() did not return at feed_eof()" in client_mod._tap_problem()


def test_a_client_on_an_untappable_aiohttp_reads_with_readany(monkeypatch, wire_server):
    monkeypatch.setattr(client_mod, "TAP_PROBLEM", "aiohttp 9.9: StreamReader has no feed_eof()")
    loop, server, url = wire_server
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    server.pieces = [head, *[ev(chat_delta(f"t{i}")) for i in range(3)]]

    async def one() -> tuple[Client, RequestRecord]:
        c = Client(make_session(4, 30.0, False, force_close=True), url, {}, True)
        rec = RequestRecord(index=0)
        await c.send(rec, b"{}")
        await c.close()
        return c, rec

    c, rec = loop.run_until_complete(one())
    assert c.tap is False
    assert rec.ok and len(rec.chunk_times) == 3
    paths = client_mod.io_paths()
    assert (paths["read_path"], paths["read_path_reason"]) == ("readany", "aiohttp 9.9: StreamReader has no feed_eof()")


@pytest.mark.parametrize("env,path,reason", [({}, "tap", None),
                                             ({"TPSLOAD_READ_LOOP": "1"}, "readany", "TPSLOAD_READ_LOOP=1")])
def test_result_says_which_read_path_measured(mock_server, tmp_path, env, path, reason):
    m = mock_server(ttft_ms=5, itl_ms=2)
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-c", "2", "-n", "4", "--max-tokens", "8", "--json", str(out),
            env=env, check=0)
    h = load_json(out)["client_health"]
    assert (h["read_path"], h["read_path_reason"]) == (path, reason)
    assert json.dumps(h)  # serialisable as it is
