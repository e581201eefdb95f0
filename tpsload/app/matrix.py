"""`matrix`: a server per configuration, started, measured, stopped, one after the other; --resume.

For each combination of the --param values: a free port, the server command with {port} and the
parameters substituted, started in its own process group with its output in a log file
(servers.launch), ready when its health route answers; then measured as `run` measures one level
(app.run) or `sweep` several (app.sweep); then stopped (SIGTERM, SIGKILL after a grace period),
whatever happened, before the next starts. After every configuration the JSON and CSV are written
(the records as requests finish), so an interrupted matrix keeps what it finished and --resume runs
only the rest.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import shlex
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpsload import __version__
from tpsload.analysis import matrix as mx
from tpsload.analysis import sweep as sw
from tpsload.app import run as app_run
from tpsload.app import sweep as app_sweep
from tpsload.config import RunConfig, redact, server_root
from tpsload.core.runner import run_async
from tpsload.core.signals import Interrupted, Interrupts, Signalled, default_signals, interruptible, raise_on_signals
from tpsload.errors import TpsloadError
from tpsload.render import csv as export_csv
from tpsload.render import json as export_json
from tpsload.render.console import notice
from tpsload.render.jsonl import RecordsFile
from tpsload.servers.launch import ServerProcess, StartFailed, about, ended, free_port, signals_held

PLACEHOLDER = re.compile(r"\{(\w+)\}")
SECRET_NAME = re.compile(r"key|token|secret|pass|auth|credential", re.I)
MASK = "***"


@dataclass(frozen=True)
class MatrixOptions:
    """The server command and its parameters, and what to measure on each configuration: the `levels`
    of `key` (concurrency or rate) as `sweep` runs them, or with one level, a run as `run` does."""

    server: str
    params: tuple[tuple[str, tuple[str, ...]], ...]
    key: str
    levels: tuple[tuple[float, RunConfig], ...]
    env: tuple[tuple[str, str], ...] = ()
    server_url: str = "http://127.0.0.1:{port}/v1"
    health_path: str = "/health"
    startup_timeout_s: float = 300.0
    stop_grace_s: float = 10.0
    repeat: int = 1
    tolerance: float = 0.05
    min_effect: float = 0.05
    early_stop: bool = True
    resume: bool = False
    json_path: str | None = None
    csv_path: str | None = None
    records_path: str | None = None
    log_dir: str | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.key not in app_sweep.KEYS:
            raise ValueError(f"a matrix's key is one of {app_sweep.KEYS}, not {self.key!r}")
        if not self.levels:
            raise TpsloadError("a matrix needs a load: -c/--concurrency or --rate")
        if self.json_path == "-" and self.records_path == "-":
            raise TpsloadError("--json - and --records - cannot both go to stdout; give one a file")
        check_template(self)
        clash = mx.csv_clash([n for n, _ in self.params]) if self.csv_path else None
        if clash:
            raise TpsloadError(f"--param {clash}: the CSV already has a column {clash!r}; give the parameter "
                               "another name (it is only the {name} in --server)")

    @property
    def sweep(self) -> bool:
        return len(self.levels) > 1


@dataclass
class MatrixOutcome:
    matrix: dict[str, Any]
    exit_code: int = 0
    message: str | None = None
    internal_error: BaseException | None = None


def substitute(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def check_template(opts: MatrixOptions) -> None:
    """Every {name} is {port} or a --param, every --param is used, the command has {port}."""
    names = [n for n, _ in opts.params]
    if len(set(names)) != len(names):
        raise TpsloadError("--param: each name once (give its values as a list: --param np=1,2,4)")
    if "port" in names:
        raise TpsloadError("--param port: {port} is the free port tpsload picks for each configuration")
    texts = {"--server": opts.server, "--server-url": opts.server_url,
             **{f"--server-env {k}": v for k, v in opts.env}}
    used: set[str] = set()
    for flag, text in texts.items():
        for n in PLACEHOLDER.findall(text):
            if n != "port" and n not in names:
                raise TpsloadError(f"{flag} uses {{{n}}}, which is neither {{port}} nor a --param")
            used.add(n)
    if "{port}" not in opts.server:
        raise TpsloadError("--server must contain {port}: each configuration's server listens on a free port "
                           "tpsload picks (e.g. --port {port})")
    if "{port}" not in opts.server_url:
        raise TpsloadError("--server-url must contain {port}")
    unused = [n for n in names if n not in used]
    if unused:
        raise TpsloadError(f"--param {unused[0]} is not used: put {{{unused[0]}}} in --server or --server-env")
    try:
        shlex.split(opts.server)
    except ValueError as e:
        raise TpsloadError(f"--server: {e}") from None


def combinations(params: tuple[tuple[str, tuple[str, ...]], ...]) -> list[dict[str, str]]:
    """Every combination, the first --param varying slowest."""
    names = [n for n, _ in params]
    return [dict(zip(names, vals, strict=True)) for vals in itertools.product(*(v for _, v in params))]


def conf_name(values: dict[str, str]) -> str:
    """'np=4 ctx=8192'; a parameter left empty (a flag given or not) is left out of the name."""
    return " ".join(f"{k}={v}" for k, v in values.items() if v) or "default"


def _public_env(env: dict[str, str]) -> dict[str, str]:
    return {k: MASK if SECRET_NAME.search(k) else v for k, v in env.items()}


def base_config(opts: MatrixOptions) -> dict[str, Any]:
    """What every configuration's load shares (the JSON's `base_config`); base_url is each server's own."""
    cfg = opts.levels[0][1].replace(single=False)
    skip = {"base_url", *app_sweep.KEYS} if opts.sweep else {"base_url"}
    return {k: v for k, v in cfg.public().items() if k not in skip}


def _plan(opts: MatrixOptions) -> dict[str, Any]:
    """What a resumed matrix must share with the saved one."""
    return {"server": opts.server, "server_url": opts.server_url, "health_path": opts.health_path,
            "server_env": _public_env(dict(opts.env)), "key": opts.key, "levels": [v for v, _ in opts.levels],
            "repeat": opts.repeat}


def load_resume(opts: MatrixOptions, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished configurations of the matrix saved at --json (those this matrix also plans)."""
    path = opts.json_path
    old = app_sweep.read_saved(path, "matrix")
    mine = json.loads(json.dumps(_plan(opts)))
    for k, v in mine.items():
        if old.get(k) != v:
            raise TpsloadError(f"--resume: the matrix in {path} was made with {k}={old.get(k)!r}, this one "
                               f"{k}={v!r}; resume with the options it was made with, or write to another --json")
    why = sw.resume_mismatch(old.get("base_config") or {}, base, ignore=("requests", "seed"))
    if why:
        raise TpsloadError(f"--resume: the matrix in {path} was measured with {why}; resume with the options it "
                           "was made with, or write to another --json")
    planned = [conf_name(c) for c in combinations(opts.params)]
    return [c for c in old.get("configurations") or [] if c.get("status") == "ok" and c.get("name") in planned]


def _save(matrix: dict[str, Any], opts: MatrixOptions) -> None:
    matrix["configurations"].sort(key=lambda c: c["index"])
    matrix["verdict"] = mx.verdict(matrix, opts.tolerance, opts.min_effect)
    if opts.json_path and opts.json_path != "-":
        export_json.write(matrix, opts.json_path)
    if opts.csv_path:
        export_csv.write(matrix, opts.csv_path)


async def _start(server: ServerProcess, timeout_s: float, root: str) -> tuple[float, dict[str, object]]:
    """Start-up, then what the server says about itself: (seconds to ready, /props and /version). Ended
    at once by Ctrl-C or SIGTERM (core.signals: nothing is in flight to let finish), heard by the event
    loop (a signal raised inside the loop's own machinery could be swallowed there)."""
    interrupts = Interrupts(0.0)
    interrupts.install()
    try:
        startup = await interruptible(interrupts, server.wait_ready(timeout_s))
        return startup, await interruptible(interrupts, about(root))
    except Interrupted:
        raise Signalled(interrupts.signal or signal.SIGINT) from None
    finally:
        interrupts.remove()


def _measure(opts: MatrixOptions, url: str, records: RecordsFile | None
             ) -> tuple[dict[str, Any], int, str | None, BaseException | None]:
    """The configuration's run or sweep: (result, exit code, why not 0, a bug of ours). `records` (its
    `extra` naming the configuration) gets a line per request."""
    if not opts.sweep:
        out = app_run.run(opts.levels[0][1].replace(base_url=url),
                          app_run.RunOptions(repeat=opts.repeat, show_progress=opts.show_progress, records=records))
        return out.result, out.exit_code, out.message, out.state.internal_error
    sweep = app_sweep.run(app_sweep.SweepOptions(
        key=opts.key, levels=tuple((v, cfg.replace(base_url=url)) for v, cfg in opts.levels), repeat=opts.repeat,
        tolerance=opts.tolerance, early_stop=opts.early_stop, show_progress=opts.show_progress, records=records))
    return sweep.sweep, sweep.exit_code, sweep.message, sweep.internal_error


def _run_one(opts: MatrixOptions, entry: dict[str, Any], env: dict[str, str], log_path: Path,
             secrets: tuple[str, ...], records: RecordsFile | None) -> tuple[int, BaseException | None]:
    """Start, measure and stop one configuration, filling `entry`; its exit code (128 + N: interrupted)."""
    values = {**entry["params"], "port": str(free_port())}
    text = substitute(opts.server, values)
    url = substitute(opts.server_url, values)
    env = {k: substitute(v, values) for k, v in env.items()}
    server = ServerProcess(shlex.split(text), log_path, server_root(url) + opts.health_path, env)
    server.name = "the server"
    entry.update(command=redact(text, secrets), env=_public_env(env), base_url=url, port=int(values["port"]),
                 log=str(log_path))
    code, err = 0, None
    try:
        if opts.show_progress:
            notice(f"{entry['name']}: starting {entry['command']}")
        server.spawn()
        entry["startup_s"], info = run_async(_start(server, opts.startup_timeout_s, server_root(url)))
        raise_on_signals()
        entry["about"] = info
        props = info.get("props") if isinstance(info.get("props"), dict) else {}
        ver = info.get("version") if isinstance(info.get("version"), dict) else {}
        entry["version"] = props.get("build_info") or ver.get("version")  # type: ignore[union-attr]
        if opts.show_progress:
            notice(f"{entry['name']}: ready in {entry['startup_s']:.1f} s; measuring")
        if records is not None:  # its lines' times relative to its own run's (or level's) start
            records.extra, records.t0 = {"params": entry["params"]}, None
        result, code, message, err = _measure(opts, url, records)
        raise_on_signals()
        entry["result"] = result
        if code >= 128:
            entry.update(status="interrupted", error=result.get("stop_reason") or "interrupted")
        elif not server.alive:
            entry.update(status="failed", error=f"the server {ended(server.proc.returncode)} "  # type: ignore[union-attr]
                                                f"during the measurement: {server.error_line()}")
            code = 1
        elif err is not None:
            entry.update(status="failed", error=f"internal error: {err.__class__.__name__}: {err}")
            code = 1
        elif code:
            entry.update(status="failed", error=message or result.get("stop_reason") or "the measurement failed")
        else:
            entry["status"] = "ok"
    except StartFailed as e:
        entry.update(status="failed", error=str(e))
        code = 1
    except TpsloadError as e:  # pre-flight: the server answers, but not as a run needs
        entry.update(status="failed", error=str(e))
        code = 1
    except Signalled as e:
        entry.update(status="interrupted", error=f"interrupted ({e})")
        code = 128 + e.signal
    except KeyboardInterrupt:
        entry.update(status="interrupted", error="interrupted (SIGINT)")
        code = 130
    finally:
        # a signal now waits until the server is stopped and the entry complete, then raises Signalled
        with signals_held():
            entry["server_exit_code"] = server.stop(opts.stop_grace_s)
            if entry.get("status") != "ok":
                entry["log_tail"] = server.log_tail()
            raise_on_signals()
    return code, err


def run(opts: MatrixOptions) -> MatrixOutcome:
    """Every configuration not yet finished, in order; a failed one is recorded and the rest still run;
    a signal stops the matrix (128 + N) after stopping the server. Exit 1 when any configuration failed."""
    confs = combinations(opts.params)
    base = base_config(opts)
    secrets = opts.levels[0][1].secrets()
    matrix: dict[str, Any] = {
        "tpsload_version": __version__, "kind": "matrix", **_plan(opts),
        "params": {n: list(v) for n, v in opts.params},
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "partial": False, "stop_reason": None, "base_config": base,
        "configurations": load_resume(opts, base) if opts.resume else [],
    }
    order = {conf_name(values): i for i, values in enumerate(confs)}
    for c in matrix["configurations"]:
        c["index"] = order[c["name"]]
    done = set(order) & {c["name"] for c in matrix["configurations"]}
    if done and opts.show_progress:
        notice(f"--resume: keeping {', '.join(sorted(done))}")
    log_dir = Path(opts.log_dir or (f"{opts.json_path}.logs" if opts.json_path and opts.json_path != "-"
                                    else tempfile.mkdtemp(prefix="tpsload-matrix-")))
    matrix["log_dir"] = str(log_dir)
    out = MatrixOutcome(matrix)
    env = dict(opts.env)
    if opts.records_path:
        app_sweep.start_records(opts.records_path,
                                (lambda line: conf_name(line.get("params") or {}) in done) if done else None)
    records = RecordsFile(opts.records_path, append=True) if opts.records_path else None
    raise_on_signals()
    try:
        for i, values in enumerate(confs):
            name = conf_name(values)
            if name in done:
                continue
            entry: dict[str, Any] = {"index": i, "name": name, "params": values, "env": {},
                                     "status": "failed", "error": None, "startup_s": None, "version": None,
                                     "about": None, "result": None}
            matrix["configurations"].append(entry)
            slug = re.sub(r"[^\w.=-]+", "_", name)
            try:
                code, err = _run_one(opts, entry, env, log_dir / f"{i:02d}-{slug}.log", secrets, records)
            except Signalled as e:  # heard while its server was being stopped: that configuration is complete
                code, err = 128 + e.signal, None
                if entry["status"] != "ok":
                    entry["status"] = "interrupted"
                entry["error"] = entry["error"] or f"interrupted ({e})"
            if records is not None:
                records.flush()
            if err is not None and out.internal_error is None:
                out.internal_error = err
            if entry["status"] == "failed" and opts.show_progress:
                notice(f"{name}: FAILED: {entry['error']}")
            if code >= 128:
                matrix["partial"], matrix["stop_reason"] = True, f"{name}: {entry['error']}"
                out.exit_code = code
                _save(matrix, opts)
                break
            _save(matrix, opts)
    except Signalled as e:  # between configurations: no server is running
        matrix["partial"], matrix["stop_reason"] = True, f"interrupted ({e})"
        out.exit_code = 128 + e.signal
    finally:
        default_signals()
        if records is not None:
            records.close()
    _save(matrix, opts)
    failed = [c["name"] for c in matrix["configurations"] if c["status"] == "failed"]
    if failed and out.exit_code == 0:
        out.exit_code = 1
        out.message = f"{len(failed)} of {len(confs)} configurations failed: {', '.join(failed)}"
    return out
