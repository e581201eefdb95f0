"""A sweep as CSV: one row per level (pandas.read_csv reads it)."""

from __future__ import annotations

import csv
import io
from typing import Any

from tpsload.analysis.sweep import CSV_COLUMNS, csv_row
from tpsload.render.json import write_text


def dumps(sweep: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for level in sweep["levels"]:
        w.writerow({k: ("" if v is None else v) for k, v in csv_row(level, sweep["key"]).items()})
    return buf.getvalue()


def write(sweep: dict[str, Any], path: str) -> None:
    write_text(path, dumps(sweep))
