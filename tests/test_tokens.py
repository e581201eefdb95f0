"""Token counts from the best source, and the offline tokenizer fallback."""

import asyncio
import base64
import contextlib
import json
import random
import socket
import time

import pytest

from conftest import load_json, tpsload
from streams import ev
from tpsload.config import RunConfig
from tpsload.core.client import make_session
from tpsload.core.tokens import apply_counts, resolve_pending
from tpsload.protocol.openai import Decoded, decode_body, decode_stream
from tpsload.records import RequestRecord
from tpsload.workload import prepare
from tpsload.workload.tokenizer import Tokenizer


def byte_level_tiktoken(path):
    """A valid .tiktoken file with only the 256 single-byte tokens: one token per byte."""
    path.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    return path


def rec_with(usage=None, timings=None, chunks=3, text="abc"):
    r = RequestRecord(index=0)
    r.t_send, r.t_end = 1, 2
    d = Decoded(chunk_times=list(range(chunks)), usage=usage, timings=timings, text_parts=[text])
    apply_counts(r, d)
    return r


def test_usage_wins_over_timings_and_chunks():
    r = rec_with(usage={"completion_tokens": 5, "prompt_tokens": 9, "total_tokens": 14},
                 timings={"predicted_n": 6, "cache_n": 2, "prompt_n": 7})
    assert (r.output_tokens, r.token_source) == (5, "usage")
    assert r.token_counts == {"usage": 5, "timings": 6, "chunks": 3}
    assert r.prompt_tokens == 9 and r.cached_tokens == 2
    assert r.text is None  # not kept when a server count exists


def test_timings_when_no_usage():
    r = rec_with(timings={"predicted_n": 4, "prompt_n": 7, "cache_n": 3})
    assert (r.output_tokens, r.token_source) == (4, "timings")
    assert r.prompt_tokens == 10  # llama.cpp's prompt_n excludes cached tokens


def test_never_total_tokens():
    r = rec_with(usage={"total_tokens": 100, "prompt_tokens": 90})
    assert r.output_tokens is None and r.text == "abc"


def test_tokenizer_file_then_estimate(tmp_path):
    r = rec_with()
    resolve_pending([r], Tokenizer(str(byte_level_tiktoken(tmp_path / "b.tiktoken"))))
    assert (r.output_tokens, r.token_source) == (3, "tokenizer")
    notices = []
    r = rec_with(chunks=2)
    resolve_pending([r], Tokenizer(str(tmp_path / "missing.tiktoken"), notice=notices.append))
    assert (r.output_tokens, r.token_source) == (2, "estimate") and len(notices) == 1


def test_run_without_usage_uses_tokenizer_file(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, no_usage=True)
    tok = byte_level_tiktoken(tmp_path / "b.tiktoken")
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "-n", "2", "--max-tokens", "10", "--tokenizer", str(tok),
            "--json", str(out), check=0)
    s = load_json(out)["summary"]
    text_bytes = len("".join(f" w{i}" for i in range(10)))
    assert s["token_sources"] == {"tokenizer": 2}
    assert s["output_tokens"]["mean"] == text_bytes
    assert s["token_source_diff"]["chunks_vs_tokenizer"]["mean"] == 10 - text_bytes


def test_run_without_usage_or_tokenizer_is_an_estimate_not_a_failure(mock_server, tmp_path):
    m = mock_server(ttft_ms=5, itl_ms=1, no_usage=True)
    out = tmp_path / "r.json"
    p = tpsload("run", "--base-url", m.base_url, "-n", "2", "--max-tokens", "10", "--json", str(out), check=0)
    s = load_json(out)["summary"]
    assert s["token_sources"] == {"estimate": 2} and s["output_tokens"]["mean"] == 10
    assert p.stderr.count("no tokenizer available") == 1


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    """An empty tiktoken cache: cl100k_base can only come from a download."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture
def blackhole(monkeypatch, no_cache):
    """A network where connections hang: downloads go through a proxy on 127.0.0.1 whose accept
    queue is full, so a connect to it gets no answer (as behind a firewall that drops packets)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    queued = []
    for _ in range(4):  # fill the accept queue
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        queued.append(s)
    with pytest.raises(OSError):  # it does hang
        socket.create_connection(("127.0.0.1", port), timeout=0.2)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    yield port
    for s in queued:
        s.close()
    srv.close()


def timed_offline_load(notices):
    import tiktoken  # noqa: F401 - its import is not what is timed

    tok = Tokenizer(notice=notices.append)
    t = time.perf_counter()
    n = tok.count("hello")
    return n, time.perf_counter() - t


def test_no_cached_encoding_offline_fails_fast(no_cache):
    notices = []
    n, took = timed_offline_load(notices)
    assert n is None and took < 0.9, took
    assert len(notices) == 1 and "\n" not in notices[0] and "no tokenizer available offline" in notices[0]
    assert "--tokenizer FILE.tiktoken" in notices[0]


def test_no_cached_encoding_behind_a_dropping_network_fails_fast(blackhole):
    """Before: a download thread joined for 10 s; offline is now told by a connect that does not open in 0.5 s."""
    notices = []
    n, took = timed_offline_load(notices)
    assert n is None and took < 0.9, took
    assert len(notices) == 1 and f"127.0.0.1:{blackhole}" in notices[0], notices


class LoopWatch:
    """Ticks every millisecond and keeps the longest gap: how long the loop was held."""

    def __init__(self):
        self.longest = 0.0
        self.ticks = 0
        self._task = None

    async def __aenter__(self):
        async def tick():
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                self.longest = max(self.longest, now - last)
                self.ticks += 1
                last = now

        self._task = asyncio.create_task(tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def test_preparing_prompts_keeps_the_loop_running_while_a_download_is_tried(mock_server, blackhole):
    """Synthetic prompts against a server with no /tokenize need the offline tokenizer; trying to
    get cl100k_base (today: 0.5 s for a connect that never opens, before: a 10 s wait) happens
    off the event loop, so it keeps serving everything else (signals, other requests)."""
    m = mock_server(ttft_ms=1, itl_ms=1)
    cfg = RunConfig.of(base_url=m.base_url, input_tokens=16, requests=3, max_tokens=4)

    async def prepare_watched():
        notices = []
        async with LoopWatch() as watch, make_session(4, 30.0, False) as session:
            t = time.perf_counter()
            workload = await prepare.build(cfg, session, "mock", {}, Tokenizer(notice=notices.append))
            took = time.perf_counter() - t
        return workload, took, watch, notices

    workload, took, watch, notices = asyncio.run(prepare_watched())
    assert len(notices) == 1 and "no tokenizer available offline" in notices[0]
    assert workload.describe()["length_counter"] == "word count (approximate)"
    assert took >= 0.45  # the connect budget was spent waiting...
    assert watch.longest < 0.2, (watch.longest, took)  # ...and not on the loop


def big_tiktoken(path, n=60_000):
    """A .tiktoken file of `n` ranks: tiktoken takes a while to read and build it."""
    rnd = random.Random(7)
    toks = {bytes([i]) for i in range(256)}
    while len(toks) < n:
        toks.add(bytes(rnd.randrange(97, 123) for _ in range(rnd.randint(2, 8))))
    ordered = [bytes([i]) for i in range(256)] + sorted(toks - {bytes([i]) for i in range(256)})
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ordered)))
    return path


def test_loading_a_tokenizer_file_runs_beside_the_loop(tmp_path, no_cache):
    tok = Tokenizer(str(big_tiktoken(tmp_path / "big.tiktoken", n=150_000)))

    async def load_watched():
        async with LoopWatch() as watch:
            start = watch.ticks
            t = time.perf_counter()
            ok = await tok.load()
            took = time.perf_counter() - t
            during = watch.ticks - start
        return ok, took, during

    ok, took, during = asyncio.run(load_watched())
    assert ok and tok.count("abc") is not None
    # on the loop, no tick at all could happen while it loads (0); beside it, the loop keeps turning,
    # though tiktoken's own table build holds the interpreter for much of the load (seen: 1 tick in a
    # 90 ms load of 60k ranks on a busy machine, more on a quiet one)
    assert during >= 1, (during, took)


def test_a_tokenizer_file_is_not_copied_into_the_download_cache(tmp_path, no_cache):
    """tiktoken.load files a copy of every file it reads in its cache: two more files per test run
    (tests/.no-tiktoken-cache/ filled up that way), and one more per --tokenizer run for a user."""
    tok = Tokenizer(str(byte_level_tiktoken(tmp_path / "b.tiktoken")))
    assert tok.count("hello") == 5
    assert list(no_cache.iterdir()) == []


def reasoning_record(continuous=False, usage=True, stream=True):
    """Three reasoning chunks of 3 tokens, then two answer chunks of 1 token, decoded as the client does."""
    parts = [("reasoning_content", "r0 r1 r2"), ("reasoning_content", "r3 r4 r5"), ("reasoning", "r6 r7 r8"),
             ("content", "a0"), ("content", "a1")]
    cum = [3, 6, 9, 10, 11]
    events = []
    for (field, text), c in zip(parts, cum, strict=True):
        obj = {"choices": [{"index": 0, "delta": {field: text}}]}
        if continuous:
            obj["usage"] = {"completion_tokens": c}
        events.append(ev(obj))
    if usage:
        events.append(ev({"choices": [], "usage": {"completion_tokens": 11, "prompt_tokens": 3}}))
    r = RequestRecord(index=0, stream=stream)
    r.t_send, r.t_end = 1, 2
    if stream:
        d = decode_stream([((i + 1) * 1000, e) for i, e in enumerate(events)])
    else:
        message = {"role": "assistant", "reasoning_content": "r0 r1 r2 r3 r4 r5 r6 r7 r8", "content": "a0 a1"}
        d = decode_body(json.dumps({"choices": [{"index": 0, "message": message}],
                                    "usage": {"completion_tokens": 11}}).encode())
    r.reasoning_chunks = d.reasoning_chunks  # as the client's _finish sets it
    apply_counts(r, d)
    return r


def test_reasoning_counts_from_the_best_source_at_hand(tmp_path):
    # per-chunk usage, reasoning all before the answer: the usage at the last reasoning chunk (exact)
    r = reasoning_record(continuous=True)
    assert (r.reasoning_tokens, r.reasoning_source, r.answer_tokens) == (9, "usage", 2)
    # usage without per-chunk counts: the output shared by chunks, an estimate (here 11 x 3 / 5)
    r = reasoning_record()
    assert (r.reasoning_tokens, r.reasoning_source, r.reasoning_text) == (7, "estimate", None)
    # no usage: the reasoning text is kept with the output text, and a tokenizer counts both after the run
    byte_level = Tokenizer(str(byte_level_tiktoken(tmp_path / "b.tiktoken")))
    r = reasoning_record(usage=False)
    assert r.reasoning_text == "r0 r1 r2r3 r4 r5r6 r7 r8" and r.text == r.reasoning_text + "a0a1"
    resolve_pending([r], byte_level)
    assert (r.reasoning_tokens, r.reasoning_source, r.output_tokens, r.reasoning_text) == (24, "tokenizer", 28, None)
    # a server known to send a token per chunk: its reasoning chunks are the count
    r = reasoning_record(usage=False)
    resolve_pending([r], byte_level, chunks_exact=True)
    assert (r.reasoning_tokens, r.reasoning_source, r.output_tokens) == (3, "chunks", 5)
    # a whole reply: its reasoning text, counted after the run
    r = reasoning_record(stream=False)
    assert r.output_tokens == 11 and r.reasoning_text == "r0 r1 r2 r3 r4 r5 r6 r7 r8"
    resolve_pending([r], byte_level)
    assert (r.reasoning_tokens, r.reasoning_source, r.answer_tokens) == (26, "tokenizer", 0)
