"""`dzsr eval` on a tiny prepared dataset and a tiny simulated set, with tiny random models."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dzcli.cli import app
from dzcli.data.manifest import read_manifest
from dzcli.errors import ConfigError, DatasetError, OutputError, WeightsError
from dzcli.metrics.image import region_pieces
from dzcli.pipeline import evaluate as evaluate_module
from dzcli.pipeline.evaluate import EvalConfig, evaluate, footprint_box, holdout_box, pick_crop
from dzcli.pipeline.prepare import PrepareConfig, prepare
from dzcli.pipeline.simulate import SimulateConfig, simulate_folder
from dzcli.report import METRICS, EvalReport, ImageResult, to_csv, to_json, to_markdown
from dzcli.resize import cv_resize
from dzcli.simulate import SimulatedPair
from dzsr_models import create_model, save_checkpoint

from .conftest import write_capture
from .test_metrics_lpips import _one_thread, random_net  # noqa: F401 (autouse fixture)
from .train_data import make_dataset

DATA = Path(__file__).parent / "data"
runner = CliRunner()
BASELINES = ("bicubic", "lanczos")


@pytest.fixture(autouse=True)
def _lpips_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real LPIPS-AlexNet when its offline weights are installed, else a random-weight one."""
    try:
        evaluate_module.LPIPS()
    except WeightsError:
        monkeypatch.setattr(evaluate_module, "LPIPS", lambda: random_net(0))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random-weight dzsr-tiny ×2 checkpoints, ``a/tiny`` and ``b/tiny`` (the same file name)."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        (root / name).mkdir()
        model = create_model("dzsr-tiny", scale=2, matcher_weights="random")
        out[name] = save_checkpoint(model, root / name / "tiny.safetensors", metadata={})
    return out


def _rgb(path: Path) -> np.ndarray:
    """An 8-bit image file as float32 RGB in [0, 1] (read by OpenCV, not by dzsr)."""
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]).astype(np.float32) / 255


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images in [0, 1] on the 8-bit grid (an independent computation)."""
    qa, qb = (np.round(np.clip(x, 0, 1).astype(np.float32) * np.float32(255)).astype(float) for x in (a, b))
    return float(10 * np.log10(255**2 / np.mean((qa - qb) ** 2)))


def _check_files(out: Path, methods: list[str], n_images: int) -> dict:
    for name in ("report.json", "report.csv", "report.html", "report.png", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "report.json").read_text())
    assert data["methods"] == methods
    assert len(data["images"]) == n_images
    with (out / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for image in [im["id"] for im in data["images"]] + ["mean"]:
        for method in methods:
            regions = {r["region"] for r in rows if r["image"] == image and r["method"] == method}
            assert regions == {"centre", "corner", "full"}, (image, method)
    html = (out / "report.html").read_text()
    for im in data["images"]:
        for files in im["crops"].values():
            models = [m for m in methods if m not in BASELINES and "(no ref)" not in m]
            assert list(files) == ["bicubic", *models, "ground truth"]
            for rel in files.values():
                assert (out / rel).is_file() and f"src='{rel}'" in html
    assert not list(out.glob(".eval-*"))  # the work folder is gone
    return data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, sim_pairs: dict[str, SimulatedPair]) -> Path:
    """A ×2 dataset prepared from three simulated captures."""
    root = tmp_path_factory.mktemp("prepared")
    (root / "captures").mkdir()
    for i, (name, sim) in enumerate(sim_pairs.items()):
        write_capture(root / "captures", name, sim, ratio_exif=2.0, when=datetime(2026, 3, 1, 9, i))
    prepare(PrepareConfig(src=root / "captures", out=root / "data", scale=2))
    return root / "data"


def test_eval_prepared_dataset(
    tmp_path: Path, prepared: Path, ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = prepared
    out = tmp_path / "report"
    calls: list[tuple[tuple[int, ...], tuple[int, ...] | None, object]] = []
    real = evaluate_module.super_resolve

    def spy(model: torch.nn.Module, lr: torch.Tensor, **kw: object) -> torch.Tensor:
        ref = kw.get("ref")
        calls.append((tuple(lr.shape), None if ref is None else tuple(ref.shape), kw.get("box")))
        return real(model, lr, **kw)

    monkeypatch.setattr(evaluate_module, "super_resolve", spy)
    args = [
        "eval",
        str(data),
        "-m",
        str(ckpts["a"]),
        "-m",
        str(ckpts["b"]),
        "-o",
        str(out),
        "--split",
        "all",
        "--limit",
        "2",
        "--device",
        "cpu",
        "--crop",
        "48",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    methods = ["bicubic", "lanczos", "a/tiny (no ref)", "a/tiny", "b/tiny (no ref)", "b/tiny"]
    for m in methods:
        assert m in result.output
    report = _check_files(out, methods, 2)
    pairs = {p.id: p for p in read_manifest(data).pairs}
    for im in report["images"]:
        rec = pairs[im["id"]]
        assert rec.ref_box is not None
        lr, hr = _rgb(data / rec.files["lr"]), _rgb(data / rec.files["hr"])
        up = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        assert im["scores"]["bicubic"]["full"]["psnr"] == pytest.approx(_psnr8(up, hr), abs=1e-9)
        x0, y0, w, h = (2 * v for v in rec.ref_box)
        assert im["box"] == [x0, y0, w, h]
        centre = _psnr8(up[y0 : y0 + h, x0 : x0 + w], hr[y0 : y0 + h, x0 : x0 + w])
        assert im["scores"]["bicubic"]["centre"]["psnr"] == pytest.approx(centre, abs=1e-9)
        for method in methods:
            scores = im["scores"][method]
            assert set(METRICS) <= set(scores["full"])
    per_image = [im["scores"]["bicubic"]["full"]["psnr"] for im in report["images"]]
    assert report["mean"]["bicubic"]["full"]["psnr"] == pytest.approx(np.mean(per_image))
    # each model ran without and with the pair's Ref, placed at its box (paper protocol)
    assert len(calls) == 2 * 2 * 2
    for _lr_shape, ref_shape, box in calls[1::2]:
        assert box is not None and ref_shape == (3, 2 * box[3], 2 * box[2])
    assert all(ref is None and box is None for _, ref, box in calls[0::2])


def test_eval_tta_runs_every_network_pass_in_its_views(
    tmp_path: Path, prepared: Path, ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    real = evaluate_module.super_resolve

    def spy(model: torch.nn.Module, lr: torch.Tensor, **kw: object) -> torch.Tensor:
        seen.append(kw.get("tta"))
        return real(model, lr, **kw)

    monkeypatch.setattr(evaluate_module, "super_resolve", spy)
    out = tmp_path / "report"
    args = ["eval", str(prepared), "-m", str(ckpts["a"]), "-o", str(out), "--split", "all", "--limit", "1"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--crop", "48", "--no-lpips", "--tta", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert {"tiny+tta2 (no ref)", "tiny+tta2"} <= set(report["mean"])
    assert seen == [2, 2]  # without and with the reference
    bad = runner.invoke(app, [*args, "--tta", "3"])
    assert bad.exit_code == 2 and "--tta must be one of 1, 2, 4, 8" in bad.output


def test_eval_simulated_set_runs_the_zoom_pipeline(tmp_path: Path, ckpts: dict[str, Path]) -> None:
    sim = tmp_path / "sim"
    simulate_folder(SimulateConfig(photos=DATA / "picos.jpg", out=sim, zoom_ratio=2.0, seed=1))
    out = tmp_path / "report"
    cfg = EvalConfig(data=sim, out=out, models=(str(ckpts["a"]),), device="cpu", crop=64, lpips=False)
    report, files = evaluate(cfg)  # LPIPS is checked on the prepared dataset (it is the slow part on CPU)
    methods = ["bicubic", "lanczos", "tiny (no ref)", "tiny"]
    assert report.kind == "simulated" and report.methods == methods
    data = _check_files(out, methods, 1)
    (im,) = data["images"]
    truth = _rgb(sim / "truth" / "picos.png")
    uw = _rgb(sim / "captures" / "picos_uw.jpg")
    up = cv2.resize(uw, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_CUBIC)
    assert im["scores"]["bicubic"]["full"]["psnr"] == pytest.approx(_psnr8(up, truth), abs=1e-9)
    # the model's numbers are those of `dzsr zoom --outscale 2` on the same capture
    zoomed = tmp_path / "zoomed.png"
    caps = sim / "captures"
    args = [
        "zoom",
        str(caps / "picos_uw.jpg"),
        str(caps / "picos_tele.jpg"),
        "-o",
        str(zoomed),
        "-m",
        str(ckpts["a"]),
        "--outscale",
        "2",
        "--device",
        "cpu",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    # (eval scores zoom's float output; the file rounds halves up, the 8-bit protocol to even: a few pixels)
    assert im["scores"]["tiny"]["full"]["psnr"] == pytest.approx(_psnr8(_rgb(zoomed), truth), abs=1e-4)
    assert 0.5 < im["info"]["tiny"]["valid_fraction"] <= 1 and im["info"]["tiny"]["registered_ratio"] == (
        pytest.approx(2.0, rel=0.01)
    )
    # centre = the tele's footprint: about half the output on each side, around the tele's true centre
    geo = json.loads((sim / "truth" / "picos.json").read_text())
    x0, _y0, w, h = im["box"]
    assert w == pytest.approx(truth.shape[1] / 2, abs=3) and h == pytest.approx(truth.shape[0] / 2, abs=3)
    assert x0 + w / 2 == pytest.approx(2 * (geo["center"][0] + 0.5), abs=2)
    assert "png" in files and files["png"].is_file()


def test_eval_scores_a_triple_capture_on_the_wides_footprint_with_and_without_it(
    tmp_path: Path, ckpts: dict[str, Path]
) -> None:
    sim = tmp_path / "sim"
    simulate_folder(SimulateConfig(photos=DATA / "picos.jpg", out=sim, zoom_ratio=4.0, triple=True, seed=2))
    out = tmp_path / "report"
    cfg = EvalConfig(data=sim, out=out, models=(str(ckpts["a"]),), device="cpu", crop=64, lpips=False)
    report, files = evaluate(cfg)
    assert report.methods == ["bicubic", "lanczos", "tiny (no ref)", "tiny", "tiny (tele only)"]
    assert report.regions == ("full", "centre", "corner", "wide")
    (im,) = report.images
    assert im.info["tiny"]["wide"] and not im.info["tiny (tele only)"]["wide"]
    # the wide's region is its footprint (half the uw on each side at 13/26 mm) around the tele's
    w, h = im.box[2:]
    W, H = im.size
    ring = im.scores["bicubic"]["wide"]
    assert set(ring) >= {"psnr", "ssim"} and w < W / 3 and h < H / 3
    assert im.scores["tiny"]["wide"] != im.scores["tiny (tele only)"]["wide"]  # the wide changed the ring
    assert im.scores["tiny"]["corner"] != im.scores["tiny (tele only)"]["corner"]
    md = files["md"].read_text()
    assert "full / centre / corner / wide" in md and "| tiny (tele only) |" in md
    rows = list(csv.DictReader(files["csv"].open()))
    assert {r["region"] for r in rows} == {"full", "centre", "corner", "wide"}


def test_a_triple_camera_model_is_evaluated_with_each_pairs_middle_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "triple", n_train=1, n_test=1, size=(32, 40), triple=True)
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        create_model("tzsr-tiny", scale=2, ref2_scale=2, matcher_weights="random"),
        tmp_path / "tzsr.safetensors",
        metadata={},
    )
    calls = []
    run = evaluate_module.super_resolve

    def spy(model, lr, **kw):  # type: ignore[no-untyped-def]
        calls.append((kw.get("ref") is not None, kw.get("ref2"), kw.get("box2")))
        return run(model, lr, **kw)

    monkeypatch.setattr(evaluate_module, "super_resolve", spy)
    cfg = EvalConfig(data=data, out=tmp_path / "r", models=(str(ckpt),), device="cpu", crop=16, lpips=False)
    evaluate(cfg)
    (no_ref, with_refs) = calls[-2:]
    assert not no_ref[0] and no_ref[1] is None  # the no-ref row gets neither reference
    assert with_refs[0] and with_refs[1] is not None and with_refs[2] == (0, 0, 40, 32)
    assert with_refs[1].shape == (3, 64, 80)  # the middle camera over the whole lr at x2


def test_footprint_box_of_a_known_tele() -> None:
    # a 100x60 tele at half the uw's density per side, centred at uw (60.0, 40.0), no rotation
    h = np.array([[0.5, 0.0, 60.0 - 0.5 * 49.5], [0.0, 0.5, 40.0 - 0.5 * 29.5], [0, 0, 1]])
    # uw pixel-edge span of the tele: x 35..85, y 25..55; at density 2: x 71..171, y 51..111
    assert footprint_box(h, (100, 60), 2.0, (240, 160)) == (71, 51, 100, 60)
    assert footprint_box(h, (100, 60), 2.0, (150, 100)) == (71, 51, 79, 49)  # clipped to the output


def test_pick_crop_stays_in_its_region_and_finds_the_detail() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.full((3, 120, 160), 0.5)
    truth[:, 90:120, 0:30] = torch.rand(3, 30, 30, generator=g)  # texture in the bottom-left corner
    box = (40, 30, 80, 60)
    x0, y0, w, h = pick_crop(truth, box, "corner", 24)
    assert (w, h) == (24, 24) and x0 <= 6 and y0 >= 90 - 6
    assert any(
        a <= y0 and y0 + h <= b and c <= x0 and x0 + w <= d
        for a, b, c, d in region_pieces(120, 160, box)["corner"]
    )
    cx0, cy0, cw, ch = pick_crop(truth, box, "centre", 24)
    assert cx0 >= 40 and cx0 + cw <= 120 and cy0 >= 30 and cy0 + ch <= 90
    assert pick_crop(truth, box, "centre", 100)[2:] == (60, 60)  # shrunk to fit the 80x60 centre
    assert pick_crop(truth, (0, 0, 160, 120), "corner", 24) is None  # no corner at all


def test_errors(tmp_path: Path, prepared: Path) -> None:
    with pytest.raises(DatasetError, match="neither a prepared dataset"):
        evaluate(EvalConfig(data=tmp_path, out=tmp_path / "r"))
    with pytest.raises(ConfigError, match="--split"):
        EvalConfig(data=tmp_path, out=tmp_path / "r", split="val")
    x4 = tmp_path / "x4.safetensors"
    save_checkpoint(create_model("dzsr-tiny", scale=4, matcher_weights="random"), x4, metadata={})
    with pytest.raises(ConfigError, match="x2 dataset"):
        evaluate(EvalConfig(data=prepared, out=tmp_path / "r", models=(str(x4),), device="cpu"))
    result = runner.invoke(app, ["eval", str(tmp_path / "missing"), "-m", str(x4)])
    assert result.exit_code == 3 and "no such folder" in result.output


def test_a_capture_whose_tele_is_not_found_is_scored_without_the_reference(
    tmp_path: Path, ckpts: dict[str, Path]
) -> None:
    sim = tmp_path / "sim"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("life", "picos"):
        (photos / f"{name}.jpg").symlink_to(DATA / f"{name}.jpg")
    simulate_folder(SimulateConfig(photos=photos, out=sim, zoom_ratio=2.0))
    tele = sim / "captures" / "picos_tele.jpg"
    tele.write_bytes((sim / "captures" / "life_tele.jpg").read_bytes())  # a tele of another scene
    result = runner.invoke(
        app,
        ["eval", str(sim), "-m", str(ckpts["a"]), "--no-lpips", "--device", "cpu", "--no-guard"],
        terminal_width=300,
    )
    assert result.exit_code == 0, result.output
    assert "picos: tiny zoomed it without the reference (tele not found: no overlap found" in " ".join(
        result.output.split()
    )
    data = json.loads((tmp_path / "sim_eval" / "report.json").read_text())
    assert data["images_in_means"] == ["life", "picos"]
    life, picos = data["images"]
    assert "tiny" in picos["no_ref"] and picos["info"]["tiny"]["reference"].startswith("not used: no overlap")
    assert life["no_ref"] == {} and life["info"]["tiny"]["reference"] == "used"
    assert picos["scores"]["tiny"]["full"]["psnr"] == pytest.approx(
        picos["scores"]["tiny (no ref)"]["full"]["psnr"], abs=0.05
    )
    assert "picos: tiny zoomed it without the reference" in (tmp_path / "sim_eval" / "report.md").read_text()


def test_report_means_skip_incomplete_images_and_render_inf() -> None:
    def scores(psnr: float, lpips: float) -> dict[str, dict[str, float]]:
        return {r: {"psnr": psnr, "lpips": lpips} for r in ("centre", "corner", "full")}

    images = [
        ImageResult(
            "a",
            (8, 8),
            (2, 2, 4, 4),
            scores={"bicubic": scores(20.0, 0.5), "m": scores(math.inf, 0.1)},
            seconds={"bicubic": 0.1, "m": 2.0},
        ),
        ImageResult(
            "b",
            (8, 8),
            (2, 2, 4, 4),
            scores={"bicubic": scores(30.0, 0.3), "m": scores(31.0, 0.2)},
            seconds={"bicubic": 0.3, "m": 4.0},
        ),
        ImageResult(
            "c", (8, 8), (2, 2, 4, 4), scores={"bicubic": scores(10.0, 0.9)}, failed={"m": "no overlap"}
        ),
    ]
    report = EvalReport("simulated", "x", ["bicubic", "m"], {}, {"summary": "test"}, images)
    assert [im.id for im in report.complete] == ["a", "b"]
    means = report.means()
    assert means["bicubic"]["full"] == {"psnr": 25.0, "lpips": pytest.approx(0.4)}
    assert means["m"]["full"]["psnr"] == math.inf and report.mean_seconds() == {"bicubic": 0.2, "m": 3.0}
    data = to_json(report)
    json.dumps(data, allow_nan=False)  # strict JSON: inf is written as a string
    assert data["mean"]["m"]["full"]["psnr"] == "inf" and data["images_in_means"] == ["a", "b"]
    rows = list(csv.DictReader(to_csv(report).splitlines()))
    row = next(r for r in rows if (r["image"], r["method"], r["region"]) == ("b", "m", "full"))
    assert (row["psnr"], row["lpips"], row["ssim"], row["seconds"]) == ("31.0", "0.2", "", "4.0")
    assert [r["image"] for r in rows].count("mean") == 6
    md = to_markdown(report)
    assert "| m | **inf** / **inf** / **inf** | **0.1500** / **0.1500** / **0.1500** | 3.0 |" in md
    assert "c is left out of the means: m failed (no overlap)" in md
    assert "No image was evaluated by every method." in to_markdown(
        EvalReport("simulated", "x", ["bicubic", "m"], {}, {}, images[2:])
    )


def test_report_sheet_stacks_images_with_gaps() -> None:
    from dzcli.report import _stack

    a, b = torch.zeros(3, 4, 5), torch.full((3, 6, 2), 0.5)
    side = _stack([a, b], 3, dim=2)
    assert side.shape == (3, 6, 10)
    assert side[:, :4, :5].eq(0).all() and side[:, :, 8:].eq(0.5).all() and side[:, 4:, :5].eq(1).all()
    column = _stack([a, b], 3, dim=1)
    assert column.shape == (3, 13, 5)
    assert column[:, 4:7].eq(1).all() and column[:, 7:, :2].eq(0.5).all() and column[:, 7:, 2:].eq(1).all()


@pytest.mark.parametrize("size", [(40, 30), (41, 29)])
def test_holdout_box_is_the_other_half(size: tuple[int, int]) -> None:
    w, h = size
    for side in ("left", "right", "top", "bottom"):
        x0, y0, bw, bh = holdout_box(size, side)
        given = np.zeros((h, w), bool)
        given[y0 : y0 + bh, x0 : x0 + bw] = True
        held = {
            "left": np.s_[:, : w - bw],
            "right": np.s_[:, bw:],
            "top": np.s_[: h - bh],
            "bottom": np.s_[bh:],
        }
        assert not given[held[side]].any() and given.sum() + given[held[side]].size == w * h  # a partition
        assert given[held[side]].size >= given.sum()  # the held-out half is never the smaller one
    with pytest.raises(ConfigError, match="--holdout"):
        EvalConfig(data=Path("d"), out=Path("o"), holdout="middle")


def test_holdout_scores_only_tele_pixels_the_model_never_received(
    tmp_path: Path, prepared: Path, ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A toy model that pastes its reference over bicubic: perfect on the half it got, exactly bicubic on the
    held-out half, and it is handed no pixel of the held-out half."""
    seen: list[tuple[torch.Tensor, tuple[int, int, int, int]]] = []

    def paste(model: torch.nn.Module, lr: torch.Tensor, **kw: object) -> torch.Tensor:
        out = cv_resize(lr, (2 * lr.shape[-2], 2 * lr.shape[-1]), "bicubic")
        ref, box = kw.get("ref"), kw.get("box")
        if ref is not None:
            assert isinstance(ref, torch.Tensor) and isinstance(box, tuple)
            x0, y0, bw, bh = box
            out[:, 2 * y0 : 2 * (y0 + bh), 2 * x0 : 2 * (x0 + bw)] = ref
            seen.append((ref.clone(), box))
        return out

    monkeypatch.setattr(evaluate_module, "super_resolve", paste)
    cfg = EvalConfig(
        data=prepared,
        out=tmp_path / "r",
        models=(str(ckpts["a"]),),
        split="all",
        device="cpu",
        lpips=False,
        self_check=False,
        holdout="right",
        guard=False,
    )
    report, _ = evaluate(cfg)
    assert len(seen) == len(report.images) > 0
    pairs = {p.id: p for p in read_manifest(prepared).pairs}
    for im, (ref, box) in zip(report.images, seen, strict=True):
        hr = _rgb(prepared / pairs[im.id].files["hr"])
        w_lr = hr.shape[1] // 2
        assert box == (0, 0, w_lr // 2, hr.shape[0] // 2)  # the left half, full height
        np.testing.assert_allclose(ref.numpy().transpose(1, 2, 0), hr[:, : 2 * (w_lr // 2)], atol=1 / 255)
        assert im.box == (0, 0, 2 * (w_lr // 2), hr.shape[0])
        toy, bicubic = im.scores["tiny"], im.scores["bicubic"]
        assert toy["centre"]["psnr"] > 50
        assert toy["corner"]["psnr"] == pytest.approx(bicubic["corner"]["psnr"], abs=1e-9)
    assert report.protocol["holdout"] == "right"
    assert "held-out right half" in to_markdown(report)
    # the guard (the default): the held-out half (no reference) is guarded, the given half's reference kept
    assert EvalConfig(data=prepared, out=tmp_path / "g").guard
    guarded, _ = evaluate(replace(cfg, out=tmp_path / "g", guard=True))
    for im, before in zip(guarded.images, report.images, strict=True):
        toy, plain = im.scores["tiny"], before.scores["tiny"]
        assert toy["centre"]["psnr"] > 40
        assert toy["corner"]["psnr"] != pytest.approx(plain["corner"]["psnr"], abs=1e-3)
    sim = tmp_path / "sim"
    simulate_folder(SimulateConfig(photos=DATA / "picos.jpg", out=sim, zoom_ratio=2.0))
    with pytest.raises(ConfigError, match="needs a prepared dataset"):
        evaluate(EvalConfig(data=sim, out=tmp_path / "r2", holdout="left"))


def test_an_unwritable_report_folder_is_found_before_the_work(
    tmp_path: Path, prepared: Path, ckpts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation ran although its report cannot be written")

    monkeypatch.setattr("dzcli.pipeline.evaluate._eval_prepared", no_work)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the report folder should be")
    res = runner.invoke(app, ["eval", str(prepared), "-m", str(ckpts["a"]), "-o", str(blocker / "r")])
    assert res.exit_code == 8 and "not a directory" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1  # no progress bar either: the work never started

    class Full:
        free = 2**20

    monkeypatch.setattr("dzcli.io.atomic.shutil.disk_usage", lambda p: Full())
    with pytest.raises(OutputError, match=r"report\.png: not enough free space on its disk \(1\.0 MiB free"):
        evaluate(EvalConfig(data=prepared, out=tmp_path / "r", models=(str(ckpts["a"]),), device="cpu"))


def test_temps_a_killed_evaluation_left_are_removed(
    tmp_path: Path, prepared: Path, ckpts: dict[str, Path]
) -> None:
    out = tmp_path / "r"
    (out / "crops").mkdir(parents=True)
    stale = out / "crops" / ".x_centre_ground-truth.png.9176956e4a4e.tmp"
    stale.write_bytes(b"partial")
    evaluate(
        EvalConfig(data=prepared, out=out, models=(str(ckpts["a"]),), device="cpu", lpips=False, limit=1)
    )
    assert not stale.exists() and (out / "report.json").is_file()
