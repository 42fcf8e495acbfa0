"""The dzsr command line (typer). Thin: parse, build a config, call one pipeline stage, map errors.

This is the only module that prints. Library errors (:class:`dzcli.errors.DzsrError`) become one
``error: ...`` line on stderr and the error's exit code; Ctrl-C exits with 130.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dzcli import __version__
from dzcli.errors import DzsrError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
    help="dzsr: super-resolve the whole wide photo of a dual-camera capture, with the telephoto as reference.",
)
# Tables stay readable when piped (rich would otherwise assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"dzsr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details (debug level).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """dzsr: super-resolve the whole wide photo of a dual-camera capture, with the telephoto as reference."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)], force=True
    )


@contextmanager
def _boundary() -> Iterator[None]:
    """Map dzsr errors to one line on stderr and their exit code; Ctrl-C to exit code 130."""
    try:
        yield
    except DzsrError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: finished work is kept; run the same command again to resume")
        raise typer.Exit(130) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=err_console,
        transient=False,
    )


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


@app.command()
def prepare(
    src: Annotated[Path, typer.Argument(help="Folder of captures (or a pairs CSV).", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Dataset folder to create or update.", show_default=False)],
    scale: Annotated[int, typer.Option(help="Network scale s of the dataset: 2 or 4.")] = 2,
    test_fraction: Annotated[float, typer.Option(help="Fraction of pairs held out for validation.")] = 0.1,
    force: Annotated[bool, typer.Option(help="Recompute every pair, even finished ones.")] = False,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="CSV with columns uw, tele (optional wide, id).")
    ] = None,
    max_gap: Annotated[float, typer.Option(help="Seconds between shots grouped as one capture (EXIF).")] = 2.0,
    ratio: Annotated[
        float | None, typer.Option(help="Zoom ratio when EXIF has none (registration refines it anyway).")
    ] = None,
    max_megapixels: Annotated[float, typer.Option(help="Refuse photos larger than this.")] = 100.0,
) -> None:
    """Turn real wide + tele captures into an aligned LR / Ref / HR training dataset.

    Example: [bold]dzsr prepare captures/ data/ --scale 2[/]
    """
    from dzcli.pipeline.prepare import PrepareConfig
    from dzcli.pipeline.prepare import prepare as run_prepare

    with _boundary():
        cfg = PrepareConfig(
            src=src, out=out, scale=scale, test_fraction=test_fraction, force=force, pairs_csv=pairs,
            max_gap=max_gap, ratio=ratio, max_megapixels=max_megapixels,
        )
        with _progress() as bar:
            task = bar.add_task("prepare", total=None, item="")

            def step(done: int, total: int, record: dict[str, Any]) -> None:
                bar.update(task, completed=done, total=total, item=record["id"])

            try:
                summary = run_prepare(cfg, progress=step)
            finally:
                bar.refresh()
        table = Table(title=f"dataset {out}  (x{scale})", title_justify="left")
        table.add_column("pair", overflow="fold")
        table.add_column("camera", overflow="fold")
        for col in ("EXIF ratio", "registered", "inliers", "valid %"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("split", no_wrap=True)
        table.add_column("status", overflow="fold")
        for r in summary.records:
            ok = r["status"] == "ok"
            cam = r.get("camera") or {}
            table.add_row(
                r["id"],
                cam.get("tele") or cam.get("uw") or "",
                _fmt(r["ratio_exif"]),
                _fmt(r["ratio"]),
                _fmt(r["inliers"], "d"),
                _fmt(None if r["valid_fraction"] is None else 100 * r["valid_fraction"], ".1f"),
                r["split"] or "",
                "[green]ok[/]" if ok else f"[yellow]{r['status']}[/]",
            )
        console.print(table)
        console.print(
            f"{summary.n_ok} of {len(summary.records)} pairs usable "
            f"({summary.computed} computed, {summary.reused} already done); "
            f"{len(summary.unpaired)} unpaired files. Manifest: {out / 'manifest.json'}"
        )


@app.command()
def simulate(
    photos: Annotated[Path, typer.Argument(help="A photo or a folder of single photos.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Output folder (captures/ and truth/).", show_default=False)],
    ratio: Annotated[float, typer.Option(help="Zoom ratio between the simulated wide and tele.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed (geometry, colour pipeline, noise).")] = 0,
    max_side: Annotated[
        int | None, typer.Option(help="Shrink each photo so its longer side is at most this first.")
    ] = None,
) -> None:
    """Simulate phone wide + tele captures, with ground truth, from single high-resolution photos.

    Example: [bold]dzsr simulate photos/ sim/ --ratio 2 --max-side 2400[/]
    """
    from dzcli.pipeline.simulate import SimulateConfig, simulate_folder

    with _boundary():
        cfg = SimulateConfig(photos=photos, out=out, ratio=ratio, seed=seed, max_side=max_side)
        with _progress() as bar:
            task = bar.add_task("simulate", total=None, item="")
            records = simulate_folder(
                cfg, progress=lambda d, t, r: bar.update(task, completed=d, total=t, item=r["name"])
            )
        console.print(f"{len(records)} captures in {out / 'captures'}, ground truth in {out / 'truth'}")


def main() -> None:
    """Console-script entry point."""
    app()
