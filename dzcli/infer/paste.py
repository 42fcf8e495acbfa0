"""The tele at its own density, pasted into an output denser than the network's scale.

A ×s network sees the tele at ``s``× the wide photo's density. When the output is denser (a ×2 network on a
capture whose tele is 4× or 5.9× denser than the wide), the network's output is resampled to that density
and holds none of the tele's detail beyond ``s``. Inside the tele's footprint the registered,
colour-matched tele itself is then the better picture (measured on simulated ×4 phone captures: 1.2 dB
over the network's ×2 output resampled to ×4 there), so it is pasted over it at the output's density, where
the registration is valid, with feathered edges.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Width, in output pixels, of the ramp over which the pasted tele fades into the network's output.
FEATHER = 32


def footprint_span(start: int, length: int, density: float) -> tuple[int, int]:
    """The output pixels ``[a, b)`` whose centres fall inside uw pixels ``[start, start + length)``.

    Output pixel ``i`` (density ``r``) has its centre at uw coordinate ``(i + 0.5) / r - 0.5``.
    """
    a = math.ceil(density * start - 1e-9)
    b = math.floor(density * (start + length) - 1e-9) + 1
    return a, max(a, b)


def _ramp(n: int, width: int) -> Tensor:
    """``(n,)`` weights rising from ``1/width`` at the ends to 1 at ``width`` pixels in."""
    i = torch.arange(n, dtype=torch.float32)
    return (torch.minimum(i + 1, n - i) / max(width, 1)).clamp(max=1.0)


def paste_reference(
    image: Tensor,
    ref: Tensor,
    mask: Tensor,
    box: tuple[int, int, int, int],
    ref_scale: int,
    density: float,
    *,
    feather: int = FEATHER,
) -> Tensor:
    """Paste ``ref`` into ``image`` where it covers it, resampled to ``image``'s density.

    Args:
        image: ``(3, Ho, Wo)`` in [0, 1], the whole wide photo at ``density`` output pixels per uw pixel.
        ref: ``(3, S·h, S·w)`` the registered tele over uw pixels ``box``, at ``ref_scale = S`` (≥ density
            for a lossless paste) and in the wide photo's colours (:func:`dzcli.align.capture.align_capture`).
        mask: ``(1, S·h, S·w)`` where ``ref`` is valid (1) or not (0).
        box: ``(x0, y0, w, h)`` in uw pixels.
        ref_scale: ``S``.
        density: output pixels per uw pixel.
        feather: ramp width in output pixels at the footprint's edges.

    Returns:
        A new ``(3, Ho, Wo)`` image: ``image`` outside the footprint, the resampled ``ref`` inside it, blended
        by the resampled ``mask`` times the edge ramp.
    """
    x0, y0, w, h = box
    xa, xb = footprint_span(x0, w, density)
    ya, yb = footprint_span(y0, h, density)
    xa, xb = max(xa, 0), min(xb, image.shape[-1])
    ya, yb = max(ya, 0), min(yb, image.shape[-2])
    if xb <= xa or yb <= ya:
        return image.clone()
    s = float(ref_scale)
    # ref pixel coordinate of output pixel i: S·((i + 0.5) / r − x0) − 0.5; normalised for grid_sample.
    xs = s * ((torch.arange(xa, xb, dtype=torch.float64) + 0.5) / density - x0) - 0.5
    ys = s * ((torch.arange(ya, yb, dtype=torch.float64) + 0.5) / density - y0) - 0.5
    gx = (2 * xs + 1) / ref.shape[-1] - 1
    gy = (2 * ys + 1) / ref.shape[-2] - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).to(torch.float32)[None]
    both = torch.cat((ref.float(), mask.float()), dim=0)[None]
    sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    weight = sampled[3:4] * _ramp(yb - ya, feather)[:, None] * _ramp(xb - xa, feather)[None, :]
    out = image.clone()
    region = out[:, ya:yb, xa:xb]
    out[:, ya:yb, xa:xb] = region + weight.to(image.dtype) * (sampled[:3].to(image.dtype) - region)
    return out
