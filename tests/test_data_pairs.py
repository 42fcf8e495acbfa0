"""Pair discovery: naming conventions, role folders, CSV lists and EXIF grouping."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch

from dzcli.data.pairs import discover_captures
from dzcli.errors import ConfigError, InputError
from dzcli.io.exif import CaptureInfo, make_exif
from dzcli.io.images import save_image

IMG = torch.full((3, 8, 8), 0.5)


def touch(path: Path, info: CaptureInfo | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, IMG, exif=make_exif(info) if info else None)
    return path


def by_id(captures):
    return {c.id: c for c in captures}


def test_suffix_conventions_pairs_and_triples(tmp_path: Path) -> None:
    a_uw, a_tele = touch(tmp_path / "a_uw.jpg"), touch(tmp_path / "a_tele.jpg")
    b_w, b_t = touch(tmp_path / "b_wide.png"), touch(tmp_path / "b_T.png")
    c_uw, c_w, c_t = touch(tmp_path / "c-uw.jpg"), touch(tmp_path / "c-w.jpg"), touch(tmp_path / "c-tele.jpg")
    lone = touch(tmp_path / "lone.jpg")
    caps, alone = discover_captures(tmp_path)
    got = by_id(caps)
    assert set(got) == {"a", "b", "c"}
    assert (got["a"].uw, got["a"].tele, got["a"].wide) == (a_uw, a_tele, None)
    assert (got["b"].uw, got["b"].tele) == (b_w, b_t)  # the wide is the one to enlarge
    assert (got["c"].uw, got["c"].wide, got["c"].tele) == (c_uw, c_w, c_t)
    assert all(c.method == "suffix" for c in caps)
    assert alone == [lone]


def test_suffix_in_subfolders_gets_distinct_ids(tmp_path: Path) -> None:
    for trip in ("day1", "day2"):
        touch(tmp_path / trip / "IMG_1_uw.jpg")
        touch(tmp_path / trip / "IMG_1_tele.jpg")
    caps, _ = discover_captures(tmp_path)
    assert sorted(c.id for c in caps) == ["day1_IMG_1", "day2_IMG_1"]


def test_role_folders_match_by_name(tmp_path: Path) -> None:
    x_uw, x_tele = touch(tmp_path / "uw" / "x.jpg"), touch(tmp_path / "tele" / "x.jpg")
    touch(tmp_path / "uw" / "y.jpg")  # no partner
    caps, _ = discover_captures(tmp_path)
    assert [(c.id, c.uw, c.tele, c.method) for c in caps] == [("x", x_uw, x_tele, "folders")]


def test_pairs_csv_relative_paths_and_ids(tmp_path: Path) -> None:
    p1, p2 = touch(tmp_path / "shots" / "one.jpg"), touch(tmp_path / "shots" / "two.jpg")
    csv = tmp_path / "pairs.csv"
    csv.write_text("uw,tele,id\nshots/one.jpg,shots/two.jpg,street\n")
    caps, alone = discover_captures(tmp_path, pairs_csv=csv)
    assert [(c.id, c.uw, c.tele, c.method) for c in caps] == [("street", p1, p2, "csv")]
    assert alone == []
    caps2, _ = discover_captures(csv)  # the CSV itself as the source
    assert [c.id for c in caps2] == ["street"]


def test_pairs_csv_without_columns_is_a_config_error(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("a,b\nx.jpg,y.jpg\n")
    with pytest.raises(ConfigError, match=r"pairs.csv"):
        discover_captures(tmp_path, pairs_csv=csv)


def test_exif_grouping_by_body_time_and_focal(tmp_path: Path) -> None:
    t0 = datetime(2026, 5, 1, 10, 0, 0)

    def info(model: str, f35: float, dt: float) -> CaptureInfo:
        return CaptureInfo(
            make="Apple", model=model, focal_mm=f35 / 6, focal_35mm=f35, time=t0 + timedelta(seconds=dt)
        )

    # a triple within a second: ultra-wide 13, wide 26, tele 52 (written out of order)
    t_tele = touch(tmp_path / "IMG_0003.jpg", info("iPhone 13 Pro", 52, 0.8))
    t_uw = touch(tmp_path / "IMG_0001.jpg", info("iPhone 13 Pro", 13, 0.0))
    t_wide = touch(tmp_path / "IMG_0002.jpg", info("iPhone 13 Pro", 26, 0.4))
    # a pair 60 s later
    p_wide = touch(tmp_path / "IMG_0010.jpg", info("iPhone 13 Pro", 26, 60))
    p_tele = touch(tmp_path / "IMG_0011.jpg", info("iPhone 13 Pro", 77, 61))
    # too far apart in time, and another body at the same moment: alone
    late = touch(tmp_path / "IMG_0020.jpg", info("iPhone 13 Pro", 52, 200))
    other = touch(tmp_path / "DSC_0001.jpg", info("Other", 50, 200.5))
    caps, alone = discover_captures(tmp_path, max_gap=2.0)
    got = {(c.uw, c.wide, c.tele) for c in caps}
    assert got == {(t_uw, t_wide, t_tele), (p_wide, None, p_tele)}
    assert all(c.method == "exif" for c in caps)
    assert sorted(alone) == sorted([late, other])


def test_same_focal_twice_is_not_a_pair(tmp_path: Path) -> None:
    t0 = datetime(2026, 5, 1, 10, 0, 0)
    for i in range(2):
        touch(
            tmp_path / f"burst_{i}.jpg",
            CaptureInfo(make="X", model="Y", focal_35mm=26, time=t0 + timedelta(seconds=i * 0.1)),
        )
    caps, alone = discover_captures(tmp_path)
    assert caps == [] and len(alone) == 2


def test_missing_or_empty_source_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere"):
        discover_captures(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no photos"):
        discover_captures(tmp_path / "empty")
