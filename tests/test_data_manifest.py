"""The dataset manifest: versioned, validated, atomically written, untouched when unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dzcli.data.manifest import (
    MANIFEST_VERSION,
    Manifest,
    MidRecord,
    PairRecord,
    read_manifest,
    write_manifest,
)
from dzcli.errors import DatasetError

PAIR = {
    "id": "a",
    "status": "ok",
    "split": "train",
    "ratio_exif": 2.0,
    "ratio": 1.97,
    "inliers": 300,
    "valid_fraction": 0.9,
    "files": {"lr": "pairs/a/lr.png"},
}


def test_round_trip_and_no_rewrite_when_unchanged(tmp_path: Path) -> None:
    m = Manifest(pairs=[PairRecord.from_json(PAIR)], options={"scale": 2})
    assert write_manifest(tmp_path, m) is True
    path = tmp_path / "manifest.json"
    before = path.stat().st_mtime_ns
    (pair,) = read_manifest(tmp_path).pairs
    assert pair.id == "a" and pair.zoom_ratio_exif == 2.0 and pair.zoom_ratio == 1.97 and pair.ok
    assert pair.ref_box is None and pair.mid is None  # what the record does not hold is None
    assert write_manifest(tmp_path, m) is False
    pair.box = (1, 2, 3, 4)
    assert write_manifest(tmp_path, m) is False  # tuples compare equal to their JSON lists
    assert path.stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".*tmp"))


def test_a_prepared_record_round_trips_to_the_same_json() -> None:
    """The JSON keys of a complete record, in the order ``prepare`` writes them (format version 1)."""
    full = {
        "id": "b",
        "status": "ok",
        "split": "test",
        "method": "suffix",
        "sources": {"uw": "b_uw.jpg", "wide": "b_wide.jpg", "tele": "b_tele.jpg"},
        "fingerprint": {"uw": [1, 2], "wide": [3, 4], "tele": [5, 6]},
        "options": {"scale": 2, "ratio": None, "min_valid": 0.2, "min_size": 48},
        "scale": 2,
        "camera": {"uw": "dzsr SimPhone", "tele": "dzsr SimPhone"},
        "ratio_exif": 2.3846,
        "ratio": 2.388,
        "inliers": 0,
        "valid_fraction": 0.5661,
        "files": {"lr": "pairs/b/lr.png", "mid": "pairs/b/mid.png"},
        "exif": {"uw": {"make": "dzsr"}, "tele": {"make": "dzsr"}},
        "ratio_source": "exif-35mm",
        "density": 2.388,
        "registration": {"method": "direct", "correlation": 0.38},
        "box": [86, 65, 106, 79],
        "bit_depth": 8,
        "size": {"lr": [106, 79], "hr": [212, 158], "ref": [106, 78]},
        "ref_box": [26, 20, 53, 39],
        "flow": {"mean": 0.95, "p95": 3.69},
        "colour": {"lut_knots": 256},
        "alignment_psnr": None,
        "mid": {
            "camera": "dzsr SimPhone",
            "ratio_exif": 1.1923,
            "ratio": 1.2,
            "inliers": 44,
            "valid_fraction": 1.0,
        },
    }
    rec = PairRecord.from_json(full)
    assert rec.box == (86, 65, 106, 79) and rec.ref_box == (26, 20, 53, 39) and rec.density == 2.388
    assert rec.mid == MidRecord("dzsr SimPhone", 1.1923, 1.2, 44, 1.0)
    assert rec.to_json() == full and list(rec.to_json()) == list(full)
    # a capture skipped after its registration: only the fields it reached
    skipped = {k: full[k] for k in (*list(full)[:14], "exif", "ratio_source")}
    skipped.update(status="no overlap found", split=None, files={})
    assert list(PairRecord.from_json(skipped).to_json()) == list(skipped)
    assert PairRecord.from_json(skipped).to_json() == skipped


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "corrupt"),
        (json.dumps({"pairs": []}), "corrupt"),
        (json.dumps({"version": 999, "pairs": []}), "version 999"),
        (json.dumps({"version": MANIFEST_VERSION, "pairs": [{"id": "a"}]}), "lacks status"),
    ],
)
def test_bad_manifests_are_dataset_errors(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DatasetError, match=match):
        read_manifest(tmp_path)


def test_missing_manifest_says_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dzsr prepare"):
        read_manifest(tmp_path)


def test_a_malformed_record_is_a_dataset_error(tmp_path: Path) -> None:
    bad = {**PAIR, "ref_box": [1, 2, "x", 4]}
    (tmp_path / "manifest.json").write_text(json.dumps({"version": MANIFEST_VERSION, "pairs": [bad]}))
    with pytest.raises(DatasetError, match="corrupt dataset manifest"):
        read_manifest(tmp_path)
