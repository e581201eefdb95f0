"""One JSON line per request (`--records`): timestamps, token counts and their source, errors.

A run writes its lines as its requests finish (`RecordsFile`, the run ledger's sink), so a long
run holds no record in memory for the file's sake, and a run that dies keeps the lines written
before it. Lines come in the order requests finished; `index` says which request each is.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import IO, Any, Sequence

from tpsload.records import RequestRecord, write_jsonl
from tpsload.render.json import write_text

# lines are handed to the OS in batches: cheap per request, and a crash loses at most this many
FLUSH_EVERY = 64


def write(records: Sequence[RequestRecord], t0: int, path: str) -> None:
    buf = io.StringIO()
    write_jsonl(records, t0, buf)
    write_text(path, buf.getvalue())


class RecordsFile:
    """A --records file written line by line as requests finish ('-': standard output).

    `t0`: line times are ms after it (the run's start; with --repeat the first repetition's);
    `index_offset` is added to each index (--repeat: unique across repetitions); `extra` keys lead
    each line (a sweep's `level`). Opened on the first line, or by close() when there was none."""

    def __init__(self, path: str, append: bool = False) -> None:
        self.path = path
        self.append = append
        self.t0: int | None = None
        self.index_offset = 0
        self.extra: dict[str, Any] = {}
        self.lines = 0
        self._fh: IO[str] | None = None
        self._unflushed = 0

    def _open(self) -> IO[str]:
        if self._fh is None:
            if self.path == "-":
                self._fh = sys.stdout
            else:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._fh = open(self.path, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115
        return self._fh

    def __call__(self, rec: RequestRecord) -> None:
        d = rec.to_json(self.t0 if self.t0 is not None else 0)
        if self.index_offset:
            d["index"] += self.index_offset
        fh = self._open()
        fh.write(json.dumps({**self.extra, **d} if self.extra else d, separators=(",", ":")))
        fh.write("\n")
        self.lines += 1
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY:
            fh.flush()
            self._unflushed = 0

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._unflushed = 0

    def close(self) -> None:
        fh = self._open()
        fh.flush()
        if fh is not sys.stdout:
            fh.close()
        self._fh = None
