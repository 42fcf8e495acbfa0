"""Prepared pairs in memory, and the random training patches cut from them.

Training samples follow the SelfDZSR recipe: an aligned random crop of ``lr`` (p×p) and ``hr``
(sp×sp) with its validity mask, the same flips/transposition on all of them, and a reference cut from
``hr`` over a random ``p/s × p/s`` window of the ``lr`` patch (so the reference's pixel grid has the
patch's size and lies at a known place, like a real tele inside the wide's field of view). For a
triple-camera model, the middle camera of a triple capture (``mid``, on the same grid as ``hr``) over a
random window of the patch is a second reference (``ref2``), as the wide around the tele at zoom time.

Every sample is a pure function of ``(seed, index)``: training is reproducible, resumes exactly, and
distributed ranks draw disjoint index ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dzcli.data.manifest import read_manifest
from dzcli.errors import DatasetError, InputError
from dzcli.infer.guard import quiet_flat
from dzcli.io.images import load_photo
from dzcli.resize import torch_resize
from dzsr_models.dzsr import centre_box, crop_ref

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

MID_WINDOW = 0.75
"""Side of a training sample's middle-camera window, as a share of the LR patch's."""


@dataclass(frozen=True)
class PreparedPair:
    """One usable pair, in memory (float32 RGB in ``[0, 1]``).

    Attributes:
        id: Pair id.
        lr: ``(3, h, w)`` the wide's crop (the tele's field of view).
        hr: ``(3, s·h, s·w)`` the tele registered onto ``lr`` at ``s×`` density (the supervision).
        mask: ``(1, s·h, s·w)`` in ``{0, 1}``: where the registration is valid.
        ref: ``(3, s·bh, s·bw)`` the reference given to the network: ``hr`` over ``ref_box``.
        ref_box: ``(x0, y0, bw, bh)`` of the reference in whole ``lr`` pixels.
        bit_depth: 8 or 16, of the source files.
        mid: ``(3, s·h, s·w)`` the middle camera of a triple capture on ``hr``'s grid (the bicubic ``lr``
            where its registration is not valid), else None.
    """

    id: str
    lr: torch.Tensor
    hr: torch.Tensor
    mask: torch.Tensor
    ref: torch.Tensor
    ref_box: Box
    bit_depth: int = 8
    mid: torch.Tensor | None = None

    @property
    def scale(self) -> int:
        """``s``: the HR's density relative to the LR."""
        return int(self.hr.shape[-1]) // int(self.lr.shape[-1])

    @classmethod
    def from_tensors(
        cls, lr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None = None, *, id: str = "pair"
    ) -> PreparedPair:
        """A pair from aligned tensors, with the reference = the centre ``1/s`` of ``hr`` (as ``prepare``).

        Args:
            lr: ``(3, h, w)`` in ``[0, 1]``.
            hr: ``(3, s·h, s·w)`` in ``[0, 1]``, registered onto ``lr``.
            mask: ``(1, s·h, s·w)`` validity (> 0.5 is valid); None: everything valid.
            id: A name for messages.

        Raises:
            InputError: ``hr`` is not an integer multiple ``s >= 1`` of ``lr`` in both directions, or the
                mask does not match ``hr``.
        """
        h, w = int(lr.shape[-2]), int(lr.shape[-1])
        s = int(hr.shape[-1]) // max(w, 1)
        if lr.dim() != 3 or hr.dim() != 3 or s < 1 or tuple(hr.shape[-2:]) != (s * h, s * w):
            raise InputError(f"{id}: hr {tuple(hr.shape)} is not an integer multiple of lr {tuple(lr.shape)}")
        if mask is None:
            mask = torch.ones(1, s * h, s * w)
        elif tuple(mask.shape) != (1, s * h, s * w):
            raise InputError(f"{id}: mask {tuple(mask.shape)} does not match hr {tuple(hr.shape)}")
        box = centre_box(h, w, s)
        return cls(
            id=id,
            lr=lr.float(),
            hr=hr.float(),
            mask=(mask > 0.5).float(),
            ref=crop_ref(hr.float(), box, s).contiguous(),
            ref_box=box,
        )


def dataset_scale(root: Path) -> int:
    """The network scale ``s`` a prepared dataset was made for.

    Raises:
        DatasetError: Missing, corrupt or older manifest.
    """
    manifest = read_manifest(root)
    try:
        return int(manifest.options["scale"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{root}: corrupt dataset manifest (no options.scale)") from exc


def load_pairs(root: Path, split: str | None) -> list[PreparedPair]:
    """All usable pairs of ``split`` (``train``/``test``; None = all), read into memory.

    Raises:
        DatasetError: The manifest is missing, corrupt or of another version, the split is empty, a
            listed file is unreadable, or a pair's scale differs from the dataset's.
    """
    manifest = read_manifest(root)
    scale = dataset_scale(root)
    records = manifest.usable(split)
    if not records:
        raise DatasetError(
            f"{root}: no usable pair in the {split or 'whole'} split "
            f"({len(manifest.pairs)} pairs listed; re-run `dzsr prepare` with more captures)"
        )
    out = []
    for rec in records:
        try:
            lr, hr, mask, ref = (load_photo(root / rec.files[k]) for k in ("lr", "hr", "mask", "ref"))
        except (InputError, KeyError, OSError) as exc:
            raise DatasetError(f"{root}: pair {rec.id} is corrupt ({exc})") from exc
        h, w = lr.pixels.shape[-2:]
        if tuple(hr.pixels.shape[-2:]) != (scale * h, scale * w):
            raise DatasetError(
                f"{root}: pair {rec.id} is corrupt (hr {tuple(hr.pixels.shape[-2:])} is not "
                f"the dataset's x{scale} of lr {(h, w)})"
            )
        if rec.ref_box is None:
            raise DatasetError(f"{root}: pair {rec.id} is corrupt (no usable ref_box: none recorded)")
        bw, bh = rec.ref_box[2:]
        if tuple(ref.pixels.shape[-2:]) != (scale * bh, scale * bw):
            raise DatasetError(f"{root}: pair {rec.id} is corrupt (ref does not match its ref_box)")
        mid = None
        if rec.mid is not None:
            mid = _load_mid(root, rec.files, rec.id, lr.pixels, tuple(hr.pixels.shape[-2:]))
        out.append(
            PreparedPair(
                id=rec.id,
                lr=lr.pixels,
                hr=hr.pixels,
                mask=(mask.pixels[:1] > 0.5).float(),
                ref=ref.pixels,
                ref_box=rec.ref_box,
                bit_depth=8 if rec.bit_depth is None else rec.bit_depth,
                mid=mid,
            )
        )
    log.info("%s: %d %s pairs loaded", root, len(out), split or "")
    return out


def _load_mid(
    root: Path, files: dict[str, str], pair_id: str, lr: torch.Tensor, size: tuple[int, ...]
) -> torch.Tensor:
    """A pair's middle camera (``mid.png``), the bicubic ``lr`` where ``mid_mask.png`` says it is not valid."""
    try:
        mid, mask = (load_photo(root / files[k]).pixels for k in ("mid", "mid_mask"))
    except (InputError, KeyError, OSError) as exc:
        raise DatasetError(f"{root}: pair {pair_id} is corrupt (its middle camera: {exc})") from exc
    if tuple(mid.shape[-2:]) != size or tuple(mask.shape[-2:]) != size:
        raise DatasetError(f"{root}: pair {pair_id} is corrupt (mid is not on the hr's grid)")
    valid = (mask[:1] > 0.5).float()
    up = torch_resize(lr, (int(size[0]), int(size[1])), "bicubic")
    return mid * valid + up * (1 - valid)


def _augment(t: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        t = t.flip(-1)
    if vflip:
        t = t.flip(-2)
    if transpose:
        t = t.transpose(-1, -2)
    return t


class TrainPatches:
    """Random training patches from prepared pairs; sample ``i`` depends only on ``(seed, i)``.

    Pairs are drawn in proportion to their LR area. Each sample (see :meth:`__getitem__`) holds ``lr``
    ``(3, p, p)``, ``hr`` ``(3, sp, sp)``, ``mask`` ``(1, sp, sp)``, ``ref`` ``(3, p, p)`` cut from ``hr``
    over the LR window ``ref_box`` = ``(x0, y0, p/s, p/s)`` (int64, LR-patch pixels); with ``triple``,
    ``ref2`` ``(3, s·q, s·q)`` cut from the pair's ``mid`` over the LR window ``ref2_box`` =
    ``(x0, y0, q, q)``, ``q`` = :data:`MID_WINDOW` of ``p`` (the wide reaching beyond the tele, not
    everywhere); with ``quiet``, ``sw_target`` ``(3, sp, sp)``: ``hr`` with the noise of its flat areas taken
    out (:func:`~dzcli.infer.guard.quiet_flat`, once per pair, its floor over the valid part).

    Args:
        pairs: The pairs (those smaller than the patch are skipped, with a warning).
        patch: LR patch side ``p``, a multiple of ``scale``.
        scale: ``s``; every pair must have it.
        seed: Seed of the sampling.
        triple: Add the middle camera's reference (every pair must have a ``mid``).
        quiet: Add ``sw_target``, the perceptual loss's target.

    Raises:
        DatasetError: ``patch`` is not a multiple of ``scale``, a pair has another scale, or no pair is
            large enough; with ``triple``, a pair without a middle camera.
    """

    def __init__(
        self,
        pairs: Sequence[PreparedPair],
        *,
        patch: int,
        scale: int,
        seed: int,
        triple: bool = False,
        quiet: bool = False,
    ) -> None:
        if patch < scale or patch % scale:
            raise DatasetError(f"patch size {patch} must be a positive multiple of the scale {scale}")
        wrong = [p.id for p in pairs if p.scale != scale]
        if wrong:
            raise DatasetError(f"pairs {', '.join(wrong[:3])} are not x{scale} (the model's scale)")
        single = [p.id for p in pairs if p.mid is None]
        if triple and single:
            raise DatasetError(
                f"{len(single)} pairs have no middle camera ({', '.join(single[:3])}): a triple-camera model "
                "trains on triple captures only (prepare a folder of uw/wide/tele captures)"
            )
        self.triple = triple
        small = [p.id for p in pairs if min(p.lr.shape[-2:]) < patch]
        self.pairs = [p for p in pairs if min(p.lr.shape[-2:]) >= patch]
        if not self.pairs:
            raise DatasetError(f"every pair is smaller than the {patch}-pixel patch size; lower --patch-size")
        if small:
            log.warning(
                "%d pairs smaller than the %d-pixel patch are not used: %s",
                len(small),
                patch,
                ", ".join(small[:5]),
            )
        self.patch, self.scale, self.seed = patch, scale, seed
        areas = np.array([p.lr.shape[-1] * p.lr.shape[-2] for p in self.pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.quiet = [quiet_flat(p.hr, p.mask) for p in self.pairs] if quiet else None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` (any int >= 0): a dict of ``lr``, ``hr``, ``mask``, ``ref``, ``ref_box`` (and
        ``ref2``, ``ref2_box``)."""
        rng = np.random.default_rng((self.seed, index))
        chosen = int(rng.choice(len(self.pairs), p=self.weights))
        pair = self.pairs[chosen]
        p, s = self.patch, self.scale
        h, w = pair.lr.shape[-2:]
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        flips = rng.random(3) < 0.5
        lr = _augment(pair.lr[:, y : y + p, x : x + p], *flips)
        hr = _augment(pair.hr[:, s * y : s * (y + p), s * x : s * (x + p)], *flips)
        mask = _augment(pair.mask[:, s * y : s * (y + p), s * x : s * (x + p)], *flips)
        q = p // s
        ry, rx = int(rng.integers(0, p - q + 1)), int(rng.integers(0, p - q + 1))
        sample = {
            "lr": lr.contiguous(),
            "hr": hr.contiguous(),
            "mask": mask.contiguous(),
            "ref": hr[:, s * ry : s * (ry + q), s * rx : s * (rx + q)].contiguous(),
            "ref_box": torch.tensor([rx, ry, q, q], dtype=torch.int64),
        }
        if self.triple:
            assert pair.mid is not None
            mid = _augment(pair.mid[:, s * y : s * (y + p), s * x : s * (x + p)], *flips)
            q2 = max(1, round(MID_WINDOW * p))
            my, mx = int(rng.integers(0, p - q2 + 1)), int(rng.integers(0, p - q2 + 1))
            sample["ref2"] = mid[:, s * my : s * (my + q2), s * mx : s * (mx + q2)].contiguous()
            sample["ref2_box"] = torch.tensor([mx, my, q2, q2], dtype=torch.int64)
        if self.quiet is not None:
            target = self.quiet[chosen][:, s * y : s * (y + p), s * x : s * (x + p)]
            sample["sw_target"] = _augment(target, *flips).contiguous()
        return sample

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Samples ``indices`` stacked along a new first (batch) dimension."""
        samples = [self[i] for i in indices]
        return {k: torch.stack([smp[k] for smp in samples]) for k in samples[0]}
