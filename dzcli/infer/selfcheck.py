"""Per-capture self-check: how much of the network's reference-free detail this capture supports.

Inside the tele's footprint the tele is the ground truth of the wide photo, so the capture itself can tell
whether the network's reference-free path (what runs where the tele does not reach) improves on bicubic
upsampling *for this camera*: on a phone JPEG that the phone already sharpened and denoised it may add
crunchy texture instead of detail. :func:`fit_self_check` measures, on a few patches under the tele, the
least-squares fit ``t − b ≈ α·r + β·h`` of the tele ``t`` over the bicubic upsampling ``b``, with ``r`` the
network's residual over ``b`` and ``h = b − G(b)`` the bicubic's own band-pass (``G``: a Gaussian of one
wide-photo pixel): ``α ∈ [0, 1]`` is how much of the network's detail to keep, ``β ≤ 0`` how much of the
wide camera's own sharpening (its halos, its amplified noise) to take back out of the base.
:func:`blend_outside` then writes ``b + β·h + α·r`` outside the footprint (ramping to the network's
output at its edge) and inside it where the tele is not valid (moving things, parallax, occlusions: the
network had no reference there either; the validity softened over one wide-photo pixel). ``β`` is never
positive: a tele sharper than the wide photo may be the tele camera's own sharpening, not the scene's,
while the wide camera's sharpening cannot be in the tele.
``(α, β) = (1, 0)`` leaves the output as it is.

A network trained for looks (``perceptual``: a perceptual term in its training loss, like
``dzsr-small-x2-sharp``) draws texture with the scene's statistics, not its exact phase, so a least-squares
``α`` against the tele shrinks its detail towards bicubic exactly where it draws texture (×2 captures of the
training photos at 1200 px: ``α`` 0.14 on a pebbled surface, 0.35 on a forest stream). For it ``α = 1``
and only ``β`` is fitted (given ``α = 1``): the wide camera's sharpening is the wide's own band, in phase
with the tele whatever the network draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from dzcli.camera import gaussian_blur
from dzcli.infer.engine import Box, describe, super_resolve
from dzcli.resize import upscale_bicubic

__all__ = ["SelfCheck", "apply_self_check", "base_band", "blend_outside", "fit_self_check"]

BAND_SIGMA = 1.0
"""``G``'s Gaussian sigma in wide-photo pixels (the scale of a phone's unsharp mask, 0.7–2 px)."""


@dataclass(frozen=True)
class SelfCheck:
    """What the tele shows about one capture (see the module docstring).

    Attributes:
        gain: ``α`` in ``[0, 1]``, the share of the network's reference-free detail kept.
        base: ``β <= 0``, the weight of the bicubic base's band-pass added back (negative: the wide camera's
            sharpening taken out).
    """

    gain: float = 1.0
    base: float = 0.0

    @property
    def neutral(self) -> bool:
        """The output is left as it is."""
        return self.gain >= 1.0 and self.base == 0.0


def base_band(bic: Tensor, scale: int) -> Tensor:
    """``h = b − G(b)``: ``(3, h, w)`` the band of the bicubic upsampling ``bic`` (at ``scale``× the wide
    photo) finer than :data:`BAND_SIGMA` wide-photo pixels (edges reflected)."""
    return bic - gaussian_blur(bic, BAND_SIGMA * scale)


def _given_gain(gain: float, ab: float, bb: float, bt: float) -> SelfCheck:
    """``α = gain`` and the least-squares ``β ≤ 0`` given it (normal equations as :func:`_solve`'s)."""
    return SelfCheck(gain=gain, base=min(0.0, (bt - gain * ab) / bb) if bb > 0 else 0.0)


def _solve(aa: float, ab: float, bb: float, at: float, bt: float, *, perceptual: bool = False) -> SelfCheck:
    """The least-squares ``(α, β)`` of ``t ≈ α·r + β·h`` from its normal equations (``aa = Σr²``,
    ``ab = Σrh``, ``bb = Σh²``, ``at = Σrt``, ``bt = Σht``), with ``α ∈ [0, 1]`` and ``β ≤ 0``;
    ``perceptual``: ``α = 1`` and ``β`` fitted given it."""
    if perceptual:
        return _given_gain(1.0, ab, bb, bt)
    alone = SelfCheck(gain=min(1.0, max(0.0, at / aa))) if aa > 0 else SelfCheck()
    det = aa * bb - ab * ab
    if bb <= 0 or det <= 1e-12 * aa * bb:
        return alone
    alpha, beta = (at * bb - bt * ab) / det, (bt * aa - at * ab) / det
    if beta > 0:
        return alone
    if not 0.0 <= alpha <= 1.0:  # on the edge α = 0 or 1: β refitted given α
        return _given_gain(min(1.0, max(0.0, alpha)), ab, bb, bt)
    return SelfCheck(gain=alpha, base=beta)


def fit_self_check(
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
    perceptual: bool = False,
) -> SelfCheck:
    """The ``(α, β)`` the tele supports (see the module docstring).

    Fitted over up to ``patches`` patches of ``patch`` LR pixels spread evenly over the footprint, weighted
    by the tele's validity ``m``, leaving out ``margin`` pixels at each patch's border (the network saw
    padding there).

    Args:
        model: the SR network (any model :func:`super_resolve` runs), scale ``s``.
        lr: ``(3, H, W)`` the wide photo in ``[0, 1]``.
        ref: ``(3, s·bh, s·bw)`` the tele over ``box``, in the wide's colours.
        box: ``(x0, y0, bw, bh)`` of ``ref`` inside ``lr``.
        mask: ``(1, s·bh, s·bw)`` validity of ``ref`` (None: all valid).
        tta: views the network runs in (as :func:`super_resolve`'s).
        perceptual: the network was trained for looks: ``α = 1``, only ``β`` fitted (module docstring).

    Returns:
        The fit; neutral when the footprint is too small to measure.
    """
    s = describe(model).scale
    x0, y0, bw, bh = box
    ph, pw = min(patch, bh), min(patch, bw)
    if min(ph, pw) <= 2 * margin + 8:
        return SelfCheck()
    per_axis = max(1, math.isqrt(patches))
    sums = np.zeros(5)  # Σr², Σrh, Σh², Σrt, Σht (t: the tele over bicubic)
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
            r, h, d = (net - bic)[inner], base_band(bic, s)[inner], t - bic[inner]
            sums += [float((w * a * b).sum()) for a, b in ((r, r), (r, h), (h, h), (r, d), (h, d))]
    return _solve(*(float(v) for v in sums), perceptual=perceptual)


def blend_outside(
    sr: Tensor,
    lr: Tensor,
    box: Box,
    check: SelfCheck,
    mask: Tensor | None = None,
    *,
    feather: int = 16,
    band: int = 256,
) -> Tensor:
    """``b + β·h + α·(sr − b)`` outside the box (``b`` bicubic, ``h`` :func:`base_band`) and inside it where
    the tele is not valid, ``sr`` where it is, ramping over ``feather`` LR pixels outside the box's edge; in
    bands of ``band`` LR rows (bounded memory). ``sr`` is changed in place.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr``.
        lr: ``(3, H, W)``.
        box: ``(x0, y0, bw, bh)`` the tele's footprint in ``lr`` pixels.
        check: from :func:`fit_self_check`.
        mask: ``(1, s·bh, s·bw)`` validity of the tele over the box (None: valid everywhere), softened by a
            Gaussian of one LR pixel.

    Returns:
        ``sr``.
    """
    if check.neutral:
        return sr
    H, W = lr.shape[-2:]
    s = sr.shape[-1] // W
    x0, y0, bw, bh = box
    inside = None
    if mask is not None and float(mask.min()) < 1.0:
        inside = gaussian_blur(mask.float(), float(s))
    xs = (torch.arange(s * W, dtype=torch.float32) + 0.5) / s
    dx = torch.clamp(torch.maximum(x0 - xs, xs - (x0 + bw)), min=0.0)
    reach = 3 + math.ceil(3 * BAND_SIGMA)  # LR rows bicubic (2) and G (3 sigma) read around a band
    for a in range(0, H, band):
        b = min(H, a + band)
        lo, hi = max(0, a - reach), min(H, b + reach)  # so that the band equals the whole image's
        bic = upscale_bicubic(lr[:, lo:hi], s)
        rows_hr = slice(s * (a - lo), s * (b - lo))
        h = None if check.base == 0.0 else base_band(bic, s)[:, rows_hr]
        bic = bic[:, rows_hr]
        ys = (torch.arange(s * a, s * b, dtype=torch.float32) + 0.5) / s
        dy = torch.clamp(torch.maximum(y0 - ys, ys - (y0 + bh)), min=0.0)
        dist = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        ramp = torch.clamp(1.0 - dist / feather, 0.0, 1.0)  # 1 at the box, 0 beyond the feather
        if inside is not None and a < y0 + bh and b > y0:  # the tele's validity inside the box
            r0, r1 = max(a, y0), min(b, y0 + bh)
            ramp[s * (r0 - a) : s * (r1 - a), s * x0 : s * (x0 + bw)] = inside[
                0, s * (r0 - y0) : s * (r1 - y0)
            ]
        g = check.gain + (1.0 - check.gain) * ramp
        rows = sr[:, s * a : s * b]
        rows.sub_(bic).mul_(g).add_(bic)
        if h is not None:
            rows.add_(h.mul_((1.0 - ramp) * check.base))
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
    perceptual: bool = False,
) -> tuple[Tensor, SelfCheck]:
    """The self-check of one capture: :func:`fit_self_check` under the tele, then :func:`blend_outside`.

    Args:
        sr: ``(3, s·H, s·W)`` the network's output for ``lr`` with the reference (changed in place).
        lr, ref, box, mask, tta, perceptual: as :func:`fit_self_check`.

    Returns:
        ``(sr, check)``.
    """
    check = fit_self_check(
        model, lr, ref, box, mask, device=device, half=half, tta=tta, perceptual=perceptual
    )
    return blend_outside(sr, lr, box, check, mask), check
