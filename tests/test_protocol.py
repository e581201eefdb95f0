import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import ERROR_STREAMS, STREAMS
from tpsload.protocol.openai import build_body, decode_body, decode_stream


def stamped(stream: bytes, size: int):
    """Split into reads of `size` bytes, stamped 1000, 2000, ... ns."""
    return [((i // size + 1) * 1000, stream[i:i + size]) for i in range(0, len(stream), size)]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_shapes(name):
    stream, n_chunks, text, usage_tokens, done = STREAMS[name]
    for size in (1, 7, 64, len(stream)):
        d = decode_stream(stamped(stream, size))
        assert d.error is None and d.protocol_error is None
        assert len(d.chunk_times) == n_chunks, (name, size)
        assert d.text == text
        assert d.done is done
        assert (d.usage or {}).get("completion_tokens") == usage_tokens
        assert d.chunk_times == sorted(d.chunk_times)


def test_role_chunk_and_comments_are_not_first_token():
    stream = STREAMS["llama_chat"][0]
    # each event in its own read: the role chunk arrives at t=2000, the first token later
    events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
    reads = [((i + 1) * 1000, e) for i, e in enumerate(events)]
    d = decode_stream(reads)
    assert d.chunk_times[0] == 4000  # ping, role, ping, then "Hel"
    assert d.timings["predicted_n"] == 3


def test_event_time_is_the_read_that_completed_it():
    stream = STREAMS["vllm_chat"][0]
    first_token = stream.index(b"Hel")
    # the "Hel" event starts in read 1 and is completed in read 2
    reads = [(1000, stream[:first_token]), (2000, stream[first_token:])]
    d = decode_stream(reads)
    assert d.chunk_times[0] == 2000


def test_continuous_usage_gives_tokens_per_chunk():
    d = decode_stream(stamped(STREAMS["continuous_usage"][0], 10))
    assert d.chunk_usage == [1, 4, 5]


def test_reasoning_counted_apart():
    d = decode_stream(stamped(STREAMS["reasoning"][0], 9))
    assert d.reasoning_chunks == 2 and d.content_chunks == 1


@pytest.mark.parametrize("per_event", [False, True])
def test_first_answer_chunk_after_reasoning(per_event):
    """The first answer chunk is known by its index (read one event at a time, later chunks take the
    unparsed fast path), so its stamp is found after the request; reasoning and answer text stay apart."""
    stream = STREAMS["reasoning"][0]
    if per_event:
        events = [e + b"\n\n" for e in stream.split(b"\n\n") if e]
        reads = [((i + 1) * 1000, e) for i, e in enumerate(events)]
    else:
        reads = stamped(stream, 7)
    d = decode_stream(reads)
    assert d.first_answer == 2 and len(d.chunk_times) == 3
    if per_event:  # role, think, more, answer: the answer came with the fourth read
        assert d.chunk_times[d.first_answer] == 4000
    assert d.texts() == ("thinkmore", "answer")
    plain = decode_stream(stamped(STREAMS["vllm_chat"][0], 7))
    assert plain.first_answer == 0  # no reasoning: the first answer is the first output


@pytest.mark.parametrize("name", sorted(ERROR_STREAMS))
def test_error_streams_are_classified_and_keep_earlier_chunks(name):
    stream, kind, chunks_before = ERROR_STREAMS[name]
    d = decode_stream(stamped(stream, 5))
    if kind == "stream_error":
        assert d.error and d.protocol_error is None
    else:
        assert d.protocol_error and d.error is None
    assert len(d.chunk_times) == chunks_before


def test_error_message_is_extracted():
    d = decode_stream(stamped(ERROR_STREAMS["error_event"][0], 100))
    assert "boom" in d.error


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(STREAMS)), st.data())
def test_random_corruption_never_raises(name, data):
    clean = STREAMS[name][0]
    stream = bytearray(clean)
    hits = [data.draw(st.integers(0, len(stream) - 1)) for _ in range(data.draw(st.integers(1, 5)))]
    for i in hits:
        stream[i] = data.draw(st.integers(0, 255))
    size = data.draw(st.integers(1, 50))
    d = decode_stream(stamped(bytes(stream), size))  # must not raise
    # a failure is always a classified, readable message
    for msg in (d.protocol_error, d.error):
        assert msg is None or (isinstance(msg, str) and msg)
    # and the events that were whole before the first damaged byte are kept as they were
    intact = clean.rfind(b"\n\n", 0, min(hits)) + 2 if clean.rfind(b"\n\n", 0, min(hits)) >= 0 else 0
    before = decode_stream(stamped(clean[:intact], size))
    assert d.chunk_times[:len(before.chunk_times)] == before.chunk_times, (min(hits), intact)


def test_non_stream_bodies():
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    d = decode_body(json.dumps(chat).encode())
    assert d.text == "hi there" and d.usage["completion_tokens"] == 2
    comp = {"choices": [{"index": 0, "text": "abc"}], "timings": {"predicted_n": 9}}
    d = decode_body(json.dumps(comp).encode())
    assert d.text == "abc" and d.timings["predicted_n"] == 9
    assert decode_body(b"<html>").protocol_error


def test_build_body():
    b = build_body("chat", "m", "hi", stream=True, max_tokens=5, ignore_eos=True, temperature=0.0,
                   extra_body={"top_k": 1})
    assert b == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                 "stream_options": {"include_usage": True}, "max_tokens": 5, "ignore_eos": True,
                 "temperature": 0.0, "top_k": 1}
    b = build_body("completions", "m", "hi", stream=False, max_tokens=None, ignore_eos=False, temperature=None,
                   extra_body=None)
    assert b == {"model": "m", "prompt": "hi", "stream": False}
