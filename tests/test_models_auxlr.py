"""Auxiliary-LR generator: shapes, the position-preserving loss, and noise injection."""

from __future__ import annotations

import itertools

import pytest
import torch

from dzcli.errors import InputError
from dzsr_models import create_model
from dzsr_models.auxlr import AuxLRGenerator, inject_noise, position_loss


def gaussian(k: int, dy: float, dx: float, sigma: float = 1.0) -> torch.Tensor:
    """(1, 1, k, k) Gaussian blob centred at (dy, dx) from the kernel centre."""
    u = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-((u.view(k, 1) - dy) ** 2 + (u.view(1, k) - dx) ** 2) / (2 * sigma**2))
    return (g / g.sum()).view(1, 1, k, k)


@pytest.mark.parametrize("scale", [2, 4])
def test_generator_shapes_and_gradients(scale):
    torch.manual_seed(0)
    gen = create_model("auxlr-tiny", scale=scale)
    lr = torch.rand(2, 3, 13, 10)
    hr = torch.rand(2, 3, 13 * scale, 10 * scale)
    aux = gen(hr, lr)
    assert aux.shape == lr.shape and torch.isfinite(aux).all()
    loss = (aux - lr).abs().mean() + 100 * gen.position_loss()
    loss.backward()
    assert all(p.grad is not None for p in gen.parameters())
    with pytest.raises(InputError):
        gen(hr[..., :-1], lr)


def test_position_loss_zero_for_symmetric_kernels():
    gen = torch.Generator().manual_seed(1)
    for k in (3, 5, 7):
        w = torch.randn(4, 3, k, k, generator=gen)
        sym = w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)
        assert position_loss([sym]) < 1e-6
        assert position_loss([gaussian(k, 0.0, 0.0)]) < 1e-9
    assert position_loss([torch.randn(4, 3, 5, 5, generator=gen)]) > 1e-3


@pytest.mark.parametrize("k", [3, 5, 7])
def test_position_loss_grows_with_shift(k):
    shifts = [0.0, 0.25, 0.5, 0.75, 1.0]
    for direction in ((1.0, 0.0), (0.0, 1.0), (0.7, -0.7)):
        values = [position_loss([gaussian(k, d * direction[0], d * direction[1])]).item() for d in shifts]
        assert values[0] < 1e-9
        assert all(b > a for a, b in itertools.pairwise(values)), values
    # An off-centre delta: linear in the offset.
    deltas = []
    for offset in range(k // 2 + 1):
        w = torch.zeros(1, 1, k, k)
        w[0, 0, k // 2 + offset, k // 2] = 1.0
        deltas.append(position_loss([w]).item())
    assert deltas[0] == 0 and all(b > a for a, b in itertools.pairwise(deltas))


def test_module_position_loss_covers_the_spatial_kernels():
    gen = AuxLRGenerator(scale=2, channels=4)
    with torch.no_grad():
        for conv in (gen.conv7, gen.conv5, gen.conv3):
            conv.weight.copy_(
                conv.weight + conv.weight.flip(-1) + conv.weight.flip(-2) + conv.weight.flip(-1, -2)
            )
    assert gen.position_loss() < 1e-6
    with torch.no_grad():
        gen.conv5.weight[:, :, 0, 2] += 1.0
    assert gen.position_loss() > 0.01


def test_inject_noise_is_unbiased_bounded_and_gradient_free():
    grey = 128 / 255  # exactly representable in 8 bits, so only the noise and JPEG contribute
    hr = torch.full((8, 3, 192, 192), grey)
    aux = torch.full((8, 3, 96, 96), grey, requires_grad=True)
    gen = torch.Generator().manual_seed(2)
    out = inject_noise(aux, hr, scale=2, generator=gen)
    assert out.shape == aux.shape and not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1
    residual = out - grey
    # 8-bit truncation (the reference code's bug) would bias the mean by about -0.5/255.
    assert abs(residual.mean().item()) < 0.5e-3
    per_sample = residual.flatten(1).std(dim=1)
    assert (per_sample > 2 / 255).all() and (per_sample < 31 / 255).all()
    again = inject_noise(aux, hr, scale=2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, again)


def test_inject_noise_ranges_are_respected():
    hr = torch.full((2, 3, 64, 64), 0.5)
    aux = torch.full((2, 3, 16, 16), 0.5)
    quiet = inject_noise(aux, hr, scale=4, sigma=(0.0, 0.0), quality=(95, 95))
    assert (quiet - aux).abs().max() < 1.5 / 255  # a flat image survives JPEG almost exactly
    loud = inject_noise(aux, hr, scale=4, sigma=(0.1, 0.1), quality=(95, 95))
    assert 0.06 < (loud - aux).std() < 0.12
    with pytest.raises(InputError):
        inject_noise(aux, hr[..., :-4], scale=4)
