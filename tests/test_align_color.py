"""Colour matching of the tele to the uw: a known colour pipeline is undone, identity stays identity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dzcli.align.color import ColorModel, apply_color, fit_color, match_colors
from dzcli.errors import AlignmentError
from dzcli.simulate import isp_change

DATA = Path(__file__).parent / "data"


def _photo(name: str) -> torch.Tensor:
    bgr = cv2.imread(str(DATA / f"{name}.jpg"), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def _left_half(img: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(1, *img.shape[1:])
    mask[..., : img.shape[2] // 2] = 1.0
    return mask


@pytest.mark.parametrize(("scene", "seed"), [("picos", 0), ("life", 1), ("seeding", 2)])
def test_a_known_isp_change_is_undone_on_held_out_pixels(scene: str, seed: int) -> None:
    dst = _photo(scene)
    src = isp_change(dst, seed=seed)
    model = fit_color(src, dst, _left_half(dst))
    out = apply_color(model, src)
    right = slice(dst.shape[2] // 2, None)
    before, after = _psnr(src[..., right], dst[..., right]), _psnr(out[..., right], dst[..., right])
    assert after > before + 6.0
    assert out.dtype == torch.float32 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_identity_when_source_equals_destination() -> None:
    img = _photo("life")
    model = fit_color(img, img)
    np.testing.assert_allclose(model.lut, np.tile(np.linspace(0, 1, model.lut.shape[1]), (3, 1)), atol=1e-6)
    np.testing.assert_allclose(model.gain, 1.0, atol=1e-6)
    np.testing.assert_allclose(apply_color(model, img).numpy(), img.numpy(), atol=1e-6)


def test_lut_is_monotone_even_for_a_non_monotone_relation() -> None:
    dst = _photo("picos")
    src = dst.clone()
    src[0] = 1.0 - src[0]  # red inverted: the best monotone map is nearly flat, never decreasing
    model = fit_color(isp_change(src, seed=5), dst)
    assert model.lut.shape == (3, 256) and model.lut.dtype == np.float32
    assert np.all(np.diff(model.lut, axis=1) >= 0)


def test_gain_map_removes_lens_shading() -> None:
    dst = _photo("seeding")
    h, w = dst.shape[1:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    shading = 1.0 - 0.3 * (xx**2 + yy**2) / 2  # vignetting to 70 % in the corners
    src = (dst * shading).clamp(0, 1)
    model = fit_color(src, dst)
    flat = ColorModel(lut=model.lut, gain=np.ones_like(model.gain), pixels=model.pixels)
    with_gain, lut_only = _psnr(apply_color(model, src), dst), _psnr(apply_color(flat, src), dst)
    assert with_gain > lut_only + 5.0 and with_gain > 35.0
    assert model.gain.shape[0] == 3 and model.gain.shape[2] < w  # a low-resolution map


def test_pixels_outside_the_mask_or_clipped_are_ignored() -> None:
    dst = _photo("life")
    src = isp_change(dst, seed=3)
    spoiled = src.clone()
    spoiled[..., dst.shape[2] // 2 :] = torch.rand_like(spoiled[..., dst.shape[2] // 2 :])
    clean = fit_color(src, dst, _left_half(dst))
    masked = fit_color(spoiled, dst, _left_half(dst))
    np.testing.assert_allclose(masked.lut, clean.lut, atol=1e-6)
    assert masked.pixels == clean.pixels < dst.shape[1] * dst.shape[2] // 2
    with pytest.raises(AlignmentError, match="only 0 valid unclipped pixels"):
        fit_color(torch.ones_like(dst), dst)


def test_match_colors_fits_at_the_lr_resolution() -> None:
    lr = _photo("picos")[:, :200, :300]
    hr = isp_change(
        F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1), seed=4
    )
    mask = torch.ones(1, 400, 600)
    mask[..., :, 300:] = 0.0  # the right half is left out of the fit
    out, model = match_colors(hr, lr, mask)
    assert out.shape == hr.shape
    down = F.interpolate(out[None], size=lr.shape[1:], mode="area")[0]
    base = F.interpolate(hr[None], size=lr.shape[1:], mode="area")[0]
    right = slice(150, None)
    assert _psnr(down[..., right], lr[..., right]) > _psnr(base[..., right], lr[..., right]) + 6.0
    assert model.pixels <= 150 * 200
    summary = model.to_dict()
    assert len(json.dumps(summary)) < 3000
    assert summary["lut_knots"] == 256 and len(summary["lut"]) == 3 and len(summary["lut"][0]) == 17
