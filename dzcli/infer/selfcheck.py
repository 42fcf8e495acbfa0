"""Per-capture self-check: how much of the network's reference-free detail this capture supports.

Inside the tele's footprint the tele is the ground truth of the wide photo, so the capture itself can tell
whether the network's reference-free path (what runs where the tele does not reach) improves on bicubic
upsampling *for this camera*: on a phone JPEG that the phone already sharpened and denoised it may add
crunchy texture instead of detail. :func:`residual_gain` measures, on a few patches under the tele, the
least-squares gain ``α ∈ [0, 1]`` of the network's residual over bicubic towards the tele;
:func:`blend_outside` then keeps ``bicubic + α·(network − bicubic)`` outside the footprint (ramping to the
full network at its edge). ``α = 1`` leaves the output as it is.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from dzcli.infer.engine import Box, describe, super_resolve
from dzcli.resize import upscale_bicubic

__all__ = ["apply_self_check", "blend_outside", "residual_gain"]


def residual_gain(
    model: nn.Module,
    lr: Tensor,
    ref: Tensor,
    box: Box,
    mask: Tensor | None = None,
    *,
    patches: int = 9,
    patch: int = 96,
    margin: int = 8,
    device: str | torch.device = "cpu",
    half: bool = False,
    tta: int = 1,
) -> float:
    """The gain ``α`` of the network's reference-free residual over bicubic that the tele supports.

    ``α = Σ m·r·(t − b) / Σ m·r²`` clipped to ``[0, 1]``, with ``b`` the bicubic upsampling of a wide patch
    under the tele, ``r`` the network's reference-free output minus ``b``, ``t`` the tele there and ``m``
    its validity; over up to ``patches`` patches of ``patch`` LR pixels spread evenly over the footprint,
    leaving out ``margin`` pixels at each patch's border (the network saw padding there).

    Args:
        model: the SR network (any model :func:`super_resolve` runs), scale ``s``.
        lr: ``(3, H, W)`` the wide photo in ``[0, 1]``.
        ref: ``(3, s·bh, s·bw)`` the tele over ``box``, in the wide's colours.
        box: ``(x0, y0, bw, bh)`` of ``ref`` inside ``lr``.
        mask: ``(1, s·bh, s·bw)`` validity of ``ref`` (None: all valid).
        tta: views the network runs in (as :func:`super_resolve`'s).

    Returns:
        ``α`` in ``[0, 1]``; 1 when the footprint is too small to measure.
    """
    s = describe(model).scale
    x0, y0, bw, bh = box
    ph, pw = min(patch, bh), min(patch, bw)
    if min(ph, pw) <= 2 * margin + 8:
        return 1.0
    per_axis = max(1, math.isqrt(patches))
    num = den = 0.0
    for yy in sorted({int(v) for v in np.linspace(0, bh - ph, per_axis).round()}):
        for xx in sorted({int(v) for v in np.linspace(0, bw - pw, per_axis).round()}):
            part = lr[:, y0 + yy : y0 + yy + ph, x0 + xx : x0 + xx + pw]
            net = super_resolve(model, part, tile=0, device=device, half=half, tta=tta)
            bic = upscale_bicubic(part, s)
            inner = (slice(None), slice(s * margin, s * (ph - margin)), slice(s * margin, s * (pw - margin)))
            t = ref[:, s * yy : s * (yy + ph), s * xx : s * (xx + pw)][inner]
            w = (
                torch.ones_like(t[:1])
                if mask is None
                else mask[:, s * yy : s * (yy + ph), s * xx : s * (xx + pw)][inner]
            )
            r, d = (net - bic)[inner], t - bic[inner]
            num += float((w * r * d).sum())
            den += float((w * r * r).sum())
    return 1.0 if den <= 0 else min(1.0, max(0.0, num / den))


def blend_outside(
    sr: Tensor, lr: Tensor, box: Box, gain: float, *, feather: int = 16, band: int = 256
) -> Tensor:
    """``bicubic + g·(sr − bicubic)`` with ``g = gain`` outside the box, 1 inside, ramping over ``feather``
    LR pixels outside its edge; in bands of ``band`` LR rows (bounded memory). ``sr`` is changed in place.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr``.
        lr: ``(3, H, W)``.
        box: ``(x0, y0, bw, bh)`` the tele's footprint in ``lr`` pixels.
        gain: from :func:`residual_gain`.

    Returns:
        ``sr``.
    """
    if gain >= 1.0:
        return sr
    H, W = lr.shape[-2:]
    s = sr.shape[-1] // W
    x0, y0, bw, bh = box
    xs = (torch.arange(s * W, dtype=torch.float32) + 0.5) / s
    dx = torch.clamp(torch.maximum(x0 - xs, xs - (x0 + bw)), min=0.0)
    for a in range(0, H, band):
        b = min(H, a + band)
        lo, hi = max(0, a - 4), min(H, b + 4)  # bicubic reads 2 px around: the band equals the whole image's
        bic = upscale_bicubic(lr[:, lo:hi], s)[:, s * (a - lo) : s * (b - lo)]
        ys = (torch.arange(s * a, s * b, dtype=torch.float32) + 0.5) / s
        dy = torch.clamp(torch.maximum(y0 - ys, ys - (y0 + bh)), min=0.0)
        dist = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        g = gain + (1.0 - gain) * torch.clamp(1.0 - dist / feather, 0.0, 1.0)
        rows = sr[:, s * a : s * b]
        rows.sub_(bic).mul_(g).add_(bic)
    return sr


def apply_self_check(
    model: nn.Module,
    sr: Tensor,
    lr: Tensor,
    ref: Tensor,
    box: Box,
    mask: Tensor | None = None,
    *,
    device: str | torch.device = "cpu",
    half: bool = False,
    tta: int = 1,
) -> tuple[Tensor, float]:
    """The self-check of one capture: :func:`residual_gain` under the tele, then :func:`blend_outside`.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr`` with the reference (changed in place).
        lr, ref, box, mask, tta: as :func:`residual_gain`.

    Returns:
        ``(sr, gain)``.
    """
    gain = residual_gain(model, lr, ref, box, mask, device=device, half=half, tta=tta)
    return blend_outside(sr, lr, box, gain), gain
