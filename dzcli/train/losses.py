"""Training losses of the SelfDZSR recipe (DESIGN §4).

- :func:`masked_l1`: L1 over the pixels where the registration is valid.
- :func:`sliced_wasserstein` / :func:`local_sliced_wasserstein`: distance between the distributions of
  feature vectors projected on random directions, over the whole map or inside overlapping windows
  (LOSW, SelfDZSR++); both are 0 for equal inputs and positive otherwise.
- :class:`SlicedWassersteinLoss`: the perceptual term on frozen ImageNet VGG16 ``relu3_2``, ``relu4_2``,
  ``relu5_2`` (weights 1, 1, 2; total weight 0.08).
- :func:`aux_generator_loss`: the aux-LR generator's L1 to the real LR plus its position-preserving
  kernel penalty (weight 100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.errors import ConfigError
from dzsr_models.auxlr import AuxLRGenerator
from dzsr_models.pretrained import VGG16Features

#: (VGG16 layer, weight) of the perceptual term.
SW_LAYERS: tuple[tuple[str, float], ...] = (("relu3_2", 1.0), ("relu4_2", 1.0), ("relu5_2", 2.0))
#: Downsampling of each layer's map relative to the image (the max-pools before it).
_STRIDES = {"relu3_2": 4, "relu4_2": 8, "relu5_2": 16}


def masked_l1(sr: Tensor, hr: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error over valid pixels.

    Args:
        sr: ``(B, C, H, W)`` prediction.
        hr: ``(B, C, H, W)`` target.
        mask: ``(B, 1, H, W)`` weights in ``[0, 1]`` (1 = valid), or None (every pixel).

    Returns:
        Scalar: ``Σ mask·|sr − hr| / (C · Σ mask)``; 0 when no pixel is valid.
    """
    diff = (sr - hr).abs()
    if mask is None:
        return diff.mean()
    return (diff * mask).sum() / (mask.sum() * sr.shape[1]).clamp_min(1.0)


def random_directions(channels: int, count: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``count`` random unit directions in feature space (Gaussian, normalised), on the CPU.

    Returns:
        ``(count, channels)`` float32, unit L2 norm per row.
    """
    return F.normalize(torch.randn(count, channels, generator=generator), dim=1)


def sliced_wasserstein(a: Tensor, b: Tensor, directions: Tensor) -> Tensor:
    """Sliced Wasserstein-1 distance between the feature-vector distributions of two maps.

    Every spatial feature vector is projected on each direction; the projections are sorted over all
    positions, per sample and direction, and compared by mean absolute difference.

    Args:
        a: ``(B, C, H, W)`` features.
        b: ``(B, C, H, W)`` features.
        directions: ``(K, C)`` unit directions.

    Returns:
        Scalar, ``>= 0``; 0 when the maps hold the same vectors (in any spatial order).
    """
    pa = torch.einsum("bchw,kc->bkhw", a.float(), directions).flatten(2)
    pb = torch.einsum("bchw,kc->bkhw", b.float(), directions).flatten(2)
    return (pa.sort(dim=-1).values - pb.sort(dim=-1).values).abs().mean()


def losw_window(height: int, width: int, *, divisor: int = 6, minimum: int = 2) -> int:
    """Window side of the local sliced Wasserstein term for a ``height × width`` feature map.

    SelfDZSR++ uses ``side // 6`` (8, 4, 2 on the 48, 24, 12-pixel maps of a 192-pixel patch). Small
    patches would give empty windows: the side is raised to ``minimum`` and capped by the map itself.

    Returns:
        ``k`` with ``1 <= k <= min(height, width)``, or 0 when the map is empty.
    """
    side = min(height, width)
    if side <= 0:
        return 0
    return min(side, max(minimum, side // divisor))


def local_sliced_wasserstein(
    a: Tensor, b: Tensor, directions: Tensor, *, window: int, stride: int = 2
) -> Tensor:
    """Sliced Wasserstein-1 inside overlapping ``window × window`` windows (LOSW).

    The projections are sorted within each window (stride ``stride``, no padding), so the term compares
    local texture statistics while tolerating misalignment smaller than a window.

    Args:
        a: ``(B, C, H, W)`` features.
        b: ``(B, C, H, W)`` features.
        directions: ``(K, C)`` unit directions.
        window: Window side, ``1 <= window <= min(H, W)`` (see :func:`losw_window`).
        stride: Step between windows.

    Returns:
        Scalar, ``>= 0``.
    """
    H, W = a.shape[-2:]
    if not 1 <= window <= min(H, W):
        raise ConfigError(f"LOSW window {window} does not fit a {H}x{W} feature map")
    pa = torch.einsum("bchw,kc->bkhw", a.float(), directions)
    pb = torch.einsum("bchw,kc->bkhw", b.float(), directions)
    B, K = pa.shape[:2]
    # (B, K·window², L) -> (B, K, window², L): each column is one window's projections.
    ua = F.unfold(pa, window, stride=stride).view(B, K, window * window, -1)
    ub = F.unfold(pb, window, stride=stride).view(B, K, window * window, -1)
    return (ua.sort(dim=2).values - ub.sort(dim=2).values).abs().mean()


class SlicedWassersteinLoss(nn.Module):
    """Perceptual sliced Wasserstein term on frozen ImageNet VGG16 features.

    ``weight · Σ_l w_l · SW_l(VGG_l(sr·mask), VGG_l(hr·mask))`` over :data:`SW_LAYERS`, with ``C_l / 2``
    fresh random directions per layer and call. Layers whose feature map would be empty (``relu5_2``
    under 16 pixels, ``relu4_2`` under 8, ``relu3_2`` under 4) are skipped. The VGG weights are buffers:
    never trained, never in a checkpoint.

    Args:
        local: LOSW (windows, SelfDZSR++) instead of the global SW (SelfDZSR).
        weight: Overall weight (0.08).
        trunk_weights: ``"imagenet"`` (offline, see :mod:`dzsr_models.pretrained`) or ``"random"`` (tests).
        window_divisor: LOSW window = map side // this (see :func:`losw_window`).
    """

    def __init__(
        self,
        *,
        local: bool = True,
        weight: float = 0.08,
        trunk_weights: Literal["imagenet", "random"] = "imagenet",
        window_divisor: int = 6,
    ) -> None:
        super().__init__()
        self.local = local
        self.weight = weight
        self.window_divisor = window_divisor
        self.vgg = VGG16Features(SW_LAYERS[-1][0], weights=trunk_weights)
        self.vgg.requires_grad_(False)

    def forward(
        self, sr: Tensor, hr: Tensor, mask: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """The weighted term.

        Args:
            sr: ``(B, 3, H, W)`` prediction in ``[0, 1]`` (gradients flow to it).
            hr: ``(B, 3, H, W)`` target in ``[0, 1]``.
            mask: ``(B, 1, H, W)`` validity, applied to both images first; None: none.
            generator: CPU generator of the random directions.

        Returns:
            Scalar, ``>= 0``.
        """
        if mask is not None:
            sr, hr = sr * mask, hr * mask
        side = min(sr.shape[-2:])
        layers = [(name, w) for name, w in SW_LAYERS if side >= _STRIDES[name]]
        total = sr.new_zeros((), dtype=torch.float32)
        if not layers:
            return total
        names = tuple(name for name, _ in layers)
        fs = self.vgg.taps(sr, names)
        with torch.no_grad():
            fh = self.vgg.taps(hr, names)
        for name, w in layers:
            a, b = fs[name], fh[name]
            H, W = a.shape[-2:]
            dirs = random_directions(a.shape[1], a.shape[1] // 2, generator=generator).to(a.device)
            if self.local:
                k = losw_window(H, W, divisor=self.window_divisor)
                total = total + w * local_sliced_wasserstein(a, b, dirs, window=k)
            else:
                total = total + w * sliced_wasserstein(a, b, dirs)
        return self.weight * total


def aux_generator_loss(
    generator: AuxLRGenerator,
    aux: Tensor,
    lr: Tensor,
    mask: Tensor | None = None,
    *,
    position_weight: float = 100.0,
) -> Tensor:
    """Loss of the aux-LR generator: look like the LR, keep the HR's geometry.

    Args:
        generator: The generator (its 7×7, 5×5, 3×3 kernels get the position penalty).
        aux: ``(B, 3, H, W)`` its output.
        lr: ``(B, 3, H, W)`` the real LR.
        mask: ``(B, 1, H, W)`` validity at LR size, or None.
        position_weight: Weight of :meth:`~dzsr_models.auxlr.AuxLRGenerator.position_loss` (100).

    Returns:
        Scalar ``masked_l1(aux, lr, mask) + position_weight · position_loss``.
    """
    return masked_l1(aux, lr, mask) + position_weight * generator.position_loss()
