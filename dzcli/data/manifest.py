"""The prepared dataset's index, ``DATA/manifest.json``: versioned, validated on read, written atomically.

Layout::

    {"version": 1, "dzsr_version": "...", "options": {...},
     "pairs": [{"id", "status", "split", "ratio_exif", "ratio", "inliers", "valid_fraction", "files", ...}],
     "unpaired": ["file", ...]}

``status`` is ``"ok"`` or the reason the pair was skipped. ``files`` paths are relative to the dataset root.
In memory the file is a :class:`Manifest` of :class:`PairRecord`; the JSON keys ``ratio`` and ``ratio_exif``
are the records' ``zoom_ratio`` and ``zoom_ratio_exif`` (field-of-view ratios; ``density`` is the tele's pixels
per wide pixel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dzcli import __version__
from dzcli.errors import DatasetError
from dzcli.io.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PAIR_KEYS = ("id", "status", "split", "ratio_exif", "ratio", "inliers", "valid_fraction", "files")

Box = tuple[int, int, int, int]


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    x0, y0, w, h = (int(v) for v in value)
    return x0, y0, w, h


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class MidRecord:
    """The middle camera of a triple capture, registered onto the pair's LR grid (``mid.png``).

    Attributes:
        camera: its camera's name (EXIF make and model), if known.
        zoom_ratio_exif: the uw-to-middle field-of-view ratio EXIF gives, if any.
        zoom_ratio: the registered uw-to-middle field-of-view ratio.
        inliers: feature matches of its registration.
        valid_fraction: share of its pixels consistent with the uw.
    """

    camera: str | None
    zoom_ratio_exif: float | None
    zoom_ratio: float
    inliers: int
    valid_fraction: float

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the manifest."""
        return {
            "camera": self.camera,
            "ratio_exif": self.zoom_ratio_exif,
            "ratio": self.zoom_ratio,
            "inliers": self.inliers,
            "valid_fraction": self.valid_fraction,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MidRecord:
        """The record of a manifest's JSON object (see :meth:`to_json`)."""
        return cls(
            camera=d.get("camera"),
            zoom_ratio_exif=_float(d.get("ratio_exif")),
            zoom_ratio=float(d["ratio"]),
            inliers=int(d["inliers"]),
            valid_fraction=float(d["valid_fraction"]),
        )


@dataclass
class PairRecord:
    """One capture of a prepared dataset, as ``dzsr prepare`` found it: a usable pair or why not.

    Filled in stages while the capture is processed; a field that a failed capture never reached stays
    None and is left out of the JSON (the header fields, up to ``files``, are always written).

    Attributes:
        id: the capture's id (its folder under ``pairs/``).
        status: ``ok``, ``pending`` (being processed) or the reason the pair was skipped.
        split: ``train``, ``test`` or None (not usable).
        method: how the capture's photos were grouped (:class:`dzcli.data.pairs.Capture`).
        sources: the photos, by role (``uw``, ``tele``, ``wide``), relative to the source folder.
        fingerprint: ``[size, mtime_ns]`` of each source, by role (a pair is reused while they match).
        options: the options the pair depends on (:meth:`dzcli.pipeline.prepare.PrepareConfig.key`).
        scale: the network scale ``s`` of the pair.
        camera: the cameras' names, ``{"uw": ..., "tele": ...}``.
        zoom_ratio_exif: the field-of-view ratio EXIF (or ``--ratio``) gives, if any (JSON ``ratio_exif``).
        zoom_ratio: the registered field-of-view ratio (JSON ``ratio``).
        inliers: feature matches of the registration.
        valid_fraction: share of the registered tele consistent with the uw.
        files: the pair's files, by role (``lr``, ``hr``, ``ref``, ``mask``, ``preview``, ``mid``, ...),
            relative to the dataset root; empty when the pair is not usable.
        exif: both photos' EXIF (:meth:`dzcli.io.exif.CaptureInfo.to_dict`), by role.
        zoom_ratio_source: where ``zoom_ratio_exif`` came from (JSON ``ratio_source``).
        density: tele pixels per wide pixel, registered.
        registration: :meth:`dzcli.align.register.Registration.to_dict`.
        box: ``(x0, y0, w, h)`` of ``lr`` in uw pixels.
        bit_depth: 8 or 16, of the pair's images.
        size: ``[width, height]`` of ``lr``, ``hr`` and ``ref``.
        ref_box: ``(x0, y0, bw, bh)`` of ``ref`` in whole ``lr`` pixels.
        flow: residual flow after the homography (``mean``, ``p95``, in ``hr`` pixels).
        colour: the fitted colour mapping (:meth:`dzcli.align.color.ColorModel.to_dict`).
        alignment_psnr: PSNR (dB) of ``hr`` brought down to ``lr``'s size against ``lr`` (None: too few
            valid pixels); written with ``size``.
        mid: the middle camera of a triple capture.
    """

    id: str
    status: str = "pending"
    split: str | None = None
    method: str | None = None
    sources: dict[str, str] | None = None
    fingerprint: dict[str, list[int]] | None = None
    options: dict[str, Any] | None = None
    scale: int | None = None
    camera: dict[str, str | None] | None = None
    zoom_ratio_exif: float | None = None
    zoom_ratio: float | None = None
    inliers: int | None = None
    valid_fraction: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    exif: dict[str, dict[str, Any]] | None = None
    zoom_ratio_source: str | None = None
    density: float | None = None
    registration: dict[str, Any] | None = None
    box: Box | None = None
    bit_depth: int | None = None
    size: dict[str, list[int]] | None = None
    ref_box: Box | None = None
    flow: dict[str, float] | None = None
    colour: dict[str, Any] | None = None
    alignment_psnr: float | None = None
    mid: MidRecord | None = None

    @property
    def ok(self) -> bool:
        """Whether the pair is usable."""
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the manifest (keys in the order ``prepare`` has always written them)."""
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "split": self.split,
            "method": self.method,
            "sources": self.sources,
            "fingerprint": self.fingerprint,
            "options": self.options,
            "scale": self.scale,
            "camera": self.camera,
            "ratio_exif": self.zoom_ratio_exif,
            "ratio": self.zoom_ratio,
            "inliers": self.inliers,
            "valid_fraction": self.valid_fraction,
            "files": self.files,
        }
        staged: dict[str, Any] = {
            "exif": self.exif,
            "ratio_source": self.zoom_ratio_source,
            "density": self.density,
            "registration": self.registration,
            "box": None if self.box is None else list(self.box),
            "bit_depth": self.bit_depth,
            "size": self.size,
            "ref_box": None if self.ref_box is None else list(self.ref_box),
            "flow": self.flow,
            "colour": self.colour,
            "alignment_psnr": self.alignment_psnr,
            "mid": None if self.mid is None else self.mid.to_json(),
        }
        for key, value in staged.items():
            if value is not None or (key == "alignment_psnr" and self.size is not None):
                out[key] = value
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PairRecord:
        """The record of a manifest's JSON object (see :meth:`to_json`).

        Raises:
            KeyError, TypeError, ValueError: a field is missing or of the wrong type.
        """
        mid = d.get("mid")
        return cls(
            id=str(d["id"]),
            status=str(d["status"]),
            split=d["split"],
            method=d.get("method"),
            sources=d.get("sources"),
            fingerprint=d.get("fingerprint"),
            options=d.get("options"),
            scale=_int(d.get("scale")),
            camera=d.get("camera"),
            zoom_ratio_exif=_float(d["ratio_exif"]),
            zoom_ratio=_float(d["ratio"]),
            inliers=_int(d["inliers"]),
            valid_fraction=_float(d["valid_fraction"]),
            files=dict(d["files"]),
            exif=d.get("exif"),
            zoom_ratio_source=d.get("ratio_source"),
            density=_float(d.get("density")),
            registration=d.get("registration"),
            box=_box(d.get("box")),
            bit_depth=_int(d.get("bit_depth")),
            size=d.get("size"),
            ref_box=_box(d.get("ref_box")),
            flow=d.get("flow"),
            colour=d.get("colour"),
            alignment_psnr=_float(d.get("alignment_psnr")),
            mid=None if mid is None else MidRecord.from_json(mid),
        )


@dataclass
class Manifest:
    """A prepared dataset's index.

    Attributes:
        pairs: one record per capture found, usable or not.
        unpaired: photos without a partner, relative to the source folder.
        options: the options of the ``prepare`` run (``scale``, ``test_fraction``, ``ratio``, ...).
        dzsr_version: the dzsr that wrote it.
        version: the format version (:data:`MANIFEST_VERSION`).
    """

    pairs: list[PairRecord]
    unpaired: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    dzsr_version: str = __version__
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return {
            "version": self.version,
            "dzsr_version": self.dzsr_version,
            "options": self.options,
            "pairs": [p.to_json() for p in self.pairs],
            "unpaired": list(self.unpaired),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Manifest:
        """The manifest of a ``manifest.json`` object of this format version (unchecked: see
        :func:`read_manifest`).

        Raises:
            KeyError, TypeError, ValueError: a field is missing or of the wrong type.
        """
        return cls(
            pairs=[PairRecord.from_json(p) for p in d["pairs"]],
            unpaired=list(d.get("unpaired", [])),
            options=dict(d.get("options") or {}),
            dzsr_version=str(d.get("dzsr_version", "")),
            version=int(d["version"]),
        )

    def usable(self, split: str | None = None) -> list[PairRecord]:
        """The usable pairs of ``split`` (``train``, ``test``; None: all)."""
        return [p for p in self.pairs if p.ok and (split is None or p.split == split)]


def read_manifest(root: Path) -> Manifest:
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
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: corrupt dataset manifest ({type(exc).__name__}: {exc})") from exc


def write_manifest(root: Path, manifest: Manifest) -> bool:
    """Write the manifest atomically unless the file already holds exactly this content.

    Returns:
        True when the file was (re)written.
    """
    path = root / MANIFEST_NAME
    content = manifest.to_json()
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(content)):
                return False
        except (OSError, ValueError):
            pass
    write_json_atomic(path, content)
    return True
