"""FLOPs per wide pixel of each part of ``dzsr zoom``'s network, counted on a real run of the tiled engine.

The capture is the one ``bench_zoom.py`` builds (a real photo as the wide photo, its centre half ×2 as the
tele, so the tele covers a quarter of the wide photo as at ×2), but the Ref is handed over already
registered: only the network is counted. ``torch.utils.flop_counter`` counts the multiply-adds of every
convolution and matrix product (2 FLOPs each) under each module; "correlation" is the matcher's
patch comparison (what its VGG trunk does not account for).

Usage::

    python benchmarks/flops.py                     # 1 MP wide photo, automatic tiles
    python benchmarks/flops.py --megapixels 0.5 --json flops.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PHOTO = Path("/work/shared/data/photos/Dragonfly_by_Bolly.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=1.0, help="wide photo size")
    parser.add_argument("--tile", type=int, default=256, help="tile side (LR px)")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from dzcli.infer.engine import super_resolve
    from dzcli.io.images import load_photo
    from dzsr_models import load_checkpoint

    weights = Path(__import__("dzsr_models").__file__).parent / "weights" / "dzsr-small-x2.safetensors"
    model, _ = load_checkpoint(weights)
    photo = load_photo(PHOTO).pixels
    H0, W0 = photo.shape[-2:]
    k = math.sqrt(args.megapixels * 1e6 / (H0 * W0))
    H, W = round(H0 * k), round(W0 * k)
    uw = F.interpolate(photo[None], size=(H, W), mode="area")[0]
    bw, bh = W // 2, H // 2
    x0, y0 = (W - bw) // 2, (H - bh) // 2
    big = F.interpolate(photo[None], size=(2 * H, 2 * W), mode="area")[0]
    ref = big[:, 2 * y0 : 2 * (y0 + bh), 2 * x0 : 2 * (x0 + bw)]
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        super_resolve(model, uw, ref=ref, box=(x0, y0, bw, bh), tile=args.tile)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()

    def under(prefix: str) -> int:
        return int(sum(counts.get(prefix, {}).values()))

    matcher = under("DZSR.matcher")
    trunk = under("DZSR.matcher.trunk")
    parts = {
        "matcher VGG16 trunk": trunk,
        "correlation": matcher - trunk,
        "Ref branch (extractor, paste head)": under("DZSR.ref"),
        "global vector (encoder)": under("DZSR.encoder"),
    }
    parts["SR body (the rest)"] = total - sum(parts.values())
    pixels = H * W
    print(f"wide photo {W}x{H}, tile {args.tile}, total {total / 1e9:.1f} GFLOP = {total / pixels / 1e3:.0f} kFLOP per wide pixel")
    print("| part | kFLOP per wide pixel | share |")
    print("|---|---:|---:|")
    for name, value in parts.items():
        print(f"| {name} | {value / pixels / 1e3:.0f} | {100 * value / total:.0f} % |")
    if args.json:
        args.json.write_text(json.dumps({"width": W, "height": H, "tile": args.tile, "total_flops": total,
                                         "parts_flops": parts}, indent=2))


if __name__ == "__main__":
    main()
