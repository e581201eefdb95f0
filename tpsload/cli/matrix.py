"""`tpsload matrix`: a server command and parameter lists -> app.matrix (start, measure, stop each) -> verdict."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from tpsload.analysis import sweep as sw
from tpsload.app import matrix as app_matrix
from tpsload.cli import options
from tpsload.cli.run import report_internal_error
from tpsload.cli.sweep import SWEEP_LOAD, level_config
from tpsload.config import parse_duration, parse_rate
from tpsload.errors import TpsloadError
from tpsload.render import json as export_json
from tpsload.render.console import console, render_matrix


def _name(opt: Callable[[Any], Any]) -> str | None:
    def f() -> None: ...

    return opt(f).__click_params__[0].name  # type: ignore[attr-defined,no-any-return]


def without(opts: list[Callable[[Any], Any]], names: set[str]) -> list[Callable[[Any], Any]]:
    """The declared options less some: the matrix starts its own servers and writes one JSON."""
    return [o for o in opts if _name(o) not in names]


MATRIX = [
    click.option("--server", "server", required=True, metavar="COMMAND",
                 help="The server command, with {port} and each --param as {name}: 'llama-server -m m.gguf "
                      "--port {port} -np {np}'."),
    click.option("--param", "params", multiple=True, metavar="NAME=V1,V2",
                 help="A parameter's values (repeatable); every combination is one configuration."),
    click.option("--server-env", "server_env", multiple=True, metavar="KEY=VALUE",
                 help="An environment variable for the server (repeatable; {name} and {port} substituted)."),
    click.option("--server-url", default="http://127.0.0.1:{port}/v1", show_default=True, metavar="URL",
                 help="Where each server is measured."),
    click.option("--health-path", default="/health", show_default=True, metavar="PATH",
                 help="The server is ready when this answers 200."),
    click.option("--startup-timeout", default="5m", show_default=True, metavar="TIME",
                 help="How long a server may take to become ready."),
    click.option("--stop-grace", default="10s", show_default=True, metavar="TIME",
                 help="After SIGTERM, how long a server gets before SIGKILL."),
    click.option("--server-logs", "log_dir", metavar="DIR",
                 help="Each server's output, a file per configuration [default: next to --json, as "
                      "<json>.logs, or a temporary directory]."),
    click.option("--min-effect", default="5%", show_default=True, metavar="SHARE",
                 help="The smallest difference between configurations called significant."),
    click.option("--json", "json_path", metavar="PATH",
                 help="The matrix as JSON, rewritten after every configuration."),
    click.option("--csv", "csv_path", metavar="PATH",
                 help="One row per configuration (and level), its parameters as columns, rewritten after every "
                      "configuration."),
    click.option("--records", "records_path", metavar="PATH",
                 help="One JSON line per request of every configuration, with its parameters as `params` (and "
                      "the level as `level`), written as requests finish."),
    click.option("--resume", is_flag=True,
                 help="Continue the matrix saved at --json: keep its finished configurations, run the rest."),
]


def parse_params(given: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for p in given:
        name, sep, values = p.partition("=")
        if not sep or not name.strip().isidentifier():
            raise TpsloadError(f"--param {p!r}: expected NAME=V1,V2 (NAME a word, used as {{NAME}} in --server)")
        out.append((name.strip(), tuple(dict.fromkeys(v.strip() for v in values.split(",")))))
    return tuple(out)


def parse_env(given: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for e in given:
        k, sep, v = e.partition("=")
        if not sep or not k:
            raise TpsloadError(f"--server-env {e.split('=')[0]!r}: expected KEY=VALUE")
        out.append((k, v))
    return tuple(out)


def matrix_options(o: dict[str, Any], given: set[str]) -> app_matrix.MatrixOptions:
    if bool(o["levels_c"]) and bool(o["levels_r"]):
        raise TpsloadError("give the load with either -c/--concurrency or --rate, not both")
    key = "rate" if o["levels_r"] else "concurrency"
    levels = sw.parse_levels(o["levels_c"] or o["levels_r"] or "1", "--rate" if o["levels_r"] else "--concurrency",
                             integer=key == "concurrency")
    flags = {**o, "base_url": "http://127.0.0.1:1/v1", "host": None, "port": None, "mock": False}
    startup, grace = parse_duration(o["startup_timeout"]), parse_duration(o["stop_grace"])
    if not startup:
        raise TpsloadError("--startup-timeout must be more than 0")
    return app_matrix.MatrixOptions(
        server=o["server"], params=parse_params(o["params"]), key=key,
        levels=tuple((v, level_config(flags, given, key, v)) for v in levels), env=parse_env(o["server_env"]),
        server_url=o["server_url"], health_path="/" + o["health_path"].lstrip("/"), startup_timeout_s=startup,
        stop_grace_s=grace or 0.0, repeat=o["repeat"],
        tolerance=parse_rate(o["saturation_tolerance"], "--saturation-tolerance") or 0.0,
        min_effect=parse_rate(o["min_effect"], "--min-effect") or 0.0, early_stop=not o["no_early_stop"],
        resume=o["resume"], json_path=o["json_path"], csv_path=o["csv_path"], records_path=o["records_path"],
        log_dir=o["log_dir"], show_progress=not o["quiet"])


# --json, --csv, --records, --resume: a matrix's own (MATRIX), per configuration rather than per level
NOT_HERE = {"base_url", "host", "port", "mock", "mock_ttft_ms", "mock_itl_ms", "json_path", "csv_path",
            "records_path", "plot_dir", "resume"}


@click.command("matrix")
@options.apply(MATRIX + without(options.COMMON + SWEEP_LOAD, NOT_HERE))
@click.pass_context
def matrix_command(ctx: click.Context, **o: Any) -> None:
    """Start a server per configuration, measure each, stop it; say which configuration carries the most load.

    -c/--rate with several levels makes each configuration a sweep, with one level a run. Exit codes:
    0 every configuration measured; 1 one or more failed (a server that would not start or died, a run
    that failed: the others still run); 2 a problem with the input; 130/143 interrupted (the servers are
    stopped; the finished configurations are saved, --resume runs the rest).
    """
    out = app_matrix.run(matrix_options(o, options.given(ctx)))
    stdout_json = o["json_path"] == "-"
    if stdout_json:
        sys.stdout.write(export_json.dumps(out.matrix) + "\n")
    if not o["quiet"]:
        render_matrix(out.matrix, console(sys.stderr if stdout_json else sys.stdout).file)
    report_internal_error(out.internal_error)
    if out.message:
        click.echo(f"tpsload: {out.message}", err=True)
    ctx.exit(out.exit_code)
