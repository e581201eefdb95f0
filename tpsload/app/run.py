"""`run`: one measured run (or --repeat N) against the target, and what its exit code is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tpsload.app.measure import Watch, measure_repeated
from tpsload.app.target import MockSettings, serving
from tpsload.config import RunConfig
from tpsload.core.runner import RunState
from tpsload.render.jsonl import RecordsFile


@dataclass(frozen=True)
class RunOptions:
    """How to run, beyond what the config says to measure."""

    repeat: int = 1
    fail_on_slo: bool = False
    show_progress: bool = True
    mock: MockSettings = field(default_factory=MockSettings)
    watch: Watch = field(default_factory=Watch)  # the live view, checkpoints, --serve-metrics's numbers
    records: RecordsFile | None = None  # --records, written as requests finish


@dataclass
class RunOutcome:
    """The result, the run's state (records, signal, internal error), the exit code and why it is not 0."""

    result: dict[str, Any]
    state: RunState
    exit_code: int
    message: str | None = None


def exit_code(result: dict[str, Any], state: RunState, fail_on_slo: bool) -> tuple[int, str | None]:
    """0 done; 1 stopped early, more failed than --max-failed-share (every request, at worst), or
    (with fail_on_slo) an SLO missed;
    128 + N after signal N. A problem found before the run (pre-flight) is a TpsloadError: 2."""
    if state.signal is not None:
        return 128 + state.signal, None
    if state.stop_reason:
        return 1, f"stopped early: {state.stop_reason}"
    s = result["summary"]
    too_many = result["errors"].get("too_many_failed")
    if too_many:
        return 1, too_many
    if s["requests_ok"] == 0 and s["requests_failed"] > 0:
        return 1, None  # the table says so
    if fail_on_slo and result["slo"] and not result["slo"]["all_met"]:
        missed = [v["slo"] for v in result["slo"]["objectives"] if not v["met"]]
        return 1, f"SLO missed: {', '.join(missed)}"
    return 0, None


def run(cfg: RunConfig, opts: RunOptions) -> RunOutcome:
    """Measure (starting and stopping the mock for --mock); always returns what was measured."""
    with serving(cfg, opts.mock) as served:
        result, state = measure_repeated(cfg.replace(base_url=served.url), opts.repeat,
                                         show_progress=opts.show_progress, watch=opts.watch, records=opts.records)
    if served.mock is not None:
        result["mock"] = served.mock
    if opts.watch.live is not None:
        opts.watch.live.final = True
    code, message = exit_code(result, state, opts.fail_on_slo)
    return RunOutcome(result, state, code, message)
