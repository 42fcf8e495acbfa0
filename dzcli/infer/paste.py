"""The tele's detail at its own density, added to an output denser than the network's scale.

A ×s network sees the tele at ``s``× the wide photo's density. When the output is denser (a ×2 network on a
capture whose tele is 4× or 5.9× denser than the wide), the network's output is resampled to that density
and holds none of the tele's detail beyond ``s``. Inside the tele's footprint, where it is valid, the
registered, colour-matched tele's band above ``s`` (the tele minus itself taken down to ``s``× and back up)
is added to it, with feathered edges; below ``s`` the output stays the network's, which was measured closer
to the scene there than the tele (see ``REF_BLEND`` in :mod:`dzcli.pipeline.zoom`). That band also holds the
tele camera's noise, so it is shrunk where its local energy is not above the noise's (``1 − σ²/energy``,
σ from its median absolute value): on a flat sky pasting the whole tele cost 4.7 dB at ×5.9.

Between the wide photo's own density and ``s`` the output is pulled further towards the tele
(:data:`BAND_PULL`): there the network's output is its estimate from the uw (which holds nothing above its
own density) and a reference at only ``s``×, while the tele, taken down from ``r``× to ``s``×, has its noise
averaged over ``(r/s)²`` pixels. The band below the uw's density stays the network's (the uw sees it; the
tele's tones there are the colour match's, and where the two cameras clip differently they are wrong).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dzcli.camera import gaussian_blur
from dzcli.resize import resample

#: Width, in output pixels, of the ramp over which the pasted tele fades into the network's output.
FEATHER = 32

BAND_PULL = 0.5
"""Share of the way the output's band between the uw's density and the network's scale is pulled towards the
tele's. Measured on simulated phone captures of the training photos, ×2 network, PSNR inside the tele's
footprint (away from its edges), 0 / 0.25 / 0.5 / 0.75 / 1: ×4 32.15 / 32.30 / 32.36 / 32.34 / 32.25 dB,
×5.9 31.41 / 31.63 / 31.74 / 31.73 / 31.60 dB. Pulling the band below the uw's density too (the whole
low band) was +0.06 dB better on average but cost one capture 3.1 dB (a sunset whose cameras clip the sun
differently)."""


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


def sample_reference(
    ref: Tensor,
    mask: Tensor,
    box: tuple[int, int, int, int],
    ref_scale: int,
    density: float,
    size: tuple[int, int],
) -> tuple[Tensor, Tensor, tuple[int, int, int, int]]:
    """``ref`` and ``mask`` resampled onto the output pixels of an image at ``density`` that they cover.

    Args:
        ref: ``(3, S·h, S·w)`` the registered tele over uw pixels ``box``, at ``ref_scale = S``.
        mask: ``(1, S·h, S·w)`` where ``ref`` is valid (1) or not (0).
        box: ``(x0, y0, w, h)`` in uw pixels.
        ref_scale: ``S``.
        density: output pixels per uw pixel.
        size: the output's ``(H, W)``.

    Returns:
        ``(3, yb − ya, xb − xa)`` reference, ``(1, …)`` validity in [0, 1], and the output span
        ``(xa, xb, ya, yb)`` (empty when the footprint misses the image).
    """
    x0, y0, w, h = box
    xa, xb = footprint_span(x0, w, density)
    ya, yb = footprint_span(y0, h, density)
    xa, xb = max(xa, 0), min(xb, size[1])
    ya, yb = max(ya, 0), min(yb, size[0])
    if xb <= xa or yb <= ya:
        return ref.new_zeros(3, 0, 0), ref.new_zeros(1, 0, 0), (xa, xa, ya, ya)
    s = float(ref_scale)
    # ref pixel coordinate of output pixel i: S·((i + 0.5) / r − x0) − 0.5; normalised for grid_sample.
    xs = s * ((torch.arange(xa, xb, dtype=torch.float64) + 0.5) / density - x0) - 0.5
    ys = s * ((torch.arange(ya, yb, dtype=torch.float64) + 0.5) / density - y0) - 0.5
    gx = (2 * xs + 1) / ref.shape[-1] - 1
    gy = (2 * ys + 1) / ref.shape[-2] - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).to(torch.float32)[None]
    both = torch.cat((ref.float(), mask.float()), dim=0)[None]
    sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return sampled[:3], sampled[3:4], (xa, xb, ya, yb)


def _lowpass(image: Tensor, scale: float, density: float) -> Tensor:
    """``image`` (at ``density`` per uw pixel) taken down to ``scale`` per uw pixel (area) and back (Lanczos,
    as the network's output is resampled): its content below ``scale``, same shape."""
    H, W = int(image.shape[-2]), int(image.shape[-1])
    small = (max(1, round(H * scale / density)), max(1, round(W * scale / density)))
    return resample(resample(image, small), (H, W))


def detail_band(ref: Tensor, valid: Tensor, base_scale: float, density: float) -> Tensor:
    """The detail of ``ref`` (at ``density`` per uw pixel) finer than ``base_scale`` per uw pixel, shrunk
    towards 0 where it is no stronger than its noise.

    Args:
        ref: ``(3, H, W)`` in [0, 1].
        valid: ``(1, H, W)`` in [0, 1]; the noise is measured where it is above 0.5.
        base_scale: density (per uw pixel) below which the detail is left out, ``< density``.
        density: ``ref``'s pixels per uw pixel.

    Returns:
        ``(3, H, W)``: ``ref`` minus ``ref`` taken down to ``base_scale`` (area) and back (Lanczos, as the
        network's output is resampled), times ``clamp(1 − σ² / e, 0, 1)``, ``e`` its energy averaged over a
        uw pixel (Gaussian) and ``σ`` its noise level (median absolute value / 0.6745).
    """
    band = ref - _lowpass(ref, base_scale, density)
    inside = valid[0] > 0.5
    if not bool(inside.any()):
        return torch.zeros_like(band)
    noise = float((band[:, inside].abs().median() / 0.6745) ** 2)
    energy = gaussian_blur(band.pow(2).mean(0, keepdim=True), density)
    return band * (1 - noise / energy.clamp_min(1e-12)).clamp(0, 1)


def paste_reference(
    image: Tensor,
    ref: Tensor,
    mask: Tensor,
    box: tuple[int, int, int, int],
    ref_scale: int,
    density: float,
    base_scale: float,
    *,
    feather: int = FEATHER,
    band_pull: float = BAND_PULL,
) -> Tensor:
    """Add the detail of ``ref`` finer than ``base_scale`` to ``image`` where it covers it and is valid, and
    pull ``image``'s band between the uw's density and ``base_scale`` ``band_pull`` of the way towards ``ref``'s.

    Args:
        image: ``(3, Ho, Wo)`` in [0, 1], the whole wide photo at ``density`` output pixels per uw pixel,
            holding detail up to ``base_scale`` (the network's output, resampled).
        ref: ``(3, S·h, S·w)`` the registered tele over uw pixels ``box``, at ``ref_scale = S`` (≥ density
            for a lossless paste) and in the wide photo's colours (:func:`dzcli.align.capture.align_capture`).
        mask: ``(1, S·h, S·w)`` where ``ref`` is valid (1) or not (0).
        box: ``(x0, y0, w, h)`` in uw pixels.
        ref_scale: ``S``.
        density: output pixels per uw pixel.
        base_scale: the network's scale, ``< density``.
        feather: ramp width in output pixels at the footprint's edges.
        band_pull: see :data:`BAND_PULL` (0: only the detail above ``base_scale`` is added).

    Returns:
        A new ``(3, Ho, Wo)`` image in [0, 1]: ``image`` outside the footprint; inside it, plus
        :func:`detail_band` and ``band_pull`` times the difference of the two images' bands between 1 and
        ``base_scale`` per uw pixel, weighted by the resampled ``mask`` times the edge ramp.
    """
    sampled, valid, (xa, xb, ya, yb) = sample_reference(
        ref, mask, box, ref_scale, density, (int(image.shape[-2]), int(image.shape[-1]))
    )
    out = image.clone()
    if xb <= xa or yb <= ya:
        return out
    weight = valid * _ramp(yb - ya, feather)[:, None] * _ramp(xb - xa, feather)[None, :]
    band = detail_band(sampled, valid, base_scale, density)
    if band_pull > 0 and base_scale > 1:
        here = image[:, ya:yb, xa:xb].float()

        def middle(x: Tensor) -> Tensor:
            return _lowpass(x, base_scale, density) - _lowpass(x, 1.0, density)

        # where the tele is not valid, the image itself: no difference from there spreads into the band
        tele = valid * sampled + (1 - valid) * here
        band = band + band_pull * (middle(tele) - middle(here))
    out[:, ya:yb, xa:xb] = (out[:, ya:yb, xa:xb] + (weight * band).to(image.dtype)).clamp(0, 1)
    return out
