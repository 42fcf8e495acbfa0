"""Time and peak memory of ``dzsr zoom`` (×2) on 1, 4 and 12 MP wide photos.

Each size runs in a fresh Python process (the same pipeline as the CLI: read, register, align, colour,
tiled SR, resample, write), so its peak resident memory is measured alone (``wait4``); on CUDA the peak
allocated GPU memory is reported too. The capture is built from a real photo: the wide photo is the
photo resized to the target size, the tele is its centre half upsampled ×2 and shifted by a few pixels
(content matters little for timing; registration needs real texture).

Usage::

    python benchmarks/bench_zoom.py                      # 1, 4, 12 MP on the CPU (and CUDA if present)
    python benchmarks/bench_zoom.py --sizes 1 4 --device cpu --json bench.json

The model is the bundled default (or ``--model``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHOTO = Path("/work/shared/data/photos/Dragonfly_by_Bolly.jpg")


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, torch version, GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    info = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": mem,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    from dzcli import __version__

    info["dzsr"] = __version__
    return info


def make_capture(folder: Path, megapixels: float, photo: Path = PHOTO) -> tuple[Path, Path]:
    """Write ``bench_uw.jpg`` (``megapixels``, 4:3) and ``bench_tele.jpg`` (×2 centre) with phone EXIF."""
    import torch.nn.functional as F

    from dzcli.io.exif import CaptureInfo, make_exif
    from dzcli.io.images import load_photo, save_image

    img = load_photo(photo).pixels
    h = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    w = round(h * 4 / 3)
    uw = F.interpolate(img[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0].clamp(
        0, 1
    )
    y0, x0 = h // 4 + 3, w // 4 - 5
    tele = F.interpolate(
        uw[None, :, y0 : y0 + h // 2, x0 : x0 + w // 2], size=(h, w), mode="bicubic", align_corners=False
    )[0].clamp(0, 1)
    uw_path, tele_path = folder / "bench_uw.jpg", folder / "bench_tele.jpg"
    save_image(
        uw_path, uw, exif=make_exif(CaptureInfo(make="dzsr", model="Bench", focal_35mm=26.0)), quality=95
    )
    save_image(
        tele_path, tele, exif=make_exif(CaptureInfo(make="dzsr", model="Bench", focal_35mm=52.0)), quality=95
    )
    return uw_path, tele_path


def child(uw: str, tele: str, out: str, model: str, device: str, tile: int) -> None:
    """Run one zoom in this process and print its result as JSON on the last line."""
    import torch

    from dzcli.pipeline.zoom import ZoomConfig, zoom

    cfg = ZoomConfig(
        inputs=(Path(uw), Path(tele)), out=Path(out), model=model, device=device, tile=tile, overwrite=True
    )
    t = time.perf_counter()
    (res,) = zoom(cfg)
    total = time.perf_counter() - t
    gpu_peak = (
        torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() and device != "cpu" else None
    )
    print(
        json.dumps(
            {
                "status": res.status,
                "in": res.written and res.written.in_size,
                "out": res.written and res.written.out_size,
                "ratio": res.written and res.written.zoom_ratio,
                "tiles": res.written and res.written.tiles,
                "seconds": round(total, 2),
                "stages": {k: round(v, 2) for k, v in (res.written.timings if res.written else {}).items()},
                "gpu_peak_gib": None if gpu_peak is None else round(gpu_peak, 2),
            }
        )
    )


def run_one(uw: Path, tele: Path, out: Path, model: str, device: str, tile: int) -> dict[str, Any]:
    """One zoom in a fresh process: its JSON result, wall time and peak RSS (GiB)."""
    cmd = [sys.executable, __file__, "--child", str(uw), str(tele), str(out), model, device, str(tile)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"zoom failed ({device}):\n{stderr[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_s=round(wall, 2), peak_rss_gib=round(usage.ru_maxrss / 2**20, 2), device=device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[1.0, 4.0, 12.0], help="wide photo megapixels"
    )
    parser.add_argument(
        "--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)"
    )
    parser.add_argument("--model", help="checkpoint or bundled name (default: the bundled default)")
    parser.add_argument("--tile", type=int, default=0, help="tile side (0 = automatic)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        uw, tele, out, model, device, tile = args.child
        child(uw, tele, out, model, device, int(tile))
        return

    import torch

    from dzsr_models.bundled import choose_bundled

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dzsr-bench-") as tmp:
        folder = Path(tmp)
        model = args.model or choose_bundled(2.0).name
        for mp in args.sizes:
            uw, tele = make_capture(folder, mp)
            for device in devices:
                r = run_one(uw, tele, folder / "out.jpg", model, device, args.tile)
                r["megapixels"] = mp
                rows.append(r)
                print(
                    f"{mp:>5.1f} MP {device:>5}: {r['seconds']:7.1f} s (wall {r['wall_s']:.1f} s), "
                    f"peak RSS {r['peak_rss_gib']:.2f} GiB, {r['tiles']} tiles, stages {r['stages']}",
                    flush=True,
                )
    print()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, torch {info['torch']}"
        + (f", {info['cuda']}" if info["cuda"] else "")
    )
    print(f"model: {Path(model).name}")
    print(
        "| wide photo | output | device | time (s) | of which SR (s) | peak RSS (GiB) | peak GPU (GiB) | tiles |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['in'][0]}x{r['in'][1]} ({r['megapixels']:g} MP) | {r['out'][0]}x{r['out'][1]} | {r['device']} | "
            f"{r['seconds']:.1f} | {r['stages'].get('sr', 0):.1f} | {r['peak_rss_gib']:.2f} | "
            f"{'–' if r['gpu_peak_gib'] is None else r['gpu_peak_gib']} | {r['tiles']} |"
        )
    report = {"machine": info, "model": Path(model).name, "results": rows}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
