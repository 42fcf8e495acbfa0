"""``dzsr simulate``: phone-like wide/tele captures, with ground truth, from single high-resolution photos.

Output layout::

    OUT/captures/<name>_uw.jpg, <name>_tele.jpg   the pair, with plausible phone EXIF (feed to prepare/zoom)
    OUT/captures/<name>_wide.jpg                  with ``triple``: the middle camera, at ``--wide-ratio``
    OUT/truth/<name>.png                          the scene at r x the uw's density, aligned with the uw
    OUT/truth/<name>.json                         the true geometry (zoom ratio, tele centre, rotation, homography)
    OUT/simulation.json                           options and the list of pairs

Each pair's record (:class:`SimulationRecord`, the JSON of ``truth/<name>.json`` and of ``simulation.json``'s
``pairs``) is read back with :func:`read_simulation`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from dzcli import __version__
from dzcli.camera import CameraRanges
from dzcli.errors import ConfigError, DatasetError, InputError
from dzcli.io.atomic import write_json_atomic
from dzcli.io.exif import CaptureInfo, make_exif
from dzcli.io.images import is_image_file, load_photo, save_image
from dzcli.simulate import GAIN, GAMMA, SimulatedPair, simulate_pair, simulate_triple
from dzcli.viz import fit_within

log = logging.getLogger(__name__)

SIMULATION_NAME = "simulation.json"
"""The index of a simulated set (options and every pair's record)."""
UW_FOCAL_35MM = 26.0
UW_FOCAL_MM = 4.25
TELE_MM_PER_35MM = 6.0 / 52.0  # a phone tele's small sensor: 6 mm behind a "52 mm" equivalent


@dataclass(frozen=True)
class SimulateConfig:
    """Options of ``dzsr simulate``.

    Attributes:
        photos: a photo or a folder of photos (each one is a scene).
        out: output folder.
        zoom_ratio: nominal zoom ratio (what the EXIF focal lengths say; ``--ratio``).
        seed: photo ``i`` uses seed ``seed + i``.
        max_side: shrink each photo to this longer side first.
        max_offset: the tele's centre is off the uw's by up to this fraction of the uw's width, per axis.
        max_rotation: the tele is rotated by up to this many degrees.
        parallax: largest smooth displacement of the tele's view (scene pixels) no homography explains.
        noise: Gaussian noise standard deviation of both photos (values in [0, 1]).
        jpeg_quality: JPEG quality of both photos.
        zoom_ratio_error: the true zoom ratio differs from the nominal (EXIF) one by up to this fraction
            (real lenses are not their nominal focal length; ``--ratio-error``).
        gain: white-balance gain spread of the tele's colour pipeline (``1 ± gain``).
        gamma: per-channel gamma range of the tele's colour pipeline.
        triple: add a wide camera at ``wide_zoom_ratio`` (default ``zoom_ratio / 2``) times the uw's density
            (the cameras have the uw's size: their densities are their zoom ratios).
        wide_zoom_ratio: see ``triple`` (``--wide-ratio``).
        camera: ``phone`` (the default): each camera through its own randomised phone pipeline
            (:mod:`dzcli.camera`: lens blur, resampling, Poisson–Gaussian noise, denoising, sharpening, tone,
            JPEG 80–95 at 4:2:0), the files then written at JPEG quality 100; ``dslr`` and ``night``: two
            other cameras' ranges (see :data:`CAMERAS`); ``none``: the plain pipeline (blur, area
            downscale, Gaussian ``noise``, JPEG at ``jpeg_quality``, which apply only to it).
        camera_ranges: ``(name, low, high)`` overrides of the camera's ranges (a field of
            :class:`dzcli.camera.CameraRanges`, e.g. ``("jpeg_quality", 60, 98)``), to widen or narrow them.
    """

    photos: Path
    out: Path
    zoom_ratio: float = 2.0
    seed: int = 0
    max_side: int | None = None
    max_offset: float = 0.03
    max_rotation: float = 1.0
    parallax: float = 1.5
    noise: float = 0.01
    jpeg_quality: int = 92
    zoom_ratio_error: float = 0.0
    gain: float = GAIN
    gamma: tuple[float, float] = GAMMA
    triple: bool = False
    wide_zoom_ratio: float | None = None
    camera: str = "phone"
    camera_ranges: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.camera not in CAMERAS:
            raise ConfigError(f"--camera must be one of {', '.join(CAMERAS)}, not {self.camera!r}")
        self.ranges()  # unknown or inverted overrides fail here, before any work
        plain = {f.name: f.default for f in fields(self) if f.name in ("noise", "jpeg_quality")}
        if self.camera != "none" and (self.noise, self.jpeg_quality) != (
            plain["noise"],
            plain["jpeg_quality"],
        ):
            raise ConfigError(
                f"--noise and --jpeg-quality apply only to --camera none; --camera {self.camera} has its own "
                "(change them with --camera-range photons=LOW,HIGH or jpeg_quality=LOW,HIGH)"
            )
        if self.zoom_ratio <= 1.0:
            raise ConfigError(f"--ratio must be greater than 1, not {self.zoom_ratio}")
        if not 0.0 <= self.zoom_ratio_error < 0.2:
            raise ConfigError(f"--ratio-error must be in [0, 0.2), not {self.zoom_ratio_error}")
        if self.zoom_ratio * (1 - self.zoom_ratio_error) <= 1.0:
            raise ConfigError(
                f"--ratio-error {self.zoom_ratio_error} lets the zoom ratio {self.zoom_ratio} fall to 1"
            )
        if not 0.0 <= self.gain < 1.0:
            raise ConfigError(f"--gain must be in [0, 1), not {self.gain}")
        if not 0.0 < self.gamma[0] <= self.gamma[1]:
            raise ConfigError(f"--gamma must be a range LOW HIGH with 0 < LOW <= HIGH, not {self.gamma}")
        if self.max_offset < 0 or self.max_rotation < 0 or self.parallax < 0 or self.noise < 0:
            raise ConfigError("--max-offset, --max-rotation, --parallax and --noise must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--jpeg-quality must be in 1..100, not {self.jpeg_quality}")
        if self.wide_zoom_ratio is not None and not self.triple:
            raise ConfigError("--wide-ratio needs --triple")
        if self.triple:
            wide = self.zoom_ratio / 2 if self.wide_zoom_ratio is None else self.wide_zoom_ratio
            if not 1.0 < wide < self.zoom_ratio:
                raise ConfigError(
                    f"--triple needs a wide between the uw and the tele: wide ratio {wide:g} is not in "
                    f"(1, {self.zoom_ratio:g}); pass --wide-ratio"
                )

    def ranges(self) -> CameraRanges | None:
        """The camera's ranges with ``camera_ranges`` applied (None for ``camera="none"``)."""
        base = CAMERAS[self.camera]
        if not self.camera_ranges:
            return base
        if base is None:
            raise ConfigError("--camera-range needs a camera (--camera phone, dslr or night)")
        kinds = {
            f.name: int if "int" in str(f.type) else float
            for f in fields(CameraRanges)
            if f.name not in ("subsampling", "downscale")
        }
        changes: dict[str, tuple[float, float]] = {}
        for name, low, high in self.camera_ranges:
            if name not in kinds:
                raise ConfigError(
                    f"--camera-range: unknown range {name!r}; one of {', '.join(sorted(kinds))}"
                )
            changes[name] = (kinds[name](low), kinds[name](high))
        return replace(base, **changes)  # type: ignore[arg-type]


_OPTION_NAMES = {"zoom_ratio": "ratio", "zoom_ratio_error": "ratio_error", "wide_zoom_ratio": "wide_ratio"}
"""``simulation.json``'s option names (the command's) of the :class:`SimulateConfig` fields named otherwise."""


def parse_camera_range(text: str) -> tuple[str, float, float]:
    """``"NAME=LOW,HIGH"`` (``--camera-range``) → ``(name, low, high)``."""
    name, _, values = text.partition("=")
    try:
        low, high = (float(v) for v in values.split(","))
    except ValueError:
        raise ConfigError(
            f"--camera-range must be NAME=LOW,HIGH (e.g. jpeg_quality=60,98), not {text!r}"
        ) from None
    return name.strip(), low, high


CAMERAS: dict[str, CameraRanges | None] = {
    "none": None,
    "phone": CameraRanges(),
    # a large-sensor camera: more lens blur (and an anti-aliasing filter), little noise, light processing,
    # high-quality JPEG at 4:2:2 or 4:4:4, resampled by a kernel
    "dslr": CameraRanges(
        blur_sigma=(0.6, 1.6),
        photons=(3000.0, 30000.0),
        read_noise=(0.0005, 0.003),
        denoise=(0.0, 0.03),
        sharpen_radius=(0.5, 1.2),
        sharpen_amount=(0.0, 0.6),
        contrast=(0.0, 0.15),
        saturation=(0.95, 1.1),
        jpeg_quality=(90, 98),
        subsampling=("422", "444"),
        downscale=("bilinear", "bicubic"),
    ),
    # a phone at night: few photons, strong denoising and sharpening, low JPEG quality
    "night": CameraRanges(
        blur_sigma=(0.4, 1.4),
        photons=(60.0, 400.0),
        read_noise=(0.005, 0.02),
        denoise=(0.06, 0.14),
        sharpen_radius=(1.0, 2.5),
        sharpen_amount=(0.6, 1.6),
        contrast=(0.1, 0.4),
        saturation=(0.8, 1.3),
        jpeg_quality=(60, 85),
        subsampling=("420",),
        downscale=("area", "lanczos"),
    ),
}
"""``--camera`` choices: the capture pipeline's ranges (None: the plain blur, noise and JPEG)."""


def _exif(zoom_ratio: float, when: datetime, size: tuple[int, int]) -> bytes:
    """Phone EXIF of a camera at ``zoom_ratio`` times the uw's focal length (1 for the uw itself)."""
    f35 = UW_FOCAL_35MM if zoom_ratio == 1 else round(UW_FOCAL_35MM * zoom_ratio)
    focal = UW_FOCAL_MM if zoom_ratio == 1 else round(f35 * TELE_MM_PER_35MM, 2)
    info = CaptureInfo(
        make="dzsr",
        model="SimPhone",
        lens=f"SimPhone back dual camera {focal}mm",
        focal_mm=focal,
        focal_35mm=f35,
        time=when,
    )
    return make_exif(info, width=size[0], height=size[1])


def _fitted(
    fit: np.ndarray, uw_size: tuple[int, int], tele_size: tuple[int, int]
) -> tuple[float, tuple[float, float]]:
    """The field-of-view ratio and the tele centre of the affine fit ``fit`` of the true tele → uw mapping,
    parallax included (what registration can recover)."""
    density = 1.0 / math.sqrt(abs(float(np.linalg.det(fit[:2, :2]))))
    centre = fit @ np.array([(tele_size[0] - 1) / 2.0, (tele_size[1] - 1) / 2.0, 1.0])
    return density * uw_size[0] / tele_size[0], (float(centre[0]), float(centre[1]))


Size = tuple[int, int]


def _size(value: Any) -> Size:
    w, h = value
    return int(w), int(h)


def _point(value: Any) -> tuple[float, float]:
    x, y = value
    return float(x), float(y)


@dataclass(frozen=True, eq=False)
class WideRecord:
    """The middle camera of a simulated triple capture, its true geometry.

    Attributes:
        zoom_ratio: the uw-to-wide field-of-view ratio (JSON ``wide_ratio``).
        center: its centre in uw pixels ``(x, y)`` (JSON ``wide_center``).
        rotation_deg: rotation of its axes in the uw frame (JSON ``wide_rotation_deg``).
        to_uw: ``(3, 3)`` float64, the true homography from wide to uw pixels (JSON ``wide_to_uw``).
        size: its ``(width, height)`` (JSON ``wide_size``).
    """

    zoom_ratio: float
    center: tuple[float, float]
    rotation_deg: float
    to_uw: np.ndarray
    size: Size


@dataclass(frozen=True, eq=False)
class SimulationRecord:
    """One simulated capture: its files and its true geometry (``truth/<name>.json``).

    Attributes:
        name: the capture's name (the photo's stem).
        source: the photo it was simulated from.
        seed: its seed.
        files: ``uw``, ``tele``, ``truth`` (and ``wide``), relative to the output folder.
        zoom_ratio: the true uw-to-tele field-of-view ratio (JSON ``ratio``).
        zoom_ratio_nominal: the ratio the EXIF focal lengths say (JSON ``ratio_nominal``).
        center: the tele's centre in uw pixels ``(x, y)``.
        rotation_deg: rotation of the tele's axes in the uw frame.
        tele_to_uw: ``(3, 3)`` float64, the true homography from tele to uw pixels (without the parallax).
        tele_to_uw_fit: ``(3, 3)`` float64, the affine map closest to the true mapping with the parallax
            (what a registration can recover).
        zoom_ratio_fit: the field-of-view ratio of ``tele_to_uw_fit`` (JSON ``ratio_fit``).
        center_fit: the tele centre ``tele_to_uw_fit`` gives.
        uw_size: the uw's ``(width, height)``.
        tele_size: the tele's ``(width, height)``.
        wide: the middle camera of a triple capture, else None.
    """

    name: str
    source: str
    seed: int
    files: dict[str, str]
    zoom_ratio: float
    zoom_ratio_nominal: float
    center: tuple[float, float]
    rotation_deg: float
    tele_to_uw: np.ndarray
    tele_to_uw_fit: np.ndarray
    zoom_ratio_fit: float
    center_fit: tuple[float, float]
    uw_size: Size
    tele_size: Size
    wide: WideRecord | None = None

    @property
    def density(self) -> float:
        """Truth pixels per uw pixel: the tele's pixels per uw pixel (the field-of-view ratio scaled by the
        tele's width relative to the uw's)."""
        return self.zoom_ratio * self.tele_size[0] / self.uw_size[0]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``truth/<name>.json``."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "seed": self.seed,
            "files": self.files,
            "ratio": self.zoom_ratio,
            "ratio_nominal": self.zoom_ratio_nominal,
            "center": list(self.center),
            "rotation_deg": self.rotation_deg,
            "tele_to_uw": self.tele_to_uw.tolist(),
            "tele_to_uw_fit": self.tele_to_uw_fit.tolist(),
            "ratio_fit": self.zoom_ratio_fit,
            "center_fit": list(self.center_fit),
            "uw_size": list(self.uw_size),
            "tele_size": list(self.tele_size),
        }
        if self.wide is not None:
            out.update(
                wide_ratio=self.wide.zoom_ratio,
                wide_center=list(self.wide.center),
                wide_rotation_deg=self.wide.rotation_deg,
                wide_to_uw=self.wide.to_uw.tolist(),
                wide_size=list(self.wide.size),
            )
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SimulationRecord:
        """The record of a ``truth/<name>.json`` object (see :meth:`to_json`).

        Raises:
            KeyError, TypeError, ValueError: a field is missing or of the wrong type.
        """
        wide = None
        if "wide_ratio" in d:
            wide = WideRecord(
                zoom_ratio=float(d["wide_ratio"]),
                center=_point(d["wide_center"]),
                rotation_deg=float(d["wide_rotation_deg"]),
                to_uw=np.asarray(d["wide_to_uw"], dtype=np.float64),
                size=_size(d["wide_size"]),
            )
        return cls(
            name=str(d["name"]),
            source=str(d["source"]),
            seed=int(d["seed"]),
            files=dict(d["files"]),
            zoom_ratio=float(d["ratio"]),
            zoom_ratio_nominal=float(d["ratio_nominal"]),
            center=_point(d["center"]),
            rotation_deg=float(d["rotation_deg"]),
            tele_to_uw=np.asarray(d["tele_to_uw"], dtype=np.float64),
            tele_to_uw_fit=np.asarray(d["tele_to_uw_fit"], dtype=np.float64),
            zoom_ratio_fit=float(d["ratio_fit"]),
            center_fit=_point(d["center_fit"]),
            uw_size=_size(d["uw_size"]),
            tele_size=_size(d["tele_size"]),
            wide=wide,
        )


def read_simulation(root: Path) -> list[SimulationRecord]:
    """The records of a simulated set's ``simulation.json`` (what :func:`simulate_folder` wrote there).

    Raises:
        DatasetError: no readable index, or an empty one.
    """
    index = root / SIMULATION_NAME
    try:
        records = [
            SimulationRecord.from_json(r) for r in json.loads(index.read_text(encoding="utf-8"))["pairs"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{index}: not a readable dzsr simulate index ({exc})") from exc
    if not records:
        raise DatasetError(f"{root}: the simulated set is empty")
    return records


def simulate_folder(
    cfg: SimulateConfig, *, progress: Callable[[int, int, SimulationRecord], None] | None = None
) -> list[SimulationRecord]:
    """Simulate one capture per photo in ``cfg.photos`` (a folder or a single file).

    Deterministic for a seed: photo i uses seed ``cfg.seed + i`` for its geometry, ISP and noise.

    Returns:
        One record per photo: name, files, the true geometry.
    """
    if cfg.photos.is_file():
        photos = [cfg.photos]
    elif cfg.photos.is_dir():
        photos = sorted(p for p in cfg.photos.iterdir() if p.is_file() and is_image_file(p))
    else:
        raise InputError(f"{cfg.photos}: no such file or folder")
    if not photos:
        raise InputError(f"{cfg.photos}: no photos found")
    caps, truth = cfg.out / "captures", cfg.out / "truth"
    caps.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    records = []
    base_time = datetime(2026, 1, 1, 12, 0, 0)
    quality = cfg.jpeg_quality if cfg.camera == "none" else 100  # a camera's own JPEG is in the pixels
    camera = cfg.ranges()
    for i, path in enumerate(photos):
        rng = random.Random(cfg.seed + i)
        scene = load_photo(path).pixels
        if cfg.max_side:
            scene = fit_within(scene, cfg.max_side)
        w_uw = scene.shape[-1] / cfg.zoom_ratio
        shift = cfg.max_offset * w_uw
        offset = (rng.uniform(-1, 1) * shift, rng.uniform(-1, 1) * shift)
        rotation = rng.uniform(-1, 1) * cfg.max_rotation
        # Drawn only when asked for, so that the captures of the default options stay as they were.
        true_zoom_ratio = (
            cfg.zoom_ratio * (1 + rng.uniform(-1, 1) * cfg.zoom_ratio_error)
            if cfg.zoom_ratio_error
            else cfg.zoom_ratio
        )
        common: dict[str, Any] = {
            "density": true_zoom_ratio,  # the tele has the uw's size: its density is the zoom ratio
            "offset": offset,
            "rotation_deg": rotation,
            "parallax": cfg.parallax,
            "gain": cfg.gain,
            "gamma": cfg.gamma,
            "noise": cfg.noise,
            "seed": cfg.seed + i,
            "camera": camera,
        }
        name = path.stem
        when = base_time + timedelta(minutes=i)
        files = {"uw": f"captures/{name}_uw.jpg", "tele": f"captures/{name}_tele.jpg"}
        wide = None
        if cfg.triple:
            wide_offset = (rng.uniform(-1, 1) * shift, rng.uniform(-1, 1) * shift)
            triple = simulate_triple(
                scene,
                wide_density=cfg.wide_zoom_ratio or cfg.zoom_ratio / 2,
                wide_offset=wide_offset,
                wide_rotation_deg=rng.uniform(-1, 1) * cfg.max_rotation,
                **common,
            )
            sim: SimulatedPair = triple.pair
            files["wide"] = f"captures/{name}_wide.jpg"
            wide_size = (triple.wide.shape[-1], triple.wide.shape[-2])
            save_image(
                cfg.out / files["wide"],
                triple.wide,
                exif=_exif(triple.wide_zoom_ratio, when + timedelta(milliseconds=150), wide_size),
                quality=quality,
            )
            wide = WideRecord(
                zoom_ratio=triple.wide_zoom_ratio,
                center=triple.wide_center,
                rotation_deg=triple.wide_rotation_deg,
                to_uw=triple.wide_to_uw,
                size=wide_size,
            )
        else:
            sim = simulate_pair(scene, **common)
        files["truth"] = f"truth/{name}.png"
        uw_size = (sim.uw.shape[-1], sim.uw.shape[-2])
        tele_size = (sim.tele.shape[-1], sim.tele.shape[-2])
        save_image(cfg.out / files["uw"], sim.uw, exif=_exif(1, when, uw_size), quality=quality)
        save_image(
            cfg.out / files["tele"],
            sim.tele,
            exif=_exif(cfg.zoom_ratio, when + timedelta(milliseconds=300), tele_size),
            quality=quality,
        )
        save_image(cfg.out / files["truth"], sim.truth)
        zoom_ratio_fit, center_fit = _fitted(sim.tele_to_uw_fit, uw_size, tele_size)
        record = SimulationRecord(
            name=name,
            source=str(path),
            seed=cfg.seed + i,
            files=files,
            zoom_ratio=sim.zoom_ratio,
            zoom_ratio_nominal=cfg.zoom_ratio,
            center=sim.center,
            rotation_deg=sim.rotation_deg,
            tele_to_uw=sim.tele_to_uw,
            tele_to_uw_fit=sim.tele_to_uw_fit,
            zoom_ratio_fit=zoom_ratio_fit,
            center_fit=center_fit,
            uw_size=uw_size,
            tele_size=tele_size,
            wide=wide,
        )
        write_json_atomic(truth / f"{name}.json", record.to_json())
        records.append(record)
        if progress:
            progress(i + 1, len(photos), record)
    write_json_atomic(
        cfg.out / SIMULATION_NAME,
        {
            "dzsr_version": __version__,
            "options": {
                _OPTION_NAMES.get(k, k): str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()
            },
            "camera_ranges": None if camera is None else asdict(camera),
            "pairs": [r.to_json() for r in records],
        },
    )
    return records
