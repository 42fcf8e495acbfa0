"""``dzsr eval``: how much better than plain interpolation is a model, on images with a ground truth.

Two kinds of data (DESIGN §7):

- a **prepared dataset** (``manifest.json`` from ``dzsr prepare``): the SelfDZSR protocol. Each pair's ``lr``
  (the wide crop under the tele) is super-resolved with its ``ref`` (the centre ``1/s`` of ``hr``, as in
  training) by :func:`dzcli.infer.engine.super_resolve` and compared with ``hr``; regions: centre (the
  Ref's field of view), corner (the rest), full; masked variants over the registration's valid pixels.
- a **simulated set** (``simulation.json`` from ``dzsr simulate``): the whole uw photo is zoomed exactly as
  ``dzsr zoom UW TELE --outscale r`` does it (:func:`dzcli.pipeline.zoom.zoom_photo`, with the model already
  loaded: registration, alignment, colour matching, tiled SR, resampling) and compared with the ground
  truth, with ``r`` the true density (tele pixels per uw pixel) so that the output lands on the truth's pixel grid; centre =
  the bounding box of the tele's true footprint in the output. A capture whose tele is not found is zoomed
  without the reference, as ``dzsr zoom`` does, scored, and reported as such (``no_ref``).

Every report has the baselines a user would otherwise use: bicubic and Lanczos interpolation (OpenCV
``INTER_CUBIC`` and ``INTER_LANCZOS4``) and each model with its reference disabled (``ref=None``, the same
engine and resampling), next to each model given. Metrics: :mod:`dzcli.metrics.image` (8-bit RGB, no border
crop; PSNR, SSIM, LPIPS-AlexNet v0.1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dzcli.align.capture import read_capture
from dzcli.data.dataset import PreparedPair, dataset_scale, load_pairs
from dzcli.data.manifest import MANIFEST_NAME
from dzcli.data.pairs import Capture
from dzcli.errors import AlignmentError, ConfigError, DatasetError, InputError
from dzcli.infer.devices import resolve_device
from dzcli.infer.engine import check_tta, describe, super_resolve
from dzcli.infer.guard import guard_flat
from dzcli.infer.selfcheck import apply_self_check
from dzcli.io.atomic import check_output, remove_stale_temps_in
from dzcli.io.images import load_photo, save_image
from dzcli.metrics.image import REGIONS, RegionScorer, region_pieces
from dzcli.metrics.lpips import LPIPS
from dzcli.pipeline.simulate import SIMULATION_NAME, SimulationRecord, read_simulation
from dzcli.pipeline.zoom import zoom_photo
from dzcli.report import TRUTH, EvalReport, ImageResult, crop_file, write_report
from dzcli.resize import cv_resize, resample
from dzsr_models.bundled import load_model

__all__ = [
    "EvalConfig",
    "Peer",
    "default_out",
    "evaluate",
    "footprint_box",
    "holdout_box",
    "pick_crop",
]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, item)`` after each image."""
Upscaler = Callable[[Tensor, tuple[int, int]], Tensor]
"""``upscale(lr, (H, W))``: a single-image method to compare with, ``(3, h, w)`` → ``(3, H, W)``, in [0, 1]."""


@dataclass(frozen=True)
class Peer:
    """A single-image super-resolution method scored next to the baselines (e.g. another project's CLI).

    Attributes:
        upscale: see :data:`Upscaler`.
        info: what the report says about it (package, model, settings).
    """

    upscale: Upscaler
    info: dict[str, Any]


INTERPOLATIONS = ("bicubic", "lanczos")
"""The interpolation baselines (:func:`dzcli.resize.cv_resize` filters: OpenCV's, as most tools)."""
HOLDOUT_SIDES = ("left", "right", "top", "bottom")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``dzsr eval``.

    Attributes:
        data: a prepared dataset (``manifest.json``) or a ``dzsr simulate`` folder (``simulation.json``).
        out: report folder.
        models: checkpoint paths or bundled model names; empty: the bundled default.
        split: prepared datasets: ``test``, ``train`` or ``all``.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        tile: tile side in LR pixels (0: from free memory), as ``dzsr zoom --tile``.
        tile_overlap: least tile overlap in LR pixels.
        fp32: no float16 on CUDA.
        lpips: compute LPIPS (needs the offline ImageNet AlexNet, see the README).
        crop: side in output pixels of the comparison crops (centre and corner of each image).
        limit: evaluate only the first ``limit`` images.
        self_check: as ``dzsr zoom``: the network's reference-free detail outside the reference scaled by
            what the reference shows it is worth on the image (:mod:`dzcli.infer.selfcheck`).
        paste: simulated sets, as ``dzsr zoom``: the tele pasted at the output's density inside its
            footprint when both are denser than the network's scale (:mod:`dzcli.infer.paste`).
        holdout: prepared datasets: hold out this half of each pair's tele (``left``, ``right``, ``top`` or
            ``bottom``): the network gets the other half as its reference, and the held-out half (real
            tele pixels it never received) is scored as the corner, the given half as the centre.
        tta: as ``dzsr zoom --tta``: every pass of the networks in this many mirrored / transposed views,
            averaged; their rows are named ``MODEL+ttaN``.
        guard: as ``dzsr zoom``'s guard (on by default, ``--no-guard``): where no reference is valid, the
            network's finest detail kept only where the wide photo shows structure above its noise
            (:mod:`dzcli.infer.guard`); the ``(no ref)`` rows stay the network alone.
    """

    data: Path
    out: Path
    models: tuple[str, ...] = ()
    split: str = "test"
    device: str = "auto"
    tile: int = 0
    tile_overlap: int = 16
    fp32: bool = False
    lpips: bool = True
    crop: int = 192
    limit: int | None = None
    self_check: bool = True
    paste: bool = True
    holdout: str | None = None
    tta: int = 1
    guard: bool = True

    def __post_init__(self) -> None:
        if self.holdout is not None and self.holdout not in HOLDOUT_SIDES:
            raise ConfigError(f"--holdout must be one of {', '.join(HOLDOUT_SIDES)}, not {self.holdout!r}")
        if self.split not in ("test", "train", "all"):
            raise ConfigError(f"--split must be test, train or all, not {self.split!r}")
        if self.tile < 0 or self.tile_overlap < 0 or 0 < self.tile < 32:
            raise ConfigError(f"--tile must be 0 or at least 32 and --tile-overlap >= 0, not {self.tile}")
        if self.crop < 16:
            raise ConfigError(f"--crop must be at least 16 pixels, not {self.crop}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, not {self.limit}")
        check_tta(self.tta, "--tta")


# --------------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------------


def footprint_box(
    tele_to_uw: np.ndarray, tele_size: tuple[int, int], density: float, out_size: tuple[int, int]
) -> Box:
    """Bounding box, in output pixels, of the tele's footprint.

    Args:
        tele_to_uw: ``(3, 3)`` homography from tele to uw pixel coordinates (pixel centres at integers).
        tele_size: tele ``(width, height)``.
        density: output pixels per uw pixel (uw coordinate ``u`` lies at ``density·(u + 0.5) - 0.5``).
        out_size: output ``(width, height)``; the box is clipped to it.

    Returns:
        ``(x0, y0, w, h)`` with edges rounded to whole pixels.
    """
    wt, ht = tele_size
    corners = np.array([[-0.5, -0.5, 1], [wt - 0.5, -0.5, 1], [-0.5, ht - 0.5, 1], [wt - 0.5, ht - 0.5, 1]]).T
    mapped = tele_to_uw @ corners
    u = mapped[:2] / mapped[2]
    edges = density * (u + 0.5)  # pixel-edge coordinates: output pixel i spans [i, i + 1]
    x0, x1 = (int(np.clip(round(v), 0, out_size[0])) for v in (edges[0].min(), edges[0].max()))
    y0, y1 = (int(np.clip(round(v), 0, out_size[1])) for v in (edges[1].min(), edges[1].max()))
    return x0, y0, x1 - x0, y1 - y0


def holdout_box(lr_size: tuple[int, int], side: str) -> Box:
    """The reference's box when one half of the tele is held out: the other half.

    Args:
        lr_size: the pair's LR ``(width, height)``.
        side: the held-out half, ``left``, ``right``, ``top`` or ``bottom`` (of an odd size, the held-out
            half is the larger one).

    Returns:
        ``(x0, y0, bw, bh)`` in whole LR pixels.
    """
    w, h = lr_size
    boxes = {
        "right": (0, 0, w // 2, h),
        "left": (w - w // 2, 0, w // 2, h),
        "bottom": (0, 0, w, h // 2),
        "top": (0, h - h // 2, w, h // 2),
    }
    if side not in boxes:
        raise ConfigError(f"unknown held-out side {side!r}: {', '.join(HOLDOUT_SIDES)}")
    return boxes[side]


def pick_crop(truth: Tensor, box: Box, region: str, side: int) -> Box | None:
    """The ``side``-pixel square of a region where the ground truth has the most detail.

    Windows wholly inside one of the region's pieces (:func:`dzcli.metrics.image.region_pieces`) are scored
    by their mean luma gradient magnitude on a grid of stride ``side // 4``; a region whose pieces are all
    smaller gets a square as large as its largest piece allows (at least 16 px), centred in that piece.

    Args:
        truth: ``(3, H, W)`` in ``[0, 1]``.
        box: the centre region ``(x0, y0, w, h)``.
        region: ``centre`` or ``corner``.
        side: wanted side in pixels.

    Returns:
        ``(x0, y0, side', side')``, or None when no piece is 16 pixels on a side.
    """
    h, w = truth.shape[-2:]
    pieces = region_pieces(h, w, box)[region]
    luma = (0.299 * truth[0] + 0.587 * truth[1] + 0.114 * truth[2]).numpy().astype(np.float64)
    gy, gx = np.gradient(luma)
    energy = np.sqrt(gx * gx + gy * gy)
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    best: tuple[float, Box] | None = None
    stride = max(1, side // 4)
    for y0, y1, x0, x1 in pieces:
        if y1 - y0 < side or x1 - x0 < side:
            continue
        ys = np.arange(y0, y1 - side + 1, stride)
        xs = np.arange(x0, x1 - side + 1, stride)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        ye, xe = yy + side, xx + side
        sums = integral[ye, xe] - integral[yy, xe] - integral[ye, xx] + integral[yy, xx]
        k = np.unravel_index(int(np.argmax(sums)), sums.shape)
        if best is None or sums[k] > best[0]:
            best = (float(sums[k]), (int(xx[k]), int(yy[k]), side, side))
    if best is not None:
        return best[1]
    if not pieces:
        return None
    y0, y1, x0, x1 = max(pieces, key=lambda p: min(p[1] - p[0], p[3] - p[2]))
    small = min(y1 - y0, x1 - x0)
    if small < 16:
        return None
    return x0 + (x1 - x0 - small) // 2, y0 + (y1 - y0 - small) // 2, small, small


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Model:
    name: str
    path: str
    model: nn.Module
    scale: int
    perceptual: bool


def _load_models(specs: tuple[str, ...], device: torch.device, outscale: float, tta: int = 1) -> list[_Model]:
    """Load every ``--model`` (the bundled default for none), with unique display names (``+ttaN`` with
    ``tta`` views)."""
    loaded = []
    for spec in specs or (None,):
        model, info = load_model(spec, device=device, outscale=outscale)
        name = info.name + (f"+tta{tta}" if tta > 1 else "")
        loaded.append(_Model(name, str(info.path), model, info.scale, info.perceptual))
    names = [m.name for m in loaded]
    for m in loaded:
        if names.count(m.name) > 1:
            m.name = f"{Path(m.path).parent.name}/{m.name}"
    seen: dict[str, int] = {}
    for m in loaded:
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name} ({seen[m.name]})"
    return loaded


def _methods(
    models: list[_Model], peers: dict[str, Peer], *, tele_only: bool = False
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The report's methods in display order and what each is; ``tele_only`` (a set with triple captures)
    adds each model zoomed with the tele alone, as a pair."""
    names = ["bicubic", "lanczos", *peers]
    info: dict[str, dict[str, Any]] = {
        "bicubic": {"kind": "interpolation", "filter": "OpenCV INTER_CUBIC"},
        "lanczos": {"kind": "interpolation", "filter": "OpenCV INTER_LANCZOS4"},
    }
    info.update({name: {"kind": "single-image SR", **peer.info} for name, peer in peers.items()})
    for m in models:
        noref = f"{m.name} (no ref)"
        names += [noref, m.name]
        info[noref] = {"kind": "model, reference disabled", "model": m.path, "scale": m.scale}
        info[m.name] = {"kind": "model", "model": m.path, "scale": m.scale}
        if tele_only:
            names.append(f"{m.name} (tele only)")
            info[names[-1]] = {"kind": "model, the wide not a reference", "model": m.path, "scale": m.scale}
    return names, info


# --------------------------------------------------------------------------------------------------------
# Scoring one image
# --------------------------------------------------------------------------------------------------------


class _Scorer:
    """Scores one image's outputs against its truth and cuts the comparison crops.

    Args:
        result: the image's result, filled in place (scores, seconds, crops).
        truth: ``(3, H, W)`` in ``[0, 1]``.
        cfg: the options (crop side, report folder).
        lpips_net: LPIPS module or None.
        crop_methods: methods whose crops are saved.
        mask: ``(1, H, W)`` validity (prepared datasets) or None.
        wide_box: the middle camera's footprint of a triple capture (region ``wide``), or None.
    """

    def __init__(
        self,
        result: ImageResult,
        truth: Tensor,
        cfg: EvalConfig,
        lpips_net: LPIPS | None,
        crop_methods: list[str],
        mask: Tensor | None = None,
        wide_box: Box | None = None,
    ) -> None:
        self.result = result
        self.cfg = cfg
        self.crop_methods = crop_methods
        self.scorer = RegionScorer(truth, result.box, wide_box=wide_box, mask=mask, lpips_net=lpips_net)
        for region in ("centre", "corner"):
            crop = pick_crop(truth, result.box, region, cfg.crop)
            if crop is not None:
                result.crop_boxes[region] = crop
                result.crops[region] = {}
        self._save_crops(TRUTH, truth)

    def add(self, method: str, out: Tensor, seconds: float) -> None:
        """Score ``out`` (3,H,W) as ``method``, which took ``seconds``."""
        self.result.scores[method] = self.scorer(out)
        self.result.seconds[method] = seconds
        if method in self.crop_methods:
            self._save_crops(method, out)

    def same_as(self, method: str, other: str) -> None:
        """Score ``method`` as ``other`` was (the same output), when ``other`` was scored."""
        if other in self.result.scores:
            self.result.scores[method] = self.result.scores[other]
            self.result.seconds[method] = self.result.seconds[other]

    def _save_crops(self, method: str, img: Tensor) -> None:
        for region, (x0, y0, w, h) in self.result.crop_boxes.items():
            rel = crop_file(self.result.id, region, method)
            save_image(self.cfg.out / rel, img[:, y0 : y0 + h, x0 : x0 + w])
            self.result.crops[region][method] = rel

    def finish(self) -> ImageResult:
        """The result, each region's crops in display order (the crop methods, then the ground truth)."""
        order = [*self.crop_methods, TRUTH]
        self.result.crops = {r: {m: c[m] for m in order if m in c} for r, c in self.result.crops.items()}
        return self.result


def _run_model(
    model: nn.Module, lr: Tensor, cfg: EvalConfig, device: torch.device, **kw: Any
) -> tuple[Tensor, float]:
    t = time.perf_counter()
    sr = super_resolve(
        model,
        lr,
        tile=cfg.tile,
        overlap=cfg.tile_overlap,
        device=device,
        half=not cfg.fp32,
        tta=cfg.tta,
        **kw,
    )
    return sr, time.perf_counter() - t


def _score_single_image(scorer: _Scorer, lr: Tensor, size: tuple[int, int], peers: dict[str, Peer]) -> None:
    """The interpolation baselines and the peers on ``lr``, at output ``size`` ``(H, W)``."""
    for name in INTERPOLATIONS:
        t = time.perf_counter()
        out = cv_resize(lr, size, name)
        scorer.add(name, out, time.perf_counter() - t)
    for name, peer in peers.items():
        t = time.perf_counter()
        out = peer.upscale(lr, size)
        if tuple(out.shape) != (3, *size):
            raise ConfigError(f"{name} returned a {tuple(out.shape)} image for a {(3, *size)} output")
        scorer.add(name, out, time.perf_counter() - t)


def _eval_prepared(
    pair: PreparedPair,
    s: int,
    models: list[_Model],
    cfg: EvalConfig,
    device: torch.device,
    lpips_net: LPIPS | None,
    crop_methods: list[str],
    peers: dict[str, Peer],
) -> ImageResult:
    hr, lr = pair.hr, pair.lr
    H, W = int(hr.shape[-2]), int(hr.shape[-1])
    if cfg.holdout is None:
        x0, y0, bw, bh = (round(v) for v in pair.ref_box)
        ref = pair.ref
    else:
        x0, y0, bw, bh = holdout_box((int(lr.shape[-1]), int(lr.shape[-2])), cfg.holdout)
        ref = hr[:, s * y0 : s * (y0 + bh), s * x0 : s * (x0 + bw)]
    result = ImageResult(id=pair.id, size=(W, H), box=(s * x0, s * y0, s * bw, s * bh), info={"scale": s})
    scorer = _Scorer(result, hr, cfg, lpips_net, crop_methods, mask=pair.mask)
    _score_single_image(scorer, lr, (H, W), peers)
    for m in models:
        out, secs = _run_model(m.model, lr, cfg, device)
        scorer.add(f"{m.name} (no ref)", out, secs)
        t = time.perf_counter()
        middle: dict[str, Any] = {}
        if describe(m.model).ref2_scale == s and pair.mid is not None:  # the wide over the whole lr
            middle = {"ref2": pair.mid, "box2": (0, 0, int(lr.shape[-1]), int(lr.shape[-2]))}
        out, _ = _run_model(m.model, lr, cfg, device, ref=ref, box=(x0, y0, bw, bh), **middle)
        mask = pair.mask[:, s * y0 : s * (y0 + bh), s * x0 : s * (x0 + bw)]
        if cfg.self_check:
            out, check = apply_self_check(
                m.model,
                out,
                lr,
                ref,
                (x0, y0, bw, bh),
                mask,
                device=device,
                half=not cfg.fp32,
                tta=cfg.tta,
                perceptual=m.perceptual,
            )
            result.info[m.name] = {"residual_gain": check.gain, "base_band": check.base}
        if cfg.guard:
            out = guard_flat(out, lr, [(mask, (x0, y0, bw, bh))])
        scorer.add(m.name, out, time.perf_counter() - t)
    return scorer.finish()


def _eval_simulated(
    record: SimulationRecord,
    root: Path,
    models: list[_Model],
    cfg: EvalConfig,
    device: torch.device,
    lpips_net: LPIPS | None,
    crop_methods: list[str],
    peers: dict[str, Peer],
    tele_only: bool = False,
) -> ImageResult:
    """Score one simulated capture; a triple capture is zoomed with its wide (and, with ``tele_only``, again
    without it), and scored on the wide's footprint too."""
    files = record.files
    wide_file = root / files["wide"] if record.wide is not None and "wide" in files else None
    cap = Capture(
        id=record.name,
        uw=root / files["uw"],
        tele=root / files["tele"],
        method="simulated",
        wide=wide_file,
    )
    try:
        truth = load_photo(root / files["truth"]).pixels
        photos = read_capture(cap)
    except InputError as exc:
        raise DatasetError(f"{root}: {record.name} is incomplete ({exc})") from exc
    uw, tele = photos.uw.pixels, photos.tele.pixels
    H, W = int(truth.shape[-2]), int(truth.shape[-1])
    density = record.density
    if (round(density * uw.shape[-1]), round(density * uw.shape[-2])) != (W, H):
        raise DatasetError(f"{root}: truth of {record.name} is not {density:g}x its uw photo")
    box = footprint_box(record.tele_to_uw, record.tele_size, density, (W, H))
    wide_box = None
    if record.wide is not None:
        wide_box = footprint_box(record.wide.to_uw, record.wide.size, density, (W, H))
    result = ImageResult(id=record.name, size=(W, H), box=box, info={"density": density})
    scorer = _Scorer(result, truth, cfg, lpips_net, crop_methods, wide_box=wide_box)
    _score_single_image(scorer, uw, (H, W), peers)
    for m in models:
        sr, secs = _run_model(m.model, uw, cfg, device)
        t = time.perf_counter()
        out = resample(sr, (H, W))
        scorer.add(f"{m.name} (no ref)", out, secs + time.perf_counter() - t)
        del sr, out
        runs = [(m.name, photos.wide)]
        if tele_only and photos.wide is not None:
            runs.append((f"{m.name} (tele only)", None))
        for name, wide in runs:
            t = time.perf_counter()
            try:
                zoomed = zoom_photo(
                    m.model,
                    uw,
                    tele,
                    wide=None if wide is None else wide.pixels,
                    outscale=density,
                    zoom_ratio=photos.zoom_ratio.value,
                    wide_zoom_ratio=None if photos.wide_zoom_ratio is None else photos.wide_zoom_ratio.value,
                    tile=cfg.tile,
                    overlap=cfg.tile_overlap,
                    device=device,
                    half=not cfg.fp32,
                    self_check=cfg.self_check,
                    paste=cfg.paste,
                    tta=cfg.tta,
                    guard=cfg.guard,
                    perceptual=m.perceptual,
                    uw_name=cap.uw.name,
                    tele_name=cap.tele.name,
                    wide_name="wide" if wide_file is None else wide_file.name,
                )
            except AlignmentError as exc:  # photos in the wrong order: nothing a zoom would write
                log.warning("%s: %s not evaluated: %s", record.name, name, exc)
                result.failed[name] = str(exc)
                continue
            secs = time.perf_counter() - t
            reg, aligned = zoomed.registration, zoomed.aligned
            result.info[name] = {
                "reference": "used" if zoomed.no_ref is None else f"not used: {zoomed.no_ref}",
                "registered_ratio": None if reg is None else reg.zoom_ratio,
                "registration": None if reg is None else reg.method,
                "valid_fraction": None if aligned is None else aligned.valid_fraction,
                "wide": zoomed.wide,
                "model_scale": zoomed.scale,
                "resample": zoomed.outscale / zoomed.scale,
                "tiles": zoomed.tiles,
                "residual_gain": None if zoomed.self_check is None else zoomed.self_check.gain,
                "base_band": None if zoomed.self_check is None else zoomed.self_check.base,
            }
            if zoomed.no_ref is not None:
                result.no_ref[name] = zoomed.no_ref
            scorer.add(name, zoomed.image, secs)
        if tele_only and photos.wide is None:  # a pair: the tele alone is what it was zoomed with
            scorer.same_as(f"{m.name} (tele only)", m.name)
    return scorer.finish()


# --------------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------------


def _kind(root: Path) -> str:
    if (root / MANIFEST_NAME).is_file():
        return "prepared"
    if (root / SIMULATION_NAME).is_file():
        return "simulated"
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    raise DatasetError(
        f"{root}: neither a prepared dataset ({MANIFEST_NAME}) nor a simulated set ({SIMULATION_NAME})"
    )


def _protocol(kind: str, cfg: EvalConfig, scale: int | None) -> dict[str, Any]:
    common = (
        "8-bit RGB, no border crop; PSNR (corner: pooled MSE of its 4 pieces), SSIM (scikit-image, Gaussian, "
        "window 11), LPIPS (AlexNet v0.1); corner SSIM/LPIPS: mean of the pieces; means over images"
    )
    labels = None
    if kind == "prepared":
        if cfg.holdout is None:
            protocol, ref, regions = (
                "SelfDZSR protocol",
                "ref (the centre 1/s of hr)",
                ("centre = the ref's field of view, corner = the rest"),
            )
        else:
            protocol, ref = "held-out protocol", f"the half of hr opposite its {cfg.holdout} half as ref"
            regions = (
                f"centre = the ref's half, corner = the held-out {cfg.holdout} half (real tele pixels the "
                "model never received; hr was colour-matched to lr by prepare over the whole tele)"
            )
            labels = {"centre": "ref half", "corner": f"held-out {cfg.holdout} half"}
        summary = (
            f"Prepared dataset ({cfg.split} split), {protocol} at x{scale}: lr super-resolved with {ref} and "
            f"compared with hr; {regions}; masked = valid registration pixels only; " + common
        )
    else:
        summary = (
            "Simulated captures: the whole uw photo zoomed as `dzsr zoom UW TELE --outscale r` does it "
            "(r = the true density), compared with the ground truth; centre = the bounding box of the "
            "tele's true footprint, corner = the rest; " + common
        )
    return {
        "summary": summary,
        "regions": list(REGIONS),
        "bit_depth": 8,
        "border_crop": 0,
        "ssim": {"win_size": 11, "gaussian_weights": True, "data_range": 255, "library": "scikit-image"},
        "lpips": {"net": "alex", "version": "0.1"} if cfg.lpips else None,
        "tile": cfg.tile,
        "device": cfg.device,
        "holdout": cfg.holdout,
        "region_labels": labels,
    }


def evaluate(
    cfg: EvalConfig, *, progress: ProgressFn | None = None, peers: dict[str, Peer] | None = None
) -> tuple[EvalReport, dict[str, Path]]:
    """Score the models and the baselines on a prepared dataset or a simulated set; write the report.

    Args:
        cfg: the options.
        progress: see :data:`ProgressFn`.
        peers: other single-image methods to score after the interpolations (shown in the crops too).

    Returns:
        ``(report, files)``: the report and the files written (``json``, ``csv``, ``md``, ``html``, ``png``).

    Raises:
        ConfigError: a model whose scale does not match a prepared dataset's.
        DatasetError: missing, empty or corrupt data.
        WeightsError: a model or the LPIPS weights cannot be loaded.
        OutputError: ``cfg.out`` cannot be written or lacks the space (checked before the work).
    """
    root = cfg.data
    kind = _kind(root)
    if cfg.holdout is not None and kind != "prepared":
        raise ConfigError(
            f"{root}: --holdout needs a prepared dataset (a simulated set has full ground truth)"
        )
    check_output(cfg.out / "report.json")  # before minutes of work, not after
    check_output(cfg.out / crop_file("image", "centre", "method"))
    for folder in (cfg.out, (cfg.out / crop_file("image", "centre", "method")).parent):
        remove_stale_temps_in(folder)  # what a killed run was writing
    device = resolve_device(cfg.device)
    lpips_net = LPIPS().to(device) if cfg.lpips else None
    items: list[PreparedPair | SimulationRecord]
    if kind == "prepared":
        scale = dataset_scale(root)
        items = list(load_pairs(root, None if cfg.split == "all" else cfg.split))
        models = _load_models(cfg.models, device, float(scale), cfg.tta)
        wrong = [f"{m.name} (x{m.scale})" for m in models if m.scale != scale]
        if wrong:
            raise ConfigError(f"{root} is a x{scale} dataset; these models are not: {', '.join(wrong)}")
    else:
        scale = None
        records = read_simulation(root)
        items = list(records)
        models = _load_models(cfg.models, device, records[0].density, cfg.tta)
    items = items[: cfg.limit] if cfg.limit else items
    peers = peers or {}
    triples = any(isinstance(item, SimulationRecord) and item.wide is not None for item in items)
    methods, method_info = _methods(models, peers, tele_only=triples)
    crop_methods = ["bicubic", *peers, *(m.name for m in models)]
    report = EvalReport(
        kind=kind,
        data=str(root),
        methods=methods,
        method_info=method_info,
        protocol=_protocol(kind, cfg, scale),
        crop_methods=crop_methods,
    )
    # The crops (two regions, each crop method and the truth) as uncompressed RGB at most, the report sheet
    # (some of the same crops) and the tables.
    crops = len(items) * 2 * (len(crop_methods) + 1) * cfg.crop**2 * 3
    check_output(cfg.out / "report.png", 2 * crops + 2**20)
    for i, item in enumerate(items):
        if isinstance(item, PreparedPair):
            assert scale is not None
            result = _eval_prepared(item, scale, models, cfg, device, lpips_net, crop_methods, peers)
        else:
            result = _eval_simulated(
                item, root, models, cfg, device, lpips_net, crop_methods, peers, tele_only=triples
            )
        report.images.append(result)
        if progress:
            progress(i + 1, len(items), result.id)
    if not report.complete:
        log.warning("no image was evaluated by every method; the means are empty")
    files = write_report(report, cfg.out)
    return report, files


def default_out(data: Path) -> Path:
    """Default report folder: ``<DATA>_eval`` next to the data folder."""
    resolved = data.resolve()
    return resolved.parent / f"{resolved.name}_eval"
