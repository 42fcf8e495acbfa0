"""`prepare` end to end on simulated captures: dataset contents, robustness, resumption, idempotence."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch

from dzcli.cli import _found_by
from dzcli.data.manifest import read_manifest
from dzcli.errors import DatasetError, OutputError
from dzcli.io.images import load_photo
from dzcli.pipeline import prepare as prepare_mod
from dzcli.pipeline.prepare import PrepareConfig, prepare
from dzcli.simulate import SimulatedTriple, simulate_pair
from tests.conftest import corner_error, scene, write_capture, write_triple


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root → (sha1, mtime_ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_prepare_writes_a_consistent_dataset(captures_dir: Path, tmp_path: Path, sim_pairs) -> None:
    out = tmp_path / "data"
    inputs_before = tree_state(captures_dir)
    summary = prepare(PrepareConfig(src=captures_dir, out=out, scale=2, test_fraction=0.34))
    assert summary.n_ok == 3 and summary.computed == 3
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["version"] == 1 and [p["id"] for p in raw["pairs"]] == [r.id for r in summary.records]
    manifest = read_manifest(out)
    assert [p.to_json() for p in manifest.pairs] == raw["pairs"]  # the records are the file's, both ways
    assert {p.split for p in manifest.pairs} == {"train", "test"}
    for rec in manifest.pairs:
        sim = sim_pairs[rec.id]
        assert rec.ok
        assert rec.sources is not None and rec.id in rec.sources["uw"]
        assert rec.zoom_ratio_exif == pytest.approx(2.0)
        assert rec.zoom_ratio == pytest.approx(sim.zoom_ratio, rel=0.01)
        assert rec.inliers is not None and rec.inliers >= 30
        assert rec.valid_fraction is not None and 0.5 < rec.valid_fraction <= 1
        lr = load_photo(out / rec.files["lr"]).pixels
        hr = load_photo(out / rec.files["hr"]).pixels
        ref = load_photo(out / rec.files["ref"]).pixels
        mask = load_photo(out / rec.files["mask"]).pixels
        assert hr.shape[-2:] == (2 * lr.shape[-2], 2 * lr.shape[-1])
        assert mask.shape[-2:] == hr.shape[-2:]
        assert (out / rec.files["preview"]).is_file()
        assert rec.ref_box is not None and rec.box is not None
        rx, ry, rw, rh = rec.ref_box  # the ref is hr under ref_box (whole lr pixels, centred)
        assert (rw, rh) == (lr.shape[-1] // 2, lr.shape[-2] // 2)
        assert abs(rx + rw / 2 - lr.shape[-1] / 2) <= 1 and abs(ry + rh / 2 - lr.shape[-2] / 2) <= 1
        assert torch.equal(ref, hr[:, 2 * ry : 2 * (ry + rh), 2 * rx : 2 * (rx + rw)])
        # the lr crop lies around the tele's true position in the wide
        x0, y0, w, h = rec.box
        cx, cy = sim.center
        assert abs(x0 + (w - 1) / 2 - cx) < w * 0.05 and abs(y0 + (h - 1) / 2 - cy) < h * 0.05
        # the registered, colour-matched hr agrees with the wide crop at the wide's resolution
        assert rec.alignment_psnr is not None and rec.alignment_psnr > 27
    assert tree_state(captures_dir) == inputs_before  # inputs never written to
    assert not list((out / "pairs").glob(".*"))


def test_second_run_changes_nothing(captures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare(PrepareConfig(src=captures_dir, out=out))
    before = tree_state(out)
    summary = prepare(PrepareConfig(src=captures_dir, out=out))
    assert summary.computed == 0 and summary.reused == 3
    assert tree_state(out) == before


def test_bad_pairs_are_skipped_with_reasons(captures_dir: Path, tmp_path: Path) -> None:
    (captures_dir / "broken_uw.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (captures_dir / "broken_tele.jpg").write_bytes(b"garbage")
    sim_a = simulate_pair(scene("free"), density=2.0, seed=5)
    sim_b = simulate_pair(scene("life"), density=2.0, seed=6)
    unrelated = dataclasses.replace(sim_a, tele=sim_b.tele)  # a wide of one scene, a tele of another
    write_capture(captures_dir, "unrelated", unrelated, ratio_exif=2.0, when=datetime(2026, 1, 1))
    out = tmp_path / "data"
    summary = prepare(PrepareConfig(src=captures_dir, out=out))
    status = {r.id: r.status for r in summary.records}
    assert summary.n_ok == 3
    assert "broken_uw.jpg" in status["broken"]
    assert "no overlap" in status["unrelated"]
    skipped = [r for r in summary.records if not r.ok]
    assert all(r.split is None and r.files == {} for r in skipped)
    assert not (out / "pairs" / "broken").exists()


def test_no_usable_pair_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x_uw.jpg").write_bytes(b"junk")
    (src / "x_tele.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no usable pair"):
        prepare(PrepareConfig(src=src, out=tmp_path / "data"))


def test_interrupted_run_resumes_without_half_written_pairs(
    captures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    real = prepare_mod._process
    calls = {"n": 0}

    def flaky(cap, cfg, work, record):
        calls["n"] += 1
        if calls["n"] == 2:
            real(cap, cfg, work, record)  # files written into the temporary folder ...
            raise KeyboardInterrupt  # ... and Ctrl-C before it is installed
        return real(cap, cfg, work, record)

    monkeypatch.setattr(prepare_mod, "_process", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(src=captures_dir, out=out))
    done = read_manifest(out).pairs
    assert [p.status for p in done] == ["ok"]
    assert sorted(p.name for p in (out / "pairs").iterdir()) == [done[0].id]  # no temporary folder left
    monkeypatch.setattr(prepare_mod, "_process", real)
    summary = prepare(PrepareConfig(src=captures_dir, out=out))
    assert (summary.reused, summary.computed, summary.n_ok) == (1, 2, 3)


def test_sixteen_bit_sources_give_sixteen_bit_pairs(tmp_path: Path, sim_pairs) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_capture(src, "life", sim_pairs["life"], ratio_exif=None, when=datetime(2026, 1, 1), bit_depth=16)
    out = tmp_path / "data"
    summary = prepare(PrepareConfig(src=src, out=out, test_fraction=0.0))
    rec = summary.records[0]
    # no 35 mm tag: EXIF falls back to the same-body focal ratio 6/4.25 = 1.41, wrong for a phone's
    # two sensors; registration still finds the true 2.0
    assert rec.ok and rec.zoom_ratio_source != "exif-35mm"
    assert rec.zoom_ratio == pytest.approx(2.0, rel=0.01)
    assert load_photo(out / rec.files["hr"]).bit_depth == 16
    assert load_photo(out / rec.files["lr"]).bit_depth == 16


def test_triple_capture_is_kept_together(tmp_path: Path) -> None:
    from dzcli.pipeline.simulate import SimulateConfig, simulate_folder

    photo = Path(__file__).parent / "data" / "life.jpg"
    simulate_folder(
        SimulateConfig(
            photos=photo, out=tmp_path / "sim", zoom_ratio=2.4, wide_zoom_ratio=1.4, triple=True, seed=2
        )
    )
    out = tmp_path / "data"
    summary = prepare(PrepareConfig(src=tmp_path / "sim" / "captures", out=out, test_fraction=0.0))
    (rec,) = summary.records
    assert rec.ok and set(rec.sources or ()) == {"uw", "wide", "tele"}
    assert rec.zoom_ratio == pytest.approx(2.4, rel=0.01)
    assert rec.mid is not None and rec.mid.zoom_ratio == pytest.approx(1.4, rel=0.01)  # between uw and tele
    mid = load_photo(out / rec.files["mid"]).pixels
    hr = load_photo(out / rec.files["hr"]).pixels
    assert mid.shape == hr.shape  # the wide, registered onto the same grid as hr


def test_a_triple_capture_too_far_for_a_direct_match_is_registered_through_its_wide(
    tmp_path: Path, far_triple: SimulatedTriple, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "captures"
    src.mkdir()
    write_triple(src, "far", far_triple, when=datetime(2026, 3, 1, 9, 0, 0))

    def twice(*args: object, **kw: object) -> None:
        raise AssertionError("the wide was registered twice")

    monkeypatch.setattr(prepare_mod, "register", twice)  # the wide's registration in the chain is reused
    out = tmp_path / "data"
    summary = prepare(PrepareConfig(src=src, out=out, test_fraction=0.0, min_size=32))  # a 50x37 px lr
    (rec,) = summary.records
    assert rec.ok and rec.registration is not None and rec.registration["method"] == "chained"
    assert _found_by(rec) == "through the wide"
    p = far_triple.pair
    tele_wh = (p.tele.shape[2], p.tele.shape[1])
    assert corner_error(rec.registration["homography"], p.tele_to_uw, tele_wh) < 0.3  # measured 0.14 uw px
    assert rec.zoom_ratio == pytest.approx(p.zoom_ratio, rel=0.002)
    assert rec.valid_fraction is not None and rec.valid_fraction > 0.5  # 0.60
    assert rec.mid is not None and rec.mid.zoom_ratio == pytest.approx(2.0, rel=0.005)
    assert load_photo(out / rec.files["mid"]).size == load_photo(out / rec.files["hr"]).size
    assert read_manifest(out).pairs[0].registration == rec.registration


def test_an_unwritable_dataset_folder_is_found_before_any_capture(
    captures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a capture was registered although the dataset cannot be written")

    monkeypatch.setattr(prepare_mod, "register", no_work)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the dataset folder should be")
    with pytest.raises(
        OutputError, match=r"blocker/data/manifest\.json: cannot create its folder .*: not a directory"
    ):
        prepare(PrepareConfig(src=captures_dir, out=blocker / "data"))


def test_a_full_disk_stops_at_the_pair_that_does_not_fit_and_keeps_the_others(
    captures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    real = prepare_mod.check_output
    calls = []

    def fills_up(path: Path, need_bytes: int = 0) -> None:
        calls.append(need_bytes)
        real(path, need_bytes if len(calls) < 4 else 2**50)  # two checks up front, then one per pair

    monkeypatch.setattr(prepare_mod, "check_output", fills_up)
    with pytest.raises(OutputError) as err:
        prepare(PrepareConfig(src=captures_dir, out=out, scale=2))
    # The message names the pair's own folder (not the hidden one it is written to), and the pair before it
    # stays in the dataset: a re-run with space continues from there.
    (done,) = read_manifest(out).pairs
    assert re.search(r"/pairs/\w+/hr\.png: not enough free space on its disk", str(err.value))
    assert f"/.{done.id}" not in str(err.value) and ".tmp" not in str(err.value)
    assert sorted(p.name for p in (out / "pairs").iterdir()) == [done.id]
    monkeypatch.setattr(prepare_mod, "check_output", real)
    summary = prepare(PrepareConfig(src=captures_dir, out=out, scale=2))
    assert summary.reused == 1 and summary.computed == 2
