"""Reading and writing photos: the only module that converts between files, numpy and dzsr's image convention.

The image convention of the whole project: a ``torch.Tensor`` of dtype float32, RGB, shape (C, H, W)
(``(B, C, H, W)`` for batches), values in [0, 1], sRGB-encoded (not linear). Bit depth is decided by the
dtype of the source, never by pixel values: uint8 sources are 8-bit, uint16 (and float, 10/12-bit HEIF and
RAW) sources are 16-bit, and 16-bit inputs stay 16-bit on output. Nothing outside this module handles
numpy arrays in HWC layout, BGR channel order or integer pixels.

Reading (:func:`load_photo`): JPEG, PNG, TIFF and WebP are decoded by OpenCV with the EXIF Orientation
applied here, exactly once (TIFFs with alpha by tifffile where it has the codec, for exact samples);
HEIC/HEIF by pillow-heif, whose libheif already applies the container's rotation/mirror
(``irot``/``imir``), so nothing more is applied; RAW by rawpy with one fixed set of development
parameters (:data:`RAW_DEVELOP`), LibRaw applying the raw's flip itself. An alpha channel is kept apart
from the RGB pixels (:attr:`Photo.alpha`, straight, not premultiplied). What libjpeg, libpng, libtiff and
LibRaw print to stderr while decoding goes to the debug log (:func:`dzcli.io.quiet.c_stderr_to_log`).

Writing (:func:`save_image`): PNG and TIFF (8 or 16-bit), JPEG and WebP (8-bit), HEIC (8-bit, or 10-bit
for 16-bit pixels), with EXIF, XMP and ICC profile embedded and alpha where the format holds it
(:func:`holds_alpha`), atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from dzcli.errors import InputError, ResourceError
from dzcli.io.atomic import write_atomic
from dzcli.io.exif import (
    JPEG_XMP_PREFIX,
    PNG_XMP_KEYWORD,
    CaptureInfo,
    check_is_file,
    exif_payload,
    make_exif,
    read_capture_info,
    read_exif,
    read_xmp,
)
from dzcli.io.formats import IMAGE_SUFFIXES, RAW_SUFFIXES
from dzcli.io.quiet import c_stderr_to_log

__all__ = [
    "IMAGE_SUFFIXES",
    "RAW_DEVELOP",
    "RAW_SUFFIXES",
    "Photo",
    "as_image",
    "from_hwc",
    "holds_alpha",
    "is_image_file",
    "load_photo",
    "save_image",
    "to_hwc",
    "to_uint",
]

logger = logging.getLogger(__name__)

RAW_DEVELOP: MappingProxyType[str, Any] = MappingProxyType(
    {
        "use_camera_wb": True,
        "no_auto_bright": True,
        "bright": 1.0,
        "output_bps": 16,
        "output_color": "sRGB",
        "gamma": (2.4, 12.92),
    }
)
"""The fixed rawpy ``postprocess`` parameters used for every RAW file (default demosaic, highlight clip),
so that both photos of a pair are developed identically. ``output_color`` names a ``rawpy.ColorSpace``."""

_SAVE_FORMATS: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
    ".heic": "heif",
    ".heif": "heif",
}
_ALPHA_FORMATS = frozenset({"png", "tiff", "webp", "heif"})
_PIL_MODES = {3: "RGB", 4: "RGBA"}  # by channel count
_KIND_NAMES = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "webp": "WebP", "heif": "HEIF", "raw": "RAW"}
_NOT_AN_IMAGE = "cannot read image (not a JPEG/PNG/TIFF/WebP/HEIC/RAW file or corrupt)"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_MAX_EXIF = 65533 - 6  # one APP1 segment, minus the "Exif\0\0" prefix
_JPEG_MAX_XMP = 65533 - len(JPEG_XMP_PREFIX)  # one APP1 segment (extended XMP is not written)
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Photo:
    r"""A decoded photo in dzsr's image convention, with its metadata.

    Attributes:
        path: the file it was read from.
        pixels: float32 tensor (3, H, W), RGB, values in [0, 1], sRGB-encoded, upright (the EXIF or
            HEIF orientation, or the RAW flip, applied exactly once).
        bit_depth: 8 or 16: the precision of the source (RAW, 16-bit PNG/TIFF, float TIFF and 10/12-bit
            HEIF are 16) and of the output written for it.
        kind: ``'jpeg'``, ``'png'``, ``'tiff'``, ``'webp'``, ``'heif'`` or ``'raw'`` (from the content).
        info: capture metadata; ``info.orientation`` is the value stored in the file.
        exif: the source's EXIF block, TIFF-structured, no ``Exif\0\0`` prefix, as stored (its
            Orientation still describes the stored pixels: write it out through
            :func:`dzcli.io.exif.update_exif`); rebuilt from the capture fields for RAW formats that are
            not TIFF-based. ``None`` when there is none.
        icc: the embedded ICC profile, or ``None``.
        xmp: the XMP packet as stored (its dimensions describe the source: write it out through
            :func:`dzcli.io.exif.update_xmp`), or ``None``; never read from RAW files.
        alpha: float32 tensor (1, H, W), values in [0, 1], upright like ``pixels``, at the same bit depth;
            straight (``pixels`` are not premultiplied). ``None`` when the source has no alpha channel.
    """

    path: Path
    pixels: torch.Tensor = field(repr=False)
    bit_depth: int
    kind: str
    info: CaptureInfo
    exif: bytes | None = field(default=None, repr=False)
    icc: bytes | None = field(default=None, repr=False)
    xmp: bytes | None = field(default=None, repr=False)
    alpha: torch.Tensor | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels of the upright image."""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


def holds_alpha(suffix: str) -> bool:
    """Whether :func:`save_image` writes alpha into files with this suffix (``".png"``, case-insensitive):
    PNG, TIFF, WebP and HEIC do; JPEG (and anything :func:`save_image` cannot write) does not."""
    return _SAVE_FORMATS.get(suffix.lower()) in _ALPHA_FORMATS


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image dzsr reads, by suffix (case-insensitive); hidden files are not."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


# --------------------------------------------------------------------------------------------- conversion


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """Convert numpy (H, W, C) or (H, W) to a float32 tensor (C, H, W), a new array (never shares memory).

    uint8 is divided by 255 and uint16 by 65535 (bit depth by dtype); float arrays are cast to float32
    unchanged (no clipping). The channel order is kept: pass RGB.
    """
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an (H, W, C) or (H, W) array, got shape {a.shape}")
    if a.dtype == np.uint8:
        scale: np.float32 | None = np.float32(255)
    elif a.dtype == np.uint16:
        scale = np.float32(65535)
    elif np.issubdtype(a.dtype, np.floating):
        scale = None
    else:
        raise ValueError(f"unsupported pixel dtype {a.dtype} (expected uint8, uint16 or float)")
    h, w, c = a.shape
    out = np.empty((c, h, w), dtype=np.float32)
    for k in range(c):
        if scale is None:
            out[k] = a[:, :, k]
        else:
            np.divide(a[:, :, k], scale, out=out[k])
    return torch.from_numpy(out)


def as_image(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """An RGB image given as a tensor ``(3, H, W)`` in [0, 1] or a numpy array ``(H, W, 3)`` (uint8, uint16
    or float in [0, 1]; RGB, not OpenCV's BGR), as a float32 CPU tensor ``(3, H, W)``.

    Raises:
        ValueError: not a 3-channel image.
    """
    t = from_hwc(x) if isinstance(x, np.ndarray) else x.detach().to("cpu", torch.float32)
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(
            f"expected an RGB image, (3, H, W) tensor or (H, W, 3) array; got shape {tuple(x.shape)}"
        )
    return t


def to_hwc(t: torch.Tensor) -> np.ndarray:
    """Convert a float tensor (C, H, W) to float32 numpy (H, W, C), C-contiguous, values unchanged.

    May share memory with ``t`` when that needs no copy (a CPU float32 tensor with C == 1).
    """
    if t.ndim != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


def to_uint(t: torch.Tensor, bit_depth: int) -> np.ndarray:
    """Convert a float tensor in [0, 1] to an unsigned integer numpy image, rounded to the nearest level.

    Args:
        t: (3, H, W) RGB, or (1, H, W) / (H, W) gray; float, values clamped to [0, 1], NaN → 0.
        bit_depth: 8 (uint8, 0..255) or 16 (uint16, 0..65535).

    Returns:
        (H, W, 3) RGB or (H, W) gray array, C-contiguous. Half-way values round up (0.5/255 → 1).
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if not (t.ndim == 2 or (t.ndim == 3 and t.shape[0] == 3)):
        raise ValueError(f"expected a (3, H, W), (1, H, W) or (H, W) tensor, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    levels = 255.0 if bit_depth == 8 else 65535.0
    x = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0)  # a new tensor: safe to modify
    x.clamp_(0.0, 1.0).mul_(levels).add_(0.5).floor_()
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if x.ndim == 3:
        x = x.permute(1, 2, 0)
    return np.ascontiguousarray(x.numpy().astype(dtype))


# --------------------------------------------------------------------------------------------- loading


def load_photo(path: str | os.PathLike[str], *, max_megapixels: float | None = None) -> Photo:
    """Read a photo file into dzsr's image convention.

    Args:
        path: JPEG, PNG, TIFF, WebP, HEIC/HEIF or camera RAW (:data:`RAW_SUFFIXES`) file. The decoder is
            chosen from the content for non-RAW suffixes (a HEIC named ``.jpg`` still loads).
        max_megapixels: refuse images larger than this many megapixels, checked from the header before
            anything is decoded. ``None``: no limit.

    Returns:
        The :class:`Photo`: pixels float32 (3, H, W) RGB in [0, 1], upright; alpha (1, H, W) when the
        source has one (RGBA/LA/transparent PNG, RGBA/gray+alpha TIFF, WebP, HEIC); EXIF, XMP, ICC.

    Raises:
        InputError: missing file, directory, empty, truncated or corrupt file, unsupported suffix.
        ResourceError: the image is larger than ``max_megapixels``.
    """
    path = Path(path)
    _check_input_file(path)
    if path.suffix.lower() in RAW_SUFFIXES:
        return _load_raw(path, max_megapixels)
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        raise InputError(f"{path}: cannot open file ({exc.strerror or exc})") from exc
    kind = _sniff(head)
    if kind is None:
        raise InputError(f"{path}: {_NOT_AN_IMAGE}")
    if kind == "heif":
        return _load_heif(path, max_megapixels)
    return _load_opencv(path, kind, max_megapixels)


def _check_input_file(path: Path) -> None:
    check_is_file(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        shown = suffix or "(no suffix)"
        raise InputError(
            f"{path}: unsupported file type '{shown}' (expected JPEG, PNG, TIFF, WebP, HEIC or camera RAW)"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")


def _sniff(head: bytes) -> str | None:
    """Image kind from the first bytes of a file, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # classic TIFF, BigTIFF
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "heif"
    return None


def _check_megapixels(path: Path, width: int, height: int, limit: float | None) -> None:
    if limit is None:
        return
    mp = width * height / 1e6
    if mp > limit:
        raise ResourceError(
            f"{path}: image is {mp:.1f} MP, larger than the {limit:.1f} MP limit (--max-megapixels)"
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextlib.contextmanager
def _pil_no_bomb_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit (dzsr has its own: ``max_megapixels``)."""
    from PIL import Image

    with _PIL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


class _Header(NamedTuple):
    """What is read from a file's header before its pixels are decoded."""

    width: int
    height: int
    icc: bytes | None
    alpha: str | None  # None, "straight" or "premultiplied"


def _pil_header(path: Path) -> _Header:
    """Size, ICC profile and alpha of a JPEG/PNG/WebP header, without decoding pixels."""
    from PIL import Image

    def read() -> _Header:
        with Image.open(path) as im:
            icc = im.info.get("icc_profile")
            alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            return _Header(im.size[0], im.size[1], bytes(icc) if icc else None, "straight" if alpha else None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return read()
        except Image.DecompressionBombError:
            with _pil_no_bomb_limit():
                return read()


def _tiff_header(path: Path) -> _Header:
    """Size, ICC profile and alpha of a TIFF's first page, without decoding pixels.

    Alpha is an RGB or gray page whose first extra sample is associated (premultiplied) or unassociated
    (straight) alpha; unspecified extra samples are not alpha.
    """
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages.first
        tag = page.tags.get(34675)
        icc = tag.value if tag is not None else None
        extra = tuple(int(e) for e in page.extrasamples)
        colour = {int(tifffile.PHOTOMETRIC.RGB): 3, int(tifffile.PHOTOMETRIC.MINISBLACK): 1}.get(
            int(page.photometric)
        )
        alpha = None
        if extra and colour is not None and page.samplesperpixel == colour + len(extra):
            alpha = {1: "premultiplied", 2: "straight"}.get(extra[0])
        return _Header(int(page.imagewidth), int(page.imagelength), bytes(icc) if icc else None, alpha)


def _load_opencv(path: Path, kind: str, max_megapixels: float | None) -> Photo:
    import cv2

    name = _KIND_NAMES[kind]
    try:
        header = _tiff_header(path) if kind == "tiff" else _pil_header(path)
    except Exception as exc:  # Pillow/tifffile raise many types on corrupt headers
        from PIL import UnidentifiedImageError

        reason = "not a valid file" if isinstance(exc, UnidentifiedImageError) else _one_line(exc)
        raise InputError(f"{path}: cannot read {name} header (corrupt or truncated file: {reason})") from exc
    _check_megapixels(path, header.width, header.height, max_megapixels)

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if kind == "tiff":
        _neutralise_tiff_orientation(data)
    premultiplied = header.alpha == "premultiplied"
    stored = _tiff_samples(path) if kind == "tiff" and header.alpha else None
    if stored is None:
        # IMREAD_UNCHANGED keeps alpha (and applies no orientation); otherwise alpha-less colour
        flags = (
            cv2.IMREAD_UNCHANGED
            if header.alpha
            else (cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
        )
        try:
            with c_stderr_to_log(logger, path):  # libjpeg/libpng/libtiff warnings about damaged files
                bgr = cv2.imdecode(data, flags)
        except cv2.error as exc:
            raise InputError(f"{path}: cannot decode {name} image (corrupt or truncated file)") from exc
        if bgr is None or bgr.size == 0:  # OpenCV signals failure by returning None, silently
            raise InputError(f"{path}: cannot decode {name} image (corrupt or truncated file)")
        stored = _from_bgr(bgr)
        # libtiff's RGBA interface, which OpenCV uses for 8-bit TIFFs, premultiplies the colour
        premultiplied |= kind == "tiff" and bgr.dtype == np.uint8
    rgba = _with_rgb(stored)

    if rgba.dtype == np.uint8:
        bit_depth = 8
    elif rgba.dtype == np.uint16:
        bit_depth = 16
    elif np.issubdtype(rgba.dtype, np.floating):
        bit_depth = 16
        rgba = np.clip(np.nan_to_num(rgba, nan=0.0), 0.0, 1.0)
    else:
        raise InputError(f"{path}: unsupported {name} sample type {rgba.dtype} (expected 8/16-bit or float)")

    info = read_capture_info(path)
    pixels, alpha = _planes(_apply_orientation(rgba, info.orientation), premultiplied=premultiplied)
    logger.debug(
        "%s: %s %dx%d %d-bit%s, orientation %d",
        path,
        name,
        header.width,
        header.height,
        bit_depth,
        " with alpha" if alpha is not None else "",
        info.orientation,
    )
    return Photo(
        path=path,
        pixels=pixels,
        bit_depth=bit_depth,
        kind=kind,
        info=info,
        exif=read_exif(path),
        icc=header.icc,
        xmp=read_xmp(path),
        alpha=alpha,
    )


def _tiff_samples(path: Path) -> np.ndarray | None:
    """The stored colour and alpha samples (H, W, 2 or 4) of a TIFF's first page, read exactly by tifffile.

    ``None`` when tifffile cannot decode them (LZW and JPEG need the optional imagecodecs package).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages.first
            a = page.asarray()
            if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                a = np.moveaxis(a, 0, -1)
            return a[:, :, : 4 if page.photometric == tifffile.PHOTOMETRIC.RGB else 2]
    except Exception as exc:  # a codec tifffile lacks, or damage that OpenCV then reports
        logger.debug("%s: tifffile cannot decode the pixels (%s); using OpenCV", path, _one_line(exc))
        return None


def _from_bgr(a: np.ndarray) -> np.ndarray:
    """RGB or RGBA channel order from OpenCV's BGR or BGRA; gray and gray+alpha unchanged."""
    if a.ndim == 3 and a.shape[2] == 3:
        return a[:, :, ::-1]
    if a.ndim == 3 and a.shape[2] == 4:
        return a[:, :, [2, 1, 0, 3]]
    return a


def _with_rgb(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W, 4) RGBA from gray (H, W) or (H, W, 1), gray+alpha, RGB or RGBA samples."""
    if a.ndim == 2:
        a = a[:, :, None]
    channels = a.shape[2]
    if channels <= 2:
        return a[:, :, [0, 0, 0, 1][: channels + 2]]
    return a[:, :, :4]


def _planes(
    a: np.ndarray, *, premultiplied: bool, levels: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pixels (3, H, W) and straight alpha (1, H, W) or ``None``, float32 in [0, 1], from (H, W, 3 or 4).

    Integer samples are divided by ``levels`` (by their dtype's maximum when ``None``); premultiplied
    colour is divided by alpha (0 where alpha is 0).
    """

    def tensor(x: np.ndarray) -> torch.Tensor:
        if levels is None:
            return from_hwc(x)
        return torch.from_numpy(
            np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32) / np.float32(levels)
        )

    pixels = tensor(a[:, :, :3])
    if a.shape[2] < 4:
        return pixels, None
    alpha = tensor(a[:, :, 3:])
    if premultiplied:
        pixels = torch.where(alpha > 0, pixels / alpha.clamp_min(1e-12), 0.0).clamp_(0.0, 1.0)
    return pixels, alpha


def _neutralise_tiff_orientation(buf: np.ndarray) -> None:
    """Set the Orientation tag of a TIFF's first IFD to 1, in place in the in-memory file.

    OpenCV's TIFF decoder applies tag 274 itself, whatever ``IMREAD_IGNORE_ORIENTATION`` says; with the
    tag neutralised, OpenCV returns the stored pixels and the orientation is applied once, here, as for
    every other format. Malformed structures are left alone (the decoder reports them).
    """
    head = buf[:16].tobytes()
    endian = "<" if head[:2] == b"II" else ">"
    if len(head) < 16:
        return
    (magic,) = struct.unpack(endian + "H", head[2:4])
    if magic == 42:  # classic TIFF
        (ifd,) = struct.unpack(endian + "I", head[4:8])
        count_fmt, count_size, entry_size, value_at = "H", 2, 12, 8
    elif magic == 43:  # BigTIFF
        (ifd,) = struct.unpack(endian + "Q", head[8:16])
        count_fmt, count_size, entry_size, value_at = "Q", 8, 20, 12
    else:
        return
    if ifd + count_size > buf.size:
        return
    (count,) = struct.unpack(endian + count_fmt, buf[ifd : ifd + count_size].tobytes())
    for i in range(min(count, (buf.size - ifd - count_size) // entry_size)):
        entry = ifd + count_size + i * entry_size
        tag, typ = struct.unpack(endian + "HH", buf[entry : entry + 4].tobytes())
        if tag == 0x0112 and typ == 3:  # SHORT
            buf[entry + value_at : entry + value_at + 2] = np.frombuffer(
                struct.pack(endian + "H", 1), np.uint8
            )
            return
        if tag > 0x0112:  # entries are sorted by tag
            return


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H, W, C) upright according to the EXIF Orientation (1..8); returns a view."""
    if orientation == 2:  # mirrored horizontally
        return a[:, ::-1]
    if orientation == 3:  # rotated 180
        return a[::-1, ::-1]
    if orientation == 4:  # mirrored vertically
        return a[::-1]
    if orientation == 5:  # transposed (mirrored about the main diagonal)
        return a.swapaxes(0, 1)
    if orientation == 6:  # display needs a 90 degree clockwise rotation
        return a.swapaxes(0, 1)[:, ::-1]
    if orientation == 7:  # transversed (anti-diagonal mirror)
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:  # display needs a 90 degree counter-clockwise rotation
        return a.swapaxes(0, 1)[::-1]
    return a


def _load_heif(path: Path, max_megapixels: float | None) -> Photo:
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=False, hdr_to_16bit=False)
        img = heif[heif.primary_index]
        width, height = img.size
    except Exception as exc:  # pillow-heif: ValueError, EOFError, SyntaxError, RuntimeError, OSError
        raise InputError(f"{path}: cannot read HEIF file (corrupt or unsupported: {_one_line(exc)})") from exc
    _check_megapixels(path, width, height, max_megapixels)
    try:
        arr = np.asarray(img)  # decodes; libheif applies the irot/imir transforms here
    except Exception as exc:
        raise InputError(
            f"{path}: cannot decode HEIF image (corrupt or truncated: {_one_line(exc)})"
        ) from exc
    bits_info = img.info.get("bit_depth")
    bits = bits_info if isinstance(bits_info, int) and bits_info > 0 else 8
    bit_depth = 16 if arr.dtype == np.uint16 else 8
    pixels, alpha = _planes(
        _with_rgb(arr),
        premultiplied=bool(getattr(img, "premultiplied_alpha", False)),
        levels=2**bits - 1 if bit_depth == 16 and 8 < bits < 16 else None,
    )
    icc_info = img.info.get("icc_profile")
    icc = bytes(icc_info) if isinstance(icc_info, (bytes, bytearray)) and icc_info else None
    info = read_capture_info(path)
    logger.debug(
        "%s: HEIF %dx%d %d-bit (orientation %d applied by libheif)",
        path,
        width,
        height,
        bits,
        info.orientation,
    )
    return Photo(
        path=path,
        pixels=pixels,
        bit_depth=bit_depth,
        kind="heif",
        info=info,
        exif=read_exif(path),
        icc=icc,
        xmp=read_xmp(path),
        alpha=alpha,
    )


def _raw_params() -> dict[str, Any]:
    import rawpy

    params = dict(RAW_DEVELOP)
    params["output_color"] = getattr(rawpy.ColorSpace, RAW_DEVELOP["output_color"])
    return params


def _load_raw(path: Path, max_megapixels: float | None) -> Photo:
    import rawpy

    try:
        with c_stderr_to_log(logger, path):  # LibRaw prints its warnings
            raw = rawpy.imread(str(path))
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read RAW file (unsupported or corrupt: {_one_line(exc)})") from exc
    with raw:
        sizes = raw.sizes
        _check_megapixels(path, int(sizes.width), int(sizes.height), max_megapixels)
        try:
            with c_stderr_to_log(logger, path):
                rgb = raw.postprocess(**_raw_params())  # (H, W, 3) uint16, raw flip applied by LibRaw
        except (rawpy.LibRawError, ValueError) as exc:
            raise InputError(
                f"{path}: cannot develop RAW file (corrupt or truncated: {_one_line(exc)})"
            ) from exc
    info = read_capture_info(path)
    exif = read_exif(path)
    if exif is None and info != CaptureInfo():
        exif = make_exif(info)
    logger.debug(
        "%s: RAW developed to %dx%d (flip %d applied by LibRaw)", path, rgb.shape[1], rgb.shape[0], sizes.flip
    )
    return Photo(path=path, pixels=from_hwc(rgb), bit_depth=16, kind="raw", info=info, exif=exif, icc=None)


# --------------------------------------------------------------------------------------------- saving


def save_image(
    path: str | os.PathLike[str],
    pixels: torch.Tensor,
    *,
    bit_depth: int = 8,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
) -> None:
    r"""Write an image atomically, with its EXIF block, XMP packet, ICC profile and alpha embedded.

    The format comes from the suffix: ``.png`` and ``.tif``/``.tiff`` (8 or 16-bit), ``.jpg``/``.jpeg``
    (8-bit, 4:4:4 chroma), ``.webp`` (8-bit, lossy), ``.heic``/``.heif`` (8-bit; 16-bit pixels are stored
    as 10-bit). The file is written to a hidden temporary file in the same folder, fsynced, then renamed
    over ``path``: on any error no partial output exists and an existing file keeps its content. Parent
    folders are created.

    Args:
        path: output file.
        pixels: (3, H, W) RGB or (1, H, W) / (H, W) gray, float in [0, 1] (clamped, rounded to the
            nearest integer level).
        bit_depth: 8 or 16.
        exif: EXIF block (bare TIFF structure or with the ``Exif\0\0`` prefix); written as given (use
            :func:`dzcli.io.exif.update_exif` first for upright, resized outputs).
        icc: ICC profile to embed.
        xmp: XMP packet, written as given (use :func:`dzcli.io.exif.update_xmp` first for resized
            outputs); a JPEG holds at most ~64 KB of it (a larger packet is not written, with a warning).
        alpha: (1, H, W) or (H, W) float in [0, 1], straight (not premultiplied), same H and W as
            ``pixels``, written at ``bit_depth`` into PNG, TIFF, WebP and HEIC; JPEG holds no alpha and
            gets the RGB pixels only (check :func:`holds_alpha` to tell the user).
        quality: 1..100, for JPEG, WebP and HEIC (WebP alpha is lossless).

    Raises:
        ValueError: unsupported suffix, bit depth the format cannot hold (16-bit JPEG/WebP), bad pixels
            or alpha shape, quality out of range, ``exif`` that is not an EXIF block.
        OSError: the file cannot be written (permissions, disk full).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = _SAVE_FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(
            f"{path}: cannot write '{suffix or path.name}' files (use .png, .jpg, .tif, .webp or .heic)"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"{path}: bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt in ("jpeg", "webp"):
        raise ValueError(
            f"{path}: {_KIND_NAMES[fmt]} holds only 8-bit pixels; use .png or .tif for 16-bit output"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"{path}: quality must be in 1..100, got {quality}")
    payload = None
    if exif:
        payload = exif_payload(exif)
        if payload is None:
            raise ValueError(f"{path}: the exif argument is not an EXIF block (no TIFF header)")
    if alpha is not None and not (
        alpha.ndim in (2, 3) and alpha.shape[:-2] in ((), (1,)) and alpha.shape[-2:] == pixels.shape[-2:]
    ):
        raise ValueError(
            f"{path}: alpha must be (1, H, W) or (H, W) with the pixels' H and W; "
            f"got shape {tuple(alpha.shape)} for pixels {tuple(pixels.shape)}"
        )
    arr = to_uint(pixels, bit_depth)
    if alpha is not None and fmt in _ALPHA_FORMATS:
        rgb = arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2)
        arr = np.concatenate([rgb, to_uint(alpha, bit_depth)[:, :, None]], axis=2)
    writer = _WRITERS[fmt]
    write_atomic(path, lambda fh: writer(fh, arr, payload, icc or None, xmp or None, quality))
    logger.debug(
        "%s: wrote %s %dx%d %d-bit (exif %s, xmp %s, icc %s, alpha %s)",
        path,
        _KIND_NAMES[fmt],
        arr.shape[1],
        arr.shape[0],
        bit_depth,
        payload is not None,
        bool(xmp),
        bool(icc),
        "not held" if alpha is not None and fmt not in _ALPHA_FORMATS else alpha is not None,
    )


def _pil_image(arr: np.ndarray) -> Any:
    """A Pillow image of (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA uint8 samples."""
    from PIL import Image

    return Image.fromarray(arr, mode="L" if arr.ndim == 2 else _PIL_MODES[arr.shape[2]])


def _write_jpeg(
    fh: BinaryIO, arr: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, quality: int
) -> None:
    kwargs: dict[str, Any] = {"quality": quality, "subsampling": 0}
    exif = _fit_jpeg_exif(exif)
    if exif:
        kwargs["exif"] = b"Exif\x00\x00" + exif
    if icc:
        kwargs["icc_profile"] = icc
    if xmp and len(xmp) > _JPEG_MAX_XMP:
        logger.warning("XMP packet is %d bytes, too large for JPEG: not written", len(xmp))
        xmp = None
    buf = io.BytesIO()
    _pil_image(arr).save(buf, format="JPEG", **kwargs)
    data = buf.getvalue()
    fh.write(_insert_jpeg_app1(data, JPEG_XMP_PREFIX + xmp) if xmp else data)


def _insert_jpeg_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` after SOI and the leading APP0/APP1 (JFIF, EXIF)."""
    pos = 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] in (0xE0, 0xE1):
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return jpeg[:pos] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[pos:]


def _fit_jpeg_exif(exif: bytes | None) -> bytes | None:
    """A JPEG holds at most ~64 KB of EXIF: drop the MakerNote, then the whole block, when it is larger."""
    if exif is None or len(exif) <= _JPEG_MAX_EXIF:
        return exif
    from PIL import Image

    try:
        ex = Image.Exif()
        ex.load(exif)
        ex.get_ifd(0x8769).pop(0x927C, None)
        smaller = ex.tobytes()[6:]
    except Exception as exc:  # garbled block: handled like one that stays too large
        logger.debug("EXIF block could not be shrunk (%s: %s)", type(exc).__name__, exc)
        smaller = exif
    if len(smaller) <= _JPEG_MAX_EXIF:
        logger.warning("EXIF block is %d bytes, too large for JPEG: MakerNote dropped", len(exif))
        return smaller
    logger.warning("EXIF block is %d bytes, too large for JPEG: not written", len(exif))
    return None


def _write_webp(
    fh: BinaryIO, arr: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, quality: int
) -> None:
    """Lossy WebP; libwebp compresses alpha losslessly (alpha_quality 100)."""
    kwargs: dict[str, Any] = {"quality": quality, "method": 4}
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = icc
    if xmp:
        kwargs["xmp"] = xmp
    im = _pil_image(arr)
    (im.convert("RGB") if im.mode == "L" else im).save(fh, format="WEBP", **kwargs)


def _write_heif(
    fh: BinaryIO, arr: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, quality: int
) -> None:
    import pillow_heif

    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    mode = _PIL_MODES[arr.shape[2]] + (";16" if arr.dtype == np.uint16 else "")  # 16-bit is stored as 10-bit
    heif = pillow_heif.from_bytes(mode=mode, size=(arr.shape[1], arr.shape[0]), data=arr.tobytes())
    kwargs: dict[str, Any] = {"quality": quality, "chroma": 444}
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = icc
    if xmp:
        kwargs["xmp"] = xmp
    heif.save(fh, **kwargs)


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(ctype)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc)


def _write_png(
    fh: BinaryIO, arr: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, quality: int
) -> None:
    """OpenCV encodes the pixels (8/16-bit, RGB(A) or gray); iCCP, eXIf and the XMP iTXt chunk are
    inserted after IHDR."""
    import cv2

    img = np.ascontiguousarray(_from_bgr(arr)) if arr.ndim == 3 else arr  # RGB(A) <-> BGR(A) is symmetric
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("OpenCV failed to encode the PNG image")
    data = memoryview(buf.reshape(-1).data)
    if bytes(data[:8]) != _PNG_SIGNATURE or bytes(data[12:16]) != b"IHDR":
        raise RuntimeError("OpenCV produced a PNG stream without a leading IHDR chunk")
    ihdr_end = 8 + 12 + int.from_bytes(data[8:12], "big")
    extra: list[bytes] = []
    if icc:
        extra.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append(_png_chunk(b"eXIf", exif))
    if xmp:  # keyword, then no compression, no language tag, no translated keyword
        extra.append(_png_chunk(b"iTXt", PNG_XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + xmp))
    # Chunks ours replace (sRGB/gAMA/cHRM would contradict an ICC profile); OpenCV writes none today.
    replaced = {b"eXIf"} | ({b"iCCP", b"sRGB", b"gAMA", b"cHRM"} if icc else set())
    fh.write(data[:ihdr_end])
    for chunk in extra:
        fh.write(chunk)
    pos = ihdr_end
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if bytes(data[pos + 4 : pos + 8]) not in replaced:
            fh.write(data[pos:end])
        pos = end


# IFD0 tags of an EXIF block written into a TIFF's own IFD0 (the rest of IFD0 describes our pixels).
_TIFF_IFD0_STRINGS = {
    0x010E: "ImageDescription",
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x0132: "DateTime",
    0x013B: "Artist",
    0x8298: "Copyright",
}
# Private tag numbers tifffile writes as placeholders, then renamed to ExifIFD / GPSInfo (which tifffile
# refuses to write). Each sorts next to the real number, so IFD0 stays sorted after the rename.
_EXIF_PLACEHOLDER, _GPS_PLACEHOLDER = 34666, 34854


def _write_tiff(
    fh: BinaryIO, arr: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, quality: int
) -> None:
    """Write a TIFF: tifffile writes the pixels (zlib, horizontal predictor, alpha as unassociated extra
    sample) and IFD0 metadata (XMP as tag 700).

    The Exif and GPS sub-IFDs, which tifffile cannot write, are appended after it and linked from IFD0.
    """
    import tifffile

    ifd0: dict[int, Any] = {}
    subifds: dict[int, dict[int, Any]] = {}
    if exif:
        from PIL import Image

        ex = Image.Exif()
        ex.load(exif)
        ifd0 = dict(ex.items())
        for tag in (0x8769, 0x8825):
            if tag in ex:
                sub = dict(ex.get_ifd(tag))
                if tag == 0x8769:
                    sub.pop(0xA005, None)
                    interop = ex.get_ifd(0xA005)
                    if interop:
                        sub[0xA005] = dict(interop)
                if sub:
                    subifds[tag] = sub
    extratags: list[tuple[int, str, int, Any, bool]] = []
    for tag, _name in sorted(_TIFF_IFD0_STRINGS.items()):
        value = ifd0.get(tag)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str) and value.strip("\x00 "):
            extratags.append((tag, "s", 0, value.strip("\x00").encode("utf-8"), True))
    orientation = ifd0.get(0x0112)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        extratags.append((0x0112, "H", 1, orientation, True))
    if xmp:
        extratags.append((700, "B", len(xmp), xmp, True))
    if 0x8769 in subifds:
        extratags.append((_EXIF_PLACEHOLDER, "I", 1, 0, True))
    if 0x8825 in subifds:
        extratags.append((_GPS_PLACEHOLDER, "I", 1, 0, True))
    resolution: tuple[float, float] | None = None
    xres, yres, unit = ifd0.get(0x011A), ifd0.get(0x011B), ifd0.get(0x0128)
    try:
        if xres is not None and yres is not None and float(xres) > 0 and float(yres) > 0:
            resolution = (float(xres), float(yres))
    except (TypeError, ValueError, ZeroDivisionError):
        resolution = None

    start = fh.tell()
    with tifffile.TiffWriter(fh, byteorder="<", bigtiff=False) as tw:
        tw.write(
            arr,
            photometric="rgb" if arr.ndim == 3 else "minisblack",
            extrasamples=("unassalpha",) if arr.ndim == 3 and arr.shape[2] == 4 else None,
            compression="zlib",
            predictor=True,
            metadata=None,
            software=False,
            iccprofile=icc or None,
            resolution=resolution,
            resolutionunit=unit if resolution is not None and unit in (1, 2, 3) else None,
            extratags=extratags,
        )
    if subifds:
        _link_tiff_subifds(fh, start, subifds)


def _link_tiff_subifds(fh: BinaryIO, start: int, subifds: dict[int, dict[int, Any]]) -> None:
    """Append the Exif/GPS sub-IFDs to a little-endian classic TIFF and point IFD0's placeholders at them."""
    from PIL import TiffImagePlugin

    fh.seek(start)
    header = fh.read(8)
    if header[:4] != b"II*\x00":
        raise RuntimeError("tifffile did not write a little-endian classic TIFF")
    ifd0 = start + struct.unpack("<I", header[4:8])[0]
    fh.seek(ifd0)
    (count,) = struct.unpack("<H", fh.read(2))
    entries = fh.read(12 * count)
    positions = {}
    for i in range(count):
        (tag,) = struct.unpack_from("<H", entries, 12 * i)
        positions[tag] = ifd0 + 2 + 12 * i
    for tag, placeholder in ((0x8769, _EXIF_PLACEHOLDER), (0x8825, _GPS_PLACEHOLDER)):
        if tag not in subifds:
            continue
        if placeholder not in positions:
            raise RuntimeError(f"tifffile did not write the placeholder tag {placeholder}")
        end = fh.seek(0, os.SEEK_END)
        if (end - start) % 2:
            fh.write(b"\x00")
            end += 1
        ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=b"II*\x00\x08\x00\x00\x00", group=tag)
        for key, value in subifds[tag].items():
            ifd[key] = value
        fh.write(ifd.tobytes(end - start))
        fh.seek(positions[placeholder])
        fh.write(struct.pack("<HHII", tag, 4, 1, end - start))  # type LONG, count 1, offset
    fh.seek(0, os.SEEK_END)


_WRITERS: dict[str, Callable[[BinaryIO, np.ndarray, bytes | None, bytes | None, bytes | None, int], None]] = {
    "png": _write_png,
    "jpeg": _write_jpeg,
    "tiff": _write_tiff,
    "webp": _write_webp,
    "heif": _write_heif,
}
