"""`dzsr simulate` writes captures with EXIF and ground truth, deterministically for a seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dzcli.data.pairs import discover_captures
from dzcli.errors import ConfigError, DatasetError
from dzcli.io.exif import read_capture_info
from dzcli.io.images import load_photo
from dzcli.pipeline.simulate import SimulateConfig, SimulationRecord, read_simulation, simulate_folder

PHOTO = Path(__file__).parent / "data" / "seeding.jpg"


def test_simulate_writes_pairs_with_exif_and_truth(tmp_path: Path) -> None:
    recs = simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "a", zoom_ratio=2.7, seed=3))
    (rec,) = recs
    uw, tele = tmp_path / "a" / rec.files["uw"], tmp_path / "a" / rec.files["tele"]
    assert uw.name == "seeding_uw.jpg" and tele.name == "seeding_tele.jpg"
    ui, ti = read_capture_info(uw), read_capture_info(tele)
    assert (ui.focal_35mm, ti.focal_35mm) == (26, round(26 * 2.7))
    assert ui.camera == ti.camera and ui.time < ti.time
    truth = load_photo(tmp_path / "a" / rec.files["truth"]).pixels
    w_uw = load_photo(uw).size[0]
    assert truth.shape[-1] == pytest.approx(w_uw * 2.7, abs=3)
    geo = json.loads((tmp_path / "a" / "truth" / "seeding.json").read_text())
    assert geo["ratio"] == pytest.approx(2.7) and rec.zoom_ratio == pytest.approx(2.7)
    assert geo == rec.to_json()  # the record is the file's JSON
    (read,) = read_simulation(tmp_path / "a")
    assert read.to_json() == geo and read.density == rec.density and read.wide is None


def test_simulate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "a", seed=1))
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "b", seed=1))
    simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "c", seed=2))
    files = sorted(
        p.relative_to(tmp_path / "a")
        for p in (tmp_path / "a").rglob("*")
        if p.is_file() and p.name != "simulation.json"
    )  # that one names its output folder
    assert len(files) == 4
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    assert all(same)
    assert (tmp_path / "a" / "captures" / "seeding_tele.jpg").read_bytes() != (
        tmp_path / "c" / "captures" / "seeding_tele.jpg"
    ).read_bytes()


def test_triple_adds_a_wide_and_keeps_the_pair(tmp_path: Path) -> None:
    def run(name: str, triple: bool) -> list[SimulationRecord]:
        cfg = SimulateConfig(photos=PHOTO, out=tmp_path / name, zoom_ratio=4.0, seed=2, triple=triple)
        return simulate_folder(cfg)

    (rec,) = run("t", True)
    run("t2", True)
    run("p", False)
    out = tmp_path / "t"
    assert rec.files["wide"] == "captures/seeding_wide.jpg"
    assert rec.wide is not None and rec.wide.zoom_ratio == 2.0
    pair_files = ("captures/seeding_uw.jpg", "captures/seeding_tele.jpg", "truth/seeding.png")
    for f in (*pair_files, "captures/seeding_wide.jpg"):
        assert (out / f).read_bytes() == (tmp_path / "t2" / f).read_bytes()  # deterministic
    for f in pair_files:
        assert (out / f).read_bytes() == (tmp_path / "p" / f).read_bytes()  # the pair is unchanged
    infos = {r: read_capture_info(out / "captures" / f"seeding_{r}.jpg") for r in ("uw", "wide", "tele")}
    assert [infos[r].focal_35mm for r in ("uw", "wide", "tele")] == [26, 52, 104]
    assert infos["uw"].time < infos["wide"].time < infos["tele"].time
    assert load_photo(out / "captures" / "seeding_wide.jpg").size == rec.uw_size == rec.wide.size
    geo = json.loads((out / "truth" / "seeding.json").read_text())
    assert geo["wide_to_uw"][0][0] == pytest.approx(0.5 * math.cos(math.radians(geo["wide_rotation_deg"])))
    (read,) = read_simulation(out)
    assert read.to_json() == geo == rec.to_json() and read.wide is not None
    assert list(geo)[-5:] == ["wide_ratio", "wide_center", "wide_rotation_deg", "wide_to_uw", "wide_size"]
    (capture,), _ = discover_captures(out / "captures")
    assert capture.wide is not None and capture.wide.name == "seeding_wide.jpg"


@pytest.mark.parametrize(
    ("ratio", "wide", "triple"), [(2.0, None, True), (4.0, 5.0, True), (4.0, 2.0, False)]
)
def test_triple_options_are_checked(ratio: float, wide: float | None, triple: bool) -> None:
    with pytest.raises(ConfigError, match="--wide-ratio"):
        SimulateConfig(photos=PHOTO, out=Path("x"), zoom_ratio=ratio, wide_zoom_ratio=wide, triple=triple)


def test_cli_triple(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dzcli.cli import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["simulate", str(PHOTO), str(tmp_path / "s"), "--ratio", "3", "--triple", "--wide-ratio", "1.5"]
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "s" / "captures" / "seeding_wide.jpg").is_file()
    assert json.loads((tmp_path / "s" / "truth" / "seeding.json").read_text())["wide_ratio"] == 1.5
    bad = runner.invoke(app, ["simulate", str(PHOTO), str(tmp_path / "b"), "--ratio", "2", "--triple"])
    assert bad.exit_code == 2 and "--wide-ratio" in bad.output


def test_harder_capture_conditions_are_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dzcli.cli import app

    args = [
        "simulate",
        str(PHOTO),
        str(tmp_path / "h"),
        "--ratio",
        "3",
        "--ratio-error",
        "0.015",
        "--gain",
        "0.25",
        "--gamma",
        "0.75",
        "1.33",
        "--noise",
        "0.02",
        "--jpeg-quality",
        "85",
        "--max-offset",
        "0.02",
        "--max-rotation",
        "1",
        "--seed",
        "4",
        "--camera",
        "none",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (rec,) = read_simulation(tmp_path / "h")
    tele = read_capture_info(tmp_path / "h" / "captures" / "seeding_tele.jpg")
    assert tele.focal_35mm == 78 and rec.zoom_ratio_nominal == 3.0  # EXIF says the nominal ratio ...
    assert (
        rec.zoom_ratio != pytest.approx(3.0, abs=1e-4) and abs(rec.zoom_ratio / 3.0 - 1) <= 0.015
    )  # ... not the true
    # the affine fit of the true mapping (parallax 1.5 px by default) is close to the parallax-free geometry
    assert rec.zoom_ratio_fit == pytest.approx(rec.zoom_ratio, rel=0.005)
    assert math.dist(rec.center_fit, rec.center) < 1.0
    uw_w = rec.uw_size[0]
    assert abs(rec.center[0] - (uw_w - 1) / 2) <= 0.02 * uw_w + 1e-9 and abs(rec.rotation_deg) <= 1.0
    plain = simulate_folder(SimulateConfig(photos=PHOTO, out=tmp_path / "p", zoom_ratio=3.0, seed=4))[0]
    assert plain.zoom_ratio == pytest.approx(
        3.0, abs=1e-9
    )  # without --ratio-error the EXIF ratio is the truth
    bad = CliRunner().invoke(app, ["simulate", str(PHOTO), str(tmp_path / "b"), "--gamma", "1.2", "0.8"])
    assert bad.exit_code == 2 and "--gamma" in bad.output
    unused = CliRunner().invoke(app, ["simulate", str(PHOTO), str(tmp_path / "b"), "--noise", "0.02"])
    assert unused.exit_code == 2 and "apply only to --camera none" in unused.output  # not silently ignored


def test_an_unreadable_simulation_index_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a readable dzsr simulate index"):
        read_simulation(tmp_path)
    (tmp_path / "simulation.json").write_text(json.dumps({"pairs": [{"name": "x"}]}))
    with pytest.raises(DatasetError, match="not a readable dzsr simulate index"):
        read_simulation(tmp_path)
    (tmp_path / "simulation.json").write_text(json.dumps({"pairs": []}))
    with pytest.raises(DatasetError, match="empty"):
        read_simulation(tmp_path)
