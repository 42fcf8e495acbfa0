"""Shared fixtures: small simulated dual-camera captures made from the photos in tests/data."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dzcli.io.exif import CaptureInfo, make_exif
from dzcli.io.images import load_photo, save_image
from dzcli.resize import torch_resize
from dzcli.simulate import SimulatedPair, SimulatedTriple, simulate_pair, simulate_triple

DATA = Path(__file__).parent / "data"
PHOTOS = ("life", "picos", "seeding", "free")


def scene(name: str) -> torch.Tensor:
    """A real photo (640 px wide) as a (3,H,W) float tensor in [0,1]."""
    return load_photo(DATA / f"{name}.jpg").pixels


def low_texture_scene(seed: int, size: tuple[int, int] = (640, 480)) -> torch.Tensor:
    """A scene that defeats feature matching: a sky-like gradient, soft bokeh discs and a smooth, shaded cup
    (placed by the seed), lightly blurred. ``(3, H, W)`` in [0, 1]."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c, (top, bottom) in enumerate([(0.35, 0.75), (0.45, 0.8), (0.7, 0.9)]):
        img[..., c] = top + (bottom - top) * yy / h
    for _ in range(14):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.6), rng.uniform(12, 45)
        disc = np.clip((r - np.hypot(xx - cx, yy - cy)) / 3.0, 0, 1)[..., None]
        img = img * (1 - 0.6 * disc) + 0.6 * disc * rng.uniform(0.6, 1.0, 3)
    cx, cy, a, b = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.45, 0.7), w * 0.12, h * 0.16
    cup = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
    shade = 0.35 + 0.5 * np.clip((xx - (cx - a)) / (2 * a), 0, 1)
    img[cup] = np.stack([shade, shade * 0.9, shade * 0.8], -1)[cup]
    img[np.abs(np.hypot(xx - (cx + a), yy - cy) - b * 0.45) < 5] = (0.4, 0.35, 0.3)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return torch.from_numpy(np.clip(img, 0, 1).transpose(2, 0, 1).copy())


def fine_texture_scene(
    seed: int, size: tuple[int, int] = (2000, 1500), amplitude: float = 0.25
) -> torch.Tensor:
    """:func:`low_texture_scene` covered with a fine random texture (fabric, foliage): white noise keeping only
    the periods from 6 to 9 px. A camera that sees the scene at a sixth of its density (a 13 mm ultra-wide
    beside a 77 mm tele) resolves none of it; one at a third (a 26 mm wide) resolves most of it.
    ``(3, H, W)`` in [0, 1]."""
    w, h = size
    rng = np.random.default_rng(seed + 100)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    band = (np.hypot(fx, fy) >= 1 / 9) & (np.hypot(fx, fy) <= 1 / 6)
    spectrum = band * (rng.standard_normal(band.shape) + 1j * rng.standard_normal(band.shape))
    texture = np.fft.irfft2(spectrum, s=(h, w))
    texture = torch.from_numpy((texture / texture.std()).astype(np.float32))
    return (low_texture_scene(seed, size) * (1 + amplitude * texture)).clamp(0, 1)


def write_capture(
    folder: Path,
    name: str,
    sim: SimulatedPair,
    *,
    ratio_exif: float | None,
    when: datetime,
    bit_depth: int = 8,
) -> tuple[Path, Path]:
    """Write a simulated pair as ``name_uw`` / ``name_tele`` with phone-like EXIF (JPEG, or 16-bit TIFF)."""
    ext = ".jpg" if bit_depth == 8 else ".tif"
    uw, tele = folder / f"{name}_uw{ext}", folder / f"{name}_tele{ext}"
    uw_info = CaptureInfo(make="dzsr", model="TestPhone", focal_mm=4.25, focal_35mm=26.0, time=when)
    tele_info = CaptureInfo(
        make="dzsr",
        model="TestPhone",
        focal_mm=6.0,
        focal_35mm=None if ratio_exif is None else round(26.0 * ratio_exif),
        time=when + timedelta(seconds=0.3),
    )
    save_image(uw, sim.uw, exif=make_exif(uw_info), bit_depth=bit_depth, quality=95)
    save_image(tele, sim.tele, exif=make_exif(tele_info), bit_depth=bit_depth, quality=95)
    return uw, tele


def corner_error(h: np.ndarray, truth: np.ndarray, tele_wh: tuple[int, int]) -> float:
    """Largest distance (uw px, per axis) between the tele's outer corners placed by homography ``h`` and by
    ``truth`` (both tele → uw)."""
    w, t = tele_wh
    corners = np.array(
        [[-0.5, -0.5, 1.0], [w - 0.5, -0.5, 1.0], [w - 0.5, t - 0.5, 1.0], [-0.5, t - 0.5, 1.0]]
    ).T
    a, b = np.asarray(h) @ corners, np.asarray(truth) @ corners
    return float(np.abs(a[:2] / a[2] - b[:2] / b[2]).max())


FOCALS_35MM = {"uw": 13.0, "wide": 26.0, "tele": 77.0}
"""A phone's three cameras (35 mm-equivalent focal lengths): the wide at 2x the uw, the tele at 5.9x."""


@pytest.fixture(scope="session")
def far_triple() -> SimulatedTriple:
    """A 13/26/77 mm triple capture of :func:`fine_texture_scene`. The uw is 338x253 px; the tele covers 57x43 px
    of it and the uw resolves none of the tele's texture: too weak a match for a direct registration. The wide
    (at 2x; the tele covers 114x85 px of it) matches both."""
    return simulate_triple(
        fine_texture_scene(0),
        density=FOCALS_35MM["tele"] / FOCALS_35MM["uw"],
        wide_density=FOCALS_35MM["wide"] / FOCALS_35MM["uw"],
        offset=(6.0, -4.0),
        rotation_deg=0.7,
        wide_offset=(-5.0, 3.0),
        wide_rotation_deg=-0.4,
        seed=3,
    )


@pytest.fixture(scope="session")
def photo_triple() -> SimulatedTriple:
    """A 13/26/52 mm triple capture of a real photo (life, enlarged 3x: detail the 480x320 px uw cannot
    resolve and the wide can). The tele covers about 110x74 uw px, the wide 230x154."""
    photo = scene("life")
    big = torch_resize(photo, (3 * photo.shape[-2], 3 * photo.shape[-1]), "bicubic").clamp(0, 1)
    return simulate_triple(
        big,
        density=4.0,
        wide_density=2.0,
        offset=(5.0, -3.0),
        rotation_deg=0.5,
        wide_offset=(-4.0, 2.0),
        wide_rotation_deg=-0.3,
        seed=1,
    )


def write_triple(folder: Path, name: str, sim: SimulatedTriple, *, when: datetime) -> dict[str, Path]:
    """Write a simulated triple as ``name_uw`` / ``name_wide`` / ``name_tele`` JPEGs with phone-like EXIF
    (the uw at 13 mm, the others at its focal length times their zoom ratio)."""
    ratios = {"uw": 1.0, "wide": sim.wide_zoom_ratio, "tele": sim.pair.zoom_ratio}
    images = {"uw": sim.pair.uw, "wide": sim.wide, "tele": sim.pair.tele}
    paths = {}
    for i, (role, image) in enumerate(images.items()):
        info = CaptureInfo(
            make="dzsr",
            model="TestPhone",
            focal_mm=FOCALS_35MM["uw"] * ratios[role] / 6.0,
            focal_35mm=round(FOCALS_35MM["uw"] * ratios[role]),
            time=when + timedelta(seconds=0.1 * i),
        )
        paths[role] = folder / f"{name}_{role}.jpg"
        save_image(paths[role], image, exif=make_exif(info), quality=95)
    return paths


@pytest.fixture(scope="session")
def sim_pairs() -> dict[str, SimulatedPair]:
    """Three simulated ×2 phone pairs with off-centre, slightly rotated teles (deterministic)."""
    geo = {"life": ((14.0, -9.0), 0.8), "picos": ((-11.0, 7.0), -1.2), "seeding": ((6.0, 12.0), 0.5)}
    return {
        name: simulate_pair(
            scene(name), density=2.0, offset=off, rotation_deg=rot, parallax=0.5, noise=0.005, seed=i
        )
        for i, (name, (off, rot)) in enumerate(geo.items())
    }


@pytest.fixture
def captures_dir(tmp_path: Path, sim_pairs: dict[str, SimulatedPair]) -> Path:
    """A folder of three simulated captures named ``<scene>_uw.jpg`` / ``<scene>_tele.jpg``."""
    folder = tmp_path / "captures"
    folder.mkdir()
    t0 = datetime(2026, 3, 1, 9, 0, 0)
    for i, (name, sim) in enumerate(sim_pairs.items()):
        write_capture(folder, name, sim, ratio_exif=2.0, when=t0 + timedelta(minutes=i))
    return folder
