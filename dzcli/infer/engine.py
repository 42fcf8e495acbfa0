"""Full-image reference-based super-resolution in bounded memory (DESIGN §6).

:func:`super_resolve` runs a reference-based SR model over a whole LR image in overlapping tiles blended
with feathered weights (:mod:`dzcli.infer.tiling`). It knows nothing of the model's insides: it reads
what it needs from the model's :class:`~dzsr_models.descriptor.ModelDescriptor` (``model.describe()``).

- When the model has a global vector (``gvec_stride``), it is computed once per image from the LR under
  the Ref and the whole Ref, at their own densities (the vector is a pooled mean, so a large Ref is
  covered by a bounded set of windows whose vectors are averaged, weighted by their pooled cells), and
  given to every tile.
- A tile within ``ref_context`` LR pixels of the Ref's box gets the part of the Ref around it (its
  footprint widened by ``ref_context``, starting on the model's ``ref_grid``) with its box in tile
  coordinates, so the Ref is pasted exactly where it lies and every tile sees it on the same grid. A
  tile farther away runs with ``ref=None``: by the descriptor's contract its output is the same.
- ``tta > 1`` (test-time augmentation, a self-ensemble): each tile also runs mirrored and transposed (its
  Ref window and boxes mirrored with it), and the outputs, mapped back, are averaged.
- ``tile=0`` picks the tile from free memory (CPU: available RAM; CUDA: free VRAM) and the descriptor's
  memory per pixel. On out-of-memory the tile side halves (logged) and the run restarts from the tile
  that failed; earlier tiles are kept.

Model call convention: ``model.describe()``; ``model(lr, ref, box)``, or ``model(lr, ref, box, gvec=...)``
when it has a global vector (``model.global_vector(lr, ref, box) -> (B, C)``); ``lr`` ``(1, 3, h, w)``,
``ref`` ``(1, 3, s·bh, s·bw)`` or None, ``box`` ``(x0, y0, bw, bh)`` in ``lr`` pixels (may stick out of
it) or None with ``ref=None``; returns ``(1, 3, s·h, s·w)``. A triple-camera model (``ref2_scale`` in its
descriptor) also gets ``ref2=`` and ``box2=``: the middle camera's window for the tile, cut like the tele's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from typing import cast

import torch
from torch import Tensor, nn

from dzcli.errors import ConfigError, InputError, ResourceError
from dzcli.infer.devices import available_memory, is_out_of_memory, resolve_device
from dzcli.infer.tiling import Tile, run_tiled
from dzsr_models.descriptor import ModelDescriptor

__all__ = [
    "MIN_TILE",
    "TTA_CHOICES",
    "RefWindows",
    "auto_tile",
    "check_tta",
    "clip_reference",
    "describe",
    "global_vector",
    "super_resolve",
]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

GV_WINDOW = 256
"""Largest window side (LR px) the global encoder sees at once."""
GV_MAX_WINDOWS = 48
"""Most windows averaged for the global vector (evenly spread over the Ref beyond that)."""
MIN_TILE = 32
"""Smallest tile side (LR px) the out-of-memory fallback goes down to."""
MAX_AUTO_TILE = {"cpu": 256, "cuda": 512, "mps": 384}
"""Largest automatic tile side per device type. The work per pixel no longer grows with the tile (the
matching is local), so a larger tile saves only the overlap's recomputation (with 16 px of overlap, 14 %
extra work at 256 px, 6 % at 512 px) while holding more memory; GPUs amortise more per-tile overhead."""
AUTO_MEMORY_FRACTION = 0.5
"""Share of the free memory an automatic tile may use."""
TTA_CHOICES = (1, 2, 4, 8)
"""Numbers of views a tile may be run in: itself, + mirrored left-right, + upside down and both, + the four
transposed ones (the square's symmetries)."""


# --------------------------------------------------------------------------------------------------------
# The model's description and memory
# --------------------------------------------------------------------------------------------------------


def describe(model: nn.Module) -> ModelDescriptor:
    """The model's :class:`~dzsr_models.descriptor.ModelDescriptor` (``model.describe()``).

    Raises:
        ConfigError: a model that does not describe itself.
    """
    fn = getattr(model, "describe", None)
    desc = fn() if callable(fn) else None
    if not isinstance(desc, ModelDescriptor):
        raise ConfigError(f"{type(model).__name__} does not describe itself (describe() -> ModelDescriptor)")
    return desc


def auto_tile(desc: ModelDescriptor, device: torch.device, *, half: bool = False) -> int:
    """The largest tile side (LR px, multiple of 16) whose working memory fits the free memory.

    Uses :data:`AUTO_MEMORY_FRACTION` of :func:`available_memory` (after the model's fixed workspace),
    capped per device type by :data:`MAX_AUTO_TILE`.
    """
    budget = AUTO_MEMORY_FRACTION * available_memory(device) - desc.workspace_bytes
    per_px = desc.bytes_per_pixel * (0.5 if half else 1.0)
    side = int(math.sqrt(max(budget, 0.0) / per_px)) // 16 * 16
    cap = MAX_AUTO_TILE.get(device.type, 512)
    tile = max(MIN_TILE, min(cap, side))
    log.debug("automatic tile %d px (%.0f MiB free on %s)", tile, available_memory(device) / 2**20, device)
    return tile


def _free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


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
        log.warning(
            "the reference box %s lies outside the %dx%d image; running without it", box, width, height
        )
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
    if ref is not None and box is None:
        raise InputError("a Ref needs its box: where it lies in the LR, (x0, y0, w, h)")
    if box is not None and (len(box) != 4 or box[2] < 1 or box[3] < 1):
        raise InputError(f"box must be (x0, y0, w, h) with w, h >= 1, got {box!r}")


# --------------------------------------------------------------------------------------------------------
# Global vector
# --------------------------------------------------------------------------------------------------------


def _windows(length: int, window: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into ``ceil(length / window)`` near-equal consecutive spans."""
    n = math.ceil(length / window)
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(itertools.pairwise(edges))


def global_vector(
    model: nn.Module,
    stride: int,
    lr: Tensor,
    ref: Tensor | None,
    box: Box | None,
    *,
    device: torch.device,
    window: int = GV_WINDOW,
    max_windows: int = GV_MAX_WINDOWS,
) -> Tensor:
    """The model's image-level modulation vector, in bounded memory.

    The model sees the LR region under the Ref and the Ref at their own densities (what it was trained
    on) and averages its last feature map, pooled by ``stride``. A region larger than ``window`` is cut
    into near-equal windows (at most ``max_windows``, evenly spread) whose vectors are averaged with
    weights equal to their pooled cell counts, which approximates the pooled mean over the whole region;
    a region that fits gives exactly ``model.global_vector(lr, ref, box)``.

    Args:
        model: the SR model, with ``global_vector(lr, ref, box)``.
        stride: the pooling stride of its feature map (the descriptor's ``gvec_stride``).
        lr: ``(3, H, W)`` in ``[0, 1]``, CPU or ``device``.
        ref: ``(3, s·bh, s·bw)`` or None (reference disabled).
        box: the Ref's box inside ``lr`` (clipped); None with ``ref=None``.
        device: where to run the encoder.
        window: largest window side in LR pixels.
        max_windows: most windows evaluated.

    Returns:
        ``(1, C)`` on ``device``.
    """
    s = describe(model).scale
    if ref is None or box is None:
        region, ref = lr, None
    else:
        x0, y0, bw, bh = box
        region = lr[:, y0 : y0 + bh, x0 : x0 + bw]
    H, W = region.shape[-2:]
    cells = [(ys, xs) for ys in _windows(H, window) for xs in _windows(W, window)]
    if len(cells) > max_windows:
        step = len(cells) / max_windows
        cells = [cells[int(i * step)] for i in range(max_windows)]
    global_vector = cast(
        Callable[..., Tensor], model.global_vector
    )  # present: the descriptor has gvec_stride
    total, weight = None, 0.0
    for (ya, yb), (xa, xb) in cells:
        part = region[:, ya:yb, xa:xb][None].to(device)
        if ref is None:
            vec = global_vector(part, None, None)
        else:
            part_ref = ref[:, s * ya : s * yb, s * xa : s * xb][None].to(device)
            vec = global_vector(part, part_ref, (0, 0, xb - xa, yb - ya))
        n = math.ceil((yb - ya) / stride) * math.ceil((xb - xa) / stride)
        total = vec.float() * n if total is None else total + vec.float() * n
        weight += n
    assert total is not None
    log.debug("global vector from %d window(s) of a %dx%d region", len(cells), W, H)
    return total / weight


# --------------------------------------------------------------------------------------------------------
# Reference windows for tiles
# --------------------------------------------------------------------------------------------------------


class RefWindows:
    """Which part of the Ref each tile gets.

    Args:
        ref: ``(3, s·bh, s·bw)`` on the CPU, inside the LR image (see :func:`clip_reference`), or None.
        box: ``(x0, y0, bw, bh)`` of ``ref`` in LR pixels (None with ``ref=None``).
        scale: ``s``.
        context: LR pixels of Ref around a tile's footprint (the descriptor's ``ref_context``).
        grid: windows start at multiples of this many LR pixels from the Ref's origin (``ref_grid``).
    """

    def __init__(
        self, ref: Tensor | None, box: Box | None, scale: int, *, context: int = 0, grid: int = 1
    ) -> None:
        self.ref = ref
        self.box = box
        self.scale = scale
        self.context = context
        self.grid = max(1, grid)

    def window(self, tile: Tile) -> tuple[Tensor | None, Box | None]:
        """The Ref for one tile.

        Returns:
            ``(ref, box)``: ``ref`` ``(3, s·h', s·w')`` (a view on the CPU) and its ``(x0, y0, w', h')`` in
            the tile's pixels (it may stick out of the tile); ``(None, None)`` when there is no Ref or the
            tile lies more than ``context`` pixels away from it.
        """
        if self.ref is None or self.box is None:
            return None, None
        s, c, g = self.scale, self.context, self.grid
        bx0, by0, bw, bh = self.box
        rx0 = max(tile.x0 - c - bx0, 0) // g * g
        ry0 = max(tile.y0 - c - by0, 0) // g * g
        rx1 = min(tile.x0 + tile.w + c - bx0, bw)
        ry1 = min(tile.y0 + tile.h + c - by0, bh)
        if rx1 <= rx0 or ry1 <= ry0:
            return None, None
        window = self.ref[:, s * ry0 : s * ry1, s * rx0 : s * rx1]
        return window, (bx0 + rx0 - tile.x0, by0 + ry0 - tile.y0, rx1 - rx0, ry1 - ry0)


# --------------------------------------------------------------------------------------------------------
# Test-time augmentation
# --------------------------------------------------------------------------------------------------------

View = tuple[bool, bool, bool]
"""``(transpose, mirror_x, mirror_y)``: transpose first, then mirror the result."""


def check_tta(n: int, option: str = "tta") -> None:
    """Raise :class:`ConfigError` (naming ``option``) unless ``n`` is in :data:`TTA_CHOICES`."""
    if n not in TTA_CHOICES:
        raise ConfigError(f"{option} must be one of {', '.join(map(str, TTA_CHOICES))}, not {n}")


def tta_views(n: int) -> list[View]:
    """The first ``n`` of the square's 8 symmetries (``n`` in :data:`TTA_CHOICES`), the identity first:
    2 adds the left-right mirror, 4 the upside-down ones, 8 the transposed ones."""
    check_tta(n)
    return [(t, mx, my) for t in (False, True) for my in (False, True) for mx in (False, True)][:n]


def view_image(x: Tensor, view: View) -> Tensor:
    """``x`` ``(..., H, W)`` seen in ``view`` (a copy when mirrored; a view when only transposed)."""
    t, mx, my = view
    if t:
        x = x.transpose(-1, -2)
    dims = [d for d, m in ((-1, mx), (-2, my)) if m]
    return x.flip(dims) if dims else x


def unview_image(y: Tensor, view: View) -> Tensor:
    """The inverse of :func:`view_image`."""
    t, mx, my = view
    dims = [d for d, m in ((-1, mx), (-2, my)) if m]
    if dims:
        y = y.flip(dims)
    return y.transpose(-1, -2) if t else y


def view_box(box: Box | None, width: int, height: int, view: View) -> Box | None:
    """Where ``box`` ``(x0, y0, w, h)`` of a ``width × height`` image lies once the image is seen in
    ``view`` (:func:`view_image`); the box may stick out of the image."""
    if box is None:
        return None
    x0, y0, w, h = box
    if view[0]:
        x0, y0, w, h, width, height = y0, x0, h, w, height, width
    if view[1]:
        x0 = width - (x0 + w)
    if view[2]:
        y0 = height - (y0 + h)
    return (x0, y0, w, h)


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
    ref2: Tensor | None = None,
    box2: Box | None = None,
    tile: int = 0,
    overlap: int = 16,
    device: str | torch.device = "cpu",
    half: bool = False,
    tta: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Super-resolve a whole LR image by the model's scale ``s`` with the tele Ref, tile by tile.

    The model is moved to ``device`` and run in ``eval()`` mode under ``torch.inference_mode`` (its
    previous train/eval mode is restored). Inputs stay on the CPU; each tile and its Ref window travel
    to ``device`` in turn and its output comes back to a CPU canvas.

    Args:
        model: an SR model that describes itself (see the module docstring), e.g. from
            ``dzsr_models.create_model``.
        lr: ``(3, H, W)`` float RGB in ``[0, 1]``.
        ref: ``(3, s·bh, s·bw)`` float RGB in ``[0, 1]``: the tele at ``s×`` the LR's density covering
            ``box``, in the LR's colours; None disables the reference.
        box: ``(x0, y0, bw, bh)`` whole LR pixels, where ``ref`` lies (may stick out of the image: it is
            clipped); required with a Ref.
        ref2: ``(3, r·bh2, r·bw2)``, a triple-camera model's middle-camera reference at its density
            ``r = ref2_scale``, in the LR's colours; None without one.
        box2: where ``ref2`` lies, as ``box``.
        tile: tile side in LR pixels; 0 picks it from free memory; ``>= max(H, W)`` runs untiled.
        overlap: least overlap of neighbouring tiles in LR pixels (feathered over its middle half).
        device: ``auto``, ``cpu``, ``cuda[:N]``, ``mps`` or a ``torch.device``.
        half: float16 autocast on CUDA when the model supports it (ignored elsewhere).
        tta: views each tile is run in and averaged over (:func:`tta_views`; 1: the tile alone).
        progress: called as ``progress(done, total)`` after each tile of the plan.

    Returns:
        ``(3, s·H, s·W)`` float32 in ``[0, 1]`` on the CPU.

    Raises:
        InputError: shapes that do not fit together, a Ref without its box, a ``ref2`` for a model that
            takes none.
        ConfigError: unknown or unavailable device, negative tile or overlap, a model without a descriptor,
            ``tta`` not in :data:`TTA_CHOICES`.
        ResourceError: out of memory even with :data:`MIN_TILE`-pixel tiles.
    """
    dev = resolve_device(device)
    desc = describe(model)
    s = desc.scale
    _check_inputs(lr, ref, box, s)
    if ref2 is not None and desc.ref2_scale is None:
        raise InputError("ref2 given to a model without a middle-camera reference")
    r2 = desc.ref2_scale or 1
    _check_inputs(lr, ref2, box2, r2)
    if tile < 0 or overlap < 0:
        raise ConfigError(f"tile and overlap must be >= 0, got tile={tile}, overlap={overlap}")
    views = tta_views(tta)
    H, W = int(lr.shape[1]), int(lr.shape[2])
    lr = lr.detach().to("cpu", torch.float32)
    if ref is not None:
        ref = ref.detach().to("cpu", torch.float32)
    ref, box = clip_reference(ref, box, H, W, s)
    if ref2 is not None:
        ref2 = ref2.detach().to("cpu", torch.float32)
    ref2, box2 = clip_reference(ref2, box2, H, W, r2)
    use_half = bool(half) and dev.type == "cuda" and desc.supports_half
    if half and not use_half:
        log.debug(
            "half precision is only used on CUDA with a model that supports it; running float32 on %s", dev
        )
    model.to(dev)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16) if use_half else contextlib.nullcontext()
    )
    with _inference_setup(model), autocast:
        gvec = None
        if desc.gvec_stride is not None:
            with torch.inference_mode():
                gvec = global_vector(model, desc.gvec_stride, lr, ref, box, device=dev)
        side = tile if tile > 0 else auto_tile(desc, dev, half=use_half)
        windows = RefWindows(ref, box, s, context=desc.ref_context, grid=desc.ref_grid)
        windows2 = RefWindows(ref2, box2, r2, context=desc.ref_context, grid=desc.ref_grid)
        state = {"tile": side}

        def on_device(r: Tensor | None, v: View) -> Tensor | None:
            """A Ref window seen in ``v``, batched on the device (None stays None)."""
            if r is None:
                return None
            return view_image(r, v)[None].to(dev).contiguous(memory_format=torch.channels_last)

        def forward(t: Tile) -> Tensor:
            r, b = windows.window(t)
            r2w, b2 = windows2.window(t) if desc.ref2_scale is not None else (None, None)
            out = None
            with torch.inference_mode():
                x = lr[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w][None].to(dev)
                for v in views:
                    kw: dict[str, object] = {} if gvec is None else {"gvec": gvec}
                    if desc.ref2_scale is not None:
                        kw |= {"ref2": on_device(r2w, v), "box2": view_box(b2, t.w, t.h, v)}
                    xv = view_image(x, v).contiguous(memory_format=torch.channels_last)
                    y = unview_image(model(xv, on_device(r, v), view_box(b, t.w, t.h, v), **kw)[0], v)
                    y = y.float().clamp_(0.0, 1.0)
                    out = y if out is None else out.add_(y)
                assert out is not None
                return out.div_(len(views)).cpu().contiguous()

        def solve(t: Tile) -> Tensor:
            if max(t.w, t.h) <= state["tile"]:
                try:
                    return forward(t)
                except (RuntimeError, MemoryError) as exc:
                    if not is_out_of_memory(exc):
                        raise
                    _free_cache(dev)
                    if state["tile"] <= MIN_TILE:
                        raise ResourceError(
                            f"out of memory on {dev} even with {MIN_TILE}-px tiles; free memory or use --device cpu"
                        ) from None
                    state["tile"] = max(MIN_TILE, min(state["tile"], max(t.w, t.h)) // 2)
                    log.warning(
                        "out of memory on %s with a %dx%d tile: continuing with %d-px tiles",
                        dev,
                        t.w,
                        t.h,
                        state["tile"],
                    )
            sub = state["tile"]
            out = run_tiled(
                lambda u: solve(Tile(t.x0 + u.x0, t.y0 + u.y0, u.w, u.h, u.row, u.col)),
                t.h,
                t.w,
                tile=sub,
                overlap=min(overlap, sub // 2),
                scale=s,
            )
            return out

        ov = min(overlap, side // 2)
        log.info(
            "super-resolving %dx%d at x%d on %s: %d-px tiles, overlap %d%s%s",
            W,
            H,
            s,
            dev,
            side,
            ov,
            ", float16" if use_half else "",
            f", {len(views)} views each" if len(views) > 1 else "",
        )
        out = run_tiled(solve, H, W, tile=side, overlap=ov, scale=s, progress=progress)
    if state["tile"] < side:
        log.info("finished with %d-px tiles after running out of memory", state["tile"])
    return out.clamp_(0.0, 1.0)
