"""Overlapping tiles with feathered blending: a tile plan, its blend weights, and a tiled runner.

All functions are pure. Tiles are planned in input (LR) pixels and outputs live at ``scale``× that
grid. Along each axis the tiles have one size, overlap their neighbours by at least ``overlap`` pixels,
and lie inside the image: the first starts at 0 and the last ends at the edge, so no border is dropped
and no padding is needed (the tile size is re-balanced so the overlaps stay close to ``overlap``).

Blending: in each overlap the earlier tile fades out and the later one fades in along a raised-cosine
ramp, so the weights form a partition of unity (they sum to 1 at every output pixel). The outer
quarter of the overlap on each side is left out of the ramp (weight 0 for the tile whose edge it
is), so a tile's own border pixels, which saw padding instead of image context, never reach the
output. Consequently, for a model whose receptive field radius is at most ``overlap // 4`` input
pixels, the tiled output equals the untiled one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from dzcli.errors import ConfigError

__all__ = ["Tile", "axis_spans", "axis_weights", "plan_tiles", "run_tiled", "tile_weights"]


@dataclass(frozen=True)
class Tile:
    """One tile of a plan: its box in input pixels and its place in the plan's grid.

    Attributes:
        x0, y0: top-left corner in input pixels.
        w, h: size in input pixels.
        row, col: index in the grid of tiles.
    """

    x0: int
    y0: int
    w: int
    h: int
    row: int
    col: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, w, h)`` in input pixels."""
        return self.x0, self.y0, self.w, self.h


def axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end of the tiles along one axis.

    Args:
        length: image length in pixels (>= 1).
        tile: largest tile length; ``tile <= 0`` or ``tile >= length`` gives one tile.
        overlap: least overlap between neighbours, ``0 <= overlap <= tile // 2``.

    Returns:
        ``[(start, end), ...]`` (end exclusive): equal lengths ``<= tile``, the first at 0, the last at
        ``length``, consecutive tiles overlapping by ``>= overlap``, non-neighbours not overlapping.
    """
    if length < 1:
        raise ConfigError(f"cannot tile an axis of length {length}")
    if tile <= 0 or tile >= length:
        return [(0, length)]
    if not 0 <= overlap <= tile // 2:
        raise ConfigError(f"tile overlap must be in [0, tile/2] = [0, {tile // 2}], got {overlap}")
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (n - 1) * overlap) / n))
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    return [(a, a + size) for a in starts]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering an image, row by row.

    Args:
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.
        tile: largest tile side in pixels; ``0`` (or ``>= max(H, W)``) means one tile.
        overlap: least overlap between neighbouring tiles, ``<= tile // 2``.

    Returns:
        The tiles; their union is the whole image.
    """
    rows = axis_spans(height, tile, overlap)
    cols = axis_spans(width, tile, overlap)
    return [
        Tile(x0=x0, y0=y0, w=x1 - x0, h=y1 - y0, row=i, col=j)
        for i, (y0, y1) in enumerate(rows)
        for j, (x0, x1) in enumerate(cols)
    ]


def axis_weights(spans: list[tuple[int, int]], overlap: int, scale: int = 1) -> list[Tensor]:
    """Feathered 1-D blend weights of the tiles along one axis, at ``scale``× the input grid.

    Each overlap of tiles ``i`` and ``i + 1`` (``o >= overlap`` input pixels) holds a raised-cosine step
    ``R_i`` from 0 to 1, ``overlap - 2·(overlap // 4)`` input pixels long and centred in the overlap;
    tile ``i`` weighs ``R_{i-1} - R_i`` (with ``R_{-1} = 1`` and ``R_{n-1} = 0``). The sum telescopes to
    1, the weights are non-negative because the steps have one shape and increasing positions, and a
    tile weighs 0 in the outer ``overlap // 4`` pixels of each overlap at its edge.

    Args:
        spans: from :func:`axis_spans`.
        overlap: the ``overlap`` the spans were planned with.
        scale: output pixels per input pixel.

    Returns:
        One float32 tensor per span, of length ``scale·(end - start)``, values in ``[0, 1]``; placed at
        ``scale·start`` they sum to 1 (to rounding) at every output position.
    """
    margin = overlap // 4
    ramp = scale * (overlap - 2 * margin)
    starts = []
    for (_, b0), (a1, _) in itertools.pairwise(spans):
        starts.append(scale * a1 + (scale * (b0 - a1) - ramp) // 2)

    def step(k: int, pos: Tensor) -> Tensor:
        if k < 0:
            return torch.ones_like(pos)
        if k >= len(starts):
            return torch.zeros_like(pos)
        if ramp == 0:
            return (pos >= starts[k]).double()
        t = ((pos - starts[k] + 0.5) / ramp).clamp(0.0, 1.0)
        return torch.sin(0.5 * math.pi * t) ** 2

    weights = []
    for i, (a, b) in enumerate(spans):
        pos = torch.arange(scale * a, scale * b, dtype=torch.float64)
        weights.append((step(i - 1, pos) - step(i, pos)).float())
    return weights


def tile_weights(
    tiles: list[Tile], height: int, width: int, overlap: int, scale: int = 1
) -> Iterator[Tensor]:
    """2-D blend weights of a plan from :func:`plan_tiles` (outer products of the 1-D weights), made one
    tile at a time (a 12 MP plan's weights would take 230 MB at once).

    Args:
        tiles: the plan.
        height: image height in input pixels.
        width: image width in input pixels.
        overlap: the plan's overlap.
        scale: output pixels per input pixel.

    Returns:
        One ``(scale·h, scale·w)`` float32 tensor per tile, in the plan's order; placed at
        ``(scale·y0, scale·x0)`` they sum to 1 at every pixel of the ``(scale·H, scale·W)`` output.
    """
    wy = axis_weights(sorted({(t.y0, t.y0 + t.h) for t in tiles}), overlap, scale)
    wx = axis_weights(sorted({(t.x0, t.x0 + t.w) for t in tiles}), overlap, scale)
    return (wy[t.row][:, None] * wx[t.col][None, :] for t in tiles)


def run_tiled(
    fn: Callable[[Tile], Tensor],
    height: int,
    width: int,
    *,
    tile: int,
    overlap: int,
    scale: int = 1,
    channels: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Apply ``fn`` tile by tile and blend the results into one output.

    Args:
        fn: maps a tile (input-pixel box) to its output ``(channels, scale·h, scale·w)`` (any device;
            it is brought to the CPU as float32).
        height: input height ``H``.
        width: input width ``W``.
        tile: largest tile side in input pixels (0 = one tile).
        overlap: least overlap between tiles in input pixels (clamped to ``tile // 2``).
        scale: output pixels per input pixel.
        channels: output channels.
        progress: called as ``progress(done, total)`` after each tile.

    Returns:
        ``(channels, scale·H, scale·W)`` float32 on the CPU.
    """
    if tile > 0:
        overlap = min(overlap, tile // 2)
    tiles = plan_tiles(height, width, tile, overlap)
    weights = tile_weights(tiles, height, width, overlap, scale)
    out = torch.zeros(channels, scale * height, scale * width)
    for k, (t, w) in enumerate(zip(tiles, weights, strict=True)):
        y = fn(t).detach().to("cpu", torch.float32)
        expected = (channels, scale * t.h, scale * t.w)
        if tuple(y.shape) != expected:
            raise ValueError(f"tile {t.box} gave an output of shape {tuple(y.shape)}, expected {expected}")
        if len(tiles) == 1:
            out.copy_(y)
        else:
            out[:, scale * t.y0 : scale * (t.y0 + t.h), scale * t.x0 : scale * (t.x0 + t.w)] += w * y
        if progress:
            progress(k + 1, len(tiles))
    return out
