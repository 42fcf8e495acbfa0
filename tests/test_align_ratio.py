"""Zoom ratio from EXIF: 35 mm equivalents, same body, focal plane, crop table, digital zoom, override."""

from __future__ import annotations

import math

import pytest

from dzcli.align.ratio import RatioEstimate, crop_factor_from_focal_plane, crop_factor_from_table, exif_ratio
from dzcli.errors import ConfigError
from dzcli.io.exif import CaptureInfo

PHONE = (4032, 3024)
CANON_350D = {
    "make": "Canon",
    "model": "Canon EOS 350D DIGITAL",
    "focal_plane_x_res": 3954.3,
    "focal_plane_y_res": 3958.8,
    "focal_plane_unit": 2,
    "exif_width": 3456,
    "exif_height": 2304,
}


def _ratio(uw: CaptureInfo, tele: CaptureInfo, **kw: object) -> RatioEstimate:
    return exif_ratio(uw, tele, uw_size=PHONE, tele_size=PHONE, **kw)  # type: ignore[arg-type]


def test_35mm_equivalents_win_over_raw_focal_lengths() -> None:
    uw = CaptureInfo(make="Apple", model="iPhone 11 Pro", focal_mm=4.25, focal_35mm=26)
    tele = CaptureInfo(make="Apple", model="iPhone 11 Pro", focal_mm=6.0, focal_35mm=52)
    assert _ratio(uw, tele) == RatioEstimate(2.0, "exif-35mm")  # the raw focal lengths would say 1.41


def test_same_body_without_35mm_uses_the_focal_length_ratio() -> None:
    uw = CaptureInfo(make="Canon", model="Canon EOS 70D", focal_mm=18.0)
    tele = CaptureInfo(make="Canon ", model="Canon EOS 70D  ", focal_mm=55.0)
    est = _ratio(uw, tele)
    assert est.source == "same-body" and est.value == pytest.approx(55 / 18)


def test_different_bodies_use_the_focal_plane_resolution() -> None:
    uw = CaptureInfo(focal_mm=18.0, **CANON_350D)  # type: ignore[arg-type]
    # A 36 x 24 mm sensor described in centimetres: 6000 px over 3.6 cm.
    tele = CaptureInfo(
        make="X",
        model="Full frame",
        focal_mm=100.0,
        focal_plane_x_res=6000 / 3.6,
        focal_plane_y_res=4000 / 2.4,
        focal_plane_unit=3,
        exif_width=6000,
        exif_height=4000,
    )
    crop_uw = 43.27 / math.hypot(3456 / 3954.3 * 25.4, 2304 / 3958.8 * 25.4)
    est = _ratio(uw, tele)
    assert est.source == "focal-plane"
    assert est.value == pytest.approx(100 * 43.27 / math.hypot(36, 24) / (18 * crop_uw))
    assert crop_uw == pytest.approx(1.62, abs=0.01)


def test_focal_plane_uses_the_image_size_when_exif_has_none() -> None:
    # Non-square focal-plane pixels, so that swapping width and height would change the answer.
    info = CaptureInfo(focal_mm=10.0, focal_plane_x_res=2000.0, focal_plane_y_res=1000.0, focal_plane_unit=3)
    landscape = crop_factor_from_focal_plane(info, (3000, 2000))
    assert landscape == pytest.approx(43.27 / math.hypot(15, 20))
    rotated = CaptureInfo(**{**info.__dict__, "orientation": 6})
    assert crop_factor_from_focal_plane(rotated, (2000, 3000)) == pytest.approx(landscape)
    assert crop_factor_from_focal_plane(rotated, (3000, 2000)) != pytest.approx(landscape)
    assert (
        crop_factor_from_focal_plane(CaptureInfo(focal_plane_x_res=2000.0, focal_plane_unit=1), (3000, 2000))
        is None
    )
    assert (
        crop_factor_from_focal_plane(CaptureInfo(focal_plane_x_res=20.0, focal_plane_unit=3), (3000, 2000))
        is None
    )


def test_a_resized_copy_of_a_known_body_falls_back_to_the_table() -> None:
    # Resized to 1920 px wide: ExifImageWidth follows, FocalPlaneXResolution does not (crop would be 2.9).
    resized = {**CANON_350D, "exif_width": 1920, "exif_height": 1280}
    uw = CaptureInfo(focal_mm=20.0, **resized)  # type: ignore[arg-type]
    tele = CaptureInfo(make="NIKON CORPORATION", model="NIKON D800", focal_mm=80.0, focal_35mm=80)
    est = _ratio(uw, tele)
    assert est.source == "crop-table" and est.value == pytest.approx(80 / (20 * 1.6))


def test_crop_table_for_bodies_without_focal_plane_tags() -> None:
    uw = CaptureInfo(make="OLYMPUS IMAGING CORP.", model="E-M1", focal_mm=12.0)
    tele = CaptureInfo(make="Canon", model="Canon EOS 70D", focal_mm=50.0)
    est = _ratio(uw, tele)
    assert est.source == "crop-table" and est.value == pytest.approx(50 * 1.6 / (12 * 2.0))
    # A phone's own 35 mm record combines with a table body.
    phone = CaptureInfo(make="Apple", model="iPhone 11 Pro", focal_mm=4.25, focal_35mm=26)
    assert _ratio(phone, tele) == RatioEstimate(pytest.approx(80 / 26), "crop-table")


@pytest.mark.parametrize(
    ("make", "model", "crop"),
    [
        ("NIKON CORPORATION", "NIKON D7000", 1.5),
        ("NIKON CORPORATION", "NIKON D800E", 1.0),
        ("SONY", "ILCE-6400", 1.5),
        ("SONY", "ILCE-7RM4", 1.0),
        ("PENTAX Corporation", "PENTAX K10D", 1.5),
        ("RICOH IMAGING COMPANY, LTD.", "PENTAX K-1 Mark II", 1.0),
        ("FUJIFILM", "X-T3", 1.5),
        ("Panasonic", "DMC-GH4", 2.0),
        ("Canon", "Canon EOS 5D Mark III", 1.0),
        ("Canon", "Canon PowerShot G7 X", None),
        ("FUJIFILM", "X30", None),
        ("Apple", "iPhone 13", None),
    ],
)
def test_crop_table_only_knows_bodies_it_can_identify(make: str, model: str, crop: float | None) -> None:
    assert crop_factor_from_table(CaptureInfo(make=make, model=model)) == crop


def test_nothing_known_gives_none() -> None:
    uw = CaptureInfo(make="Motorola", model="XT1575", focal_mm=4.67)
    tele = CaptureInfo(make="Acme", model="Zoom 3000", focal_mm=12.0)
    assert _ratio(uw, tele) == RatioEstimate(None, "none")
    assert _ratio(CaptureInfo(), CaptureInfo()) == RatioEstimate(None, "none")
    # Same body but no focal lengths at all.
    assert _ratio(CaptureInfo(make="A", model="B"), CaptureInfo(make="A", model="B")) == RatioEstimate(
        None, "none"
    )


def test_digital_zoom_multiplies() -> None:
    uw = CaptureInfo(focal_35mm=26, digital_zoom=None)
    tele = CaptureInfo(focal_35mm=52, digital_zoom=1.5)
    assert _ratio(uw, tele).value == pytest.approx(3.0)
    assert _ratio(
        CaptureInfo(focal_35mm=26, digital_zoom=2.0), CaptureInfo(focal_35mm=52)
    ).value == pytest.approx(1.0)
    same = _ratio(
        CaptureInfo(make="A", model="B", focal_mm=10.0),
        CaptureInfo(make="A", model="B", focal_mm=30.0, digital_zoom=2.0),
    )
    assert same == RatioEstimate(pytest.approx(6.0), "same-body")


def test_user_ratio_overrides_everything() -> None:
    uw, tele = CaptureInfo(focal_35mm=26), CaptureInfo(focal_35mm=52)
    assert _ratio(uw, tele, user_zoom_ratio=3.1) == RatioEstimate(3.1, "user")
    assert _ratio(CaptureInfo(), CaptureInfo(), user_zoom_ratio=2.5) == RatioEstimate(2.5, "user")
    with pytest.raises(ConfigError, match="--ratio must be a positive number"):
        _ratio(uw, tele, user_zoom_ratio=0.0)
