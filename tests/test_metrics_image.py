"""PSNR/SSIM on the 8-bit protocol and the centre/corner/full regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dzcli.metrics.image import psnr, region_pieces, region_scores, ssim

from .test_metrics_lpips import _one_thread  # noqa: F401 (autouse fixture: one torch thread)


def test_psnr_of_a_known_mse() -> None:
    a = torch.full((3, 20, 30), 100 / 255)
    b = a.clone()
    b[:, :10] += 10 / 255  # half the pixels off by 10 levels: MSE = 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50), abs=1e-9)
    assert psnr(a, a) == math.inf
    mask = torch.zeros(1, 20, 30)
    mask[:, :10] = 1  # only the changed half: MSE = 100
    assert psnr(a, b, mask=mask) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)


def test_ssim_is_one_on_identical_images_and_lower_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 32, generator=g)
    assert ssim(a, a) == pytest.approx(1.0)
    noise = torch.rand(3, 32, 32, generator=g) - 0.5
    noisy = [ssim(a, (a + k * noise).clamp(0, 1)) for k in (0.1, 0.4, 0.8)]
    assert noisy[0] < 1.0 and noisy[0] > noisy[1] > noisy[2]


@pytest.mark.parametrize("box", [(10, 7, 20, 11), (0, 0, 5, 5), (30, 20, 10, 10), (-3, 4, 50, 8)])
def test_regions_partition_the_image(box: tuple[int, int, int, int]) -> None:
    h, w = 30, 40
    pieces = region_pieces(h, w, box)
    cover = np.zeros((h, w), int)
    for y0, y1, x0, x1 in pieces["centre"] + pieces["corner"]:
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()
    assert pieces["full"] == [(0, h, 0, w)]


def test_corner_psnr_pools_the_mse_of_its_pieces() -> None:
    a = torch.zeros(3, 40, 40)
    b = a.clone()
    b[:, :, :10] = 20 / 255  # left strip off by 20 levels, everything else exact
    s = region_scores(b, a, (10, 10, 20, 20))
    corner_area = 40 * 40 - 20 * 20
    assert s["corner"]["psnr"] == pytest.approx(10 * math.log10(255**2 / (400 * 400 / corner_area)))
    assert s["centre"]["psnr"] == math.inf
    assert s["full"]["psnr"] == pytest.approx(10 * math.log10(255**2 / (400 * 400 / 1600)))


def test_masked_variants_use_only_valid_pixels() -> None:
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 48, 64, generator=g)
    sr = hr.clone()
    sr[:, :, 40:] = (sr[:, :, 40:] + 0.3 * torch.rand(3, 48, 24, generator=g)).clamp(0, 1)  # damage the right
    ones = torch.ones(1, 48, 64)
    left = torch.zeros(1, 48, 64)
    left[:, :, :24] = 1  # valid pixels 16+ columns away from the damage (beyond SSIM's 11-pixel window)
    box = (16, 12, 32, 24)
    all_valid = region_scores(sr, hr, box, mask=ones)
    for region in ("centre", "corner", "full"):
        assert all_valid[region]["psnr_masked"] == pytest.approx(all_valid[region]["psnr"])
        assert all_valid[region]["ssim_masked"] == pytest.approx(all_valid[region]["ssim"], abs=1e-12)
    part = region_scores(sr, hr, box, mask=left)
    assert part["full"]["psnr_masked"] == math.inf and part["full"]["psnr"] < 30
    assert part["full"]["ssim_masked"] == pytest.approx(1.0) and part["full"]["ssim"] < 0.99
    assert "psnr_masked" not in region_scores(sr, hr, box)["full"]


def test_region_lpips_is_the_mean_over_pieces_large_enough() -> None:
    from dzcli.metrics.lpips import lpips

    from .test_metrics_lpips import random_net

    net = random_net(2)
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(3, 96, 128, generator=g)
    sr = (hr + 0.1 * torch.randn(3, 96, 128, generator=g)).clamp(0, 1)
    box = (32, 32, 64, 40)  # left/right strips 32 px wide; top piece 32 px high; bottom 24 px (too small)
    s = region_scores(sr, hr, box, lpips_net=net)
    assert s["full"]["lpips"] == pytest.approx(lpips(net, sr, hr))
    assert s["centre"]["lpips"] == pytest.approx(lpips(net, sr[:, 32:72, 32:96], hr[:, 32:72, 32:96]))
    pieces = [(0, 96, 0, 32), (0, 96, 96, 128), (0, 32, 32, 96)]
    expected = np.mean([lpips(net, sr[:, a:b, c:d], hr[:, a:b, c:d]) for a, b, c, d in pieces])
    assert s["corner"]["lpips"] == pytest.approx(expected)
    assert region_scores(hr, hr, box, lpips_net=net)["full"]["lpips"] == 0.0
