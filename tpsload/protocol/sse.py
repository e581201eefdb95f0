"""Server-sent events: bytes in, events out. No I/O, no clock.

The caller owns the socket and stamps each read before feeding it here, so the
parser can stay a plain state machine that is correct for any split of the byte
stream (see tests/test_sse.py, which feeds every split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# SSE ends a line with CRLF, CR or LF. Split on bytes, never str.splitlines():
# that also splits on Unicode separators the SSE grammar does not know.
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its data lines joined by LF, still undecoded bytes.

    `event` is the `event:` field, or b"error" for the non-standard `error: {...}`
    line that old llama-server builds send instead of a data line.
    """

    data: bytes
    event: bytes | None = None


class SSEParser:
    """Incremental SSE parser. `feed()` returns the events completed by a chunk."""

    __slots__ = ("_buf", "_data", "_event", "_skip_lf", "comments")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._skip_lf = False  # a chunk ended on CR: a LF that starts the next one belongs to it
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return [SSEEvent(e) if type(e) is bytes else e for e in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[SSEEvent | bytes]:
        """Like feed(), but a plain `data:` event (no event name) comes as its data bytes alone."""
        if not chunk:
            return []
        if self._skip_lf or b"\r" in chunk:
            return self._feed_any(chunk)  # type: ignore[return-value]
        if self._buf:  # a line split by the previous read: it continues here
            chunk = self._buf + chunk
            self._buf = b""
        events: list[SSEEvent | bytes] = []
        if self._data:
            # an event left open by the previous read: finish it line by line, then the fast
            # path takes over at the next event boundary
            pos = 0
            while self._data:
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    self._buf = chunk[pos:]
                    return events
                self._line(chunk[pos:nl], events)  # type: ignore[arg-type]
                pos = nl + 1
            chunk = chunk[pos:]
        return events + self._feed_lf(chunk) if events else self._feed_lf(chunk)

    def _feed_lf(self, chunk: bytes) -> list[SSEEvent | bytes]:
        """The common case, LF-only lines and `data: X` events: split on blank lines, no per-line work."""
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()  # after the last blank line: an incomplete event, or b""
        events: list[SSEEvent | bytes] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                events.append(block[6:])
            elif block:
                for line in block.split(b"\n"):
                    self._line(line, events)  # type: ignore[arg-type]
                self._line(b"", events)  # type: ignore[arg-type]
            else:
                # an empty block: this blank line ends the event a previous block left open, if any
                self._line(b"", events)  # type: ignore[arg-type]
        if rest:
            if rest[-1:] == b"\n":
                # complete lines without their blank line yet: fold them in, keep the event open
                for line in rest[:-1].split(b"\n"):
                    self._line(line, events)  # type: ignore[arg-type]
            else:
                lines = rest.split(b"\n")
                self._buf = lines.pop()
                for line in lines:
                    self._line(line, events)  # type: ignore[arg-type]
        return events

    def _feed_any(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        pos = 0
        for m in _EOL.finditer(buf):
            self._line(buf[pos : m.start()], events)
            pos = m.end()
        if pos == len(buf) and buf[-1:] == b"\r":
            self._skip_lf = True
        self._buf = buf[pos:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of body. Be lenient: dispatch a last event that lacks its blank line."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf, events)
            self._buf = b""
        if self._data:
            self._line(b"", events)
        return events

    @property
    def idle(self) -> bool:
        """At an event boundary: nothing held back, no event open."""
        return not self._buf and not self._data and not self._skip_lf

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(b"\n".join(self._data), self._event))
                self._data = []
            self._event = None
            return
        if line[0] == 0x3A:  # ':' comment / keep-alive ping
            self.comments += 1
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"error":
            self._event = b"error"
            self._data.append(value)
        # id, retry and unknown fields do not matter to a load tester.
