"""Dual-camera pairs with full ground truth, simulated from one photo (the pure part of ``dzsr simulate``).

The photo is the *scene*; one scene pixel is one tele pixel (the tele sees the scene at its native
density). Pixel centres are at integers and an image ``W`` pixels wide covers ``[-0.5, W - 0.5]``.
With ``r`` the density ratio (scene pixels per uw pixel):

- uw pixel ``u`` averages the scene over ``[r·u - 0.5, r·(u + 1) - 0.5]`` after an optical blur, so scene
  (and truth) coordinate ``g`` and uw coordinate ``u`` are related by ``g = r·(u + 0.5) - 0.5``;
- the truth is the scene on exactly that grid, cropped (or reflect-padded by at most a pixel) to
  ``(round(Hu·r), round(Wu·r))``, so the uw is the truth degraded by :func:`degrade`;
- tele pixel ``t`` shows uw point ``c_u + offset + R(θ)·(t - c_t) / r`` (``c_u``, ``c_t`` the image centres,
  ``R(θ)`` a rotation by ``rotation_deg``), which is :attr:`SimulatedPair.tele_to_uw`, plus an optional
  smooth parallax displacement that no homography explains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from dzcli.errors import ConfigError


def _hwc(img: Tensor) -> np.ndarray:
    return np.ascontiguousarray(img.detach().cpu().permute(1, 2, 0).numpy(), dtype=np.float32)


def _chw(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))


def _area_matrix(n_in: int, n_out: int, ratio: float) -> sp.csr_matrix:
    """Sparse ``(n_out, n_in)`` operator averaging input pixels over ``[r·u - 0.5, r·(u + 1) - 0.5]``."""
    u = np.arange(n_out)[:, None]
    lo, hi = ratio * u - 0.5, ratio * (u + 1) - 0.5
    g = np.floor(lo + 0.5).astype(np.int64) + np.arange(int(math.ceil(ratio)) + 2)[None, :]
    w = np.clip(np.minimum(hi, g + 0.5) - np.maximum(lo, g - 0.5), 0.0, None)
    w[(g < 0) | (g >= n_in)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    keep = w > 0
    rows = np.broadcast_to(u, g.shape)[keep]
    return sp.csr_matrix((w[keep], (rows, g[keep])), shape=(n_out, n_in), dtype=np.float64)


def degrade(img: Tensor, ratio: float) -> Tensor:
    """Optical blur then exact area downscale: what the uw camera does to the scene.

    Args:
        img: ``(3, H, W)`` float32 in [0, 1].
        ratio: downscale factor ``r >= 1`` (may be non-integer); the blur is a Gaussian of
            ``σ = 0.5·r`` input pixels.

    Returns:
        ``(3, round(H / r), round(W / r))`` float32 in [0, 1]; output pixel ``u`` averages the blurred
        input over ``[r·u - 0.5, r·(u + 1) - 0.5]`` (per axis).
    """
    _, h, w = img.shape
    a = cv2.GaussianBlur(_hwc(img), (0, 0), sigmaX=0.5 * ratio, borderType=cv2.BORDER_REFLECT)
    ho, wo = max(1, round(h / ratio)), max(1, round(w / ratio))
    ay, ax = _area_matrix(h, ho, ratio), _area_matrix(w, wo, ratio)
    c = a.shape[2]
    rows = ay @ a.reshape(h, w * c)  # (ho, w*c)
    cols = ax @ rows.reshape(ho, w, c).transpose(1, 0, 2).reshape(w, ho * c)  # (wo, ho*c)
    out = cols.reshape(wo, ho, c).transpose(1, 0, 2)
    return _chw(np.clip(out, 0.0, 1.0))


def isp_change(img: Tensor, *, seed: int) -> Tensor:
    """A plausible different colour pipeline, deterministic for a seed.

    A 3×3 colour mix near identity (rows sum to 1), white-balance gains within ±15 %, a per-channel
    gamma in [0.85, 1.18] and a mild S-curve, in that order.

    Args:
        img: ``(3, H, W)`` float32 in [0, 1], sRGB.
        seed: selects the pipeline.

    Returns:
        ``(3, H, W)`` float32 in [0, 1].
    """
    rng = np.random.default_rng(seed)
    mix = np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3)) * (1.0 - np.eye(3))
    mix /= mix.sum(axis=1, keepdims=True)
    wb = rng.uniform(0.85, 1.15, 3)
    gamma = rng.uniform(0.85, 1.18, 3)
    s_amount = rng.uniform(0.1, 0.3)
    x = img.detach().cpu().to(torch.float64)
    x = torch.einsum("ij,jhw->ihw", torch.from_numpy(mix), x).clamp(0.0, 1.0)
    x = (x * torch.from_numpy(wb)[:, None, None]).clamp(0.0, 1.0)
    x = x ** torch.from_numpy(gamma)[:, None, None]
    x = (1.0 - s_amount) * x + s_amount * x * x * (3.0 - 2.0 * x)
    return x.clamp(0.0, 1.0).to(torch.float32)


@dataclass(frozen=True, eq=False)
class SimulatedPair:
    """A simulated uw/tele capture with its ground truth.

    Attributes:
        uw: ``(3, Hu, Wu)`` float32 in [0, 1], the whole scene seen by the short-focus camera.
        tele: ``(3, Ht, Wt)`` float32 in [0, 1], the long-focus view (scene density).
        truth: ``(3, Hg, Wg)``, the scene on the uw grid × ratio (``Hg = round(Hu·r)``), noise-free, in
            the uw's colours.
        tele_to_uw: ``(3, 3)`` float64, the true homography from tele to uw pixel coordinates (without the
            parallax).
        ratio: true field-of-view ratio per side, ``density · Wu / Wt``.
        center: tele centre in uw pixels ``(x, y)``.
        rotation_deg: rotation of the tele's axes in the uw frame (y down: positive is clockwise on screen).
    """

    uw: Tensor
    tele: Tensor
    truth: Tensor
    tele_to_uw: np.ndarray
    ratio: float
    center: tuple[float, float]
    rotation_deg: float


def _parallax_field(rng: np.random.Generator, size: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth random displacement ``(H, W, 2)`` in pixels with maximum magnitude ``amplitude``."""
    w, h = size
    coarse = rng.standard_normal((4, 4, 2)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    peak = float(np.linalg.norm(field, axis=2).max())
    return field * (amplitude / peak) if peak > 0 else field


def simulate_pair(
    scene: Tensor,
    *,
    ratio: float,
    offset: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    parallax: float = 0.0,
    isp: bool = True,
    noise: float = 0.01,
    seed: int = 0,
    tele_size: tuple[int, int] | None = None,
) -> SimulatedPair:
    """Simulate a dual-camera capture of ``scene`` with known geometry.

    Args:
        scene: ``(3, H, W)`` float32 in [0, 1], a sharp photo; one scene pixel = one tele pixel.
        ratio: tele pixels per uw pixel (``> 1``, may be non-integer); the uw is ``round(H / ratio)`` ×
            ``round(W / ratio)``. With the default ``tele_size`` this is also the field-of-view ratio.
        offset: tele centre minus uw centre, in uw pixels ``(x, y)`` (phone optical axes differ).
        rotation_deg: rotation of the tele relative to the uw, in degrees.
        parallax: maximum magnitude (scene pixels) of a smooth random displacement of the tele's view.
        isp: apply :func:`isp_change` to the tele (a different colour pipeline).
        noise: standard deviation of the Gaussian noise added to each image (values in [0, 1]).
        seed: makes the noise, the parallax field and the colour pipeline reproducible.
        tele_size: tele ``(width, height)`` in pixels; default: the uw's (phones use equal sensors).

    Returns:
        The pair, its truth and its true geometry.

    Raises:
        ConfigError: ``ratio <= 1`` or a non-positive ``tele_size``.
    """
    if ratio <= 1.0:
        raise ConfigError(f"simulated zoom ratio must be greater than 1 (got {ratio})")
    _, hs, ws = scene.shape
    hu, wu = max(1, round(hs / ratio)), max(1, round(ws / ratio))
    wt, ht = tele_size if tele_size is not None else (wu, hu)
    if wt <= 0 or ht <= 0:
        raise ConfigError(f"tele size must be positive (got {wt}x{ht})")
    rng = np.random.default_rng(seed)

    scene_np = _hwc(scene)
    hg, wg = round(hu * ratio), round(wu * ratio)
    truth_np = cv2.copyMakeBorder(
        scene_np[:hg, :wg], 0, max(0, hg - hs), 0, max(0, wg - ws), cv2.BORDER_REFLECT
    )
    truth = _chw(truth_np)
    uw = degrade(truth, ratio)

    theta = math.radians(rotation_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    c_t = np.array([(wt - 1) / 2.0, (ht - 1) / 2.0])
    c_u = np.array([(wu - 1) / 2.0 + offset[0], (hu - 1) / 2.0 + offset[1]])
    tele_to_uw = np.eye(3)
    tele_to_uw[:2, :2] = rot / ratio
    tele_to_uw[:2, 2] = c_u - rot @ c_t / ratio

    # Scene coordinates g = r·(u + 0.5) - 0.5 of every tele pixel, plus the parallax displacement.
    tx, ty = np.meshgrid(np.arange(wt, dtype=np.float64), np.arange(ht, dtype=np.float64))
    ux = tele_to_uw[0, 0] * tx + tele_to_uw[0, 1] * ty + tele_to_uw[0, 2]
    uy = tele_to_uw[1, 0] * tx + tele_to_uw[1, 1] * ty + tele_to_uw[1, 2]
    gx = (ratio * (ux + 0.5) - 0.5).astype(np.float32)
    gy = (ratio * (uy + 0.5) - 0.5).astype(np.float32)
    if parallax > 0:
        field = _parallax_field(rng, (wt, ht), parallax)
        gx, gy = gx + field[..., 0], gy + field[..., 1]
    tele_np = cv2.remap(scene_np, gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    tele = torch.from_numpy(np.clip(tele_np, 0.0, 1.0).transpose(2, 0, 1).copy())
    if isp:
        tele = isp_change(tele, seed=int(rng.integers(2**31)))
    if noise > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        uw = (uw + noise * torch.randn(uw.shape, generator=gen)).clamp(0.0, 1.0)
        tele = (tele + noise * torch.randn(tele.shape, generator=gen)).clamp(0.0, 1.0)

    center = tele_to_uw @ np.array([c_t[0], c_t[1], 1.0])
    return SimulatedPair(
        uw=uw,
        tele=tele,
        truth=truth,
        tele_to_uw=tele_to_uw,
        ratio=ratio * wu / wt,
        center=(float(center[0]), float(center[1])),
        rotation_deg=float(rotation_deg),
    )
