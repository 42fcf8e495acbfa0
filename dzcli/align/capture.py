"""One capture, from its files to an aligned pair: the path ``prepare``, ``zoom``, ``eval`` and the Python
API share.

- :func:`read_capture`: the photos read (EXIF orientation applied once) and the EXIF zoom ratios;
- :func:`register_capture` (:func:`register_photos` on arrays): the tele registered inside the uw, directly or,
  for a triple capture whose direct match is too weak, through its middle camera
  (:func:`dzcli.align.register.register_chained`);
- :func:`align_capture`: the tele registered inside the uw (:func:`dzcli.align.register.register`),
  resampled onto the grid of the uw crop under it at ``scale``× density
  (:func:`dzcli.align.register.align_pair`) and mapped to the uw's colours
  (:func:`dzcli.align.color.match_colors`).

Images follow the image convention (``(3, H, W)`` float32 RGB in [0, 1]); :func:`align_capture` also takes
numpy ``(H, W, 3)`` RGB arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from dzcli.align.color import ColorModel, match_colors
from dzcli.align.ratio import RatioEstimate, exif_ratio
from dzcli.align.register import Registration, align_pair, register, register_chained
from dzcli.data.pairs import Capture
from dzcli.errors import AlignmentError, TeleNotFoundError
from dzcli.io.images import Photo, as_image, load_photo

__all__ = [
    "AlignedCapture",
    "CapturePhotos",
    "CaptureRegistration",
    "align_capture",
    "read_capture",
    "register_capture",
    "register_photos",
]

log = logging.getLogger(__name__)

RATIO_WARNING = 0.05
"""Relative difference between the registered and the EXIF zoom ratio above which a warning is logged."""


@dataclass(frozen=True, eq=False)
class CapturePhotos:
    """The photos of a capture as read, and the zoom ratios their EXIF gives.

    Attributes:
        uw: the short-focus photo.
        tele: the long-focus photo.
        zoom_ratio: the EXIF (or ``--ratio``) estimate of the uw-to-tele zoom ratio (field of view).
        wide: the middle camera's photo of a triple capture, else None.
        wide_zoom_ratio: the EXIF estimate of the uw-to-wide zoom ratio (None without a wide).
    """

    uw: Photo
    tele: Photo
    zoom_ratio: RatioEstimate
    wide: Photo | None = None
    wide_zoom_ratio: RatioEstimate | None = None


def read_capture(
    cap: Capture, *, max_megapixels: float | None = None, zoom_ratio: float | None = None
) -> CapturePhotos:
    """Read a capture's photos (uw, tele and, for a triple capture, the wide) and their EXIF zoom ratios.

    Args:
        cap: the capture (its ``uw``, ``tele`` and optional ``wide`` files).
        max_megapixels: refuse larger photos.
        zoom_ratio: a uw-to-tele zoom ratio given by the user (overrides EXIF).

    Raises:
        InputError: a file is missing, unreadable or too large.
        ConfigError: ``zoom_ratio`` is not a positive number.
    """
    uw = load_photo(cap.uw, max_megapixels=max_megapixels)
    tele = load_photo(cap.tele, max_megapixels=max_megapixels)
    est = exif_ratio(uw.info, tele.info, uw_size=uw.size, tele_size=tele.size, user_zoom_ratio=zoom_ratio)
    if cap.wide is None:
        return CapturePhotos(uw=uw, tele=tele, zoom_ratio=est)
    wide = load_photo(cap.wide, max_megapixels=max_megapixels)
    wide_est = exif_ratio(uw.info, wide.info, uw_size=uw.size, tele_size=wide.size)
    return CapturePhotos(uw=uw, tele=tele, zoom_ratio=est, wide=wide, wide_zoom_ratio=wide_est)


@dataclass(frozen=True, eq=False)
class CaptureRegistration:
    """Where a capture's tele lies in its uw, and how it was found.

    Attributes:
        tele: the tele's registration in the uw (method ``features``, ``direct`` or ``chained``).
        wide: the wide's registration in the uw when the tele was found through it (``chained``), else None.
    """

    tele: Registration
    wide: Registration | None = None


def register_capture(cap: Capture, photos: CapturePhotos) -> CaptureRegistration:
    """Register a capture's tele inside its uw: directly, else through its wide (a triple capture).

    :func:`register_photos` on the capture's photos, named by their files.

    Raises:
        TeleNotFoundError: the tele is not found, directly nor through the wide (both reasons said).
        AlignmentError: the photos are given in the wrong order (a photo is not narrower than the one it is
            registered in).
    """
    return register_photos(
        photos.uw.pixels,
        photos.tele.pixels,
        None if photos.wide is None or cap.wide is None else photos.wide.pixels,
        zoom_ratio=photos.zoom_ratio.value,
        wide_zoom_ratio=None if photos.wide_zoom_ratio is None else photos.wide_zoom_ratio.value,
        uw_name=cap.uw.name,
        tele_name=cap.tele.name,
        wide_name=None if cap.wide is None else cap.wide.name,
    )


def register_photos(
    uw: Tensor,
    tele: Tensor,
    wide: Tensor | None = None,
    *,
    zoom_ratio: float | None = None,
    wide_zoom_ratio: float | None = None,
    uw_name: str = "uw",
    tele_name: str = "tele",
    wide_name: str | None = None,
) -> CaptureRegistration:
    """Register the tele inside the uw: directly, else, with a middle camera, through it.

    The direct registration comes first (:func:`dzcli.align.register.register`); when it does not find the
    tele and there is a wide, the wide is registered in the uw and the tele found through it
    (:func:`dzcli.align.register.register_chained`).

    Args:
        uw, tele, wide: ``(3, H, W)`` photos in [0, 1] (``wide`` None for a pair).
        zoom_ratio: the EXIF uw-to-tele zoom ratio, a hint.
        wide_zoom_ratio: the EXIF uw-to-wide zoom ratio, a hint.
        uw_name, tele_name, wide_name: how to call the photos in messages (their files).

    Raises:
        TeleNotFoundError: the tele is not found, directly nor through the wide (both reasons said).
        AlignmentError: the photos are given in the wrong order.
    """
    wide_name = wide_name or "wide"
    try:
        return CaptureRegistration(
            register(uw, tele, zoom_ratio_hint=zoom_ratio, uw_name=uw_name, tele_name=tele_name)
        )
    except TeleNotFoundError as exc:
        if wide is None:
            raise
        direct = exc
    log.info("%s: %s; looking for it through %s", uw_name, direct, wide_name)
    try:
        wide_reg = register(uw, wide, zoom_ratio_hint=wide_zoom_ratio, uw_name=uw_name, tele_name=wide_name)
    except AlignmentError as exc:  # named as register_chained names its failures
        chain = f"{tele_name} not found in {uw_name} through {wide_name}"
        raise type(exc)(f"{direct}; {chain}: {exc}") from exc
    try:
        tele_reg = register_chained(
            uw,
            wide,
            tele,
            zoom_ratio_hint=zoom_ratio,
            mid_registration=wide_reg,
            uw_name=uw_name,
            mid_name=wide_name,
            tele_name=tele_name,
        )
    except AlignmentError as exc:
        raise type(exc)(f"{direct}; {exc}") from exc
    return CaptureRegistration(tele_reg, wide_reg)


@dataclass(frozen=True, eq=False)
class AlignedCapture:
    """A tele registered inside its wide photo and resampled onto the grid of the wide crop it covers.

    Attributes:
        registration: where the tele lies in the uw.
        lr: ``(3, h, w)`` float32 in [0, 1], the uw inside ``box``.
        ref: ``(3, s·h, s·w)`` float32 in [0, 1], the tele on ``lr``'s grid at ``s``× density, in the uw's
            colours (pixel ``(i, j)`` shows uw point ``(x0 + (j + 0.5)/s - 0.5, y0 + (i + 0.5)/s - 0.5)``).
        mask: ``(1, s·h, s·w)`` float32 in {0, 1}, where the registration is valid.
        box: ``(x0, y0, w, h)`` of ``lr`` in uw pixels.
        scale: ``s``.
        valid_fraction: mean of ``mask``.
        flow: residual flow after the homography, in ``ref`` pixels: ``{"mean": ..., "p95": ...}``.
        colour: the fitted colour mapping (tele → uw).
    """

    registration: Registration
    lr: Tensor
    ref: Tensor
    mask: Tensor
    box: tuple[int, int, int, int]
    scale: int
    valid_fraction: float
    flow: dict[str, float]
    colour: ColorModel


def align_capture(
    uw: Tensor | np.ndarray,
    tele: Tensor | np.ndarray,
    *,
    scale: int = 2,
    zoom_ratio: float | None = None,
    registration: Registration | None = None,
    uw_name: str = "uw",
    tele_name: str = "tele",
) -> AlignedCapture:
    """Register the tele inside the uw, resample it onto the uw crop it covers at ``scale``×, match colours.

    Args:
        uw: the wide photo, ``(3, H, W)`` tensor in [0, 1] or ``(H, W, 3)`` RGB array (uint8, uint16, float).
        tele: the tele photo, likewise.
        scale: ``s``, reference pixels per uw pixel (the network's scale).
        zoom_ratio: the expected zoom ratio (from EXIF), a hint only.
        registration: a registration already made (then it is not repeated).
        uw_name: how to call the uw in messages (its file name).
        tele_name: how to call the tele in messages.

    Returns:
        The aligned capture.

    Raises:
        TeleNotFoundError: the tele is not found in the uw, or covers too little of it.
        AlignmentError: the photos are given in the wrong order (the tele is the wider one).
    """
    uw_t, tele_t = as_image(uw), as_image(tele)
    reg = registration or register(
        uw_t, tele_t, zoom_ratio_hint=zoom_ratio, uw_name=uw_name, tele_name=tele_name
    )
    if zoom_ratio is not None and abs(reg.zoom_ratio / zoom_ratio - 1) > RATIO_WARNING:
        log.warning(
            "%s: registered zoom ratio %.3f differs from EXIF %.3f", tele_name, reg.zoom_ratio, zoom_ratio
        )
    pair = align_pair(uw_t, tele_t, reg, scale=scale, uw_name=uw_name, tele_name=tele_name)
    try:
        ref, colour = match_colors(pair.hr, pair.lr, pair.mask)
    except TeleNotFoundError as exc:
        raise TeleNotFoundError(f"{tele_name} onto {uw_name}: {exc}") from exc
    return AlignedCapture(
        registration=reg,
        lr=pair.lr,
        ref=ref,
        mask=pair.mask,
        box=pair.box,
        scale=int(scale),
        valid_fraction=pair.valid_fraction,
        flow=pair.flow,
        colour=colour,
    )
