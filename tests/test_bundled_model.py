"""The model shipped in the package: present, described by its card, and better than bicubic on a photo
it was not trained on (``seeding`` is one of the photos held out of its training)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from dzcli.errors import WeightsError
from dzcli.io.images import load_photo
from dzcli.metrics.image import psnr
from dzcli.pipeline.evaluate import footprint_box
from dzcli.pipeline.zoom import ZoomConfig, zoom
from dzcli.resize import cv_resize
from dzcli.simulate import SimulatedPair
from dzsr_models.bundled import BUNDLED, DEFAULT_MODEL, BundledModel, ModelInfo, load_model
from tests.conftest import write_capture


@pytest.mark.parametrize("model", BUNDLED, ids=lambda m: m.name)
def test_every_bundled_model_is_shipped_with_its_card(model: BundledModel) -> None:
    assert model.licence and DEFAULT_MODEL in {m.name for m in BUNDLED}
    path = model.verified_path()  # present, with the table's SHA-256
    assert path.stat().st_size < 8 * 2**20 and "held out" in model.summary
    net, meta = load_model(model.name)
    assert sum(p.numel() for p in net.parameters()) > 100_000  # the small preset, not a test-sized net
    assert meta.scale == model.scale and meta.metadata["arch"] == "dzsr"
    assert ModelInfo.from_json(json.loads(json.dumps(meta.to_json()))) == meta  # a report can carry it


def test_a_bundled_file_with_another_sha256_is_refused(tmp_path: Path) -> None:
    shipped = next(m for m in BUNDLED if m.name == DEFAULT_MODEL)
    data = bytearray(shipped.path.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor: still a readable safetensors file
    (tmp_path / shipped.file).write_bytes(bytes(data))
    (tmp_path / shipped.card).write_text("# card\n\nA card.\n")
    copy = BundledModel(
        shipped.name, shipped.file, shipped.sha256, shipped.scale, shipped.card, shipped.licence, tmp_path
    )
    with pytest.raises(WeightsError, match=r"SHA-256 .* differs .*corrupt or replaced"):
        load_model(DEFAULT_MODEL, table=(copy,))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_model(None, table=(copy,))  # the default too
    (tmp_path / shipped.file).unlink()
    with pytest.raises(WeightsError, match="is missing"):
        load_model(None, table=(copy,))


def test_bundled_default_model_beats_bicubic_on_a_held_out_photo(
    sim_pairs: dict[str, SimulatedPair], tmp_path: Path
) -> None:
    sim = sim_pairs["seeding"]
    uw, tele = write_capture(tmp_path, "seeding", sim, ratio_exif=2.0, when=datetime(2026, 3, 1, 9))
    out = tmp_path / "out.png"
    (r,) = zoom(ZoomConfig(inputs=(uw, tele), out=out, device="cpu", ext="png"))
    assert r.ok and r.written is not None and r.written.model == DEFAULT_MODEL, r.status
    sr = load_photo(out).pixels
    truth = sim.truth
    assert sr.shape == truth.shape
    h, w = truth.shape[-2:]
    bicubic = cv_resize(load_photo(uw).pixels, (h, w), "bicubic")  # the eval reports' baseline
    x, y, bw, bh = footprint_box(
        sim.tele_to_uw, (sim.tele.shape[-1], sim.tele.shape[-2]), sim.zoom_ratio, (w, h)
    )
    centre = torch.zeros(1, h, w)
    centre[:, y : y + bh, x : x + bw] = 1  # the tele's footprint
    assert psnr(sr, truth) > psnr(bicubic, truth)
    assert psnr(sr, truth, mask=centre) > psnr(bicubic, truth, mask=centre) + 2.0


def test_a_run_folder_loads_its_best_checkpoint(tmp_path: Path) -> None:
    from dzsr_models import create_model, save_checkpoint

    run = tmp_path / "myrun"
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    save_checkpoint(
        create_model("dzsr-tiny", scale=2, matcher_weights="random"),
        run / "checkpoints" / "best.safetensors",
        metadata={},
    )
    _model, info = load_model(str(run))
    assert info.name == "myrun" and info.path == run / "checkpoints" / "best.safetensors"
    with pytest.raises(WeightsError, match=r"without checkpoints/best.safetensors"):
        load_model(str(tmp_path / "myrun" / "checkpoints"))


def test_a_model_trained_for_looks_says_so(tmp_path: Path) -> None:
    """``perceptual`` comes from the checkpoint's training loss: what makes ``zoom``'s self-check keep the
    network's detail whole."""
    from dzsr_models import create_model, save_checkpoint

    assert load_model("dzsr-small-x2-sharp")[1].perceptual
    assert not load_model(DEFAULT_MODEL)[1].perceptual
    net = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    for meta, expected in (
        ({}, False),
        ({"training": {"loss": "l1"}}, False),
        ({"training": {"loss": "l1+sw"}}, True),
    ):
        path = save_checkpoint(net, tmp_path / "run.safetensors", metadata=meta)
        assert load_model(str(path))[1].perceptual is expected
