"""dzsr: dual-zoom reference-based super-resolution of real dual-camera captures.

The command line lives in :mod:`dzcli.cli`; the pipeline stages in :mod:`dzcli.pipeline`.
Image convention everywhere inside: ``torch.float32``, RGB, ``(C, H, W)`` or ``(B, C, H, W)``,
values in ``[0, 1]``, sRGB-encoded. Bit depth is decided by dtype, never by pixel values.

The Python API (imported on first use, so that ``import dzcli`` stays light)::

    import dzcli

    model, info = dzcli.load_model()  # the bundled default, or a checkpoint path / bundled name
    uw, tele = dzcli.load_photo("uw.jpg"), dzcli.load_photo("tele.jpg")
    result = dzcli.zoom_photo(model, uw.pixels, tele.pixels)  # tensors (3, H, W) or numpy (H, W, 3) RGB
    dzcli.save_image("out.png", result.image)

- :func:`zoom_photo` → :class:`ZoomedPhoto`: the whole wide photo super-resolved with the tele as reference
  (or without it, saying why, when the tele is not found);
- :func:`align_capture` → :class:`AlignedCapture`: the tele registered, resampled onto the wide crop it
  covers and colour-matched (what ``dzsr prepare`` stores);
- :func:`load_model`, :func:`load_photo`, :func:`save_image`: models and files as the CLI reads and writes them.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("dzsr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

_API = {
    "AlignedCapture": "dzcli.align.capture",
    "align_capture": "dzcli.align.capture",
    "ZoomedPhoto": "dzcli.pipeline.zoom",
    "zoom_photo": "dzcli.pipeline.zoom",
    "load_model": "dzsr_models.bundled",
    "load_photo": "dzcli.io.images",
    "save_image": "dzcli.io.images",
}

__all__ = [
    "AlignedCapture",
    "ZoomedPhoto",
    "__version__",
    "align_capture",
    "load_model",
    "load_photo",
    "save_image",
    "zoom_photo",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'dzcli' has no attribute {name!r}")
