"""PSNR, SSIM and LPIPS on the SelfDZSR protocol, and the centre / corner / full regions.

Protocol (SelfDZSR ``metrics.py``): images are compared as 8-bit RGB (rounded), data range 255, no
border crop, no Y channel. SSIM is scikit-image's with Gaussian weights and an 11-pixel window; LPIPS is
AlexNet v0.1 (:mod:`dzcli.metrics.lpips`) on the 8-bit images mapped to [-1, 1], one pass per region.
Regions: ``centre`` = the reference's field of view, ``corner`` = the rest of the image as four
pieces (full-height left and right strips, top and bottom middle pieces), ``full`` = everything.
Corner PSNR pools the MSE of its pieces (area-weighted); corner SSIM and LPIPS are the unweighted means
of the pieces' values, as in the reference protocol.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from dzcli.io.images import to_hwc
from dzcli.metrics.lpips import LPIPS, MIN_SIDE, to_input

Piece = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open
REGIONS = ("centre", "corner", "full", "wide")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3,H,W) float in [0,1] → (H,W,3) uint8, rounded (the protocol's 8-bit quantisation)."""
    return to_hwc((img.detach().float().clamp(0, 1) * 255).round()).astype(np.uint8)


def _mse_sum(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is None:
        return float(d.sum()), float(d.size)
    m = np.broadcast_to(mask.astype(bool), d.shape)
    return float(d[m].sum()), float(m.sum())


def psnr_from_mse(mse: float, data_range: float = 255.0) -> float:
    """PSNR in dB of a mean squared error (``inf`` when it is 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, *, mask: torch.Tensor | None = None) -> float:
    """PSNR (dB) between two (3,H,W) images in [0,1], compared in 8-bit; ``mask`` (1,H,W) selects pixels."""
    m = None if mask is None else np.repeat(mask[0].cpu().numpy()[..., None] > 0.5, 3, axis=-1)
    total, count = _mse_sum(to_uint8(a), to_uint8(b), m)
    return psnr_from_mse(total / max(count, 1.0))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM between two (3,H,W) images in [0,1] (8-bit, Gaussian weights, window 11, RGB)."""
    x, y = to_uint8(a), to_uint8(b)
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape[1]}x{x.shape[0]}")
    return float(
        structural_similarity(x, y, win_size=11, gaussian_weights=True, data_range=255, channel_axis=-1)
    )


def region_pieces(
    height: int,
    width: int,
    box: tuple[int, int, int, int],
    wide_box: tuple[int, int, int, int] | None = None,
) -> dict[str, list[Piece]]:
    """Split an image into the protocol's regions.

    Args:
        height, width: image size.
        box: the centre region (x0, y0, w, h) in this image's pixels (clipped to the image).
        wide_box: for a triple capture, the middle camera's footprint (x0, y0, w, h), which holds ``box``.

    Returns:
        ``{"centre": [piece], "corner": [left, right, top, bottom], "full": [piece]}``, and with ``wide_box``
        ``"wide"``: the pieces of ``wide_box`` outside ``box`` (the ring where only the wide is a reference);
        empty pieces are dropped. Centre and corner partition the image.
    """
    x0, y0, x1, y1 = _clip(box, height, width)
    out = {
        "centre": [(y0, y1, x0, x1)],
        "corner": _ring((0, 0, width, height), (x0, y0, x1, y1)),
        "full": [(0, height, 0, width)],
    }
    if wide_box is not None:
        wx0, wy0, wx1, wy1 = _clip(wide_box, height, width)
        inner = (max(x0, wx0), max(y0, wy0), max(min(x1, wx1), wx0), max(min(y1, wy1), wy0))
        out["wide"] = _ring((wx0, wy0, wx1, wy1), inner)
    return out


def _clip(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` clipped to the image, as corners ``(x0, y0, x1, y1)``."""
    x0, y0 = max(0, min(width, box[0])), max(0, min(height, box[1]))
    return x0, y0, max(x0, min(width, box[0] + box[2])), max(y0, min(height, box[1] + box[3]))


def _ring(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> list[Piece]:
    """The non-empty pieces (left, right, top, bottom) of corners ``outer`` outside corners ``inner``."""
    ox0, oy0, ox1, oy1 = outer
    x0, y0, x1, y1 = inner
    pieces = [(oy0, oy1, ox0, x0), (oy0, oy1, x1, ox1), (oy0, y0, x0, x1), (y1, oy1, x0, x1)]
    return [p for p in pieces if p[1] > p[0] and p[3] > p[2]]


def _ssim_pieces(
    a: np.ndarray, b: np.ndarray, pieces: list[Piece], m: np.ndarray | None
) -> tuple[list[float], list[float]]:
    """SSIM of each piece at least 11 pixels on a side, and (with a mask) its mean over valid pixels.

    The masked value averages the channel-mean SSIM map over valid pixels, away from the 5-pixel border
    scikit-image also leaves out of its mean; pieces with no valid pixel there are skipped.
    """
    plain, masked = [], []
    for y0, y1, x0, x1 in pieces:
        if min(y1 - y0, x1 - x0) < 11:
            continue
        value, smap = structural_similarity(
            a[y0:y1, x0:x1],
            b[y0:y1, x0:x1],
            win_size=11,
            gaussian_weights=True,
            data_range=255,
            channel_axis=-1,
            full=True,
        )
        plain.append(float(value))
        if m is not None:
            inner = m[y0:y1, x0:x1][5:-5, 5:-5]
            if inner.any():
                masked.append(float(smap[5:-5, 5:-5].mean(axis=-1)[inner].mean()))
    return plain, masked


class RegionScorer:
    """Scores any number of outputs against one ground truth on centre / corner / full (SelfDZSR protocol), and
    the wide's footprint around the centre for a triple capture.

    The truth's 8-bit copy and, for LPIPS, its AlexNet features per piece are computed once (the features
    take about 80 bytes per truth pixel: 1 GB for a 12-megapixel image).

    Corner PSNR pools the MSE of its pieces; corner SSIM and LPIPS are the unweighted means of the pieces'
    values (pieces smaller than the metric's window are skipped, and a metric with no usable piece is left
    out of the region's dict).

    Args:
        hr: (3,H,W) ground truth in [0,1], compared on the 8-bit grid.
        box: the centre region in these images' pixels (x0, y0, w, h).
        wide_box: the middle camera's footprint (x0, y0, w, h) of a triple capture: adds region ``wide``
            (its pieces outside ``box``, scored like the corner's).
        mask: optional (1,H,W) validity; adds ``psnr_masked``, ``ssim_masked``, ``lpips_masked`` computed
            over pixels where mask > 0.5 (pooled MSE; mean of the SSIM / LPIPS maps).
        with_ssim: also compute SSIM.
        lpips_net: also compute LPIPS (AlexNet v0.1) with this module (on the device to run it on).
    """

    def __init__(
        self,
        hr: torch.Tensor,
        box: tuple[int, int, int, int],
        *,
        wide_box: tuple[int, int, int, int] | None = None,
        mask: torch.Tensor | None = None,
        with_ssim: bool = True,
        lpips_net: LPIPS | None = None,
    ) -> None:
        self.hr8 = to_uint8(hr)
        self.size = (int(hr.shape[-2]), int(hr.shape[-1]))
        self.regions = {k: v for k, v in region_pieces(*self.size, box, wide_box).items() if v}
        self.mask = mask
        self.m = None if mask is None else (mask[0].cpu().numpy() > 0.5)
        self.with_ssim = with_ssim
        self.net = lpips_net
        self._hr_taps: dict[Piece, list[torch.Tensor]] = {}
        if lpips_net is not None:
            dev = lpips_net.shift.device
            with torch.inference_mode():
                for pieces in self.regions.values():
                    for p in pieces:
                        y0, y1, x0, x1 = p
                        if min(y1 - y0, x1 - x0) >= MIN_SIDE and p not in self._hr_taps:
                            self._hr_taps[p] = lpips_net.taps(to_input(hr[:, y0:y1, x0:x1], dev))

    def _lpips(self, sr: torch.Tensor, pieces: list[Piece]) -> tuple[list[float], list[float]]:
        """LPIPS of each piece large enough (one trunk pass per piece), and its mean over valid pixels."""
        assert self.net is not None
        dev = self.net.shift.device
        plain, masked = [], []
        with torch.inference_mode():
            for p in pieces:
                if p not in self._hr_taps:
                    continue
                y0, y1, x0, x1 = p
                taps = self.net.taps(to_input(sr[:, y0:y1, x0:x1], dev))
                maps = self.net.layer_maps(taps, self._hr_taps[p])
                plain.append(float(self.net.combine(maps).item()))
                if self.mask is not None:
                    valid = (self.mask[0, y0:y1, x0:x1] > 0.5).to(dev)
                    if bool(valid.any()):
                        spatial = self.net.combine(maps, (y1 - y0, x1 - x0))[0, 0]
                        masked.append(float(spatial[valid].mean().item()))
        return plain, masked

    def __call__(self, sr: torch.Tensor) -> dict[str, dict[str, float]]:
        """Scores of one output.

        Args:
            sr: (3,H,W) in [0,1], the truth's size.

        Returns:
            ``{region: {"psnr": ..., "ssim": ..., "lpips": ..., "psnr_masked": ..., ...}}``.
        """
        if tuple(sr.shape[-2:]) != self.size:
            h, w = self.size
            raise ValueError(f"output is {sr.shape[-1]}x{sr.shape[-2]}, the truth {w}x{h}")
        a, b, m = to_uint8(sr), self.hr8, self.m
        out: dict[str, dict[str, float]] = {}
        for name, pieces in self.regions.items():
            scores: dict[str, float] = {}
            sums = [_mse_sum(a[y0:y1, x0:x1], b[y0:y1, x0:x1], None) for y0, y1, x0, x1 in pieces]
            scores["psnr"] = psnr_from_mse(sum(s for s, _ in sums) / sum(c for _, c in sums))
            if self.with_ssim:
                plain, masked = _ssim_pieces(a, b, pieces, m)
                if plain:
                    scores["ssim"] = float(np.mean(plain))
                if masked:
                    scores["ssim_masked"] = float(np.mean(masked))
            if self.net is not None:
                plain, masked = self._lpips(sr, pieces)
                if plain:
                    scores["lpips"] = float(np.mean(plain))
                if masked:
                    scores["lpips_masked"] = float(np.mean(masked))
            if m is not None:
                msums = [
                    _mse_sum(a[y0:y1, x0:x1], b[y0:y1, x0:x1], m[y0:y1, x0:x1, None].repeat(3, -1))
                    for y0, y1, x0, x1 in pieces
                ]
                count = sum(c for _, c in msums)
                if count > 0:
                    scores["psnr_masked"] = psnr_from_mse(sum(s for s, _ in msums) / count)
            out[name] = scores
        return out


def region_scores(
    sr: torch.Tensor,
    hr: torch.Tensor,
    box: tuple[int, int, int, int],
    *,
    mask: torch.Tensor | None = None,
    with_ssim: bool = True,
    lpips_net: LPIPS | None = None,
) -> dict[str, dict[str, float]]:
    """PSNR, SSIM and LPIPS of ``sr`` against ``hr`` on centre / corner / full: ``RegionScorer(hr, ...)(sr)``.

    See :class:`RegionScorer` for the arguments; ``sr`` and ``hr`` are (3,H,W) in [0,1].
    """
    return RegionScorer(hr, box, mask=mask, with_ssim=with_ssim, lpips_net=lpips_net)(sr)
