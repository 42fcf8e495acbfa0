"""The dzsr command line (typer). Thin: parse, build a config, call one pipeline stage, map errors."""

from __future__ import annotations

import typer

from dzcli import __version__

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dzsr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """dzsr: super-resolve the whole wide photo of a dual-camera capture, with the telephoto as reference."""


def main() -> None:
    """Console-script entry point."""
    app()
