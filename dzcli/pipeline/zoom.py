"""``dzsr zoom``: super-resolve the whole wide photo of a capture to the tele's pixel density.

Per capture (the same reading, registration, alignment and colour code as ``dzsr prepare``,
:mod:`dzcli.align.capture`; :func:`zoom_photo` is the in-memory part, also the Python API):

1. read both photos (EXIF orientation applied once), EXIF zoom ratio, registration of the tele inside the
   uw (features, or the direct search on low-texture scenes; no centred-tele assumption; for a triple
   capture whose direct match is too weak, through its middle camera);
2. the tele resampled onto the uw's grid at the network's ``s×`` density over its footprint, mapped to
   the uw's colours; pixels where the registration is not valid are replaced (with a soft edge) by the
   network's own reference-free output there, so nothing misregistered is ever pasted and the network is
   not told that the blurred uw is the scene's detail (measured on simulated ×2 phone captures: +1.0 dB
   inside the tele's footprint over the bicubic uw there); for a triple capture, the middle camera (the
   wide) likewise over its own, larger footprint, and both merged into one reference
   (:func:`merge_references`): the tele where it is valid, the wide around it (``wide``);
3. optionally (``adapt``), a few self-supervised fine-tuning steps on this capture
   (:func:`dzcli.train.loop.adapt`); the self-check (``self_check``, :mod:`dzcli.infer.selfcheck`):
   how much of the network's reference-free detail the tele supports on this capture, and how much of the
   wide camera's own sharpening it shows; then tiled reference-based SR of the whole uw
   (:func:`dzcli.infer.engine.super_resolve`), its detail outside the tele's view scaled and the wide's
   sharpening taken out there as the self-check says;
4. resampling from ``s×`` to the output scale (default: the tele's density ``r``, taken as ``s`` when
   within :data:`SNAP_TOLERANCE`) with Lanczos (up) or area (down) filtering; when the output and the tele
   are both denser than ``s``, the tele's own detail above ``s`` added inside its footprint
   (:mod:`dzcli.infer.paste`, the tele aligned again at that density);
5. an atomic write in the uw's format and bit depth, EXIF and XMP kept (Orientation 1, new size), ICC
   kept, and the uw's alpha channel upscaled (bicubic) where the output format holds one; a conversion
   not asked for (16-bit to 8-bit, alpha dropped) is said in the result's ``notes``.

A capture whose tele is not found (or of which too little is consistent with the uw) is zoomed by the
network without the reference, and its result says why (``no_ref``); ``require_ref`` makes that an error.
Inputs are never overwritten; existing outputs are skipped unless ``overwrite``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.align.capture import (
    AlignedCapture,
    CaptureRegistration,
    align_capture,
    read_capture,
    register_capture,
    register_photos,
)
from dzcli.align.register import Registration, register
from dzcli.data.pairs import Capture, discover_captures
from dzcli.errors import AlignmentError, ConfigError, InputError, ResourceError, TeleNotFoundError
from dzcli.infer.devices import available_memory, resolve_device
from dzcli.infer.engine import check_tta, describe, super_resolve
from dzcli.infer.guard import guard_flat
from dzcli.infer.paste import paste_reference
from dzcli.infer.selfcheck import SelfCheck, apply_self_check
from dzcli.io.atomic import check_output
from dzcli.io.exif import update_exif, update_xmp
from dzcli.io.images import IMAGE_SUFFIXES, RAW_SUFFIXES, Photo, as_image, holds_alpha, save_image
from dzcli.metrics.image import psnr
from dzcli.resize import resample, torch_resize
from dzsr_models.bundled import ModelInfo, choose_bundled, load_model

log = logging.getLogger(__name__)

EXTS = ("auto", "png", "jpg", "jpeg", "tif", "tiff", "webp", "heic")
"""Accepted ``--ext`` values (``auto``: the uw's own format; RAW becomes 16-bit TIFF)."""
_WRITABLE = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".heic", ".heif"}
_EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".webp"}
_SAME_FORMAT = {
    "jpeg": "jpg",
    "tiff": "tif",
    "heif": "heic",
    "jpg": "jpg",
    "tif": "tif",
    "heic": "heic",
    "png": "png",
    "webp": "webp",
}
SNAP_TOLERANCE = 0.005
"""Without ``--outscale``, a tele density within this relative distance of ``s`` is taken as ``s`` exactly
(registration measures it to about 0.1%; resampling by 1.001 would only soften the result)."""
MEMORY_FRACTION = 0.9
"""Share of the available RAM the output buffers may take before zoom refuses (ResourceError)."""
MIN_REF_VALID = 0.05
"""Below this fraction of registration-consistent tele pixels the reference is not used at all."""
PASTE_MARGIN = 1.1
"""The tele is pasted at the output's density when the output and the tele are both denser than this times
the network's scale (a ×2 network at ×2.1 is left alone: too little detail to gain for a second alignment)."""
REF_BLEND = 0.25
"""Share of the way the network's output is pulled towards the registered tele where the tele is valid: the
two err independently (the network's detail is partly made up, the tele has its own noise and blur), so
their mix is closer to the scene than either (simulated ×2 phone captures of the training photos, inside the
tele's footprint: +0.19 dB at 0.25, the best of 0, 0.25, 0.5, 0.75 and 1; 1 would paste the tele)."""
WIDE_MIN_DENSITY = 0.9
"""The middle camera of a triple capture serves as a reference when its pixel density over the uw is at least
this times the network's scale (a sparser one would only feed the network upsampled pixels)."""

T = TypeVar("T")

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, item)``: stage ``"pairs"`` (after each capture), ``"adapt"`` (after each
fine-tuning step) or ``"tiles"``."""


@dataclass(frozen=True)
class ZoomConfig:
    """Options of ``dzsr zoom`` (defaults are the documented defaults).

    Attributes:
        inputs: ``(UW, TELE)`` photo files, or ``(FOLDER,)`` / ``(PAIRS.csv,)`` of captures.
        out: output file (one pair) or folder; None: next to the uw (one pair) or ``FOLDER_zoom/``.
        model: checkpoint path or bundled model name; None: the bundled default.
        outscale: output scale relative to the uw; None: the tele's pixel density.
        suffix: appended to the uw's file stem (``{stem}_{suffix}.{ext}``); empty keeps the stem.
        ext: output format; ``auto`` keeps the uw's.
        overwrite: replace existing outputs (inputs are never overwritten).
        tile: tile side in uw pixels; 0 = automatic from free memory.
        tile_overlap: least tile overlap in uw pixels.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        fp32: no float16 on CUDA.
        max_megapixels: refuse larger photos (ResourceError).
        zoom_ratio: zoom ratio when EXIF has none (registration refines it anyway).
        quality: JPEG/WebP/HEIC quality.
        max_gap: seconds between shots grouped as one capture (folder mode, EXIF grouping).
        adapt: first fine-tune (a copy of) the model for this many self-supervised steps on the capture
            itself (its wide crop under the tele, the registered tele, their validity mask).
        adapt_batch: patches per fine-tuning step.
        adapt_patch: LR patch side of the fine-tuning steps.
        require_ref: a capture whose tele cannot be found or used is an error (exit 4) instead of being
            zoomed without the reference.
        self_check: measure under the tele how much of the network's reference-free detail this capture
            supports, and keep that much outside the tele's view (:mod:`dzcli.infer.selfcheck`).
        paste: when the output is denser than the network's scale, paste the tele at the output's density
            inside its footprint (:mod:`dzcli.infer.paste`).
        ref_blend: pull the network's output this share of the way towards the tele where the tele is valid
            (:data:`REF_BLEND`; 0: the network's output alone).
        tta: run the network on each tile in this many mirrored / transposed views and average them
            (1, 2, 4 or 8; about that many times the network's time).
        guard: where no reference is valid, keep the network's fine detail (finer than two wide-photo pixels)
            only where the wide photo shows structure above its noise (:mod:`dzcli.infer.guard`).
        wide: for a triple capture, the middle camera is also a reference, where the tele does not reach
            (:func:`merge_references`).
        wide_photo: with ``(UW, TELE)``, the middle camera's photo of the same triple capture.
    """

    inputs: tuple[Path, ...]
    out: Path | None = None
    model: str | None = None
    outscale: float | None = None
    suffix: str = "out"
    ext: str = "auto"
    overwrite: bool = False
    tile: int = 0
    tile_overlap: int = 16
    device: str = "auto"
    fp32: bool = False
    max_megapixels: float = 100.0
    zoom_ratio: float | None = None
    quality: int = 95
    max_gap: float = 2.0
    adapt: int = 0
    adapt_batch: int = 4
    adapt_patch: int = 48
    require_ref: bool = False
    self_check: bool = True
    paste: bool = True
    ref_blend: float = REF_BLEND
    tta: int = 1
    guard: bool = True
    wide: bool = True
    wide_photo: Path | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) not in (1, 2):
            raise ConfigError("give a wide and a tele photo (UW TELE), or one folder of captures")
        if self.ext.lower().lstrip(".") not in EXTS:
            raise ConfigError(f"--ext must be one of {', '.join(EXTS)}, not {self.ext!r}")
        if self.outscale is not None and not 0 < self.outscale <= 16:
            raise ConfigError(f"--outscale must be in (0, 16], not {self.outscale}")
        if self.tile < 0 or self.tile_overlap < 0:
            raise ConfigError(
                f"--tile and --tile-overlap must be >= 0, not {self.tile} and {self.tile_overlap}"
            )
        if 0 < self.tile < 32:
            raise ConfigError(f"--tile must be 0 (automatic) or at least 32, not {self.tile}")
        if any(c in self.suffix for c in "/\\"):
            raise ConfigError(f"--suffix must not contain a path separator: {self.suffix!r}")
        if self.zoom_ratio is not None and self.zoom_ratio <= 1.0:
            raise ConfigError(f"--ratio must be greater than 1, not {self.zoom_ratio}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be in 1..100, not {self.quality}")
        if self.adapt < 0 or self.adapt_batch < 1 or self.adapt_patch < 8:
            raise ConfigError(
                f"--adapt must be >= 0 (got {self.adapt}), with a batch >= 1 and patches >= 8 px "
                f"(got {self.adapt_batch}, {self.adapt_patch})"
            )
        if self.max_megapixels <= 0:
            raise ConfigError(f"--max-megapixels must be positive, not {self.max_megapixels}")
        if not 0 <= self.ref_blend <= 1:
            raise ConfigError(f"--ref-blend must be in [0, 1], not {self.ref_blend}")
        check_tta(self.tta, "--tta")
        if self.wide_photo is not None and len(self.inputs) != 2:
            raise ConfigError("--wide-photo goes with UW TELE photos (a folder's triples are found in it)")


@dataclass(frozen=True)
class ReferenceUse:
    """How the tele (and, for a triple capture, the wide) served as the reference of a written output.

    Attributes:
        valid_fraction: share of the registered tele consistent with the uw (the rest was not used); the
            wide's when only the wide was used.
        box: ``(x0, y0, w, h)`` of the uw crop under the reference (the tele's and the wide's footprints
            together), in uw pixels.
        self_check: what the self-check kept of the network's reference-free detail outside the tele's view
            and took out of the wide camera's sharpening there (None: no self-check).
        pasted: the tele was pasted at the output's density inside its footprint (the output is denser than
            the network's scale; :mod:`dzcli.infer.paste`).
        wide: the middle camera of a triple capture was a reference in its footprint, around the tele's
            (the only reference when the tele was not found: then the output's ``no_ref`` says why).
    """

    valid_fraction: float
    box: tuple[int, int, int, int]
    self_check: SelfCheck | None = None
    pasted: bool = False
    wide: bool = False


@dataclass(frozen=True)
class ZoomOutput:
    """How a written output was made.

    Attributes:
        in_size: the uw's ``(width, height)``.
        out_size: the output's ``(width, height)``.
        outscale: output pixels per uw pixel.
        scale: the network's scale ``s`` (its ``s×`` output was resampled by :attr:`resample`).
        model: the network's name (``+adaptN`` when fine-tuned on the capture, ``+ttaN`` with ``--tta N``).
        device: where it ran.
        tiles: tiles the network ran on.
        seconds: wall time of the capture, reading to writing.
        bit_depth: of the output file.
        zoom_ratio: the uw-to-tele field-of-view ratio: registered, else EXIF's, else None.
        density: tele pixels per uw pixel: registered, else from EXIF's zoom ratio, else None.
        reference: how the tele (and the wide) was used, or None when the output was made without a
            reference.
        no_ref: why the output was made without the tele as the reference (None when it was used).
        timings: seconds per stage.
        notes: conversions the output needed that were not asked for (16-bit input to an 8-bit format, an
            alpha channel the format cannot hold).
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    outscale: float
    scale: int
    model: str
    device: str
    tiles: int
    seconds: float
    bit_depth: int
    zoom_ratio: float | None
    density: float | None
    reference: ReferenceUse | None
    no_ref: str | None
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def resample(self) -> float:
        """The factor the network's ``s×`` output was resampled by."""
        return self.outscale / self.scale


@dataclass(frozen=True)
class ZoomResult:
    """What happened to one capture. ``status`` is ``ok``, ``skipped`` (output exists) or the error;
    ``written`` says how the output was made (None when none was written)."""

    id: str
    uw: Path
    tele: Path
    output: Path
    status: str
    written: ZoomOutput | None = None

    @property
    def ok(self) -> bool:
        """Whether the output was written."""
        return self.status == "ok"


# --------------------------------------------------------------------------------------------------------
# Pure image steps
# --------------------------------------------------------------------------------------------------------


def fill_invalid(
    ref: Tensor, lr: Tensor, mask: Tensor, scale: int, *, background: Tensor | None = None
) -> Tensor:
    """Replace the Ref where registration is not valid by ``background`` (else the upsampled LR), with a
    soft edge.

    Args:
        ref: ``(3, s·h, s·w)`` the tele on the LR grid, in the LR's colours, ``[0, 1]``.
        lr: ``(3, h, w)`` the uw crop under it, ``[0, 1]``.
        mask: ``(1, s·h, s·w)`` validity in ``{0, 1}``.
        scale: ``s``.
        background: ``(3, s·h, s·w)`` what the reference holds where it is not valid (zoom: the network's own
            reference-free output); None: the bicubic ``lr``.

    Returns:
        ``(3, s·h, s·w)``: ``ref·m + up·(1 - m)`` with ``m`` the mask softened inwards over ``2s``
        pixels (0 wherever ``mask`` is 0).
    """
    m = _soft_mask(mask, scale)
    up = (
        torch_resize(lr, (int(ref.shape[-2]), int(ref.shape[-1])), "bicubic")
        if background is None
        else background
    )
    return ref * m + up * (1 - m)


def _soft_mask(mask: Tensor, scale: int) -> Tensor:
    """``(1, H, W)`` ``mask`` softened inwards over ``2·scale`` pixels (0 wherever it is 0)."""
    k = 4 * scale + 1
    soft = F.avg_pool2d(mask[None].float(), k, stride=1, padding=k // 2, count_include_pad=False)[0]
    return soft * mask


def pull_towards_reference(sr: Tensor, aligned: AlignedCapture, weight: float) -> Tensor:
    """``sr`` moved ``weight`` of the way towards the reference where it is valid (soft edge), in place.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for the whole uw, at the reference's scale ``s``.
        aligned: the reference over uw pixels ``aligned.box`` (``ref``, ``mask`` at ``s``).
        weight: in ``[0, 1]``; 0 leaves ``sr`` as it is, 1 pastes the valid reference.

    Returns:
        ``sr``.
    """
    s = aligned.scale
    x0, y0, w, h = aligned.box
    region = sr[:, s * y0 : s * (y0 + h), s * x0 : s * (x0 + w)]
    pull = (_soft_mask(aligned.mask, s) * weight).to(region.dtype)
    region.add_(pull * (aligned.ref.to(region.dtype) - region))
    return sr


def merge_references(
    uw: Tensor,
    wide: AlignedCapture,
    tele: AlignedCapture | None,
    *,
    background: Callable[[tuple[int, int, int, int]], Tensor] | None = None,
) -> AlignedCapture:
    """The wide and the tele of a triple capture as one reference over both their footprints.

    Both at the network's scale ``s``: the ``background`` where neither is valid, the wide where it is, and
    the tele over it where the tele is (each blended in with the soft edge of :func:`fill_invalid`): the
    tele's detail inside its footprint, the wide's around it.

    Args:
        uw: ``(3, H, W)`` the whole uw photo in [0, 1].
        wide: the middle camera aligned on ``uw`` (:func:`dzcli.align.capture.align_capture`).
        tele: the tele aligned on ``uw`` at the same scale, or None.
        background: ``background(box)`` gives ``(3, s·h, s·w)`` over uw pixels ``box = (x0, y0, w, h)``
            (zoom: the network's own reference-free output); None: the bicubic uw.

    Returns:
        An aligned capture over the bounding box of both footprints (the tele's registration, valid fraction,
        flow and colour mapping when it has a tele; the wide's otherwise), its mask the union of both.

    Raises:
        ValueError: the two were aligned at different scales.
    """
    parts = [wide] if tele is None else [wide, tele]
    s = wide.scale
    if any(p.scale != s for p in parts):
        raise ValueError(f"references at x{wide.scale} and x{parts[-1].scale} cannot be merged")
    x0 = min(p.box[0] for p in parts)
    y0 = min(p.box[1] for p in parts)
    x1 = max(p.box[0] + p.box[2] for p in parts)
    y1 = max(p.box[1] + p.box[3] for p in parts)
    lr = uw[:, y0:y1, x0:x1]
    box = (x0, y0, x1 - x0, y1 - y0)
    ref = (
        torch_resize(lr, (s * (y1 - y0), s * (x1 - x0)), "bicubic")
        if background is None
        else background(box).clone()
    )
    mask = ref.new_zeros(1, *ref.shape[-2:])
    for p in parts:
        bx, by, bw, bh = p.box
        rows = slice(s * (by - y0), s * (by - y0 + bh))
        cols = slice(s * (bx - x0), s * (bx - x0 + bw))
        ref[:, rows, cols] = fill_invalid(p.ref, p.lr, p.mask, s, background=ref[:, rows, cols])
        mask[:, rows, cols] = torch.maximum(mask[:, rows, cols], p.mask.float())
    return replace(parts[-1], lr=lr, ref=ref, mask=mask, box=box)


def wide_fidelity(uw: Tensor, wide: AlignedCapture, tele: AlignedCapture) -> tuple[float, float] | None:
    """How faithful the wide of a triple capture is, judged by the tele where both are valid: the PSNR (dB)
    of the wide and of the bicubic uw against the tele, both at the network's scale over the part of the
    tele's footprint inside the wide's; None when they share fewer than 256 valid pixels, or were aligned at
    different scales (a triple-camera network's ``ref2_scale`` other than its scale)."""
    s = tele.scale
    if wide.scale != s:
        return None
    x0, y0 = max(wide.box[0], tele.box[0]), max(wide.box[1], tele.box[1])
    x1 = min(wide.box[0] + wide.box[2], tele.box[0] + tele.box[2])
    y1 = min(wide.box[1] + wide.box[3], tele.box[1] + tele.box[3])
    if x1 <= x0 or y1 <= y0:
        return None

    def crop(t: Tensor, a: AlignedCapture) -> Tensor:
        bx, by = a.box[:2]
        return t[:, s * (y0 - by) : s * (y1 - by), s * (x0 - bx) : s * (x1 - bx)]

    both = crop(wide.mask, wide) * crop(tele.mask, tele)
    if float(both.sum()) < 256:
        return None
    target = crop(tele.ref, tele)
    up = torch_resize(uw[:, y0:y1, x0:x1], (s * (y1 - y0), s * (x1 - x0)), "bicubic").clamp(0, 1)
    return psnr(crop(wide.ref, wide), target, mask=both), psnr(up, target, mask=both)


# --------------------------------------------------------------------------------------------------------
# Captures and output paths
# --------------------------------------------------------------------------------------------------------


def _output_name(uw: Path, cfg: ZoomConfig) -> str:
    """``{stem}_{suffix}{.ext}`` for the uw photo ``uw``."""
    stem = f"{uw.stem}_{cfg.suffix}" if cfg.suffix else uw.stem
    return stem + _output_suffix(uw, cfg.ext)


def _output_suffix(uw: Path, ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if ext != "auto":
        return f".{ext}"
    suffix = uw.suffix.lower()
    if suffix in RAW_SUFFIXES or suffix not in _WRITABLE:
        return ".tif"
    return suffix


def _is_folder_target(path: Path) -> bool:
    return path.is_dir() or str(path).endswith(("/", os.sep)) or not path.suffix


def _plan(cfg: ZoomConfig) -> tuple[list[tuple[Capture, Path]], set[Path]]:
    """The captures to zoom with their output files, and every input file (resolved)."""
    if len(cfg.inputs) == 2:
        uw, tele = cfg.inputs
        wide = cfg.wide_photo
        for p in (uw, tele) if wide is None else (uw, tele, wide):
            if not p.exists():
                raise InputError(f"{p}: no such file")
            if not p.is_file():
                raise InputError(f"{p}: not a file (give UW TELE photos, or one folder)")
        cap = Capture(id=uw.stem, uw=uw, tele=tele, wide=wide, method="files")
        target = cfg.out
        if target is None:
            out = uw.parent / _output_name(uw, cfg)
        elif _is_folder_target(target):
            out = target / _output_name(uw, cfg)
        else:
            if target.suffix.lower() not in _WRITABLE:
                raise ConfigError(
                    f"{target}: cannot write '{target.suffix}' files (use .png, .jpg, .tif, .webp or .heic)"
                )
            ext = cfg.ext.lower().lstrip(".")
            if ext != "auto" and _SAME_FORMAT.get(ext, ext) != _SAME_FORMAT.get(
                target.suffix.lower()[1:], ""
            ):
                raise ConfigError(f"-o {target} and --ext {ext} disagree: give one of them")
            out = target
        return [(cap, out)], {p.resolve() for p in cap.sources.values()}
    (src,) = cfg.inputs
    if src.is_file() and src.suffix.lower() in IMAGE_SUFFIXES:
        raise ConfigError(f"{src}: give the tele photo too (dzsr zoom UW TELE), or a folder of captures")
    captures, alone = discover_captures(src, max_gap=cfg.max_gap)
    root = src if src.is_dir() else src.parent
    out_dir = cfg.out if cfg.out is not None else root.parent / f"{root.name}_zoom"
    if cfg.out is not None and not _is_folder_target(cfg.out):
        raise ConfigError(f"{cfg.out}: -o must be a folder when zooming a folder of captures")
    if not captures:
        raise InputError(f"{src}: no captures found ({len(alone)} photos without a partner)")
    inputs = {p.resolve() for c in captures for p in c.sources.values()} | {p.resolve() for p in alone}
    jobs = []
    for cap in captures:
        rel = cap.uw.parent.relative_to(root) if cap.uw.parent.is_relative_to(root) else Path()
        jobs.append((cap, out_dir / rel / _output_name(cap.uw, cfg)))
    return jobs, inputs


def _check_outputs(jobs: list[tuple[Capture, Path]], inputs: set[Path]) -> None:
    """Refuse any output that is an input (by path or by identity) or that two captures share."""
    seen: dict[Path, str] = {}
    for cap, out in jobs:
        resolved = out.resolve()
        if resolved in inputs or (out.exists() and any(_same_file(out, p) for p in inputs)):
            raise ConfigError(
                f"{out}: is an input photo; refusing to overwrite it (choose another -o or --suffix)"
            )
        if resolved in seen:
            raise ConfigError(f"{out}: captures {seen[resolved]} and {cap.id} would both write it")
        seen[resolved] = cap.id


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------------


class _Models:
    """Loads each model once (the bundled default may differ by output scale)."""

    def __init__(self, spec: str | None, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self._cache: dict[str, tuple[nn.Module, ModelInfo]] = {}

    def check(self) -> None:
        """Fail early: load an explicit ``--model`` now, or make sure a bundled model exists."""
        if self.spec is not None:
            self.get(1.0)
        else:
            choose_bundled(None)

    def get(self, outscale: float | None) -> tuple[nn.Module, ModelInfo]:
        """The model for a capture whose output scale is ``outscale``: ``(model, info)``."""
        spec = self.spec if self.spec is not None else choose_bundled(outscale).name
        if spec not in self._cache:
            self._cache[spec] = load_model(spec, device=self.device)
        return self._cache[spec]


def output_bytes(out_size: tuple[int, int], suffix: str, bit_depth: int, channels: int = 3) -> int:
    """A generous estimate of an output file's size: the raw samples for PNG/TIFF, 1 byte a pixel for the
    lossy formats (a photo at quality 95 takes less)."""
    pixels = out_size[0] * out_size[1]
    if suffix.lower() in (".png", ".tif", ".tiff"):
        return pixels * channels * bit_depth // 8
    return pixels


def _check_memory(photo: Photo, scale: int, out_size: tuple[int, int], alpha: bool) -> None:
    """Refuse outputs whose CPU buffers (``s×`` canvas, resampled copy, integer pixels, the upscaled
    ``alpha``) cannot fit."""
    w, h = photo.size
    out_pixels = out_size[0] * out_size[1]
    need = 4 * (3 * (scale * scale * w * h + 2 * out_pixels) + (out_pixels if alpha else 0))
    free = available_memory(torch.device("cpu"))
    if need > MEMORY_FRACTION * free:
        raise ResourceError(
            f"{photo.path}: a {out_size[0]}x{out_size[1]} output needs about {need / 2**30:.1f} GiB of RAM, "
            f"{free / 2**30:.1f} GiB are available; lower --outscale or --max-megapixels"
        )


def _adapt(
    model: nn.Module,
    aligned: AlignedCapture,
    steps: int,
    batch: int,
    patch: int,
    name: str,
    device: torch.device,
    progress: ProgressFn | None,
) -> nn.Module:
    """A copy of ``model`` fine-tuned on this capture (SelfDZSR's self-supervision on one pair)."""
    from dzcli.data.dataset import PreparedPair
    from dzcli.train.loop import adapt

    pair = PreparedPair.from_tensors(aligned.lr, aligned.ref, aligned.mask, id=name)
    report = None if progress is None else (lambda k, n, loss: progress("adapt", k, n, name))
    log.info("%s: adapting the model for %d steps on the capture", name, steps)
    return adapt(model, [pair], steps, batch_size=batch, patch_size=patch, device=device, progress=report)


@dataclass(frozen=True, eq=False)
class ZoomedPhoto:
    """A wide photo super-resolved, and how.

    Attributes:
        image: ``(3, H', W')`` float32 in [0, 1], the whole wide photo at ``outscale``× its size.
        outscale: output pixels per wide pixel.
        scale: the network's scale ``s`` (its ``s×`` output was resampled by ``outscale / s``).
        registration: where the tele lies in the wide photo, or None when it was not found.
        aligned: the reference the network was given (the tele on the grid of the wide crop it covers), or
            None when the photo was zoomed without it.
        no_ref: why the reference was not used (None when it was).
        tiles: tiles the network ran on.
        timings: seconds per stage (``register``, ``align``, ``adapt``, ``self_check``, ``sr``, ``resample``).
        self_check: what the self-check kept of the network's reference-free detail outside the tele's view
            and took out of the wide camera's sharpening there (None: not measured).
        pasted: the tele was pasted at ``outscale`` inside its footprint (:mod:`dzcli.infer.paste`).
        wide: the middle camera of a triple capture was part of the reference (:func:`merge_references`).
    """

    image: Tensor
    outscale: float
    scale: int
    registration: Registration | None
    aligned: AlignedCapture | None
    no_ref: str | None
    tiles: int
    timings: dict[str, float]
    self_check: SelfCheck | None = None
    pasted: bool = False
    wide: bool = False


def _locate_tele(
    find: Callable[[], T],
    *,
    require_ref: bool,
    uw_name: str,
    timings: dict[str, float],
) -> tuple[T | None, str | None]:
    """The registration ``find()`` makes, or ``(None, why)`` when the tele is not found (an error with
    ``require_ref``)."""
    t = time.perf_counter()
    try:
        return find(), None
    except TeleNotFoundError as exc:
        if require_ref:
            raise
        log.info("%s: tele not found (%s): zooming without the reference", uw_name, exc)
        return None, str(exc)
    finally:
        timings["register"] = time.perf_counter() - t


def _density(
    reg: Registration | None, zoom_ratio: float | None, uw_size: tuple[int, int], tele_size: tuple[int, int]
) -> float | None:
    """Tele pixels per wide pixel: registered, else from the EXIF zoom ratio, else unknown."""
    if reg is not None:
        return reg.density
    return zoom_ratio * tele_size[0] / uw_size[0] if zoom_ratio else None


def _output_scale(requested: float | None, density: float | None, s: int) -> float:
    """``--outscale``, else the tele's density (``s`` when within :data:`SNAP_TOLERANCE`), else ``s``."""
    if requested is not None:
        return requested
    if density is None or abs(density / s - 1) < SNAP_TOLERANCE:
        return float(s)
    return density


def _usable_alignment(
    uw: Tensor,
    photo: Tensor,
    reg: Registration,
    *,
    scale: int,
    zoom_ratio: float | None,
    names: tuple[str, str],
) -> AlignedCapture:
    """``photo`` (the tele, or a triple capture's wide) aligned on the uw at ``scale``
    (:func:`dzcli.align.capture.align_capture`; ``names``: the uw's and the photo's).

    Raises:
        TeleNotFoundError: less than :data:`MIN_REF_VALID` of it is consistent with the uw.
    """
    uw_name, name = names
    aligned = align_capture(
        uw, photo, scale=scale, zoom_ratio=zoom_ratio, registration=reg, uw_name=uw_name, tele_name=name
    )
    if aligned.valid_fraction < MIN_REF_VALID:
        raise TeleNotFoundError(f"only {aligned.valid_fraction:.0%} of {name} is consistent with {uw_name}")
    return aligned


def _reference(
    uw: Tensor,
    tele: Tensor,
    reg: Registration | None,
    no_ref: str | None,
    *,
    scale: int,
    zoom_ratio: float | None,
    require_ref: bool,
    uw_name: str,
    tele_name: str,
    timings: dict[str, float],
) -> tuple[AlignedCapture | None, str | None]:
    """The reference for the network once the tele has been looked for (``reg``, or None and why in
    ``no_ref``): the aligned capture, or ``(None, why)`` when too little of the tele is usable."""
    if reg is None:
        return None, no_ref
    t = time.perf_counter()
    try:
        aligned = _usable_alignment(
            uw, tele, reg, scale=scale, zoom_ratio=zoom_ratio, names=(uw_name, tele_name)
        )
    except TeleNotFoundError as exc:
        if require_ref:
            raise
        log.info("%s: tele not usable (%s): zooming without the reference", uw_name, exc)
        return None, str(exc)
    finally:
        timings["align"] = time.perf_counter() - t
    if aligned.valid_fraction < 0.2:
        log.warning(
            "%s: only %.0f%% of the tele is consistent with the wide (moving scene or parallax): "
            "the rest of its footprint is not used",
            uw_name,
            100 * aligned.valid_fraction,
        )
    return aligned, None


def _dense_reference(
    uw: Tensor,
    tele: Tensor,
    aligned: AlignedCapture | None,
    *,
    outscale: float,
    density: float | None,
    scale: int,
    uw_name: str,
    tele_name: str,
    timings: dict[str, float],
) -> AlignedCapture | None:
    """The tele aligned at ``ceil(outscale)``× for :func:`dzcli.infer.paste.paste_reference`, when the output
    and the tele are both denser than the network's ``scale`` (None otherwise, or when it cannot be made)."""
    if aligned is None or density is None or min(outscale, density) <= scale * PASTE_MARGIN:
        return None
    t = time.perf_counter()
    try:
        dense = align_capture(
            uw,
            tele,
            scale=math.ceil(outscale - 1e-6),
            registration=aligned.registration,
            uw_name=uw_name,
            tele_name=tele_name,
        )
    except TeleNotFoundError as exc:  # the flow at this density found too little to trust
        log.info("%s: tele not pasted at x%.2f (%s)", uw_name, outscale, exc)
        return None
    finally:
        timings["align_dense"] = time.perf_counter() - t
    return dense


def _wide_reference(
    uw: Tensor,
    wide: Tensor,
    reg: Registration | None,
    *,
    scale: int,
    zoom_ratio: float | None,
    uw_name: str,
    wide_name: str,
    timings: dict[str, float],
) -> AlignedCapture | None:
    """The middle camera of a triple capture aligned on the uw at the network's ``scale`` over its footprint
    (registered now unless ``reg`` is given), or None when it is not found, too sparse or too little of it is
    consistent with the uw (logged: the capture is then zoomed as a pair)."""
    t = time.perf_counter()
    try:
        reg = reg or register(uw, wide, zoom_ratio_hint=zoom_ratio, uw_name=uw_name, tele_name=wide_name)
        if reg.density < WIDE_MIN_DENSITY * scale:
            log.info(
                "%s: %s has %.2fx the uw's pixel density, too little for the x%d network: not a reference",
                uw_name,
                wide_name,
                reg.density,
                scale,
            )
            return None
        aligned = _usable_alignment(uw, wide, reg, scale=scale, zoom_ratio=None, names=(uw_name, wide_name))
    except AlignmentError as exc:
        log.warning("%s: %s not used as a reference: %s", uw_name, wide_name, exc)
        return None
    finally:
        timings["wide"] = time.perf_counter() - t
    return aligned


def _super_resolve(
    model: nn.Module,
    uw: Tensor,
    aligned: AlignedCapture | None,
    *,
    outscale: float,
    tile: int,
    overlap: int,
    device: torch.device,
    half: bool,
    adapt: tuple[int, int, int],
    self_check: bool,
    uw_name: str,
    progress: ProgressFn | None,
    timings: dict[str, float],
    dense: AlignedCapture | None = None,
    middle: AlignedCapture | None = None,
    ref_blend: float = REF_BLEND,
    tta: int = 1,
    guard: bool = True,
    perceptual: bool = False,
) -> tuple[Tensor, int, SelfCheck | None]:
    """The network (first adapted to the capture with ``adapt = (steps, batch, patch)``) over the whole uw
    with the reference where it has one (and a triple-camera network's ``middle`` one), pulled ``ref_blend``
    of the way towards it where it is valid (:func:`pull_towards_reference`), outside the tele's view (and
    where it is not valid) as the self-check says (:mod:`dzcli.infer.selfcheck`), resampled to
    ``outscale``, and the ``dense`` tele pasted inside its footprint (see :func:`_dense_reference`); with
    ``guard``, its fine detail outside the valid reference kept where the uw shows structure
    (:mod:`dzcli.infer.guard`); each pass of the network in ``tta`` views (:func:`~dzcli.infer.engine.tta_views`);
    ``perceptual``: a network trained for looks, whose detail the self-check keeps whole:
    ``(image, tiles, self-check)``."""
    steps, batch, patch = adapt
    if steps > 0 and aligned is not None:
        t = time.perf_counter()
        model = _adapt(model, aligned, steps, batch, patch, uw_name, device, progress)
        timings["adapt"] = time.perf_counter() - t
    elif steps > 0:
        log.warning("%s: no reference to adapt the model on; --adapt skipped", uw_name)
    tiles = [0]

    def on_tile(done: int, total: int) -> None:
        tiles[0] = total
        if progress:
            progress("tiles", done, total, uw_name)

    t = time.perf_counter()
    ref2 = None if middle is None else fill_invalid(middle.ref, middle.lr, middle.mask, middle.scale)
    sr = super_resolve(
        model,
        uw,
        ref=None if aligned is None else aligned.ref,
        box=None if aligned is None else aligned.box,
        ref2=ref2,
        box2=None if middle is None else middle.box,
        tile=tile,
        overlap=overlap,
        device=device,
        half=half,
        tta=tta,
        progress=on_tile,
    )
    timings["sr"] = time.perf_counter() - t
    if aligned is not None and ref_blend > 0:
        sr = pull_towards_reference(sr, aligned, ref_blend)
    check = None
    if self_check and aligned is not None:
        t = time.perf_counter()
        sr, check = apply_self_check(
            model,
            sr,
            uw,
            aligned.ref,
            aligned.box,
            aligned.mask,
            device=device,
            half=half,
            tta=tta,
            perceptual=perceptual,
        )
        timings["self_check"] = time.perf_counter() - t
        log.info(
            "%s: self-check: outside the tele's view the network's detail kept at x%.2f, the wide's sharpening "
            "taken out at x%.2f",
            uw_name,
            check.gain,
            -check.base,
        )
    if guard:
        t = time.perf_counter()
        used = [r for r in (aligned, middle) if r is not None]
        sr = guard_flat(sr, uw, [(r.mask, r.box) for r in used])
        timings["guard"] = time.perf_counter() - t
    t = time.perf_counter()
    W, H = int(uw.shape[-1]), int(uw.shape[-2])
    out = resample(sr, (max(1, round(outscale * H)), max(1, round(outscale * W))))
    del sr
    timings["resample"] = time.perf_counter() - t
    if dense is not None:
        t = time.perf_counter()
        base = describe(model).scale
        out = paste_reference(out, dense.ref, dense.mask, dense.box, dense.scale, outscale, base)
        timings["paste"] = time.perf_counter() - t
        log.info("%s: the tele pasted at x%.2f inside its footprint", uw_name, outscale)
    return out, tiles[0], check


def _network_background(
    model: nn.Module,
    uw: Tensor,
    box: tuple[int, int, int, int],
    *,
    tile: int,
    overlap: int,
    device: torch.device,
    half: bool,
    tta: int = 1,
) -> Tensor:
    """``(3, s·h, s·w)``: the network's reference-free output over uw pixels ``box`` (run on the box and
    ``overlap`` pixels of context around it, in ``tta`` views)."""
    s = describe(model).scale
    x0, y0, w, h = box
    H, W = int(uw.shape[-2]), int(uw.shape[-1])
    cx0, cy0 = max(0, x0 - overlap), max(0, y0 - overlap)
    cx1, cy1 = min(W, x0 + w + overlap), min(H, y0 + h + overlap)
    sr = super_resolve(
        model, uw[:, cy0:cy1, cx0:cx1], tile=tile, overlap=overlap, device=device, half=half, tta=tta
    )
    return sr[:, s * (y0 - cy0) : s * (y0 - cy0 + h), s * (x0 - cx0) : s * (x0 - cx0 + w)]


@dataclass(frozen=True, eq=False)
class _References:
    """What the network and the paste are given for one capture.

    Attributes:
        aligned: the reference at the network's scale (the tele, merged with the wide for a triple capture
            and a dual-camera network; the network's own reference-free output where neither is valid), or
            None.
        no_ref: why the tele is not a reference (None when it is).
        dense: the tele at the output's density for :func:`dzcli.infer.paste.paste_reference`, or None.
        middle: the wide at a triple-camera network's ``ref2_scale``, its second reference, or None.
        wide: the wide is a reference (in ``aligned`` or as ``middle``).
    """

    aligned: AlignedCapture | None
    no_ref: str | None
    dense: AlignedCapture | None
    middle: AlignedCapture | None
    wide: bool


def _references(
    model: nn.Module,
    uw: Tensor,
    tele: Tensor,
    wide: Tensor | None,
    found: CaptureRegistration | None,
    no_ref: str | None,
    *,
    outscale: float,
    density: float | None,
    zoom_ratio: float | None,
    wide_zoom_ratio: float | None,
    require_ref: bool,
    paste: bool,
    names: tuple[str, str, str],
    run: tuple[int, int, torch.device, bool, int],
    timings: dict[str, float],
) -> _References:
    """The references of a capture for ``model`` once its tele has been looked for (``found``, or None and
    why in ``no_ref``): the tele at the network's scale, filled where it is not valid with the network's own
    reference-free output (run as ``run = (tile, overlap, device, half, tta)``), at the output's density
    (``paste``), and the wide when one is given (``names``: the uw's, the tele's and the wide's): at
    ``ref2_scale`` for a triple-camera network, else merged with the tele over that same output
    (:func:`merge_references`). With a tele, the wide is used only if it is closer to the tele than the
    bicubic uw where both are valid (:func:`wide_fidelity`)."""
    desc = describe(model)
    scale, ref2_scale = desc.scale, desc.ref2_scale
    uw_name, tele_name, wide_name = names
    aligned, no_ref = _reference(
        uw,
        tele,
        None if found is None else found.tele,
        no_ref,
        scale=scale,
        zoom_ratio=zoom_ratio,
        require_ref=require_ref,
        uw_name=uw_name,
        tele_name=tele_name,
        timings=timings,
    )
    dense = None
    if paste:
        dense = _dense_reference(
            uw,
            tele,
            aligned,
            outscale=outscale,
            density=density,
            scale=scale,
            uw_name=uw_name,
            tele_name=tele_name,
            timings=timings,
        )
    middle = None
    if wide is not None:
        middle = _wide_reference(
            uw,
            wide,
            None if found is None else found.wide,
            scale=scale if ref2_scale is None else ref2_scale,
            zoom_ratio=wide_zoom_ratio,
            uw_name=uw_name,
            wide_name=wide_name,
            timings=timings,
        )
    fidelity = None
    if middle is not None and aligned is not None:
        fidelity = wide_fidelity(uw, middle, aligned)
        if fidelity is not None and fidelity[0] <= fidelity[1]:
            log.info(
                "%s: %s not used: under the tele it is no closer to it than the bicubic uw (%.2f dB, %.2f dB)",
                uw_name,
                wide_name,
                *fidelity,
            )
            middle = None
    tile, overlap, device, half, tta = run
    background = partial(
        _network_background, model, uw, tile=tile, overlap=overlap, device=device, half=half, tta=tta
    )
    if middle is not None and ref2_scale is None:
        closer = (
            ""
            if fidelity is None
            else f" (under the tele {fidelity[0]:.2f} dB, the bicubic uw {fidelity[1]:.2f} dB)"
        )
        log.info("%s: %s is the reference around the tele's footprint%s", uw_name, wide_name, closer)
        merged = merge_references(uw, middle, aligned, background=background)
        return _References(aligned=merged, no_ref=no_ref, dense=dense, middle=None, wide=True)
    if middle is not None:
        log.info("%s: %s is the network's second reference", uw_name, wide_name)
    if aligned is not None and aligned.valid_fraction < 1.0:
        t = time.perf_counter()
        whole = fill_invalid(aligned.ref, aligned.lr, aligned.mask, scale, background=background(aligned.box))
        aligned = replace(aligned, ref=whole)
        timings["background"] = time.perf_counter() - t
    return _References(aligned=aligned, no_ref=no_ref, dense=dense, middle=middle, wide=middle is not None)


def zoom_photo(
    model: nn.Module,
    uw: Tensor | np.ndarray,
    tele: Tensor | np.ndarray,
    *,
    wide: Tensor | np.ndarray | None = None,
    outscale: float | None = None,
    zoom_ratio: float | None = None,
    wide_zoom_ratio: float | None = None,
    require_ref: bool = False,
    tile: int = 0,
    overlap: int = 16,
    device: str | torch.device = "auto",
    half: bool = True,
    adapt: int = 0,
    self_check: bool = True,
    paste: bool = True,
    ref_blend: float = REF_BLEND,
    tta: int = 1,
    guard: bool = True,
    perceptual: bool = False,
    uw_name: str = "uw",
    tele_name: str = "tele",
    wide_name: str = "wide",
    progress: ProgressFn | None = None,
) -> ZoomedPhoto:
    """Super-resolve a whole wide photo with its tele as the reference (the Python API of ``dzsr zoom``).

    The tele is registered inside the wide photo, resampled onto the wide crop it covers and colour-matched
    (:func:`dzcli.align.capture.align_capture`); the network runs tile by tile over the whole photo, each
    tile with the part of the tele that covers it; its ``s×`` output is resampled to ``outscale``. When the
    tele is not found, the photo is zoomed without the reference (``no_ref`` says why). With the middle
    camera of a triple capture (``wide``), the tele is found through it when the direct match is too weak,
    and it is the reference around the tele's footprint (:func:`merge_references`).

    Args:
        model: an SR network (:func:`dzsr_models.bundled.load_model` or ``dzsr_models.create_model``).
        uw: the wide photo, ``(3, H, W)`` tensor in [0, 1] or ``(H, W, 3)`` RGB array (uint8, uint16, float).
        tele: the tele photo, likewise.
        wide: the middle camera's photo of a triple capture, likewise, or None.
        outscale: output pixels per wide pixel; None: the tele's pixel density.
        zoom_ratio: the expected zoom ratio (from EXIF), a hint for the registration.
        wide_zoom_ratio: the expected uw-to-wide zoom ratio, likewise.
        require_ref: raise instead of zooming without the reference.
        tile: tile side in wide pixels; 0 picks it from free memory.
        overlap: least tile overlap in wide pixels.
        device: ``auto`` (CUDA, then MPS, then the CPU), ``cpu``, ``cuda[:N]`` or ``mps``.
        half: float16 on CUDA.
        adapt: first fine-tune a copy of the model for this many self-supervised steps on the capture.
        self_check: scale the network's reference-free detail outside the tele's view by what the tele
            shows it is worth on this capture (:mod:`dzcli.infer.selfcheck`).
        paste: when the output and the tele are denser than the network's scale, paste the tele at the
            output's density inside its footprint (:mod:`dzcli.infer.paste`).
        ref_blend: pull the network's output this share of the way towards the tele where the tele is valid
            (:data:`REF_BLEND`; 0: the network's output alone).
        tta: run the network in this many mirrored / transposed views and average them (1, 2, 4 or 8).
        guard: where no reference is valid, keep the network's fine detail (finer than two wide-photo
            pixels) only where the wide photo shows structure above its noise (:mod:`dzcli.infer.guard`).
        perceptual: the network was trained for looks (:attr:`~dzsr_models.bundled.ModelInfo.perceptual`):
            the self-check keeps all of its detail and only takes the wide camera's sharpening out.
        uw_name: how to call the wide photo in messages.
        tele_name: how to call the tele in messages.
        wide_name: how to call the middle camera's photo in messages.
        progress: see :data:`ProgressFn` (stages ``adapt`` and ``tiles``).

    Returns:
        The zoomed photo and how it was made.

    Raises:
        TeleNotFoundError: (``require_ref``) the tele is not found, or too little of it is usable.
        AlignmentError: the photos are given in the wrong order (the tele is the wider one).
    """
    check_tta(tta)
    uw_t, tele_t = as_image(uw), as_image(tele)
    wide_t = None if wide is None else as_image(wide)
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    found, no_ref = _locate_tele(
        partial(
            register_photos,
            uw_t,
            tele_t,
            wide_t,
            zoom_ratio=zoom_ratio,
            wide_zoom_ratio=wide_zoom_ratio,
            uw_name=uw_name,
            tele_name=tele_name,
            wide_name=wide_name,
        ),
        require_ref=require_ref,
        uw_name=uw_name,
        timings=timings,
    )
    reg = None if found is None else found.tele
    s = describe(model).scale
    density = _density(
        reg, zoom_ratio, (uw_t.shape[-1], uw_t.shape[-2]), (tele_t.shape[-1], tele_t.shape[-2])
    )
    final = _output_scale(outscale, density, s)
    refs = _references(
        model,
        uw_t,
        tele_t,
        wide_t,
        found,
        no_ref,
        outscale=final,
        density=density,
        zoom_ratio=zoom_ratio,
        wide_zoom_ratio=wide_zoom_ratio,
        require_ref=require_ref,
        paste=paste,
        names=(uw_name, tele_name, wide_name),
        run=(tile, overlap, dev, half, tta),
        timings=timings,
    )
    del tele_t, wide_t
    image, tiles, check = _super_resolve(
        model,
        uw_t,
        refs.aligned,
        outscale=final,
        tile=tile,
        overlap=overlap,
        device=dev,
        half=half,
        adapt=(adapt, 4, 48),
        self_check=self_check,
        uw_name=uw_name,
        progress=progress,
        timings=timings,
        dense=refs.dense,
        middle=refs.middle,
        ref_blend=ref_blend,
        tta=tta,
        guard=guard,
        perceptual=perceptual,
    )
    return ZoomedPhoto(
        image=image,
        outscale=final,
        scale=s,
        registration=reg,
        aligned=refs.aligned,
        no_ref=refs.no_ref,
        tiles=tiles,
        timings=timings,
        self_check=check,
        pasted=refs.dense is not None,
        wide=refs.wide,
    )


def zoom_capture(
    cap: Capture,
    output: Path,
    cfg: ZoomConfig,
    *,
    models: _Models,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> ZoomResult:
    """Zoom one capture and write ``output``.

    Raises:
        InputError, AlignmentError, ResourceError, WeightsError: the capture cannot be zoomed.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    photos = read_capture(cap, max_megapixels=cfg.max_megapixels, zoom_ratio=cfg.zoom_ratio)
    uw, est = photos.uw, photos.zoom_ratio
    found, no_ref = (
        _locate_tele(  # through the middle camera of a triple capture when the direct match is weak
            partial(register_capture, cap, photos),
            require_ref=cfg.require_ref,
            uw_name=cap.uw.name,
            timings=timings,
        )
    )
    reg = None if found is None else found.tele
    density = _density(reg, est.value, uw.size, photos.tele.size)
    model, info = models.get(cfg.outscale if cfg.outscale is not None else density)
    s = describe(model).scale
    outscale = _output_scale(cfg.outscale, density, s)
    W, H = uw.size
    out_size = (max(1, round(outscale * W)), max(1, round(outscale * H)))
    alpha = uw.alpha if holds_alpha(output.suffix) else None
    _check_memory(uw, s, out_size, alpha is not None)
    depth = 8 if output.suffix.lower() in _EIGHT_BIT_ONLY else uw.bit_depth
    channels = 3 if alpha is None else 4
    check_output(output, output_bytes(out_size, output.suffix, depth, channels))  # before minutes of work
    refs = _references(
        model,
        uw.pixels,
        photos.tele.pixels,
        photos.wide.pixels if photos.wide is not None and cfg.wide else None,
        found,
        no_ref,
        outscale=outscale,
        density=density,
        zoom_ratio=est.value,
        wide_zoom_ratio=None if photos.wide_zoom_ratio is None else photos.wide_zoom_ratio.value,
        require_ref=cfg.require_ref,
        paste=cfg.paste,
        names=(cap.uw.name, cap.tele.name, "wide" if cap.wide is None else cap.wide.name),
        run=(cfg.tile, cfg.tile_overlap, device, not cfg.fp32, cfg.tta),
        timings=timings,
    )
    del photos  # the tele and the wide are not needed any more
    aligned = refs.aligned
    image, tiles, check = _super_resolve(
        model,
        uw.pixels,
        aligned,
        outscale=outscale,
        tile=cfg.tile,
        overlap=cfg.tile_overlap,
        device=device,
        half=not cfg.fp32,
        adapt=(cfg.adapt, cfg.adapt_batch, cfg.adapt_patch),
        self_check=cfg.self_check,
        uw_name=cap.uw.name,
        progress=progress,
        timings=timings,
        dense=refs.dense,
        middle=refs.middle,
        ref_blend=cfg.ref_blend,
        tta=cfg.tta,
        guard=cfg.guard,
        perceptual=info.perceptual,
    )
    name = info.name + (f"+adapt{cfg.adapt}" if cfg.adapt > 0 and aligned is not None else "")
    name += f"+tta{cfg.tta}" if cfg.tta > 1 else ""
    notes = []
    if depth < uw.bit_depth:
        notes.append(f"16-bit input written as 8-bit ({output.suffix} holds 8 bits; use --ext png or tif)")
    if uw.alpha is not None and alpha is None:
        notes.append(f"alpha channel dropped ({output.suffix} holds none; use --ext png, tif, webp or heic)")
    exif = update_exif(uw.exif, width=out_size[0], height=out_size[1]) if uw.exif else None
    xmp = update_xmp(uw.xmp, width=out_size[0], height=out_size[1]) if uw.xmp else None
    t = time.perf_counter()
    if alpha is not None:  # bicubic, antialiased when shrinking
        alpha = torch_resize(alpha.float(), (out_size[1], out_size[0]), "bicubic", antialias=True)
    save_image(
        output, image, bit_depth=depth, exif=exif, icc=uw.icc, xmp=xmp, alpha=alpha, quality=cfg.quality
    )
    timings["write"] = time.perf_counter() - t
    reference = None
    used = aligned if aligned is not None else refs.middle
    if used is not None:
        reference = ReferenceUse(
            valid_fraction=used.valid_fraction,
            box=used.box,
            self_check=check,
            pasted=refs.dense is not None,
            wide=refs.wide,
        )
    written = ZoomOutput(
        in_size=(W, H),
        out_size=out_size,
        outscale=outscale,
        scale=s,
        model=name,
        device=str(device),
        tiles=tiles,
        seconds=time.perf_counter() - t_start,
        bit_depth=depth,
        zoom_ratio=reg.zoom_ratio if reg is not None else est.value,
        density=density,
        reference=reference,
        no_ref=refs.no_ref,
        timings=timings,
        notes=tuple(notes),
    )
    return ZoomResult(id=cap.id, uw=cap.uw, tele=cap.tele, output=output, status="ok", written=written)


def zoom(
    cfg: ZoomConfig,
    *,
    progress: ProgressFn | None = None,
    on_result: Callable[[ZoomResult], None] | None = None,
) -> list[ZoomResult]:
    """Zoom one capture (``UW TELE``) or every capture of a folder.

    With one pair, any failure raises. With a folder, a capture that fails is reported in its result's
    ``status`` (and logged) and the others go on.

    Args:
        cfg: the options.
        progress: see :data:`ProgressFn`.
        on_result: called with each capture's result as soon as it is known.

    Returns:
        One result per capture, in discovery order.

    Raises:
        ConfigError: bad options; an output that would overwrite an input.
        InputError, AlignmentError, ResourceError, WeightsError: (one pair) the capture cannot be zoomed.
    """
    jobs, inputs = _plan(cfg)
    _check_outputs(jobs, inputs)
    for _, output in jobs:  # a read-only folder or a file in the way is found now, not after the work
        if cfg.overwrite or not output.exists():
            check_output(output)
    device = resolve_device(cfg.device)
    models = _Models(cfg.model, device)
    models.check()
    single = len(cfg.inputs) == 2
    results = []
    for i, (cap, output) in enumerate(jobs):
        if output.exists() and not cfg.overwrite:
            log.info("%s: %s exists; skipped (use --overwrite)", cap.id, output)
            results.append(ZoomResult(id=cap.id, uw=cap.uw, tele=cap.tele, output=output, status="skipped"))
        elif single:
            results.append(zoom_capture(cap, output, cfg, models=models, device=device, progress=progress))
        else:
            try:
                results.append(
                    zoom_capture(cap, output, cfg, models=models, device=device, progress=progress)
                )
            except (InputError, AlignmentError, ResourceError, MemoryError) as exc:
                message = "out of memory" if isinstance(exc, MemoryError) else str(exc)
                log.warning("%s: not zoomed: %s", cap.id, message)
                results.append(ZoomResult(id=cap.id, uw=cap.uw, tele=cap.tele, output=output, status=message))
        if on_result:
            on_result(results[-1])
        if progress:
            progress("pairs", i + 1, len(jobs), cap.id)
    return results
