"""Make the README's comparison figure: crops of the example capture, bicubic | dzsr | ground truth.

The example pair in ``examples/`` was made with ``dzsr simulate seeding.jpg out/ --ratio 2 --max-side 3200
--seed 0`` (see ``examples/ATTRIBUTION.md``), so re-running that simulation gives its ground truth. The
script zooms the example exactly as ``dzsr zoom`` does, cuts one crop inside the tele's field of view and
one outside it, and writes ``docs/example_crops.png`` (each crop enlarged 2x, nearest neighbour, so the
pixels are visible) and ``docs/example_crops.json`` (PSNR of each crop against the ground truth).

Usage::

    python benchmarks/readme_figure.py --photo /path/to/seeding_by_Clements_Engelhardt.jpg
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from dzcli.io.images import load_photo, save_image
from dzcli.metrics.image import psnr
from dzcli.pipeline.simulate import SimulateConfig, simulate_folder
from dzcli.pipeline.zoom import ZoomConfig, zoom
from dzcli.viz import grid

ROOT = Path(__file__).resolve().parent.parent


def _bicubic(uw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(uw[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=Path("/work/shared/data/photos/seeding_by_Clements_Engelhardt.jpg"))
    parser.add_argument("--model", default=None, help="checkpoint or bundled name (default: the bundled model)")
    parser.add_argument("--crop", type=int, default=160, help="crop side in output pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()

    uw_path, tele_path = ROOT / "examples" / "seeding_uw.jpg", ROOT / "examples" / "seeding_tele.jpg"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "seeding.jpg"
        photo.symlink_to(args.photo.resolve())
        (rec,) = simulate_folder(SimulateConfig(photos=photo, out=work / "sim", ratio=2.0, max_side=3200, seed=0))
        sim_uw = (work / "sim" / rec["files"]["uw"]).read_bytes()
        if sim_uw != uw_path.read_bytes():
            raise SystemExit("error: the simulation does not reproduce examples/seeding_uw.jpg (wrong --photo?)")
        truth = load_photo(work / "sim" / rec["files"]["truth"]).pixels
        out = work / "zoomed.png"
        zoom(ZoomConfig(inputs=(uw_path, tele_path), out=out, model=args.model, outscale=2.0, ext="png"))
        sr = load_photo(out).pixels
    uw = load_photo(uw_path).pixels
    size = tuple(truth.shape[-2:])
    sr = sr[:, : size[0], : size[1]]
    bic = _bicubic(uw, size)

    cx, cy = (c * 2 for c in rec["center"])  # tele centre in output pixels
    c = args.crop
    spots = {
        "inside the tele's view": (int(cx - c / 2 + 0.1 * size[1] / 4), int(cy - c / 2)),
        "outside the tele's view": (int(0.08 * size[1]), int(0.62 * size[0])),
    }
    rows, scores = [], {}
    for name, (x, y) in spots.items():
        x, y = max(0, min(size[1] - c, x)), max(0, min(size[0] - c, y))
        crops = [t[:, y : y + c, x : x + c] for t in (bic, sr, truth)]
        scores[name] = {
            "box_xywh": [x, y, c, c],
            "psnr_bicubic": round(psnr(crops[0], crops[2]), 2),
            "psnr_dzsr": round(psnr(crops[1], crops[2]), 2),
        }
        rows.append([F.interpolate(t[None], scale_factor=2, mode="nearest")[0] for t in crops])
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(args.out / "example_crops.png", grid(rows, gap=6))
    (args.out / "example_crops.json").write_text(json.dumps(
        {"columns": ["bicubic", "dzsr", "ground truth"], "crops": scores, "model": args.model or "bundled default"},
        indent=2) + "\n")
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
