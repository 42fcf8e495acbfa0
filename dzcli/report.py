"""Evaluation reports: the data (per-image scores of every method), means, and their renderings.

Renderings are pure functions: :func:`to_json` (machines), :func:`to_csv` (spreadsheets), :func:`to_markdown`
(READMEs), :func:`to_html` (a page of side-by-side crops a person reads), :func:`crop_sheet` (the same
crops as one image). :func:`write_report` writes them all into a folder.

Scores are ``{method: {region: {metric: value}}}`` with regions ``centre``, ``corner``, ``full`` and
metrics ``psnr`` (dB, higher is better), ``ssim`` (higher is better), ``lpips`` (lower is better) and
their ``_masked`` variants. PSNR is ``inf`` for identical images; JSON writes it as the string ``"inf"``.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dzcli.io.atomic import write_json_atomic, write_text_atomic
from dzcli.io.images import from_hwc, load_photo, save_image
from dzcli.metrics.image import REGIONS

__all__ = [
    "DISPLAY_REGIONS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "TRUTH",
    "EvalReport",
    "ImageResult",
    "best_value",
    "caption",
    "crop_file",
    "crop_sheet",
    "region_label",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
    "write_report",
]

METRICS = ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked")
DISPLAY_REGIONS = ("full", "centre", "corner")
"""Region order of every rendering (then ``wide``, the middle camera's footprint around the centre, in a
report on triple captures: :attr:`EvalReport.regions`)."""
HIGHER_IS_BETTER = {m: not m.startswith("lpips") for m in METRICS}
TRUTH = "ground truth"
"""Column name of the ground truth in the crops."""

Scores = dict[str, dict[str, dict[str, float]]]


@dataclass
class ImageResult:
    """One evaluated image.

    Attributes:
        id: the pair's id (prepared dataset) or the photo's name (simulated set).
        size: output ``(width, height)`` in pixels.
        box: the centre region ``(x0, y0, w, h)`` in output pixels.
        scores: ``{method: {region: {metric: value}}}`` for the methods that ran.
        seconds: wall time of each method on this image (the model's includes registration for ``dzsr zoom``).
        failed: ``{method: reason}`` for methods that could not run on this image.
        no_ref: ``{method: reason}`` for models that zoomed this image without the reference because its tele
            was not found (scored like the others: what ``dzsr zoom`` writes for this capture).
        info: facts about the run (registered ratio, valid fraction, model scale, ...).
        crops: ``{region: {method or "ground truth": file}}``, files relative to the report folder.
        crop_boxes: ``{region: (x0, y0, w, h)}`` of the crops in output pixels.
    """

    id: str
    size: tuple[int, int]
    box: tuple[int, int, int, int]
    scores: Scores = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    no_ref: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    crops: dict[str, dict[str, str]] = field(default_factory=dict)
    crop_boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass
class EvalReport:
    """Scores of several methods on a set of images.

    Attributes:
        kind: ``prepared`` (a dataset from ``dzsr prepare``: SelfDZSR protocol) or ``simulated`` (a folder
            from ``dzsr simulate``: the whole uw output against the ground truth).
        data: the evaluated folder.
        methods: method names in display order (baselines first).
        method_info: ``{method: {"kind": ..., "model": ..., ...}}``.
        protocol: how the numbers were computed (written into every rendering).
        images: per-image results.
        crop_methods: the methods shown in the crops, in order (the ground truth comes last).
    """

    kind: str
    data: str
    methods: list[str]
    method_info: dict[str, dict[str, Any]]
    protocol: dict[str, Any]
    images: list[ImageResult] = field(default_factory=list)
    crop_methods: list[str] = field(default_factory=list)

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions to show: :data:`DISPLAY_REGIONS`, and ``wide`` when every image evaluated by every
        method has it (a set of triple captures)."""
        done = self.complete
        if done and all("wide" in s for im in done for s in im.scores.values()):
            return (*DISPLAY_REGIONS, "wide")
        return DISPLAY_REGIONS

    @property
    def complete(self) -> list[ImageResult]:
        """Images on which every method ran (the means are over these, so every method sees the same set)."""
        return [im for im in self.images if all(m in im.scores for m in self.methods)]

    def means(self) -> Scores:
        """Mean of each method's per-image values over :attr:`complete` images (the protocol's averaging).

        A metric missing on some image (a region too small for its window) is averaged over the others.
        """
        out: Scores = {}
        done = self.complete
        for method in self.methods:
            out[method] = {}
            for region in REGIONS:
                vals: dict[str, list[float]] = {}
                for im in done:
                    for metric, v in im.scores[method].get(region, {}).items():
                        vals.setdefault(metric, []).append(v)
                if vals:
                    out[method][region] = {m: float(np.mean(v)) for m, v in vals.items()}
        return out

    def mean_seconds(self) -> dict[str, float]:
        """Mean wall time per image of each method over :attr:`complete` images."""
        done = self.complete
        return {
            m: float(np.mean([im.seconds[m] for im in done if m in im.seconds]))
            for m in self.methods
            if any(m in im.seconds for im in done)
        }


# --------------------------------------------------------------------------------------------------------
# Text renderings
# --------------------------------------------------------------------------------------------------------


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def to_json(report: EvalReport) -> dict[str, Any]:
    """The report as a JSON-ready dict: protocol, methods, means, per-image results (inf → ``"inf"``)."""
    return _json_value(
        {
            "kind": report.kind,
            "data": report.data,
            "protocol": report.protocol,
            "methods": report.methods,
            "method_info": report.method_info,
            "images_in_means": [im.id for im in report.complete],
            "mean": report.means(),
            "mean_seconds": report.mean_seconds(),
            "images": [asdict(im) for im in report.images],
        }
    )


def _fmt_seconds(t: float | None) -> str:
    return "" if t is None else f"{t:.2f}"


def _fmt(v: float | None, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if math.isinf(v):
        return "inf"
    return f"{v:.2f}" if metric.startswith("psnr") else f"{v:.4f}"


def _exact(v: float | None) -> str:
    if v is None or math.isnan(v):
        return ""
    return "inf" if math.isinf(v) else repr(float(v))


def to_csv(report: EvalReport) -> str:
    """One row per (image, method, region), then ``mean`` rows, at full precision.

    Columns: image, method, region, the :data:`METRICS`, seconds. Empty cells: not computed.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "method", "region", *METRICS, "seconds"])
    means, secs = report.means(), report.mean_seconds()
    rows: list[tuple[str, Scores, dict[str, float]]] = [(i.id, i.scores, i.seconds) for i in report.images]
    rows.append(("mean", means, secs))
    regions = report.regions
    for image, scores, seconds in rows:
        for method in report.methods:
            for region in regions:
                vals = scores.get(method, {}).get(region)
                if vals is None:
                    continue
                t = seconds.get(method)
                writer.writerow([image, method, region, *(_exact(vals.get(m)) for m in METRICS), _exact(t)])
    return buf.getvalue()


def best_value(report: EvalReport, means: Scores, region: str, metric: str) -> float | None:
    """The best mean of ``metric`` on ``region`` over the report's methods (None when no method has it)."""
    vals = [means[m][region][metric] for m in report.methods if metric in means.get(m, {}).get(region, {})]
    if not vals:
        return None
    return max(vals) if HIGHER_IS_BETTER[metric] else min(vals)


def region_label(report: EvalReport, region: str) -> str:
    """How a region is called in this report's tables (a held-out evaluation renames centre and corner)."""
    labels = report.protocol.get("region_labels") or {}
    return str(labels.get(region, region))


def to_markdown(report: EvalReport, *, title: str | None = None) -> str:
    """A Markdown table of the means: one row per method; PSNR, SSIM, LPIPS as ``full / centre / corner``
    (``/ wide`` on triple captures).

    The best value of each column is in bold. Followed by the number of images and seconds per image.
    """
    means, secs = report.means(), report.mean_seconds()
    order = report.regions
    if not report.complete:
        head = [] if title is None else [title, ""]
        failures = [f"{im.id}: {m}: {r}" for im in report.images for m, r in im.failed.items()]
        return "\n".join([*head, "No image was evaluated by every method.", *failures]) + "\n"
    metrics = [m for m in ("psnr", "ssim", "lpips") if any(m in means[x].get("full", {}) for x in means)]
    heads = {"psnr": "PSNR ↑ (dB)", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}
    lines = [] if title is None else [title, ""]
    names = " / ".join(region_label(report, r) for r in order)
    columns = " | ".join(f"{heads[m]} {names}" for m in metrics)
    lines.append(f"| method | {columns} | s / image |")
    lines.append("|---|" + "---|" * len(metrics) + "---:|")
    for method in report.methods:
        cells = []
        for metric in metrics:
            parts = []
            for region in order:
                v = means[method].get(region, {}).get(metric)
                text = _fmt(v, metric) or "–"
                if v is not None and v == best_value(report, means, region, metric):
                    text = f"**{text}**"
                parts.append(text)
            cells.append(" / ".join(parts))
        t = secs.get(method)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {'' if t is None else f'{t:.1f}'} |")
    lines.append("")
    lines.append(f"{len(report.complete)} images; {report.protocol.get('summary', '')}".rstrip())
    for im in report.images:
        for method, reason in im.failed.items():
            lines.append(f"\n{im.id} is left out of the means: {method} failed ({reason}).")
        for method, reason in im.no_ref.items():
            lines.append(f"\n{im.id}: {method} zoomed it without the reference (tele not found: {reason}).")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------------


def caption(img: torch.Tensor, text: str, *, height: int = 20) -> torch.Tensor:
    """``img`` (3,H,W) in [0,1] with a white strip of ``height`` px above it holding ``text`` (black).

    Text that does not fit the width is cut and ends in ``..``; OpenCV's font is ASCII only.
    """
    w = img.shape[-1]
    strip = np.full((height, w, 3), 255, np.uint8)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    text = text.encode("ascii", "replace").decode()
    cut = len(text)
    shown = text
    while cut > 0 and cv2.getTextSize(shown, font, scale, thick)[0][0] > w - 6:
        cut -= 1
        shown = text[:cut] + ".."
    cv2.putText(strip, shown, (3, height - 6), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    top = from_hwc(strip)
    return torch.cat((top, img.clamp(0, 1)), dim=1)


def _stack(images: list[torch.Tensor], gap: int, dim: int, fill: float = 1.0) -> torch.Tensor:
    """(3,H,W) images side by side (``dim=2``) or one above the other (``dim=1``), top-left aligned, ``gap``
    pixels of ``fill`` between them."""
    other = 3 - dim
    size = [3, 0, 0]
    size[other] = max(t.shape[other] for t in images)
    size[dim] = sum(t.shape[dim] for t in images) + gap * (len(images) - 1)
    out = torch.full(size, fill)
    at = 0
    for t in images:
        out.narrow(dim, at, t.shape[dim]).narrow(other, 0, t.shape[other]).copy_(t)
        at += t.shape[dim] + gap
    return out


def crop_sheet(rows: list[tuple[str, list[tuple[str, torch.Tensor]]]], *, gap: int = 6) -> torch.Tensor:
    """Side-by-side crops as one image.

    Args:
        rows: ``(title, [(label, crop (3,h,w) in [0,1]), ...])`` per row; each row gets its title above it
            and each crop its label.
        gap: pixels between crops and rows.

    Returns:
        (3,H,W) in [0,1] on a white background.
    """
    parts = []
    for title, cells in rows:
        strip = _stack([caption(c, label) for label, c in cells], gap, dim=2)
        parts.append(caption(strip, title, height=22))
    sheet = _stack(parts, 2 * gap, dim=1)
    return torch.nn.functional.pad(sheet, (gap, gap, gap, gap), value=1.0)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; background: #e8f5e9; }
.row { display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 1em; }
figure { margin: 0; }
figure img { image-rendering: pixelated; width: 256px; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; text-align: center; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""


def _means_table(report: EvalReport, metrics: tuple[str, ...]) -> str:
    means, secs = report.means(), report.mean_seconds()
    regions = report.regions
    head = "".join(
        f"<th>{html.escape(region_label(report, r))} {m.replace('_', ' ')}</th>"
        for r in regions
        for m in metrics
    )
    rows = []
    for method in report.methods:
        cells = []
        for region in regions:
            for metric in metrics:
                v = means[method].get(region, {}).get(metric)
                best = v is not None and v == best_value(report, means, region, metric)
                cells.append(f"<td{' class=best' if best else ''}>{_fmt(v, metric) or '–'}</td>")
        t = secs.get(method)
        rows.append(f"<tr><td>{html.escape(method)}</td>{''.join(cells)}<td>{_fmt_seconds(t)}</td></tr>")
    return f"<table><tr><th>method</th>{head}<th>s / image</th></tr>{''.join(rows)}</table>"


def to_html(report: EvalReport) -> str:
    """An HTML page (crops by relative paths): means, per-image scores, side-by-side crops."""
    means = report.means()
    present = [m for m in METRICS if any(m in r for x in means.values() for r in x.values())]
    plain = tuple(m for m in present if not m.endswith("_masked"))
    masked = tuple(m for m in present if m.endswith("_masked"))
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>dzsr eval: {esc(report.data)}</title><style>{_CSS}</style></head><body>",
        f"<h1>dzsr eval: {esc(report.data)}</h1>",
        f"<p class=note>{esc(str(report.protocol.get('summary', '')))}</p>",
        f"<h2>Means over {len(report.complete)} images</h2>",
        "<p class=note>PSNR (dB) and SSIM: higher is better; LPIPS: lower is better. Best in bold.</p>",
        _means_table(report, plain),
    ]
    regions = report.regions
    if masked:
        out += ["<h3>Valid pixels only (registration mask)</h3>", _means_table(report, masked)]
    for im in report.images:
        out.append(f"<h2>{esc(im.id)}</h2>")
        if im.failed:
            out.append(
                "<p class=note>not evaluated: "
                + "; ".join(f"{esc(m)}: {esc(r)}" for m, r in im.failed.items())
                + "</p>"
            )
        if im.no_ref:
            out.append(
                "<p class=note>zoomed without the reference (tele not found): "
                + "; ".join(f"{esc(m)}: {esc(r)}" for m, r in im.no_ref.items())
                + "</p>"
            )
        rows = []
        for method in report.methods:
            s = im.scores.get(method)
            if s is None:
                continue
            cells = "".join(f"<td>{_fmt(s.get(r, {}).get(m), m)}</td>" for r in regions for m in plain)
            rows.append(f"<tr><td>{esc(method)}</td>{cells}</tr>")
        head = "".join(f"<th>{esc(region_label(report, r))} {m}</th>" for r in regions for m in plain)
        out.append(f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>")
        for region, files in im.crops.items():
            x0, y0, w, h = im.crop_boxes[region]
            out.append(
                f"<h3>{esc(region_label(report, region))} crop ({w}×{h} px at x={x0}, y={y0})</h3><div class=row>"
            )
            for name, rel in files.items():
                score = im.scores.get(name, {}).get(region, {}).get("psnr")
                label = (
                    name
                    if score is None
                    else f"{name}: {_fmt(score, 'psnr')} dB ({region_label(report, region)})"
                )
                out.append(
                    f"<figure><a href='{esc(rel)}'><img src='{esc(rel)}' alt='{esc(name)}'></a>"
                    f"<figcaption>{esc(label)}</figcaption></figure>"
                )
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def crop_file(image_id: str, region: str, method: str) -> str:
    """Path, relative to the report folder, of one crop: ``crops/<image>_<region>_<method>.png``."""
    return f"crops/{_slug(image_id)}_{region}_{_slug(method)}.png"


def write_report(report: EvalReport, folder: Path, *, sheet_images: int = 8) -> dict[str, Path]:
    """Write ``report.{json,csv,md,html,png}`` into ``folder``.

    The crops themselves (``crops/*.png``) are written by the evaluation as it goes; ``report.png`` shows
    those of the first ``sheet_images`` images, ``report.html`` all of them.

    Returns:
        ``{"json": path, "csv": ..., "md": ..., "html": ..., "png": ...}`` (``png`` only with crops).
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / f"report.{k}" for k in ("json", "csv", "md", "html")}
    write_json_atomic(files["json"], to_json(report))
    write_text_atomic(files["csv"], to_csv(report))
    write_text_atomic(files["md"], to_markdown(report))
    write_text_atomic(files["html"], to_html(report))
    rows = []
    for im in report.images[:sheet_images]:
        for region, crops in im.crops.items():
            cells = []
            for name, rel in crops.items():
                score = im.scores.get(name, {}).get(region, {}).get("psnr")
                label = name if score is None else f"{name} {_fmt(score, 'psnr')} dB"
                cells.append((label, load_photo(folder / rel).pixels))
            rows.append((f"{im.id}: {region} crop (dB: PSNR of the whole {region} region)", cells))
    if rows:
        files["png"] = folder / "report.png"
        save_image(files["png"], crop_sheet(rows))
    return files
