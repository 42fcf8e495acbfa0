"""Make the README's comparison figure: crops of the example capture, bicubic | dzsr | ground truth.

The example pair in ``examples/`` was made with ``dzsr simulate seeding.jpg out/ --ratio 2 --max-side 3200
--seed 0`` (see ``examples/ATTRIBUTION.md``), so re-running that simulation gives its ground truth. The
script zooms the example exactly as ``dzsr zoom`` does, cuts the most detailed crop (in the ground truth,
:func:`dzcli.pipeline.evaluate.pick_crop`) inside the tele's footprint and outside it, and writes ``docs/example_crops.png`` (each crop enlarged 2x, nearest neighbour, so the
pixels are visible) and ``docs/example_crops.json`` (PSNR of each crop against the ground truth).

Usage::

    python benchmarks/readme_figure.py --photo /path/to/seeding_by_Clements_Engelhardt.jpg
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch.nn.functional as F

from dzcli.io.images import load_photo, save_image
from dzcli.metrics.image import psnr
from dzcli.pipeline.evaluate import footprint_box, pick_crop
from dzcli.pipeline.simulate import SimulateConfig, simulate_folder
from dzcli.pipeline.zoom import ZoomConfig, zoom
from dzcli.report import crop_sheet
from dzcli.resize import cv_resize

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--photo", type=Path, default=Path("/work/shared/data/photos/seeding_by_Clements_Engelhardt.jpg")
    )
    parser.add_argument(
        "--model", default=None, help="checkpoint or bundled name (default: the bundled model)"
    )
    parser.add_argument("--crop", type=int, default=160, help="crop side in output pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()

    uw_path, tele_path = ROOT / "examples" / "seeding_uw.jpg", ROOT / "examples" / "seeding_tele.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "seeding.jpg"
        photo.symlink_to(args.photo.resolve())
        (rec,) = simulate_folder(
            SimulateConfig(photos=photo, out=work / "sim", zoom_ratio=2.0, max_side=3200, seed=0)
        )
        sim_uw = (work / "sim" / rec.files["uw"]).read_bytes()
        if sim_uw != uw_path.read_bytes():
            raise SystemExit(
                "error: the simulation does not reproduce examples/seeding_uw.jpg (wrong --photo?)"
            )
        truth = load_photo(work / "sim" / rec.files["truth"]).pixels
        out = work / "zoomed.png"
        zoom(ZoomConfig(inputs=(uw_path, tele_path), out=out, model=args.model, outscale=2.0, ext="png"))
        sr = load_photo(out).pixels
    uw = load_photo(uw_path).pixels
    h, w = truth.shape[-2:]
    sr = sr[:, :h, :w]
    bic = cv_resize(uw, (h, w), "bicubic")
    box = footprint_box(rec.tele_to_uw, rec.tele_size, rec.density, (w, h))
    rows, scores = [], {}
    for name, region in (("inside the tele's view", "centre"), ("outside the tele's view", "corner")):
        x, y, c, _ = pick_crop(truth, box, region, args.crop)  # the most detailed square of the region
        crops = [t[:, y : y + c, x : x + c] for t in (bic, sr, truth)]
        scores[name] = {
            "box_xywh": [x, y, c, c],
            "psnr_bicubic": round(psnr(crops[0], crops[2]), 2),
            "psnr_dzsr": round(psnr(crops[1], crops[2]), 2),
        }
        labels = (
            f"bicubic {scores[name]['psnr_bicubic']:.2f} dB",
            f"dzsr {scores[name]['psnr_dzsr']:.2f} dB",
            "ground truth",
        )
        big = [F.interpolate(t[None], scale_factor=2, mode="nearest")[0] for t in crops]
        rows.append((f"{name} (x{x} y{y}, {c} px, shown 2x)", list(zip(labels, big, strict=True))))
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(args.out / "example_crops.png", crop_sheet(rows))
    (args.out / "example_crops.json").write_text(
        json.dumps(
            {
                "columns": ["bicubic", "dzsr", "ground truth"],
                "crops": scores,
                "model": args.model or "bundled default",
            },
            indent=2,
        )
        + "\n"
    )
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
