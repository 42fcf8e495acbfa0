"""FLOPs per wide pixel of each part of ``dzsr zoom``'s network, counted on a real run of the tiled engine.

The capture is the one ``bench_zoom.py`` builds (a real photo as the wide photo, its centre half ×2 as the
tele, so the tele covers a quarter of the wide photo as at ×2), but the Ref is handed over already
registered: only the network is counted. ``torch.utils.flop_counter`` counts the multiply-adds of every
convolution and matrix product (2 FLOPs each) under each module; "correlation" is the matcher's patch
comparison (its convolutions, and the products of the local search, which are elementwise and counted
here from the shapes). AdaSTN's bilinear sampling is not counted (it is not a convolution).

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
    import dzsr_models.dzsr as dzsr_module

    local = getattr(dzsr_module, "match_local", None)  # the local search's products are elementwise
    elementwise = [0]
    if local is not None:

        def counted(query, ref, offset, radius):  # 2 FLOPs per channel product, per candidate cell
            B, C, hq, wq = query.shape
            elementwise[0] += 2 * B * C * (hq + 2) * (wq + 2) * (2 * radius + 1) ** 2
            return local(query, ref, offset, radius)

        dzsr_module.match_local = counted
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        super_resolve(model, uw, ref=ref, box=(x0, y0, bw, bh), tile=args.tile)
    counts = {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}

    def part(*names: str) -> int:
        return sum(counts.get(n, 0) for n in names)

    body_names = [
        k
        for k in counts
        if k in {f"DZSR.{n}" for n in ("head", "fuse", "body_tail", "upsampler", "tail")}
        or (k.count(".") == 2 and k.startswith(("DZSR.blocks.", "DZSR.adastn.")))
    ]
    trunk = part("DZSR.matcher.trunk")
    refb = part("DZSR.ref.extractor", "DZSR.ref.paste_head")
    body = part(*body_names)
    parts = {
        "matcher VGG16 trunk": trunk,
        "correlation": part("DZSR") - trunk - refb - body - part("DZSR.encoder") + elementwise[0],
        "Ref branch (extractor, paste head)": refb,
        "global vector (encoder)": part("GlobalEncoder", "DZSR.encoder"),
        "SR body": body,
    }
    total = sum(parts.values())
    pixels = H * W
    print(
        f"wide photo {W}x{H}, tile {args.tile}, total {total / 1e9:.1f} GFLOP = {total / pixels / 1e3:.0f} kFLOP per wide pixel"
    )
    print("| part | kFLOP per wide pixel | share |")
    print("|---|---:|---:|")
    for name, value in parts.items():
        print(f"| {name} | {value / pixels / 1e3:.0f} | {100 * value / total:.0f} % |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"width": W, "height": H, "tile": args.tile, "total_flops": total, "parts_flops": parts},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
