"""Prepared pairs in memory and training patches: errors, determinism, geometry of lr/hr/ref/mask."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dzcli.data.dataset import PreparedPair, TrainPatches, dataset_scale, load_pairs
from dzcli.errors import DatasetError, InputError
from dzcli.infer.guard import quiet_flat
from tests.train_data import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "data", n_train=3, n_test=1, size=(40, 48))


def test_load_pairs_reads_the_split(data: Path) -> None:
    train, test = load_pairs(data, "train"), load_pairs(data, "test")
    assert [p.id for p in train] == ["pair0", "pair1", "pair2"] and [p.id for p in test] == ["pair3"]
    assert dataset_scale(data) == 2
    p = train[0]
    assert p.lr.shape == (3, 40, 48) and p.hr.shape == (3, 80, 96) and p.mask.shape == (1, 80, 96)
    assert p.scale == 2 and p.ref_box == (12, 10, 24, 20) and p.ref.shape == (3, 40, 48)
    assert set(p.mask.unique().tolist()) == {0.0, 1.0}


def test_dataset_errors(tmp_path: Path, data: Path) -> None:
    with pytest.raises(DatasetError, match=r"no manifest.json"):
        load_pairs(tmp_path, "train")
    old = make_dataset(tmp_path / "old", n_train=1, n_test=0, version=0)
    with pytest.raises(DatasetError, match="version 0"):
        load_pairs(old, "train")
    with pytest.raises(DatasetError, match="no usable pair in the test split"):
        load_pairs(make_dataset(tmp_path / "notest", n_train=2, n_test=0), "test")
    broken = make_dataset(tmp_path / "broken", n_train=1, n_test=0)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["options"]["scale"] = 4
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="not the dataset's x4"):
        load_pairs(broken, "train")
    no_box = make_dataset(tmp_path / "nobox", n_train=1, n_test=0)
    manifest = json.loads((no_box / "manifest.json").read_text())
    del manifest["pairs"][0]["ref_box"]
    (no_box / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="is corrupt \\(no usable ref_box"):
        load_pairs(no_box, "train")


def test_patches_are_a_function_of_seed_and_index(data: Path) -> None:
    pairs = load_pairs(data, "train")
    a = TrainPatches(pairs, patch=16, scale=2, seed=0)
    b = TrainPatches(load_pairs(data, "train"), patch=16, scale=2, seed=0)
    for i in (0, 7, 123456):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["lr"], a[1]["lr"])
    assert not torch.equal(a[0]["lr"], TrainPatches(pairs, patch=16, scale=2, seed=1)[0]["lr"])


def test_patch_geometry(data: Path) -> None:
    patches = TrainPatches(load_pairs(data, "train"), patch=16, scale=2, seed=3)
    for i in range(20):
        smp = patches[i]
        lr, hr, mask, ref, box = smp["lr"], smp["hr"], smp["mask"], smp["ref"], smp["ref_box"]
        assert lr.shape == (3, 16, 16) and hr.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
        # lr is the area average of hr (8-bit rounding apart), whatever flips were applied to both.
        assert (F.avg_pool2d(hr[None], 2)[0] - lr).abs().max() < 1.5 / 255
        x0, y0, w, h = box.tolist()
        assert (w, h) == (8, 8) and 0 <= x0 <= 8 and 0 <= y0 <= 8
        assert torch.equal(ref, hr[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)])
    batch = patches.batch([0, 1, 2])
    assert batch["lr"].shape == (3, 3, 16, 16) and batch["ref_box"].shape == (3, 4)
    assert batch["ref_box"].dtype == torch.int64


def test_triple_patches_cut_the_middle_camera_where_the_lr_patch_lies(tmp_path: Path, data: Path) -> None:
    triple = load_pairs(make_dataset(tmp_path / "triple", triple=True), "train")
    assert all(p.mid is not None and p.mid.shape == p.hr.shape for p in triple)
    mid = triple[0].mid
    assert mid is not None  # its invalid left band holds the bicubic lr, not the mid's pixels
    up = F.interpolate(triple[0].lr[None], scale_factor=2, mode="bicubic", align_corners=False)[0]
    assert (mid[:, :, :4] - up[:, :, :4].clamp(0, 1)).abs().max() < 2 / 255
    # with the middle camera equal to hr, ref2 is hr over ref2_box, as ref is over ref_box
    same = [PreparedPair(**{**p.__dict__, "mid": p.hr}) for p in triple]
    patches = TrainPatches(same, patch=16, scale=2, seed=3, triple=True)
    plain = TrainPatches(same, patch=16, scale=2, seed=3)
    for i in range(10):
        smp = patches[i]
        x0, y0, w, h = smp["ref2_box"].tolist()
        assert (w, h) == (12, 12) and 0 <= x0 <= 4 and 0 <= y0 <= 4
        assert torch.equal(smp["ref2"], smp["hr"][:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)])
        assert all(torch.equal(smp[k], plain[i][k]) for k in plain[i])  # the pair's draws are unchanged
    assert patches.batch([0, 1])["ref2"].shape == (2, 3, 24, 24)
    with pytest.raises(DatasetError, match="3 pairs have no middle camera"):
        TrainPatches(load_pairs(data, "train"), patch=16, scale=2, seed=0, triple=True)


def test_quiet_patches_add_the_quieted_hr_cut_where_the_hr_patch_lies(data: Path) -> None:
    pairs = load_pairs(data, "train")
    patches = TrainPatches(pairs, patch=16, scale=2, seed=3, quiet=True)
    plain = TrainPatches(pairs, patch=16, scale=2, seed=3)
    quiet = [quiet_flat(p.hr, p.mask) for p in pairs]
    assert not torch.equal(quiet[0], pairs[0].hr)
    for i in range(6):
        smp = patches[i]
        assert all(torch.equal(smp[k], plain[i][k]) for k in plain[i])  # the draws are unchanged
        # the window and flips that give ``hr`` give ``sw_target`` from the pair's quieted hr
        hits = [
            _flips(q[:, y : y + 32, x : x + 32], *f)
            for p, q in zip(pairs, quiet, strict=True)
            for y in range(0, p.hr.shape[1] - 31, 2)
            for x in range(0, p.hr.shape[2] - 31, 2)
            for f in itertools.product((False, True), repeat=3)
            if torch.equal(_flips(p.hr[:, y : y + 32, x : x + 32], *f), smp["hr"])
        ]
        assert hits and all(torch.equal(smp["sw_target"], hit) for hit in hits)
    assert patches.batch([0, 1])["sw_target"].shape == (2, 3, 32, 32)


def _flips(x: torch.Tensor, horizontal: bool, vertical: bool, transpose: bool) -> torch.Tensor:
    x = x.flip(-1) if horizontal else x
    x = x.flip(-2) if vertical else x
    return x.transpose(-1, -2) if transpose else x


def test_patch_errors(data: Path) -> None:
    pairs = load_pairs(data, "train")
    with pytest.raises(DatasetError, match="multiple of the scale"):
        TrainPatches(pairs, patch=15, scale=2, seed=0)
    with pytest.raises(DatasetError, match="lower --patch-size"):
        TrainPatches(pairs, patch=64, scale=2, seed=0)
    with pytest.raises(DatasetError, match="not x4"):
        TrainPatches(pairs, patch=16, scale=4, seed=0)


def test_prepared_pair_from_tensors() -> None:
    lr, hr = torch.rand(3, 20, 30), torch.rand(3, 40, 60)
    pair = PreparedPair.from_tensors(lr, hr)
    assert pair.ref_box == (7, 5, 15, 10) and pair.mask.shape == (1, 40, 60) and pair.mask.min() == 1
    assert torch.equal(pair.ref, hr[:, 10:30, 14:44])
    with pytest.raises(InputError, match="not an integer multiple"):
        PreparedPair.from_tensors(lr, torch.rand(3, 40, 61))
    with pytest.raises(InputError, match="mask"):
        PreparedPair.from_tensors(lr, hr, torch.ones(1, 20, 30))
