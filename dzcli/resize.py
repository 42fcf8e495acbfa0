"""Resizing ``(C, H, W)`` images in ``[0, 1]``: every resampling filter dzsr applies to whole images.

Two families compute different things and are kept apart on purpose (same name, different pixels):

- OpenCV's filters (:func:`cv_resize`; ``area``, ``bilinear``, ``bicubic`` = ``INTER_CUBIC`` with
  a = -0.75, ``lanczos`` = ``INTER_LANCZOS4``), on float32 ``(H, W, C)`` arrays: the baselines of
  ``dzsr eval``, the resampling of ``dzsr zoom``'s output (:func:`resample`) and the cameras of
  ``dzsr simulate``;
- PyTorch's ``F.interpolate`` (:func:`torch_resize`, optionally antialiased; :func:`upscale_bicubic`, the
  bicubic upsampling the networks add their output to): previews, alpha channels, the reference's
  fallback in zoom, colour matching, and the bicubic baseline of training's validation.

Sizes are ``(height, width)``, as tensors' shapes. Registration's coordinate-exact resizes of its own
numpy arrays stay in :mod:`dzcli.align.register`.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch.nn.functional as F
from torch import Tensor

from dzcli.errors import ConfigError
from dzcli.io.images import from_hwc, to_hwc

__all__ = ["CV_FILTERS", "cv_resize", "resample", "torch_resize", "upscale_bicubic"]

CvFilter = Literal["area", "bilinear", "bicubic", "lanczos"]
CV_FILTERS: dict[str, int] = {
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "lanczos": cv2.INTER_LANCZOS4,
}
"""The OpenCV filters of :func:`cv_resize`, by name."""


def cv_resize(img: Tensor, size: tuple[int, int], method: str) -> Tensor:
    """Resize with an OpenCV filter.

    Args:
        img: ``(C, h, w)`` float in ``[0, 1]`` (any device; computed on the CPU in float32).
        size: output ``(H, W)``.
        method: a name of :data:`CV_FILTERS` (``bicubic`` is OpenCV's ``INTER_CUBIC``, a = -0.75).

    Returns:
        ``(C, H, W)`` float32 on the CPU, clamped to ``[0, 1]``.

    Raises:
        ConfigError: an unknown filter.
    """
    if method not in CV_FILTERS:
        raise ConfigError(f"unknown resize filter {method!r}: {', '.join(CV_FILTERS)}")
    hwc = to_hwc(img)
    out = cv2.resize(hwc, (size[1], size[0]), interpolation=CV_FILTERS[method])
    del hwc  # large photos: the input's copy goes before the output's
    np.clip(out, 0.0, 1.0, out=out)
    return from_hwc(out)


def resample(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize to ``size = (h, w)`` as ``dzsr zoom`` resamples its output: Lanczos-4 when enlarging, area
    when shrinking (OpenCV).

    Returns:
        ``(C, h, w)`` float32 clamped to ``[0, 1]`` (``img`` itself when the size is unchanged).
    """
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    up = size[0] * size[1] > img.shape[-2] * img.shape[-1]
    return cv_resize(img, size, "lanczos" if up else "area")


def torch_resize(
    img: Tensor, size: tuple[int, int], mode: str = "bicubic", *, antialias: bool = False
) -> Tensor:
    """Resize with ``F.interpolate`` (``align_corners=False`` for the interpolating modes).

    Args:
        img: ``(C, h, w)``.
        size: output ``(H, W)``.
        mode: ``area``, ``nearest``, ``bilinear`` or ``bicubic``.
        antialias: low-pass when shrinking (``bilinear`` and ``bicubic`` only).

    Returns:
        ``(C, H, W)`` clamped to ``[0, 1]`` (``img`` itself when the size is unchanged).
    """
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    if mode in ("bilinear", "bicubic"):
        out = F.interpolate(img[None], size=size, mode=mode, align_corners=False, antialias=antialias)
    else:
        out = F.interpolate(img[None], size=size, mode=mode)
    return out[0].clamp(0, 1)


def upscale_bicubic(img: Tensor, scale: int) -> Tensor:
    """``(C, h, w)`` → ``(C, s·h, s·w)``, PyTorch bicubic by the integer factor ``scale``, not clamped: the
    upsampling the networks add their detail to (:mod:`dzsr_models.dzsr`)."""
    return F.interpolate(img[None], scale_factor=scale, mode="bicubic", align_corners=False)[0]
