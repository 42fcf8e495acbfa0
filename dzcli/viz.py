"""Pictures for people: previews and comparison sheets. Pure functions on (3,H,W) [0,1] tensors."""

from __future__ import annotations

import torch

from dzcli.resize import torch_resize


def fit_within(img: torch.Tensor, max_side: int) -> torch.Tensor:
    """Shrink (C,H,W) with area averaging so its longer side is at most ``max_side``."""
    h, w = img.shape[-2:]
    f = max_side / max(h, w)
    if f >= 1:
        return img
    return torch_resize(img, (max(1, round(h * f)), max(1, round(w * f))), "area")


def checkerboard(a: torch.Tensor, b: torch.Tensor, *, cell: int = 32) -> torch.Tensor:
    """Interleave two same-size (C,H,W) images in a checkerboard of ``cell``-pixel squares (a on even cells)."""
    h, w = a.shape[-2:]
    yy = torch.arange(h)[:, None] // cell
    xx = torch.arange(w)[None, :] // cell
    sel = ((yy + xx) % 2 == 0).to(a.dtype)
    return a * sel + b * (1 - sel)


def grid(rows: list[list[torch.Tensor]], *, gap: int = 4, fill: float = 1.0) -> torch.Tensor:
    """Tile (3,H,W) images row by row on a ``fill`` background; cells are padded to the largest in each row/column."""
    heights = [max(t.shape[-2] for t in row) for row in rows]
    ncols = max(len(r) for r in rows)
    widths = [max(row[j].shape[-1] for row in rows if j < len(row)) for j in range(ncols)]
    out = torch.full((3, sum(heights) + gap * (len(rows) + 1), sum(widths) + gap * (ncols + 1)), fill)
    y = gap
    for i, row in enumerate(rows):
        x = gap
        for j, t in enumerate(row):
            t3 = t.expand(3, -1, -1) if t.shape[0] == 1 else t
            out[:, y : y + t.shape[-2], x : x + t.shape[-1]] = t3
            x += widths[j] + gap
        y += heights[i] + gap
    return out


def pair_preview(
    lr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor, *, max_side: int = 1600
) -> torch.Tensor:
    """Preview of a prepared pair: ``[lr upscaled | hr]`` over ``[checkerboard of both | mask]``.

    Args:
        lr: (3,h,w) wide crop; hr: (3,sh,sw) registered tele; mask: (1,sh,sw) validity in {0,1}.
        max_side: longest side of the returned sheet, in pixels.

    Returns:
        (3,H,W) sheet in [0,1]: seams or ghosts in the checkerboard reveal misregistration.
    """
    cell_side = max(8, max_side // 2 - 8)
    hr_p = fit_within(hr, cell_side)
    size = (hr_p.shape[-2], hr_p.shape[-1])
    lr_p = torch_resize(lr, size, "bicubic", antialias=True)
    mask_p = torch_resize(mask, size, "area")
    cell = max(8, min(size) // 8)
    board = checkerboard(lr_p, hr_p, cell=cell)
    shade = hr_p * (0.35 + 0.65 * mask_p)
    return grid([[lr_p, hr_p], [board, shade]])
