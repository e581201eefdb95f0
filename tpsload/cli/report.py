"""`tpsload report RESULT.json [...]`: one shareable file (HTML, or Markdown for an issue or a wiki)."""

from __future__ import annotations

from typing import Any

import click

from tpsload.cli.compare import load
from tpsload.render import html as export_html
from tpsload.render import json as export_json
from tpsload.render import markdown as export_markdown


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]), default="html", show_default=True)
@click.option("-o", "--output", default=None, metavar="PATH",
              help="Where to write it ('-' = stdout) [default: report.html or report.md].")
def report_command(results: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Write a self-contained report of runs or sweeps; with several, each compared with the first."""
    named: list[tuple[str, dict[str, Any]]] = []
    for path in results:
        r = load(path, matrix=True)
        named.append((r.get("label") or path, r))
    text = export_html.dumps(named) if fmt == "html" else export_markdown.dumps(named)
    path = output or ("report.html" if fmt == "html" else "report.md")
    export_json.write_text(path, text)
    if path != "-":
        click.echo(f"wrote {path}", err=True)
