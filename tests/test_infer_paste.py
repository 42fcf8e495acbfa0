"""The tele's detail at its own density: geometry recovered exactly, the band the output lacks added only
where the tele is valid, feathered, its noise shrunk away."""

from __future__ import annotations

import pytest
import torch

from dzcli.infer.paste import detail_band, footprint_span, paste_reference, sample_reference
from dzcli.resize import resample

from .conftest import scene


def _linear_ref(box: tuple[int, int, int, int], scale: int) -> torch.Tensor:
    """A reference sampling f(u, v) = (u, v, u + v) / 100 at its own pixel centres (uw coordinates)."""
    x0, y0, w, h = box
    u = x0 + (torch.arange(scale * w) + 0.5) / scale - 0.5
    v = y0 + (torch.arange(scale * h) + 0.5) / scale - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu, vv, uu + vv)) / 100


@pytest.mark.parametrize(("density", "scale"), [(4.0, 4), (3.0, 4), (5.9, 6), (2.5, 3)])
def test_a_known_function_lands_on_the_output_grid(density: float, scale: int) -> None:
    box = (10, 6, 20, 14)
    size = (round(40 * density), round(30 * density))
    sampled, valid, span = sample_reference(
        _linear_ref(box, scale), torch.ones(1, 14 * scale, 20 * scale), box, scale, density, size
    )
    xa, xb = footprint_span(10, 20, density)
    ya, yb = footprint_span(6, 14, density)
    assert span == (xa, xb, ya, yb)
    u = (torch.arange(xa, xb) + 0.5) / density - 0.5  # uw coordinates of the output pixels' centres
    v = (torch.arange(ya, yb) + 0.5) / density - 0.5
    assert u.min() >= 9.5 and u.max() <= 29.5 and v.min() >= 5.5 and v.max() <= 19.5  # inside the box
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    expected = torch.stack((uu, vv, uu + vv)) / 100
    torch.testing.assert_close(sampled, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(valid, torch.ones_like(valid))


def _photo(h: int, w: int, top: int = 0) -> torch.Tensor:
    """A crop of a real photo: detail that is sparse (edges, texture patches), as in photographs."""
    return scene("picos")[:, top : top + h, :w].contiguous()


def test_the_output_gets_the_tele_s_detail_above_its_own_scale() -> None:
    # The output holds the scene up to the network's scale (2 per uw px), the tele holds it at 6: pasting
    # brings the output close to the tele inside the footprint, closer than it was.
    density, base, box = 6.0, 2.0, (0, 0, 40, 30)
    tele = _photo(180, 240)
    image = resample(resample(tele, (60, 80)), (180, 240))  # the tele taken down to 2x and back
    out = paste_reference(image, tele, torch.ones(1, 180, 240), box, 6, density, base, feather=1)
    inner = (slice(None), slice(12, -12), slice(12, -12))
    before = float((image - tele)[inner].pow(2).mean())
    after = float((out - tele)[inner].pow(2).mean())
    assert after < 0.1 * before


def test_the_band_between_the_uw_and_the_network_is_pulled_part_way_and_the_uw_s_band_kept() -> None:
    # The output holds the scene only up to the uw's density, with a colour offset (the tele's colour match
    # and the uw disagree): its band between 1 and 2 per uw px moves band_pull of the way to the tele's, its
    # tones below 1 stay its own.
    density, base, box = 6.0, 2.0, (0, 0, 40, 30)
    tele = _photo(180, 240)

    def low(x: torch.Tensor, s: float) -> torch.Tensor:
        return resample(resample(x, (round(180 * s / density), round(240 * s / density))), (180, 240))

    image = (low(tele, 1.0) + 0.03).clamp(0, 1)
    inner = (slice(None), slice(24, -24), slice(24, -24))
    want = (low(tele, 2.0) - low(tele, 1.0))[inner]
    left = []
    for pull in (0.0, 0.5, 1.0):
        out = paste_reference(
            image, tele, torch.ones(1, 180, 240), box, 6, density, base, feather=1, band_pull=pull
        )
        middle = (low(out, 2.0) - low(out, 1.0))[inner]
        left.append(float((middle - want).pow(2).mean() / want.pow(2).mean()))
        assert abs(float((low(out, 1.0) - low(tele, 1.0))[inner].mean()) - 0.03) < 0.003
    assert left[2] < 0.02 < left[1] < 0.5 * left[0]  # without the pull, only what the band above 2 leaks


def test_only_valid_pixels_are_pasted_and_edges_fade() -> None:
    box, s = (4, 4, 16, 16), 4
    image = torch.full((3, 96, 96), 0.5)
    ref = _photo(64, 64, top=200)
    mask = torch.ones(1, 64, 64)
    mask[:, :, :32] = 0  # the left half of the tele is not valid (occlusion, parallax)
    out = paste_reference(image, ref, mask, box, s, 4.0, 2.0, feather=8)
    region = (out - image)[:, 16:80, 16:80]
    assert torch.equal(region[:, :, :31], torch.zeros(3, 64, 31))  # invalid: untouched
    added = region.abs().mean(dim=(0, 1))
    assert added[40:56].mean() > 0.005  # valid interior: the tele's detail
    assert added[-1] < 0.5 * added[40:56].mean()  # fading towards the footprint's right edge
    assert torch.equal(paste_reference(image, ref, torch.zeros_like(mask), box, s, 4.0, 2.0), image)


def test_the_tele_s_noise_alone_is_not_pasted() -> None:
    # A flat scene: the tele's band above the network's scale is its noise only, and is shrunk away; a
    # textured scene under the same noise keeps most of its detail.
    g = torch.Generator().manual_seed(2)
    noise = 0.02 * torch.randn(3, 120, 160, generator=g)
    ones = torch.ones(1, 120, 160)
    flat = detail_band((0.5 + noise).clamp(0, 1), ones, 2.0, 6.0)
    assert float(flat.pow(2).mean()) < 0.05 * float(noise.pow(2).mean())
    photo = _photo(120, 160, top=100)
    band = photo - resample(resample(photo, (40, 53)), (120, 160))
    kept = detail_band((photo + noise).clamp(0, 1), ones, 2.0, 6.0)
    assert float((kept - band).pow(2).mean()) < 0.5 * float(band.pow(2).mean())


def test_a_footprint_outside_the_image_changes_nothing() -> None:
    image = torch.rand(3, 20, 20)
    out = paste_reference(image, torch.rand(3, 8, 8), torch.ones(1, 8, 8), (30, 30, 4, 4), 4, 4.0, 2.0)
    assert torch.equal(out, image) and out is not image
