r"""Capture metadata (EXIF) of a photo, normalised: padded strings stripped, 0 treated as missing.

EXIF blocks are passed around as ``bytes`` holding the TIFF structure itself (``II*\0`` or ``MM\0*``
header, IFD0, the Exif/GPS sub-IFDs), without the ``Exif\0\0`` prefix JPEG files put in front of it.
:func:`exif_payload` turns any of the usual wrappings into that form. XMP packets (ratings, edit history)
are passed around as the packet's UTF-8 ``bytes``, as stored (:func:`read_xmp`, :func:`update_xmp`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from dzcli.errors import InputError
from dzcli.io.formats import RAW_SUFFIXES
from dzcli.io.quiet import c_stderr_to_log

__all__ = [
    "JPEG_XMP_PREFIX",
    "PNG_XMP_KEYWORD",
    "CaptureInfo",
    "capture_info_from_exif",
    "exif_payload",
    "make_exif",
    "read_capture_info",
    "read_exif",
    "read_xmp",
    "update_exif",
    "update_xmp",
]

logger = logging.getLogger(__name__)
# exifread logs a warning for every file without EXIF (all of a dataset's PNGs): not news to a user.
logging.getLogger("exifread").setLevel(logging.ERROR)

# Tag ids (EXIF 2.32 / TIFF 6.0).
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _SUBSEC, _SUBSEC_ORIGINAL = 0x9003, 0x9290, 0x9291
_FOCAL_LENGTH, _FOCAL_35MM, _DIGITAL_ZOOM, _LENS_MODEL = 0x920A, 0xA405, 0xA404, 0xA434
_FP_XRES, _FP_YRES, _FP_UNIT = 0xA20E, 0xA20F, 0xA210
_EXIF_WIDTH, _EXIF_HEIGHT = 0xA002, 0xA003
_IMAGE_DESCRIPTION, _SOFTWARE, _XMP_TAG = 0x010E, 0x0131, 0x02BC

# IFD0 tags of a TIFF-structured file that describe the capture rather than the pixel layout: the only ones
# carried over when the EXIF block is taken from a TIFF or TIFF-based RAW file (strip offsets, bit depth,
# compression etc. belong to that file's pixels, not to ours).
_IFD0_METADATA = frozenset(
    {0x010E, _MAKE, _MODEL, _ORIENTATION, 0x011A, 0x011B, 0x0128, 0x0131, _DATETIME, 0x013B, 0x8298}
)
# IFD0 tags that describe a file's own pixels (subfile type, size, samples, compression, strips, tiles,
# sub-IFDs, predictor, JPEG tables, chroma subsampling) or the program that wrote them: stale in any
# output, dropped by update_exif.
# fmt: off
_IFD0_STALE = frozenset({
    254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 330, 338,
    339, 347, 530, _SOFTWARE,
})
# fmt: on
_TIFF_NS, _EXIF_NS = b"http://ns.adobe.com/tiff/1.0/", b"http://ns.adobe.com/exif/1.0/"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
"""Keyword of the PNG iTXt chunk holding the XMP packet."""
JPEG_XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
"""What a JPEG APP1 segment holding the XMP packet starts with."""

# Exif sub-IFD tags that some writers (DNG tools) put in IFD0 instead; moved to the sub-IFD.
# fmt: off
_EXIF_SUBIFD_TAGS = frozenset({
    0x829A, 0x829D, 0x8822, 0x8827, 0x8830, 0x8832, 0x9000,  # exposure, F-number, program, ISO, version
    _DATETIME_ORIGINAL, 0x9004, 0x9010, 0x9011, 0x9012, _SUBSEC, _SUBSEC_ORIGINAL, 0x9292,  # times, offsets
    0x9201, 0x9202, 0x9203, 0x9204, 0x9205, 0x9206, 0x9207, 0x9208, 0x9209,  # APEX values, metering, flash
    _FOCAL_LENGTH, _FP_XRES, _FP_YRES, _FP_UNIT, 0xA402, 0xA403, _DIGITAL_ZOOM, _FOCAL_35MM, 0xA406,
    0xA431, 0xA432, 0xA433, _LENS_MODEL,  # body serial, lens specification, lens make, lens model
})
# fmt: on

# (CaptureInfo source name, tag id, exifread keys in order of preference)
_FIELDS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("make", _MAKE, ("Image Make",)),
    ("model", _MODEL, ("Image Model",)),
    ("orientation", _ORIENTATION, ("Image Orientation",)),
    ("datetime", _DATETIME, ("Image DateTime",)),
    ("lens", _LENS_MODEL, ("EXIF LensModel", "Image LensModel")),
    ("focal_mm", _FOCAL_LENGTH, ("EXIF FocalLength", "Image FocalLength")),
    ("focal_35mm", _FOCAL_35MM, ("EXIF FocalLengthIn35mmFilm", "Image FocalLengthIn35mmFilm")),
    ("digital_zoom", _DIGITAL_ZOOM, ("EXIF DigitalZoomRatio", "Image DigitalZoomRatio")),
    ("datetime_original", _DATETIME_ORIGINAL, ("EXIF DateTimeOriginal", "Image DateTimeOriginal")),
    ("subsec_original", _SUBSEC_ORIGINAL, ("EXIF SubSecTimeOriginal", "Image SubSecTimeOriginal")),
    ("subsec", _SUBSEC, ("EXIF SubSecTime", "Image SubSecTime")),
    ("focal_plane_x_res", _FP_XRES, ("EXIF FocalPlaneXResolution", "Image FocalPlaneXResolution")),
    ("focal_plane_y_res", _FP_YRES, ("EXIF FocalPlaneYResolution", "Image FocalPlaneYResolution")),
    ("focal_plane_unit", _FP_UNIT, ("EXIF FocalPlaneResolutionUnit", "Image FocalPlaneResolutionUnit")),
    ("exif_width", _EXIF_WIDTH, ("EXIF ExifImageWidth",)),
    ("exif_height", _EXIF_HEIGHT, ("EXIF ExifImageLength",)),
)


@dataclass(frozen=True)
class CaptureInfo:
    """What dzsr needs to know about how a photo was taken. ``None`` means unknown.

    Focal lengths are in millimetres; ``orientation`` is the EXIF Orientation value (1..8) stored in
    the file (the pixels returned by :func:`dzcli.io.images.load_photo` already have it applied).
    """

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    focal_mm: float | None = None
    focal_35mm: float | None = None
    digital_zoom: float | None = None
    time: datetime | None = None
    orientation: int = 1
    focal_plane_x_res: float | None = None
    focal_plane_y_res: float | None = None
    focal_plane_unit: int | None = None
    exif_width: int | None = None
    exif_height: int | None = None

    @property
    def camera(self) -> str:
        """``"Make Model"`` (model alone when it already names the make); ``""`` when unknown."""
        make, model = self.make or "", self.model or ""
        if model.lower().startswith(make.lower()):
            return model
        return f"{make} {model}".strip()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (time as ISO 8601)."""
        d = asdict(self)
        d["time"] = self.time.isoformat() if self.time else None
        return d


# --------------------------------------------------------------------------------------------- reading


def read_capture_info(path: Path) -> CaptureInfo:
    """Read the capture metadata of an image file (JPEG, PNG, TIFF, WebP, HEIC/HEIF or RAW).

    exifread reads JPEG/PNG/TIFF/RAW (IFD0 and the Exif sub-IFD); HEIC/HEIF, and any file exifread
    cannot parse, go through Pillow (with the pillow-heif opener). For RAW formats exifread cannot
    parse (RAF, CR3), missing focal length, lens and time are taken from LibRaw.

    Args:
        path: the image file.

    Returns:
        The normalised metadata; an empty ``CaptureInfo()`` when the file has no (readable) EXIF.

    Raises:
        InputError: the file does not exist or is not a regular file. Bad EXIF never raises.
    """
    path = Path(path)
    check_is_file(path)
    values: dict[str, Any] = {}
    if not _is_heif(path):
        try:
            values = _values_from_exifread(path)
        except Exception as exc:  # exifread raises assorted errors (AssertionError on HEIC) on odd files
            logger.debug("%s: exifread failed (%s: %s); trying Pillow", path, type(exc).__name__, exc)
    if not values:
        try:
            values = _values_from_pillow_file(path)
        except Exception as exc:  # Pillow: UnidentifiedImageError, OSError, struct errors on garbled EXIF
            logger.debug("%s: Pillow found no EXIF (%s: %s)", path, type(exc).__name__, exc)
    info = _info_from_values(values)
    if path.suffix.lower() in RAW_SUFFIXES and (
        info.focal_mm is None or info.lens is None or info.time is None
    ):
        info = _complete_from_libraw(path, info)
    return info


def capture_info_from_exif(exif: bytes) -> CaptureInfo:
    r"""Parse an EXIF block (TIFF structure, with or without the ``Exif\0\0`` prefix) into a CaptureInfo.

    Garbled or empty blocks give an empty ``CaptureInfo()``.
    """
    payload = exif_payload(exif)
    if payload is None:
        return CaptureInfo()
    try:
        from PIL import Image

        with _quiet_pillow():
            ex = Image.Exif()
            ex.load(payload)
            return _info_from_values(_values_from_pillow_exif(ex))
    except Exception as exc:  # garbled EXIF: documented as "no information"
        logger.debug("garbled EXIF block (%s: %s)", type(exc).__name__, exc)
        return CaptureInfo()


def read_exif(path: Path) -> bytes | None:
    r"""The EXIF block of an image file, TIFF-structured without the ``Exif\0\0`` prefix.

    JPEG and WebP: the APP1/EXIF chunk as stored. PNG: the ``eXIf`` chunk. HEIC/HEIF: the EXIF item as
    stored (pillow-heif's raw block; its Orientation still says how the stored pixels are turned).
    TIFF and TIFF-based RAW: a block rebuilt from the file's IFD0 keeping only capture metadata
    (make, model, orientation, dates, ...), its Exif and GPS sub-IFDs, and the Exif tags some DNG
    writers put in IFD0. The embedded thumbnail (IFD1) is not kept for TIFF-based files.

    Returns:
        The block, or ``None`` when the file has none or it cannot be parsed.

    Raises:
        InputError: the file does not exist or is not a regular file.
    """
    path = Path(path)
    check_is_file(path)
    try:
        with open(path, "rb") as fh, _quiet_pillow():
            head = fh.read(16)
            fh.seek(0)
            if head.startswith((b"II*\x00", b"MM\x00*")):
                return _exif_from_tiff_ifd0(fh)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                return _png_exif(fh)
            if head[4:8] == b"ftyp":
                return _heif_exif(fh)
            from PIL import Image

            with Image.open(fh) as im:
                raw = im.info.get("exif")
            return exif_payload(raw) if isinstance(raw, bytes) else None
    except Exception as exc:  # unreadable or garbled metadata means "no EXIF", never an error
        logger.debug("%s: no readable EXIF block (%s: %s)", path, type(exc).__name__, exc)
        return None


def exif_payload(data: bytes | None) -> bytes | None:
    r"""Normalise an EXIF block to the bare TIFF structure.

    Accepts the bare structure, the JPEG form (``Exif\0\0`` prefix) and the HEIF item form (a 4-byte
    offset then ``Exif\0\0``). Returns ``None`` for empty data or data with no TIFF header.
    """
    if not data:
        return None
    data = bytes(data)
    if data[4:10] == b"Exif\x00\x00":
        data = data[10:]
    while data.startswith(b"Exif\x00\x00"):
        data = data[6:]
    if data.startswith((b"II*\x00", b"MM\x00*")) and len(data) >= 8:
        return data
    return None


def read_xmp(path: Path) -> bytes | None:
    """The XMP packet of an image file, as stored.

    JPEG: the APP1 ``http://ns.adobe.com/xap/1.0/`` segment (extended XMP is not joined). PNG: the
    ``XML:com.adobe.xmp`` iTXt chunk (anywhere in the file). WebP: the ``XMP`` chunk. TIFF: tag 700 of
    the first IFD. HEIC/HEIF: the XMP item pillow-heif exposes.

    Returns:
        The packet, or ``None`` when the file has none or it cannot be read.

    Raises:
        InputError: the file does not exist or is not a regular file.
    """
    path = Path(path)
    check_is_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            fh.seek(0)
            if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
                raw = _tiff_xmp(fh)
            elif head.startswith(b"\x89PNG\r\n\x1a\n"):
                raw = _png_xmp(fh)
            elif head[4:8] == b"ftyp":
                import pillow_heif

                heif = pillow_heif.open_heif(fh, convert_hdr_to_8bit=False)
                xmp = heif[heif.primary_index].info.get("xmp")
                raw = xmp if isinstance(xmp, bytes) else None
            else:
                raw = _pillow_xmp(fh)
    except Exception as exc:  # unreadable or garbled metadata means "no XMP", never an error
        logger.debug("%s: no readable XMP packet (%s: %s)", path, type(exc).__name__, exc)
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return bytes(raw) if isinstance(raw, (bytes, bytearray)) and raw.strip(b"\x00 \t\r\n") else None


# --------------------------------------------------------------------------------------------- writing


def make_exif(info: CaptureInfo, *, width: int | None = None, height: int | None = None) -> bytes:
    r"""Build an EXIF block holding the fields of ``info`` (``None`` fields omitted).

    Make, Model and Orientation go to IFD0; FocalLength, FocalLengthIn35mmFilm, LensModel,
    DigitalZoomRatio, DateTimeOriginal, SubSecTimeOriginal, the focal-plane resolution and
    ExifImageWidth/Height (``width``/``height``, else ``info.exif_width``/``exif_height``) go to the
    Exif sub-IFD. Reading the block back with :func:`capture_info_from_exif` gives ``info`` again
    (rationals are stored with denominators up to 10000).

    Returns:
        The block, TIFF-structured, without the ``Exif\0\0`` prefix.
    """
    from PIL import Image

    ex = Image.Exif()
    if info.make:
        ex[_MAKE] = info.make
    if info.model:
        ex[_MODEL] = info.model
    ex[_ORIENTATION] = info.orientation if 1 <= info.orientation <= 8 else 1
    sub: dict[int, Any] = {}
    if info.focal_mm:
        sub[_FOCAL_LENGTH] = _rational(info.focal_mm)
    if info.focal_35mm:
        sub[_FOCAL_35MM] = round(info.focal_35mm)
    if info.lens:
        sub[_LENS_MODEL] = info.lens
    if info.digital_zoom:
        sub[_DIGITAL_ZOOM] = _rational(info.digital_zoom)
    if info.time is not None:
        sub[_DATETIME_ORIGINAL] = info.time.strftime("%Y:%m:%d %H:%M:%S")
        if info.time.microsecond:
            sub[_SUBSEC_ORIGINAL] = f"{info.time.microsecond:06d}".rstrip("0")
    if info.focal_plane_x_res:
        sub[_FP_XRES] = _rational(info.focal_plane_x_res)
    if info.focal_plane_y_res:
        sub[_FP_YRES] = _rational(info.focal_plane_y_res)
    if info.focal_plane_unit:
        sub[_FP_UNIT] = int(info.focal_plane_unit)
    w = width if width is not None else info.exif_width
    h = height if height is not None else info.exif_height
    if w:
        sub[_EXIF_WIDTH] = int(w)
    if h:
        sub[_EXIF_HEIGHT] = int(h)
    if sub:
        ex.get_ifd(_EXIF_IFD).update(sub)
    return ex.tobytes()[6:]


def update_exif(exif: bytes, *, width: int, height: int) -> bytes:
    r"""The same EXIF block for an output whose pixels are upright and ``width`` x ``height``.

    Sets Orientation to 1 and ExifImageWidth/Height, and drops the embedded thumbnail (IFD1) and the
    IFD0 tags that describe the source's pixels or the program that wrote them (strip, tile, size and
    sample tags, ``Software``, and an ``ImageDescription`` written by an imaging library about the pixel
    layout, such as tifffile's ``{"shape": [...]}``). Every other tag, the Exif, Interop and GPS sub-IFDs
    included, is kept. If the block cannot be re-serialised, a warning is logged and a block rebuilt
    from its capture fields is returned.

    Args:
        exif: EXIF block (bare TIFF structure or with the ``Exif\0\0`` prefix).
        width: output width in pixels.
        height: output height in pixels.

    Returns:
        The block, TIFF-structured, without the ``Exif\0\0`` prefix.
    """
    from PIL import Image

    payload = exif_payload(exif)
    try:
        if payload is None:
            raise ValueError("no TIFF header")
        with _quiet_pillow():
            ex = Image.Exif()
            ex.load(payload)
            for tag in _IFD0_STALE & set(ex):
                del ex[tag]
            if _describes_pixels(ex.get(_IMAGE_DESCRIPTION)):
                del ex[_IMAGE_DESCRIPTION]
            ex[_ORIENTATION] = 1
            sub = ex.get_ifd(_EXIF_IFD)
            sub[_EXIF_WIDTH] = int(width)
            sub[_EXIF_HEIGHT] = int(height)
            if _GPS_IFD in ex:
                ex.get_ifd(_GPS_IFD)
            return ex.tobytes()[6:]
    except Exception as exc:  # Pillow raises assorted errors on odd tags; fall back to the essentials
        logger.warning(
            "EXIF block could not be rewritten (%s: %s); keeping only the capture fields",
            type(exc).__name__,
            exc,
        )
        info = replace(capture_info_from_exif(exif), orientation=1)
        return make_exif(info, width=width, height=height)


def update_xmp(xmp: bytes, *, width: int, height: int) -> bytes:
    """The same XMP packet for an output whose pixels are upright and ``width`` x ``height``.

    Rewrites ``tiff:ImageWidth``, ``tiff:ImageLength``, ``exif:PixelXDimension`` and
    ``exif:PixelYDimension`` to the new size and ``tiff:Orientation`` to 1, in attribute or element form,
    whatever prefix the packet binds to those namespaces; the rest of the packet is kept byte for byte.
    A packet that is not UTF-8 (no namespace declaration found) is returned unchanged.
    """
    values = (
        (_TIFF_NS, b"ImageWidth", width),
        (_TIFF_NS, b"ImageLength", height),
        (_TIFF_NS, b"Orientation", 1),
        (_EXIF_NS, b"PixelXDimension", width),
        (_EXIF_NS, b"PixelYDimension", height),
    )
    out = bytes(xmp)
    for ns, name, value in values:
        text = str(int(value)).encode("ascii")
        for prefix in set(re.findall(rb"xmlns:([\w.-]+)\s*=\s*[\"']" + re.escape(ns) + rb"[\"']", out)):
            prop = re.escape(prefix + b":" + name)
            attribute = rb"(\s" + prop + rb"\s*=\s*)(?:\"[^\"]*\"|'[^']*')"
            element = rb"(<" + prop + rb"(?:\s[^>]*)?>)[^<]*(</" + prop + rb"\s*>)"
            out = re.sub(attribute, rb'\g<1>"' + text + b'"', out)
            out = re.sub(element, rb"\g<1>" + text + rb"\g<2>", out)
    return out


# --------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Silence Pillow's "Corrupt EXIF data" UserWarnings: garbled EXIF is expected input, handled here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def check_is_file(path: Path) -> None:
    """Raise InputError (one line, naming the file) unless ``path`` is an existing regular file."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")


def _is_heif(path: Path) -> bool:
    """HEIC/HEIF/AVIF content (an ISO-BMFF ``ftyp`` box first), whatever the suffix."""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


@functools.cache
def _register_heif() -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _rational(x: float) -> Any:
    from PIL.TiffImagePlugin import IFDRational

    max_den = max(1, min(10000, int((2**32 - 1) // max(abs(x), 1.0))))
    f = Fraction(x).limit_denominator(max_den)
    return IFDRational(f.numerator, f.denominator)


def _values_from_exifread(path: Path) -> dict[str, Any]:
    import exifread

    with open(path, "rb") as fh:
        tags = exifread.process_file(fh, details=False, extract_thumbnail=False)
    values: dict[str, Any] = {}
    for name, _tag_id, keys in _FIELDS:
        for key in keys:
            tag = tags.get(key)
            if tag is None:
                continue
            v = tag.values
            if isinstance(v, (list, tuple)):
                v = v[0] if v else None
            if v is not None:
                values[name] = v
                break
    return values


def _values_from_pillow_file(path: Path) -> dict[str, Any]:
    from PIL import Image

    _register_heif()
    with _quiet_pillow(), Image.open(path) as im:
        ex = im.getexif()
        values = _values_from_pillow_exif(ex)
        # pillow-heif resets the EXIF Orientation to 1 (libheif applies the container's rotation) and keeps
        # the stored value here.
        original = im.info.get("original_orientation")
        if isinstance(original, int):
            values["orientation"] = original
    return values


def _values_from_pillow_exif(ex: Any) -> dict[str, Any]:
    ifd0: Mapping[int, Any] = ex
    sub: Mapping[int, Any] = ex.get_ifd(_EXIF_IFD) if _EXIF_IFD in ex else {}
    values: dict[str, Any] = {}
    for name, tag_id, _keys in _FIELDS:
        v = sub.get(tag_id) if tag_id in sub else ifd0.get(tag_id)
        if isinstance(v, tuple):
            v = v[0] if v else None
        if v is not None:
            values[name] = v
    return values


def _info_from_values(values: Mapping[str, Any]) -> CaptureInfo:
    """Normalise raw tag values (exifread or Pillow types) into a CaptureInfo; bad values become None."""
    orientation = _positive_int(values.get("orientation"))
    unit = _positive_int(values.get("focal_plane_unit"))
    time = _parse_time(values.get("datetime_original"), values.get("subsec_original"))
    if time is None:
        time = _parse_time(values.get("datetime"), values.get("subsec"))
    return CaptureInfo(
        make=_text(values.get("make")),
        model=_text(values.get("model")),
        lens=_text(values.get("lens")),
        focal_mm=_positive(values.get("focal_mm")),
        focal_35mm=_positive(values.get("focal_35mm")),
        digital_zoom=_positive(values.get("digital_zoom")),
        time=time,
        orientation=orientation if orientation is not None and 1 <= orientation <= 8 else 1,
        focal_plane_x_res=_positive(values.get("focal_plane_x_res")),
        focal_plane_y_res=_positive(values.get("focal_plane_y_res")),
        focal_plane_unit=unit,
        exif_width=_positive_int(values.get("exif_width")),
        exif_height=_positive_int(values.get("exif_height")),
    )


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8", errors="replace")
    if not isinstance(v, str):
        return None
    s = v.strip(" \x00\t\r\n").split("\x00", 1)[0].strip()
    return s or None


def _positive(v: Any) -> float | None:
    if v is None or isinstance(v, (str, bytes, bool)):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _positive_int(v: Any) -> int | None:
    x = _positive(v)
    return round(x) if x is not None and x >= 0.5 else None


_TIME_RE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def _parse_time(v: Any, subsec: Any) -> datetime | None:
    text = _text(v)
    if text is None:
        return None
    m = _TIME_RE.match(text)
    if m is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups())
        t = datetime(year, month, day, hour, minute, second)
    except ValueError:  # "0000:00:00 00:00:00" and other impossible dates
        return None
    sub = _text(subsec) if not isinstance(subsec, int) else str(subsec)
    if sub:
        digits = re.match(r"\d+", sub.strip())
        if digits:
            t = t.replace(microsecond=int((digits.group(0) + "000000")[:6]))
    return t


def _complete_from_libraw(path: Path, info: CaptureInfo) -> CaptureInfo:
    """Fill focal length, lens and time from LibRaw (for RAW formats exifread cannot parse)."""
    try:
        import rawpy

        with c_stderr_to_log(logger, path), rawpy.imread(str(path)) as raw:  # LibRaw prints its warnings
            other, lens = raw.other, raw.lens
    except Exception as exc:  # unreadable RAW: keep what EXIF gave; load_photo reports the decode error
        logger.debug("%s: LibRaw metadata unavailable (%s: %s)", path, type(exc).__name__, exc)
        return info
    ts = getattr(other, "timestamp", None)
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts) if ts > 0 else None
    if isinstance(ts, datetime) and ts.year <= 1970:
        ts = None
    return replace(
        info,
        focal_mm=info.focal_mm or _positive(getattr(other, "focal_length", None)),
        lens=info.lens or _text(getattr(lens, "model", None)),
        time=info.time or (ts if isinstance(ts, datetime) else None),
    )


def _exif_from_tiff_ifd0(fh: BinaryIO) -> bytes | None:
    """Rebuild an EXIF block from a TIFF-structured file's IFD0: capture metadata and sub-IFDs only."""
    from PIL import Image

    src = Image.Exif()
    src.load_from_fp(fh)
    out = Image.Exif()
    for tag in _IFD0_METADATA:
        if tag in src:
            out[tag] = src[tag]
    sub: dict[int, Any] = {k: v for k, v in src.items() if k in _EXIF_SUBIFD_TAGS}
    if _EXIF_IFD in src:
        sub.update(src.get_ifd(_EXIF_IFD))
        sub.pop(0xA005, None)  # the Interop pointer: re-added below as a real sub-IFD when it has content
        interop = src.get_ifd(0xA005)
        if interop:
            sub[0xA005] = dict(interop)
    if sub:
        out.get_ifd(_EXIF_IFD).update(sub)
    gps = src.get_ifd(_GPS_IFD) if _GPS_IFD in src else {}
    if gps:
        out.get_ifd(_GPS_IFD).update(gps)
    if len(out) == 0 and not sub and not gps:
        return None
    return out.tobytes()[6:]


def _describes_pixels(value: Any) -> bool:
    """Whether an ImageDescription was written by an imaging library about the pixel layout (tifffile's
    JSON or ``shape=(...)``, an ImageJ header, OME-XML) rather than by a person."""
    text = _text(value)
    if text is None:
        return False
    return (
        (text.startswith("{") and '"shape"' in text)
        or text.startswith(("shape=(", "ImageJ="))
        or "<OME" in text[:2000]
    )


def _png_chunks(fh: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """(type, length) of each chunk of a PNG stream up to IEND, with ``fh`` at the chunk's data."""
    pos = 8
    while True:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            return
        length = int.from_bytes(header[:4], "big")
        yield header[4:], length
        if header[4:] == b"IEND":
            return
        pos += 12 + length


def _png_exif(fh: BinaryIO) -> bytes | None:
    """The ``eXIf`` chunk of a PNG stream (anywhere in the file), walking chunk headers only."""
    for ctype, length in _png_chunks(fh):
        if ctype == b"eXIf":
            return exif_payload(fh.read(length))
    return None


def _png_xmp(fh: BinaryIO) -> bytes | None:
    """The text of the ``XML:com.adobe.xmp`` iTXt chunk of a PNG stream (anywhere in the file)."""
    for ctype, length in _png_chunks(fh):
        if ctype != b"iTXt":
            continue
        data = fh.read(length)
        keyword, _, rest = data.partition(b"\x00")
        if keyword != PNG_XMP_KEYWORD or len(rest) < 2:
            continue
        parts = rest[2:].split(b"\x00", 2)  # language tag, translated keyword, text
        if len(parts) == 3:
            return zlib.decompress(parts[2]) if rest[0] else parts[2]
    return None


def _tiff_xmp(fh: BinaryIO) -> bytes | None:
    import tifffile

    with tifffile.TiffFile(fh) as tf:
        tag = tf.pages.first.tags.get(_XMP_TAG)
        return tag.value if tag is not None else None


def _pillow_xmp(fh: BinaryIO) -> bytes | None:
    """The XMP of a JPEG (APP1 segment) or WebP (``XMP`` chunk) read by Pillow."""
    from PIL import Image

    with _quiet_pillow(), Image.open(fh) as im:
        for marker, data in getattr(im, "applist", ()):
            if marker == "APP1" and data.startswith(JPEG_XMP_PREFIX):
                return data[len(JPEG_XMP_PREFIX) :]
        return im.info.get("xmp")


def _heif_exif(fh: BinaryIO) -> bytes | None:
    import pillow_heif

    heif = pillow_heif.open_heif(fh, convert_hdr_to_8bit=False)
    raw = heif[heif.primary_index].info.get("exif")
    return exif_payload(raw) if isinstance(raw, bytes) else None
