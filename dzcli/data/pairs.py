"""Finding the captures in a folder: which files were taken together by which camera.

Four ways, tried in this order (a file is used by the first way that claims it):

1. ``--pairs pairs.csv``: columns ``uw`` and ``tele`` (optional ``wide`` and ``id``), paths relative to
   the CSV's folder.
2. Sub-folders ``uw/`` (or ``ultrawide/``), ``wide/`` and ``tele/`` holding files with matching names.
3. Name suffixes: ``name_uw.jpg`` + ``name_tele.jpg`` (roles also spelt ``_ultrawide``, ``_wide``/``_w``/
   ``_main``, ``_tele``/``_t``/``_telephoto``; ``-`` works as a separator too).
4. EXIF grouping of the rest: same body, capture times within ``max_gap`` seconds, different focal lengths.

Two cameras make a pair (the shorter focal length is the one to enlarge); three make a triple capture
(ultra-wide, wide, tele), kept together for triple-camera super-resolution.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dzcli.errors import ConfigError, InputError
from dzcli.io.exif import CaptureInfo, read_capture_info
from dzcli.io.images import is_image_file

log = logging.getLogger(__name__)

ROLE_WORDS = {
    "uw": ("uw", "ultrawide", "ultra"),
    "wide": ("wide", "w", "main"),
    "tele": ("tele", "t", "telephoto"),
}
ROLE_FOLDERS = {"uw": ("uw", "ultrawide"), "wide": ("wide", "main"), "tele": ("tele", "telephoto")}
_SUFFIX = re.compile(
    r"^(?P<name>.+?)[_-](?P<role>" + "|".join(w for ws in ROLE_WORDS.values() for w in ws) + r")$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Capture:
    """Photos of one scene taken together. ``uw`` is enlarged, ``tele`` is the reference.

    ``wide`` is the middle camera of a triple capture (ultra-wide, wide, tele), else ``None``.
    ``method`` says how the files were paired: ``files``, ``csv``, ``folders``, ``suffix`` or ``exif``.
    """

    id: str
    uw: Path
    tele: Path
    wide: Path | None = None
    method: str = "files"

    @property
    def sources(self) -> dict[str, Path]:
        """The capture's files by role (``uw``, ``wide`` when present, ``tele``)."""
        roles = {"uw": self.uw, "wide": self.wide, "tele": self.tele}
        return {k: v for k, v in roles.items() if v is not None}


def _role_of(word: str) -> str:
    word = word.lower()
    return next(role for role, words in ROLE_WORDS.items() if word in words)


def _order_by_focal(paths: list[Path], infos: dict[Path, CaptureInfo]) -> list[Path]:
    """Shortest focal length first (35 mm-equivalent when known); paths without focal keep their order."""

    def focal(p: Path) -> float:
        info = infos[p]
        return info.focal_35mm or info.focal_mm or 0.0

    return sorted(paths, key=focal)


def _capture_from_roles(cid: str, roles: dict[str, Path], method: str) -> Capture | None:
    """Turn a role→file map into a capture; two roles make a pair (shorter one enlarged)."""
    present = [r for r in ("uw", "wide", "tele") if r in roles]
    if len(present) < 2:
        return None
    if len(present) == 3:
        return Capture(cid, uw=roles["uw"], tele=roles["tele"], wide=roles["wide"], method=method)
    short, long_ = present
    return Capture(cid, uw=roles[short], tele=roles[long_], method=method)


def _unique_ids(captures: Iterable[Capture]) -> list[Capture]:
    seen: dict[str, int] = {}
    out = []
    for c in captures:
        n = seen.get(c.id, 0)
        seen[c.id] = n + 1
        out.append(c if n == 0 else Capture(f"{c.id}-{n + 1}", c.uw, c.tele, c.wide, c.method))
    return out


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "capture"


def read_pairs_csv(path: Path) -> list[Capture]:
    """Captures listed in a CSV file with columns ``uw``, ``tele`` and optional ``wide``, ``id``."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"{path}: cannot read pairs list ({exc.strerror or exc})") from exc
    if not rows or not {"uw", "tele"} <= set(rows[0]):
        raise ConfigError(
            f"{path}: pairs list needs a header with columns 'uw' and 'tele' (optional 'wide', 'id')"
        )
    base = path.parent
    out = []
    for line, row in enumerate(rows, start=2):
        uw, tele = (row.get("uw") or "").strip(), (row.get("tele") or "").strip()
        if not uw or not tele:
            raise ConfigError(f"{path}: line {line} lacks a 'uw' or 'tele' file")
        wide = (row.get("wide") or "").strip()
        cid = (row.get("id") or "").strip() or Path(uw).stem
        out.append(
            Capture(
                _safe_id(cid),
                uw=base / uw,
                tele=base / tele,
                wide=base / wide if wide else None,
                method="csv",
            )
        )
    return out


def _folder_captures(src: Path) -> list[Capture]:
    """Captures from ``uw/``, ``wide/``, ``tele/`` sub-folders with matching file names."""
    folders: dict[str, Path] = {}
    for role, names in ROLE_FOLDERS.items():
        for name in names:
            for cand in (src / name, src / name.upper(), src / name.capitalize()):
                if cand.is_dir():
                    folders.setdefault(role, cand)
    if len(folders) < 2:
        return []
    by_stem: dict[str, dict[str, Path]] = {}
    for role, folder in folders.items():
        for f in sorted(folder.iterdir()):
            if is_image_file(f):
                by_stem.setdefault(f.stem.lower(), {})[role] = f
    out = []
    for _stem, roles in sorted(by_stem.items()):
        cap = _capture_from_roles(_safe_id(roles[next(iter(roles))].stem), roles, "folders")
        if cap is not None:
            out.append(cap)
    return out


def _suffix_captures(files: list[Path], src: Path) -> list[Capture]:
    """Captures from ``name_uw``/``name_wide``/``name_tele`` style file names (same folder)."""
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for f in files:
        m = _SUFFIX.match(f.stem)
        if m:
            groups.setdefault((f.parent, m["name"]), {})[_role_of(m["role"])] = f
    out = []
    for (folder, name), roles in sorted(groups.items()):
        rel = folder.relative_to(src) if folder.is_relative_to(src) else Path()
        cid = _safe_id(str(rel / name) if rel.parts else name)
        cap = _capture_from_roles(cid, roles, "suffix")
        if cap is not None:
            out.append(cap)
    return out


def _exif_captures(files: list[Path], max_gap: float) -> tuple[list[Capture], list[Path]]:
    """Group files by body and capture time; each group of 2–3 distinct focal lengths is a capture."""
    infos = {f: read_capture_info(f) for f in files}
    timed = [f for f in files if infos[f].time is not None and (infos[f].focal_35mm or infos[f].focal_mm)]
    untimed = [f for f in files if f not in timed]
    groups: list[list[Path]] = []
    by_body: dict[str, list[Path]] = {}
    for f in timed:
        by_body.setdefault(infos[f].camera, []).append(f)
    for body_files in by_body.values():
        body_files.sort(key=lambda f: (infos[f].time, f.name))
        current: list[Path] = []
        for f in body_files:
            focal = infos[f].focal_35mm or infos[f].focal_mm
            if current and (
                (infos[f].time - infos[current[-1]].time).total_seconds() > max_gap  # type: ignore[operator]
                or any((infos[g].focal_35mm or infos[g].focal_mm) == focal for g in current)
                or len(current) == 3
            ):
                groups.append(current)
                current = []
            current.append(f)
        if current:
            groups.append(current)
    captures, alone = [], list(untimed)
    for g in groups:
        if len(g) < 2:
            alone.extend(g)
            continue
        ordered = _order_by_focal(g, infos)
        roles = dict(zip(("uw", "wide", "tele") if len(g) == 3 else ("uw", "tele"), ordered, strict=True))
        cap = _capture_from_roles(_safe_id(ordered[0].stem), roles, "exif")
        assert cap is not None
        captures.append(cap)
    return captures, sorted(alone)


def discover_captures(
    src: Path, *, pairs_csv: Path | None = None, max_gap: float = 2.0
) -> tuple[list[Capture], list[Path]]:
    """All captures under ``src`` and the image files that could not be paired.

    Args:
        src: a folder of photos, or a CSV pairs list.
        pairs_csv: an explicit pairs list (takes precedence for the files it names).
        max_gap: seconds between capture times for EXIF grouping.

    Raises:
        InputError: ``src`` does not exist or holds no image.
    """
    if src.is_file() and src.suffix.lower() == ".csv":
        pairs_csv, src = src, src.parent
    if not src.is_dir():
        raise InputError(f"{src}: no such folder")
    captures = read_pairs_csv(pairs_csv) if pairs_csv else []
    claimed = {p.resolve() for c in captures for p in c.sources.values()}

    folder_caps = [
        c for c in _folder_captures(src) if not any(p.resolve() in claimed for p in c.sources.values())
    ]
    captures += folder_caps
    claimed |= {p.resolve() for c in folder_caps for p in c.sources.values()}
    role_dirs = {d.resolve() for c in folder_caps for d in (p.parent for p in c.sources.values())}

    files = sorted(
        f
        for f in src.rglob("*")
        if f.is_file()
        and is_image_file(f)
        and f.resolve() not in claimed
        and f.parent.resolve() not in role_dirs
        and not any(part.startswith(".") for part in f.relative_to(src).parts)
    )
    suffix_caps = _suffix_captures(files, src)
    captures += suffix_caps
    claimed |= {p.resolve() for c in suffix_caps for p in c.sources.values()}
    rest = [f for f in files if f.resolve() not in claimed]
    exif_caps, alone = _exif_captures(rest, max_gap)
    captures += exif_caps
    if not captures and not alone:
        raise InputError(f"{src}: no photos found (looked for JPEG/PNG/TIFF/HEIC/RAW files)")
    for f in alone:
        log.warning("%s: no partner photo found; not used", f)
    return _unique_ids(captures), alone
