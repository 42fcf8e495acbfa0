"""``dzsr prepare``: a folder of real captures → an aligned LR / Ref / HR dataset with a manifest.

Per capture, the path ``zoom`` and ``eval`` share (:mod:`dzcli.align.capture`): read both photos (EXIF
orientation applied once) → EXIF zoom ratio → registration (SIFT + MAGSAC, or the direct search on
low-texture scenes; no centred-tele assumption; through the middle camera of a triple capture when the
direct match is too weak) → DIS residual flow both ways and a validity mask → colour
matching of the tele to the wide; then ``pairs/<id>/{lr,hr,ref,mask}.png`` and a preview image.

Each pair is written to a hidden temporary folder and renamed into place when complete; the manifest
is rewritten atomically after every pair. A re-run reuses pairs whose source files and options have
not changed, so an interrupted run resumes where it stopped and a repeated run changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dzcli import __version__
from dzcli.align.capture import CapturePhotos, align_capture, read_capture, register_capture
from dzcli.align.color import match_colors
from dzcli.align.register import Registration, align_pair, register
from dzcli.data.manifest import Manifest, MidRecord, PairRecord, read_manifest, write_manifest
from dzcli.data.pairs import Capture, discover_captures
from dzcli.errors import (
    AlignmentError,
    ConfigError,
    DatasetError,
    InputError,
    OutputError,
    ResourceError,
    TeleNotFoundError,
)
from dzcli.io.atomic import check_output
from dzcli.io.images import save_image
from dzcli.resize import torch_resize
from dzcli.viz import pair_preview
from dzsr_models.dzsr import centre_box

log = logging.getLogger(__name__)

PAIRS_DIR = "pairs"


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``dzsr prepare`` (defaults are the documented defaults)."""

    src: Path
    out: Path
    scale: int = 2
    test_fraction: float = 0.1
    force: bool = False
    pairs_csv: Path | None = None
    max_gap: float = 2.0
    zoom_ratio: float | None = None
    max_megapixels: float = 100.0
    min_valid: float = 0.2
    min_size: int = 48

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise ConfigError(f"--scale must be 2 or 4, not {self.scale}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be in [0, 1), not {self.test_fraction}")
        if self.zoom_ratio is not None and self.zoom_ratio <= 1.0:
            raise ConfigError(f"--ratio must be greater than 1, not {self.zoom_ratio}")

    def key(self) -> dict[str, Any]:
        """The options a prepared pair depends on (a pair is reused only when these are unchanged)."""
        return {
            "scale": self.scale,
            "ratio": self.zoom_ratio,
            "min_valid": self.min_valid,
            "min_size": self.min_size,
        }


@dataclass
class PrepareSummary:
    """What ``prepare`` did: the manifest's pair records, files left unpaired, counts."""

    out: Path
    records: list[PairRecord]
    unpaired: list[str] = field(default_factory=list)
    computed: int = 0
    reused: int = 0

    @property
    def n_ok(self) -> int:
        """Number of usable pairs."""
        return sum(r.ok for r in self.records)


ProgressFn = Callable[[int, int, PairRecord], None]
"""``progress(done, total, record)`` after each capture."""


def _fingerprint(paths: dict[str, Path]) -> dict[str, list[int]]:
    out = {}
    for role, p in paths.items():
        try:
            st = p.stat()
            out[role] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[role] = [-1, -1]
    return out


def _display(path: Path, src: Path) -> str:
    try:
        return str(path.resolve().relative_to(src.resolve()))
    except ValueError:
        return str(path)


def _split_value(pair_id: str) -> float:
    """A stable number in [0, 1) from the pair id."""
    return int(hashlib.sha1(pair_id.encode()).hexdigest()[:8], 16) / 2**32


def assign_splits(records: list[PairRecord], test_fraction: float) -> None:
    """Set ``split`` on usable records: the ``round(n * test_fraction)`` pairs with the lowest id hash are ``test``.

    Ranking by a hash of the id keeps the split stable as captures are added. With at least two usable
    pairs and a non-zero fraction there is at least one ``test`` and one ``train`` pair.
    """
    ok = sorted((r for r in records if r.ok), key=lambda r: _split_value(r.id))
    n_test = 0
    if test_fraction > 0 and len(ok) >= 2:
        n_test = min(len(ok) - 1, max(1, round(len(ok) * test_fraction)))
    for r in records:
        r.split = None
    for i, r in enumerate(ok):
        r.split = "test" if i < n_test else "train"


def _alignment_psnr(lr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor) -> float | None:
    """PSNR (dB) between the wide crop and the matched tele brought down to its size, on valid pixels."""
    size = (lr.shape[-2], lr.shape[-1])
    hr_d = torch_resize(hr, size, "area")
    m = torch_resize(mask, size, "area") > 0.99
    if m.sum() < 16:
        return None
    mse = ((hr_d - lr) ** 2).mean(0, keepdim=True)[m].mean().item()
    return round(10 * math.log10(1 / max(mse, 1e-10)), 2)


def _process(cap: Capture, cfg: PrepareConfig, work: Path, record: PairRecord) -> None:
    """Align one capture and write its files into ``work``; fills ``record`` as it goes.

    Raises:
        InputError, AlignmentError, ResourceError: the capture cannot be used (reason in the message).
    """
    photos = read_capture(cap, max_megapixels=cfg.max_megapixels, zoom_ratio=cfg.zoom_ratio)
    uw, tele, est = photos.uw, photos.tele, photos.zoom_ratio
    record.camera = {"uw": uw.info.camera, "tele": tele.info.camera}
    record.exif = {"uw": uw.info.to_dict(), "tele": tele.info.to_dict()}
    record.zoom_ratio_exif = None if est.value is None else round(est.value, 4)
    record.zoom_ratio_source = est.source
    found = register_capture(cap, photos)
    reg = found.tele
    record.zoom_ratio = round(reg.zoom_ratio, 4)
    record.density = round(reg.density, 4)
    record.inliers = reg.inliers
    record.registration = reg.to_dict()
    if reg.density < cfg.scale * 0.9:
        log.warning(
            "%s: the tele has only %.2fx the wide's pixel density, below the x%d scale: its detail is upsampled",
            cap.id,
            reg.density,
            cfg.scale,
        )
    aligned = align_capture(
        uw.pixels,
        tele.pixels,
        scale=cfg.scale,
        zoom_ratio=est.value,
        registration=reg,
        uw_name=cap.uw.name,
        tele_name=cap.tele.name,
    )
    record.valid_fraction = round(aligned.valid_fraction, 4)
    record.box = aligned.box
    lr, hr, mask = aligned.lr, aligned.ref, aligned.mask
    if min(lr.shape[-2:]) < cfg.min_size:
        raise TeleNotFoundError(
            f"{cap.tele.name}: the tele covers only {lr.shape[-1]}x{lr.shape[-2]} pixels of {cap.uw.name}, "
            f"too small (need {cfg.min_size})"
        )
    if aligned.valid_fraction < cfg.min_valid:
        raise TeleNotFoundError(
            f"{cap.tele.name}: only {aligned.valid_fraction:.0%} of the registered tele is consistent with "
            f"{cap.uw.name} (need {cfg.min_valid:.0%}): moving scene or strong parallax"
        )
    h, w = lr.shape[-2:]
    s = cfg.scale
    x0, y0, bw, bh = centre_box(h, w, s)
    ref = hr[:, s * y0 : s * (y0 + bh), s * x0 : s * (x0 + bw)]
    depth = max(uw.bit_depth, tele.bit_depth)
    # The pair's files at most take their uncompressed size: refuse now rather than fill the disk.
    check_output(work / "hr.png", (lr.numel() + hr.numel() + ref.numel() + mask.numel()) * depth // 8)
    files = {"lr": "lr.png", "hr": "hr.png", "ref": "ref.png", "mask": "mask.png", "preview": "preview.jpg"}
    save_image(work / files["lr"], lr, bit_depth=depth)
    save_image(work / files["hr"], hr, bit_depth=depth)
    save_image(work / files["ref"], ref, bit_depth=depth)
    save_image(work / files["mask"], mask, bit_depth=8)
    save_image(work / files["preview"], pair_preview(lr, hr, mask), quality=90)
    record.bit_depth = depth
    record.size = {"lr": [w, h], "hr": [hr.shape[-1], hr.shape[-2]], "ref": [ref.shape[-1], ref.shape[-2]]}
    record.ref_box = (x0, y0, bw, bh)
    record.flow = aligned.flow
    record.colour = aligned.colour.to_dict()
    record.alignment_psnr = _alignment_psnr(lr, hr, mask)
    if photos.wide is not None:
        record.mid = _process_mid(cap, photos, found.wide, cfg, aligned.box, lr, work, files, depth)
    record.files = {k: f"{PAIRS_DIR}/{cap.id}/{v}" for k, v in files.items()}


def _process_mid(
    cap: Capture,
    photos: CapturePhotos,
    reg: Registration | None,
    cfg: PrepareConfig,
    box: tuple[int, int, int, int],
    lr: torch.Tensor,
    work: Path,
    files: dict[str, str],
    depth: int,
) -> MidRecord:
    """Register the middle camera of a triple capture onto the same LR grid (``mid.png``, ``mid_mask.png``).

    ``reg`` is its registration in the uw when the tele was found through it (then it is not repeated).
    """
    uw, wide, est = photos.uw, photos.wide, photos.wide_zoom_ratio
    assert cap.wide is not None and wide is not None and est is not None
    if reg is None:
        reg = register(
            uw.pixels, wide.pixels, zoom_ratio_hint=est.value, uw_name=cap.uw.name, tele_name=cap.wide.name
        )
    pair = align_pair(
        uw.pixels, wide.pixels, reg, scale=cfg.scale, box=box, uw_name=cap.uw.name, tele_name=cap.wide.name
    )
    mid, _ = match_colors(pair.hr, lr, pair.mask)
    files["mid"], files["mid_mask"] = "mid.png", "mid_mask.png"
    save_image(work / files["mid"], mid, bit_depth=max(depth, wide.bit_depth))
    save_image(work / files["mid_mask"], pair.mask, bit_depth=8)
    return MidRecord(
        camera=wide.info.camera,
        zoom_ratio_exif=None if est.value is None else round(est.value, 4),
        zoom_ratio=round(reg.zoom_ratio, 4),
        inliers=reg.inliers,
        valid_fraction=round(pair.valid_fraction, 4),
    )


def _new_record(cap: Capture, cfg: PrepareConfig) -> PairRecord:
    return PairRecord(
        id=cap.id,
        method=cap.method,
        sources={k: _display(v, cfg.src) for k, v in cap.sources.items()},
        fingerprint=_fingerprint(cap.sources),
        options=cfg.key(),
        scale=cfg.scale,
    )


def _reusable(old: PairRecord | None, new: PairRecord, root: Path) -> bool:
    if old is None or old.fingerprint != new.fingerprint or old.options != new.options:
        return False
    if old.sources != new.sources:
        return False
    if not old.ok:
        return True
    return all((root / f).is_file() for f in old.files.values())


def _install(work: Path, final: Path) -> None:
    """Move a finished pair folder into place, replacing an older one."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        work.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        work.rename(final)


def prepare(cfg: PrepareConfig, *, progress: ProgressFn | None = None) -> PrepareSummary:
    """Build (or update) the dataset ``cfg.out`` from the captures in ``cfg.src``.

    Args:
        cfg: the options.
        progress: called after each capture with (done, total, record).

    Returns:
        The summary; its records are the manifest's ``pairs``.

    Raises:
        InputError: ``src`` missing or without photos.
        DatasetError: no capture could be used (every reason is in the records and the log).
        OutputError: ``out`` cannot be written (checked before any capture is processed), or a pair's
            files do not fit on its disk (the pairs before it are kept).
    """
    captures, alone = discover_captures(cfg.src, pairs_csv=cfg.pairs_csv, max_gap=cfg.max_gap)
    root = cfg.out
    check_output(root / "manifest.json")
    check_output(root / PAIRS_DIR / "pair")
    root.mkdir(parents=True, exist_ok=True)
    (root / PAIRS_DIR).mkdir(exist_ok=True)
    old_records: dict[str, PairRecord] = {}
    if (root / "manifest.json").exists() and not cfg.force:
        old_records = {r.id: r for r in read_manifest(root).pairs}

    summary = PrepareSummary(out=root, records=[], unpaired=[_display(p, cfg.src) for p in alone])
    manifest = Manifest(
        pairs=summary.records,
        unpaired=summary.unpaired,
        options={
            "scale": cfg.scale,
            "test_fraction": cfg.test_fraction,
            "ratio": cfg.zoom_ratio,
            "max_gap": cfg.max_gap,
            "min_valid": cfg.min_valid,
            "min_size": cfg.min_size,
        },
        dzsr_version=__version__,
    )
    for i, cap in enumerate(captures):
        record = _new_record(cap, cfg)
        old = old_records.get(cap.id)
        if _reusable(old, record, root):
            assert old is not None
            summary.records.append(old)
            summary.reused += 1
        else:
            _compute(cap, cfg, record, root)
            summary.records.append(record)
            summary.computed += 1
            assign_splits(summary.records, cfg.test_fraction)
            write_manifest(root, manifest)
        if progress:
            progress(i + 1, len(captures), summary.records[-1])

    assign_splits(summary.records, cfg.test_fraction)
    write_manifest(root, manifest)
    if summary.n_ok == 0:
        reasons = "; ".join(f"{r.id}: {r.status}" for r in summary.records[:3])
        raise DatasetError(f"{cfg.src}: no usable pair ({len(summary.records)} found; {reasons})")
    return summary


def _compute(cap: Capture, cfg: PrepareConfig, record: PairRecord, root: Path) -> None:
    """Process one capture into a temporary folder, then install it; failures become the record's status."""
    final = root / PAIRS_DIR / cap.id
    work = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _process(cap, cfg, work, record)
        record.status = "ok"
        _install(work, final)
    except OutputError as exc:  # name the pair's folder, not the hidden one it is written to first
        raise OutputError(str(exc).replace(str(work), str(final))) from None
    except (InputError, AlignmentError, ResourceError, MemoryError) as exc:
        record.status = str(exc) if not isinstance(exc, MemoryError) else "out of memory"
        record.files = {}
        log.warning("%s: skipped: %s", cap.id, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
