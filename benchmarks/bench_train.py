"""Training throughput (samples/s) and peak memory of ``dzsr train`` steps, ``base`` and ``small`` presets.

Each (preset, device) runs in a fresh Python process: the real training step (aux-LR generator, noise
injection, DZSR with ImageNet VGG16 matching, masked L1 + 0.08 LOSW, Adam, EMA) on patches cut from
in-memory pairs made from a real photo. ``--warmup`` steps are run, then ``--steps`` are timed.
Peak memory is the process's peak resident set (``wait4``) on the CPU, and the peak allocated GPU
memory on CUDA (AMP on, as ``dzsr train`` does by default).

Usage::

    python benchmarks/bench_train.py                          # base and small, CPU (and CUDA if present)
    python benchmarks/bench_train.py --presets small --device cpu --batch-size 8 --json train.json
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

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "life.jpg"


def machine() -> dict[str, Any]:
    """CPU model, usable cores, memory, torch, GPU."""
    import torch

    from dzcli import __version__

    cpu = platform.processor() or platform.machine()
    mem = None
    for path, key in (("/proc/cpuinfo", "model name"), ("/proc/meminfo", "MemTotal")):
        if Path(path).is_file():
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    value = line.split(":", 1)[1].strip()
                    if key == "MemTotal":
                        mem = round(int(value.split()[0]) / 2**20, 1)
                    else:
                        cpu = value
                    break
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "dzsr": __version__,
    }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run in the measuring process: build a trainer on synthetic pairs, time its steps."""
    import torch
    import torch.nn.functional as F

    from dzcli.data.dataset import PreparedPair
    from dzcli.io.images import load_photo
    from dzcli.train.config import TrainConfig
    from dzcli.train.loop import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    s = args.scale
    photo = load_photo(PHOTO).pixels  # the HR; the LR is its area average
    side = min(photo.shape[-2:]) // s * s
    hr = photo[:, :side, :side].contiguous()
    lr = F.avg_pool2d(hr[None], s)[0]
    pairs = [PreparedPair.from_tensors(lr, hr, id="bench")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            data=Path(tmp),
            out=Path(tmp) / "run",
            preset=args.preset,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            loss=args.loss,
            device=args.device,
            steps=10**6,
        )
        trainer = Trainer(cfg, pairs, pairs, scale=s)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        for _ in range(args.warmup):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync()
        seconds = (time.perf_counter() - t0) / args.steps
    return {
        "preset": args.preset,
        "params": sum(p.numel() for p in trainer.net.parameters()),
        "device": str(trainer.device),
        "amp": trainer.amp,
        "threads": torch.get_num_threads(),
        "s_per_step": round(seconds, 3),
        "samples_per_s": round(args.batch_size / seconds, 2),
        "gpu_peak_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if trainer.device.type == "cuda" else None
        ),
    }


def measure(args: argparse.Namespace, preset: str, device: str) -> dict[str, Any]:
    """One (preset, device) in a fresh process; adds its peak RSS."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--presets",
        preset,
        "--device",
        device,
        "--scale",
        str(args.scale),
        "--batch-size",
        str(args.batch_size),
        "--patch-size",
        str(args.patch_size),
        "--loss",
        args.loss,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{preset} on {device} failed (exit {code})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gib"] = round(usage.ru_maxrss / 2**20, 2)  # KiB on Linux
    return result


def main() -> None:
    """Parse, run every (preset, device), print a Markdown table and the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["base", "small"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda when present)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=48)
    parser.add_argument("--loss", default="l1+losw")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.preset = args.presets[0]
        print(json.dumps(child(args)))
        return
    import torch

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [measure(args, preset, device) for device in devices for preset in args.presets]
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, torch {info['torch']}, "
        f"GPU {info['gpu'] or 'none'}; load average {info['load_average']}"
    )
    print(
        f"x{args.scale}, batch {args.batch_size}, LR patch {args.patch_size}, loss {args.loss}, "
        f"{args.steps} timed steps after {args.warmup}\n"
    )
    print("| preset | params | device | threads | s/step | samples/s | peak RSS (GiB) | peak GPU (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        amp = " (AMP)" if r["amp"] else ""
        print(
            f"| {r['preset']} | {r['params']:,} | {r['device']}{amp} | {r['threads']} | "
            f"{r['s_per_step']} | {r['samples_per_s']} | {r.get('peak_rss_gib', '–')} | "
            f"{r['gpu_peak_gib'] if r['gpu_peak_gib'] is not None else '–'} |"
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "json")}
    record = {"machine": info, "settings": settings, "results": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
