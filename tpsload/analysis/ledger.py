"""Finished requests, kept compact: what a long run holds in memory instead of its records. Pure.

A finished request is folded into one packed row of numbers (~240 bytes: its stamps, counts,
classes) and its chunks' arrival times into one shared array, and the request's record object
is let go: a run's memory grows by a row per request, not by its chunks, its dicts and its text.
What the summary reads back is a fresh `RequestRecord` per row (`__iter__`, in index order), the
same fields as the original where the summary uses them (server_timings keeps only
`predicted_per_second`); the full record went to the --records file as it finished (`sink`).

Chunk arrival times are kept exactly for the first EXACT_CHUNKS output chunks of a run. Past
that, every gap is folded into a log-bucketed histogram (GapHistogram: ITL and ICL percentiles
within 0.1 % of their exact values, n/mean/min/max exact) and chunk times are dropped: a record
then carries `chunks_dropped`, and steady throughput and the client timeline spread its tokens
evenly between its first and last chunk.

A record whose output tokens are still to be counted (the server sent no count) is held whole,
text and all, until the count is in (`held`, then `settle()`): the text is what the count needs.
Past HOLD_BATCH of them they go to the spill (a temporary file, core.spill) in batches, and come
back a batch at a time (`unsettled()`).
"""

from __future__ import annotations

import struct
from array import array
from typing import Any, Callable, Iterator

import numpy as np

from tpsload.records import ConnectionUse, ErrorClass, RequestRecord, TokenSource

# output chunks whose arrival times are kept exactly (8 bytes each); past this, gaps go to histograms
EXACT_CHUNKS = 1_000_000
NONE = -(2**63)  # an int64 field's None
BLOCK_ROWS = 1024
# held records (text kept for a count) stay in memory up to this many, then go to the spill in a batch
HOLD_BATCH = 256
_TIMES = ("t_sched", "t_send", "t_connected", "t_written", "t_headers", "t_first", "t_last", "t_end", "t_done",
          "t_answer")
# counts, and the labels a request carries (--turns: session, turn, slot; --stages: stage)
_COUNTS = ("output_tokens", "prompt_tokens", "cached_tokens", "reasoning_tokens", "session", "turn", "slot", "stage")
_SOURCES = (TokenSource.USAGE, TokenSource.TIMINGS, TokenSource.CHUNKS)  # the counts every record may have
_FIELDS: tuple[tuple[str, str], ...] = (
    ("index", "q"), *((t, "q") for t in _TIMES), ("cap_wait_ns", "q"), *((c, "q") for c in _COUNTS),
    *((f"count_{s}", "q") for s in _SOURCES), ("predicted_tps", "d"), ("chunk_at", "q"), ("tokens_at", "q"),
    ("chunk_n", "i"), ("tokens_n", "i"), ("content_chunks", "i"), ("reasoning_chunks", "i"), ("retries", "i"),
    ("status", "h"), ("flags", "B"), ("connection", "b"), ("token_source", "b"), ("error_class", "b"),
    ("finish", "h"), ("reasoning_source", "b"),
)
_ROW = struct.Struct("<" + "".join(code for _, code in _FIELDS))
DTYPE = np.dtype([(name, "<" + {"q": "i8", "d": "f8", "i": "i4", "h": "i2", "B": "u1", "b": "i1"}[code])
                  for name, code in _FIELDS])
assert DTYPE.itemsize == _ROW.size
_F = {name: k for k, (name, _) in enumerate(_FIELDS)}
WARMUP, STREAM, SAW_DONE, DROPPED = 1, 2, 4, 8
_CONN = list(ConnectionUse)
_SRC = list(TokenSource)
_ERR = list(ErrorClass)


def _i(v: int | None) -> int:
    return NONE if v is None else v


def _o(v: int) -> int | None:
    return None if v == NONE else v


class GapHistogram:
    """Gaps (ms) in log buckets of 1/1024 of an octave: a percentile is a bucket's middle, within
    2^-11 (0.05 %) of the value it stands for, plus linear interpolation between neighbours as
    np.percentile does; n, min, max are exact, mean and std exact up to float rounding (Chan's merge)."""

    SUB = 1024

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        pos = v > 0
        m, e = np.frexp(v[pos])
        keys = e.astype(np.int64) * self.SUB + ((m - 0.5) * 2 * self.SUB).astype(np.int64)
        zeros = int(v.size - pos.sum())  # a zero gap (two chunks in one read) stays zero
        uk, uc = np.unique(keys, return_counts=True)
        c = self.counts
        for k, n in zip(uk.tolist(), uc.tolist(), strict=True):
            c[k] = c.get(k, 0) + n
        if zeros:
            c[-(2**40)] = c.get(-(2**40), 0) + zeros
        bm, bn = float(v.mean()), v.size
        delta = bm - self.mean
        tot = self.n + bn
        self.m2 += float(((v - bm) ** 2).sum()) + delta * delta * self.n * bn / tot
        self.mean += delta * bn / tot
        self.n = tot
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: "GapHistogram") -> None:
        if not other.n:
            return
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        tot = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / tot
        self.mean += delta * other.n / tot
        self.n = tot
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    def _value(self, key: int) -> float:
        if key == -(2**40):
            return 0.0
        e, sub = divmod(key, self.SUB)
        return float(np.ldexp(0.5 + (sub + 0.5) / (2 * self.SUB), e))

    def __len__(self) -> int:
        return self.n

    def percentiles(self, qs: tuple[float, ...]) -> list[float]:
        keys = sorted(self.counts)
        cum = np.cumsum([self.counts[k] for k in keys])
        out = []
        for q in qs:
            rank = q / 100 * (self.n - 1)
            lo, hi = int(np.floor(rank)), int(np.ceil(rank))
            a = self._value(keys[int(np.searchsorted(cum, lo, side="right"))])
            b = self._value(keys[int(np.searchsorted(cum, hi, side="right"))])
            # the extremes are known exactly
            a, b = min(max(a, self.min), self.max), min(max(b, self.min), self.max)
            out.append(a + (b - a) * (rank - lo))
        return out


class Ledger:
    """The run's finished requests (see the module's docstring). `sink`, when set, gets every record
    whole as it is folded (the --records file); a worker's ledger forwards them instead (`forward`)."""

    def __init__(self, exact_chunks: int | None = None) -> None:
        self.exact_chunks = EXACT_CHUNKS if exact_chunks is None else exact_chunks
        # rows in fixed blocks, filled in place: growing one buffer would copy it, and hold two, each time
        self._blocks: list[bytearray] = []
        self._n = 0
        self._times = array("q")
        self._tokens = array("q")
        self._errors: dict[int, str] = {}
        self._texts: dict[str, str] = {}  # one copy of each distinct error message
        self._extra_counts: dict[int, dict[str, int]] = {}
        self._finish: list[str] = []
        self.held: list[RequestRecord] = []  # waiting for a token count (text kept)
        self.icl: GapHistogram | None = None  # set once chunk times pass exact_chunks
        self.itl: GapHistogram | None = None
        self.sink: Callable[[RequestRecord], None] | None = None
        self.sink_error: str | None = None  # why the sink stopped taking records
        # where held records are parked past HOLD_BATCH (core.spill: a temporary file), and read back
        self.spill: Callable[[list[RequestRecord]], None] | None = None
        self.spill_read: Callable[[], Iterator[list[RequestRecord]]] | None = None
        self._spilled = 0
        self.forward: Callable[[RequestRecord], None] | None = None
        self._view: list[RequestRecord] | None = None
        # records read back share what is the same in many: one token_counts dict per distinct set of
        # counts and one empty chunk array (the summary reads them and changes neither)
        self._shared_counts: dict[tuple[Any, ...], dict[str, int]] = {}
        self._no_chunks = array("q")

    def view(self) -> list[RequestRecord]:
        """Every request as a record, in index order: built once after the run and shared by the summary's
        readers (one set of objects, however many passes), until the next request is added."""
        if self._view is None:
            self._view = list(self._records())
        return self._view

    def release(self) -> None:
        """Let the records built for the summary go (the rows stay)."""
        self._view = None
        self._shared_counts = {}

    def copy(self) -> "Ledger":
        """What has finished so far, frozen (a checkpoint builds its result from it on another thread while
        this one goes on): the rows and chunk times copied, byte for byte; held records shared (a held
        record is not changed until the run is over). Records parked in the spill are not in it."""
        c = Ledger(self.exact_chunks)
        c._blocks = [bytearray(b) for b in self._blocks]
        c._n = self._n
        c._times, c._tokens = array("q", self._times), array("q", self._tokens)
        c._errors, c._texts = dict(self._errors), dict(self._texts)
        c._extra_counts, c._finish = dict(self._extra_counts), list(self._finish)
        c.held = list(self.held)
        if self.icl is not None and self.itl is not None:
            c.icl, c.itl = GapHistogram(), GapHistogram()
            c.icl.merge(self.icl)
            c.itl.merge(self.itl)
        return c

    @classmethod
    def spilling(cls, spill: Any) -> "Ledger":
        """A ledger that parks held records in `spill` (core.spill.SpillFile: a call to write a batch,
        read() to get them back)."""
        led = cls()
        led.spill, led.spill_read = spill, spill.read
        return led

    # -- in ------------------------------------------------------------------------------------
    def append(self, rec: RequestRecord) -> None:
        """A finished (or cancelled) request."""
        self._view = None
        if self.forward is not None:
            self.forward(rec)
        elif (rec.output_tokens is None and rec.text is not None) or \
                (rec.reasoning_tokens is None and rec.reasoning_text is not None):
            self.held.append(rec)
            if self.spill is not None and len(self.held) >= HOLD_BATCH:
                self._spilled += len(self.held)
                self.spill(self.held)
                self.held = []
        else:
            self._fold(rec)

    def extend(self, recs: Any) -> None:
        for r in recs:
            self.append(r)

    def unsettled(self) -> Iterator[list[RequestRecord]]:
        """The held records, a batch at a time (those parked in the spill first), each to be counted and
        then given to settle(); a batch is let go once settled."""
        if self.spill_read is not None and self._spilled:
            self._spilled = 0
            yield from self.spill_read()
        if self.held:
            held, self.held = self.held, []
            yield held

    def settle(self, batch: list[RequestRecord] | None = None) -> None:
        """Fold held records (`batch`, or every one still in memory), their counts now in (or not to be had)."""
        self._view = None
        if batch is None:
            batch, self.held = self.held, []
        for r in batch:
            r.text = r.reasoning_text = None
            self._fold(r)

    def _fold(self, r: RequestRecord) -> None:
        if self.sink is not None:
            try:
                self.sink(r)
            except OSError as e:  # a full disk: the run and its summary go on without the file
                self.sink, self.sink_error = None, f"{e.__class__.__name__}: {e}"
        n = len(r.chunk_times)
        flags = (WARMUP * r.warmup) | (STREAM * r.stream) | (SAW_DONE * r.saw_done)
        chunk_at = tokens_at = -1
        tokens_n = 0
        if self.icl is None and len(self._times) + n > self.exact_chunks:
            self._drop_chunks()
        if self.icl is None:
            if n:
                chunk_at = len(self._times)
                self._times.extend(r.chunk_times)
            if r.chunk_tokens is not None:
                tokens_at, tokens_n = len(self._tokens), len(r.chunk_tokens)
                self._tokens.extend(r.chunk_tokens)
        elif n:
            if r.ok and not r.warmup:  # the summary's ITL and ICL are over successful measured requests
                self._fold_gaps(r.chunk_times, r.chunk_tokens)
            flags |= DROPPED
        elif r.chunks_dropped:
            flags |= DROPPED
        fr = r.finish_reason
        finish = -1
        if fr is not None:
            if fr not in self._finish:
                self._finish.append(fr)
            finish = self._finish.index(fr)
        counts = r.token_counts
        pt = (r.server_timings or {}).get("predicted_per_second")
        pt = float(pt) if isinstance(pt, (int, float)) and pt else float("nan")
        row = self._n
        block, at = divmod(row, BLOCK_ROWS)
        if block == len(self._blocks):
            self._blocks.append(bytearray(BLOCK_ROWS * _ROW.size))
        self._n += 1
        _ROW.pack_into(
            self._blocks[block], at * _ROW.size,
            r.index, *(_i(getattr(r, t)) for t in _TIMES), r.cap_wait_ns, *(_i(getattr(r, c)) for c in _COUNTS),
            *(_i(counts.get(s)) for s in _SOURCES), pt, chunk_at, tokens_at,
            n, tokens_n, r.content_chunks, r.reasoning_chunks, r.retries, -1 if r.status is None else r.status,
            flags, -1 if r.connection is None else _CONN.index(r.connection),
            -1 if r.token_source is None else _SRC.index(r.token_source),
            -1 if r.error_class is None else _ERR.index(r.error_class), finish,
            -1 if r.reasoning_source is None else _SRC.index(r.reasoning_source))
        if r.error is not None:
            self._errors[row] = self._texts.setdefault(r.error, r.error)
        extra = {k: v for k, v in counts.items() if k not in _SOURCES}
        if extra:
            self._extra_counts[row] = extra

    def _fold_gaps(self, times: Any, tokens: Any) -> None:
        assert self.icl is not None and self.itl is not None
        if len(times) < 2:
            return
        icl = np.diff(np.frombuffer(times, dtype=np.int64) if isinstance(times, array)
                      else np.asarray(times, dtype=np.int64)) / 1e6
        self.icl.add(icl)
        if tokens is None or len(tokens) != len(times):
            self.itl.add(icl)
            return
        kk = np.asarray(tokens, dtype=np.int64)[1:]
        pos = kk > 0
        self.itl.add(np.repeat(icl[pos] / kk[pos], kk[pos]))

    def _drop_chunks(self) -> None:
        """Past the exact budget: every kept chunk time into the histograms, and the arrays let go."""
        self.icl, self.itl = GapHistogram(), GapHistogram()
        view = self.rows().copy()
        ok = (view["error_class"] < 0) & (view["t_end"] != NONE) & ((view["flags"] & WARMUP) == 0)
        for at, n, ta, tn, good in zip(view["chunk_at"].tolist(), view["chunk_n"].tolist(),
                                       view["tokens_at"].tolist(), view["tokens_n"].tolist(), ok.tolist(), strict=True):
            if at >= 0 and good:
                self._fold_gaps(self._times[at:at + n], self._tokens[ta:ta + tn] if ta >= 0 else None)
        had = view["chunk_at"] >= 0
        view["flags"][had] |= DROPPED
        view["chunk_at"][had] = -1
        view["tokens_at"][:] = -1
        data = view.tobytes()
        step = BLOCK_ROWS * _ROW.size
        for k, block in enumerate(self._blocks):
            chunk = data[k * step:(k + 1) * step]
            block[:len(chunk)] = chunk
        self._times, self._tokens = array("q"), array("q")

    def merge_gaps(self, gaps: tuple[GapHistogram, GapHistogram]) -> None:
        """Another run's folded gaps (--repeat pools repetitions): this ledger's go to histograms too."""
        if self.icl is None:
            self._drop_chunks()
        assert self.icl is not None and self.itl is not None
        self.icl.merge(gaps[0])
        self.itl.merge(gaps[1])

    def gaps(self) -> tuple[GapHistogram, GapHistogram] | None:
        """(ICL, ITL) of the successful measured requests once chunk times were dropped; None while exact."""
        return None if self.icl is None or self.itl is None else (self.icl, self.itl)

    # -- out -----------------------------------------------------------------------------------
    def rows(self) -> np.ndarray:
        """The folded requests as a structured array (a copy), in the order they finished."""
        if not self._n:
            return np.empty(0, dtype=DTYPE)
        return np.concatenate([np.frombuffer(b, dtype=DTYPE) for b in self._blocks])[:self._n]

    def __len__(self) -> int:
        return self._n + len(self.held) + self._spilled

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.view())

    def _records(self) -> Iterator[RequestRecord]:
        """Every request, folded or held, in index order (the order they were started in)."""
        idx = np.concatenate([np.frombuffer(b, dtype=DTYPE)["index"] for b in self._blocks])[:self._n] \
            if self._n else np.empty(0, np.int64)
        held = sorted(self.held, key=lambda r: r.index)
        order = np.argsort(idx, kind="stable").tolist()
        h = 0
        for row in order:
            rec = self._record(row)
            while h < len(held) and held[h].index < rec.index:
                yield held[h]
                h += 1
            yield rec
        yield from held[h:]

    def _record(self, row: int) -> RequestRecord:
        block, at = divmod(row, BLOCK_ROWS)
        v = _ROW.unpack_from(self._blocks[block], at * _ROW.size)
        f = _F
        key = tuple(v[f[f"count_{s}"]] for s in _SOURCES)
        extra = self._extra_counts.get(row)
        counts = self._shared_counts.get(key) if extra is None else None
        if counts is None:
            counts = {s: n for s, n in zip(_SOURCES, key, strict=True) if n != NONE}
            if extra is None:
                self._shared_counts[key] = counts
            else:
                counts.update(extra)
        at, n, ta, tn = v[f["chunk_at"]], v[f["chunk_n"]], v[f["tokens_at"]], v[f["tokens_n"]]
        flags = v[f["flags"]]
        pt = v[f["predicted_tps"]]
        cls, src, conn, fin = v[f["error_class"]], v[f["token_source"]], v[f["connection"]], v[f["finish"]]
        rsrc = v[f["reasoning_source"]]
        return RequestRecord(
            index=v[0], warmup=bool(flags & WARMUP), stream=bool(flags & STREAM),
            **{t: _o(v[f[t]]) for t in _TIMES}, cap_wait_ns=v[f["cap_wait_ns"]],
            connection=None if conn < 0 else _CONN[conn],
            chunk_times=self._times[at:at + n] if at >= 0 else self._no_chunks,
            chunk_tokens=self._tokens[ta:ta + tn] if ta >= 0 else None,
            **{c: _o(v[f[c]]) for c in _COUNTS}, token_source=None if src < 0 else _SRC[src], token_counts=counts,
            content_chunks=v[f["content_chunks"]], reasoning_chunks=v[f["reasoning_chunks"]],
            finish_reason=None if fin < 0 else self._finish[fin], saw_done=bool(flags & SAW_DONE),
            status=None if v[f["status"]] < 0 else v[f["status"]], error_class=None if cls < 0 else _ERR[cls],
            error=self._errors.get(row), retries=v[f["retries"]],
            server_timings={"predicted_per_second": pt} if pt == pt else None,
            chunks_dropped=bool(flags & DROPPED), reasoning_source=None if rsrc < 0 else _SRC[rsrc])
