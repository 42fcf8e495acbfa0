"""The dual-camera simulator: determinism, the uw's degradation, and the exactness of the true homography."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dzcli.errors import ConfigError
from dzcli.simulate import degrade, isp_change, simulate_pair, simulate_triple

DATA = Path(__file__).parent / "data"


def _photo(name: str) -> torch.Tensor:
    bgr = cv2.imread(str(DATA / f"{name}.jpg"), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0


def _hwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(1, 2, 0).numpy())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def test_deterministic_for_a_seed() -> None:
    scene = _photo("picos")
    kw = {"density": 2.5, "offset": (5.0, -3.0), "rotation_deg": 1.0, "parallax": 2.0}
    a, b = simulate_pair(scene, seed=7, **kw), simulate_pair(scene, seed=7, **kw)
    c = simulate_pair(scene, seed=8, **kw)
    for name in ("uw", "tele", "truth"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.tele, c.tele)
    assert not torch.equal(a.uw, c.uw)
    np.testing.assert_array_equal(a.tele_to_uw, c.tele_to_uw)


def test_shapes_and_ranges_for_a_non_integer_ratio() -> None:
    scene = _photo("life")  # 640 x 426
    p = simulate_pair(scene, density=2.7, seed=0)
    assert p.uw.shape == (3, round(426 / 2.7), round(640 / 2.7))
    assert p.tele.shape == p.uw.shape
    assert p.truth.shape == (3, round(p.uw.shape[1] * 2.7), round(p.uw.shape[2] * 2.7))
    assert p.zoom_ratio == pytest.approx(2.7)
    for t in (p.uw, p.tele, p.truth):
        assert t.dtype == torch.float32 and float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_degrading_the_truth_reproduces_the_clean_uw() -> None:
    scene = _photo("seeding")
    p = simulate_pair(scene, density=2.0, noise=0.0, seed=1)
    # Independent route for an integer ratio: Gaussian optical blur (σ = 0.5·r) then OpenCV's area resize.
    blurred = cv2.GaussianBlur(_hwc(p.truth), (0, 0), sigmaX=1.0, borderType=cv2.BORDER_REFLECT)
    expected = cv2.resize(blurred, (p.uw.shape[2], p.uw.shape[1]), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(_hwc(p.uw), expected, atol=1e-5)

    q = simulate_pair(scene, density=2.7, noise=0.0, seed=1)
    np.testing.assert_allclose(degrade(q.truth, 2.7).numpy(), q.uw.numpy(), atol=1e-6)
    # Non-integer area averaging agrees with OpenCV's (whose scale differs from 2.7 by < 0.1 %).
    blurred = cv2.GaussianBlur(_hwc(q.truth), (0, 0), sigmaX=1.35, borderType=cv2.BORDER_REFLECT)
    cv_area = cv2.resize(blurred, (q.uw.shape[2], q.uw.shape[1]), interpolation=cv2.INTER_AREA)
    assert _psnr(_hwc(q.uw), cv_area) > 45


def test_noise_is_added_to_both_images() -> None:
    scene = _photo("seeding")
    clean = simulate_pair(scene, density=2.0, isp=False, noise=0.0, seed=3)
    noisy = simulate_pair(scene, density=2.0, isp=False, noise=0.02, seed=3)
    for name in ("uw", "tele"):
        residual = (getattr(noisy, name) - getattr(clean, name)).std().item()
        assert 0.012 < residual < 0.025


@pytest.mark.parametrize(("ratio", "rotation"), [(2.0, 0.0), (2.7, 1.5)])
def test_tele_to_uw_maps_tele_pixels_onto_the_truth(ratio: float, rotation: float) -> None:
    scene = _photo("life")
    p = simulate_pair(scene, density=ratio, offset=(23.0, -17.0), rotation_deg=rotation, isp=False, noise=0.0)
    ht, wt = p.tele.shape[1:]
    tx, ty = np.meshgrid(np.arange(wt, dtype=np.float64), np.arange(ht, dtype=np.float64))
    h = p.tele_to_uw
    ux = h[0, 0] * tx + h[0, 1] * ty + h[0, 2]
    uy = h[1, 0] * tx + h[1, 1] * ty + h[1, 2]
    # truth pixel g and uw pixel u are related by g = r·(u + 0.5) - 0.5 (pixel centres at integers).
    gx = (ratio * (ux + 0.5) - 0.5).astype(np.float32)
    gy = (ratio * (uy + 0.5) - 0.5).astype(np.float32)
    sampled = cv2.remap(_hwc(p.truth), gx, gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    inner = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(np.clip(sampled, 0, 1)[inner], _hwc(p.tele)[inner], atol=1e-4)
    # The tele's centre pixel position lands at the uw's centre plus the offset.
    hu, wu = p.uw.shape[1:]
    centre = h @ np.array([(wt - 1) / 2, (ht - 1) / 2, 1.0])
    assert tuple(centre[:2]) == pytest.approx(((wu - 1) / 2 + 23.0, (hu - 1) / 2 - 17.0), abs=1e-9)
    assert p.center == pytest.approx(tuple(centre[:2]), abs=1e-9)
    assert np.degrees(np.arctan2(h[1, 0], h[0, 0])) == pytest.approx(rotation)


def test_parallax_displaces_the_tele_by_at_most_its_amplitude() -> None:
    scene = _photo("picos")
    base = simulate_pair(scene, density=2.0, isp=False, noise=0.0, seed=4)
    moved = simulate_pair(scene, density=2.0, isp=False, noise=0.0, parallax=3.0, seed=4)
    a = cv2.cvtColor(_hwc(base.tele), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(_hwc(moved.tele), cv2.COLOR_RGB2GRAY)
    flow = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM).calc(
        (a * 255).astype(np.uint8), (b * 255).astype(np.uint8), None
    )
    magnitude = np.linalg.norm(flow[16:-16, 16:-16], axis=2)
    assert 1.0 < np.percentile(magnitude, 90) < 3.5
    assert np.percentile(magnitude, 99) < 4.0


def test_isp_change_is_a_deterministic_monotone_colour_pipeline() -> None:
    img = _photo("life")
    a, b, c = isp_change(img, seed=1), isp_change(img, seed=1), isp_change(img, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == img.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert 15 < _psnr(_hwc(a), _hwc(img)) < 35  # a visible but plausible change
    ramp = torch.linspace(0, 1, 256).expand(3, 1, 256).contiguous()
    out = isp_change(ramp, seed=1)[:, 0]
    assert torch.all(out[:, 1:] >= out[:, :-1])


def test_invalid_ratio_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="greater than 1"):
        simulate_pair(_photo("free"), density=0.5)


def test_triple_is_the_pair_plus_a_deterministic_wide() -> None:
    scene = _photo("picos")
    kw = {
        "density": 4.0,
        "offset": (3.0, -2.0),
        "rotation_deg": 0.7,
        "parallax": 1.0,
        "wide_offset": (-4.0, 5.0),
        "wide_rotation_deg": -0.5,
    }
    a, b = simulate_triple(scene, seed=5, **kw), simulate_triple(scene, seed=5, **kw)
    c = simulate_triple(scene, seed=6, **kw)
    pair = simulate_pair(scene, density=4.0, offset=(3.0, -2.0), rotation_deg=0.7, parallax=1.0, seed=5)
    for name in ("uw", "tele", "truth"):
        assert torch.equal(getattr(a.pair, name), getattr(pair, name))
    assert torch.equal(a.wide, b.wide) and not torch.equal(a.wide, c.wide)
    assert a.wide.shape == a.pair.uw.shape and a.wide.dtype == torch.float32
    assert a.wide_zoom_ratio == 2.0  # default: half the tele's ratio
    hu, wu = a.pair.uw.shape[1:]
    assert a.wide_center == pytest.approx(((wu - 1) / 2 - 4.0, (hu - 1) / 2 + 5.0))


@pytest.mark.parametrize(
    ("ratio", "wide_ratio", "rotation", "min_psnr"), [(4.0, 2.0, 0.0, 80.0), (5.9, 2.3, -1.0, 40.0)]
)
def test_wide_to_uw_maps_wide_pixels_onto_the_truth(
    ratio: float, wide_ratio: float, rotation: float, min_psnr: float
) -> None:
    t = simulate_triple(
        _photo("life"),
        density=ratio,
        wide_density=wide_ratio,
        wide_offset=(7.0, -4.0),
        wide_rotation_deg=rotation,
        isp=False,
        noise=0.0,
    )
    # The truth at the wide's density on the uw's axes: uw coordinate u lies at wide_ratio·(u + 0.5) - 0.5.
    low = _hwc(degrade(t.pair.truth, ratio / wide_ratio))
    hw, ww = t.wide.shape[1:]
    wx, wy = np.meshgrid(np.arange(ww, dtype=np.float64), np.arange(hw, dtype=np.float64))
    h = t.wide_to_uw
    ux = h[0, 0] * wx + h[0, 1] * wy + h[0, 2]
    uy = h[1, 0] * wx + h[1, 1] * wy + h[1, 2]
    inner = (slice(4, -4), slice(4, -4))
    scores = []
    for shift in (0.0, 1.0):
        lx = (wide_ratio * (ux + 0.5) - 0.5 + shift).astype(np.float32)
        ly = (wide_ratio * (uy + 0.5) - 0.5).astype(np.float32)
        sampled = np.clip(cv2.remap(low, lx, ly, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT), 0, 1)
        scores.append(_psnr(sampled[inner], _hwc(t.wide)[inner]))
    assert scores[0] > min_psnr  # exact for an unrotated wide on whole pixels
    assert scores[1] < 30  # one wide pixel off is clearly worse
    assert np.degrees(np.arctan2(h[1, 0], h[0, 0])) == pytest.approx(rotation)
    assert h[0, 0] ** 2 + h[1, 0] ** 2 == pytest.approx(1 / wide_ratio**2)


def test_wide_ratio_must_lie_between_the_uw_and_the_tele() -> None:
    for ratio, wide in ((2.0, None), (4.0, 4.0), (4.0, 1.0)):
        with pytest.raises(ConfigError, match="strictly between 1"):
            simulate_triple(_photo("free"), density=ratio, wide_density=wide)
