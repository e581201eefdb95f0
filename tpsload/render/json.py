"""The full result as JSON: the one place a typed result becomes the JSON of METRICS.md."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from enum import Enum
from typing import Any

from tpsload.records import INLINE, OPTIONAL


def plain(o: Any) -> Any:
    """A result (dataclasses, enums, dicts, lists, numbers) as plain JSON values.

    A dataclass becomes an object keyed by its field names, in field order; a field marked
    `records.OPTIONAL` is left out while None, one marked `records.INLINE` writes its
    dataclass's keys into the parent. Enums become their values; NaN and inf, which JSON
    has not, become null (a number that does not exist, METRICS.md)."""
    t = type(o)
    if t is float:  # first: a result is mostly numbers (its samples)
        return o if math.isfinite(o) else None
    if t is str or t is int or t is bool or o is None:
        return o
    if isinstance(o, Enum):
        return o.value
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(o):
            v = getattr(o, f.name)
            how = f.metadata.get("json")
            if how == INLINE["json"]:
                if v is not None:
                    out.update(plain(v))
            elif how != OPTIONAL["json"] or v is not None:
                out[f.name] = plain(v)
        return out
    if isinstance(o, dict):
        return {plain(k): plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain(v) for v in o]
    return o


def dumps(result: Any) -> str:
    return json.dumps(plain(result), indent=2, allow_nan=False)


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def write_text(path: str, text: str) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a result."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tpsload-", suffix=".tmp")
    try:
        # mkstemp's file is private (0600); a result is as readable as any file the user writes
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write(result: Any, path: str) -> None:
    write_text(path, dumps(result) + "\n")
