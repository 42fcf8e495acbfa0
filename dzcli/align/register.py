"""Registration of a tele photo inside its wide photo, and resampling of the tele onto the wide's grid.

Pixel coordinates are ``(x, y)`` with pixel centres at integers; an image ``W`` pixels wide covers
``[-0.5, W - 0.5]``. Resizing an image by ``s`` maps ``x`` to ``s·(x + 0.5) - 0.5`` (OpenCV's convention).

:func:`register` finds the homography from tele to uw pixels. Feature matching (SIFT + USAC_MAGSAC at
reduced resolution) comes first; where it finds too few matches (low-texture scenes: sky, bokeh, smooth
objects), a direct search takes over: the tele, shrunk to the uw's density, is located by normalised
cross-correlation of *locally normalised* images (insensitive to the two cameras' gains and gammas), at
the EXIF ratio near the uw's centre, then over all plausible ratios anywhere. Every candidate is refined
by fitting the homography to dense DIS optical-flow correspondences (an affine map unless perspective
clearly fits better); those from weak feature matches or the direct search are also refined by ECC and a
final hill climb on the correlation, with the tele's tones first matched to the uw's. A registration is
accepted by photometric evidence only: the correlation of the warped tele with the uw over its footprint
must exceed what unrelated photos reach for a footprint of that size. :func:`register_chained` finds the tele
of a triple capture through its middle camera (tele in the middle camera, the middle camera in the uw, the
two homographies composed), for ratios too large for the direct match. :func:`align_pair`
cuts the uw crop ``lr`` inside the tele's footprint and resamples the tele onto ``lr``'s grid at ``scale``×
density (homography + residual flow in one remap), with a forward/backward validity mask.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from dzcli.errors import AlignmentError, TeleNotFoundError
from dzcli.io.images import from_hwc, to_hwc

log = logging.getLogger(__name__)

MATCH_SIDE = 1024
"""Longest side (px) of the uw region used for feature matching."""
REFINE_SIDE = 1536
"""Longest side (px) of the tele grid used for the dense refinement."""
REFINE_DENSITY = 2.0
"""Largest density (grid px per uw px) of the refinement grid."""
MIN_DENSITY = 1.05
"""Below this many tele pixels per uw pixel the tele is not a zoomed view."""
MAX_ANISOTROPY = 1.5
"""Largest ratio of the homography's local scales along two directions (stretch)."""
MAX_SCALE_CHANGE = 2.0
"""Largest ratio of the homography's local area scale between two points of the tele (perspective)."""
MIN_INSIDE = 0.5
"""Smallest fraction of the tele's footprint that must lie inside the uw."""
MIN_BOX = 32
"""Smallest side (uw px) of the ``lr`` box."""
FLOW_SCALE = 2
"""Most grid pixels per uw pixel the residual flow of :func:`align_pair` is computed at; denser references
get it resampled. The bicubic uw holds no finer detail to align to, and at 6× DIS's patches see a sixth of
the scene and the 1-px consistency test asks for 1/6 uw px: on the simulated ×5.9 captures of
``benchmarks/quality.py`` it kept 4–34 % of the tele at 6× against 35–100 % at 2×, and the flow from 2× keeps
the same share at 6× (``prepare --scale 4`` and the paste of :mod:`dzcli.infer.paste` align at 4× and 6×)."""
REFINE_ROUNDS = 2
"""Dense refinement passes (the second one starts from an almost exact homography)."""
WINDOW_PAD = 32
"""Extra uw pixels on each side of a matching window."""
ROUGH_MIN_INLIERS = 8
"""Fewest inliers of a whole-image match to look again around the footprint it found."""
BOX_MARGIN = 2.0
"""Safety margin (uw px) between the ``lr`` box and the edge of the tele's footprint."""
AFFINE_TOLERANCE = 1.05
"""The dense refinement keeps an affine model unless a full homography fits its correspondences this much
better (RMS residual ratio): across a tele's narrow field of view the perspective terms are tiny and poorly
constrained, and fitting them to correspondences bunched on one side skews the local scale."""
DIRECT_SIDE = 160
"""Longer side (px) of the tele's footprint in the direct search's coarse images (with a zoom-ratio hint)."""
FREE_SIDE = 512
"""Longer side (px) of the uw in the direct search over all ratios (no hint)."""
FREE_DENSITIES = (1.0, 10.0, 1.04)
"""Densities tried without a zoom-ratio hint: from, to, and the factor between two of them."""
HINT_SPAN = (-2, 2, 0.0125)
"""Densities tried around a zoom-ratio hint: ``hint · (1 + k · step)`` for ``k`` in ``[lo, hi]`` (EXIF focal
lengths are nominal; lenses differ from them by a percent or two)."""
CENTRE_REACH = 0.1
"""With a zoom-ratio hint, the tele's centre is first looked for within this fraction of the uw's size of the
uw's centre (phone optical axes are a few percent apart); then anywhere."""
DIRECT_KEEP = 3
"""Best distinct locations of the direct search refined and checked."""
NORM_SIGMA = 1.5
"""Gaussian σ (px) of the local normalisation, at the search and evidence resolutions."""
NORM_EPS = 0.012
"""Floor of the local contrast (luma in [0, 1], about 3 grey levels): flat areas, their noise and JPEG blocks
are not amplified into texture."""
ECC_SIDES = (256, 768)
"""Footprint sides (px) of the ECC refinement's levels, coarse to fine (never above the uw's own)."""
ECC_ITERATIONS = 100
"""Most ECC iterations per level."""
ECC_BLUR = 9
"""Gaussian kernel (px) ECC smooths both images with (it needs gradients, the normalised images are noisy)."""
TONE_LEVELS = 65
"""Quantiles of the tone matching between the two photos before they are compared."""
CLIMB_STEPS = (0.5, 0.004, 0.002)
"""First steps of the final hill climb: shift (px at the finest ECC level), log scale, rotation (rad)."""
CLIMB_FINEST = 1 / 32
"""The hill climb stops when its shift step falls below this (px at the finest ECC level)."""
EVIDENCE_SIDE = 256
"""Longer side (px) of the tele's footprint where the evidence is measured (never above the uw's own)."""
MIN_CORRELATION = 0.15
"""Least correlation of the warped tele with the uw (locally normalised luma) to accept a registration."""
EVIDENCE_Z = 3.5
"""... and at least this many standard deviations of chance correlation: unrelated photos correlate about
``1/sqrt(n)`` over ``n`` independent samples, ``n`` counting only the samples that carry the images' structure
(:func:`_participation`), at the normalisation's correlation area. Measured on every wide photo of the 14
project photos with every other photo's tele (2 × 182 pairs, at ×2 and ×5.9, search and polish included):
none accepted, the closest at 0.86 of its threshold (``benchmarks/README.md``)."""


@contextmanager
def _cv_threads() -> Iterator[None]:
    """Run OpenCV with as many threads as torch (so data-loader workers do not oversubscribe)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(max(1, torch.get_num_threads()))
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _gray(img: Tensor) -> np.ndarray:
    """``(3, H, W)`` RGB in [0, 1] → ``(H, W)`` float32 luma (Rec. 601 weights)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
    return torch.einsum("c,chw->hw", weights, img.detach().cpu().float()).numpy()


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _scaling(sx: float, sy: float) -> np.ndarray:
    """Homography taking pixel coordinates of an image to those of the image resized by ``(sx, sy)``."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _resize(a: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Area-resize ``a`` by about ``scale``; returns the image and the exact coordinate map (3×3)."""
    h, w = a.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        return a, np.eye(3)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(a, (nw, nh), interpolation=interp), _scaling(nw / w, nh / h)


def _apply(h: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply homography ``h`` to coordinate arrays ``x``, ``y`` (any shape)."""
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w


def _jacobian(h: np.ndarray, x: float, y: float) -> np.ndarray:
    """2×2 Jacobian of homography ``h`` at ``(x, y)``."""
    w = float(h[2, 0] * x + h[2, 1] * y + h[2, 2])
    u, v = _point(h, x, y)
    jac: np.ndarray = np.array(
        [
            [h[0, 0] - u * h[2, 0], h[0, 1] - u * h[2, 1]],
            [h[1, 0] - v * h[2, 0], h[1, 1] - v * h[2, 1]],
        ]
    )
    return jac / w


def _point(h: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Apply homography ``h`` to one point."""
    u, v = _apply(h, np.array(x, dtype=np.float64), np.array(y, dtype=np.float64))
    return float(u), float(v)


def _corners(w: int, h: int) -> np.ndarray:
    """The four outer corners (4, 2) of a ``w``×``h`` image, clockwise on screen from top-left."""
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def _footprint(h: np.ndarray, tele_wh: tuple[int, int]) -> np.ndarray:
    """The tele's outline in uw coordinates, (4, 2) float64."""
    c = _corners(*tele_wh)
    x, y = _apply(h, c[:, 0], c[:, 1])
    return np.stack([x, y], axis=1)


@dataclass(frozen=True, eq=False)
class Registration:
    """Where the tele lies in the uw.

    Attributes:
        homography: ``(3, 3)`` float64, maps tele pixel coordinates to uw pixel coordinates.
        inliers: feature matches consistent with the homography.
        matches: feature matches that passed the ratio test.
        density: tele pixels per uw pixel at the tele's centre.
        zoom_ratio: field-of-view ratio per side, ``density · W_uw / W_tele``.
        center: tele centre in uw pixels ``(x, y)``.
        rotation_deg: rotation of the tele's axes in the uw frame (y down: positive is clockwise on screen).
        method: how the tele was found: ``features`` (SIFT), ``direct`` (correlation search) or ``chained``
            (through the middle camera of a triple capture, :func:`register_chained`).
        correlation: the photometric evidence: correlation of the warped tele with the uw over its
            footprint (locally normalised luma, in [-1, 1]).
    """

    homography: np.ndarray
    inliers: int
    matches: int
    density: float
    zoom_ratio: float
    center: tuple[float, float]
    rotation_deg: float
    method: str = "features"
    correlation: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "homography": [[float(v) for v in row] for row in self.homography],
            "inliers": self.inliers,
            "matches": self.matches,
            "density": self.density,
            "ratio": self.zoom_ratio,
            "center": [self.center[0], self.center[1]],
            "rotation_deg": self.rotation_deg,
            "method": self.method,
            "correlation": self.correlation,
        }


def _describe(
    h: np.ndarray,
    uw_wh: tuple[int, int],
    tele_wh: tuple[int, int],
    inliers: int = 0,
    matches: int = 0,
    method: str = "features",
    correlation: float = float("nan"),
) -> Registration:
    cx, cy = (tele_wh[0] - 1) / 2.0, (tele_wh[1] - 1) / 2.0
    jac = _jacobian(h, cx, cy)
    density = 1.0 / math.sqrt(abs(float(np.linalg.det(jac))))
    center = _point(h, cx, cy)
    rotation = math.degrees(math.atan2(jac[1, 0] - jac[0, 1], jac[0, 0] + jac[1, 1]))
    return Registration(
        homography=h,
        inliers=inliers,
        matches=matches,
        density=density,
        zoom_ratio=density * uw_wh[0] / tele_wh[0],
        center=center,
        rotation_deg=rotation,
        method=method,
        correlation=correlation,
    )


def _plausible(h: np.ndarray | None, tele_wh: tuple[int, int]) -> bool:
    """A homography dual cameras can produce: finite, orientation-preserving, convex, near-similar."""
    if h is None or not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return False
    c = _corners(*tele_wh)
    if np.any(h[2, 0] * c[:, 0] + h[2, 1] * c[:, 1] + h[2, 2] <= 0):
        return False
    quad = _footprint(h, tele_wh)
    edges = np.roll(quad, -1, axis=0) - quad
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    if np.any(turns <= 0):  # mirrored or not convex
        return False
    dets, anis = [], []
    for x, y in np.vstack([c, [[(tele_wh[0] - 1) / 2.0, (tele_wh[1] - 1) / 2.0]]]):
        sv = np.linalg.svd(_jacobian(h, x, y), compute_uv=False)
        dets.append(sv[0] * sv[1])
        anis.append(sv[0] / max(sv[1], 1e-12))
    return bool(max(anis) < MAX_ANISOTROPY and max(dets) / min(dets) < MAX_SCALE_CHANGE)


def _sift(gray8: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    sift = cv2.SIFT.create(nfeatures=n, enable_precise_upscale=True)
    kps, desc = sift.detectAndCompute(gray8, None)
    pts = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
    return pts, desc


@dataclass(frozen=True)
class _Match:
    homography: np.ndarray | None
    inliers: int
    matches: int


def _match(
    uw_gray: np.ndarray,
    tele_gray: np.ndarray,
    window: tuple[int, int, int, int],
    tele_scale: float,
) -> _Match:
    """SIFT + ratio test + USAC_MAGSAC between a uw window and the whole tele, at reduced resolution.

    Args:
        uw_gray: full uw luma (H, W) float32.
        tele_gray: full tele luma float32.
        window: uw region ``(x0, y0, x1, y1)`` (exclusive end) to match in.
        tele_scale: resize factor of the tele relative to that of the uw window.

    Returns:
        The homography (full-resolution tele → uw coordinates, or None) and match counts.
    """
    x0, y0, x1, y1 = window
    crop = uw_gray[y0:y1, x0:x1]
    su = min(1.0, MATCH_SIDE / max(crop.shape))
    st = min(1.0, su * tele_scale, MATCH_SIDE / max(tele_gray.shape))
    uw_small, to_uw = _resize(crop, su)
    tele_small, to_tele = _resize(tele_gray, st)
    pu, du = _sift(_u8(uw_small), 8000)
    pt, dt = _sift(_u8(tele_small), 4000)
    if du is None or dt is None or len(pu) < 4 or len(pt) < 4:
        return _Match(None, 0, 0)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dt, du, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 4:
        return _Match(None, 0, len(good))
    src = pt[[m.queryIdx for m in good]]
    dst = pu[[m.trainIdx for m in good]]
    h_small, inl = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, ransacReprojThreshold=2.0, maxIters=10000, confidence=0.9999
    )
    if h_small is None:
        return _Match(None, 0, len(good))
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    h = shift @ np.linalg.inv(to_uw) @ h_small @ to_tele
    return _Match(h / h[2, 2], int(inl.sum()), len(good))


def _flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS-medium flows between same-size 8-bit grayscale images, both ways.

    Returns:
        ``F`` and ``B``, ``(H, W, 2)`` float32 pixels: ``a(x) ≈ b(x + F(x))`` and ``b(y) ≈ a(y + B(y))``.
    """
    dis = cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_MEDIUM)
    fwd = np.zeros((*a.shape, 2), dtype=np.float32)
    bwd = np.zeros_like(fwd)
    dis.calc(a, b, fwd)
    dis.calc(b, a, bwd)
    return fwd, bwd


def _fb_error(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """``|F(x) + B(x + F(x))|`` per pixel, for flows ``(H, W, 2)``."""
    hh, ww = fwd.shape[:2]
    gx, gy = np.meshgrid(np.arange(ww, dtype=np.float32), np.arange(hh, dtype=np.float32))
    back = cv2.remap(
        bwd, gx + fwd[..., 0], gy + fwd[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    err: np.ndarray = np.linalg.norm(fwd + back, axis=2)
    return err


def _refine(uw: _Luma, tele: _Luma, h: np.ndarray) -> tuple[np.ndarray, int]:
    """Fit the homography to dense DIS correspondences between the tele and the uw resampled onto it.

    Returns:
        The refined homography (tele → uw) and the number of correspondences it was fitted on
        (0 when too few: then ``h`` is returned unchanged).
    """
    tw, th = tele.wh
    density = _density_of(h, tele.wh)
    grid, to_grid = tele.at(min(1.0, REFINE_DENSITY / density, REFINE_SIDE / max(tw, th)))
    su = min(1.0, density * to_grid[0, 0])
    uw_small, to_uw = uw.at(su)
    gh, gw = grid.shape
    px, py = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))
    grid_to_uw = to_uw @ h @ np.linalg.inv(to_grid)
    mx, my = _apply(grid_to_uw, px, py)
    mx, my = mx.astype(np.float32), my.astype(np.float32)
    warped = cv2.remap(uw_small, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    uh, uw_w = uw_small.shape
    inside = (mx >= 2) & (my >= 2) & (mx <= uw_w - 3) & (my <= uh - 3)
    fwd, bwd = _flows(_u8(_match_tones(grid, warped[inside])), _u8(warped))
    texture = cv2.cornerMinEigenVal(grid, 5)
    textured = texture > max(1e-6, float(np.percentile(texture[inside], 60))) if inside.any() else inside
    ok = inside & textured & (_fb_error(fwd, bwd) < 0.5)
    step = max(1, int(math.sqrt(gh * gw / 40000)))
    sel = np.zeros_like(ok)
    sel[::step, ::step] = True
    ok &= sel
    n = int(ok.sum())
    if n < 100:
        return h, 0
    grid_to_tele = np.linalg.inv(to_grid)
    tx, ty = _apply(grid_to_tele, px[ok], py[ok])
    qx, qy = _apply(grid_to_tele, px[ok] + fwd[ok][:, 0], py[ok] + fwd[ok][:, 1])
    ux, uy = _apply(h, qx, qy)
    src = np.stack([tx, ty], axis=1)
    dst = np.stack([ux, uy], axis=1)
    refined, inl = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, ransacReprojThreshold=0.5 / su, maxIters=2000, confidence=0.999
    )
    if refined is None:
        return h, 0
    keep = inl.ravel().astype(bool)
    return _prefer_affine(src[keep], dst[keep], refined / refined[2, 2]), int(keep.sum())


def _prefer_affine(src: np.ndarray, dst: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The least-squares affine map of ``src`` → ``dst`` (N, 2) unless homography ``h`` fits clearly better.

    See :data:`AFFINE_TOLERANCE`.
    """
    if len(src) < 6:
        return h
    design = np.hstack([src, np.ones((len(src), 1))])
    coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
    affine = np.vstack([coef.T, [0.0, 0.0, 1.0]])
    px, py = _apply(h, src[:, 0], src[:, 1])
    rms_h = math.sqrt(float(np.mean((px - dst[:, 0]) ** 2 + (py - dst[:, 1]) ** 2)))
    rms_a = math.sqrt(float(np.mean(np.sum((design @ coef - dst) ** 2, axis=1))))
    return affine if rms_a <= AFFINE_TOLERANCE * rms_h + 1e-9 else h


def _window_around(
    uw_wh: tuple[int, int], tele_wh: tuple[int, int], center: tuple[float, float], density: float
) -> tuple[int, int, int, int]:
    """The uw region ``(x0, y0, x1, y1)``: twice the tele's expected footprint plus a margin at ``center``."""
    half_w = tele_wh[0] / density + WINDOW_PAD
    half_h = tele_wh[1] / density + WINDOW_PAD
    x0, y0 = max(0, math.floor(center[0] - half_w)), max(0, math.floor(center[1] - half_h))
    x1, y1 = min(uw_wh[0], math.ceil(center[0] + half_w)), min(uw_wh[1], math.ceil(center[1] + half_h))
    return int(x0), int(y0), int(x1), int(y1)


def _feature_attempts(
    uw_gray: np.ndarray, tele_gray: np.ndarray, zoom_ratio_hint: float | None, min_inliers: int
) -> list[_Match]:
    """Feature matching, from the cheapest attempt to the most thorough, until one is good enough.

    1. With a zoom-ratio hint: the tele at the uw's density against a window twice its size around the uw centre.
    2. Otherwise, or if that failed: the whole tele against the whole uw (SIFT is scale invariant).
    3. If that found the tele with few matches (at a coarse scale): (1) again, around where it was found.
    """
    uw_wh = (uw_gray.shape[1], uw_gray.shape[0])
    tele_wh = (tele_gray.shape[1], tele_gray.shape[0])
    attempts: list[_Match] = []
    if zoom_ratio_hint is not None and zoom_ratio_hint > 0:
        density = zoom_ratio_hint * tele_wh[0] / uw_wh[0]
        centre = ((uw_wh[0] - 1) / 2.0, (uw_wh[1] - 1) / 2.0)
        attempts.append(
            _match(uw_gray, tele_gray, _window_around(uw_wh, tele_wh, centre, density), 1 / density)
        )
        if attempts[-1].inliers >= min_inliers and _plausible(attempts[-1].homography, tele_wh):
            return attempts
    rough = _match(uw_gray, tele_gray, (0, 0, uw_wh[0], uw_wh[1]), 1.0)
    attempts.append(rough)
    if (
        rough.homography is None
        or rough.inliers < ROUGH_MIN_INLIERS
        or not _plausible(rough.homography, tele_wh)
    ):
        return attempts
    est = _describe(rough.homography, uw_wh, tele_wh, rough.inliers, rough.matches)
    if est.density >= MIN_DENSITY and rough.inliers < 4 * min_inliers:
        window = _window_around(uw_wh, tele_wh, est.center, est.density)
        attempts.append(_match(uw_gray, tele_gray, window, 1 / est.density))
    return attempts


def _density_of(h: np.ndarray, tele_wh: tuple[int, int]) -> float:
    """Tele pixels per uw pixel at the tele's centre."""
    jac = _jacobian(h, (tele_wh[0] - 1) / 2.0, (tele_wh[1] - 1) / 2.0)
    return 1.0 / math.sqrt(max(abs(float(np.linalg.det(jac))), 1e-12))


def _normalised(a: np.ndarray) -> np.ndarray:
    """Locally normalised luma: ``(a - μ) / (σ + ε)`` with Gaussian-window mean and deviation.

    Insensitive to the gain, offset and (locally) gamma of either camera; flat areas stay near 0.
    """
    mean = cv2.GaussianBlur(a, (0, 0), NORM_SIGMA)
    d = a - mean
    dev = np.sqrt(cv2.GaussianBlur(d * d, (0, 0), NORM_SIGMA))
    out: np.ndarray = (d / (dev + NORM_EPS)).astype(np.float32)
    return out


class _Luma:
    """A photo's luma, ``(H, W)`` float32 in [0, 1], with its smaller versions made once per scale.

    Scales are rounded to 1/16 of an octave, so that the many nearby requests of one registration (a level
    per candidate) share their images.
    """

    def __init__(self, full: np.ndarray) -> None:
        self.full = full
        self._levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._normalised: dict[int, np.ndarray] = {}

    @property
    def wh(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.full.shape[1], self.full.shape[0]

    @staticmethod
    def _key(scale: float) -> int:
        return 0 if scale >= 1.0 else round(math.log2(scale) * 16)

    def at(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """The luma resized by about ``scale`` (never enlarged) and the exact coordinate map into it."""
        key = self._key(scale)
        if key not in self._levels:
            self._levels[key] = _resize(self.full, 2.0 ** (key / 16))
        return self._levels[key]

    def normalised_at(self, scale: float) -> np.ndarray:
        """:func:`_normalised` of :meth:`at` ``(scale)``."""
        key = self._key(scale)
        if key not in self._normalised:
            self._normalised[key] = _normalised(self.at(scale)[0])
        return self._normalised[key]


def _subpixel(res: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """Parabolic sub-pixel offset of the peak of ``res`` at ``(x, y)``."""

    def offset(lo: float, mid: float, hi: float) -> float:
        curve = lo - 2 * mid + hi
        return 0.5 * (lo - hi) / curve if curve < 0 else 0.0

    dx = offset(res[y, x - 1], res[y, x], res[y, x + 1]) if 0 < x < res.shape[1] - 1 else 0.0
    dy = offset(res[y - 1, x], res[y, x], res[y + 1, x]) if 0 < y < res.shape[0] - 1 else 0.0
    return dx, dy


@dataclass(frozen=True)
class _Found:
    homography: np.ndarray
    score: float


def _locate(
    uw: _Luma,
    tele: _Luma,
    densities: list[float],
    uw_scale: float,
    reach: float | None = None,
) -> list[_Found]:
    """Direct search: the tele shrunk to each density, slid over the uw by normalised cross-correlation.

    Args:
        uw: uw luma.
        tele: tele luma.
        densities: tele pixels per uw pixel to try.
        uw_scale: resize factor of the uw for the search (``<= 1``).
        reach: when given, only positions whose tele centre lies within ``reach`` (a fraction of the uw's
            width and height) of the uw's centre.

    Returns:
        The :data:`DIRECT_KEEP` best distinct translations (tele → uw homographies), best first.
    """
    _, to_uw = uw.at(uw_scale)
    a = uw.normalised_at(uw_scale)
    ah, aw = a.shape
    base, to_base = tele.at(uw_scale / min(densities))  # each density is resized from this, not the full tele
    found: list[_Found] = []
    for d in densities:
        tele_small, base_to_small = _resize(base, uw_scale / d / to_base[0, 0])
        to_tele = base_to_small @ to_base
        th, tw = tele_small.shape
        pad = max(th, tw) // 4
        if min(th, tw) < 8 or th > ah + 2 * pad or tw > aw + 2 * pad:
            continue
        padded = cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0)
        res = cv2.matchTemplate(padded, _normalised(tele_small), cv2.TM_CCOEFF_NORMED)
        if reach is not None:
            # position (x, y) puts the tele's centre at (x - pad + (tw - 1) / 2, ...) in the small uw
            xs = np.arange(res.shape[1]) - pad + (tw - 1) / 2.0 - (aw - 1) / 2.0
            ys = np.arange(res.shape[0]) - pad + (th - 1) / 2.0 - (ah - 1) / 2.0
            res[np.abs(ys) > reach * ah, :] = -1.0
            res[:, np.abs(xs) > reach * aw] = -1.0
        _, score, _, (x, y) = cv2.minMaxLoc(res)
        dx, dy = _subpixel(res, x, y)
        shift = np.array([[1.0, 0.0, x + dx - pad], [0.0, 1.0, y + dy - pad], [0.0, 0.0, 1.0]])
        h = np.linalg.inv(to_uw) @ shift @ to_tele
        found.append(_Found(h / h[2, 2], float(score)))
    found.sort(key=lambda f: f.score, reverse=True)
    tele_wh = tele.wh
    distinct: list[_Found] = []
    for f in found:
        c = _point(f.homography, (tele_wh[0] - 1) / 2.0, (tele_wh[1] - 1) / 2.0)
        near = any(
            math.dist(c, _point(g.homography, (tele_wh[0] - 1) / 2.0, (tele_wh[1] - 1) / 2.0))
            < 0.1 * tele_wh[0] / _density_of(g.homography, tele_wh)
            for g in distinct
        )
        if not near:
            distinct.append(f)
        if len(distinct) == DIRECT_KEEP:
            break
    return distinct


def _direct_stages(uw: _Luma, tele: _Luma, hint_density: float | None) -> Iterator[list[np.ndarray]]:
    """Direct-search candidates, cheapest stage first: near the hinted ratio and the uw's centre, then
    every plausible ratio anywhere in the uw."""
    if hint_density is not None and hint_density >= MIN_DENSITY:
        scale = min(1.0, DIRECT_SIDE * hint_density / max(tele.wh))
        lo, hi, step = HINT_SPAN
        densities = [hint_density * (1 + k * step) for k in range(lo, hi + 1)]
        yield [f.homography for f in _locate(uw, tele, densities, scale, reach=CENTRE_REACH)]
    first, last, factor = FREE_DENSITIES
    n = int(math.log(last / first) / math.log(factor)) + 1
    densities = [first * factor**k for k in range(n)]
    scale = min(1.0, FREE_SIDE / max(uw.wh))
    yield [f.homography for f in _locate(uw, tele, densities, scale)]


@dataclass(frozen=True)
class _Evidence:
    """Correlation of the warped tele with the uw over its footprint, the least one to accept, and the
    standard deviation of the correlation unrelated photos reach over that footprint (``chance``)."""

    correlation: float
    required: float
    chance: float = 1.0

    @property
    def ok(self) -> bool:
        return self.correlation >= self.required


def _pyramid_level(
    uw: _Luma, tele: _Luma, h: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both photos, locally normalised, at the resolution where the tele's footprint is about ``side`` px
    (never above the uw's own, and the tele never enlarged).

    Returns:
        ``(uw_small, tele_small, to_uw, to_tele)``: the images and the coordinate maps into them.
    """
    density = _density_of(h, tele.wh)
    scale = min(1.0, side * density / max(tele.wh))
    uw_small, to_uw = uw.at(scale)
    tele_small, to_tele = tele.at(scale / density)
    size = (uw_small.shape[1], uw_small.shape[0])
    warp = to_uw @ h @ np.linalg.inv(to_tele)
    cover = cv2.warpPerspective(np.ones_like(tele_small), warp, size, flags=cv2.INTER_NEAREST) > 0.5
    return uw.normalised_at(scale), _normalised(_match_tones(tele_small, uw_small[cover])), to_uw, to_tele


def _match_tones(a: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a`` through the monotone curve that gives its values the distribution of ``target``'s.

    The two cameras' tone curves differ (gains, gammas): through a non-linear curve a blurred edge moves,
    blobs grow or shrink, and registration would read that as a change of scale. Matching the tones first
    removes that bias.
    """
    if target.size < 64:
        return a
    levels = np.linspace(0.0, 100.0, TONE_LEVELS)
    step = max(1, a.size // 200_000)
    src = np.percentile(a.ravel()[::step], levels)
    dst = np.percentile(target.ravel()[:: max(1, target.size // 200_000)], levels)
    src = np.maximum.accumulate(src + np.arange(TONE_LEVELS) * 1e-7)  # strictly increasing for interp
    out: np.ndarray = np.interp(a, src, dst).astype(np.float32)
    return out


def _ecc(uw: _Luma, tele: _Luma, h: np.ndarray) -> np.ndarray | None:
    """Affine ECC (``cv2.findTransformECC``) on locally normalised images, coarse to fine
    (:data:`ECC_SIDES`): the homography that maximises the correlation, or None when ECC diverges."""
    for side in ECC_SIDES:
        a, t, to_uw, to_tele = _pyramid_level(uw, tele, h, side)
        warp = to_uw @ h @ np.linalg.inv(to_tele)
        warp = (warp / warp[2, 2])[:2].astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, 1e-6)
        try:
            _, warp = cv2.findTransformECC(  # type: ignore[call-overload]  # None: no mask (not in the stubs)
                t, a, warp, cv2.MOTION_AFFINE, criteria, None, ECC_BLUR
            )
        except cv2.error:  # "iterations do not converge": no usable gradient
            return None
        full = np.eye(3)
        full[:2] = warp
        h = np.linalg.inv(to_uw) @ full @ to_tele
        h = h / h[2, 2]
    return h


def _evidence(uw: _Luma, tele: _Luma, h: np.ndarray, side: int = EVIDENCE_SIDE) -> _Evidence:
    """The photometric check of a registration (see :data:`MIN_CORRELATION`, :data:`EVIDENCE_Z`).

    Both photos are brought to a resolution where the footprint is about ``side`` px (never above the uw's
    own), locally normalised, and the tele warped onto the uw by ``h``; the correlation is taken over the
    footprint, away from its edges.
    """
    a, t, to_uw, to_tele = _pyramid_level(uw, tele, h, side)
    warp = to_uw @ h @ np.linalg.inv(to_tele)
    size = (a.shape[1], a.shape[0])
    warped = cv2.warpPerspective(t, warp, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    cover = cv2.warpPerspective(np.ones_like(t), warp, size, flags=cv2.INTER_NEAREST, borderValue=0.0)
    k = 2 * math.ceil(2 * NORM_SIGMA) + 1
    inside = cv2.erode(cover, np.ones((k, k), np.uint8)) > 0.5
    n = int(inside.sum())
    if n < 64:
        return _Evidence(0.0, 1.0)
    x, y = a[inside].astype(np.float64), warped[inside].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    corr = float((x * y).sum() / math.sqrt(max((x * x).sum() * (y * y).sum(), 1e-20)))
    independent = min(n, _participation(x), _participation(y)) / (4 * math.pi * NORM_SIGMA**2)
    chance = 1.0 / math.sqrt(max(independent, 1.0))
    return _Evidence(corr, max(MIN_CORRELATION, EVIDENCE_Z * chance), chance)


def _participation(v: np.ndarray) -> float:
    """How many samples carry ``v``'s energy: ``3 (Σv²)² / Σv⁴`` (its length for Gaussian values; a few when a
    single edge in a flat image holds it all, and one edge aligned by chance must not count as a match)."""
    e = v * v
    return 3.0 * float(e.sum()) ** 2 / max(float((e * e).sum()), 1e-30)


@dataclass(frozen=True)
class _Candidate:
    homography: np.ndarray
    evidence: _Evidence
    method: str


def _settle(uw: _Luma, tele: _Luma, h: np.ndarray, method: str, *, polish: bool = True) -> _Candidate:
    """Refine a candidate and measure its evidence.

    The dense-flow refinement (:data:`REFINE_ROUNDS`) is accurate where the scene has texture. With
    ``polish`` (a candidate from weak feature matches or the direct search: little texture), ECC is run from
    the candidate and from its flow refinement too, the one of these that correlates best with the uw at
    :data:`ECC_SIDES`' finest resolution is kept (ECC's own results first among equals: they maximise that
    very correlation), and :func:`_climb` polishes it.
    """
    start = h
    for _ in range(REFINE_ROUNDS):
        h_new, n_dense = _refine(uw, tele, h)
        if n_dense == 0 or not _plausible(h_new, tele.wh):
            break
        h = h_new
    if polish:
        options = [e for e in (_ecc(uw, tele, x) for x in (start, h)) if e is not None]
        options = [o for o in options if _plausible(o, tele.wh)] + [h, start]
        scores = [_evidence(uw, tele, o, ECC_SIDES[-1]).correlation for o in options]
        h = next(o for o, v in zip(options, scores, strict=True) if v >= max(scores) - 1e-3)
        h = _climb(uw, tele, h)
    return _Candidate(h, _evidence(uw, tele, h), method)


def _climb(uw: _Luma, tele: _Luma, h: np.ndarray) -> np.ndarray:
    """Hill-climb the correlation of the warped tele with the uw (locally normalised, at the finest level of
    :data:`ECC_SIDES`) over small similarity changes of ``h``: shift, scale and rotation about the tele's
    centre, steps halving from :data:`CLIMB_STEPS` until the shift step is :data:`CLIMB_FINEST` px.

    Unblurred and over the exact footprint, this polishes what ECC (which needs blurred images) leaves.
    """
    a, t, to_uw, to_tele = _pyramid_level(uw, tele, h, ECC_SIDES[-1])
    w0 = to_uw @ h @ np.linalg.inv(to_tele)
    size = (a.shape[1], a.shape[0])
    cover = cv2.warpPerspective(np.ones_like(t), w0, size, flags=cv2.INTER_NEAREST, borderValue=0.0)
    k = 2 * math.ceil(2 * NORM_SIGMA + 2) + 1  # room for the moves
    inside = cv2.erode(cover, np.ones((k, k), np.uint8)) > 0.5
    ys, xs = np.nonzero(inside)
    if len(ys) < 64:
        return h
    x0, y0 = int(xs.min()), int(ys.min())
    inside = inside[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    box = (inside.shape[1], inside.shape[0])
    target = a[y0 : y0 + box[1], x0 : x0 + box[0]][inside].astype(np.float64)
    target -= target.mean()
    to_box = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    cx, cy = (t.shape[1] - 1) / 2.0, (t.shape[0] - 1) / 2.0

    def warp(p: np.ndarray) -> np.ndarray:
        c, s = math.cos(p[3]) * math.exp(p[2]), math.sin(p[3]) * math.exp(p[2])
        about = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]])
        return np.array([[1.0, 0.0, p[0]], [0.0, 1.0, p[1]], [0.0, 0.0, 1.0]]) @ w0 @ about

    def score(p: np.ndarray) -> float:
        moved = cv2.warpPerspective(t, to_box @ warp(p), box, flags=cv2.INTER_LINEAR, borderValue=0.0)
        y = moved[inside].astype(np.float64)
        y -= y.mean()
        return float((target * y).sum() / math.sqrt(max((target * target).sum() * (y * y).sum(), 1e-20)))

    p, best = np.zeros(4), score(np.zeros(4))
    steps = np.array([CLIMB_STEPS[0], CLIMB_STEPS[0], CLIMB_STEPS[1], CLIMB_STEPS[2]])
    while steps[0] >= CLIMB_FINEST:
        moved = False
        for i in range(4):
            for sign in (1.0, -1.0):
                q = p.copy()
                q[i] += sign * steps[i]
                v = score(q)
                if v > best:
                    p, best, moved = q, v, True
        if not moved:
            steps /= 2
    out = np.linalg.inv(to_uw) @ warp(p) @ to_tele
    return out / out[2, 2]


def _direct(uw: _Luma, tele: _Luma, hint_density: float | None, tried: list[_Candidate]) -> _Candidate | None:
    """The direct search, stage after stage until one has an accepted candidate: the best of that stage.

    Every candidate (accepted or not) is appended to ``tried``.
    """
    for stage in _direct_stages(uw, tele, hint_density):
        settled = [_settle(uw, tele, h, "direct") for h in stage if _plausible(h, tele.wh)]
        tried += settled
        good = [c for c in settled if c.evidence.ok]
        if good:
            return max(good, key=lambda c: c.evidence.correlation)
    return None


def register(
    uw: Tensor,
    tele: Tensor,
    *,
    zoom_ratio_hint: float | None = None,
    uw_name: str = "uw",
    tele_name: str = "tele",
    min_inliers: int = 30,
) -> Registration:
    """Find where the tele lies in the uw (no assumption that it is centred).

    Feature matching first; with fewer than ``min_inliers`` consistent matches, the direct search (see the
    module docstring). The result is accepted by its photometric evidence, whichever way it was found.

    Args:
        uw: ``(3, Hu, Wu)`` float32 RGB in [0, 1], the short-focus photo.
        tele: ``(3, Ht, Wt)`` float32 RGB in [0, 1], the long-focus photo.
        zoom_ratio_hint: expected zoom ratio (field of view, e.g. from EXIF); speeds the search up, never
            required.
        uw_name: how to call the uw in error messages (its file name).
        tele_name: how to call the tele in error messages.
        min_inliers: feature matches consistent with one homography that make the direct search unnecessary.

    Returns:
        The registration, accurate to a fraction of a uw pixel.

    Raises:
        TeleNotFoundError: no overlap, implausible geometry, tele mostly outside the uw.
        AlignmentError: the tele is not narrower than the uw (photos swapped, the same photo twice).
    """
    t_start = time.perf_counter()
    uw_wh = (int(uw.shape[2]), int(uw.shape[1]))
    tele_wh = (int(tele.shape[2]), int(tele.shape[1]))
    uw_luma, tele_luma = _Luma(_gray(uw)), _Luma(_gray(tele))
    hint_density = (
        zoom_ratio_hint * tele_wh[0] / uw_wh[0]
        if zoom_ratio_hint is not None and zoom_ratio_hint > 0
        else None
    )
    tried: list[_Candidate] = []
    with _cv_threads():
        attempts = _feature_attempts(uw_luma.full, tele_luma.full, zoom_ratio_hint, min_inliers)
        usable = [a for a in attempts if _plausible(a.homography, tele_wh)]
        best = max(usable, key=lambda a: a.inliers, default=None)
        implausible = best is None and max((a.inliers for a in attempts), default=0) >= min_inliers
        found: _Candidate | None = None
        if best is not None and best.homography is not None and best.inliers >= ROUGH_MIN_INLIERS:
            if best.inliers >= min_inliers:
                _check_geometry(best.homography, uw_wh, tele_wh, uw_name, tele_name)
            strong = best.inliers >= min_inliers
            tried.append(_settle(uw_luma, tele_luma, best.homography, "features", polish=not strong))
            found = tried[-1] if strong and tried[-1].evidence.ok else None
        if found is None:  # few feature matches: the direct search too, and the best of all candidates
            _direct(uw_luma, tele_luma, hint_density, tried)
            found = max(
                (c for c in tried if c.evidence.ok), key=lambda c: c.evidence.correlation, default=None
            )
        if found is None:
            if implausible:
                raise TeleNotFoundError(
                    f"implausible geometry between {uw_name} and {tele_name} (mirrored or strongly "
                    "distorted footprint); check that both photos show the same scene"
                )
            _refuse_swapped(uw_luma, tele_luma, hint_density, uw_name, tele_name, tried)
            closest = max(tried, key=lambda c: c.evidence.correlation - c.evidence.required, default=None)
            n = max((a.inliers for a in attempts), default=0)
            detail = (
                f"correlation {closest.evidence.correlation:.2f} over the tele's footprint at best, "
                f"need {closest.evidence.required:.2f}; "
                if closest is not None
                else ""
            )
            raise TeleNotFoundError(
                f"no overlap found between {uw_name} and {tele_name} ({detail}{n} feature matches)"
            )
        _check_geometry(found.homography, uw_wh, tele_wh, uw_name, tele_name)
    inliers, matches = (best.inliers, best.matches) if best is not None else (0, 0)
    reg = _describe(
        found.homography, uw_wh, tele_wh, inliers, matches, found.method, found.evidence.correlation
    )
    log.info(
        "registered %s in %s (%s): ratio %.4f, centre (%.1f, %.1f), rotation %.2f°, %d/%d inliers, "
        "correlation %.2f (need %.2f), %.2f s",
        tele_name,
        uw_name,
        reg.method,
        reg.zoom_ratio,
        reg.center[0],
        reg.center[1],
        reg.rotation_deg,
        reg.inliers,
        reg.matches,
        found.evidence.correlation,
        found.evidence.required,
        time.perf_counter() - t_start,
    )
    return reg


def register_chained(
    uw: Tensor,
    mid: Tensor,
    tele: Tensor,
    *,
    zoom_ratio_hint: float | None = None,
    mid_zoom_ratio_hint: float | None = None,
    mid_registration: Registration | None = None,
    uw_name: str = "uw",
    mid_name: str = "mid",
    tele_name: str = "tele",
) -> Registration:
    """Find where the tele lies in the uw through the middle camera of a triple capture.

    For a large uw-to-tele ratio the tele's footprint in the uw is small, and the detail the tele shows may
    be finer than the uw resolves: the direct match is then too weak to be accepted. The middle camera is
    close enough to both: the tele is registered in it (``register(mid, tele)``), it is registered in the uw
    (``register(uw, mid)``), and the two homographies are composed (tele → mid → uw). Each link is accepted
    by its own photometric evidence, and the composed footprint must lie inside the uw and be narrower than
    it. The composed homography is polished on the uw and the tele as a direct candidate would be (dense
    flow, ECC, hill climb; :func:`_settle`) only when that raises their correlation by more than chance
    could (one standard deviation of the correlation of unrelated photos over the footprint): where the
    direct match is weak, maximising it fits noise, and each link, measured over a larger footprint, is
    the more accurate.

    Args:
        uw: ``(3, Hu, Wu)`` float32 RGB in [0, 1], the ultra-wide photo.
        mid: ``(3, Hm, Wm)``, the middle camera's photo (narrower than the uw, wider than the tele).
        tele: ``(3, Ht, Wt)``, the tele photo.
        zoom_ratio_hint: expected uw-to-tele zoom ratio (field of view), e.g. from EXIF.
        mid_zoom_ratio_hint: expected uw-to-mid zoom ratio; with ``zoom_ratio_hint`` it gives the mid-to-tele
            hint (field-of-view ratios multiply). Without it, ``zoom_ratio_hint`` divided by the registered
            mid-to-tele ratio.
        mid_registration: ``register(uw, mid)`` already made (then it is not repeated).
        uw_name: how to call the uw in error messages (its file name).
        mid_name: how to call the middle camera's photo.
        tele_name: how to call the tele.

    Returns:
        The registration of the tele in the uw, method ``chained``; ``correlation`` is the evidence of the
        (polished) composed homography on the uw and the tele, which may be below what a direct registration
        needs; ``inliers`` and ``matches`` are 0 (no feature match links the tele to the uw directly).

    Raises:
        TeleNotFoundError: a link is not found, or the composed footprint lies mostly outside the uw.
        AlignmentError: a link or the composed footprint is not narrower than its wide photo.
    """
    t_start = time.perf_counter()
    uw_wh = (int(uw.shape[2]), int(uw.shape[1]))
    tele_wh = (int(tele.shape[2]), int(tele.shape[1]))
    prefix = f"{tele_name} not found in {uw_name} through {mid_name}"
    mid_ratio = mid_registration.zoom_ratio if mid_registration is not None else mid_zoom_ratio_hint
    hint = zoom_ratio_hint / mid_ratio if zoom_ratio_hint and mid_ratio else None
    try:
        in_mid = register(mid, tele, zoom_ratio_hint=hint, uw_name=mid_name, tele_name=tele_name)
        if mid_zoom_ratio_hint is None and zoom_ratio_hint:
            mid_zoom_ratio_hint = zoom_ratio_hint / in_mid.zoom_ratio
        mid_reg = mid_registration or register(
            uw, mid, zoom_ratio_hint=mid_zoom_ratio_hint, uw_name=uw_name, tele_name=mid_name
        )
        h = mid_reg.homography @ in_mid.homography
        h = h / h[2, 2]
        _check_geometry(h, uw_wh, tele_wh, uw_name, tele_name)
    except AlignmentError as exc:
        raise type(exc)(f"{prefix}: {exc}") from exc
    uw_luma, tele_luma = _Luma(_gray(uw)), _Luma(_gray(tele))
    with _cv_threads():
        evidence = _evidence(uw_luma, tele_luma, h)
        polished = _settle(uw_luma, tele_luma, h, "chained")
    kept = (
        _plausible(polished.homography, tele_wh)
        and polished.evidence.correlation > evidence.correlation + evidence.chance
    )
    if kept:
        h, evidence = polished.homography, polished.evidence
        try:
            _check_geometry(h, uw_wh, tele_wh, uw_name, tele_name)
        except AlignmentError as exc:
            raise type(exc)(f"{prefix}: {exc}") from exc
    reg = _describe(h, uw_wh, tele_wh, method="chained", correlation=evidence.correlation)
    log.info(
        "registered %s in %s through %s (%s in %s: ratio %.4f, %s; %s in %s: ratio %.4f, %s): ratio %.4f, "
        "centre (%.1f, %.1f), rotation %.2f°, correlation %.2f (a direct registration needs %.2f)%s, %.2f s",
        tele_name,
        uw_name,
        mid_name,
        tele_name,
        mid_name,
        in_mid.zoom_ratio,
        in_mid.method,
        mid_name,
        uw_name,
        mid_reg.zoom_ratio,
        mid_reg.method,
        reg.zoom_ratio,
        reg.center[0],
        reg.center[1],
        reg.rotation_deg,
        evidence.correlation,
        evidence.required,
        ", polished" if kept else "",
        time.perf_counter() - t_start,
    )
    return reg


def _check_geometry(
    h: np.ndarray, uw_wh: tuple[int, int], tele_wh: tuple[int, int], uw_name: str, tele_name: str
) -> None:
    """Refuse a found tele that is not narrower than the uw (swapped photos, the same photo twice) or that
    lies mostly outside it."""
    reg = _describe(h, uw_wh, tele_wh)
    if reg.density < MIN_DENSITY:
        raise AlignmentError(
            f"{tele_name} is not narrower than {uw_name} (zoom ratio {reg.zoom_ratio:.2f}); pass the wide photo first"
        )
    if _inside_fraction(h, uw_wh, tele_wh) < MIN_INSIDE:
        raise TeleNotFoundError(f"{tele_name} does not lie inside {uw_name}")


def _refuse_swapped(
    uw: _Luma, tele: _Luma, hint_density: float | None, uw_name: str, tele_name: str, tried: list[_Candidate]
) -> None:
    """When the tele was not found in the uw, look for the uw inside the tele: swapped photos get their own
    message, if the uw matches inside the tele better than any candidate ``tried`` for the tele inside the uw
    (two photos of one scene in the right order, the tele just not found, also correlate at some wrong
    geometry the other way round)."""
    found = _direct(tele, uw, 1.0 / hint_density if hint_density else None, [])
    best_tried = max((c.evidence.correlation for c in tried), default=-1.0)
    if (
        found is not None
        and found.evidence.correlation > best_tried
        and (density := _density_of(found.homography, uw.wh)) >= MIN_DENSITY
    ):
        zoom_ratio = uw.wh[0] / (density * tele.wh[0])
        raise AlignmentError(
            f"{tele_name} is not narrower than {uw_name} (zoom ratio {zoom_ratio:.2f}); pass the wide photo first"
        )


def _inside_fraction(h: np.ndarray, uw_wh: tuple[int, int], tele_wh: tuple[int, int]) -> float:
    quad = _footprint(h, tele_wh).astype(np.float32)
    frame = _corners(*uw_wh).astype(np.float32)
    area, _ = cv2.intersectConvexConvex(quad, frame)
    return float(area) / max(float(cv2.contourArea(quad)), 1e-9)


@dataclass(frozen=True, eq=False)
class AlignedPair:
    """A training pair: a uw crop and the tele resampled onto its grid at ``scale``× density.

    Attributes:
        lr: ``(3, h, w)`` float32 in [0, 1], the uw inside ``box``.
        hr: ``(3, s·h, s·w)`` float32 in [0, 1], the tele on ``lr``'s grid: pixel ``(i, j)`` shows uw point
            ``(x0 + (j + 0.5)/s - 0.5, y0 + (i + 0.5)/s - 0.5)``. In the tele's colours (not colour-matched).
        mask: ``(1, s·h, s·w)`` float32 in {0, 1}: forward/backward-consistent flow inside the tele, eroded.
        box: ``(x0, y0, w, h)`` of ``lr`` in uw pixels.
        valid_fraction: mean of ``mask``.
        flow: residual flow after the homography, in hr pixels: ``{"mean": ..., "p95": ...}`` over ``mask``.
    """

    lr: Tensor
    hr: Tensor
    mask: Tensor
    box: tuple[int, int, int, int]
    valid_fraction: float
    flow: dict[str, float]


def footprint_box(
    reg: Registration, uw_size: tuple[int, int], tele_size: tuple[int, int], *, margin: float = BOX_MARGIN
) -> tuple[int, int, int, int]:
    """The ``lr`` box: an axis-aligned integer box inside both the uw and the tele's footprint.

    Args:
        reg: the registration.
        uw_size: uw ``(width, height)`` in pixels.
        tele_size: tele ``(width, height)`` in pixels.
        margin: least distance (uw px) between the box's outer edges and the footprint's edges.

    Returns:
        ``(x0, y0, w, h)`` in uw pixels, covering ``[x0 - 0.5, x0 + w - 0.5]`` × ``[y0 - 0.5, y0 + h - 0.5]``;
        width or height is 0 when nothing fits.
    """
    quad = _footprint(reg.homography, tele_size).astype(np.float32)
    _, poly = cv2.intersectConvexConvex(quad, _corners(*uw_size).astype(np.float32))
    if poly is None or len(poly) < 3:
        return 0, 0, 0, 0
    poly = poly.reshape(-1, 1, 2).astype(np.float32)
    mom = cv2.moments(poly)
    if mom["m00"] <= 0:
        return 0, 0, 0, 0
    cx, cy = mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]
    pts = poly.reshape(-1, 2)
    ax = min(cx - pts[:, 0].min(), pts[:, 0].max() - cx)
    ay = min(cy - pts[:, 1].min(), pts[:, 1].max() - cy)

    def fits(lam: float) -> bool:
        corners = [(cx + sx * lam * ax, cy + sy * lam * ay) for sx in (-1, 1) for sy in (-1, 1)]
        return all(cv2.pointPolygonTest(poly, (float(x), float(y)), True) >= margin for x, y in corners)

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    hx, hy = lo * ax, lo * ay
    x0, y0 = math.ceil(cx - hx + 0.5), math.ceil(cy - hy + 0.5)
    x1, y1 = math.floor(cx + hx + 0.5), math.floor(cy + hy + 0.5)
    return int(x0), int(y0), max(0, int(x1 - x0)), max(0, int(y1 - y0))


def _prefilter(a: np.ndarray, density: float, target: float) -> tuple[np.ndarray, np.ndarray]:
    """``a``, holding ``density`` pixels per uw pixel, area-resized to ``target`` when it is denser (else as it
    is); returns the image and its coordinate map (3×3)."""
    prefilter = density / target
    if prefilter > 1.0 + 1e-3:
        return _resize(a, 1.0 / prefilter)
    return a, np.eye(3)


def _grid_to_uw(s: int, x0: int, y0: int) -> np.ndarray:
    """3×3 map from the pixels of an ``s``× grid over the uw box starting at ``(x0, y0)`` to uw pixels."""
    return np.array([[1.0 / s, 0.0, x0 + 0.5 / s - 0.5], [0.0, 1.0 / s, y0 + 0.5 / s - 0.5], [0, 0, 1.0]])


def _residual_flow(
    lr: Tensor, tele: np.ndarray, uw_to_tele: np.ndarray, density: float, fs: int, origin: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The flow left after the homography, on an ``fs``× grid over the uw box ``lr``.

    Args:
        lr: ``(3, h, w)`` the uw box.
        tele: ``(Ht, Wt, 3)`` float32 RGB, the tele.
        uw_to_tele: 3×3 map from uw pixels to ``tele``'s pixels.
        density: ``tele``'s pixels per uw pixel.
        fs: grid pixels per uw pixel.
        origin: ``(x0, y0)``, the box's top-left uw pixel.

    Returns:
        The forward flow ``(fs·h, fs·w, 2)`` in grid pixels (bicubic ``lr`` at ``x`` ≈ warped tele at
        ``x + F(x)``) and where it agrees with the backward flow to 1 grid pixel, ``(fs·h, fs·w)`` bool.
    """
    h, w = int(lr.shape[1]), int(lr.shape[2])
    grey, to_grey = _prefilter(cv2.cvtColor(tele, cv2.COLOR_RGB2GRAY), density, fs)
    grid_to_tele = to_grey @ uw_to_tele @ _grid_to_uw(fs, *origin)
    gx, gy = np.meshgrid(np.arange(fs * w, dtype=np.float64), np.arange(fs * h, dtype=np.float64))
    mx, my = _apply(grid_to_tele, gx, gy)
    warped = cv2.remap(
        grey, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    lr_up = cv2.resize(_gray(lr), (fs * w, fs * h), interpolation=cv2.INTER_CUBIC)
    fwd, bwd = _flows(_u8(lr_up), _u8(_match_tones(warped, lr_up)))
    return fwd, _fb_error(fwd, bwd) < 1.0


def align_pair(
    uw: Tensor,
    tele: Tensor,
    reg: Registration,
    *,
    scale: int,
    box: tuple[int, int, int, int] | None = None,
    uw_name: str = "uw",
    tele_name: str = "tele",
) -> AlignedPair:
    """Cut ``lr`` from the uw and resample the tele onto its grid at ``scale``× density.

    The tele is area-prefiltered when it is denser than ``scale``, warped by the homography, then DIS
    (medium) flow is computed both ways between the bicubic-upscaled ``lr`` and the warped tele, at most at
    :data:`FLOW_SCALE`× (then resampled to ``scale``×); the homography and the forward flow are composed into
    one cubic remap of the tele.

    Args:
        uw: ``(3, Hu, Wu)`` float32 RGB in [0, 1].
        tele: ``(3, Ht, Wt)`` float32 RGB in [0, 1].
        reg: ``register(uw, tele)``.
        scale: ``s``, hr pixels per uw pixel (2 or 4).
        box: ``(x0, y0, w, h)`` in uw pixels to reuse (e.g. to put a third camera on the same grid);
            default: :func:`footprint_box`.
        uw_name: how to call the uw in error messages.
        tele_name: how to call the tele in error messages.

    Returns:
        The aligned pair.

    Raises:
        TeleNotFoundError: the box is smaller than 32 uw pixels a side.
        AlignmentError: the box does not lie inside the uw.
    """
    t_start = time.perf_counter()
    s = int(scale)
    uh, uww = int(uw.shape[1]), int(uw.shape[2])
    th, tw = int(tele.shape[1]), int(tele.shape[2])
    if box is None:
        box = footprint_box(reg, (uww, uh), (tw, th))
    x0, y0, w, h = (int(v) for v in box)
    if w < MIN_BOX or h < MIN_BOX:
        raise TeleNotFoundError(
            f"the part of {uw_name} covered by {tele_name} is too small "
            f"({w}x{h} px, need {MIN_BOX}x{MIN_BOX})"
        )
    if x0 < 0 or y0 < 0 or x0 + w > uww or y0 + h > uh:
        raise AlignmentError(f"box {(x0, y0, w, h)} does not lie inside {uw_name} ({uww}x{uh} px)")
    lr = uw[:, y0 : y0 + h, x0 : x0 + w].float().contiguous()

    with _cv_threads():
        tele_np = to_hwc(tele)
        tele_np, to_tele = _prefilter(tele_np, reg.density, s)
        uw_to_tele = to_tele @ np.linalg.inv(reg.homography)
        hr_to_tele = uw_to_tele @ _grid_to_uw(s, x0, y0)
        fs = min(s, FLOW_SCALE)
        fwd, consistent = _residual_flow(lr, tele_np, uw_to_tele, min(reg.density, s), fs, (x0, y0))
        if fs < s:  # both grids span the box: resample, and flow vectors grow by s / fs
            fwd = (s / fs) * cv2.resize(fwd, (s * w, s * h), interpolation=cv2.INTER_LINEAR)
            consistent = cv2.resize(
                consistent.astype(np.uint8), (s * w, s * h), interpolation=cv2.INTER_NEAREST
            )
            consistent = consistent.astype(bool)
        gx, gy = np.meshgrid(np.arange(s * w, dtype=np.float64), np.arange(s * h, dtype=np.float64))
        mx, my = _apply(hr_to_tele, gx + fwd[..., 0], gy + fwd[..., 1])
        mx, my = mx.astype(np.float32), my.astype(np.float32)
        hr_np = cv2.remap(tele_np, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        tth, ttw = tele_np.shape[:2]
        inside = (mx >= 0) & (my >= 0) & (mx <= ttw - 1) & (my <= tth - 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * s + 1, 2 * s + 1))
        mask_np = cv2.erode((consistent & inside).astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE)
    valid = mask_np.astype(bool)
    magnitude = np.linalg.norm(fwd, axis=2)[valid]
    flow = {
        "mean": float(magnitude.mean()) if magnitude.size else 0.0,
        "p95": float(np.percentile(magnitude, 95)) if magnitude.size else 0.0,
    }
    hr = from_hwc(np.clip(hr_np, 0.0, 1.0))
    mask = torch.from_numpy(mask_np.astype(np.float32))[None]
    valid_fraction = float(valid.mean())
    log.info(
        "aligned %s onto %s box %s at x%d: %.1f%% valid, residual flow mean %.2f / p95 %.2f hr px, %.2f s",
        tele_name,
        uw_name,
        (x0, y0, w, h),
        s,
        100 * valid_fraction,
        flow["mean"],
        flow["p95"],
        time.perf_counter() - t_start,
    )
    return AlignedPair(lr=lr, hr=hr, mask=mask, box=(x0, y0, w, h), valid_fraction=valid_fraction, flow=flow)
