"""The per-capture self-check keeps the network's detail where the tele says it helps, bicubic where it hurts,
and takes the wide camera's own sharpening out where the tele shows it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli import camera
from dzcli.infer.selfcheck import SelfCheck, _solve, base_band, blend_outside, fit_self_check
from dzsr_models.descriptor import ModelDescriptor

from .conftest import scene


class Residual(nn.Module):
    """A ×2 toy: bicubic plus ``residual(bicubic)``; it ignores the Ref."""

    scale = 2

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def describe(self) -> ModelDescriptor:
        return ModelDescriptor(scale=2, supports_half=False, bytes_per_pixel=64.0)

    def forward(self, lr: Tensor, ref: Tensor | None = None, box: object = None) -> Tensor:
        bic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        if self.kind == "sharpen":  # undoes some of the blur the capture added: detail that is there
            return camera.sharpen(bic[0], radius=1.2, amount=0.8)[None]
        g = torch.Generator().manual_seed(0)  # invents texture that is not there
        return bic + 0.05 * torch.randn(bic.shape, generator=g)


def _capture() -> tuple[Tensor, Tensor, tuple[int, int, int, int], Tensor]:
    truth = scene("life")[:, 40:328, 80:464]  # 288 x 384
    blurred = camera.blur(truth, camera.blur_kernel("isotropic", 1.2))
    lr = camera.downscale(blurred, 2.0)  # 144 x 192
    box = (48, 36, 96, 72)
    x0, y0, w, h = box
    return lr, truth[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)], box, truth


def test_the_gain_follows_what_the_tele_shows() -> None:
    lr, ref, box, _truth = _capture()
    helps = fit_self_check(Residual("sharpen"), lr, ref, box, patch=48, patches=4)
    hurts = fit_self_check(Residual("noise"), lr, ref, box, patch=48, patches=4)
    assert helps.gain > 0.5 and hurts.gain < 0.1
    mask = torch.zeros(1, *ref.shape[-2:])  # nothing valid to measure on: leave the network alone
    assert fit_self_check(Residual("noise"), lr, ref, box, mask, patch=48) == SelfCheck()


def test_blend_keeps_the_box_and_moves_the_rest_towards_bicubic() -> None:
    lr, _, box, _ = _capture()
    sr = Residual("noise")(lr[None])[0]
    bic = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0]
    x0, y0, w, h = box
    out = blend_outside(sr.clone(), lr, box, SelfCheck(gain=0.0))
    assert torch.equal(
        out[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)],
        sr[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)],
    )
    far = (slice(None), slice(0, 2 * (y0 - 16)), slice(None))  # more than the feather away from the box
    torch.testing.assert_close(out[far], bic[far])
    assert torch.equal(blend_outside(sr.clone(), lr, box, SelfCheck()), sr)
    for check in (SelfCheck(gain=0.3), SelfCheck(gain=0.3, base=-0.4)):  # bands of 16 rows = the whole
        torch.testing.assert_close(
            blend_outside(sr.clone(), lr, box, check, band=16), blend_outside(sr.clone(), lr, box, check)
        )
    softened = blend_outside(sr.clone(), lr, box, SelfCheck(gain=0.0, base=-0.4))
    torch.testing.assert_close(softened[far], bic[far] - 0.4 * base_band(bic, 2)[far])


def test_where_the_tele_is_not_valid_the_box_is_treated_as_outside() -> None:
    lr, _, box, _ = _capture()
    sr = Residual("noise")(lr[None])[0]
    bic = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0]
    x0, y0, w, h = box
    mask = torch.ones(1, 2 * h, 2 * w)
    mask[:, :, w:] = 0.0  # the right half of the tele is not valid (a moving subject, parallax)
    check = SelfCheck(gain=0.0, base=-0.4)
    out = blend_outside(sr.clone(), lr, box, check, mask)
    rows = slice(2 * y0, 2 * (y0 + h))
    left = (slice(None), rows, slice(2 * x0, 2 * x0 + w - 8))  # clear of the softened seam (3 sigma)
    right = (slice(None), rows, slice(2 * x0 + w + 8, 2 * (x0 + w)))
    torch.testing.assert_close(out[left], sr[left])
    softened = bic - 0.4 * base_band(bic, 2)
    torch.testing.assert_close(out[right], softened[right])
    torch.testing.assert_close(out, blend_outside(sr.clone(), lr, box, check, mask, band=16))
    assert torch.equal(
        blend_outside(sr.clone(), lr, box, check, torch.ones(1, 2 * h, 2 * w)),
        blend_outside(sr.clone(), lr, box, check),
    )


def test_the_fit_recovers_known_coefficients_within_its_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    r, h = (
        torch.randn(5000, generator=g, dtype=torch.float64),
        torch.randn(5000, generator=g, dtype=torch.float64),
    )
    h = h + 0.3 * r  # correlated, as a residual and a band of the same photo are

    def fit(t: torch.Tensor) -> SelfCheck:
        return _solve(*(float((a * b).sum()) for a, b in ((r, r), (r, h), (h, h), (r, t), (h, t))))

    check = fit(0.6 * r - 0.3 * h)
    assert abs(check.gain - 0.6) < 1e-9 and abs(check.base + 0.3) < 1e-9
    sharper = fit(0.6 * r + 0.3 * h)  # a tele sharper than the wide: maybe its own sharpening, not followed
    assert sharper.base == 0.0 and 0.0 <= sharper.gain <= 1.0
    capped = fit(1.5 * r - 0.3 * h)  # alpha capped at 1, beta refitted given it
    assert capped.gain == 1.0 and -0.6 < capped.base < 0.0


def test_a_perceptual_network_keeps_its_detail_and_the_wide_s_sharpening_still_goes() -> None:
    """Texture drawn with the scene's statistics but not its phase (a perceptual network's) fits the tele
    badly pixel by pixel: least squares would throw it away; the perceptual fit keeps it whole and still
    measures the wide camera's sharpening, which is in phase with the tele."""
    g = torch.Generator().manual_seed(1)
    n = 5000
    r, h = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(2))
    scene_detail = torch.randn(n, generator=g, dtype=torch.float64)  # the tele's: same statistics as r
    t = scene_detail - 0.4 * h
    sums = [float((a * b).sum()) for a, b in ((r, r), (r, h), (h, h), (r, t), (h, t))]
    assert _solve(*sums).gain < 0.1  # least squares: nearly nothing of the drawn texture
    kept = _solve(*sums, perceptual=True)
    assert kept.gain == 1.0 and abs(kept.base + 0.4) < 0.05
    sharper = _solve(
        *[float((a * b).sum()) for a, b in ((r, r), (r, h), (h, h), (r, r + 0.3 * h), (h, r + 0.3 * h))],
        perceptual=True,
    )
    assert sharper == SelfCheck()  # a tele sharper than the wide: β stays 0 (never positive)
    lr, ref, box, _ = _capture()  # through the whole fit: the invented texture kept at x1
    assert fit_self_check(Residual("noise"), lr, ref, box, patch=48, patches=4, perceptual=True).gain == 1.0
    sharpened = camera.sharpen(lr, radius=1.5, amount=1.0)
    assert (
        fit_self_check(Residual("sharpen"), sharpened, ref, box, patch=48, patches=4, perceptual=True).base
        < -0.2
    )


def test_a_wide_photo_its_camera_sharpened_is_softened_outside_the_tele() -> None:
    """The wide camera's unsharp mask (halos, amplified texture) is in the wide photo, not in the tele: the
    self-check measures it under the tele and takes it out of the rest of the photo, which comes closer to
    the truth than the network's output alone; on an unsharpened wide photo it leaves the base alone."""
    lr, ref, box, truth = _capture()
    sharpened = camera.sharpen(lr, radius=1.5, amount=1.0)
    model = Residual("sharpen")
    check = fit_self_check(model, sharpened, ref, box, patch=48, patches=4)
    assert check.base < -0.2
    plain = fit_self_check(model, lr, ref, box, patch=48, patches=4)
    assert plain.base > -0.1
    sr = model(sharpened[None])[0].clamp(0, 1)
    out = blend_outside(sr.clone(), sharpened, box, check)
    x0, y0, w, h = box
    outside = torch.ones(1, *truth.shape[-2:], dtype=torch.bool)
    outside[:, 2 * (y0 - 16) : 2 * (y0 + h + 16), 2 * (x0 - 16) : 2 * (x0 + w + 16)] = False

    def err(x: torch.Tensor) -> float:
        return float(((x - truth) ** 2)[outside.expand_as(x)].mean())

    assert err(out) < 0.8 * err(sr)
