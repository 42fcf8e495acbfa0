"""Each step of a simulated camera does what it says (dzcli.camera)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dzcli import camera
from dzcli.errors import ConfigError

from .conftest import scene


def _hf(img: torch.Tensor) -> float:
    """Mean squared Laplacian of the luma: high-frequency energy."""
    y = img.mean(0)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(lap.square().mean())


def _photo() -> torch.Tensor:
    return scene("life")[:, 100:228, 200:328]


def test_blur_kernels_are_normalised_and_shaped_as_named() -> None:
    for kind in ("isotropic", "anisotropic", "defocus"):
        k = camera.blur_kernel(kind, 2.0, sigma2=1.0)  # type: ignore[arg-type]
        assert (
            k.shape[0] == k.shape[1]
            and k.shape[0] % 2 == 1
            and math.isclose(float(k.sum()), 1.0, rel_tol=1e-5)
        )
    iso = camera.blur_kernel("isotropic", 2.0)
    assert np.allclose(iso, iso.T) and np.allclose(iso, iso[::-1])
    r = iso.shape[0] // 2
    _y, _x = np.mgrid[-r : r + 1, -r : r + 1]
    ani = camera.blur_kernel("anisotropic", 3.0, sigma2=1.0, angle=0.0)
    ry = ani.shape[0] // 2
    ya, xa = np.mgrid[-ry : ry + 1, -ry : ry + 1]
    assert (ani * xa**2).sum() > 5 * (ani * ya**2).sum()  # long along x (angle 0), short across
    disc = camera.blur_kernel("defocus", 3.0)
    c = disc.shape[0] // 2
    assert (
        disc[c, c] == disc[c, c + 2] == disc.max() and disc[0, 0] == 0
    )  # flat inside, nothing at the corner
    with pytest.raises(ConfigError):
        camera.blur_kernel("isotropic", 0.0)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.0])
def test_the_separable_gaussian_is_the_isotropic_kernel(sigma: float) -> None:
    img = scene("life")[:, :61, :83]
    torch.testing.assert_close(
        camera.gaussian_blur(img, sigma),
        camera.blur(img, camera.blur_kernel("isotropic", sigma)),
        atol=1e-5,
        rtol=0,
    )
    one = torch.ones(1, 20, 30)  # and a single channel keeps its shape
    assert camera.gaussian_blur(one, sigma).shape == one.shape


def test_blur_and_denoise_remove_high_frequencies_sharpening_adds_them_with_halos() -> None:
    img = _photo()
    base = _hf(img)
    assert _hf(camera.blur(img, camera.blur_kernel("isotropic", 1.5))) < 0.5 * base
    faint = 0.45 + 0.1 * img  # low-contrast fine texture: what a phone's denoiser wipes out
    assert _hf(camera.denoise(faint, 0.08)) < 0.5 * _hf(faint)
    assert _hf(camera.sharpen(img, radius=1.5, amount=1.0)) > 1.5 * base
    step = torch.full((3, 32, 32), 0.3)
    step[:, :, 16:] = 0.7
    sharp = camera.sharpen(step, radius=1.5, amount=1.0)
    assert sharp[:, :, 13:16].min() < 0.28 and sharp[:, :, 16:19].max() > 0.72  # overshoot on both sides
    assert torch.allclose(sharp[:, :, :4], step[:, :, :4]) and torch.allclose(
        sharp[:, :, -4:], step[:, :, -4:]
    )


def test_denoise_smooths_noise_but_keeps_an_edge() -> None:
    rng = np.random.default_rng(0)
    step = torch.full((3, 64, 64), 0.3)
    step[:, :, 32:] = 0.7
    noisy = camera.sensor_noise(step, rng, photons=1e9, read=0.02)
    clean = camera.denoise(noisy, 0.1)
    assert clean[:, :, :24].std() < 0.5 * noisy[:, :, :24].std()
    assert clean[:, :, 36:].mean() - clean[:, :, :28].mean() > 0.38  # the 0.4 step survives


def test_sensor_noise_is_poisson_gaussian() -> None:
    rng = np.random.default_rng(1)
    for level in (0.1, 0.8):
        flat = torch.full((3, 128, 128), level)
        var = float(camera.sensor_noise(flat, rng, photons=500.0, read=0.005).var())
        assert var == pytest.approx(level / 500.0 + 0.005**2, rel=0.1)


def test_jpeg_has_blocks_at_8_px_and_subsampling_blurs_chroma() -> None:
    g = torch.Generator().manual_seed(2)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 8, 8, generator=g), size=(96, 96), mode="bicubic", align_corners=False
    )[0].clamp(0, 1)
    low = camera.jpeg(smooth, 20, "444")
    step = (low[:, :, 1:] - low[:, :, :-1]).abs().mean(dim=(0, 1))  # between columns c and c+1
    at_edges = step[7::8].mean()
    inside = torch.cat([step[k::8] for k in range(7)]).mean()
    assert at_edges > 1.5 * inside
    chroma = torch.zeros(3, 64, 64)
    chroma[0, :, ::2] = 1.0  # red / green columns, one pixel wide: pure chroma detail
    chroma[1, :, 1::2] = 1.0
    err = {s: float((camera.jpeg(chroma, 95, s) - chroma).abs().mean()) for s in ("444", "420")}
    assert err["420"] > 3 * err["444"]
    with pytest.raises(ConfigError):
        camera.jpeg(smooth, 0)


def test_tone_identity_and_saturation() -> None:
    img = _photo()
    assert torch.allclose(camera.tone(img, contrast=0.0, saturation=1.0), img, atol=1e-6)
    grey = camera.tone(img, contrast=0.0, saturation=0.0)
    assert torch.allclose(grey[0], grey[1], atol=1e-6) and torch.allclose(grey[1], grey[2], atol=1e-6)
    punchy = camera.tone(img, contrast=0.3, saturation=1.0)
    assert punchy.std() > img.std()


def test_downscale_sizes_and_flat_images() -> None:
    flat = torch.full((3, 90, 120), 0.4)
    for method in ("area", "bicubic", "bilinear", "lanczos"):
        out = camera.downscale(flat, 2.5, method)  # type: ignore[arg-type]
        assert out.shape == (3, 36, 48) and torch.allclose(out, flat[:, :36, :48], atol=1e-5)
    with pytest.raises(ConfigError):
        camera.downscale(flat, 0.5)


def test_sampled_cameras_are_reproducible_and_within_their_ranges() -> None:
    ranges = camera.CameraRanges()
    a = camera.sample_camera(np.random.default_rng(3), ranges)
    assert a == camera.sample_camera(np.random.default_rng(3), ranges)
    for seed in range(20):
        cam = camera.sample_camera(np.random.default_rng(seed))
        assert ranges.jpeg_quality[0] <= cam.jpeg_quality <= ranges.jpeg_quality[1]
        assert ranges.photons[0] <= cam.photons <= ranges.photons[1]
        assert ranges.sharpen_amount[0] <= cam.sharpen_amount <= ranges.sharpen_amount[1]
    with pytest.raises(ConfigError):
        camera.CameraRanges(jpeg_quality=(95, 80))


def test_capture_is_a_smaller_deterministic_photo() -> None:
    img = _photo()
    cam = camera.sample_camera(np.random.default_rng(4))
    a = camera.capture(img, 2.0, cam, np.random.default_rng(5))
    b = camera.capture(img, 2.0, cam, np.random.default_rng(5))
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    # close to the scene at that size, but not equal to a plain area downscale
    plain = camera.downscale(img, 2.0)
    assert 0.005 < float((a - plain).abs().mean()) < 0.1


def test_simulate_with_a_phone_camera_keeps_the_geometry_and_processes_both_photos() -> None:
    from dzcli.simulate import simulate_pair

    img = scene("life")[:, :240, :320]
    kw = {"density": 2.0, "offset": (3.0, -2.0), "rotation_deg": 0.5, "parallax": 1.0, "seed": 7}
    plain = simulate_pair(img, **kw)
    phone = simulate_pair(img, camera=camera.CameraRanges(), **kw)
    assert np.array_equal(plain.tele_to_uw, phone.tele_to_uw) and np.allclose(
        plain.tele_to_uw_fit, phone.tele_to_uw_fit
    )
    assert phone.truth.shape == plain.truth.shape and phone.uw.shape == plain.uw.shape
    # the truth is the scene in the uw camera's colours: its tone and saturation, nothing else
    uw_cam = camera.sample_camera(np.random.default_rng((7, 2)), camera.CameraRanges())
    toned = camera.tone(plain.truth, contrast=uw_cam.contrast, saturation=uw_cam.saturation)
    assert torch.allclose(phone.truth, toned, atol=1e-6) and not torch.allclose(
        phone.truth, plain.truth, atol=1e-3
    )
    coarse_uw = camera.downscale(
        phone.uw, 8.0
    )  # at 1/16 of the truth's density: colours, not detail or noise
    err = {
        k: float((camera.downscale(t, 16.0) - coarse_uw).abs().mean())
        for k, t in (("scene", plain.truth), ("toned", phone.truth))
    }
    assert err["toned"] < err["scene"]
    assert phone.tele.shape == plain.tele.shape
    for a, b in ((plain.uw, phone.uw), (plain.tele, phone.tele)):
        diff = float((a - b).abs().mean())
        assert 0.003 < diff < 0.1  # the same view, through another pipeline
    assert torch.equal(phone.uw, simulate_pair(img, camera=camera.CameraRanges(), **kw).uw)  # reproducible


def test_simulate_command_accepts_the_phone_camera(tmp_path) -> None:
    from dzcli.pipeline.simulate import SimulateConfig, simulate_folder

    photo = tmp_path / "p.jpg"
    from dzcli.io.images import save_image

    save_image(photo, scene("life")[:, :200, :300])
    (rec,) = simulate_folder(SimulateConfig(photos=photo, out=tmp_path / "sim", camera="phone"))
    assert (tmp_path / "sim" / rec.files["uw"]).is_file()
    with pytest.raises(ConfigError, match="--camera"):
        SimulateConfig(photos=photo, out=tmp_path / "x", camera="film")
    for name in ("dslr", "night"):  # the other cameras' ranges are valid and differ from the phone's
        SimulateConfig(photos=photo, out=tmp_path / "x", camera=name)


def test_camera_ranges_can_be_widened_from_the_command_line(tmp_path) -> None:
    from dzcli.io.images import save_image
    from dzcli.pipeline.simulate import SimulateConfig, parse_camera_range, simulate_folder

    photo = tmp_path / "p.jpg"
    save_image(photo, scene("life")[:, :200, :300])
    over = (parse_camera_range("jpeg_quality=60,98"), parse_camera_range("sharpen_amount=0,2"))
    cfg = SimulateConfig(photos=photo, out=tmp_path / "sim", camera="phone", camera_ranges=over)
    ranges = cfg.ranges()
    assert ranges is not None and ranges.jpeg_quality == (60, 98) and ranges.sharpen_amount == (0.0, 2.0)
    assert ranges.photons == camera.CameraRanges().photons  # the rest is the phone's
    simulate_folder(cfg)
    written = json.loads((tmp_path / "sim" / "simulation.json").read_text())["camera_ranges"]
    assert written["jpeg_quality"] == [60, 98] and written["sharpen_amount"] == [0.0, 2.0]
    for bad, match in ((("nosuch", 0, 1),), "unknown range"), ((("jpeg_quality", 98, 60),), "low <= high"):
        with pytest.raises(ConfigError, match=match):
            SimulateConfig(photos=photo, out=tmp_path / "x", camera="phone", camera_ranges=bad)
    with pytest.raises(ConfigError, match="needs a camera"):
        SimulateConfig(photos=photo, out=tmp_path / "x", camera="none", camera_ranges=over)
    with pytest.raises(ConfigError, match="NAME=LOW,HIGH"):
        parse_camera_range("jpeg_quality=60")
