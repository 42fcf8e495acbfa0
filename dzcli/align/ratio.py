"""Zoom ratio between two photos from their EXIF (an initial guess that registration then refines).

The ratio is the field-of-view ratio per side, ``uw FOV / tele FOV``, i.e. the ratio of 35 mm-equivalent
focal lengths, tele over uw, times ``DigitalZoomRatio(tele) / DigitalZoomRatio(uw)``. In order:

1. ``user``: an explicit ratio overrides everything;
2. ``exif-35mm``: both photos record ``FocalLengthIn35mmFilm``;
3. ``same-body``: same make and model: the crop factor cancels, the ``FocalLength`` ratio is used;
4. otherwise each photo's 35 mm focal length is its own record, or ``FocalLength`` × crop factor, the crop
   factor coming from the focal-plane resolution (``focal-plane``: sensor diagonal from the pixel size,
   ``43.27 mm / diagonal``) or from a small table of camera bodies (``crop-table``; also used when the
   focal-plane value contradicts a known body, as it does for resized copies);
5. ``none``: nothing is known.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from dzcli.errors import ConfigError
from dzcli.io.exif import CaptureInfo

log = logging.getLogger(__name__)

FULL_FRAME_DIAGONAL_MM = 43.27
"""Diagonal of a 36 × 24 mm frame."""
TABLE_TOLERANCE = 0.1
"""A focal-plane crop factor further than this (relative) from a known body's is not trusted."""
CROP_RANGE = (0.5, 12.0)
"""Crop factors outside this range are treated as unknown (bad focal-plane tags)."""
_UNIT_MM = {2: 25.4, 3: 10.0}
"""FocalPlaneResolutionUnit → millimetres per unit (2 = inch, 3 = cm)."""

# (make pattern, model pattern, crop factor); patterns are case-insensitive full matches on the stripped
# strings. Only bodies whose sensor size the model string identifies without doubt.
_CROP_TABLE: tuple[tuple[str, str, float], ...] = (
    # Four Thirds / Micro Four Thirds
    (r"olympus.*|om digital.*", r"e-(m|p|pl)\d.*|e-\d{1,3}|om-\d.*|pen-f", 2.0),
    (r"panasonic", r"(dmc|dc)-g[a-z]{0,2}\d+.*", 2.0),
    # Canon APS-C, then full frame
    (
        r"canon",
        r"canon eos (\d{2,4}d|7d( mark ii)?|rebel .*|kiss .*|m\d*( mark ii)?|r(7|10|50|100))( digital)?",
        1.6,
    ),
    (r"canon", r"canon eos (5d.*|6d.*|r|rp|r[1358]|r6.*)|canon eos-1d ?[sxc].*", 1.0),
    # Nikon DX, then FX
    (
        r"nikon.*",
        r"nikon (d(40|50|60|70|80|90|100|200|300|500|3[0-5]00|5[0-6]00|7[0-5]00)s?|z ?(50|30|fc))",
        1.5,
    ),
    (r"nikon.*", r"nikon (d(3|4|5|6|600|610|700|750|780|800|810|850)[a-z]?|df|z ?[5-9](_?2|ii)?|z ?f)", 1.0),
    # Sony E-mount APS-C, then full frame
    (r"sony", r"nex-.*|ilce-[3-6]\d{3}.*", 1.5),
    (r"sony", r"ilce-[79].*|ilce-1", 1.0),
    # Pentax: the full-frame K-1 first, then K APS-C; Fujifilm X APS-C
    (r"pentax.*|ricoh.*", r"pentax k-1( mark ii)?", 1.0),
    (r"pentax.*|ricoh.*", r"pentax k(-?(\d{1,3}|r|x|s\d|p))d?( ii| iii| mark ii| mark iii)?", 1.5),
    (r"fujifilm", r"x-(t|e|pro|h|s|a|m)\d+.*|x100.*", 1.5),
)


@dataclass(frozen=True)
class RatioEstimate:
    """An initial zoom ratio and where it came from.

    Attributes:
        value: field-of-view ratio per side (uw / tele), or ``None`` when unknown.
        source: one of ``user``, ``exif-35mm``, ``same-body``, ``focal-plane``, ``crop-table``, ``none``.
    """

    value: float | None
    source: str


def crop_factor_from_table(info: CaptureInfo) -> float | None:
    """Crop factor of a camera body recognised by its make and model, else ``None``."""
    make = (info.make or "").strip().lower()
    model = (info.model or "").strip().lower()
    for make_re, model_re, crop in _CROP_TABLE:
        if re.fullmatch(make_re, make) and re.fullmatch(model_re, model):
            return crop
    return None


def crop_factor_from_focal_plane(info: CaptureInfo, size: tuple[int, int]) -> float | None:
    """Crop factor from the focal-plane resolution and the sensor's pixel count, else ``None``.

    The focal-plane resolution refers to the pixels the camera recorded, so the EXIF image size is used
    when present (a resized copy keeps it while its pixels change); otherwise the image's own size.

    Args:
        info: the photo's capture metadata.
        size: the photo's ``(width, height)`` in pixels as loaded (EXIF Orientation applied).
    """
    xres, yres, unit = info.focal_plane_x_res, info.focal_plane_y_res, info.focal_plane_unit
    if not xres or not unit or unit not in _UNIT_MM:
        return None
    yres = yres or xres
    if info.exif_width and info.exif_height:
        w_px, h_px = info.exif_width, info.exif_height
    else:
        w_px, h_px = size
        if info.orientation in (5, 6, 7, 8):  # the sensor's rows are the loaded image's columns
            w_px, h_px = h_px, w_px
    mm = _UNIT_MM[unit]
    diagonal = math.hypot(w_px / xres * mm, h_px / yres * mm)
    if diagonal <= 0:
        return None
    crop = FULL_FRAME_DIAGONAL_MM / diagonal
    return crop if CROP_RANGE[0] <= crop <= CROP_RANGE[1] else None


def _focal_35mm(info: CaptureInfo, size: tuple[int, int]) -> tuple[float, str] | None:
    """35 mm-equivalent focal length and the source of its crop factor."""
    if info.focal_35mm:
        return info.focal_35mm, "exif-35mm"
    if not info.focal_mm:
        return None
    plane, table = crop_factor_from_focal_plane(info, size), crop_factor_from_table(info)
    if plane is not None and table is not None and abs(plane / table - 1.0) > TABLE_TOLERANCE:
        # A resized copy keeps the camera's focal-plane resolution but records its new pixel count.
        log.info(
            "focal-plane crop factor %.2f disagrees with %s's %.2f; using the latter",
            plane,
            info.camera,
            table,
        )
        plane = None
    if plane is not None:
        return info.focal_mm * plane, "focal-plane"
    if table is not None:
        return info.focal_mm * table, "crop-table"
    return None


def _same_body(a: CaptureInfo, b: CaptureInfo) -> bool:
    def key(i: CaptureInfo) -> tuple[str, str]:
        return (i.make or "").strip().lower(), (i.model or "").strip().lower()

    return bool(a.model and a.model.strip()) and key(a) == key(b)


def exif_ratio(
    uw: CaptureInfo,
    tele: CaptureInfo,
    *,
    uw_size: tuple[int, int],
    tele_size: tuple[int, int],
    user_zoom_ratio: float | None = None,
) -> RatioEstimate:
    """Zoom ratio from EXIF (see the module docstring for the order of sources).

    Args:
        uw: capture metadata of the short-focus photo.
        tele: capture metadata of the long-focus photo.
        uw_size: the uw's ``(width, height)`` in pixels as loaded.
        tele_size: the tele's ``(width, height)`` in pixels as loaded.
        user_zoom_ratio: an explicit ratio (``--ratio``); overrides everything.

    Returns:
        The estimate; ``RatioEstimate(None, "none")`` when nothing is known.

    Raises:
        ConfigError: ``user_zoom_ratio`` is not a positive number.
    """
    if user_zoom_ratio is not None:
        if not (math.isfinite(user_zoom_ratio) and user_zoom_ratio > 0):
            raise ConfigError(f"--ratio must be a positive number (got {user_zoom_ratio})")
        return RatioEstimate(float(user_zoom_ratio), "user")
    zoom = (tele.digital_zoom or 1.0) / (uw.digital_zoom or 1.0)
    if uw.focal_35mm and tele.focal_35mm:
        return RatioEstimate(tele.focal_35mm / uw.focal_35mm * zoom, "exif-35mm")
    if _same_body(uw, tele) and uw.focal_mm and tele.focal_mm:
        return RatioEstimate(tele.focal_mm / uw.focal_mm * zoom, "same-body")
    fu, ft = _focal_35mm(uw, uw_size), _focal_35mm(tele, tele_size)
    if fu is None or ft is None:
        return RatioEstimate(None, "none")
    sources = {fu[1], ft[1]}
    source = "crop-table" if "crop-table" in sources else "focal-plane"
    return RatioEstimate(ft[0] / fu[0] * zoom, source)
