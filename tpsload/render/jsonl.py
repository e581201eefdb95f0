"""One JSON line per request (`--records`): timestamps, token counts and their source, errors."""

from __future__ import annotations

import io
from typing import Sequence

from tpsload.records import RequestRecord, write_jsonl
from tpsload.render.json import write_text


def write(records: Sequence[RequestRecord], t0: int, path: str) -> None:
    buf = io.StringIO()
    write_jsonl(records, t0, buf)
    write_text(path, buf.getvalue())
