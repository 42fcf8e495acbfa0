"""The dataset manifest: versioned, validated, atomically written, untouched when unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dzcli.data.manifest import MANIFEST_VERSION, read_manifest, write_manifest
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
    m = {"version": MANIFEST_VERSION, "pairs": [PAIR], "box": (1, 2)}
    assert write_manifest(tmp_path, m) is True
    path = tmp_path / "manifest.json"
    before = path.stat().st_mtime_ns
    assert read_manifest(tmp_path)["pairs"] == [PAIR]
    assert write_manifest(tmp_path, m) is False  # tuples compare equal to their JSON lists
    assert path.stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".*tmp"))


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
