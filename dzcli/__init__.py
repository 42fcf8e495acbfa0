"""dzsr: dual-zoom reference-based super-resolution of real dual-camera captures.

The command line lives in :mod:`dzcli.cli`; the pipeline stages in :mod:`dzcli.pipeline`.
Image convention everywhere inside: ``torch.float32``, RGB, ``(C, H, W)`` or ``(B, C, H, W)``,
values in ``[0, 1]``, sRGB-encoded. Bit depth is decided by dtype, never by pixel values.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dzsr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
