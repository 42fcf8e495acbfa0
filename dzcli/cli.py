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
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from dzcli import __version__
from dzcli.errors import DzsrError, OutputError
from dzcli.io.quiet import set_opencv_log_level

if TYPE_CHECKING:
    from dzcli.data.manifest import PairRecord

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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log details (debug level) and the libraries' warnings.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """dzsr: super-resolve the whole wide photo of a dual-camera capture, with the telephoto as reference."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = RichHandler(console=err_console, show_path=False)
    handler.addFilter(lambda record: _shown(record, verbose))
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings of libraries become records of the py.warnings logger
    set_opencv_log_level(verbose)


def _shown(record: logging.LogRecord, verbose: bool) -> bool:
    """dzsr's own records at the chosen level; other libraries' (and Python warnings) only with -v, from
    warnings up (their debug output is not dzsr's)."""
    own = record.name.partition(".")[0] in ("dzcli", "dzsr_models")
    return own or (verbose and record.levelno >= logging.WARNING)


@contextmanager
def _boundary() -> Iterator[None]:
    """Map dzsr errors to one line on stderr and their exit code; Ctrl-C to exit code 130."""
    try:
        yield
    except DzsrError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # writing outputs: permissions, full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            f"[bold red]error:[/] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(OutputError.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(
            "[bold red]interrupted[/]: finished work is kept; run the same command again to resume"
        )
        raise typer.Exit(130) from None


def _progress() -> Progress:
    """The bar of a long command; add its task with ``visible=False`` and show it with the first update, so
    that an error found before the work is the only line printed."""
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


def _found_by(record: PairRecord) -> str:
    """How a prepared pair was registered: ``N matches`` (features), ``direct, r 0.31`` (correlation) or
    ``through the wide`` (chained through the middle camera of a triple capture)."""
    reg = record.registration or {}
    if reg.get("method") == "direct":
        return f"direct, r {reg['correlation']:.2f}"
    if reg.get("method") == "chained":
        return "through the wide"
    return "–" if record.inliers is None else f"{record.inliers} matches"


# Options shared by several commands (one declaration each).
RatioOpt = Annotated[
    float | None, typer.Option(help="Zoom ratio when EXIF has none (registration refines it anyway).")
]
MaxMegapixelsOpt = Annotated[float, typer.Option(help="Refuse photos larger than this.")]
TileOpt = Annotated[
    int, typer.Option("--tile", "-t", help="Tile side in wide-photo pixels; 0 = from free memory.")
]
OverlapOpt = Annotated[int, typer.Option(help="Least overlap of neighbouring tiles, in pixels.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Fp32Opt = Annotated[bool, typer.Option("--fp32", help="Full precision on CUDA (default: float16).")]


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
    max_gap: Annotated[
        float, typer.Option(help="Seconds between shots grouped as one capture (EXIF).")
    ] = 2.0,
    ratio: RatioOpt = None,
    max_megapixels: MaxMegapixelsOpt = 100.0,
) -> None:
    """Turn real wide + tele captures into an aligned LR / Ref / HR training dataset.

    Example: [bold]dzsr prepare captures/ data/ --scale 2[/]
    """
    from dzcli.pipeline.prepare import PrepareConfig
    from dzcli.pipeline.prepare import prepare as run_prepare

    with _boundary():
        cfg = PrepareConfig(
            src=src,
            out=out,
            scale=scale,
            test_fraction=test_fraction,
            force=force,
            pairs_csv=pairs,
            max_gap=max_gap,
            zoom_ratio=ratio,
            max_megapixels=max_megapixels,
        )
        with _progress() as bar:
            task = bar.add_task("prepare", total=None, item="", visible=False)

            def step(done: int, total: int, record: PairRecord) -> None:
                bar.update(task, completed=done, total=total, item=record.id, visible=True)

            try:
                summary = run_prepare(cfg, progress=step)
            finally:
                bar.refresh()
        table = Table(title=f"dataset {out}  (x{scale})", title_justify="left")
        table.add_column("pair", overflow="fold")
        table.add_column("camera", overflow="fold")
        for col in ("EXIF ratio", "registered", "found by", "valid %"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("split", no_wrap=True)
        table.add_column("status", overflow="fold")
        for r in summary.records:
            cam = r.camera or {}
            table.add_row(
                r.id,
                cam.get("tele") or cam.get("uw") or "",
                _fmt(r.zoom_ratio_exif),
                _fmt(r.zoom_ratio),
                _found_by(r),
                _fmt(None if r.valid_fraction is None else 100 * r.valid_fraction, ".1f"),
                r.split or "",
                "[green]ok[/]" if r.ok else f"[yellow]{r.status}[/]",
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
    triple: Annotated[
        bool, typer.Option("--triple", help="Triple camera: also write <name>_wide, between uw and tele.")
    ] = False,
    wide_ratio: Annotated[
        float | None, typer.Option(help="Zoom ratio of the wide to the uw (with --triple). Default: ratio/2.")
    ] = None,
    max_offset: Annotated[
        float, typer.Option(help="Tele centre off the wide's by up to this fraction of its width.")
    ] = 0.03,
    max_rotation: Annotated[float, typer.Option(help="Tele rotated by up to this many degrees.")] = 1.0,
    ratio_error: Annotated[
        float, typer.Option(help="True zoom ratio off the EXIF one by up to this fraction (e.g. 0.015).")
    ] = 0.0,
    gain: Annotated[float, typer.Option(help="Tele white-balance gains drawn in 1 ± GAIN.")] = 0.15,
    gamma: Annotated[tuple[float, float], typer.Option(help="Tele per-channel gamma range LOW HIGH.")] = (
        0.85,
        1.18,
    ),
    parallax: Annotated[
        float, typer.Option(help="Largest parallax displacement of the tele, in pixels.")
    ] = 1.5,
    noise: Annotated[float, typer.Option(help="Gaussian noise sigma of both photos (0..1 scale).")] = 0.01,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of both photos.")] = 92,
    camera: Annotated[
        str,
        typer.Option(
            help="none, or each camera through its own randomised pipeline (blur, noise, "
            "denoising, sharpening, tone, JPEG): phone (JPEG 80-95 4:2:0), dslr (light "
            "processing, JPEG 90-98) or night (heavy noise, denoising, JPEG 60-85)."
        ),
    ] = "phone",
    camera_range: Annotated[
        list[str] | None,
        typer.Option(
            help="Widen or narrow one of the camera's ranges, NAME=LOW,HIGH (repeatable), e.g. "
            "jpeg_quality=60,98 or sharpen_amount=0,2.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Simulate phone wide + tele captures, with ground truth, from single high-resolution photos.

    Example: [bold]dzsr simulate photos/ sim/ --ratio 2 --max-side 2400[/]
    (ultra-wide + wide + tele: [bold]--ratio 4 --triple[/]; harder captures: [bold]--ratio-error 0.015
    --gain 0.25 --camera night --camera-range jpeg_quality=50,70[/]; the plain pipeline of blur, Gaussian
    noise and JPEG: [bold]--camera none --noise 0.02 --jpeg-quality 85[/])
    """
    from dzcli.pipeline.simulate import SimulateConfig, parse_camera_range, simulate_folder

    with _boundary():
        cfg = SimulateConfig(
            photos=photos,
            out=out,
            zoom_ratio=ratio,
            seed=seed,
            max_side=max_side,
            triple=triple,
            wide_zoom_ratio=wide_ratio,
            max_offset=max_offset,
            max_rotation=max_rotation,
            zoom_ratio_error=ratio_error,
            gain=gain,
            gamma=gamma,
            parallax=parallax,
            noise=noise,
            jpeg_quality=jpeg_quality,
            camera=camera,
            camera_ranges=tuple(parse_camera_range(t) for t in camera_range or ()),
        )
        with _progress() as bar:
            task = bar.add_task("simulate", total=None, item="", visible=False)
            records = simulate_folder(
                cfg,
                progress=lambda d, t, r: bar.update(task, completed=d, total=t, item=r.name, visible=True),
            )
        console.print(f"{len(records)} captures in {out / 'captures'}, ground truth in {out / 'truth'}")


@app.command()
def zoom(
    inputs: Annotated[
        list[Path], typer.Argument(help="UW TELE photos, or one folder of captures.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (one pair) or folder. Default: next to the wide photo, "
            "or FOLDER_zoom/ for a folder.",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Checkpoint path or bundled model name (see dzsr models)."),
    ] = None,
    outscale: Annotated[
        float | None,
        typer.Option("--outscale", "-s", help="Output scale. Default: the tele's pixel density."),
    ] = None,
    suffix: Annotated[
        str, typer.Option(help="Output name: {stem}_{suffix}.{ext}; empty keeps the stem.")
    ] = "out",
    ext: Annotated[
        str, typer.Option(help="Output format: auto (the wide photo's), png, jpg, tif, webp, heic.")
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing outputs (inputs are never overwritten).")
    ] = False,
    tile: TileOpt = 0,
    tile_overlap: OverlapOpt = 16,
    device: DeviceOpt = "auto",
    fp32: Fp32Opt = False,
    max_megapixels: MaxMegapixelsOpt = 100.0,
    ratio: RatioOpt = None,
    quality: Annotated[int, typer.Option(help="JPEG / WebP / HEIC quality.")] = 95,
    adapt: Annotated[
        int,
        typer.Option(help="First fine-tune the model for N self-supervised steps on each capture itself."),
    ] = 0,
    require_ref: Annotated[
        bool,
        typer.Option(
            "--require-ref",
            help="A tele that cannot be found is an error (exit 4) instead of "
            "zooming the wide photo without the reference.",
        ),
    ] = False,
    self_check: Annotated[
        bool,
        typer.Option(
            "--self-check/--no-self-check",
            help="Outside the tele's view (and where it is not valid), keep as much of the network's detail "
            "as the tele shows it is worth on this capture, and take out the wide camera's own sharpening "
            "as far as the tele shows it.",
        ),
    ] = True,
    paste: Annotated[
        bool,
        typer.Option(
            "--paste/--no-paste",
            help="When the output is denser than the network's scale (a x2 network at x4), paste the "
            "tele's detail above that scale at the output's density inside its footprint.",
        ),
    ] = True,
    ref_blend: Annotated[
        float,
        typer.Option(
            "--ref-blend",
            help="Pull the output this share of the way towards the registered tele where it is valid "
            "(0: the network's output alone).",
        ),
    ] = 0.25,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            help="Test-time augmentation: run the network in 1, 2, 4 or 8 mirrored / transposed views and "
            "average them (a little more detail and less noise, for about that many times the network's time).",
        ),
    ] = 1,
    guard: Annotated[
        bool,
        typer.Option(
            "--guard/--no-guard",
            help="Where no reference is valid, keep the network's fine detail (finer than two wide-photo "
            "pixels) only where the wide photo shows structure above its own noise (flat skies, defocused "
            "backgrounds, night shadows); --no-guard keeps all of it.",
        ),
    ] = True,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide/--no-wide",
            help="For a triple capture, the middle camera is also a reference, around the tele's footprint.",
        ),
    ] = True,
    wide_photo: Annotated[
        Path | None,
        typer.Option(
            "--wide-photo",
            help="With UW TELE: the middle camera's photo of the same triple capture (a 26 mm wide "
            "between a 13 mm UW and a tele).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Super-resolve the whole wide photo to the tele's pixel density, with the tele as reference.

    Where the tele cannot be found in the wide photo, the wide photo is zoomed without it (and the
    summary line says so), unless --require-ref.

    Example: [bold]dzsr zoom examples/seeding_uw.jpg examples/seeding_tele.jpg -o out.png[/]
    """
    from dzcli.pipeline.zoom import ZoomConfig, ZoomResult
    from dzcli.pipeline.zoom import zoom as run_zoom

    def line(r: ZoomResult) -> str:
        if r.status == "skipped":
            return f"{r.output}: exists, skipped (use --overwrite)"
        if r.written is None:
            return f"[yellow]{r.uw.name}: not zoomed: {r.status}[/]"
        w = r.written
        filt = (
            ""
            if w.out_size == (w.scale * w.in_size[0], w.scale * w.in_size[1])
            else (f" then x{w.resample:.3f} {'Lanczos' if w.resample > 1 else 'area'}")
        )
        if w.no_ref is None:
            how = f"zoom ratio {w.zoom_ratio:.2f}"
        elif w.reference is not None:  # a triple capture whose wide was found, not its tele
            how = f"[yellow]tele not found ({escape(w.no_ref)}): zoomed with the wide as the reference[/]"
        else:
            how = f"[yellow]tele not found ({escape(w.no_ref)}): zoomed without the reference[/]"
        if w.no_ref is None and w.reference is not None and w.reference.wide:
            how += ", the wide around the tele"
        check = None if w.reference is None else w.reference.self_check
        if check is not None:
            how += f", self-check: network detail outside the tele x{check.gain:.2f}"
            how += f", the wide's sharpening taken out x{-check.base:.2f}" if check.base < 0 else ""
        if w.reference is not None and w.reference.pasted:
            how += f", the tele pasted at x{w.outscale:.2f} in its footprint"
        how += ", flat areas guarded" if guard else ""
        notes = "".join(f"; [yellow]{escape(n)}[/]" for n in w.notes)

        return (
            f"{r.uw.name} -> {r.output}: {w.in_size[0]}x{w.in_size[1]} -> {w.out_size[0]}x{w.out_size[1]} "
            f"({how}, output x{w.outscale:.2f}: x{w.scale} network {w.model}{filt}), "
            f"{w.seconds:.1f} s on {w.device}, {w.tiles} tiles{notes}"
        )

    with _boundary():
        cfg = ZoomConfig(
            inputs=tuple(inputs),
            out=output,
            model=model,
            outscale=outscale,
            suffix=suffix,
            ext=ext,
            overwrite=overwrite,
            tile=tile,
            tile_overlap=tile_overlap,
            device=device,
            fp32=fp32,
            max_megapixels=max_megapixels,
            zoom_ratio=ratio,
            quality=quality,
            adapt=adapt,
            require_ref=require_ref,
            self_check=self_check,
            paste=paste,
            ref_blend=ref_blend,
            tta=tta,
            guard=guard,
            wide=wide,
            wide_photo=wide_photo,
        )
        with _progress() as bar:
            tasks: dict[str, TaskID] = {}

            def step(stage: str, done: int, total: int, item: str) -> None:
                if stage == "pairs" and len(inputs) == 2:
                    return
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total, item="")
                if stage == "tiles" and done == 1:
                    bar.reset(tasks[stage], total=total)
                bar.update(tasks[stage], completed=done, total=total, item=item)

            results = run_zoom(
                cfg, progress=step, on_result=lambda r: console.print(line(r), highlight=False)
            )
        failed = [r for r in results if r.status not in ("ok", "skipped")]
        if len(results) > 1:
            done = sum(r.ok for r in results)
            alone = sum(r.written is not None and r.written.no_ref is not None for r in results)
            console.print(
                f"{done} zoomed ({done - alone} with the reference, {alone} without: tele not found), "
                f"{sum(r.status == 'skipped' for r in results)} skipped, {len(failed)} failed"
            )
        if failed:
            raise typer.Exit(1)


@app.command("models")
def models_cmd() -> None:
    """List the models bundled with dzsr (used by dzsr zoom when --model is not given)."""
    from dzsr_models.bundled import BUNDLED, DEFAULT_MODEL, WEIGHTS_DIR, choose_bundled, weight_count

    with _boundary():
        table = Table(title=f"bundled models ({WEIGHTS_DIR})", title_justify="left")
        table.add_column("name", no_wrap=True)
        for col in ("scale", "params", "size"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("used", no_wrap=True)
        table.add_column("sha256", no_wrap=True)
        table.add_column("licence", overflow="fold")
        table.add_column("card", overflow="fold")
        for m in BUNDLED:
            path = m.verified_path()
            table.add_row(
                m.name + (" (default)" if m.name == DEFAULT_MODEL else ""),
                f"x{m.scale}",
                f"{weight_count(path):,}",
                f"{path.stat().st_size / 2**20:.1f} MiB",
                "by output scale" if choose_bundled(m.scale) == m else "with -m only",
                m.sha256,
                m.licence,
                m.summary,
            )
        console.print(table)


@app.command("eval")
def eval_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            help="A prepared dataset (dzsr prepare) or a simulated set (dzsr simulate).", show_default=False
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint path or bundled model name; repeat to compare "
            "several. Default: the bundled model.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Report folder. Default: DATA_eval/ next to DATA.")
    ] = None,
    split: Annotated[str, typer.Option(help="Prepared datasets: test, train or all.")] = "test",
    device: DeviceOpt = "auto",
    tile: TileOpt = 0,
    tile_overlap: OverlapOpt = 16,
    fp32: Fp32Opt = False,
    lpips: Annotated[bool, typer.Option("--lpips/--no-lpips", help="Compute LPIPS (AlexNet v0.1).")] = True,
    crop: Annotated[int, typer.Option(help="Side of the comparison crops, in output pixels.")] = 192,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images.")] = None,
    self_check: Annotated[
        bool,
        typer.Option(
            "--self-check/--no-self-check",
            help="As dzsr zoom: outside the reference, the network's detail kept and the wide camera's "
            "sharpening taken out as far as the reference shows.",
        ),
    ] = True,
    paste: Annotated[
        bool,
        typer.Option(
            "--paste/--no-paste",
            help="As dzsr zoom: the tele's detail above the network's scale pasted at the output's "
            "density when the output is denser than that scale.",
        ),
    ] = True,
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Prepared datasets: hold out this half of each tele (left, right, top "
            "or bottom), give the model the other half and score both halves apart."
        ),
    ] = None,
    tta: Annotated[
        int,
        typer.Option("--tta", help="As dzsr zoom --tta: the networks run in 1, 2, 4 or 8 views, averaged."),
    ] = 1,
    guard: Annotated[
        bool,
        typer.Option(
            "--guard/--no-guard",
            help="As dzsr zoom --guard: where no reference is valid, the network's fine detail kept only "
            "where the wide photo shows structure above its noise (--no-guard: all of it).",
        ),
    ] = True,
) -> None:
    """Score models against bicubic, Lanczos and each model without its reference, on ground truth.

    Writes report.json, report.csv, report.md, report.html and report.png (side-by-side crops).

    Example: [bold]dzsr eval sim/ -m run/ckpt/best.safetensors[/]
    (real captures, outside the reference: [bold]dzsr eval data/ --holdout right[/])
    """
    from dzcli.pipeline.evaluate import EvalConfig, default_out, evaluate
    from dzcli.report import HIGHER_IS_BETTER, best_value, region_label

    with _boundary():
        out = output if output is not None else default_out(data)
        cfg = EvalConfig(
            data=data,
            out=out,
            models=tuple(model or ()),
            split=split,
            device=device,
            tile=tile,
            tile_overlap=tile_overlap,
            fp32=fp32,
            lpips=lpips,
            crop=crop,
            limit=limit,
            self_check=self_check,
            paste=paste,
            holdout=holdout,
            tta=tta,
            guard=guard,
        )
        with _progress() as bar:
            task = bar.add_task("eval", total=None, item="", visible=False)
            report, files = evaluate(
                cfg, progress=lambda d, t, i: bar.update(task, completed=d, total=t, item=i, visible=True)
            )
        means, secs = report.means(), report.mean_seconds()
        metrics = [m for m in ("psnr", "ssim", "lpips") if any(m in means[x].get("full", {}) for x in means)]
        regions = report.regions
        table = Table(
            title=f"{report.kind} {data}: means over {len(report.complete)} of {len(report.images)} images",
            title_justify="left",
        )
        table.add_column("method", overflow="fold")
        for metric in metrics:
            arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
            for region in regions:
                table.add_column(
                    f"{metric.upper()} {arrow}\n{region_label(report, region)}", justify="right", no_wrap=True
                )
        table.add_column("s/image", justify="right", no_wrap=True)
        for method in report.methods:
            cells = []
            for metric in metrics:
                for region in regions:
                    v = means[method].get(region, {}).get(metric)
                    text = _fmt(v, ".2f" if metric == "psnr" else ".4f")
                    top = v is not None and v == best_value(report, means, region, metric)
                    cells.append(f"[bold green]{text}[/]" if top else text)
            table.add_row(method, *cells, _fmt(secs.get(method), ".2f"))
        console.print(table)
        failed = [(im.id, m, r) for im in report.images for m, r in im.failed.items()]
        for image, method, reason in failed:
            console.print(f"[yellow]{image}: {method} not evaluated: {escape(reason)}[/]", highlight=False)
        for im in report.images:
            for method, reason in im.no_ref.items():
                console.print(
                    f"[yellow]{im.id}: {method} zoomed it without the reference (tele not found: {escape(reason)})[/]",
                    highlight=False,
                )
        others = ", ".join(p.name for k, p in files.items() if k != "html")
        console.print(f"report: {files['html']} (also {others})")
        if failed:
            raise typer.Exit(1)


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Prepared dataset folder (dzsr prepare).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, metrics, config).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML or YAML config file; flags override it.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Network size: base, small (CPU) or tiny. Default: base.")
    ] = None,
    init: Annotated[
        str | None, typer.Option(help="Fine-tune from a checkpoint path or a bundled model's name.")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="l1+losw (default), l1+sw, or l1 (best PSNR).")] = None,
    sw_target: Annotated[
        str | None,
        typer.Option(
            help="What the perceptual term compares with: quiet (the tele with the noise of its flat areas "
            "taken out) or tele (as it is, the papers' recipe). Default: quiet."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimisation steps (lr halves at half). Default: 400000.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step and process. Default: 16.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="LR patch side in pixels. Default: 48.")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate of the SR network. Default: 1e-4.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps. Default: auto.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: 0.")] = None,
    val_every: Annotated[int | None, typer.Option(help="Validate every N steps. Default: 1000.")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps. Default: 5000.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its latest state.")
    ] = False,
    triple: Annotated[
        bool | None,
        typer.Option(
            "--triple",
            help="Train a triple-camera model (TZSR) on prepared triple captures: the middle camera "
            "is a second reference. With --init, the dual model's weights start it.",
        ),
    ] = None,
) -> None:
    """Train a model self-supervised on prepared captures (SelfDZSR++ recipe).

    Example: [bold]dzsr train data/ --out runs/mine --preset small --steps 20000[/]
    Several GPUs: [bold]torchrun --nproc_per_node 4 -m dzcli train data/ --out runs/mine[/]
    """
    import os

    from dzcli.pipeline.train import resolve_train_config
    from dzcli.pipeline.train import train as run_train
    from dzcli.train.loop import StepReport

    flags = {
        "preset": preset,
        "init": init,
        "loss": loss,
        "sw_target": sw_target,
        "steps": steps,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "lr": lr,
        "device": device,
        "seed": seed,
        "val_every": val_every,
        "save_every": save_every,
        "triple": triple,
    }
    main_rank = os.environ.get("RANK", "0") == "0"

    def scores(name: str, s: dict[str, dict[str, float]]) -> str:
        regions = [r for r in ("full", "centre", "corner") if r in s]
        return f"{name} " + "  ".join(f"{r} {s[r]['psnr']:.2f} dB" for r in regions)

    with _boundary():
        cfg = resolve_train_config(data, out, config_file=config, flags=flags, resume=resume)
        progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s"),
            console=err_console,
            disable=not main_rank,
        )
        with progress as bar:
            task = bar.add_task("train", total=cfg.steps, loss=float("nan"), rate=0.0, visible=False)

            def step(done: int, total: int, report: StepReport) -> None:
                bar.update(
                    task,
                    completed=done,
                    total=total,
                    loss=report.losses["sr"],
                    rate=report.samples_per_s,
                    visible=True,
                )
                if report.val is not None and report.baseline is not None and main_rank:
                    bar.console.print(
                        f"step {done}: {scores('model', report.val)}   |   "
                        f"{scores('bicubic', report.baseline)}",
                        highlight=False,
                    )

            summary = run_train(cfg, resume=resume, progress=step)
        if main_rank:
            best = "–" if summary.best_psnr is None else f"{summary.best_psnr:.2f} dB"
            resumed = f"resumed at {summary.resumed_from}, " if summary.resumed_from else ""
            procs = f"{summary.world} process{'es' if summary.world > 1 else ''}"
            console.print(
                f"{summary.steps} steps ({resumed}{procs}); best validation PSNR {best}. "
                f"Checkpoints: {out / 'checkpoints'}"
            )


def main() -> None:
    """Console-script entry point."""
    app()
