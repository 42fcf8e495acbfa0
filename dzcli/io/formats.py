"""The file suffixes dzsr reads, shared by :mod:`dzcli.io.images` (decoding) and :mod:`dzcli.io.exif`
(where a RAW file's EXIF is completed from LibRaw), so that neither imports the other for them."""

from __future__ import annotations

RAW_SUFFIXES: frozenset[str] = frozenset(
    {".dng", ".nef", ".nrw", ".cr2", ".cr3", ".arw", ".raf", ".rw2", ".orf", ".pef", ".srw"}
)
"""Camera RAW file suffixes (lowercase, with the dot), decoded with rawpy/LibRaw."""

IMAGE_SUFFIXES: frozenset[str] = (
    frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"}) | RAW_SUFFIXES
)
"""Every suffix :func:`dzcli.io.images.load_photo` reads (lowercase, with the dot), RAW included."""
