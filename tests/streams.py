"""Byte-exact stream shapes of real servers (../shared/SERVERS.md), shared by the parser tests."""

from __future__ import annotations

import json


def ev(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chat_delta(content=None, role=None, finish=None, **extra):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None or role:
        delta["content"] = content
    delta.update(extra)
    return {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish}]}


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
TIMINGS = {"prompt_n": 7, "prompt_ms": 10.0, "predicted_n": 3, "predicted_ms": 30.0,
           "predicted_per_second": 100.0, "cache_n": 0}

# name -> (bytes, expected output chunks, expected text, expected usage completion tokens, done)
STREAMS = {
    # vLLM: role-only chunk first (content ""), usage on its own chunk with choices: []
    "vllm_chat": (
        ev(chat_delta("", role="assistant")) + ev(chat_delta("Hel")) + ev(chat_delta("lo")) + ev(chat_delta("!"))
        + ev(chat_delta(None, finish="stop") | {}) + ev({"id": "x", "choices": [], "usage": USAGE})
        + b"data: [DONE]\n\n",
        3, "Hello!", 3, True),
    # llama-server: role chunk with content null, keep-alive comments, timings on the last chunk
    "llama_chat": (
        b": ping\n\n" + ev(chat_delta(None, role="assistant")) + b": ping\n\n" + ev(chat_delta("Hel"))
        + ev(chat_delta("lo")) + ev(chat_delta("!"))
        + ev({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "timings": TIMINGS})
        + ev({"choices": [], "usage": USAGE, "timings": TIMINGS}) + b"data: [DONE]\n\n",
        3, "Hello!", 3, True),
    # llama-server /v1/completions: text chunks, usage on the final chunk, no [DONE]
    "llama_completions": (
        ev({"choices": [{"index": 0, "text": "Hel", "finish_reason": None}]})
        + ev({"choices": [{"index": 0, "text": "lo", "finish_reason": None}]})
        + ev({"choices": [{"index": 0, "text": "!", "finish_reason": "length"}], "usage": USAGE,
              "timings": TIMINGS}),
        3, "Hello!", 3, False),
    # reasoning models: reasoning_content (llama.cpp, SGLang) and reasoning (newer vLLM, Ollama)
    "reasoning": (
        ev(chat_delta("", role="assistant")) + ev(chat_delta(None, reasoning_content="think"))
        + ev(chat_delta(None, reasoning="more")) + ev(chat_delta("answer"))
        + ev({"choices": [], "usage": USAGE}) + b"data: [DONE]\n\n",
        3, "thinkmoreanswer", 3, True),
    # CRLF line endings and an event field
    "crlf": (
        b"event: message\r\ndata: " + json.dumps(chat_delta("a")).encode() + b"\r\n\r\n"
        + b"data: " + json.dumps(chat_delta("b")).encode() + b"\r\n\r\ndata: [DONE]\r\n\r\n",
        2, "ab", None, True),
    # bare CR line endings (legal SSE)
    "cr": (
        b"data: " + json.dumps(chat_delta("a")).encode() + b"\r\rdata: " + json.dumps(chat_delta("b")).encode()
        + b"\r\r",
        2, "ab", None, False),
    # vLLM/SGLang continuous_usage_stats: cumulative usage per chunk; chunk 2 carries 3 tokens
    "continuous_usage": (
        ev(chat_delta("a") | {"usage": {"completion_tokens": 1}})
        + ev(chat_delta("bcd") | {"usage": {"completion_tokens": 4}})
        + ev(chat_delta("e") | {"usage": {"completion_tokens": 5}}) + b"data: [DONE]\n\n",
        3, "abcde", 5, True),
    # a final event without its blank line at end of body
    "unterminated": (ev(chat_delta("a")) + b"data: " + json.dumps(chat_delta("b")).encode(), 2, "ab", None, False),
}

ERROR_STREAMS = {
    "error_event": (ev(chat_delta("a")) + ev({"error": {"message": "boom", "code": 500}}), "stream_error", 1),
    "old_llama_error_line": (ev(chat_delta("a")) + b'error: {"message": "slot gone", "code": 500}\n\n',
                             "stream_error", 1),
    "malformed_json": (ev(chat_delta("a")) + b"data: {not json\n\n" + ev(chat_delta("b")), "protocol", 1),
    "not_utf8": (ev(chat_delta("a")) + b'data: {"choices": [{"delta": {"content": "\xff\xfe"}}]}\n\n',
                 "protocol", 1),
}
