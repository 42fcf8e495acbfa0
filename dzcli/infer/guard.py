"""Flat-area guard: the network's finest detail kept only where the wide photo shows structure above its noise.

Where the wide photo is flat (a sky, a defocused background, a night scene's shadows) its finest band is
the camera's noise, and a network without a reference there can only enlarge that noise or invent texture
from it; the self-check (:mod:`dzcli.infer.selfcheck`) scales the network's detail by one number per
capture, fitted where the tele is, and nothing guards a capture whose tele is not found. The guard writes
``G(sr) + w·(sr − G(sr))`` (``G``: a Gaussian of one wide-photo pixel) with a per-pixel weight
``w = clamp(1 − k·σ²/e, 0, 1)``: ``e`` the wide photo's local energy in its band finer than one pixel,
``σ²`` that energy where the photo is flattest (its :data:`NOISE_QUANTILE` quantile, the noise floor of
this capture; a median would take a fully textured photo's texture for noise). Where the tele is valid its
detail is the scene's and ``w`` is 1 there.

On by default in ``dzsr zoom`` and ``dzsr eval`` (``--no-guard``). Held-out ×2 captures
(``benchmarks/quality.py --ratios 2 --max-side 2400 --camera C --peers``, against ``--no-guard``), whole
photo: phone 34.33 → 34.95 dB, LPIPS 0.3110 → 0.2795; night 29.37 → 30.22 dB; dslr (clean, fine texture)
36.26 → 36.24 dB, LPIPS 0.1805 → 0.1826; a real iPhone pair's held-out tele half unchanged (README).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dzcli.camera import gaussian_blur
from dzcli.infer.selfcheck import base_band

__all__ = ["GUARD_K", "NOISE_QUANTILE", "guard_flat", "structure_weight"]

GUARD_K = 2.0
"""``k``: how many times the noise floor's energy the wide photo's band must hold for the detail to be kept
whole (k = 1, 2, 4 tried: LPIPS of a perceptual network's output on ×2 captures of the training photos at
1200 px, 0.2875 / 0.2824 / 0.2858 on the whole photo)."""
NOISE_QUANTILE = 0.1
"""Quantile of the wide photo's local band energy taken as its noise floor."""
ENERGY_SIGMA = 1.5
"""Gaussian σ (wide-photo pixels) over which the band's energy is averaged."""
_SAMPLES = 1 << 20
"""Most energy values the quantile is taken over (an even subsample of larger photos)."""


def structure_weight(lr: Tensor, k: float = GUARD_K) -> Tensor:
    """``w``: where the wide photo shows structure above its own noise floor (see the module docstring).

    Args:
        lr: ``(3, H, W)`` the wide photo in ``[0, 1]``.
        k: :data:`GUARD_K`.

    Returns:
        ``(1, H, W)`` in ``[0, 1]``: 0 where the photo's finest band is no stronger than ``k`` times its
        noise floor, 1 where it is far stronger.
    """
    band = base_band(lr.float(), 1)
    energy = gaussian_blur(band.pow(2).mean(0, keepdim=True), ENERGY_SIGMA)
    flat = energy.flatten()
    sample = flat[:: max(1, flat.numel() // _SAMPLES)]
    noise = float(torch.quantile(sample, NOISE_QUANTILE))
    return (1.0 - k * noise / energy.clamp_min(1e-12)).clamp(0.0, 1.0)


def _validity(valid: Tensor, box: tuple[int, int, int, int], s: int) -> Tensor:
    """``valid`` over ``box`` at ``s`` pixels per LR pixel, softened by a Gaussian of one LR pixel."""
    size = (s * box[3], s * box[2])
    v = valid.float()
    if tuple(v.shape[-2:]) != size:
        v = F.interpolate(v[None], size=size, mode="bilinear", align_corners=False)[0]
    return gaussian_blur(v, float(s))


def guard_flat(
    sr: Tensor,
    lr: Tensor,
    references: Sequence[tuple[Tensor, tuple[int, int, int, int]]] = (),
    *,
    k: float = GUARD_K,
    band: int = 256,
) -> Tensor:
    """``G(sr) + w·(sr − G(sr))``, in bands of ``band`` LR rows (bounded memory); ``sr`` is changed in place.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr``.
        lr: ``(3, H, W)`` the wide photo.
        references: ``(valid, box)`` of each reference the network had: ``valid`` ``(1, h, w)`` where it is
            valid over ``box = (x0, y0, bw, bh)`` (LR pixels; at any density, resampled to ``s``); there its
            detail is the scene's and ``w`` is raised to that validity, softened by a Gaussian of one LR pixel.
        k: :data:`GUARD_K`.

    Returns:
        ``sr``.
    """
    H, W = int(lr.shape[-2]), int(lr.shape[-1])
    s = int(sr.shape[-1]) // W
    weight = structure_weight(lr, k)
    keeps = [(_validity(valid, box, s), box) for valid, box in references]
    reach = 3 * s + 1  # rows of G (3 σ, σ = s output rows) read around a band
    above = sr.new_zeros(3, 0, int(sr.shape[-1])).float()  # the original rows just above the band
    for a in range(0, H, band):
        b = min(H, a + band)
        rows = sr[:, s * a : s * b]
        window = torch.cat((above, sr[:, s * a : min(s * H, s * b + reach)].float()), dim=1)
        top = int(above.shape[1])
        smooth = gaussian_blur(window, float(s))[:, top : top + s * (b - a)]
        above = window[:, : top + s * (b - a)][:, -reach:].clone()  # before ``rows`` change
        first = max(0, a - 1)  # one LR row of context on each side for the bilinear upsampling
        w = F.interpolate(
            weight[None, :, first : b + 1], scale_factor=s, mode="bilinear", align_corners=False
        )[0]
        w = w[:, s * (a - first) : s * (b - first)]
        for keep, (x0, y0, bw, bh) in keeps:
            r0, r1 = max(a, y0), min(b, y0 + bh)
            if r0 < r1:
                inside = w[:, s * (r0 - a) : s * (r1 - a), s * x0 : s * (x0 + bw)]
                inside.copy_(torch.maximum(inside, keep[:, s * (r0 - y0) : s * (r1 - y0)]))
        rows.sub_(smooth.to(rows.dtype)).mul_(w.to(rows.dtype)).add_(smooth.to(rows.dtype))
    return sr
