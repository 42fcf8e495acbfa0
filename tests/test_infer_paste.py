"""Pasting the tele at its own density: geometry recovered exactly, only where it is valid, feathered."""

from __future__ import annotations

import pytest
import torch

from dzcli.infer.paste import footprint_span, paste_reference


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
    image = torch.zeros(3, round(40 * density), round(30 * density))
    out = paste_reference(
        image, _linear_ref(box, scale), torch.ones(1, 14 * scale, 20 * scale), box, scale, density, feather=1
    )
    xa, xb = footprint_span(10, 20, density)
    ya, yb = footprint_span(6, 14, density)
    u = (torch.arange(xa, xb) + 0.5) / density - 0.5  # uw coordinates of the output pixels' centres
    v = (torch.arange(ya, yb) + 0.5) / density - 0.5
    assert u.min() >= 9.5 and u.max() <= 29.5 and v.min() >= 5.5 and v.max() <= 19.5  # inside the box
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    expected = torch.stack((uu, vv, uu + vv)) / 100
    torch.testing.assert_close(out[:, ya:yb, xa:xb], expected, atol=1e-5, rtol=0)
    outside = torch.ones_like(out, dtype=torch.bool)
    outside[:, ya:yb, xa:xb] = False
    assert not out[outside].any()  # nothing outside the footprint changed


def test_only_valid_pixels_are_pasted_and_edges_fade() -> None:
    box, s = (4, 4, 16, 16), 2
    image = torch.full((3, 48, 48), 0.25)
    ref = torch.full((3, 32, 32), 0.75)
    mask = torch.ones(1, 32, 32)
    mask[:, :, :16] = 0  # the left half of the tele is not valid (occlusion, parallax)
    out = paste_reference(image, ref, mask, box, s, 2.0, feather=4)
    region = out[:, 8:40, 8:40]
    assert torch.equal(region[:, :, :15], image[:, 8:40, 8:23])  # invalid: untouched
    assert torch.allclose(region[:, 6:26, 20:28], torch.tensor(0.75))  # valid interior: the tele
    edge = region[0, 16, 16:]
    assert edge[-1] < edge[-4] == pytest.approx(0.75)  # fading towards the footprint's right edge
    assert torch.equal(paste_reference(image, ref, torch.zeros_like(mask), box, s, 2.0), image)


def test_a_footprint_outside_the_image_changes_nothing() -> None:
    image = torch.rand(3, 20, 20)
    out = paste_reference(image, torch.rand(3, 8, 8), torch.ones(1, 8, 8), (30, 30, 4, 4), 2, 2.0)
    assert torch.equal(out, image) and out is not image
