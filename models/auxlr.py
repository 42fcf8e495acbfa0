"""Auxiliary-LR generator (training only): an LR-looking image with the HR's geometry (DESIGN §4).

The generator sees the HR by space-to-depth (so every output pixel is built from the ``s×s`` HR pixels
it covers) and the real LR only through a globally pooled vector (blur, colour, no positions). Its
spatial kernels are kept centred by :func:`position_loss`, so it cannot move content: the aux-LR stays
aligned with the HR while looking like the LR (L1 to the LR). :func:`inject_noise` then adds realistic
sensor noise and JPEG artefacts (without gradient) before the aux-LR guides the SR network.

Recommended loss (trainer): ``L1(aux, lr) + 100 · generator.position_loss()``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from dzcli.errors import ConfigError, InputError

from .dzsr import RGB_MEAN


def position_loss(kernels: Iterable[Tensor]) -> Tensor:
    """First-moment (shift) penalty on square conv kernels.

    For every ``(out, in)`` kernel ``K`` of size ``k×k`` with centred coordinates ``u = -k//2 … k//2``:
    the vertical first moment of each column ``|mean_i K[i, j]·u_i|`` and the horizontal first moment of
    each row ``|mean_j K[i, j]·u_j|``, averaged over rows, columns and kernels; summed over the kernels
    given. It is 0 for any kernel symmetric about its centre and grows with the kernel's shift.

    Args:
        kernels: Conv weights ``(O, I, k, k)``, ``k`` odd.

    Returns:
        Scalar tensor.
    """
    total: Tensor | None = None
    for w in kernels:
        k = w.shape[-1]
        if w.dim() != 4 or w.shape[-2] != k or k % 2 == 0:
            raise ConfigError(f"position_loss needs odd square kernels (O, I, k, k), got {tuple(w.shape)}")
        u = torch.arange(k, dtype=w.dtype, device=w.device) - k // 2
        columns = (w * u.view(k, 1)).mean(dim=-2).abs()
        rows = (w * u.view(1, k)).mean(dim=-1).abs()
        term = torch.cat((columns, rows), dim=-1).mean()
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("position_loss needs at least one kernel")
    return total


class AuxLRGenerator(nn.Module):
    """Maps the HR (with a global hint from the LR) to an LR-like image aligned with the HR.

    Guide: ``concat(s2d(HR), LR)`` → conv 7×7 stride 2 → 3 convs 3×3 → global pool → linear: ``g`` (C).
    Main: ``x = ReLU(conv1×1(s2d(HR))) · (1 + g)`` → conv 7×7, 5×5, 3×3 (ReLU) → three conv 1×1 (ReLU)
    ``+ x`` → conv 1×1 to RGB. Inputs are mean-shifted; the mean is added back at the output.

    Args:
        scale: ``s``.
        channels: ``C``.
    """

    arch = "auxlr"

    mean: Tensor

    def __init__(self, *, scale: int = 4, channels: int = 64) -> None:
        super().__init__()
        if scale < 1 or channels < 1:
            raise ConfigError(f"invalid AuxLRGenerator size: scale={scale}, channels={channels}")
        self.hparams: dict[str, Any] = {"scale": scale, "channels": channels}
        self.scale = scale
        cin = 3 * scale * scale
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.guide = nn.Sequential(
            nn.Conv2d(cin + 3, channels, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.guide_fc = nn.Linear(channels, channels)
        self.head = nn.Conv2d(cin, channels, 1)
        self.conv7 = nn.Conv2d(channels, channels, 7, padding=3)
        self.conv5 = nn.Conv2d(channels, channels, 5, padding=2)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.mix = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, hr: Tensor, lr: Tensor) -> Tensor:
        """Make the aux-LR.

        Args:
            hr: ``(B, 3, s·H, s·W)`` RGB in ``[0, 1]``.
            lr: ``(B, 3, H, W)`` RGB in ``[0, 1]``, the real LR (used globally only).

        Returns:
            ``(B, 3, H, W)``, aligned with ``hr``, not clamped.
        """
        s = self.scale
        if hr.shape[0] != lr.shape[0] or tuple(hr.shape[-2:]) != (s * lr.shape[-2], s * lr.shape[-1]):
            raise InputError(f"hr {tuple(hr.shape)} must be {s}x the lr {tuple(lr.shape)}")
        s2d = F.pixel_unshuffle(hr - self.mean, s)
        g = self.guide_fc(self.guide(torch.cat((s2d, lr - self.mean), dim=1)).mean(dim=(2, 3)))
        x = F.relu(self.head(s2d)) * (1 + g.view(g.shape[0], -1, 1, 1))
        y = F.relu(self.conv3(F.relu(self.conv5(F.relu(self.conv7(x))))))
        return self.out(self.mix(y) + x) + self.mean

    def position_loss(self) -> Tensor:
        """:func:`position_loss` of the 7×7, 5×5 and 3×3 kernels (scalar; weight it by 100)."""
        return position_loss((self.conv7.weight, self.conv5.weight, self.conv3.weight))


def _jpeg(images: Tensor, qualities: list[int]) -> Tensor:
    """JPEG round trip of ``(B, 3, H, W)`` in ``[0, 1]`` (rounded to 8 bits for the codec only)."""
    codes = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img, q in zip(codes, qualities, strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255


@torch.no_grad()
def inject_noise(
    aux: Tensor,
    hr: Tensor,
    *,
    scale: int,
    sigma: tuple[float, float] = (5 / 255, 30 / 255),
    quality: tuple[int, int] = (60, 95),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add realistic noise to the aux-LR, without gradient.

    The HR is downsampled by ``s`` (bicubic, antialiased) to a clean LR-size image; Gaussian noise (σ
    uniform in ``sigma``, per sample) and a JPEG round trip (quality uniform in ``quality``) are applied to
    it in a random order, all in float RGB ``[0, 1]`` (8-bit rounding only inside the JPEG codec); the
    difference ``degraded − clean`` is added to the aux-LR, then clamped to ``[0, 1]``.

    Args:
        aux: ``(B, 3, H, W)`` aux-LR (detached here).
        hr: ``(B, 3, s·H, s·W)`` the HR it was made from, in ``[0, 1]``.
        scale: ``s``.
        sigma: Range of the Gaussian noise standard deviation (``[0, 1]`` units).
        quality: Range of the JPEG quality, inclusive.
        generator: CPU random generator for reproducibility.

    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``, no gradient.
    """
    aux = aux.detach()
    B, _, H, W = aux.shape
    if tuple(hr.shape) != (B, 3, scale * H, scale * W):
        raise InputError(f"hr {tuple(hr.shape)} must be {scale}x the aux-LR {tuple(aux.shape)}")
    clean = F.interpolate(hr.float(), size=(H, W), mode="bicubic", align_corners=False, antialias=True)
    sig = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(B, generator=generator)
    qs = torch.randint(quality[0], quality[1] + 1, (B,), generator=generator).tolist()
    noise_first = torch.rand(B, generator=generator) < 0.5
    noise = torch.randn(B, 3, H, W, generator=generator) * sig.view(B, 1, 1, 1)
    noise = noise.to(clean.device)
    order = noise_first.to(clean.device).view(B, 1, 1, 1)
    a = _jpeg(clean + noise, qs)  # noise, then JPEG
    b = _jpeg(clean, qs) + noise  # JPEG, then noise
    degraded = torch.where(order, a, b)
    return (aux + (degraded - clean).to(aux.dtype)).clamp(0, 1)
