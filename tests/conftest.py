"""Shared fixtures: small simulated dual-camera captures made from the photos in tests/data."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch

from dzcli.io.exif import CaptureInfo, make_exif
from dzcli.io.images import load_photo, save_image
from dzcli.simulate import SimulatedPair, simulate_pair

DATA = Path(__file__).parent / "data"
PHOTOS = ("life", "picos", "seeding", "free")


def scene(name: str) -> torch.Tensor:
    """A real photo (640 px wide) as a (3,H,W) float tensor in [0,1]."""
    return load_photo(DATA / f"{name}.jpg").pixels


def write_capture(
    folder: Path, name: str, sim: SimulatedPair, *, ratio_exif: float | None, when: datetime, bit_depth: int = 8
) -> tuple[Path, Path]:
    """Write a simulated pair as ``name_uw`` / ``name_tele`` with phone-like EXIF (JPEG, or 16-bit TIFF)."""
    ext = ".jpg" if bit_depth == 8 else ".tif"
    uw, tele = folder / f"{name}_uw{ext}", folder / f"{name}_tele{ext}"
    uw_info = CaptureInfo(make="dzsr", model="TestPhone", focal_mm=4.25, focal_35mm=26.0, time=when)
    tele_info = CaptureInfo(
        make="dzsr", model="TestPhone", focal_mm=6.0,
        focal_35mm=None if ratio_exif is None else round(26.0 * ratio_exif), time=when + timedelta(seconds=0.3),
    )
    save_image(uw, sim.uw, exif=make_exif(uw_info), bit_depth=bit_depth, quality=95)
    save_image(tele, sim.tele, exif=make_exif(tele_info), bit_depth=bit_depth, quality=95)
    return uw, tele


@pytest.fixture(scope="session")
def sim_pairs() -> dict[str, SimulatedPair]:
    """Three simulated ×2 phone pairs with off-centre, slightly rotated teles (deterministic)."""
    geo = {"life": ((14.0, -9.0), 0.8), "picos": ((-11.0, 7.0), -1.2), "seeding": ((6.0, 12.0), 0.5)}
    return {
        name: simulate_pair(scene(name), ratio=2.0, offset=off, rotation_deg=rot, parallax=0.5, noise=0.005,
                            seed=i)
        for i, (name, (off, rot)) in enumerate(geo.items())
    }


@pytest.fixture()
def captures_dir(tmp_path: Path, sim_pairs: dict[str, SimulatedPair]) -> Path:
    """A folder of three simulated captures named ``<scene>_uw.jpg`` / ``<scene>_tele.jpg``."""
    folder = tmp_path / "captures"
    folder.mkdir()
    t0 = datetime(2026, 3, 1, 9, 0, 0)
    for i, (name, sim) in enumerate(sim_pairs.items()):
        write_capture(folder, name, sim, ratio_exif=2.0, when=t0 + timedelta(minutes=i))
    return folder
