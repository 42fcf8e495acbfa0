"""Registry and safetensors checkpoints: create_model, list_models, save → load round trips."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from dzcli import __version__
from dzcli.errors import ConfigError, WeightsError
from dzsr_models import (
    CHECKPOINT_FORMAT_VERSION,
    PRESETS,
    create_model,
    list_models,
    load_checkpoint,
    rescale_model,
    save_checkpoint,
    with_middle_camera,
)
from dzsr_models.dzsr import DZSR, centre_box, crop_ref

TINY = [name for name in list_models() if name.endswith("-tiny")]


def run(model: torch.nn.Module, scale: int) -> torch.Tensor:
    """Deterministic eval output of any registered model on fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 15, 18, generator=gen)
    hr = torch.rand(1, 3, 15 * scale, 18 * scale, generator=gen)
    with torch.no_grad():
        if not isinstance(model, DZSR):
            return model(hr, lr)
        box = centre_box(15, 18, scale)
        extra = {}
        if model.ref2_scale is not None:
            r, box2 = model.ref2_scale, centre_box(15, 18, 2)
            extra = {"ref2": torch.rand(1, 3, r * box2[3], r * box2[2], generator=gen), "box2": box2}
        return model(lr, crop_ref(hr, box, scale), box, **extra)


def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(PRESETS) and {"dzsr-base", "dzsr-small", "dzsr-tiny", "tzsr-tiny", "auxlr"} <= set(
        names
    )


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_and_records_hparams(name):
    model = create_model(name, scale=2)
    assert model.hparams["scale"] == 2
    arch, defaults = PRESETS[name]
    assert model.arch == arch and all(model.hparams[k] == v for k, v in defaults.items())


def test_create_model_errors_and_none_dropping():
    with pytest.raises(ConfigError, match="dzsr-base, dzsr-small, dzsr-tiny"):
        create_model("edsr")
    with pytest.raises(ConfigError, match="unknown hyper-parameters \\['chanels'\\]"):
        create_model("dzsr-tiny", chanels=4)
    model = create_model("dzsr-tiny", scale=None, channels=None)
    assert model.hparams["scale"] == 4 and model.hparams["channels"] == PRESETS["dzsr-tiny"][1]["channels"]


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip(tmp_path, name, scale):
    torch.manual_seed(1)
    model = create_model(name, scale=scale).eval()
    summary = {"steps": 12, "data": {"pairs": 3, "manifest": "abc"}, "psnr": 31.5}
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"training": summary, "name": name})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left behind
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta["training"] == summary and meta["name"] == name
    assert meta["arch"] == model.arch and meta["hparams"] == model.hparams and meta["scale"] == scale
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION and meta["dzsr_version"] == __version__
    assert torch.equal(run(loaded, scale), run(model, scale))


def test_checkpoint_holds_trainable_weights_only(tmp_path):
    model = create_model("dzsr-tiny", scale=4)
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={})
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        stored = sum(fh.get_tensor(k).numel() for k in keys)
        header = json.loads(fh.metadata()["dzsr"])
    assert keys == {n for n, _ in model.named_parameters()}
    assert not any("trunk" in k or "matcher" in k for k in keys)  # the frozen VGG comes from pretrained.py
    assert stored == sum(p.numel() for p in model.parameters())
    assert header["dtype"] == "float32"


def test_half_precision_checkpoint(tmp_path):
    torch.manual_seed(2)
    model = create_model("dzsr-tiny", scale=2).eval()
    full = save_checkpoint(model, tmp_path / "full.safetensors", metadata={})
    half = save_checkpoint(model, tmp_path / "half.safetensors", metadata={}, dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = load_checkpoint(half)
    assert meta["dtype"] == "float16"
    for (name, p), q in zip(model.named_parameters(), loaded.parameters(), strict=True):
        assert q.dtype == torch.float32 and torch.equal(q, p.half().float()), name
    torch.testing.assert_close(run(loaded, 2), run(model, 2), atol=2e-2, rtol=0)


def test_overwrite_is_atomic_replacement(tmp_path):
    a, b = create_model("auxlr-tiny", scale=2), create_model("auxlr-tiny", scale=2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(a, path, metadata={"which": "a"})
    save_checkpoint(b, path, metadata={"which": "b"})
    loaded, meta = load_checkpoint(path)
    assert meta["which"] == "b" and torch.equal(run(loaded, 2), run(b.eval(), 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_errors(tmp_path):
    model = create_model("dzsr-tiny")
    with pytest.raises(ConfigError, match="reserved"):
        save_checkpoint(model, tmp_path / "m.safetensors", metadata={"arch": "x"})
    with pytest.raises(ConfigError, match="JSON"):
        save_checkpoint(model, tmp_path / "m.safetensors", metadata={"x": object()})
    with pytest.raises(ConfigError, match="not a registered"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m.safetensors", metadata={})
    assert list(tmp_path.iterdir()) == []


def test_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="safetensors"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsError, match="not a dzsr checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.safetensors"
    save_file({"w": torch.zeros(2)}, str(newer), metadata={"dzsr": json.dumps({"format_version": 99})})
    with pytest.raises(WeightsError, match="newer"):
        load_checkpoint(newer)
    wrong = tmp_path / "wrong.safetensors"
    meta = {"format_version": 1, "arch": "auxlr", "hparams": {"scale": 2, "channels": 8}}
    save_file({"w": torch.zeros(2)}, str(wrong), metadata={"dzsr": json.dumps(meta)})
    with pytest.raises(WeightsError, match="do not fit"):
        load_checkpoint(wrong)


@pytest.mark.parametrize(("old", "new"), [(2, 4), (4, 2)])
def test_rescaled_model_keeps_its_response_to_a_flat_reference(old: int, new: int) -> None:
    """Space-to-depth weights are spread over (or summed from) the other sub-pixel grid: on a flat reference
    the rescaled model's first reference features equal the original's."""
    torch.manual_seed(0)
    model = create_model("dzsr-tiny", scale=old, matcher_weights="random")
    rescaled, carried = rescale_model(model, new)
    assert rescaled.hparams["scale"] == new and rescaled.training
    assert 0 < carried <= sum(p.numel() for p in rescaled.parameters())
    flat = torch.full((1, 3, 4 * old, 4 * old), 0.3)
    flat_new = torch.full((1, 3, 4 * new, 4 * new), 0.3)
    for name in ("extractor", "paste_head"):
        a = getattr(model.ref, name)
        b = getattr(rescaled.ref, name)
        first_a = a[0] if isinstance(a, torch.nn.Sequential) else a
        first_b = b[0] if isinstance(b, torch.nn.Sequential) else b
        fa = first_a(torch.nn.functional.pixel_unshuffle(flat, old))
        fb = first_b(torch.nn.functional.pixel_unshuffle(flat_new, new))
        assert torch.allclose(fa, fb, atol=1e-5), name


def test_a_x4_model_from_a_x2_one_starts_as_its_detail_upsampled_bilinearly() -> None:
    """The rescaled ×4 network outputs the ×2 one's detail (output minus bicubic), upsampled bilinearly, over
    bicubic ×4 (inside a one-pixel border, where the new tail's blur meets zero padding)."""
    torch.manual_seed(0)
    x2 = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    for p in x2.parameters():  # a trained-looking tail and body, not the near-zero initial tail
        p.data.add_(0.05 * torch.randn_like(p))
    x4, _ = rescale_model(x2, 4)
    x2.eval()
    x4.eval()
    lr = torch.rand(1, 3, 12, 14)
    with torch.no_grad():
        detail = x2(lr) - F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        want = F.interpolate(detail, scale_factor=2, mode="bilinear", align_corners=False)
        want = want + F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
        got = x4(lr)
    assert detail[..., 1:-1, 1:-1].abs().mean() > 0.05  # the detail is not negligible
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)
    # every new weight can learn: the feature channels' tail weights are zero but their inputs are not
    assert x4.upsampler[2].weight[3 * 4 :].abs().sum() > 0


def test_with_middle_camera_starts_a_triple_model_from_a_dual_one() -> None:
    torch.manual_seed(0)
    dual = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    triple, carried = with_middle_camera(dual)
    assert isinstance(triple, DZSR) and triple.hparams["triple"] and triple.ref2_scale == 2
    source, state = dual.state_dict(), triple.state_dict()
    assert carried == sum(v.numel() for k, v in state.items() if not k.startswith("fuse2."))
    assert all(torch.equal(state[k], v) for k, v in source.items())
    assert all(torch.equal(v, source["ref." + k[5:]]) for k, v in state.items() if k.startswith("ref2."))
    # its residual fusion starts at zero: it computes exactly what the dual model does, wide or not
    triple.eval()
    dual.eval()
    lr, ref = torch.rand(1, 3, 24, 32), torch.rand(1, 3, 16, 16)
    box = (8, 4, 8, 8)
    with torch.no_grad():
        a = triple(lr, ref, box, ref2=torch.rand(1, 3, 32, 40), box2=(4, 2, 20, 16))
        assert torch.equal(a, dual(lr, ref, box))
    with pytest.raises(ConfigError, match="not a dual-camera DZSR"):
        with_middle_camera(triple)
