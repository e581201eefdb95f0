"""The OpenAI wire format: request bodies out, stream chunks and bodies in. Pure.

This is where "does this chunk carry output?" is decided (METRICS.md, `t_first`):
a role-only chunk, an empty chunk or a usage-only chunk is not output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tpsload.protocol.sse import SSEParser

_loads = json.loads

# After the first token, a chunk whose JSON needs nothing but "does it carry output?" is
# classified by these instead of being parsed (a third of the per-chunk cost at high load).
# Anything else -- usage, timings, an error, finish_reason, non-ASCII text, odd framing --
# takes the full parse.
_NEEDS_PARSE = re.compile(rb'"(?:usage|timings)"\s*:\s*\{|"error"|"finish_reason"\s*:\s*"').search
_OUTPUT = re.compile(rb'"(content|text|reasoning_content|reasoning)"\s*:\s*"(?:[^"\\]|\\.)').search


class ProtocolError(ValueError):
    """A response that cannot be read as the OpenAI format (bad JSON, wrong shape, bad UTF-8)."""


@dataclass(slots=True)
class Decoded:
    """What one response said, independent of when it said it."""

    chunk_times: list[int] = field(default_factory=list)  # arrival (ns) of each output-bearing chunk
    chunk_usage: list[int] | None = None  # cumulative completion_tokens per output chunk, when sent
    content_chunks: int = 0  # output chunks with content (or completions text) ...
    reasoning_chunks: int = 0  # ... and with reasoning, counted apart
    # answer (content/text) and reasoning text in order; raw JSON bytes for chunks the fast path did not parse
    text_parts: list[str | bytes] = field(default_factory=list)
    reasoning_parts: list[str | bytes] = field(default_factory=list)
    # index in chunk_times of the first chunk with answer text (content/text), -1 while none: its arrival,
    # taken after the request, is the time to first answer of a thinking model
    first_answer: int = -1
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False  # saw [DONE]
    events: int = 0
    comments: int = 0
    error: str | None = None  # server-sent error event
    protocol_error: str | None = None

    @property
    def text(self) -> str:
        """All the generated text, reasoning and answer (parses the chunks the fast path skipped: only
        needed without usage)."""
        reasoning, answer = self.texts()
        return reasoning + answer

    def texts(self) -> tuple[str, str]:
        """(reasoning, answer) text, apart."""
        reasoning: list[str] = []
        answer: list[str] = []
        for parts, plain in ((self.reasoning_parts, reasoning), (self.text_parts, answer)):
            for p in parts:
                if type(p) is bytes:
                    tmp = Decoded()
                    _apply(_loads(p), tmp)
                    reasoning.extend(tmp.reasoning_parts)  # type: ignore[arg-type]
                    answer.extend(tmp.text_parts)  # type: ignore[arg-type]
                else:
                    plain.append(p)  # type: ignore[arg-type]
        return "".join(reasoning), "".join(answer)


def build_body(
    endpoint: str,
    model: str,
    prompt: str | list[dict[str, Any]],
    *,
    stream: bool,
    max_tokens: int | None,
    ignore_eos: bool,
    temperature: float | None,
    extra_body: dict[str, Any] | None,
    continuous_usage: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if endpoint == "chat":
        body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
        if continuous_usage:  # vLLM/SGLang: cumulative usage on every chunk = tokens per chunk
            body["stream_options"]["continuous_usage_stats"] = True
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if ignore_eos:
        body["ignore_eos"] = True
    if temperature is not None:
        body["temperature"] = temperature
    if extra_body:
        body.update(extra_body)
    return body


def _output_of(choice: dict[str, Any]) -> tuple[str, str]:
    """(content, reasoning) text a choice carries; empty strings when none."""
    delta = choice.get("delta")
    if delta is None:
        delta = choice.get("message")
    if isinstance(delta, dict):
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    else:
        content, reasoning = "", ""
    text = choice.get("text")
    if text:
        content = content + text if isinstance(content, str) else text
    if not isinstance(content, str):
        content = ""
    if not isinstance(reasoning, str):
        reasoning = ""
    return content, reasoning


def _apply(obj: Any, out: Decoded) -> tuple[bool, int | None]:
    """Fold one decoded JSON object into `out`. Returns (carries_output, cumulative completion tokens)."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    err = obj.get("error")
    if err:
        out.error = error_message(obj)
        return False, None
    usage = obj.get("usage")
    cum = None
    if isinstance(usage, dict):
        out.usage = usage
        ct = usage.get("completion_tokens")
        if isinstance(ct, int):
            cum = ct
    timings = obj.get("timings")
    if isinstance(timings, dict):
        out.timings = timings
    carries = False
    choices = obj.get("choices")
    if choices:
        if not isinstance(choices, list):
            raise ProtocolError("'choices' is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise ProtocolError("a choice is not an object")
            content, reasoning = _output_of(choice)
            if content:
                carries = True
                if out.first_answer < 0:
                    out.first_answer = len(out.chunk_times)  # this chunk's index, once it is appended
                out.content_chunks += 1
                out.text_parts.append(content)
            if reasoning:
                carries = True
                out.reasoning_chunks += 1
                out.reasoning_parts.append(reasoning)
            fr = choice.get("finish_reason")
            if fr:
                out.finish_reason = fr
    return carries, cum


class StreamDecoder:
    """Folds a streamed response into a `Decoded`, one stamped read at a time.

    An event's arrival time is the stamp of the read that completed it. Parsing per
    read spreads the work evenly over the loop instead of stalling it at stream end.
    """

    __slots__ = ("out", "_parser", "_cum", "_have_cum")

    def __init__(self) -> None:
        self.out = Decoded()
        self._parser = SSEParser()
        self._cum: list[int] = []
        self._have_cum = True

    def feed(self, ts: int, data: bytes) -> bool:
        """Returns False once the stream has failed (error event or unparseable data)."""
        out = self.out
        times = out.chunk_times
        if times and data[-2:] == b"\n\n" and data[:7] == b"data: {" and data.find(b"\n") == len(data) - 2 \
                and self._parser.idle and data.isascii() and data[-3] == 125 and not _NEEDS_PARSE(data):
            # the usual read at high load: exactly one plain `data: {...}` event, after the first token
            out.events += 1
            m = _OUTPUT(data)
            if m:
                times.append(ts)
                self._have_cum = False
                if m.end(1) - m.start(1) < 8:  # "content" or "text", not "reasoning..."
                    if out.first_answer < 0:
                        out.first_answer = len(times) - 1
                    out.content_chunks += 1
                    out.text_parts.append(data[6:-2])
                else:
                    out.reasoning_chunks += 1
                    out.reasoning_parts.append(data[6:-2])
            return True
        for ev in self._parser.feed_raw(data):
            if type(ev) is bytes:
                # the first token is always decided by a full parse; later plain chunks need not be
                if times and ev and ev[0] == 123 and ev[-1] == 125 and ev.isascii() and not _NEEDS_PARSE(ev):
                    out.events += 1
                    m = _OUTPUT(ev)
                    if m:
                        times.append(ts)
                        self._have_cum = False
                        if m.end(1) - m.start(1) < 8:  # "content" or "text", not "reasoning..."
                            if out.first_answer < 0:
                                out.first_answer = len(times) - 1
                            out.content_chunks += 1
                            out.text_parts.append(ev)
                        else:
                            out.reasoning_chunks += 1
                            out.reasoning_parts.append(ev)
                    continue
                self._event(ev, None, ts)
            else:
                self._event(ev.data, ev.event, ts)
            if out.error or out.protocol_error:
                return False
        return True

    def close(self, ts: int) -> Decoded:
        out = self.out
        if not (out.error or out.protocol_error):
            for ev in self._parser.close():
                self._event(ev.data, ev.event, ts)
        out.comments = self._parser.comments
        if self._have_cum and self._cum and len(self._cum) == len(out.chunk_times):
            out.chunk_usage = self._cum
        return out

    def _event(self, data: bytes, event: bytes | None, ts: int) -> None:
        out = self.out
        out.events += 1
        if data == b"[DONE]":
            out.done = True
            return
        if not data.strip():
            return
        try:
            obj = _loads(data)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
            if event == b"error":
                out.error = data.decode("utf-8", "replace")[:500]
            else:
                out.protocol_error = f"unparseable data line ({e.__class__.__name__}: {e})"[:300]
            return
        if event == b"error" and isinstance(obj, dict) and "error" not in obj:
            out.error = error_message({"error": obj})
            return
        try:
            carries, cum = _apply(obj, out)
        except ProtocolError as e:
            out.protocol_error = str(e)
            return
        if carries:
            out.chunk_times.append(ts)
            if cum is None:
                self._have_cum = False
            else:
                self._cum.append(cum)


def decode_stream(reads: list[tuple[int, bytes]]) -> Decoded:
    """A whole streamed response given as (stamp, bytes) reads."""
    dec = StreamDecoder()
    for ts, data in reads:
        if not dec.feed(ts, data):
            break
    return dec.close(reads[-1][0] if reads else 0)


def decode_body(body: bytes) -> Decoded:
    """A non-streamed response body."""
    out = Decoded()
    try:
        obj = _loads(body)
        _apply(obj, out)
    except ValueError as e:
        out.protocol_error = f"unparseable response body ({e})"[:300]
    return out


def error_message(obj: Any) -> str:
    """The human message of an OpenAI-shaped error object (or whatever was sent)."""
    err = obj.get("error") if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        msg = err.get("message") or err.get("type") or json.dumps(err)[:300]
        code = err.get("code")
        return f"{msg} (code {code})" if code not in (None, "") else str(msg)
    return str(err)[:300]


def error_from_body(body: bytes) -> str:
    try:
        return error_message(_loads(body))
    except ValueError:
        return body[:300].decode("utf-8", "replace").strip()
