"""Dual-camera pairs with full ground truth, simulated from one photo (the pure part of ``dzsr simulate``).

The photo is the *scene*; one scene pixel is one tele pixel (the tele sees the scene at its native
density). Pixel centres are at integers and an image ``W`` pixels wide covers ``[-0.5, W - 0.5]``.
With ``r`` the density (scene pixels, i.e. tele pixels, per uw pixel):

- uw pixel ``u`` averages the scene over ``[r·u - 0.5, r·(u + 1) - 0.5]`` after an optical blur, so scene
  (and truth) coordinate ``g`` and uw coordinate ``u`` are related by ``g = r·(u + 0.5) - 0.5``;
- the truth is the scene on exactly that grid, cropped (or reflect-padded by at most a pixel) to
  ``(round(Hu·r), round(Wu·r))``, so the uw is the truth degraded by :func:`degrade`;
- tele pixel ``t`` shows uw point ``c_u + offset + R(θ)·(t - c_t) / r`` (``c_u``, ``c_t`` the image centres,
  ``R(θ)`` a rotation by ``rotation_deg``), which is :attr:`SimulatedPair.tele_to_uw`, plus an optional
  smooth parallax displacement that no homography explains.

A triple capture (:func:`simulate_triple`) adds a *wide* camera between the two: the same sensor size as
the uw at ``r_w`` times its density (``1 < r_w < r``; with equal sensors the densities are the zoom ratios), i.e. the scene seen through its own optical blur and
area sampling at ``r / r_w`` scene pixels per wide pixel, off-centre and rotated in its own way
(:attr:`SimulatedTriple.wide_to_uw`). The uw, tele and truth of a triple are those of
:func:`simulate_pair` with the same arguments and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from dzcli.camera import CameraRanges, capture, sample_camera, tone
from dzcli.errors import ConfigError
from dzcli.io.images import from_hwc, to_hwc


def _area_matrix(n_in: int, n_out: int, density: float) -> sp.csr_matrix:
    """Sparse ``(n_out, n_in)`` operator averaging input pixels over ``[r·u - 0.5, r·(u + 1) - 0.5]``, ``r`` the
    ``density`` (input pixels per output pixel)."""
    u = np.arange(n_out)[:, None]
    lo, hi = density * u - 0.5, density * (u + 1) - 0.5
    g = np.floor(lo + 0.5).astype(np.int64) + np.arange(math.ceil(density) + 2)[None, :]
    w = np.clip(np.minimum(hi, g + 0.5) - np.maximum(lo, g - 0.5), 0.0, None)
    w[(g < 0) | (g >= n_in)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    keep = w > 0
    rows = np.broadcast_to(u, g.shape)[keep]
    return sp.csr_matrix((w[keep], (rows, g[keep])), shape=(n_out, n_in), dtype=np.float64)


def degrade(img: Tensor, density: float) -> Tensor:
    """Optical blur then exact area downscale: what the uw camera does to the scene.

    Args:
        img: ``(3, H, W)`` float32 in [0, 1].
        density: input pixels per output pixel ``r >= 1`` (may be non-integer); the blur is a Gaussian of
            ``σ = 0.5·r`` input pixels.

    Returns:
        ``(3, round(H / r), round(W / r))`` float32 in [0, 1]; output pixel ``u`` averages the blurred
        input over ``[r·u - 0.5, r·(u + 1) - 0.5]`` (per axis).
    """
    _, h, w = img.shape
    a = cv2.GaussianBlur(to_hwc(img), (0, 0), sigmaX=0.5 * density, borderType=cv2.BORDER_REFLECT)
    ho, wo = max(1, round(h / density)), max(1, round(w / density))
    ay, ax = _area_matrix(h, ho, density), _area_matrix(w, wo, density)
    c = a.shape[2]
    rows = ay @ a.reshape(h, w * c)  # (ho, w*c)
    cols = ax @ rows.reshape(ho, w, c).transpose(1, 0, 2).reshape(w, ho * c)  # (wo, ho*c)
    out = cols.reshape(wo, ho, c).transpose(1, 0, 2)
    return from_hwc(np.clip(out, 0.0, 1.0))


GAIN = 0.15
"""Default white-balance gain spread of :func:`isp_change` (gains in ``[1 - GAIN, 1 + GAIN]``)."""
GAMMA = (0.85, 1.18)
"""Default per-channel gamma range of :func:`isp_change`."""


def isp_change(img: Tensor, *, seed: int, gain: float = GAIN, gamma: tuple[float, float] = GAMMA) -> Tensor:
    """A plausible different colour pipeline, deterministic for a seed.

    A 3×3 colour mix near identity (rows sum to 1), white-balance gains within ``±gain``, a per-channel
    gamma in ``gamma`` and a mild S-curve, in that order. The same seed draws the same pipeline whatever
    the ranges (the ranges only stretch the draws).

    Args:
        img: ``(3, H, W)`` float32 in [0, 1], sRGB.
        seed: selects the pipeline.
        gain: white-balance gains are drawn in ``[1 - gain, 1 + gain]``.
        gamma: per-channel gammas are drawn in ``[gamma[0], gamma[1]]``.

    Returns:
        ``(3, H, W)`` float32 in [0, 1].
    """
    rng = np.random.default_rng(seed)
    mix = np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3)) * (1.0 - np.eye(3))
    mix /= mix.sum(axis=1, keepdims=True)
    wb = rng.uniform(1.0 - gain, 1.0 + gain, 3)
    gammas = rng.uniform(gamma[0], gamma[1], 3)
    s_amount = rng.uniform(0.1, 0.3)
    x = img.detach().cpu().to(torch.float64)
    x = torch.einsum("ij,jhw->ihw", torch.from_numpy(mix), x).clamp(0.0, 1.0)
    x = (x * torch.from_numpy(wb)[:, None, None]).clamp(0.0, 1.0)
    x = x ** torch.from_numpy(gammas)[:, None, None]
    x = (1.0 - s_amount) * x + s_amount * x * x * (3.0 - 2.0 * x)
    return x.clamp(0.0, 1.0).to(torch.float32)


@dataclass(frozen=True, eq=False)
class SimulatedPair:
    """A simulated uw/tele capture with its ground truth.

    Attributes:
        uw: ``(3, Hu, Wu)`` float32 in [0, 1], the whole scene seen by the short-focus camera.
        tele: ``(3, Ht, Wt)`` float32 in [0, 1], the long-focus view (scene density).
        truth: ``(3, Hg, Wg)``, the scene on the uw grid × density (``Hg = round(Hu·r)``), noise-free, in
            the uw's colours.
        tele_to_uw: ``(3, 3)`` float64, the true homography from tele to uw pixel coordinates (without the
            parallax).
        zoom_ratio: true field-of-view ratio per side, ``density · Wu / Wt``.
        center: tele centre in uw pixels ``(x, y)``.
        rotation_deg: rotation of the tele's axes in the uw frame (y down: positive is clockwise on screen).
        tele_to_uw_fit: ``(3, 3)`` float64, the affine map closest (least squares over the tele's pixels) to
            the true mapping *with* the parallax: what a registration by one homography can recover (a smooth
            parallax field has a linear part that looks like a slightly different scale and position).
    """

    uw: Tensor
    tele: Tensor
    truth: Tensor
    tele_to_uw: np.ndarray
    zoom_ratio: float
    center: tuple[float, float]
    rotation_deg: float
    tele_to_uw_fit: np.ndarray


def _parallax_field(rng: np.random.Generator, size: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth random displacement ``(H, W, 2)`` in pixels with maximum magnitude ``amplitude``."""
    w, h = size
    coarse = rng.standard_normal((4, 4, 2)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    peak = float(np.linalg.norm(field, axis=2).max())
    return field * (amplitude / peak) if peak > 0 else field


def _view_to_uw(
    density: float,
    rotation_deg: float,
    view_size: tuple[int, int],
    uw_size: tuple[int, int],
    offset: tuple[float, float],
) -> np.ndarray:
    """Homography from a camera's pixels to uw pixels: ``c_u + offset + R(θ)·(t - c_t) / density``
    (``density``: the camera's pixels per uw pixel)."""
    theta = math.radians(rotation_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    c_t = np.array([(view_size[0] - 1) / 2.0, (view_size[1] - 1) / 2.0])
    c_u = np.array([(uw_size[0] - 1) / 2.0 + offset[0], (uw_size[1] - 1) / 2.0 + offset[1]])
    h = np.eye(3)
    h[:2, :2] = rot / density
    h[:2, 2] = c_u - rot @ c_t / density
    return h


def _scene_coords(
    x: np.ndarray, y: np.ndarray, to_uw: np.ndarray, density: float, rng: np.random.Generator, parallax: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates ``g = r·(u + 0.5) - 0.5`` (float32 maps for ``cv2.remap``) of a view's pixel grid
    ``x, y`` (H, W) mapped to uw coordinates ``u`` by the affine ``to_uw``, plus a random smooth parallax
    displacement of at most ``parallax`` pixels."""
    ux = to_uw[0, 0] * x + to_uw[0, 1] * y + to_uw[0, 2]
    uy = to_uw[1, 0] * x + to_uw[1, 1] * y + to_uw[1, 2]
    gx = (density * (ux + 0.5) - 0.5).astype(np.float32)
    gy = (density * (uy + 0.5) - 0.5).astype(np.float32)
    if parallax > 0:
        field = _parallax_field(rng, (x.shape[1], x.shape[0]), parallax)
        gx, gy = gx + field[..., 0], gy + field[..., 1]
    return gx, gy


def simulate_pair(
    scene: Tensor,
    *,
    density: float,
    offset: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    parallax: float = 0.0,
    isp: bool = True,
    gain: float = GAIN,
    gamma: tuple[float, float] = GAMMA,
    noise: float = 0.01,
    seed: int = 0,
    tele_size: tuple[int, int] | None = None,
    camera: CameraRanges | None = None,
) -> SimulatedPair:
    """Simulate a dual-camera capture of ``scene`` with known geometry.

    Args:
        scene: ``(3, H, W)`` float32 in [0, 1], a sharp photo; one scene pixel = one tele pixel.
        density: tele pixels per uw pixel (``> 1``, may be non-integer); the uw is ``round(H / density)`` ×
            ``round(W / density)``. With the default ``tele_size`` this is also the zoom ratio.
        offset: tele centre minus uw centre, in uw pixels ``(x, y)`` (phone optical axes differ).
        rotation_deg: rotation of the tele relative to the uw, in degrees.
        parallax: maximum magnitude (scene pixels) of a smooth random displacement of the tele's view.
        isp: apply :func:`isp_change` to the tele (a different colour pipeline).
        gain: white-balance gain spread of that pipeline (see :func:`isp_change`).
        gamma: per-channel gamma range of that pipeline.
        noise: standard deviation of the Gaussian noise added to each image (values in [0, 1]).
        seed: makes the noise, the parallax field and the colour pipeline reproducible.
        tele_size: tele ``(width, height)`` in pixels; default: the uw's (phones use equal sensors).
        camera: when given, each camera takes its photo through its own camera drawn from these ranges
            (:func:`dzcli.camera.capture`: lens blur, sensor grid, Poisson–Gaussian noise, denoising,
            sharpening, tone, JPEG) instead of the plain blur + area downscale + Gaussian ``noise``; the
            geometry is the same as without it, and the truth is the scene in the uw camera's tone and
            saturation (what that camera would render with ``density``× more pixels).

    Returns:
        The pair, its truth and its true geometry.

    Raises:
        ConfigError: ``density <= 1`` or a non-positive ``tele_size``.
    """
    if density <= 1.0:
        raise ConfigError(f"simulated tele density must be greater than 1 (got {density})")
    _, hs, ws = scene.shape
    hu, wu = max(1, round(hs / density)), max(1, round(ws / density))
    wt, ht = tele_size if tele_size is not None else (wu, hu)
    if wt <= 0 or ht <= 0:
        raise ConfigError(f"tele size must be positive (got {wt}x{ht})")
    rng = np.random.default_rng(seed)

    scene_np = to_hwc(scene)
    hg, wg = round(hu * density), round(wu * density)
    truth_np = cv2.copyMakeBorder(
        scene_np[:hg, :wg], 0, max(0, hg - hs), 0, max(0, wg - ws), cv2.BORDER_REFLECT
    )
    truth = from_hwc(truth_np)
    cams = None if camera is None else np.random.default_rng((seed, 2))
    if cams is None:
        uw = degrade(truth, density)
    else:
        uw_cam = sample_camera(cams, camera)
        uw = capture(truth, density, uw_cam, cams)
        # The truth is what this camera would render with r x more pixels: its colours, not its optics,
        # noise, denoising, sharpening or JPEG.
        truth = tone(truth, contrast=uw_cam.contrast, saturation=uw_cam.saturation)

    c_t = np.array([(wt - 1) / 2.0, (ht - 1) / 2.0])
    tele_to_uw = _view_to_uw(density, rotation_deg, (wt, ht), (wu, hu), offset)

    tx, ty = np.meshgrid(np.arange(wt, dtype=np.float64), np.arange(ht, dtype=np.float64))
    gx, gy = _scene_coords(tx, ty, tele_to_uw, density, rng, parallax)
    tele_to_uw_fit = _affine_fit(tx, ty, (gx + 0.5) / density - 0.5, (gy + 0.5) / density - 0.5)
    tele_np = cv2.remap(scene_np, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    tele = from_hwc(np.clip(tele_np, 0.0, 1.0))
    if isp:
        tele = isp_change(tele, seed=int(rng.integers(2**31)), gain=gain, gamma=gamma)
    if cams is not None:
        tele = capture(tele, 1.0, sample_camera(cams, camera), cams)
    elif noise > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        uw = (uw + noise * torch.randn(uw.shape, generator=gen)).clamp(0.0, 1.0)
        tele = (tele + noise * torch.randn(tele.shape, generator=gen)).clamp(0.0, 1.0)

    center = tele_to_uw @ np.array([c_t[0], c_t[1], 1.0])
    return SimulatedPair(
        uw=uw,
        tele=tele,
        truth=truth,
        tele_to_uw=tele_to_uw,
        zoom_ratio=density * wu / wt,
        center=(float(center[0]), float(center[1])),
        rotation_deg=float(rotation_deg),
        tele_to_uw_fit=tele_to_uw_fit,
    )


def _affine_fit(x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares affine map ``(x, y) → (u, v)`` over a subsampled grid, as a ``(3, 3)`` matrix."""
    step = max(1, int(math.sqrt(x.size / 20000)))
    pts = [a[::step, ::step].ravel().astype(np.float64) for a in (x, y, u, v)]
    design = np.stack([pts[0], pts[1], np.ones_like(pts[0])], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack([pts[2], pts[3]], axis=1), rcond=None)
    return np.vstack([coef.T, [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class SimulatedTriple:
    """A simulated ultra-wide / wide / tele capture with its ground truth.

    Attributes:
        pair: the uw, tele, truth and tele geometry (as :func:`simulate_pair` makes them).
        wide: ``(3, Hw, Ww)`` float32 in [0, 1], the middle camera (the uw's size by default).
        wide_to_uw: ``(3, 3)`` float64, the true homography from wide to uw pixel coordinates (without the
            parallax).
        wide_zoom_ratio: field-of-view ratio of the uw to the wide, per side.
        wide_center: wide centre in uw pixels ``(x, y)``.
        wide_rotation_deg: rotation of the wide's axes in the uw frame.
    """

    pair: SimulatedPair
    wide: Tensor
    wide_to_uw: np.ndarray
    wide_zoom_ratio: float
    wide_center: tuple[float, float]
    wide_rotation_deg: float


def simulate_triple(
    scene: Tensor,
    *,
    density: float,
    wide_density: float | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    wide_offset: tuple[float, float] = (0.0, 0.0),
    wide_rotation_deg: float = 0.0,
    parallax: float = 0.0,
    isp: bool = True,
    gain: float = GAIN,
    gamma: tuple[float, float] = GAMMA,
    noise: float = 0.01,
    seed: int = 0,
    camera: CameraRanges | None = None,
) -> SimulatedTriple:
    """Simulate an ultra-wide / wide / tele capture of ``scene`` with known geometry.

    Args:
        scene: ``(3, H, W)`` float32 in [0, 1], a sharp photo; one scene pixel = one tele pixel.
        density: tele pixels per uw pixel ``r > 1`` (as in :func:`simulate_pair`); every camera has the
            uw's size, so this is also the uw-to-tele zoom ratio.
        wide_density: wide pixels per uw pixel (and zoom ratio) ``r_w`` with ``1 < r_w < r``; default
            ``r / 2``.
        offset, rotation_deg: the tele's placement (see :func:`simulate_pair`).
        wide_offset: wide centre minus uw centre, in uw pixels ``(x, y)``.
        wide_rotation_deg: rotation of the wide relative to the uw, in degrees.
        parallax: maximum smooth displacement (scene pixels) of the tele's and the wide's views.
        isp: give the tele and the wide their own colour pipelines (:func:`isp_change`).
        gain, gamma: the ranges of those pipelines (see :func:`isp_change`).
        noise: Gaussian noise standard deviation of every image.
        seed: reproducibility; the uw, tele and truth equal :func:`simulate_pair`'s for the same seed.
        camera: each camera's own capture pipeline (see :func:`simulate_pair`).

    Returns:
        The triple, its truth and its true geometry.

    Raises:
        ConfigError: ``density <= 1`` or ``wide_density`` outside ``(1, density)``.
    """
    r_w = density / 2.0 if wide_density is None else wide_density
    if not 1.0 < r_w < density:
        raise ConfigError(
            f"the wide camera's density must lie strictly between 1 and the tele's {density} (got {r_w})"
        )
    pair = simulate_pair(
        scene,
        density=density,
        offset=offset,
        rotation_deg=rotation_deg,
        parallax=parallax,
        isp=isp,
        gain=gain,
        gamma=gamma,
        noise=noise,
        seed=seed,
        camera=camera,
    )
    rng = np.random.default_rng((seed, 1))
    hu, wu = pair.uw.shape[-2:]
    d = density / r_w  # scene pixels per wide pixel
    wide_to_uw = _view_to_uw(r_w, wide_rotation_deg, (wu, hu), (wu, hu), wide_offset)

    # The wide at scene density (pixel h ↔ wide coordinate (h + 0.5)/d - 0.5), then the wide's own blur and
    # area sampling by d (exactly :func:`degrade`).
    hh, wh = round(hu * d), round(wu * d)
    hx, hy = np.meshgrid(np.arange(wh, dtype=np.float64), np.arange(hh, dtype=np.float64))
    wx, wy = (hx + 0.5) / d - 0.5, (hy + 0.5) / d - 0.5
    gx, gy = _scene_coords(wx, wy, wide_to_uw, density, rng, parallax)
    dense = cv2.remap(to_hwc(scene), gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    dense_t = from_hwc(np.clip(dense, 0.0, 1.0))
    if camera is None:
        wide = degrade(dense_t, d)
        if isp:
            wide = isp_change(wide, seed=int(rng.integers(2**31)), gain=gain, gamma=gamma)
        if noise > 0:
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            wide = (wide + noise * torch.randn(wide.shape, generator=gen)).clamp(0.0, 1.0)
    else:
        if isp:
            dense_t = isp_change(dense_t, seed=int(rng.integers(2**31)), gain=gain, gamma=gamma)
        cams = np.random.default_rng((seed, 3))
        wide = capture(dense_t, d, sample_camera(cams, camera), cams)
    center = wide_to_uw @ np.array([(wu - 1) / 2.0, (hu - 1) / 2.0, 1.0])
    return SimulatedTriple(
        pair=pair,
        wide=wide,
        wide_to_uw=wide_to_uw,
        wide_zoom_ratio=float(r_w),
        wide_center=(float(center[0]), float(center[1])),
        wide_rotation_deg=float(wide_rotation_deg),
    )
