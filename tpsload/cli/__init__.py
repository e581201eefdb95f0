"""The command line: this file only assembles the commands and turns user errors into one line."""

from __future__ import annotations

import importlib
import sys

import click

from tpsload import __version__
from tpsload.errors import TpsloadError

# name -> (module under tpsload.cli, its click command, the help line `tpsload --help` lists). A command's module
# is imported only when that command runs or shows its help: importing them all cost every start-up ~0.6 CPU-s
# (numpy, aiohttp, rich, ...). test_cli checks each help line against the command's own docstring.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run", "run_command", "Measure a server under load: TTFT, ITL, TPOT, latency and tokens/s."),
    "sweep": ("sweep", "sweep_command",
              "Run the same load at rising levels; report the saturation point and the SLO frontier."),
    "matrix": ("matrix", "matrix_command",
               "Start a server per configuration, measure each, stop it; say which configuration carries the most "
               "load."),
    "mock": ("mock", "mock_command",
             "Serve /v1/chat/completions, /v1/completions, /v1/models and /health with exact timing."),
    "calibrate": ("calibrate", "calibrate_command",
                  "Measure tpsload's own timing error and ceiling here, against a local server with exact arrival "
                  "and send times."),
    "compare": ("compare", "compare_command",
                "Compare results with BASE: each metric as a ratio with a 95 % bootstrap interval."),
    "report": ("report", "report_command",
               "Write a self-contained report of runs or sweeps; with several, each compared with the first."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported by name from COMMANDS when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr, _ = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(f"tpsload.cli.{module}"), attr), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the same rows click writes, from the table, so listing the commands imports none of them
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tpsload")
def cli() -> None:
    """Load tester for OpenAI-compatible LLM servers."""


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        code = cli.main(standalone_mode=False)
    except TpsloadError as e:
        if debug:
            raise
        click.echo(f"tpsload: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:
        # one line, naming the flag; --help has the rest
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        click.echo(f"tpsload: {e.format_message()}{where}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"tpsload: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("tpsload: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("tpsload: interrupted before the run started; nothing was measured", err=True)
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        click.echo(f"tpsload: internal error: {e.__class__.__name__}: {e} (rerun with --debug)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
