"""PSNR/SSIM on the 8-bit protocol and the centre/corner/full regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dzcli.metrics.image import psnr, region_pieces, region_scores, ssim


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
    noisy = [ssim(a, (a + k * (torch.rand(3, 32, 32, generator=g) - 0.5)).clamp(0, 1)) for k in (0.1, 0.4, 0.8)]
    assert noisy[0] < 1.0 and noisy[0] > noisy[1] > noisy[2]


@pytest.mark.parametrize("box", [(10, 7, 20, 11), (0, 0, 5, 5), (30, 20, 10, 10), (-3, 4, 50, 8)])
def test_regions_partition_the_image(box) -> None:
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
