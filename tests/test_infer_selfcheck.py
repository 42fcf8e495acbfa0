"""The per-capture self-check keeps the network's detail where the tele says it helps, bicubic where it hurts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli import camera
from dzcli.infer.selfcheck import blend_outside, residual_gain
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
    helps = residual_gain(Residual("sharpen"), lr, ref, box, patch=48, patches=4)
    hurts = residual_gain(Residual("noise"), lr, ref, box, patch=48, patches=4)
    assert helps > 0.5 and hurts < 0.1
    mask = torch.zeros(1, *ref.shape[-2:])  # nothing valid to measure on: leave the network alone
    assert residual_gain(Residual("noise"), lr, ref, box, mask, patch=48) == 1.0


def test_blend_keeps_the_box_and_moves_the_rest_towards_bicubic() -> None:
    lr, _, box, _ = _capture()
    sr = Residual("noise")(lr[None])[0]
    bic = F.interpolate(lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0]
    x0, y0, w, h = box
    out = blend_outside(sr.clone(), lr, box, 0.0)
    assert torch.equal(
        out[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)],
        sr[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)],
    )
    far = (slice(None), slice(0, 2 * (y0 - 16)), slice(None))  # more than the feather away from the box
    torch.testing.assert_close(out[far], bic[far])
    assert torch.equal(blend_outside(sr.clone(), lr, box, 1.0), sr)
    torch.testing.assert_close(
        blend_outside(sr.clone(), lr, box, 0.3, band=16), blend_outside(sr.clone(), lr, box, 0.3)
    )
