"""`dzsr simulate` writes captures with EXIF and ground truth, deterministically for a seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dzcli.io.exif import read_capture_info
from dzcli.io.images import load_photo
from dzcli.pipeline.simulate import SimulateConfig, simulate_folder

PHOTO = Path(__file__).parent / "data" / "seeding.jpg"


def test_simulate_writes_pairs_with_exif_and_truth(tmp_path: Path) -> None:
    recs = simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "a", ratio=2.7, seed=3))
    (rec,) = recs
    uw, tele = tmp_path / "a" / rec["files"]["uw"], tmp_path / "a" / rec["files"]["tele"]
    assert uw.name == "seeding_uw.jpg" and tele.name == "seeding_tele.jpg"
    ui, ti = read_capture_info(uw), read_capture_info(tele)
    assert (ui.focal_35mm, ti.focal_35mm) == (26, round(26 * 2.7))
    assert ui.camera == ti.camera and ui.time < ti.time
    truth = load_photo(tmp_path / "a" / rec["files"]["truth"]).pixels
    w_uw = load_photo(uw).size[0]
    assert truth.shape[-1] == pytest.approx(w_uw * 2.7, abs=3)
    geo = json.loads((tmp_path / "a" / "truth" / "seeding.json").read_text())
    assert geo["ratio"] == pytest.approx(2.7)


def test_simulate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "a", seed=1))
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "b", seed=1))
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "c", seed=2))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and p.name != "simulation.json")  # that one names its output folder
    assert len(files) == 4
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    assert all(same)
    assert (tmp_path / "a" / "captures" / "seeding_tele.jpg").read_bytes() != (
        tmp_path / "c" / "captures" / "seeding_tele.jpg"
    ).read_bytes()
