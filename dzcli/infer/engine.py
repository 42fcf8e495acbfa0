"""Full-image reference-based super-resolution in bounded memory (DESIGN §6).

:func:`super_resolve` runs a reference-based SR model (``dzsr_models`` DZSR, or any module with the same
call convention) over a whole LR image in overlapping tiles blended with feathered weights
(:mod:`dzcli.infer.tiling`):

- The global modulation vector is computed once per image from the LR under the Ref and the whole Ref,
  at their own densities (the encoder ends in a global average pool, so a large Ref is covered by a
  bounded set of windows whose vectors are averaged, weighted by their pooled cells), and given to
  every tile.
- A tile that meets the Ref's box gets the part of the Ref around it (``REF_CONTEXT`` LR pixels of
  context, the window shifted to stay inside the Ref) with its box in tile coordinates, so the Ref's
  pixels are pasted exactly where they lie. A tile outside the tele's field of view gets the Ref window
  whose colour and texture statistics are closest to its own (coarse search on ``1/8``-size images) and
  ``box=None``: it is matched, never pasted.
- ``tile=0`` picks the tile from free memory (CPU: available RAM; CUDA: free VRAM). On out-of-memory the
  tile side halves (logged) and the run restarts from the tile that failed; earlier tiles are kept.

Model call convention: ``model.scale`` (int), ``model(lr, ref, box)`` or, when the model has
``global_vector(lr, ref, box) -> (B, C)``, ``model(lr, ref, box, gvec=...)``; ``lr`` ``(1, 3, h, w)``,
``ref`` ``(1, 3, s·bh, s·bw)`` or None, ``box`` ``(x0, y0, bw, bh)`` in ``lr`` pixels (may stick out of
it) or None; returns ``(1, 3, s·h, s·w)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

import dzsr_models
from dzcli.errors import ConfigError, InputError, ResourceError, WeightsError
from dzcli.infer.tiling import Tile, run_tiled

__all__ = [
    "DEFAULT_MODEL",
    "MIN_TILE",
    "REF_CONTEXT",
    "WEIGHTS_DIR",
    "BundledModel",
    "RefWindows",
    "auto_tile",
    "available_memory",
    "bundled_models",
    "choose_bundled",
    "clip_reference",
    "global_vector",
    "load_model",
    "resolve_device",
    "super_resolve",
]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

REF_CONTEXT = 16
"""LR pixels of Ref around a tile's own footprint (room for the matcher to find shifted content)."""
SEARCH_DOWNSCALE = 8
"""Downscale factor of the coarse search for tiles outside the tele's field of view."""
SEARCH_QUANTILES = 16
"""Quantiles per statistic (R, G, B, local gradient energy) describing a window in the search."""
GV_WINDOW = 256
"""Largest window side (LR px) the global encoder sees at once."""
GV_MAX_WINDOWS = 48
"""Most windows averaged for the global vector (evenly spread over the Ref beyond that)."""
MIN_TILE = 32
"""Smallest tile side (LR px) the out-of-memory fallback goes down to."""
MAX_AUTO_TILE = {"cpu": 256, "cuda": 512, "mps": 384}
"""Largest automatic tile side per device type. Matching compares every cell of a tile with every cell of
its Ref window, so its cost per pixel grows with the tile's area (×16 from 256 to 1024 px): moderate tiles
are also the fastest (measured on CPU: 192–256 px best; GPUs amortise more per-tile overhead)."""
AUTO_MEMORY_FRACTION = 0.5
"""Share of the free memory an automatic tile may use."""


# --------------------------------------------------------------------------------------------------------
# Devices and memory
# --------------------------------------------------------------------------------------------------------


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into an available torch device.

    ``auto`` picks CUDA, then MPS, then the CPU.

    Raises:
        ConfigError: unknown name, or a device that is not available here.
    """
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = spec.strip().lower()
        if text == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            mps = getattr(torch.backends, "mps", None)
            return torch.device("mps") if mps is not None and mps.is_available() else torch.device("cpu")
        try:
            dev = torch.device(text)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!s}: CUDA is not available on this machine (use --device cpu)")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!s}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {spec!s}: MPS is not available on this machine (use --device cpu)")
        return dev
    if dev.type != "cpu":
        raise ConfigError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def available_memory(device: torch.device) -> int:
    """Bytes free for a new allocation: free VRAM on CUDA, available RAM otherwise (MPS shares RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _bytes_per_pixel(model: nn.Module) -> float:
    """Peak working memory per LR pixel of one tile (float32), tile and its Ref window together.

    A conservative model of DZSR's peak: the matcher's VGG features (up to 448 channels at full LR
    resolution, for the tile and its Ref window), the body at ``C`` channels and ``4C`` before each
    PixelShuffle. dzsr-small ×2 measures 2.3–3.8 kB per pixel of the Ref window on CPU (peak RSS over
    tile sides 128–800); this gives 6.3 kB.
    """
    hp = getattr(model, "hparams", {})
    channels = int(hp.get("channels", 64))
    scale = int(getattr(model, "scale", 2))
    floats = 2 * 448 + 12 * channels + 4 * channels * scale * scale // 2 + 3 * scale * scale * 3
    return 4.0 * floats


def auto_tile(model: nn.Module, device: torch.device, *, half: bool = False) -> int:
    """The largest tile side (LR px, multiple of 16) whose working memory fits the free memory.

    Uses :data:`AUTO_MEMORY_FRACTION` of :func:`available_memory` (after the matcher's correlation slab),
    capped per device type by :data:`MAX_AUTO_TILE`.
    """
    matcher = getattr(model, "matcher", None)
    slab = 4 * 3 * int(getattr(matcher, "chunk_elements", 0))
    budget = AUTO_MEMORY_FRACTION * available_memory(device) - slab
    per_px = _bytes_per_pixel(model) * (0.5 if half else 1.0)
    side = int(math.sqrt(max(budget, 0.0) / per_px)) // 16 * 16
    cap = MAX_AUTO_TILE.get(device.type, 512)
    tile = max(MIN_TILE, min(cap, side))
    log.debug("automatic tile %d px (%.0f MiB free on %s)", tile, available_memory(device) / 2**20, device)
    return tile


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


# --------------------------------------------------------------------------------------------------------
# Models: bundled weights and checkpoints
# --------------------------------------------------------------------------------------------------------

WEIGHTS_DIR = Path(dzsr_models.__file__).resolve().parent / "weights"
"""Folder of the models bundled in the package: ``<name>.safetensors`` with a ``<name>.md`` model card."""
DEFAULT_MODEL = "dzsr-small-x2"
"""The bundled model preferred when ``--model`` is not given (among those of the best-fitting scale)."""


@dataclass(frozen=True)
class BundledModel:
    """A model shipped in :data:`WEIGHTS_DIR`.

    Attributes:
        name: file stem (what ``--model NAME`` accepts).
        path: the ``.safetensors`` file.
        arch: architecture name from the checkpoint's metadata.
        scale: the network's scale ``s``.
        params: number of stored parameters.
        sha256: hex digest of the file.
        size_bytes: file size.
        summary: first paragraph of the model card (empty when there is none).
        metadata: the checkpoint's dzsr metadata.
    """

    name: str
    path: Path
    arch: str
    scale: int
    params: int
    sha256: str
    size_bytes: int
    summary: str
    metadata: dict[str, Any] = field(repr=False)


def _card_summary(card: Path) -> str:
    """The first paragraph of a Markdown model card that is not a heading, on one line."""
    if not card.is_file():
        return ""
    paragraph: list[str] = []
    for line in card.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#") or (not text and not paragraph):
            continue
        if not text:
            break
        paragraph.append(text)
    return " ".join(paragraph)


def _describe_weights(path: Path) -> BundledModel:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get("dzsr")
            params = sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118
        meta = json.loads(raw) if raw else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable bundled model ({exc})") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return BundledModel(
        name=path.stem,
        path=path,
        arch=str(meta.get("arch", "?")),
        scale=int(meta.get("scale", 0)),
        params=int(params),
        sha256=digest,
        size_bytes=path.stat().st_size,
        summary=_card_summary(path.with_suffix(".md")),
        metadata=meta,
    )


def bundled_models(weights_dir: Path | None = None) -> list[BundledModel]:
    """The models bundled with dzsr, sorted by name.

    Args:
        weights_dir: folder to look in; default :data:`WEIGHTS_DIR`.

    Raises:
        WeightsError: a bundled file that is not a readable safetensors checkpoint.
    """
    folder = WEIGHTS_DIR if weights_dir is None else weights_dir
    if not folder.is_dir():
        return []
    return [_describe_weights(p) for p in sorted(folder.glob("*.safetensors"))]


def choose_bundled(outscale: float | None, models: list[BundledModel]) -> BundledModel:
    """The bundled model for an output scale: the scale ``s`` closest to it (log ratio, the larger ``s`` on
    ties), :data:`DEFAULT_MODEL` among models of that scale if present.

    Raises:
        WeightsError: no bundled model.
    """
    if not models:
        raise WeightsError(
            f"no bundled model in {WEIGHTS_DIR}; pass --model PATH to a checkpoint from `dzsr train`"
        )
    target = outscale if outscale and outscale > 0 else 2.0
    best = min({m.scale for m in models}, key=lambda sc: (abs(math.log(target / sc)), -sc))
    same = [m for m in models if m.scale == best]
    return next((m for m in same if m.name == DEFAULT_MODEL), same[0])


def load_model(
    spec: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    outscale: float | None = None,
    weights_dir: Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the SR model named by ``--model``.

    Args:
        spec: a checkpoint path (from ``dzsr train`` / :func:`dzsr_models.save_checkpoint`), the name of a
            bundled model, or None for the bundled default (:func:`choose_bundled` with ``outscale``).
        device: where to put the model.
        outscale: the intended output scale, to choose among bundled models of different scales.
        weights_dir: folder of bundled models; default :data:`WEIGHTS_DIR`.

    Returns:
        ``(model, info)``: the model in ``eval()`` mode, and ``info`` with ``name``, ``path``, ``scale``
        and the checkpoint's ``metadata``.

    Raises:
        WeightsError: unknown name, missing or unusable checkpoint, no bundled model.
    """
    dev = resolve_device(device)
    if spec is None:
        chosen = choose_bundled(outscale, bundled_models(weights_dir))
        path, name = chosen.path, chosen.name
    else:
        text = str(spec)
        candidate = Path(text).expanduser()
        folder = WEIGHTS_DIR if weights_dir is None else weights_dir
        if candidate.is_file():
            path, name = candidate, candidate.stem
        elif (folder / f"{text}.safetensors").is_file() and "/" not in text and os.sep not in text:
            path, name = folder / f"{text}.safetensors", text
        elif candidate.suffix or "/" in text or os.sep in text:
            raise WeightsError(f"{text}: checkpoint not found")
        else:
            names = ", ".join(m.name for m in bundled_models(weights_dir)) or "none"
            raise WeightsError(
                f"unknown model {text!r}: bundled models are {names}; or pass the path of a checkpoint"
            )
    model, meta = dzsr_models.load_checkpoint(path, device=dev)
    if meta.get("arch") != "dzsr":
        raise WeightsError(f"{path}: not a super-resolution model (architecture {meta.get('arch')!r})")
    log.debug("model %s (x%d) from %s", name, model.scale, path)
    return model, {"name": name, "path": path, "scale": int(model.scale), "metadata": meta}


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def clip_reference(
    ref: Tensor | None, box: Box | None, height: int, width: int, scale: int
) -> tuple[Tensor | None, Box | None]:
    """Clip a Ref and its box to the LR image.

    Args:
        ref: ``(3, s·bh, s·bw)`` or None.
        box: ``(x0, y0, bw, bh)`` in whole LR pixels (may stick out of the image), or None.
        height: LR height ``H``.
        width: LR width ``W``.
        scale: ``s``.

    Returns:
        ``(ref, box)`` with the box inside the image and the Ref cut to it; ``(None, None)`` when the box
        misses the image; unchanged when ``ref`` or ``box`` is None.

    Raises:
        InputError: a Ref whose size is not ``s×`` the box.
    """
    if ref is None or box is None:
        return ref, box
    x0, y0, bw, bh = (int(v) for v in box)
    if tuple(ref.shape) != (3, scale * bh, scale * bw):
        raise InputError(
            f"ref must be (3, {scale * bh}, {scale * bw}) for box {tuple(box)} at x{scale}, got {tuple(ref.shape)}"
        )
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + bw, width), min(y0 + bh, height)
    if cx1 <= cx0 or cy1 <= cy0:
        log.warning("the reference box %s lies outside the %dx%d image; running without it", box, width, height)
        return None, None
    crop = ref[:, scale * (cy0 - y0) : scale * (cy1 - y0), scale * (cx0 - x0) : scale * (cx1 - x0)]
    return crop, (cx0, cy0, cx1 - cx0, cy1 - cy0)


def _check_inputs(lr: Tensor, ref: Tensor | None, box: Box | None, scale: int) -> None:
    if lr.dim() != 3 or lr.shape[0] != 3 or min(lr.shape[1:]) < 1:
        raise InputError(f"lr must be (3, H, W), got {tuple(lr.shape)}")
    if ref is not None and (ref.dim() != 3 or ref.shape[0] != 3):
        raise InputError(f"ref must be (3, h, w), got {tuple(ref.shape)}")
    if ref is not None and (ref.shape[1] % scale or ref.shape[2] % scale):
        raise InputError(f"ref size {ref.shape[2]}x{ref.shape[1]} is not a multiple of the scale {scale}")
    if box is not None and (len(box) != 4 or box[2] < 1 or box[3] < 1):
        raise InputError(f"box must be (x0, y0, w, h) with w, h >= 1, got {box!r}")


# --------------------------------------------------------------------------------------------------------
# Global vector
# --------------------------------------------------------------------------------------------------------


def _windows(length: int, window: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into ``ceil(length / window)`` near-equal consecutive spans."""
    n = math.ceil(length / window)
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def global_vector(
    model: nn.Module,
    lr: Tensor,
    ref: Tensor | None,
    box: Box | None,
    *,
    device: torch.device,
    window: int = GV_WINDOW,
    max_windows: int = GV_MAX_WINDOWS,
) -> Tensor | None:
    """The model's image-level modulation vector, in bounded memory.

    The encoder sees the LR region under the Ref and the Ref at their own densities (what it was trained
    on) and averages its last feature map. A region larger than ``window`` is cut into near-equal
    windows (at most ``max_windows``, evenly spread) whose vectors are averaged with weights equal to
    their pooled cell counts, which approximates the pooled mean over the whole region; a region that
    fits gives exactly ``model.global_vector(lr, ref, box)``.

    Args:
        model: the SR model (None is returned when it has no ``global_vector``).
        lr: ``(3, H, W)`` in ``[0, 1]``, CPU or ``device``.
        ref: ``(3, s·bh, s·bw)`` or None (reference disabled).
        box: the Ref's box inside ``lr`` (clipped), or None (position unknown: the whole LR is resized to
            the Ref's footprint, as the model does).
        device: where to run the encoder.
        window: largest window side in LR pixels.
        max_windows: most windows evaluated.

    Returns:
        ``(1, C)`` on ``device``, or None.
    """
    fn = getattr(model, "global_vector", None)
    if fn is None:
        return None
    s = int(model.scale)
    if ref is None:
        region = lr
    elif box is None:
        h, w = ref.shape[-2] // s, ref.shape[-1] // s
        region = F.interpolate(lr[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    else:
        x0, y0, bw, bh = box
        region = lr[:, y0 : y0 + bh, x0 : x0 + bw]
    H, W = region.shape[-2:]
    cells = [(ys, xs) for ys in _windows(H, window) for xs in _windows(W, window)]
    if len(cells) > max_windows:
        step = len(cells) / max_windows
        cells = [cells[int(i * step)] for i in range(max_windows)]
    total, weight = None, 0.0
    for (ya, yb), (xa, xb) in cells:
        part = region[:, ya:yb, xa:xb][None].to(device)
        if ref is None:
            vec = fn(part, None, None)
        else:
            part_ref = ref[:, s * ya : s * yb, s * xa : s * xb][None].to(device)
            vec = fn(part, part_ref, (0, 0, xb - xa, yb - ya))
        n = math.ceil((yb - ya) / 8) * math.ceil((xb - xa) / 8)
        total = vec.float() * n if total is None else total + vec.float() * n
        weight += n
    assert total is not None
    log.debug("global vector from %d window(s) of a %dx%d region", len(cells), W, H)
    return total / weight


# --------------------------------------------------------------------------------------------------------
# Reference windows for tiles
# --------------------------------------------------------------------------------------------------------


def _descriptor_maps(img: Tensor, factor: int) -> Tensor:
    """Per-cell statistics for the coarse search: mean R, G, B and mean gradient magnitude of luma.

    Args:
        img: ``(3, H, W)`` in ``[0, 1]`` at LR density.
        factor: cell side in pixels.

    Returns:
        ``(4, H // factor, W // factor)``.
    """
    luma = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None, None]
    gx = F.pad(luma[..., :, 1:] - luma[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(luma[..., 1:, :] - luma[..., :-1, :], (0, 0, 0, 1))
    energy = (gx.square() + gy.square()).sqrt()
    maps = torch.cat((img[None], energy), dim=1)
    return F.avg_pool2d(maps, factor)[0]


def _quantiles(values: Tensor, k: int) -> Tensor:
    """``(N, C, P)`` → ``(N, C·k)``: ``k`` evenly spaced quantiles of each row (sorted-value samples)."""
    srt = values.sort(dim=-1).values
    P = values.shape[-1]
    idx = ((torch.arange(k, dtype=torch.float64) + 0.5) * P / k).long().clamp(max=P - 1)
    return srt[..., idx].flatten(1)


class RefWindows:
    """Which part of the Ref each tile gets.

    Args:
        ref: ``(3, s·bh, s·bw)`` on the CPU, inside the LR image (see :func:`clip_reference`), or None.
        box: ``(x0, y0, bw, bh)`` of ``ref`` in LR pixels, or None (position unknown: every tile searches).
        lr: ``(3, H, W)`` the LR image (for the search's tile statistics).
        scale: ``s``.
        context: LR pixels of Ref around a tile's footprint.
    """

    def __init__(
        self, ref: Tensor | None, box: Box | None, lr: Tensor, scale: int, *, context: int = REF_CONTEXT
    ) -> None:
        self.ref = ref
        self.lr = lr
        self.scale = scale
        self.context = context
        self.box = box
        self._ref_lr: Tensor | None = None
        self._search: dict[tuple[int, int, int], tuple[Tensor, list[tuple[int, int]]]] = {}

    @property
    def ref_size(self) -> tuple[int, int]:
        """The Ref's ``(bw, bh)`` in LR pixels."""
        assert self.ref is not None
        return self.ref.shape[-1] // self.scale, self.ref.shape[-2] // self.scale

    def _cut(self, rx: int, ry: int, w: int, h: int) -> Tensor:
        """The Ref window at ``(rx, ry)`` (LR px relative to the Ref), ``w×h`` LR px, as ``(3, s·h, s·w)``."""
        assert self.ref is not None
        s = self.scale
        return self.ref[:, s * ry : s * (ry + h), s * rx : s * (rx + w)]

    def window(self, tile: Tile) -> tuple[Tensor | None, Box | None]:
        """The Ref for one tile.

        Returns:
            ``(ref, box)``: ``ref`` ``(3, s·h', s·w')`` (a view on the CPU) or None when there is no Ref;
            ``box`` the window's ``(x0, y0, w', h')`` in the tile's pixels when the window lies where it
            belongs (it may stick out of the tile), None for a searched window (match only).
        """
        if self.ref is None:
            return None, None
        bw, bh = self.ref_size
        ww, wh = min(tile.w + 2 * self.context, bw), min(tile.h + 2 * self.context, bh)
        if self.box is not None:
            bx0, by0 = self.box[0], self.box[1]
            meets = tile.x0 < bx0 + bw and bx0 < tile.x0 + tile.w and tile.y0 < by0 + bh and by0 < tile.y0 + tile.h
            if meets:
                rx = min(max(tile.x0 - self.context - bx0, 0), bw - ww)
                ry = min(max(tile.y0 - self.context - by0, 0), bh - wh)
                return self._cut(rx, ry, ww, wh), (bx0 + rx - tile.x0, by0 + ry - tile.y0, ww, wh)
        rx, ry = self._best_window(tile, ww, wh)
        return self._cut(rx, ry, ww, wh), None

    def _best_window(self, tile: Tile, ww: int, wh: int) -> tuple[int, int]:
        """Top-left (LR px, relative to the Ref) of the ``ww×wh`` Ref window most like the tile.

        Ref windows of the tile's size are compared with the tile by the L1 distance between quantiles
        of R, G, B and local gradient energy over ``f×f`` cells (``f`` = :data:`SEARCH_DOWNSCALE`, less for
        small tiles); the best one, centred, is widened to ``ww×wh``.
        """
        bw, bh = self.ref_size
        f = max(1, min(SEARCH_DOWNSCALE, tile.w // 8, tile.h // 8, bw // 2, bh // 2))
        cw, ch = max(1, min(tile.w // f, bw // f)), max(1, min(tile.h // f, bh // f))
        key = (f, cw, ch)
        if key not in self._search:
            if self._ref_lr is None:
                assert self.ref is not None
                self._ref_lr = F.avg_pool2d(self.ref[None].float(), self.scale)[0] if self.scale > 1 else self.ref
            maps = _descriptor_maps(self._ref_lr, f)  # (4, bh // f, bw // f)
            stride = max(1, min(cw, ch) // 4)
            patches = F.unfold(maps[None], (ch, cw), stride=stride)  # (1, 4·ch·cw, N)
            n_y = (maps.shape[1] - ch) // stride + 1
            n_x = (maps.shape[2] - cw) // stride + 1
            desc = _quantiles(patches[0].T.reshape(-1, 4, ch * cw), SEARCH_QUANTILES)
            origins = [(j * stride * f, i * stride * f) for i in range(n_y) for j in range(n_x)]
            self._search[key] = (desc, origins)
        desc, origins = self._search[key]
        region = self.lr[:, tile.y0 : tile.y0 + tile.h, tile.x0 : tile.x0 + tile.w].float()
        tmaps = _descriptor_maps(region, f)
        tmaps = F.interpolate(tmaps[None], size=(ch, cw), mode="area")[0] if tmaps.shape[-2:] != (ch, cw) else tmaps
        tdesc = _quantiles(tmaps.reshape(1, 4, ch * cw), SEARCH_QUANTILES)
        weights = torch.ones(4 * SEARCH_QUANTILES)
        weights[3 * SEARCH_QUANTILES :] = 2.0  # texture counts as much as two colour channels
        best = int(((desc - tdesc).abs() * weights).sum(dim=1).argmin())
        ox, oy = origins[best]
        cx, cy = ox + cw * f / 2, oy + ch * f / 2
        rx = min(max(round(cx - ww / 2), 0), bw - ww)
        ry = min(max(round(cy - wh / 2), 0), bh - wh)
        return rx, ry


# --------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference_setup(model: nn.Module) -> Iterator[None]:
    """``eval()`` and channels-last weights (about 1.4× faster convolutions on CPU), both undone after."""
    was_training = model.training
    kernels = [p for p in model.parameters() if p.dim() == 4]
    convert = not all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    model.eval()
    if convert:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if convert:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def super_resolve(
    model: nn.Module,
    lr: Tensor,
    *,
    ref: Tensor | None = None,
    box: Box | None = None,
    tile: int = 0,
    overlap: int = 16,
    device: str | torch.device = "cpu",
    half: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Super-resolve a whole LR image by the model's scale ``s`` with the tele Ref, tile by tile.

    The model is moved to ``device`` and run in ``eval()`` mode under ``torch.inference_mode`` (its
    previous train/eval mode is restored). Inputs stay on the CPU; each tile and its Ref window travel
    to ``device`` in turn and its output comes back to a CPU canvas.

    Args:
        model: an SR model (see the module docstring), e.g. from ``dzsr_models.create_model``.
        lr: ``(3, H, W)`` float RGB in ``[0, 1]``.
        ref: ``(3, s·bh, s·bw)`` float RGB in ``[0, 1]``: the tele at ``s×`` the LR's density covering
            ``box``, in the LR's colours; None disables the reference.
        box: ``(x0, y0, bw, bh)`` whole LR pixels, where ``ref`` lies (may stick out of the image: it is
            clipped); None with a Ref: its position is unknown, every tile gets a searched window.
        tile: tile side in LR pixels; 0 picks it from free memory; ``>= max(H, W)`` runs untiled.
        overlap: least overlap of neighbouring tiles in LR pixels (feathered over its middle half).
        device: ``auto``, ``cpu``, ``cuda[:N]``, ``mps`` or a ``torch.device``.
        half: float16 autocast on CUDA (ignored elsewhere).
        progress: called as ``progress(done, total)`` after each tile of the plan.

    Returns:
        ``(3, s·H, s·W)`` float32 in ``[0, 1]`` on the CPU.

    Raises:
        InputError: shapes that do not fit together.
        ConfigError: unknown or unavailable device, negative tile or overlap.
        ResourceError: out of memory even with :data:`MIN_TILE`-pixel tiles.
    """
    dev = resolve_device(device)
    s = int(model.scale)
    _check_inputs(lr, ref, box, s)
    if tile < 0 or overlap < 0:
        raise ConfigError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    H, W = int(lr.shape[1]), int(lr.shape[2])
    lr = lr.detach().to("cpu", torch.float32)
    if ref is not None:
        ref = ref.detach().to("cpu", torch.float32)
    ref, box = clip_reference(ref, box, H, W, s)
    use_half = bool(half) and dev.type == "cuda"
    if half and not use_half:
        log.debug("half precision is only used on CUDA; running float32 on %s", dev)
    model.to(dev)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if use_half else contextlib.nullcontext()
    )
    takes_gvec = callable(getattr(model, "global_vector", None))
    with _inference_setup(model), autocast:
        with torch.inference_mode():
            gvec = global_vector(model, lr, ref, box, device=dev)
        side = tile if tile > 0 else auto_tile(model, dev, half=use_half)
        windows = RefWindows(ref, box, lr, s)
        state = {"tile": side}

        def forward(t: Tile) -> Tensor:
            r, b = windows.window(t)
            with torch.inference_mode():
                x = lr[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w][None].to(dev)
                x = x.contiguous(memory_format=torch.channels_last)
                r = None if r is None else r[None].to(dev).contiguous(memory_format=torch.channels_last)
                y = model(x, r, b, gvec=gvec) if takes_gvec else model(x, r, b)
                return y[0].float().clamp_(0.0, 1.0).cpu().contiguous()

        def solve(t: Tile) -> Tensor:
            if max(t.w, t.h) <= state["tile"]:
                try:
                    return forward(t)
                except (RuntimeError, MemoryError) as exc:
                    if not _is_oom(exc):
                        raise
                    _free_cache(dev)
                    if state["tile"] <= MIN_TILE:
                        raise ResourceError(
                            f"out of memory on {dev} even with {MIN_TILE}-px tiles; free memory or use --device cpu"
                        ) from None
                    state["tile"] = max(MIN_TILE, min(state["tile"], max(t.w, t.h)) // 2)
                    log.warning(
                        "out of memory on %s with a %dx%d tile: continuing with %d-px tiles",
                        dev, t.w, t.h, state["tile"],
                    )
            sub = state["tile"]
            out = run_tiled(
                lambda u: solve(Tile(t.x0 + u.x0, t.y0 + u.y0, u.w, u.h, u.row, u.col)),
                t.h, t.w, tile=sub, overlap=min(overlap, sub // 2), scale=s,
            )
            return out

        ov = min(overlap, side // 2)
        log.info(
            "super-resolving %dx%d at x%d on %s: %d-px tiles, overlap %d%s",
            W, H, s, dev, side, ov, ", float16" if use_half else "",
        )
        out = run_tiled(solve, H, W, tile=side, overlap=ov, scale=s, progress=progress)
    if state["tile"] < side:
        log.info("finished with %d-px tiles after running out of memory", state["tile"])
    return out.clamp_(0.0, 1.0)
