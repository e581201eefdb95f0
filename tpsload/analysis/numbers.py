"""The one number formatter: every table, report, chart label and verdict text writes numbers with it."""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def fmt(v: Any, digits: int | None = None) -> str:
    """A value for people: `digits` fixed decimals (columns that line up), or by default three
    significant digits below 100 and whole numbers above; thousands separated; a missing or
    non-finite number is '–'; booleans are yes/no."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return MISSING
        if digits is not None:
            return f"{v:,.{digits}f}"
        if v == 0:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)
