"""The prepared dataset's index, ``DATA/manifest.json``: versioned, validated on read, written atomically.

Layout::

    {"version": 1, "dzsr_version": "...", "options": {...},
     "pairs": [{"id", "status", "split", "ratio_exif", "ratio", "inliers", "valid_fraction", "files", ...}],
     "unpaired": ["file", ...]}

``status`` is ``"ok"`` or the reason the pair was skipped. ``files`` paths are relative to the dataset root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dzcli.errors import DatasetError
from dzcli.io.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PAIR_KEYS = ("id", "status", "split", "ratio_exif", "ratio", "inliers", "valid_fraction", "files")


def read_manifest(root: Path) -> dict[str, Any]:
    """Load and validate ``root/manifest.json``.

    Raises:
        DatasetError: missing, unparsable, of another format version, or lacking required fields.
    """
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{root}: not a dzsr dataset (no {MANIFEST_NAME}; run `dzsr prepare` first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: corrupt dataset manifest ({exc})") from exc
    if not isinstance(data, dict) or "version" not in data or not isinstance(data.get("pairs"), list):
        raise DatasetError(f"{path}: corrupt dataset manifest (needs 'version' and a 'pairs' list)")
    if data["version"] != MANIFEST_VERSION:
        raise DatasetError(
            f"{path}: dataset format version {data['version']}, this dzsr reads version {MANIFEST_VERSION}; "
            "re-run `dzsr prepare --force`"
        )
    for i, pair in enumerate(data["pairs"]):
        missing = [k for k in PAIR_KEYS if not isinstance(pair, dict) or k not in pair]
        if missing:
            raise DatasetError(f"{path}: corrupt dataset manifest (pair {i} lacks {', '.join(missing)})")
    return data


def write_manifest(root: Path, manifest: dict[str, Any]) -> bool:
    """Write the manifest atomically unless the file already holds exactly this content.

    Returns:
        True when the file was (re)written.
    """
    path = root / MANIFEST_NAME
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(manifest)):
                return False
        except (OSError, ValueError):
            pass
    write_json_atomic(path, manifest)
    return True
