"""The model shipped in the package: present, described by its card, and better than bicubic on a photo
it was not trained on (``seeding`` is one of the photos held out of its training)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from dzcli.infer import engine
from dzcli.io.images import load_photo
from dzcli.metrics.image import psnr
from dzcli.pipeline.zoom import ZoomConfig, zoom
from dzcli.simulate import SimulatedPair
from tests.conftest import write_capture


def test_bundled_default_model_is_shipped_with_its_card() -> None:
    by_name = {m.name: m for m in engine.bundled_models()}
    model = by_name[engine.DEFAULT_MODEL]
    assert model.scale == 2 and model.arch.startswith("dzsr")
    assert model.size_bytes < 8 * 2**20 and "held out" in model.summary
    net, meta = engine.load_model(engine.DEFAULT_MODEL)
    assert sum(p.numel() for p in net.parameters()) > 100_000  # the small preset, not a test-sized net
    assert meta["scale"] == 2


def test_bundled_default_model_beats_bicubic_on_a_held_out_photo(
    sim_pairs: dict[str, SimulatedPair], tmp_path: Path
) -> None:
    sim = sim_pairs["seeding"]
    uw, tele = write_capture(tmp_path, "seeding", sim, ratio_exif=2.0, when=datetime(2026, 3, 1, 9))
    out = tmp_path / "out.png"
    (r,) = zoom(ZoomConfig(inputs=(uw, tele), out=out, device="cpu", ext="png"))
    assert r.ok and r.model == engine.DEFAULT_MODEL, r.status
    sr = load_photo(out).pixels
    truth = sim.truth
    assert sr.shape == truth.shape
    bicubic = F.interpolate(load_photo(uw).pixels[None], size=truth.shape[-2:], mode="bicubic",
                            align_corners=False)[0].clamp(0, 1)
    # The tele's footprint on the ground-truth grid (its inner 70 %, clear of the rotated edges).
    cx, cy = (2.0 * c for c in sim.center)
    hh, hw = 0.35 * sim.tele.shape[-2], 0.35 * sim.tele.shape[-1]
    centre = torch.zeros(1, *truth.shape[-2:])
    centre[:, round(cy - hh) : round(cy + hh), round(cx - hw) : round(cx + hw)] = 1
    assert psnr(sr, truth) > psnr(bicubic, truth)
    assert psnr(sr, truth, mask=centre) > psnr(bicubic, truth, mask=centre) + 2.0
