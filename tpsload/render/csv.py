"""A sweep or a matrix as CSV: one row per level (a matrix's per configuration and level); pandas.read_csv
reads it, and the same script reads both (a matrix's rows lead with the configuration and its parameters)."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

from tpsload.analysis import matrix as mx
from tpsload.analysis.sweep import CSV_COLUMNS, csv_row
from tpsload.render.json import write_text


def _table(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def dumps(result: dict[str, Any]) -> str:
    if result.get("kind") == "matrix":
        return _table(mx.csv_columns(result), mx.csv_rows(result))
    return _table(CSV_COLUMNS, [csv_row(level, result["key"]) for level in result["levels"]])


def write(result: dict[str, Any], path: str) -> None:
    write_text(path, dumps(result))
