from hypothesis import given, settings
from hypothesis import strategies as st

from streams import ERROR_STREAMS, STREAMS
from tpsload.protocol.sse import SSEEvent, SSEParser

ALL = [s[0] for s in STREAMS.values()] + [s[0] for s in ERROR_STREAMS.values()]


def parse(chunks):
    p = SSEParser()
    events = []
    for c in chunks:
        events += p.feed(c)
    return events + p.close(), p


def test_basic_events_and_comments():
    events, p = parse([b": ping\n\ndata: a\n\ndata: b\ndata: c\n\nevent: x\ndata: d\n\n"])
    assert events == [SSEEvent(b"a"), SSEEvent(b"b\nc"), SSEEvent(b"d", b"x")]
    assert p.comments == 1


def test_space_after_colon_is_optional_and_only_one_is_stripped():
    events, _ = parse([b"data:a\n\ndata:  b\n\n"])
    assert [e.data for e in events] == [b"a", b" b"]


def test_blank_lines_without_data_dispatch_nothing():
    events, _ = parse([b"\n\n\r\n: c\n\n"])
    assert events == []


def test_error_line_of_old_llama_server():
    events, _ = parse([b'error: {"message": "x"}\n\n'])
    assert events == [SSEEvent(b'{"message": "x"}', b"error")]


def test_unicode_line_separators_are_not_line_ends():
    # U+2028 inside JSON text must not split the line (str.splitlines would)
    payload = '{"t": "a\u2028b\u0085c"}'.encode()
    events, _ = parse([b"data: " + payload + b"\n\n"])
    assert events == [SSEEvent(payload)]


def test_crlf_split_across_feeds():
    events, _ = parse([b"data: a\r", b"\n\r", b"\n"])
    assert events == [SSEEvent(b"a")]


def test_one_byte_at_a_time_equals_whole():
    for stream in ALL:
        whole, _ = parse([stream])
        bytewise, _ = parse([stream[i:i + 1] for i in range(len(stream))])
        assert bytewise == whole


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_any_split_gives_the_same_events(stream, cuts):
    cuts = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)], strict=True)]
    assert parse(pieces)[0] == parse([stream])[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_arbitrary_bytes_never_raise_and_split_invariant(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)], strict=True)]
    assert parse(pieces)[0] == parse([data])[0]
