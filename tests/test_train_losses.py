"""Training losses: masked L1, sliced Wasserstein (global and local), the perceptual term, the aux loss."""

from __future__ import annotations

import pytest
import torch

from dzcli.errors import ConfigError
from dzcli.train.losses import (
    SlicedWassersteinLoss,
    aux_generator_loss,
    local_sliced_wasserstein,
    losw_window,
    masked_l1,
    random_directions,
    sliced_wasserstein,
)
from dzsr_models import create_model


def feats(seed: int, shape: tuple[int, ...] = (2, 16, 9, 11)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_masked_l1_ignores_invalid_pixels() -> None:
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert torch.allclose(masked_l1(a, b), (a - b).abs().mean())
    mask = torch.ones(2, 1, 8, 8)
    mask[:, :, :, :3] = 0
    changed = b.clone()
    changed[..., :3] += 5.0  # only invalid pixels change
    assert torch.allclose(masked_l1(a, b, mask), masked_l1(a, changed, mask))
    assert torch.allclose(masked_l1(a, b, mask), (a - b)[..., 3:].abs().mean())
    assert masked_l1(a, b, torch.zeros_like(mask)) == 0


def test_sliced_wasserstein_zero_for_equal_positive_otherwise() -> None:
    a, b = feats(0), feats(1)
    dirs = random_directions(16, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dirs.norm(dim=1), torch.ones(8))
    assert sliced_wasserstein(a, a.clone(), dirs) == 0
    assert sliced_wasserstein(a, b, dirs) > 0.1
    # A distribution distance: the same vectors in another spatial order are at distance 0.
    perm = torch.randperm(9 * 11, generator=torch.Generator().manual_seed(2))
    shuffled = a.flatten(2)[:, :, perm].view_as(a)
    assert sliced_wasserstein(a, shuffled, dirs) < 1e-6
    assert local_sliced_wasserstein(a, shuffled, dirs, window=3) > 0.1  # local: positions matter again


def test_local_sliced_wasserstein_zero_for_equal_positive_otherwise() -> None:
    a, b = feats(0), feats(1)
    dirs = random_directions(16, 8)
    for k in (1, 2, 4, 9):
        assert local_sliced_wasserstein(a, a.clone(), dirs, window=k) == 0
        assert local_sliced_wasserstein(a, b, dirs, window=k) > 0.1
    # Tolerates a shift inside the window better than a pointwise comparison.
    shifted = torch.roll(a, 1, dims=-1)
    pointwise = local_sliced_wasserstein(a, shifted, dirs, window=1)
    assert local_sliced_wasserstein(a, shifted, dirs, window=4) < 0.6 * pointwise
    with pytest.raises(ConfigError, match="does not fit"):
        local_sliced_wasserstein(a, b, dirs, window=10)
    with pytest.raises(ConfigError, match="does not fit"):
        local_sliced_wasserstein(a, b, dirs, window=0)


@pytest.mark.parametrize(
    ("shape", "window"),
    [((48, 48), 8), ((24, 24), 4), ((12, 12), 2), ((6, 6), 2), ((3, 5), 2), ((1, 7), 1), ((0, 5), 0)],
)
def test_losw_window_never_empty(shape: tuple[int, int], window: int) -> None:
    assert losw_window(*shape) == window


@pytest.mark.parametrize("local", [True, False])
def test_perceptual_term(local: bool) -> None:
    loss = SlicedWassersteinLoss(local=local, trunk_weights="random")
    hr = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    sr = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert loss(hr, hr.clone(), generator=torch.Generator().manual_seed(0)) == 0
    value = loss(sr, hr, generator=torch.Generator().manual_seed(0))
    assert value > 0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    # The 0.08 weight scales the whole term; the directions come from the generator.
    unit = SlicedWassersteinLoss(local=local, weight=1.0, trunk_weights="random")
    assert torch.allclose(unit(sr, hr, generator=torch.Generator().manual_seed(0)) * 0.08, value)
    # Where the mask is 0 nothing counts.
    mask = torch.zeros(2, 1, 48, 48)
    assert loss(sr, hr, mask, generator=torch.Generator().manual_seed(0)) == 0


@pytest.mark.parametrize("side", [8, 16, 20])
def test_perceptual_term_guards_tiny_patches(side: int) -> None:
    """relu5_2 is empty below 16 px and 1×1 at 16–31 px: no empty windows, finite values."""
    loss = SlicedWassersteinLoss(local=True, trunk_weights="random")
    sr = torch.rand(1, 3, side, side, requires_grad=True)
    value = loss(sr, torch.rand(1, 3, side, side))
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(sr.grad).all()


def test_aux_generator_loss() -> None:
    gen = create_model("auxlr-tiny", scale=2)
    hr, lr = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8)
    aux = gen(hr, lr)
    total = aux_generator_loss(gen, aux, lr)
    assert torch.allclose(total, masked_l1(aux, lr) + 100 * gen.position_loss())
    total.backward()
    assert gen.conv7.weight.grad is not None and gen.conv7.weight.grad.abs().sum() > 0
