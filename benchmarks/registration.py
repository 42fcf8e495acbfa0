"""How often, how accurately and how fast dzsr finds the tele inside the wide photo.

Every project photo is turned into simulated captures (``dzsr simulate``) at zoom ratios 2, 3, 4 and 5.9
(a phone's 13 mm → 77 mm) and several seeds, under conditions harder than the simulator's defaults: the
true ratio off the EXIF one by up to 1.5 %, the tele up to 3 % of the width off-centre and 1° rotated,
its own colour pipeline with white-balance gains in 1 ± 0.25 and gammas in [0.75, 1.33], noise σ = 0.02
and JPEG quality 85 on both photos. ×2 and ×3 photos are shrunk to a longer side of 2400, 2000 or 1600 px
(by seed); ×4 and ×5.9 use the photos at full size.

Each capture is read and registered as ``dzsr prepare`` and ``dzsr zoom`` do it (EXIF ratio as the hint,
:func:`dzcli.align.register.register`), then compared with the simulation's true geometry (the affine map closest to the true mapping, the
simulated parallax included: what one homography can recover): a capture is
*registered* when registration accepts it, and *correct* when its ratio is within 0.5 % and its centre within
1 wide pixel of the truth. Each wide photo of the first seed is also paired with the next photo's tele:
these unrelated pairs must all be refused. The table gives, per ratio, the share registered and correct, the largest errors
of the registered ones, the median and largest registration time, and every failure.

``--time-12mp`` also times registration of the 12 MP capture of ``bench_zoom.py`` (textured) and of a 12 MP
capture of a smooth scene through two colour pipelines (where feature matching finds few matches).

Usage::

    python benchmarks/registration.py                          # all ratios, 3 seeds (about an hour on 2 cores)
    python benchmarks/registration.py --ratios 2 --seeds 0 --work /tmp/reg --json reg.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    from dzcli.pipeline.simulate import SimulationRecord

from bench_zoom import machine, make_capture

PHOTOS = Path("/work/shared/data/photos")
RATIOS = (2.0, 3.0, 4.0, 5.9)
SIDES = (2400, 2000, 1600)
"""Longer side of the photos at ×2 and ×3, by seed (seed k uses ``SIDES[k % 3]``)."""
FULL_SIZE_FROM = 4.0
"""From this ratio on, photos are used at full size (the tele's footprint is small)."""
HARD = {
    "max_offset": 0.03,
    "max_rotation": 1.0,
    "zoom_ratio_error": 0.015,
    "gain": 0.25,
    "gamma": (0.75, 1.33),
    "noise": 0.02,
    "jpeg_quality": 85,
}
"""The capture conditions (``SimulateConfig`` fields)."""
MAX_RATIO_ERROR = 0.005
MAX_CENTRE_ERROR = 1.0


def simulate(
    photos: Path, work: Path, ratio: float, seed: int, parallax: float
) -> tuple[Path, list[SimulationRecord]]:
    """Simulated captures of every photo at ``ratio`` and ``seed`` (reused when already in ``work``)."""
    from dzcli.pipeline.simulate import SIMULATION_NAME, SimulateConfig, read_simulation, simulate_folder

    max_side = None if ratio >= FULL_SIZE_FROM else SIDES[seed % len(SIDES)]
    out = work / f"x{ratio:g}_seed{seed}_parallax{parallax:g}"
    if (out / SIMULATION_NAME).is_file():
        return out, read_simulation(out)
    cfg = SimulateConfig(
        photos=photos,
        out=out,
        zoom_ratio=ratio,
        seed=seed * 1000,
        max_side=max_side,
        parallax=parallax,
        camera="none",
        **HARD,
    )
    return out, simulate_folder(cfg)


def register_one(
    root: Path, record: SimulationRecord, tele_record: SimulationRecord | None = None
) -> dict[str, Any]:
    """Register one simulated capture as prepare/zoom do; its errors against the truth and its time.

    With ``tele_record``, the uw of ``record`` is paired with the tele of another capture (an unrelated pair,
    which must be refused).
    """
    from dzcli.align.ratio import exif_ratio
    from dzcli.align.register import register
    from dzcli.errors import AlignmentError
    from dzcli.io.images import load_photo

    uw = load_photo(root / record.files["uw"])
    tele = load_photo(root / (tele_record or record).files["tele"])
    est = exif_ratio(uw.info, tele.info, uw_size=uw.size, tele_size=tele.size)
    row: dict[str, Any] = {"name": record.name, "seed": record.seed, "uw_size": list(uw.size)}
    if tele_record is not None:
        row["tele_of"] = tele_record.name
    t = time.perf_counter()
    try:
        reg = register(
            uw.pixels, tele.pixels, zoom_ratio_hint=est.value, uw_name=uw.path.name, tele_name=tele.path.name
        )
    except AlignmentError as exc:
        row.update(registered=False, error=str(exc), seconds=time.perf_counter() - t)
        return row
    if tele_record is not None:
        row.update(
            registered=True,
            seconds=time.perf_counter() - t,
            correct=False,
            ratio_error=float("nan"),
            centre_error=float("nan"),
            inliers=reg.inliers,
        )
        return row
    row.update(
        registered=True,
        seconds=time.perf_counter() - t,
        ratio_error=abs(reg.zoom_ratio / record.zoom_ratio_fit - 1),
        centre_error=math.dist(reg.center, record.center_fit),
        inliers=reg.inliers,
        method=reg.method,
        correlation=reg.correlation,
    )
    row["correct"] = row["ratio_error"] < MAX_RATIO_ERROR and row["centre_error"] < MAX_CENTRE_ERROR
    return row


def summarise(ratio: float, rows: list[dict[str, Any]], unrelated: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, largest errors and times of one ratio's captures, and how many unrelated pairs were accepted."""
    reg = [r for r in rows if r["registered"]]
    secs = [r["seconds"] for r in rows]
    return {
        "ratio": ratio,
        "captures": len(rows),
        "unrelated": len(unrelated),
        "unrelated_accepted": sum(r["registered"] for r in unrelated),
        "registered": len(reg),
        "correct": sum(r["correct"] for r in reg),
        "max_ratio_error": max((r["ratio_error"] for r in reg), default=None),
        "max_centre_error": max((r["centre_error"] for r in reg), default=None),
        "median_s": statistics.median(secs) if secs else None,
        "max_s": max(secs, default=None),
        "uw_sides": sorted({max(r["uw_size"]) for r in rows}),
    }


def markdown(summaries: list[dict[str, Any]]) -> str:
    """The README's table."""
    lines = [
        (
            "| zoom ratio | photos | captures | registered | correct (< 0.5 %, < 1 px) | largest ratio error | "
            "largest centre error (wide px) | s / capture (median, max) | unrelated pairs accepted |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in summaries:
        n = s["captures"]
        sides = s["uw_sides"]
        size = "full size" if s["ratio"] >= FULL_SIZE_FROM else "longer side 1600–2400 px"
        rerr = "–" if s["max_ratio_error"] is None else f"{100 * s['max_ratio_error']:.2f} %"
        cerr = "–" if s["max_centre_error"] is None else f"{s['max_centre_error']:.2f}"
        lines.append(
            f"| ×{s['ratio']:g} | {size} (wide {sides[0]}–{sides[-1]} px) | {n} | "
            f"{s['registered']} ({100 * s['registered'] / n:.1f} %) | {s['correct']} ({100 * s['correct'] / n:.1f} %) "
            f"| {rerr} | {cerr} | {s['median_s']:.2f}, {s['max_s']:.2f} | {s['unrelated_accepted']} of {s['unrelated']} |"
        )
    return "\n".join(lines)


def hard_12mp(folder: Path, photo: Path) -> tuple[Path, Path]:
    """A 12 MP capture of a smooth scene: the photo enlarged to 4000×3000 is the wide photo, its centre half
    at ×2 (off-centre) through another colour pipeline is the tele; noise and JPEG 85 on both."""
    import torch
    import torch.nn.functional as F

    from dzcli.io.exif import CaptureInfo, make_exif
    from dzcli.io.images import load_photo, save_image
    from dzcli.simulate import isp_change

    img = load_photo(photo).pixels
    uw = F.interpolate(img[None], size=(3000, 4000), mode="bicubic", antialias=True, align_corners=False)[0]
    y0, x0 = 750 + 23, 1000 - 41
    tele = F.interpolate(
        uw[None, :, y0 : y0 + 1500, x0 : x0 + 2000], size=(3000, 4000), mode="bicubic", align_corners=False
    )[0].clamp(0, 1)
    tele = isp_change(tele, seed=7, gain=HARD["gain"], gamma=HARD["gamma"])
    gen = torch.Generator().manual_seed(0)
    uw = (uw + HARD["noise"] * torch.randn(uw.shape, generator=gen)).clamp(0, 1)
    tele = (tele + HARD["noise"] * torch.randn(tele.shape, generator=gen)).clamp(0, 1)
    uw_path, tele_path = folder / "hard_uw.jpg", folder / "hard_tele.jpg"
    save_image(
        uw_path, uw, exif=make_exif(CaptureInfo(make="dzsr", model="Bench", focal_35mm=26.0)), quality=85
    )
    save_image(
        tele_path, tele, exif=make_exif(CaptureInfo(make="dzsr", model="Bench", focal_35mm=52.0)), quality=85
    )
    return uw_path, tele_path


def time_12mp(work: Path, photos: Path, repeats: int) -> dict[str, Any]:
    """Registration time of a textured and of a low-texture 12 MP capture (best of ``repeats``)."""
    from dzcli.align.ratio import exif_ratio
    from dzcli.align.register import register
    from dzcli.errors import AlignmentError
    from dzcli.io.images import load_photo

    out: dict[str, Any] = {}
    cases = {
        "textured (bench_zoom.py's Dragonfly)": (photos / "Dragonfly_by_Bolly.jpg", make_capture),
        "low texture (Bridge, other colours, noise)": (photos / "Bridge_by_Sander_Klootwijk.jpg", hard_12mp),
    }
    for label, (photo, make) in cases.items():
        folder = work / f"12mp_{photo.stem}"
        folder.mkdir(parents=True, exist_ok=True)
        uw_path, tele_path = make(folder, 12.0, photo) if make is make_capture else make(folder, photo)
        uw, tele = load_photo(uw_path), load_photo(tele_path)
        est = exif_ratio(uw.info, tele.info, uw_size=uw.size, tele_size=tele.size)
        times, status = [], "registered"
        for _ in range(repeats):
            t = time.perf_counter()
            try:
                reg = register(uw.pixels, tele.pixels, zoom_ratio_hint=est.value)
                status = f"registered ({reg.method}, ratio {reg.zoom_ratio:.4f})"
            except AlignmentError as exc:
                status = f"refused: {exc}"
            times.append(time.perf_counter() - t)
        out[label] = {"seconds": round(min(times), 2), "status": status, "size": list(uw.size)}
        print(f"12 MP {label}: {min(times):.2f} s ({status})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="folder of photos")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--parallax",
        type=float,
        default=0.0,
        help="simulated parallax (px); with parallax the true homography is itself uncertain",
    )
    parser.add_argument("--work", type=Path, help="keep the simulated captures here (reused by later runs)")
    parser.add_argument("--time-12mp", action="store_true", help="also time registration of 12 MP captures")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="dzsr-reg-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        summaries, rows_all = [], []
        for ratio in args.ratios:
            rows, unrelated = [], []
            for seed in args.seeds:
                root, records = simulate(args.photos, work, ratio, seed, args.parallax)
                if seed == args.seeds[0]:  # each uw with the next photo's tele: must all be refused
                    for k, record in enumerate(records):
                        row = register_one(root, record, records[(k + 1) % len(records)])
                        row["ratio"] = ratio
                        unrelated.append(row)
                        if row["registered"]:
                            print(
                                f"x{ratio:g} UNRELATED {record.name} + {row['tele_of']}: ACCEPTED",
                                flush=True,
                            )
                for record in records:
                    row = register_one(root, record)
                    row["ratio"] = ratio
                    rows.append(row)
                    verdict = ("ok" if row["correct"] else "WRONG") if row["registered"] else "FAILED"
                    detail = (
                        f"ratio err {100 * row['ratio_error']:.3f} %, centre err {row['centre_error']:.2f} px"
                        if row["registered"]
                        else row["error"]
                    )
                    print(
                        f"x{ratio:g} seed {seed} {record.name}: {verdict} ({detail}), {row['seconds']:.2f} s",
                        flush=True,
                    )
            summaries.append(summarise(ratio, rows, unrelated))
            rows_all += rows + unrelated
        timing = time_12mp(work, args.photos, args.repeats) if args.time_12mp else None
    info = machine()
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, dzsr {info['dzsr']}")
    print(markdown(summaries))
    failures = [r for r in rows_all if ("tele_of" in r) == r["registered"] or not r.get("correct", True)]
    if failures:
        print()
        for r in failures:
            if "tele_of" in r:
                what = f"unrelated pair (tele of {r['tele_of']}) accepted"
            elif not r["registered"]:
                what = r["error"]
            else:
                what = (
                    f"registered off the truth: ratio {100 * r['ratio_error']:.2f} %, "
                    f"centre {r['centre_error']:.2f} px"
                )
            print(f"- x{r['ratio']:g} {r['name']} (seed {r['seed']}): {what}")
    report = {
        "machine": info,
        "conditions": {**HARD, "parallax": args.parallax},
        "summaries": summaries,
        "captures": rows_all,
        "time_12mp": timing,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
