"""A tiny prepared dataset, written directly (lr/hr/ref/mask PNGs + manifest), for the training tests.

Each pair is a crop of a real test photo: ``hr`` at full resolution, ``lr`` its exact ``s×s`` area
average (so ``avg_pool(hr, s) ≈ lr`` up to 8-bit rounding), ``ref`` the centre ``1/s`` of ``hr``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dzcli import __version__
from dzcli.data.manifest import MANIFEST_VERSION, Manifest, MidRecord, PairRecord, write_manifest
from dzcli.io.images import save_image
from dzsr_models.dzsr import centre_box, crop_ref
from tests.conftest import scene

SCENES = ("life", "picos", "seeding", "free")


def make_dataset(
    root: Path,
    *,
    scale: int = 2,
    n_train: int = 3,
    n_test: int = 1,
    size: tuple[int, int] = (40, 48),
    version: int = MANIFEST_VERSION,
    triple: bool = False,
) -> Path:
    """Write a prepared dataset of ``n_train + n_test`` pairs with LR ``size`` (h, w) into ``root``; with
    ``triple``, each pair has a middle camera (``mid.png``: ``hr`` softened, as a wide at the same density
    would see it, invalid over its left 2 LR px)."""
    h, w = size
    records = []
    for i in range(n_train + n_test):
        photo = scene(SCENES[i % len(SCENES)])
        y0, x0 = 60 + 17 * i, 90 + 23 * i
        hr = photo[:, y0 : y0 + scale * h, x0 : x0 + scale * w].contiguous()
        lr = F.avg_pool2d(hr[None], scale)[0]
        mask = torch.ones(1, scale * h, scale * w)
        if i == 0:
            mask[:, :, : scale * 4] = 0  # an invalid band, as registration leaves at borders
        box = centre_box(h, w, scale)
        pid = f"pair{i}"
        folder = root / "pairs" / pid
        folder.mkdir(parents=True)
        save_image(folder / "lr.png", lr)
        save_image(folder / "hr.png", hr)
        save_image(folder / "ref.png", crop_ref(hr, box, scale).contiguous())
        save_image(folder / "mask.png", mask.expand(3, -1, -1).contiguous())
        files = {k: f"pairs/{pid}/{k}.png" for k in ("lr", "hr", "ref", "mask")}
        mid_record = None
        if triple:
            soft = F.interpolate(F.avg_pool2d(hr[None], 2), scale_factor=2, mode="bilinear")[0]
            mid_mask = torch.ones(1, scale * h, scale * w)
            mid_mask[:, :, : 2 * scale] = 0
            save_image(folder / "mid.png", soft.clamp(0, 1).contiguous())
            save_image(folder / "mid_mask.png", mid_mask.expand(3, -1, -1).contiguous())
            files |= {k: f"pairs/{pid}/{k}.png" for k in ("mid", "mid_mask")}
            mid_record = MidRecord(
                camera=None, zoom_ratio_exif=None, zoom_ratio=2.0, inliers=80, valid_fraction=0.95
            )
        records.append(
            PairRecord(
                id=pid,
                status="ok",
                split="train" if i < n_train else "test",
                zoom_ratio_exif=2.0,
                zoom_ratio=2.0,
                inliers=100,
                valid_fraction=float(mask.mean()),
                scale=scale,
                files=files,
                ref_box=box,
                bit_depth=8,
                mid=mid_record,
            )
        )
    manifest = Manifest(
        pairs=records,
        options={"scale": scale, "test_fraction": 0.25},
        dzsr_version=__version__,
        version=version,
    )
    write_manifest(root, manifest)
    return root
