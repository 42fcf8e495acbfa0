"""What a real camera does to a scene after the optics: the steps of a phone's capture, as pure functions.

Each step maps ``(3, H, W)`` float32 RGB in ``[0, 1]`` to the same convention (the resampling steps change
``H, W``); randomness comes only from the ``numpy`` generator passed in. :func:`sample_camera` draws one
camera's settings from :class:`CameraRanges` and :func:`capture` applies them in a phone's order: lens
blur, downscaling to the sensor's grid, Poisson–Gaussian sensor noise, denoising, sharpening, tone and
saturation, JPEG with chroma subsampling. The default ranges describe a phone; wider or narrower ranges
make other cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from torch import Tensor

from dzcli.errors import ConfigError
from dzcli.io.images import from_hwc, to_hwc
from dzcli.resize import CV_FILTERS, cv_resize

__all__ = [
    "CameraRanges",
    "CameraSettings",
    "blur",
    "blur_kernel",
    "capture",
    "denoise",
    "downscale",
    "jpeg",
    "sample_camera",
    "sensor_noise",
    "sharpen",
    "tone",
]

BlurKind = Literal["isotropic", "anisotropic", "defocus"]
Subsampling = Literal["444", "422", "420"]
_SAMPLING = {
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}
_LUMA = (0.299, 0.587, 0.114)


def _image(a: np.ndarray) -> Tensor:
    """``(H, W, 3)`` float array → ``(3, H, W)`` float32 tensor, clipped to ``[0, 1]``."""
    return from_hwc(np.clip(a, 0.0, 1.0))


# --------------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------------


def blur_kernel(
    kind: BlurKind, sigma: float, *, sigma2: float | None = None, angle: float = 0.0
) -> np.ndarray:
    """A normalised 2-D blur kernel.

    Args:
        kind: ``isotropic`` (Gaussian of ``sigma``), ``anisotropic`` (Gaussian of ``sigma`` along ``angle``
            radians and ``sigma2`` across), ``defocus`` (a uniform disc of radius ``sigma``, anti-aliased).
        sigma: pixels.
        sigma2: the second axis of an anisotropic kernel (default ``sigma``).
        angle: orientation of the first axis, radians.

    Returns:
        ``(k, k)`` float32 summing to 1, ``k`` odd.
    """
    if sigma <= 0:
        raise ConfigError(f"blur sigma must be > 0, got {sigma}")
    s2 = sigma if sigma2 is None else sigma2
    r = math.ceil(3 * max(sigma, s2)) if kind != "defocus" else math.ceil(sigma) + 1
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    if kind == "defocus":
        k = np.clip(sigma + 0.5 - np.hypot(x, y), 0.0, 1.0)  # 1 inside, a one-pixel ramp at the rim
    elif kind in ("isotropic", "anisotropic"):
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * x + s * y, -s * x + c * y
        k = np.exp(-0.5 * ((u / sigma) ** 2 + (v / s2) ** 2))
    else:
        raise ConfigError(f"unknown blur kind {kind!r}: isotropic, anisotropic or defocus")
    return (k / k.sum()).astype(np.float32)


def blur(img: Tensor, kernel: np.ndarray) -> Tensor:
    """Convolve each channel with ``kernel`` (edges reflected)."""
    return _image(cv2.filter2D(to_hwc(img), -1, kernel, borderType=cv2.BORDER_REFLECT))


def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """``blur(img, blur_kernel("isotropic", sigma))`` as two 1-D passes (the same kernel, separated: several
    times faster on large images)."""
    if sigma <= 0:
        raise ConfigError(f"blur sigma must be > 0, got {sigma}")
    r = math.ceil(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float64) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    return _image(cv2.sepFilter2D(to_hwc(img), -1, k, k, borderType=cv2.BORDER_REFLECT))


def downscale(
    img: Tensor, density: float, method: Literal["area", "bicubic", "bilinear", "lanczos"] = "area"
) -> Tensor:
    """Resample to ``round(H / density) × round(W / density)`` (``density``: input pixels per output pixel) by
    pixel area or by a resampling kernel."""
    if density < 1:
        raise ConfigError(f"downscale density must be >= 1, got {density}")
    if method not in CV_FILTERS:
        raise ConfigError(f"unknown downscale method {method!r}: {', '.join(CV_FILTERS)}")
    _, h, w = img.shape
    return cv_resize(img, (max(1, round(h / density)), max(1, round(w / density))), method)


def sensor_noise(img: Tensor, rng: np.random.Generator, *, photons: float, read: float) -> Tensor:
    """Poisson–Gaussian noise: shot noise of a sensor collecting ``photons`` at full scale, plus read noise.

    The variance at a pixel of value ``x`` is ``x / photons + read²`` (approximated by a Gaussian).
    """
    x = to_hwc(img).astype(np.float64)
    sd = np.sqrt(np.clip(x, 0.0, None) / photons + read * read)
    return _image(x + sd * rng.standard_normal(x.shape))


def denoise(img: Tensor, strength: float) -> Tensor:
    """An ISP's denoiser: edge-preserving smoothing (bilateral filter) that also wipes out fine texture.

    Args:
        strength: the range sigma (0–1 scale, e.g. 0.02–0.1); the spatial sigma grows with it.
    """
    if strength <= 0:
        return img.clone()
    a = to_hwc(img)
    return _image(cv2.bilateralFilter(a, d=0, sigmaColor=float(strength), sigmaSpace=1.0 + 20.0 * strength))


def sharpen(img: Tensor, *, radius: float, amount: float) -> Tensor:
    """Unsharp mask: ``x + amount·(x − blur_radius(x))``, clipped (it overshoots at edges: halos)."""
    a = to_hwc(img)
    soft = cv2.GaussianBlur(a, (0, 0), sigmaX=radius, borderType=cv2.BORDER_REFLECT)
    return _image(a + amount * (a - soft))


def tone(img: Tensor, *, contrast: float, saturation: float, brightness: float = 0.0) -> Tensor:
    """Tone curve and saturation: an S-curve of strength ``contrast`` (0: none), luma-preserving saturation
    ``saturation`` (1: unchanged) and an exposure offset ``brightness``."""
    x = to_hwc(img).astype(np.float64) + brightness
    x = np.clip(x, 0.0, 1.0)
    x = (1.0 - contrast) * x + contrast * x * x * (3.0 - 2.0 * x)
    luma = (x * np.array(_LUMA)).sum(axis=2, keepdims=True)
    return _image(luma + saturation * (x - luma))


def jpeg(img: Tensor, quality: int, subsampling: Subsampling = "420") -> Tensor:
    """Encode and decode as JPEG at ``quality`` with the given chroma subsampling (8-bit)."""
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be in [1, 100], got {quality}")
    if subsampling not in _SAMPLING:
        raise ConfigError(f"unknown chroma subsampling {subsampling!r}: {', '.join(_SAMPLING)}")
    bgr = np.round(to_hwc(img)[..., ::-1] * 255.0).clip(0, 255).astype(np.uint8)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        _SAMPLING[subsampling],
    ]
    ok, buf = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise ConfigError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ConfigError("JPEG decoding failed")
    out = decoded[..., ::-1].astype(np.float32) / 255.0
    return _image(out)


# --------------------------------------------------------------------------------------------------------
# A camera
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraRanges:
    """Ranges from which :func:`sample_camera` draws a camera (uniform unless said otherwise).

    The defaults describe a phone camera: mild lens blur of any of the three kinds, noise of a small
    sensor in daylight, moderate denoising and sharpening, a punchy tone curve, JPEG 80–95 at 4:2:0.
    """

    blur_sigma: tuple[float, float] = (0.3, 1.2)
    """Lens blur in sensor pixels (the defocus disc's radius is 1.5× it)."""
    anisotropy: tuple[float, float] = (0.5, 1.0)
    """Ratio of the two axes of an anisotropic kernel."""
    photons: tuple[float, float] = (300.0, 3000.0)
    """Full-scale photon count (log-uniform); fewer photons, more shot noise."""
    read_noise: tuple[float, float] = (0.001, 0.01)
    denoise: tuple[float, float] = (0.02, 0.08)
    sharpen_radius: tuple[float, float] = (0.7, 2.0)
    sharpen_amount: tuple[float, float] = (0.2, 1.2)
    contrast: tuple[float, float] = (0.0, 0.3)
    saturation: tuple[float, float] = (0.9, 1.25)
    jpeg_quality: tuple[int, int] = (80, 95)
    subsampling: tuple[Subsampling, ...] = ("420",)
    downscale: tuple[str, ...] = ("area", "bicubic", "lanczos")

    def __post_init__(self) -> None:
        for name in (
            "blur_sigma",
            "anisotropy",
            "photons",
            "read_noise",
            "denoise",
            "sharpen_radius",
            "sharpen_amount",
            "contrast",
            "saturation",
            "jpeg_quality",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ConfigError(f"camera range {name} must be 0 <= low <= high, got {(lo, hi)}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"JPEG quality range must lie in [1, 100], got {self.jpeg_quality}")
        if self.blur_sigma[0] <= 0 or self.photons[0] <= 0:
            raise ConfigError("camera blur sigma and photon count must be > 0")


@dataclass(frozen=True)
class CameraSettings:
    """One camera, drawn by :func:`sample_camera`."""

    blur_kind: BlurKind
    blur_sigma: float
    blur_sigma2: float
    blur_angle: float
    downscale: str
    photons: float
    read_noise: float
    denoise: float
    sharpen_radius: float
    sharpen_amount: float
    contrast: float
    saturation: float
    jpeg_quality: int
    subsampling: Subsampling


def sample_camera(rng: np.random.Generator, ranges: CameraRanges | None = None) -> CameraSettings:
    """Draw one camera's settings from ``ranges`` (default: a phone)."""
    r = CameraRanges() if ranges is None else ranges

    def u(lo_hi: tuple[float, float]) -> float:
        return float(rng.uniform(lo_hi[0], lo_hi[1]))

    kind: BlurKind = ("isotropic", "anisotropic", "defocus")[int(rng.integers(3))]
    sigma = u(r.blur_sigma)
    return CameraSettings(
        blur_kind=kind,
        blur_sigma=1.5 * sigma if kind == "defocus" else sigma,
        blur_sigma2=sigma * u(r.anisotropy) if kind == "anisotropic" else sigma,
        blur_angle=float(rng.uniform(0.0, math.pi)),
        downscale=str(r.downscale[int(rng.integers(len(r.downscale)))]),
        photons=float(math.exp(rng.uniform(math.log(r.photons[0]), math.log(r.photons[1])))),
        read_noise=u(r.read_noise),
        denoise=u(r.denoise),
        sharpen_radius=u(r.sharpen_radius),
        sharpen_amount=u(r.sharpen_amount),
        contrast=u(r.contrast),
        saturation=u(r.saturation),
        jpeg_quality=int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)),
        subsampling=r.subsampling[int(rng.integers(len(r.subsampling)))],
    )


def capture(scene: Tensor, density: float, cam: CameraSettings, rng: np.random.Generator) -> Tensor:
    """The photo a camera with settings ``cam`` takes of ``scene``, ``density``× smaller.

    Lens blur (in sensor pixels, i.e. ``density``× wider on the scene), downscaling, sensor noise,
    denoising, sharpening, tone and saturation, JPEG.

    Args:
        scene: ``(3, H, W)`` float32 in ``[0, 1]``.
        density: scene pixels per sensor pixel, ``>= 1``.
        cam: from :func:`sample_camera`.
        rng: draws the noise.

    Returns:
        ``(3, round(H / density), round(W / density))`` float32 in ``[0, 1]``.
    """
    kernel = blur_kernel(
        cam.blur_kind, cam.blur_sigma * density, sigma2=cam.blur_sigma2 * density, angle=cam.blur_angle
    )
    x = downscale(blur(scene, kernel), density, cam.downscale)  # type: ignore[arg-type]
    x = sensor_noise(x, rng, photons=cam.photons, read=cam.read_noise)
    x = denoise(x, cam.denoise)
    x = sharpen(x, radius=cam.sharpen_radius, amount=cam.sharpen_amount)
    x = tone(x, contrast=cam.contrast, saturation=cam.saturation)
    return jpeg(x, cam.jpeg_quality, cam.subsampling)
