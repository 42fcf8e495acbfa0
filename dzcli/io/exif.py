"""Capture metadata (EXIF) of a photo, normalised: padded strings stripped, 0 treated as missing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


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
