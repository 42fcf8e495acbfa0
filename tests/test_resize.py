"""Resizing: OpenCV's filters and PyTorch's kept apart, each what it says it is."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dzcli.errors import ConfigError
from dzcli.resize import cv_resize, resample, torch_resize, upscale_bicubic


def test_cv_resize_is_opencv() -> None:
    img = torch.rand(3, 10, 14)
    hwc = img.permute(1, 2, 0).numpy()
    for name, flag in (
        ("bicubic", cv2.INTER_CUBIC),
        ("lanczos", cv2.INTER_LANCZOS4),
        ("area", cv2.INTER_AREA),
    ):
        expected = np.clip(cv2.resize(hwc, (28, 20), interpolation=flag), 0, 1)
        out = cv_resize(img, (20, 28), name)
        assert out.dtype == torch.float32 and out.shape == (3, 20, 28)
        np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected)
    assert cv_resize(img[:1], (5, 7), "area").shape == (1, 5, 7)  # one channel stays one channel
    with pytest.raises(ConfigError, match="unknown resize filter"):
        cv_resize(img, (5, 7), "cubic")


def test_resample_sizes_and_range() -> None:
    img = torch.rand(3, 20, 30)
    assert resample(img, (20, 30)) is img
    up = resample(img, (29, 44))
    down = resample(img, (10, 15))
    assert up.shape == (3, 29, 44) and down.shape == (3, 10, 15)
    assert up.min() >= 0 and up.max() <= 1
    assert torch.equal(up, cv_resize(img, (29, 44), "lanczos"))  # Lanczos up, area down
    assert torch.allclose(down, F.avg_pool2d(img[None], 2)[0], atol=1e-5)


def test_torch_resize_is_pytorch() -> None:
    img = torch.rand(3, 24, 32) * 1.2 - 0.1
    assert torch_resize(img, (24, 32)) is img
    down = torch_resize(img, (12, 16), "bicubic", antialias=True)
    expected = F.interpolate(img[None], size=(12, 16), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(down, expected[0].clamp(0, 1))
    assert not torch.equal(down, torch_resize(img, (12, 16), "bicubic"))  # antialiasing is asked for
    assert torch.equal(torch_resize(img, (12, 16), "area"), F.avg_pool2d(img[None], 2)[0].clamp(0, 1))
    # PyTorch's bicubic is not OpenCV's (other edge handling), whatever the shared a = -0.75
    up_t, up_cv = torch_resize(img.clamp(0, 1), (48, 64)), cv_resize(img.clamp(0, 1), (48, 64), "bicubic")
    assert not torch.equal(up_t, up_cv)


def test_upscale_bicubic_is_the_networks_unclamped_upsampling() -> None:
    img = torch.rand(3, 9, 11)
    up = upscale_bicubic(img, 2)
    assert torch.equal(up, F.interpolate(img[None], scale_factor=2, mode="bicubic", align_corners=False)[0])
    assert up.min() < 0 or up.max() > 1  # bicubic overshoots; the baselines clamp it themselves
