"""The full result as JSON."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Any


def _clean(o: Any) -> Any:
    # NaN/inf are not JSON; a number that does not exist is null (METRICS.md)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(_clean(result), indent=2, allow_nan=False)


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
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write(result: dict[str, Any], path: str) -> None:
    write_text(path, dumps(result) + "\n")
