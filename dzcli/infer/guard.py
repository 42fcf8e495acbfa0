"""Flat-area guard: the network's fine detail kept only where the wide photo shows structure above its noise.

Where the wide photo is flat (a sky, a defocused background, a night scene's shadows) its fine bands are
the camera's noise (a phone's denoiser leaves it as blotches a pixel or two wide), and a network without a
reference there can only enlarge that noise or invent texture from it; the self-check
(:mod:`dzcli.infer.selfcheck`) scales the network's detail by one number per capture, fitted where the tele
is, and nothing guards a capture whose tele is not found. The guard writes
``G₂ + w₁·(G₁ − G₂) + w₀·(sr − G₁)`` (``Gₙ``: ``sr`` under a Gaussian of ``n`` wide-photo pixels): the band
finer than one wide pixel kept in proportion to ``w₀``, the band between one and two in proportion to
``w₁``, each ``w = clamp(1 − k·σ²/e, 0, 1)`` per pixel with ``e`` the wide photo's local energy in that
band and ``σ²`` that energy where the photo is flattest (its :data:`NOISE_QUANTILE` quantile, the noise
floor of this capture; a median would take a fully textured photo's texture for noise). Where the tele is
valid its detail is the scene's and both weights are 1 there.

Chosen on ×2 captures of the training photos: ``k`` on the finest band (1, 2, 4; see :data:`GUARD_K`), then
the second band with the same ``k`` and energy σ (k 1 / 2 / 3, σ 1.5 / 3 tried; at 1200–1600 px, phone /
night / dslr LPIPS 0.2829 / 0.4475 / 0.2736 with the finest band alone, 0.2712 / 0.4377 / 0.2740 with
both, PSNR +0.05 / +0.05 / −0.04 dB). On by default in ``dzsr zoom`` and ``dzsr eval`` (``--no-guard``);
held-out numbers in the README (*Flat-area guard*).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dzcli.camera import gaussian_blur
from dzcli.infer.selfcheck import base_band

__all__ = ["GUARD_K", "LEVELS", "NOISE_QUANTILE", "guard_flat", "quiet_flat", "structure_weight"]

GUARD_K = 2.0
"""``k``: how many times the noise floor's energy the wide photo's band must hold for the detail to be kept
whole (k = 1, 2, 4 tried: LPIPS of a perceptual network's output on ×2 captures of the training photos at
1200 px, 0.2875 / 0.2824 / 0.2858 on the whole photo)."""
NOISE_QUANTILE = 0.1
"""Quantile of the wide photo's local band energy taken as its noise floor."""
ENERGY_SIGMA = 1.5
"""Gaussian σ (wide-photo pixels) over which a band's energy is averaged."""
LEVELS = 2
"""Bands guarded: finer than one wide-photo pixel, and between one and two."""
_SAMPLES = 1 << 20
"""Most energy values the quantile is taken over (an even subsample of larger photos)."""


def _band(lr: Tensor, level: int) -> Tensor:
    """The wide photo's band ``level``: 0 finer than one pixel (``lr − G₁(lr)``, the band of
    :func:`~dzcli.infer.selfcheck.base_band`), 1 between one and two (``G₁(lr) − G₂(lr)``); ``Gₙ`` a Gaussian
    of ``n`` pixels, edges reflected."""
    if level == 0:
        return base_band(lr, 1)
    return gaussian_blur(lr, 1.0) - gaussian_blur(lr, 2.0)


def structure_weight(lr: Tensor, k: float = GUARD_K, level: int = 0, where: Tensor | None = None) -> Tensor:
    """``w``: where the wide photo shows structure above its own noise floor in band ``level`` (see the module
    docstring).

    Args:
        lr: ``(3, H, W)`` the wide photo in ``[0, 1]``.
        k: :data:`GUARD_K`.
        level: the band, 0 or 1 (:data:`LEVELS`).
        where: ``(1, H, W)``: the noise floor is taken over the pixels above 0.5 only (a registered tele's
            valid part); None: over the whole photo.

    Returns:
        ``(1, H, W)`` in ``[0, 1]``: 0 where the photo's band is no stronger than ``k`` times its noise floor
        there, 1 where it is far stronger.
    """
    band = _band(lr.float(), level)
    energy = gaussian_blur(band.pow(2).mean(0, keepdim=True), ENERGY_SIGMA)
    flat = energy.flatten() if where is None else energy[where > 0.5]
    if flat.numel() == 0:
        return torch.ones_like(energy)
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
    where: Tensor | None = None,
    band: int = 256,
) -> Tensor:
    """``G₂ + w₁·(G₁ − G₂) + w₀·(sr − G₁)`` (``Gₙ = Gₙ(sr)``), in bands of ``band`` LR rows (bounded memory);
    ``sr`` is changed in place.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr``.
        lr: ``(3, H, W)`` the wide photo.
        references: ``(valid, box)`` of each reference the network had: ``valid`` ``(1, h, w)`` where it is
            valid over ``box = (x0, y0, bw, bh)`` (LR pixels; at any density, resampled to ``s``); there its
            detail is the scene's and both weights are raised to that validity, softened by a Gaussian of one
            LR pixel.
        k: :data:`GUARD_K`.
        where: ``(1, H, W)``: the noise floor measured there only (see :func:`structure_weight`).

    Returns:
        ``sr``.
    """
    H, W = int(lr.shape[-2]), int(lr.shape[-1])
    s = int(sr.shape[-1]) // W
    weights = torch.cat([structure_weight(lr, k, level, where) for level in range(LEVELS)])  # (LEVELS, H, W)
    keeps = [(_validity(valid, box, s), box) for valid, box in references]
    reach = 6 * s + 1  # rows of G₂ (3 σ, σ = 2s output rows) read around a band
    above = sr.new_zeros(3, 0, int(sr.shape[-1])).float()  # the original rows just above the band
    for a in range(0, H, band):
        b = min(H, a + band)
        rows = sr[:, s * a : s * b]
        window = torch.cat((above, sr[:, s * a : min(s * H, s * b + reach)].float()), dim=1)
        top = int(above.shape[1])
        g1, g2 = (gaussian_blur(window, n * float(s))[:, top : top + s * (b - a)] for n in (1, 2))
        above = window[:, : top + s * (b - a)][:, -reach:].clone()  # before ``rows`` change
        first = max(0, a - 1)  # one LR row of context on each side for the bilinear upsampling
        w = F.interpolate(
            weights[None, :, first : b + 1], scale_factor=s, mode="bilinear", align_corners=False
        )[0]
        w = w[:, s * (a - first) : s * (b - first)]
        for keep, (x0, y0, bw, bh) in keeps:
            r0, r1 = max(a, y0), min(b, y0 + bh)
            if r0 < r1:
                inside = w[:, s * (r0 - a) : s * (r1 - a), s * x0 : s * (x0 + bw)]
                inside.copy_(torch.maximum(inside, keep[:, s * (r0 - y0) : s * (r1 - y0)]))
        rows.sub_(g1.to(rows.dtype)).mul_(w[0:1].to(rows.dtype))  # w₀·(sr − G₁), in place
        rows.add_(g1.sub_(g2).mul_(w[1:2]).add_(g2).to(rows.dtype))  # + G₂ + w₁·(G₁ − G₂)
    return sr


def quiet_flat(image: Tensor, where: Tensor | None = None, *, k: float = GUARD_K) -> Tensor:
    """A photo with the noise of its flat areas taken out: :func:`guard_flat` at the photo's own density (its
    output is the photo, its weights the photo's own), with no reference.

    What the perceptual loss of ``dzsr train --sw-target quiet`` compares the network's output with, so that
    it is not taught to reproduce the tele's noise.

    Args:
        image: ``(3, H, W)`` in ``[0, 1]``.
        where: ``(1, H, W)``, see :func:`structure_weight` (the noise floor over its pixels above 0.5).
        k: :data:`GUARD_K`.

    Returns:
        ``(3, H, W)`` float32, a new tensor; equal to ``image`` where both bands are far above the floor.
    """
    return guard_flat(image.float().clone(), image, k=k, where=where)
