"""dzcli.io.exif: capture metadata read from files written with known tags, and EXIF blocks written back."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import piexif
import pytest
import torch
from PIL import ExifTags, Image

from dzcli.errors import InputError
from dzcli.io.exif import (
    CaptureInfo,
    capture_info_from_exif,
    exif_payload,
    make_exif,
    read_capture_info,
    read_exif,
    read_xmp,
    update_exif,
    update_xmp,
)
from dzcli.io.images import save_image

IFD1 = ExifTags.IFD.IFD1


def _pixels(h: int = 8, w: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _jpeg_with_piexif(path: Path, zeroth: dict[int, Any], exif: dict[int, Any], **extra: Any) -> Path:
    """A JPEG whose EXIF is written by piexif (independent of the code under test)."""
    block = piexif.dump(
        {
            "0th": zeroth,
            "Exif": exif,
            "GPS": extra.get("gps", {}),
            "1st": extra.get("first", {}),
            "thumbnail": extra.get("thumbnail"),
        }
    )
    Image.fromarray(_pixels()).save(path, format="JPEG", exif=block, quality=90)
    return path


PHONE_0TH = {
    piexif.ImageIFD.Make: b"Apple",
    piexif.ImageIFD.Model: b"iPhone 11 Pro",
    piexif.ImageIFD.Orientation: 3,
}
PHONE_EXIF = {
    piexif.ExifIFD.LensModel: b"iPhone 11 Pro back triple camera 6mm f/2",
    piexif.ExifIFD.FocalLength: (6, 1),
    piexif.ExifIFD.FocalLengthIn35mmFilm: 52,
    piexif.ExifIFD.DigitalZoomRatio: (3, 2),
    piexif.ExifIFD.DateTimeOriginal: b"2021:06:05 14:03:27",
    piexif.ExifIFD.SubSecTimeOriginal: b"045",
    piexif.ExifIFD.FocalPlaneXResolution: (39547, 10),
    piexif.ExifIFD.FocalPlaneYResolution: (39581, 10),
    piexif.ExifIFD.FocalPlaneResolutionUnit: 2,
    piexif.ExifIFD.PixelXDimension: 4032,
    piexif.ExifIFD.PixelYDimension: 3024,
}
PHONE_INFO = CaptureInfo(
    make="Apple",
    model="iPhone 11 Pro",
    lens="iPhone 11 Pro back triple camera 6mm f/2",
    focal_mm=6.0,
    focal_35mm=52.0,
    digital_zoom=1.5,
    time=datetime(2021, 6, 5, 14, 3, 27, 45000),
    orientation=3,
    focal_plane_x_res=3954.7,
    focal_plane_y_res=3958.1,
    focal_plane_unit=2,
    exif_width=4032,
    exif_height=3024,
)


def test_jpeg_with_all_fields(tmp_path: Path) -> None:
    path = _jpeg_with_piexif(tmp_path / "tele.jpg", PHONE_0TH, PHONE_EXIF)
    info = read_capture_info(path)
    assert info == PHONE_INFO
    assert info.camera == "iPhone 11 Pro" or info.camera == "Apple iPhone 11 Pro"


def test_missing_35mm_and_zero_focal_are_none(tmp_path: Path) -> None:
    exif = {k: v for k, v in PHONE_EXIF.items() if k != piexif.ExifIFD.FocalLengthIn35mmFilm}
    info = read_capture_info(_jpeg_with_piexif(tmp_path / "a.jpg", PHONE_0TH, exif))
    assert info.focal_35mm is None and info.focal_mm == 6.0

    exif = dict(PHONE_EXIF)
    exif[piexif.ExifIFD.FocalLength] = (0, 1)
    exif[piexif.ExifIFD.FocalLengthIn35mmFilm] = 0
    exif[piexif.ExifIFD.DigitalZoomRatio] = (0, 0)  # 0/0: garbled rational
    info = read_capture_info(_jpeg_with_piexif(tmp_path / "b.jpg", PHONE_0TH, exif))
    assert info.focal_mm is None and info.focal_35mm is None and info.digital_zoom is None
    assert info.make == "Apple"


def test_padded_strings_are_stripped(tmp_path: Path) -> None:
    zeroth = {
        piexif.ImageIFD.Make: b"OLYMPUS IMAGING CORP.  ",
        piexif.ImageIFD.Model: b"E-M1            \x00\x00",
    }
    exif = {piexif.ExifIFD.LensModel: b"   ", piexif.ExifIFD.FocalLength: (14, 1)}
    info = read_capture_info(_jpeg_with_piexif(tmp_path / "olympus.jpg", zeroth, exif))
    assert info.make == "OLYMPUS IMAGING CORP."
    assert info.model == "E-M1"
    assert info.lens is None
    assert info.camera == "OLYMPUS IMAGING CORP. E-M1"


def test_orientation_and_time_fallbacks(tmp_path: Path) -> None:
    zeroth = {
        piexif.ImageIFD.Make: b"X",
        piexif.ImageIFD.Orientation: 9,
        piexif.ImageIFD.DateTime: b"2020:02:03 04:05:06",
    }
    info = read_capture_info(_jpeg_with_piexif(tmp_path / "a.jpg", zeroth, {}))
    assert info.orientation == 1  # 9 is not an EXIF orientation
    assert info.time == datetime(2020, 2, 3, 4, 5, 6)  # no DateTimeOriginal: DateTime

    exif = {piexif.ExifIFD.DateTimeOriginal: b"0000:00:00 00:00:00"}
    info = read_capture_info(_jpeg_with_piexif(tmp_path / "b.jpg", {piexif.ImageIFD.Orientation: 6}, exif))
    assert info.time is None and info.orientation == 6


def test_no_or_garbled_exif_gives_empty_info(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    Image.fromarray(_pixels()).save(plain, format="JPEG")
    assert read_capture_info(plain) == CaptureInfo()
    assert read_exif(plain) is None

    garbled = tmp_path / "garbled.jpg"
    rng = np.random.default_rng(1)
    junk = b"MM\x00*" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    Image.fromarray(_pixels()).save(garbled, format="JPEG", exif=b"Exif\x00\x00" + junk)
    assert read_capture_info(garbled) == CaptureInfo()
    assert capture_info_from_exif(b"not exif at all") == CaptureInfo()
    assert capture_info_from_exif(b"") == CaptureInfo()


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere.jpg"):
        read_capture_info(tmp_path / "nothere.jpg")
    with pytest.raises(InputError, match="directory"):
        read_capture_info(tmp_path)
    with pytest.raises(InputError, match=r"nothere.png"):
        read_exif(tmp_path / "nothere.png")


def test_exifread_failure_falls_back_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import exifread

    path = _jpeg_with_piexif(tmp_path / "tele.jpg", PHONE_0TH, PHONE_EXIF)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("exifread failed")

    monkeypatch.setattr(exifread, "process_file", boom)
    assert read_capture_info(path) == PHONE_INFO


def test_make_exif_save_image_round_trip(tmp_path: Path) -> None:
    info = CaptureInfo(
        make="dzsr",
        model="TestPhone",
        lens="TestPhone back camera 4.25mm f/1.8",
        focal_mm=4.25,
        focal_35mm=26.0,
        digital_zoom=2.0,
        time=datetime(2026, 3, 1, 9, 0, 0, 300000),
        orientation=1,
        focal_plane_x_res=6014.3,
        focal_plane_y_res=6014.3,
        focal_plane_unit=3,
    )
    block = make_exif(info, width=12, height=8)
    assert block.startswith((b"II*\x00", b"MM\x00*"))
    assert capture_info_from_exif(block) == CaptureInfo(
        **{**info.__dict__, "exif_width": 12, "exif_height": 8}
    )
    for name in ("out.jpg", "out.png", "out.tif"):
        path = tmp_path / name
        save_image(path, torch.rand(3, 8, 12), exif=block)
        got = read_capture_info(path)
        assert got.focal_mm == 4.25 and got.focal_35mm == 26.0 and got.lens == info.lens, name
        assert got.time == info.time and got.exif_width == 12 and got.make == "dzsr", name


def test_make_exif_omits_none_fields() -> None:
    block = make_exif(CaptureInfo(make="OnlyMake"))
    ex = Image.Exif()
    ex.load(block)
    assert ex[0x010F] == "OnlyMake"
    assert 0x0110 not in ex and 0x8769 not in ex  # no Model, no Exif sub-IFD at all
    assert capture_info_from_exif(block) == CaptureInfo(make="OnlyMake")


def test_focal_length_is_a_rational() -> None:
    ex = Image.Exif()
    ex.load(make_exif(CaptureInfo(focal_mm=4.25)))
    from PIL.TiffImagePlugin import IFDRational

    value = ex.get_ifd(0x8769)[0x920A]
    assert isinstance(value, IFDRational) and (value.numerator, value.denominator) == (17, 4)


def test_update_exif_sets_orientation_size_and_drops_thumbnail(tmp_path: Path) -> None:
    thumb = tmp_path / "thumb.jpg"
    Image.fromarray(_pixels(16, 16)).save(thumb, format="JPEG")
    gps = {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((45, 1), (30, 1), (0, 1))}
    exif = dict(PHONE_EXIF)
    exif[piexif.ExifIFD.MakerNote] = b"Apple iOS\x00" + bytes(40)
    block = piexif.dump(
        {
            "0th": {**PHONE_0TH, piexif.ImageIFD.Orientation: 6},
            "Exif": exif,
            "GPS": gps,
            "1st": {piexif.ImageIFD.JPEGInterchangeFormat: 0, piexif.ImageIFD.JPEGInterchangeFormatLength: 0},
            "thumbnail": thumb.read_bytes(),
        }
    )
    src = Image.Exif()
    src.load(block)
    assert src.get_ifd(IFD1), "fixture must carry a thumbnail IFD"

    out = update_exif(block, width=640, height=480)
    assert exif_payload(out) == out
    ex = Image.Exif()
    ex.load(out)
    assert ex[0x0112] == 1
    sub = ex.get_ifd(0x8769)
    assert (sub[0xA002], sub[0xA003]) == (640, 480)
    assert sub[0x927C].startswith(b"Apple iOS")
    assert ex.get_ifd(IFD1) == {}
    assert ex.get_ifd(0x8825)[1] == "N"
    assert len(out) < len(block) - 500  # the thumbnail bytes are gone
    info = capture_info_from_exif(out)
    assert info.make == "Apple" and info.focal_35mm == 52.0 and info.time == PHONE_INFO.time


def test_update_exif_of_garbage_still_gives_a_block() -> None:
    out = update_exif(b"MM\x00*\x00\x00\x00\x08\xff\xff", width=10, height=20)
    info = capture_info_from_exif(out)
    assert (info.exif_width, info.exif_height, info.orientation) == (10, 20, 1)


def test_exif_payload_forms() -> None:
    bare = make_exif(CaptureInfo(make="A"))
    assert exif_payload(bare) == bare
    assert exif_payload(b"Exif\x00\x00" + bare) == bare
    assert exif_payload(b"\x00\x00\x00\x06Exif\x00\x00" + bare) == bare  # HEIF item form
    assert exif_payload(b"JFIF") is None and exif_payload(None) is None


def test_png_with_exif(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    block = piexif.dump({"0th": PHONE_0TH, "Exif": PHONE_EXIF})
    Image.fromarray(_pixels()).save(path, format="PNG", exif=block)
    assert read_capture_info(path) == PHONE_INFO
    assert capture_info_from_exif(read_exif(path) or b"") == PHONE_INFO


def test_png_exif_chunk_after_idat_is_found(tmp_path: Path) -> None:
    """eXIf placed after the image data (allowed by older writers) is still read."""
    import io

    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, format="PNG")
    data = buf.getvalue()
    block = make_exif(CaptureInfo(make="Late", focal_mm=7.0))
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + struct.pack(">I", zlib.crc32(b"eXIf" + block))
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "late.png"
    path.write_bytes(data[:iend] + chunk + data[iend:])
    assert read_exif(path) == block
    info = read_capture_info(path)
    assert info.make == "Late" and info.focal_mm == 7.0


def test_heic_exif_round_trip(tmp_path: Path) -> None:
    """Written by pillow-heif directly; read through the Pillow plugin (exifread cannot read HEIC)."""
    import pillow_heif

    block = piexif.dump({"0th": {**PHONE_0TH, piexif.ImageIFD.Orientation: 6}, "Exif": PHONE_EXIF})
    path = tmp_path / "IMG_0001.HEIC"
    heif = pillow_heif.from_bytes(mode="RGB", size=(12, 8), data=_pixels().tobytes())
    heif.save(path, quality=90, exif=block)
    info = read_capture_info(path)
    assert info == CaptureInfo(**{**PHONE_INFO.__dict__, "orientation": 6})
    raw = read_exif(path)
    assert raw is not None and capture_info_from_exif(raw).orientation == 6  # as stored


def test_tiff_ifd0_block_keeps_only_metadata(tmp_path: Path) -> None:
    """A TIFF's EXIF block carries make/model/orientation and moves IFD0 focal tags to the Exif IFD."""
    import tifffile

    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path,
        np.zeros((6, 5, 3), np.uint16),
        photometric="rgb",
        metadata=None,
        extratags=[
            (271, "s", 0, "Nikon", True),
            (272, "s", 0, "D800", True),
            (274, "H", 1, 8, True),
            (37386, "2I", 1, (14, 1), True),
            (41989, "H", 1, 14, True),
        ],
    )
    block = read_exif(path)
    assert block is not None
    ex = Image.Exif()
    ex.load(block)
    assert 256 not in ex and 273 not in ex and 258 not in ex  # no width, strip offsets, bits per sample
    assert ex[0x0112] == 8
    assert float(ex.get_ifd(0x8769)[37386]) == 14.0
    assert read_capture_info(path) == CaptureInfo(
        make="Nikon", model="D800", focal_mm=14.0, focal_35mm=14.0, orientation=8
    )


def test_update_exif_drops_tags_describing_the_source_pixels() -> None:
    ex = Image.Exif()
    ex.load(make_exif(CaptureInfo(make="Nikon", focal_mm=14.0)))
    stale = {256: 6, 257: 5, 258: (8, 8, 8), 259: 1, 262: 2, 273: 8, 277: 3, 278: 5, 279: 90, 284: 1}
    ex.update({**stale, 0x0131: "tifffile.py", 0x010E: '{"shape": [5, 6, 3]}', 0x8298: "(c) me"})
    out = Image.Exif()
    out.load(update_exif(ex.tobytes(), width=12, height=10))
    assert not set(stale) & set(out) and 0x0131 not in out and 0x010E not in out
    assert out[0x010F] == "Nikon" and out[0x8298] == "(c) me"
    assert float(out.get_ifd(0x8769)[0x920A]) == 14.0


@pytest.mark.parametrize(
    ("description", "kept"),
    [
        ("Sunset over the harbour", True),
        ("OLYMPUS DIGITAL CAMERA", True),
        ('{"shape": [5, 6, 3], "axes": "YXS"}', False),
        ("shape=(5,6,3)", False),
        ("ImageJ=1.54f\nimages=1\n", False),
        ('<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">', False),
    ],
)
def test_update_exif_keeps_a_person_s_image_description_only(description: str, kept: bool) -> None:
    ex = Image.Exif()
    ex[0x010F] = "A"
    ex[0x010E] = description
    out = Image.Exif()
    out.load(update_exif(ex.tobytes(), width=4, height=3))
    assert (out.get(0x010E) == description) is kept and out[0x010F] == "A"


XMP_ATTRS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:t="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' t:ImageWidth=\'4000\' t:ImageLength="3000" t:Orientation="8" exif:PixelXDimension="4000"'
    b' t:Make="Pixel"><exif:PixelYDimension rdf:datatype="int">3000</exif:PixelYDimension>'
    b"<t:ImageWidthNote>4000</t:ImageWidthNote></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def test_update_xmp_rewrites_dimensions_in_any_form_and_prefix() -> None:
    out = update_xmp(XMP_ATTRS, width=8000, height=6000)
    assert b't:ImageWidth="8000"' in out and b't:ImageLength="6000"' in out and b't:Orientation="1"' in out
    assert b'exif:PixelXDimension="8000"' in out
    assert b'<exif:PixelYDimension rdf:datatype="int">6000</exif:PixelYDimension>' in out
    assert b"<t:ImageWidthNote>4000</t:ImageWidthNote>" in out and b't:Make="Pixel"' in out
    back = update_xmp(out, width=4000, height=3000).replace(b't:Orientation="1"', b't:Orientation="8"')
    assert back == XMP_ATTRS.replace(b"t:ImageWidth='4000'", b't:ImageWidth="4000"')  # nothing else changed
    assert update_xmp(out, width=8000, height=6000) == out


def test_update_xmp_leaves_other_packets_alone() -> None:
    other = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description xmp:Rating="3"/></x:xmpmeta>'
    assert update_xmp(other, width=1, height=2) == other
    undeclared = b'<rdf:Description tiff:ImageWidth="4000"/>'  # no namespace binding: not the TIFF property
    assert update_xmp(undeclared, width=1, height=2) == undeclared


def test_png_xmp_found_compressed_and_after_image_data(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    text = XMP_ATTRS.decode()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Comment", "not the XMP")
    info.add_itxt("XML:com.adobe.xmp", text, zip=True)
    Image.fromarray(_pixels()).save(tmp_path / "z.png", pnginfo=info)
    assert read_xmp(tmp_path / "z.png") == XMP_ATTRS

    body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP_ATTRS
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    Image.fromarray(_pixels()).save(tmp_path / "late.png")
    late = (tmp_path / "late.png").read_bytes()
    (tmp_path / "late.png").write_bytes(late[:-12] + chunk + late[-12:])  # just before IEND
    assert read_xmp(tmp_path / "late.png") == XMP_ATTRS


def test_read_xmp_of_files_without_one_or_garbled(tmp_path: Path) -> None:
    Image.fromarray(_pixels()).save(tmp_path / "a.jpg")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert read_xmp(tmp_path / "a.jpg") is None and read_xmp(tmp_path / "b.png") is None
    with pytest.raises(InputError, match="not found"):
        read_xmp(tmp_path / "missing.jpg")
