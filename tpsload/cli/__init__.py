"""The command line: this file only assembles the commands and turns user errors into one line."""

from __future__ import annotations

import sys

import click

from tpsload import __version__
from tpsload.cli.calibrate import calibrate_command
from tpsload.cli.compare import compare_command
from tpsload.cli.matrix import matrix_command
from tpsload.cli.mock import mock_command
from tpsload.cli.report import report_command
from tpsload.cli.run import run_command
from tpsload.cli.sweep import sweep_command
from tpsload.errors import TpsloadError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tpsload")
def cli() -> None:
    """Load tester for OpenAI-compatible LLM servers."""


cli.add_command(run_command)
cli.add_command(sweep_command)
cli.add_command(matrix_command)
cli.add_command(mock_command)
cli.add_command(calibrate_command)
cli.add_command(compare_command)
cli.add_command(report_command)


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
