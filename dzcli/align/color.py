"""Map the tele's colours to the uw's (the uw's colours are the output's colours).

Two stages, both fitted on co-located pixels of the two images at the uw's resolution:

1. a per-channel monotone quantile LUT (``LUT_SIZE`` knots on a uniform grid over [0, 1]), fitted on
   valid pixels whose channels are all unclipped (in ``[0.02, 0.98]``) in both images;
2. a smooth low-resolution gain map ``G = blur(dst·m) / blur(lut(src)·m)`` (normalised convolution with a
   Gaussian of ``σ = gain_sigma × width``), pulled towards 1 where few valid pixels are near, and clamped.

Everything is float32; images follow the image convention (``(3, H, W)`` RGB in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from torch import Tensor

from dzcli.errors import TeleNotFoundError
from dzcli.io.images import from_hwc, to_hwc
from dzcli.resize import torch_resize

LUT_SIZE = 256
"""Knots per channel of the LUT."""
CLIP_LOW, CLIP_HIGH = 0.02, 0.98
"""Pixels with any channel outside this range are not used for fitting."""
GAIN_RANGE = (0.5, 2.0)
"""Clamp of the gain map."""
GAIN_PRIOR = 0.05
"""Weight (in fully valid pixels of the blur window) of the prior gain 1."""
GAIN_GRID_SIGMA = 4.0
"""The gain map is computed on a grid where the blur's σ is this many cells."""
FIT_ROUNDS = 3
"""Alternations between fitting the LUT and the gain map."""
LUT_SAMPLES = 1 << 19
"""Most pixels the LUT's quantiles are computed from."""
MIN_PIXELS = 256
"""Fewest valid pixels to fit a colour model on."""


@dataclass(frozen=True, eq=False)
class ColorModel:
    """A fitted colour map from one camera's colours to another's.

    Attributes:
        lut: ``(3, K)`` float32, non-decreasing per channel: output value at input ``k / (K - 1)``.
        gain: ``(3, gh, gw)`` float32, smooth multiplicative gain map over the whole image (any size).
        pixels: number of pixels the LUT was fitted on.
    """

    lut: np.ndarray
    gain: np.ndarray
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON summary: the LUT at 17 inputs and per-channel gain statistics."""
        k = self.lut.shape[1]
        at = np.linspace(0.0, 1.0, 17)
        curve = [np.interp(at, np.linspace(0.0, 1.0, k), ch) for ch in self.lut]
        return {
            "lut_knots": int(k),
            "lut_at": [round(float(v), 4) for v in at],
            "lut": [[round(float(v), 4) for v in ch] for ch in curve],
            "gain_shape": [int(v) for v in self.gain.shape[1:]],
            "gain_min": [round(float(g.min()), 4) for g in self.gain],
            "gain_mean": [round(float(g.mean()), 4) for g in self.gain],
            "gain_max": [round(float(g.max()), 4) for g in self.gain],
            "pixels": self.pixels,
        }


def _apply_lut(lut: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per-channel piecewise-linear LUT on an ``(H, W, 3)`` float32 array in [0, 1]."""
    k = lut.shape[1]
    pos = np.clip(a, 0.0, 1.0) * (k - 1)
    lo = np.minimum(pos.astype(np.int64), k - 2)
    frac = (pos - lo).astype(np.float32)
    out = np.empty_like(a)
    for c in range(3):
        table = lut[c]
        out[..., c] = table[lo[..., c]] * (1.0 - frac[..., c]) + table[lo[..., c] + 1] * frac[..., c]
    return out


def _fit_lut(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Quantile-matching LUT ``(3, LUT_SIZE)`` from co-located samples ``(N, 3)`` of src and dst."""
    probs = np.linspace(0.0, 1.0, LUT_SIZE)
    grid = np.linspace(0.0, 1.0, LUT_SIZE)
    lut = np.empty((3, LUT_SIZE), dtype=np.float32)
    for c in range(3):
        qs = np.quantile(src[:, c], probs)
        qd = np.quantile(dst[:, c], probs)
        xs, inverse = np.unique(qs, return_inverse=True)  # tied inputs (8-bit data): average their outputs
        ys = np.bincount(inverse, weights=qd) / np.bincount(inverse)
        if xs[0] > 0.0:  # black stays black
            xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])
        if xs[-1] < 1.0:  # white stays white
            xs, ys = np.concatenate([xs, [1.0]]), np.concatenate([ys, [1.0]])
        lut[c] = np.maximum.accumulate(np.interp(grid, xs, ys))
    return lut


def fit_color(
    src: Tensor, dst: Tensor, mask: Tensor | None = None, *, gain_sigma: float = 0.03
) -> ColorModel:
    """Fit the map from ``src``'s colours to ``dst``'s on co-located pixels.

    Args:
        src: ``(3, H, W)`` float32 in [0, 1], e.g. the tele resampled to the uw crop's resolution.
        dst: ``(3, H, W)`` float32 in [0, 1], e.g. the uw crop.
        mask: ``(1, H, W)`` or ``(H, W)``, pixels to use where > 0.5; default: all.
        gain_sigma: σ of the gain map's blur, as a fraction of the image width.

    Returns:
        The fitted model.

    Raises:
        TeleNotFoundError: fewer than ``MIN_PIXELS`` valid unclipped pixels.
    """
    if src.shape != dst.shape:
        raise ValueError(
            f"src and dst must have the same shape, got {tuple(src.shape)} and {tuple(dst.shape)}"
        )
    s, d = to_hwc(src), to_hwc(dst)
    h, w = s.shape[:2]
    m = np.ones((h, w), dtype=bool) if mask is None else mask.detach().cpu().reshape(h, w).numpy() > 0.5
    unclipped = np.all((s >= CLIP_LOW) & (s <= CLIP_HIGH) & (d >= CLIP_LOW) & (d <= CLIP_HIGH), axis=2)
    valid = m & unclipped
    n = int(valid.sum())
    if n < MIN_PIXELS:
        raise TeleNotFoundError(f"cannot match colours: only {n} valid unclipped pixels (need {MIN_PIXELS})")
    sigma = max(gain_sigma * w, 1e-3)
    shrink = min(1.0, GAIN_GRID_SIGMA / sigma)
    gw, gh = max(1, round(w * shrink)), max(1, round(h * shrink))
    weight = valid.astype(np.float32)[..., None]

    def smooth(a: np.ndarray) -> np.ndarray:
        small = cv2.resize(a, (gw, gh), interpolation=cv2.INTER_AREA) if shrink < 1 else a
        return cv2.GaussianBlur(small, (0, 0), sigmaX=sigma * gw / w, borderType=cv2.BORDER_REFLECT)

    num = smooth(d * weight)
    samples = np.flatnonzero(valid)
    if samples.size > LUT_SAMPLES:  # a deterministic, evenly spread subset is plenty for 256 quantiles
        samples = samples[np.linspace(0, samples.size - 1, LUT_SAMPLES).astype(np.int64)]
    s_samples = s.reshape(-1, 3)[samples]
    gain_full = np.ones_like(d)
    for _ in range(FIT_ROUNDS):  # alternate: the LUT sees dst without the shading the gain map explains
        lut = _fit_lut(s_samples, (d / gain_full).reshape(-1, 3)[samples])
        mapped = _apply_lut(lut, s)
        prior = GAIN_PRIOR * float(mapped[valid].mean())
        gain = np.clip((num + prior) / (smooth(mapped * weight) + prior), *GAIN_RANGE).astype(np.float32)
        gain_full = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)
    return ColorModel(
        lut=lut, gain=np.ascontiguousarray(gain.reshape(gh, gw, 3).transpose(2, 0, 1)), pixels=n
    )


def apply_color(model: ColorModel, img: Tensor) -> Tensor:
    """Map ``img``'s colours with ``model`` (the gain map is resized to ``img``).

    Args:
        model: from :func:`fit_color`.
        img: ``(3, H, W)`` float32 in [0, 1], any size covering the same view as the fit.

    Returns:
        ``(3, H, W)`` float32 in [0, 1].
    """
    a = _apply_lut(model.lut, to_hwc(img))
    h, w = a.shape[:2]
    gain = cv2.resize(
        np.ascontiguousarray(model.gain.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR
    )
    out = np.clip(a * gain.reshape(h, w, 3), 0.0, 1.0)
    return from_hwc(out)


def match_colors(hr: Tensor, lr: Tensor, mask_hr: Tensor) -> tuple[Tensor, ColorModel]:
    """Give ``hr`` (the tele on ``lr``'s grid at ``s``× density) the colours of ``lr`` (the uw crop).

    Args:
        hr: ``(3, s·h, s·w)`` float32 in [0, 1].
        lr: ``(3, h, w)`` float32 in [0, 1].
        mask_hr: ``(1, s·h, s·w)`` validity of ``hr`` in {0, 1}.

    Returns:
        The colour-matched ``hr`` ``(3, s·h, s·w)`` and the fitted model. The model is fitted at ``lr``'s
        resolution on pixels whose whole ``s×s`` block is valid.
    """
    h, w = int(lr.shape[1]), int(lr.shape[2])
    small = torch_resize(hr.float(), (h, w), "area")
    m_small = torch_resize(mask_hr.reshape(1, *hr.shape[1:]).float(), (h, w), "area")
    model = fit_color(small, lr, (m_small > 1.0 - 1e-4).float())
    return apply_color(model, hr), model
