"""The flat-area guard: texture invented on a flat, noisy photo is taken out, a photo's detail is kept, a
valid reference's detail is never touched, and banded processing equals the whole image's."""

from __future__ import annotations

import torch

from dzcli.camera import gaussian_blur
from dzcli.infer.guard import guard_flat, quiet_flat, structure_weight
from dzcli.resize import resample, upscale_bicubic

from .conftest import scene


def _fine(x: torch.Tensor, s: int) -> float:
    """Energy of ``x``'s band finer than one LR pixel (``x`` at ``s``× the LR)."""
    return float((x - gaussian_blur(x, float(s))).pow(2).mean())


def test_texture_invented_on_a_flat_noisy_photo_is_taken_out() -> None:
    g = torch.Generator().manual_seed(0)
    lr = (0.5 + 0.02 * torch.randn(3, 60, 80, generator=g)).clamp(0, 1)
    sr = upscale_bicubic(lr, 2) + 0.05 * torch.randn(3, 120, 160, generator=g)  # the noise enlarged
    out = guard_flat(sr.clone(), lr)
    assert _fine(out, 2) < 0.1 * _fine(sr, 2)
    assert abs(float((out - sr).mean())) < 1e-3  # tones kept: only the fine bands go


def _mid(x: torch.Tensor, s: int) -> float:
    """Energy of ``x``'s band between one and two LR pixels (``x`` at ``s``× the LR)."""
    return float((gaussian_blur(x, float(s)) - gaussian_blur(x, 2.0 * s)).pow(2).mean())


def test_blotches_of_a_denoised_flat_photo_are_taken_out_too() -> None:
    # a phone's denoiser leaves its noise as blotches a pixel or two wide; enlarged, they are no detail
    g = torch.Generator().manual_seed(4)
    lr = (0.5 + gaussian_blur(0.04 * torch.randn(3, 60, 80, generator=g), 1.0)).clamp(0, 1)
    sr = upscale_bicubic(lr, 2)
    out = guard_flat(sr.clone(), lr)
    assert _mid(out, 2) < 0.4 * _mid(sr, 2)
    assert abs(float((out - sr).mean())) < 1e-3


def test_a_photo_s_detail_is_kept_where_it_shows_structure() -> None:
    # the network's output is the scene itself; the wide photo is it taken down to half, lightly noisy
    g = torch.Generator().manual_seed(1)
    hr = scene("picos")[:, 100:340, 100:420].contiguous()
    lr = (resample(hr, (120, 160)) + 0.005 * torch.randn(3, 120, 160, generator=g)).clamp(0, 1)
    out = guard_flat(hr.clone(), lr)
    lost = float((out - hr).pow(2).mean())
    assert lost < 0.25 * _fine(hr, 2)
    for level in (0, 1):
        w = structure_weight(lr, level=level)
        assert w.shape == (1, 120, 160) and float(w.min()) >= 0 and float(w.max()) <= 1
        assert float((w > 0.5).float().mean()) > 0.5


def test_where_the_reference_is_valid_nothing_changes() -> None:
    g = torch.Generator().manual_seed(2)
    lr = (0.5 + 0.02 * torch.randn(3, 60, 80, generator=g)).clamp(0, 1)
    sr = upscale_bicubic(lr, 2) + 0.05 * torch.randn(3, 120, 160, generator=g)
    box = (20, 10, 40, 30)
    out = guard_flat(sr.clone(), lr, [(torch.ones(1, 60, 80), box)])
    x0, y0, bw, bh = box
    inside = (slice(None), slice(2 * y0, 2 * (y0 + bh)), slice(2 * x0, 2 * (x0 + bw)))
    torch.testing.assert_close(out[inside], sr[inside], atol=1e-6, rtol=0)
    assert _fine(out[:, :, :30], 2) < 0.1 * _fine(sr[:, :, :30], 2)  # outside it, guarded as before
    assert _mid(out[:, :, :30], 2) < 0.5 * _mid(sr[:, :, :30], 2)
    # a reference at another density (a triple-camera network's wide) is resampled onto the output's
    denser = guard_flat(sr.clone(), lr, [(torch.ones(1, 120, 160), box)])
    torch.testing.assert_close(denser, out, atol=1e-6, rtol=0)


def test_in_bands_equals_the_whole_image() -> None:
    g = torch.Generator().manual_seed(3)
    lr = scene("picos")[:, :50, :70].contiguous()
    sr = upscale_bicubic(lr, 2) + 0.03 * torch.randn(3, 100, 140, generator=g)
    valid = (torch.rand(1, 40, 60, generator=g) > 0.3).float()
    refs = [(valid, (5, 3, 30, 20)), (torch.ones(1, 20, 20), (40, 20, 10, 10))]
    whole = guard_flat(sr.clone(), lr, refs, band=1000)
    banded = guard_flat(sr.clone(), lr, refs, band=7)
    torch.testing.assert_close(banded, whole, atol=1e-5, rtol=0)


def test_quiet_flat_takes_a_photo_s_own_noise_out_of_its_flat_areas_and_keeps_its_edges() -> None:
    g = torch.Generator().manual_seed(5)
    clean = torch.full((3, 64, 96), 0.3)
    clean[:, :, 48:] = 0.7  # one strong edge
    noisy = (clean + 0.02 * torch.randn(3, 64, 96, generator=g)).clamp(0, 1)
    quiet = quiet_flat(noisy)
    flat = (slice(None), slice(8, 56), slice(8, 36))
    assert float(quiet[flat].std()) < 0.25 * float(noisy[flat].std())
    assert abs(float((quiet - noisy).mean())) < 1e-3  # tones kept
    step = quiet[:, :, 50].mean() - quiet[:, :, 45].mean()
    assert float(step) > 0.95 * float(noisy[:, :, 50].mean() - noisy[:, :, 45].mean())
    # the floor is measured where ``where`` says: a black invalid half (energy 0) would make it 0
    half = torch.cat([torch.zeros(3, 64, 48), noisy[:, :, :48]], dim=2)
    where = torch.cat([torch.zeros(1, 64, 48), torch.ones(1, 64, 48)], dim=2)
    assert float(quiet_flat(half)[:, 8:56, 56:84].std()) > 0.9 * float(noisy[flat].std())
    assert float(quiet_flat(half, where)[:, 8:56, 56:84].std()) < 0.25 * float(noisy[flat].std())
