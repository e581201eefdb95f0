"""`sweep`: the same run at rising load, level by level; --resume; what the sweep's exit code is.

Each level is a run as `run` would measure it (app.measure.measure_repeated), with prompts of its
own (workload.seeds). After every level the JSON, CSV and records are written, so an interrupted
sweep keeps what it finished and `--resume` runs only the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from tpsload import __version__
from tpsload.analysis import sweep as sw
from tpsload.app.measure import measure_repeated
from tpsload.app.target import MockSettings, serving
from tpsload.config import RunConfig
from tpsload.errors import TpsloadError
from tpsload.render import csv as export_csv
from tpsload.render import json as export_json
from tpsload.render.console import notice
from tpsload.render.jsonl import RecordsFile
from tpsload.workload import seeds

KEYS = ("concurrency", "rate")


@dataclass(frozen=True)
class SweepOptions:
    """A sweep: the swept key and each level's config (as `run` would parse that level's flags), and
    how to run and save it. Paths of '-' mean stdout (the caller writes the JSON there at the end)."""

    key: str
    levels: tuple[tuple[float, RunConfig], ...]
    repeat: int = 1
    tolerance: float = 0.05
    early_stop: bool = True
    resume: bool = False
    json_path: str | None = None
    csv_path: str | None = None
    records_path: str | None = None
    show_progress: bool = True
    mock: MockSettings = field(default_factory=MockSettings)
    # instead of records_path, a records file the caller owns (a matrix's): each level's lines go there,
    # led by the file's own `extra` (the configuration) and the level
    records: RecordsFile | None = None

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"a sweep's key is one of {KEYS}, not {self.key!r}")
        if not self.levels:
            raise TpsloadError("a sweep needs at least one level")
        if self.json_path == "-" and self.records_path == "-":
            raise TpsloadError("--json - and --records - cannot both go to stdout; give one a file")


@dataclass
class SweepOutcome:
    """The sweep (the JSON's content), its exit code and why it is not 0, and a bug of ours that
    stopped it (the caller reports it after writing the outputs, as `run` does)."""

    sweep: dict[str, Any]
    exit_code: int = 0
    message: str | None = None
    internal_error: BaseException | None = None


def level_config(cfg: RunConfig, value: float) -> RunConfig:
    """A level's run: prompts of its own (a seed derived from --seed and the level, or a level would
    find the previous level's prompts in the server's prompt cache), never the one-request mode."""
    return cfg.replace(seed=seeds.derive(cfg.workload.seed, level=value), single=False)


def base_config(opts: SweepOptions) -> dict[str, Any]:
    """The options the levels share (the JSON's `base_config`): the first level's, with the user's own seed."""
    cfg = opts.levels[0][1].replace(single=False)
    return {k: v for k, v in cfg.public().items() if k not in KEYS}


def _compared(base: dict[str, Any], mock: dict[str, Any] | None) -> dict[str, Any]:
    # the mock's timing shapes what a --mock sweep measures, though it is not part of the run's config
    return {**base, **{f"mock_{k}": v for k, v in (mock or {}).items()}}


def read_saved(path: str | None, kind: str) -> dict[str, Any]:
    """The `kind` ("sweep", "matrix") result saved at --json that --resume continues; a one-line error
    when there is none, or it is not one."""
    if not path or path == "-" or not os.path.exists(path):
        raise TpsloadError(f"--resume needs --json PATH of the {kind} to continue, and that file must exist")
    try:
        with open(path) as fh:
            old = json.load(fh)
    except ValueError as e:
        raise TpsloadError(f"--resume: {path} is not a {kind} result ({e})") from None
    if not isinstance(old, dict) or old.get("kind") != kind:
        raise TpsloadError(f"--resume: {path} is not a {kind} result")
    return old


def load_resume(opts: SweepOptions, base: dict[str, Any], mock: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The finished levels of the sweep saved at --json, after checking it measured the same thing."""
    path = opts.json_path
    old = read_saved(path, "sweep")
    if old.get("key") != opts.key:
        raise TpsloadError(f"--resume: {path} is not a {opts.key} sweep")
    kept = sw.finished(old.get("levels") or [])
    # `requests` defaults per level (4 x concurrency), so it is compared level by level below
    why = sw.resume_mismatch(_compared(old.get("base_config") or {}, old.get("mock")), _compared(base, mock),
                             ignore=("requests",))
    planned = dict(opts.levels)
    for lv in kept:
        if why is None and lv.get(opts.key) in planned and lv.get("config"):
            # seeds: compared in base_config (a level's own is derived from it)
            why = sw.resume_mismatch(lv["config"], level_config(planned[lv[opts.key]], lv[opts.key]).public(),
                                     ignore=(opts.key, "seed"))
    if why:
        raise TpsloadError(f"--resume: the sweep in {path} was measured with {why}; resume with the options it "
                           "was made with, or write to another --json")
    return kept


def _save(sweep: dict[str, Any], opts: SweepOptions) -> None:
    if opts.json_path and opts.json_path != "-":
        export_json.write(sweep, opts.json_path)
    if opts.csv_path:
        export_csv.write(sweep, opts.csv_path)


def start_records(path: str | None, keep: Callable[[dict[str, Any]], bool] | None = None) -> None:
    """A fresh records file, or on resume the lines `keep` accepts (those of the kept levels or
    configurations: one run again is written again)."""
    if not path or path == "-":
        return
    lines: list[str] = []
    if keep is not None and os.path.exists(path):
        with open(path) as fh:
            lines = [ln for ln in fh if ln.strip() and keep(json.loads(ln))]
    export_json.write_text(path, "".join(lines))


def _analyse(sweep: dict[str, Any], tolerance: float) -> None:
    sweep["levels"].sort(key=lambda lv: lv[sweep["key"]])
    sweep["saturation"] = sw.saturation(sweep["levels"], sweep["key"], tolerance)
    sweep["slo_frontier"] = sw.slo_frontier(sweep["levels"], sweep["key"])


def run(opts: SweepOptions) -> SweepOutcome:
    """Run the levels not yet finished, in order, until the last, a failed level (exit 1), the
    early-stop verdict, or a signal (128 + N). A problem before or between levels (pre-flight: the
    server is unreachable, the model unknown...) raises TpsloadError (exit 2) after saving what was
    measured; so does one in a later level."""
    key = opts.key
    base = base_config(opts)
    first = opts.levels[0][1]
    mock = opts.mock.public() if first.target.mock else None
    sweep: dict[str, Any] = {
        "tpsload_version": __version__, "kind": "sweep", "key": key, "partial": False, "stop_reason": None,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_config": base,
        **({"mock": mock} if mock else {}),
        "levels": load_resume(opts, base, mock) if opts.resume else [],
    }
    done = {lv[key] for lv in sweep["levels"]}
    records, owned = opts.records, False
    if records is None and opts.records_path:
        start_records(opts.records_path, (lambda line: line.get("level") in done) if done else None)
        records, owned = RecordsFile(opts.records_path, append=True), True
    # each level's lines carry its value as `level`, times relative to the level's own start (its
    # result's clock.t0_ns); written as its requests finish
    lead = dict(records.extra) if records is not None else {}
    out = SweepOutcome(sweep)
    todo = [(value, level_config(cfg, value)) for value, cfg in opts.levels if value not in done]
    with serving(first, opts.mock) as served, contextlib.closing(records) if owned else contextlib.nullcontext():
        for i, (value, cfg) in enumerate(todo):
            name = sw.name(key, value)
            if opts.show_progress:
                notice(f"{name} …")
            try:
                if records is not None:
                    records.extra, records.t0 = {**lead, "level": value}, None
                result, state = measure_repeated(cfg.replace(base_url=served.url), opts.repeat,
                                                 show_progress=opts.show_progress, records=records)
            except TpsloadError as e:
                if sweep["levels"]:  # keep what was measured, and say why the rest was not
                    sweep["partial"], sweep["stop_reason"] = True, f"{name}: {e}"
                    _analyse(sweep, opts.tolerance)
                    _save(sweep, opts)
                raise
            except KeyboardInterrupt:  # Ctrl-C before the level's run took over the signal
                sweep["partial"], sweep["stop_reason"] = True, f"interrupted (SIGINT) before {name} started"
                out.exit_code = 130
                break
            result[key] = value
            sweep["levels"].append(result)
            _analyse(sweep, opts.tolerance)
            # after every level: an interrupted sweep keeps what it finished
            _save(sweep, opts)
            if records is not None:
                records.flush()
            rest = "; higher levels not run" if i + 1 < len(todo) else ""
            if state.internal_error is not None:
                sweep["partial"], sweep["stop_reason"] = True, f"{name}: {result['stop_reason']}{rest}"
                out.internal_error = state.internal_error
                break
            if state.signal is not None:
                sweep["partial"], sweep["stop_reason"] = True, result["stop_reason"]
                out.exit_code = 128 + state.signal
                break
            why = sw.level_failure(result, cfg.limits.max_error_rate)
            if why:
                sweep["partial"], sweep["stop_reason"] = True, f"{name} failed: {why}{rest}"
                out.exit_code, out.message = 1, sweep["stop_reason"]
                break
            why = sw.should_stop(sweep["levels"], opts.tolerance) if opts.early_stop and rest else None
            if why:
                sweep["stop_reason"] = f"stopped early: {why}"
                break
    _save(sweep, opts)
    return out
