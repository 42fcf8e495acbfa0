"""Make the README's comparison figure: crops of the example capture, bicubic | dzsr | ground truth.

The example pair in ``examples/`` was made with ``dzsr simulate seeding.jpg out/ --ratio 2 --max-side 3200
--seed 0`` (see ``examples/ATTRIBUTION.md``), so re-running that simulation gives its ground truth. The
script zooms the example exactly as ``dzsr zoom`` does, cuts the most detailed crop (in the ground truth)
inside the tele's field of view and the most detailed one outside it, and writes ``docs/example_crops.png`` (each crop enlarged 2x, nearest neighbour, so the
pixels are visible) and ``docs/example_crops.json`` (PSNR of each crop against the ground truth).

Usage::

    python benchmarks/readme_figure.py --photo /path/to/seeding_by_Clements_Engelhardt.jpg
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from dzcli.io.images import load_photo, save_image
from dzcli.metrics.image import psnr
from dzcli.pipeline.simulate import SimulateConfig, simulate_folder
from dzcli.pipeline.zoom import ZoomConfig, zoom
from dzcli.report import crop_sheet

ROOT = Path(__file__).resolve().parent.parent


def _bicubic(uw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(uw[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _within(box: tuple[int, int, int, int], region: tuple[float, ...]) -> bool:
    x0, y0, x1, y1 = box
    return x0 >= region[0] and y0 >= region[1] and x1 <= region[2] and y1 <= region[3]


def _disjoint(box: tuple[int, int, int, int], region: tuple[float, ...]) -> bool:
    x0, y0, x1, y1 = box
    return x1 <= region[0] or y1 <= region[1] or x0 >= region[2] or y0 >= region[3]


def _most_detailed(truth: torch.Tensor, c: int, keep: Callable[[tuple[int, int, int, int]], bool]) -> tuple[int, int]:
    """Top-left corner of the ``c``-pixel window (on a c/4 grid) with the most fine detail in the ground truth
    (mean absolute Laplacian) among those ``keep`` accepts: where a difference in sharpness can be seen."""
    gray = truth.mean(dim=0, keepdim=True)[None]
    lap = F.conv2d(gray, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]]), padding=1).abs()[0, 0]
    h, w = lap.shape
    step = max(1, c // 4)
    boxes = [(x, y, x + c, y + c) for y in range(0, h - c + 1, step) for x in range(0, w - c + 1, step)]
    x0, y0, _, _ = max((b for b in boxes if keep(b)), key=lambda b: float(lap[b[1] : b[3], b[0] : b[2]].mean()))
    return x0, y0


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

    c = args.crop
    cx, cy = (v * 2 for v in rec["center"])  # tele centre in output pixels
    tw, th = rec["tele_size"]  # the tele's footprint in output pixels (the output has the tele's density)
    inside = (cx - 0.4 * tw, cy - 0.4 * th, cx + 0.4 * tw, cy + 0.4 * th)
    outside = (cx - 0.5 * tw, cy - 0.5 * th, cx + 0.5 * tw, cy + 0.5 * th)
    spots = {
        "inside the tele's view": _most_detailed(truth, c, lambda b: _within(b, inside)),
        "outside the tele's view": _most_detailed(truth, c, lambda b: _disjoint(b, outside)),
    }
    rows, scores = [], {}
    for name, (x, y) in spots.items():
        crops = [t[:, y : y + c, x : x + c] for t in (bic, sr, truth)]
        scores[name] = {
            "box_xywh": [x, y, c, c],
            "psnr_bicubic": round(psnr(crops[0], crops[2]), 2),
            "psnr_dzsr": round(psnr(crops[1], crops[2]), 2),
        }
        labels = (f"bicubic {scores[name]['psnr_bicubic']:.2f} dB", f"dzsr {scores[name]['psnr_dzsr']:.2f} dB",
                  "ground truth")
        big = [F.interpolate(t[None], scale_factor=2, mode="nearest")[0] for t in crops]
        rows.append((f"{name} (x{x} y{y}, {c} px, shown 2x)", list(zip(labels, big))))
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(args.out / "example_crops.png", crop_sheet(rows))
    (args.out / "example_crops.json").write_text(json.dumps(
        {"columns": ["bicubic", "dzsr", "ground truth"], "crops": scores, "model": args.model or "bundled default"},
        indent=2) + "\n")
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
