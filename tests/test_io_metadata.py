"""dzcli.io: XMP and alpha survive load -> save -> load; stale TIFF tags do not reach an output."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, PngImagePlugin

from dzcli.io.exif import CaptureInfo, make_exif, read_xmp, update_exif, update_xmp
from dzcli.io.images import Photo, holds_alpha, load_photo, save_image

XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b' <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
    b' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"'
    b' xmp:Rating="4" tiff:ImageWidth="6" tiff:ImageLength="5" tiff:Orientation="6">\n'
    b"  <exif:PixelXDimension>6</exif:PixelXDimension>\n"
    b"  <exif:PixelYDimension>5</exif:PixelYDimension>\n"
    b'  <xmpMM:History><rdf:Seq><rdf:li xmpMM:action="edited" xmpMM:softwareAgent="Darktable"/>'
    b"</rdf:Seq></xmpMM:History>\n"
    b" </rdf:Description>\n</rdf:RDF></x:xmpmeta>\n" + b" " * 200 + b'\n<?xpacket end="w"?>'
)
"""A packet for a 6x5 image: a rating, an edit history, dimensions in attribute and element form."""


def _rgb(h: int = 5, w: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_with_xmp(path: Path, rgb: np.ndarray) -> None:
    """``rgb`` saved with :data:`XMP` by writers independent of the code under test."""
    if path.suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode("utf-8"))
        Image.fromarray(rgb).save(path, pnginfo=info)
    elif path.suffix == ".tif":
        import tifffile

        tifffile.imwrite(
            path, rgb, photometric="rgb", metadata=None, extratags=[(700, "B", len(XMP), XMP, True)]
        )
    else:
        Image.fromarray(rgb).save(path, xmp=XMP, quality=95)


def _xmp_fields(xmp: bytes) -> dict[str, str]:
    attributes = dict(re.findall(rb'\s([\w]+:[\w]+)="([^"]*)"', xmp))
    elements = dict(re.findall(rb"<([\w]+:[\w]+)>([^<]*)</\1>", xmp))
    return {k.decode(): v.decode() for k, v in {**attributes, **elements}.items()}


def _independent_xmp(path: Path) -> bytes | None:
    if path.suffix == ".tif":
        import tifffile

        with tifffile.TiffFile(path) as tf:
            return bytes(tf.pages.first.tags[700].value)
    with Image.open(path) as im:
        return im.info.get("xmp")


# ------------------------------------------------------------------------------------------------ XMP


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_xmp_is_read_as_stored(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"in{suffix}"
    _write_with_xmp(path, _rgb())
    photo = load_photo(path)
    assert photo.xmp is not None and photo.xmp.rstrip(b"\x00") == XMP
    assert read_xmp(path) == photo.xmp


@pytest.mark.parametrize("out_suffix", [".png", ".jpg", ".webp", ".tif", ".heic"])
@pytest.mark.parametrize("in_suffix", [".png", ".jpg", ".webp", ".tif"])
def test_xmp_round_trips_with_dimensions_updated(tmp_path: Path, in_suffix: str, out_suffix: str) -> None:
    src = tmp_path / f"in{in_suffix}"
    _write_with_xmp(src, _rgb())
    before = src.read_bytes()
    photo = load_photo(src)
    assert photo.xmp is not None
    # with no EXIF, the XMP's tiff:Orientation 6 is honoured: the 6x5 stored pixels are shown 5x6
    assert photo.info.orientation == 6 and photo.size == (5, 6)
    big = torch.nn.functional.interpolate(photo.pixels[None], scale_factor=3, mode="bicubic")[0].clamp(0, 1)
    out = tmp_path / f"out{out_suffix}"
    save_image(out, big, xmp=update_xmp(photo.xmp, width=15, height=18))

    again = load_photo(out)
    assert again.size == (15, 18) and again.info.orientation == 1 and again.xmp is not None
    fields = _xmp_fields(again.xmp)
    assert fields["xmp:Rating"] == "4" and 'softwareAgent="Darktable"' in again.xmp.decode()
    assert (fields["tiff:ImageWidth"], fields["tiff:ImageLength"]) == ("15", "18")
    assert (fields["exif:PixelXDimension"], fields["exif:PixelYDimension"]) == ("15", "18")
    assert fields["tiff:Orientation"] == "1"  # the output pixels are upright: not turned again
    if out_suffix != ".heic":  # an independent reader finds the same packet
        assert _independent_xmp(out) == again.xmp
    assert src.read_bytes() == before  # the input is untouched


def test_no_xmp_gives_none_and_writes_none(tmp_path: Path) -> None:
    for suffix in (".png", ".jpg", ".webp", ".tif", ".heic"):
        path = tmp_path / f"plain{suffix}"
        save_image(path, torch.rand(3, 4, 5))
        assert load_photo(path).xmp is None, suffix


def test_oversized_xmp_is_left_out_of_a_jpeg_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    huge = XMP.replace(b" " * 200, b" " * 70_000)
    with caplog.at_level("WARNING", logger="dzcli.io.images"):
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), xmp=huge)
        save_image(tmp_path / "x.png", torch.rand(3, 4, 4), xmp=huge)
    assert "too large for JPEG" in caplog.text
    assert load_photo(tmp_path / "x.jpg").xmp is None
    assert load_photo(tmp_path / "x.png").xmp == huge


def test_jpeg_xmp_segment_follows_the_exif_segment(tmp_path: Path) -> None:
    save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), exif=make_exif(CaptureInfo(make="A")), xmp=XMP)
    data = (tmp_path / "x.jpg").read_bytes()
    assert (
        data.index(b"Exif\x00\x00")
        < data.index(b"http://ns.adobe.com/xap/1.0/\x00")
        < data.index(b"\xff\xdb")
    )
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.getexif()[0x010F] == "A"
        im.load()


# ------------------------------------------------------------------------------------------------ alpha


def _random_alpha(h: int, w: int, levels: int, seed: int = 1) -> torch.Tensor:
    a = np.random.default_rng(seed).integers(0, levels + 1, (1, h, w)).astype(np.float32)
    a[0, 0, :2] = (0, levels)
    return torch.from_numpy(a / np.float32(levels))


@pytest.mark.parametrize(
    ("suffix", "bit_depth"), [(".png", 8), (".png", 16), (".tif", 8), (".tiff", 16), (".webp", 8)]
)
def test_alpha_round_trips_exactly(tmp_path: Path, suffix: str, bit_depth: int) -> None:
    levels = 2**bit_depth - 1
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, levels + 1, (3, 7, 9)).astype(np.float32) / np.float32(levels))
    alpha = _random_alpha(7, 9, levels)
    path = tmp_path / f"a{suffix}"
    save_image(path, pixels, bit_depth=bit_depth, alpha=alpha, quality=90)
    photo = load_photo(path)
    assert photo.bit_depth == bit_depth and photo.alpha is not None
    assert photo.alpha.shape == (1, 7, 9) and photo.alpha.dtype == torch.float32
    assert torch.equal(photo.alpha, alpha)
    if suffix != ".webp":  # lossless colour too, not premultiplied
        assert torch.equal(photo.pixels, pixels)
    assert holds_alpha(suffix)


def test_alpha_outputs_read_by_independent_readers(tmp_path: Path) -> None:
    import tifffile

    pixels, alpha = torch.rand(3, 5, 6), _random_alpha(5, 6, 255)
    for suffix in (".png", ".webp"):
        save_image(tmp_path / f"a{suffix}", pixels, alpha=alpha)
        with Image.open(tmp_path / f"a{suffix}") as im:
            assert im.mode == "RGBA"
            assert np.array_equal(np.asarray(im)[:, :, 3], (alpha[0].numpy() * 255 + 0.5).astype(np.uint8))
    save_image(tmp_path / "a.tif", pixels, alpha=alpha, bit_depth=16)
    with tifffile.TiffFile(tmp_path / "a.tif") as tf:
        page = tf.pages.first
        assert page.samplesperpixel == 4 and int(page.extrasamples[0]) == 2  # unassociated alpha
        assert np.array_equal(page.asarray()[:, :, 3], (alpha[0].numpy() * 65535 + 0.5).astype(np.uint16))


def test_alpha_of_files_from_other_writers(tmp_path: Path) -> None:
    import tifffile

    rgb, a = _rgb(6, 7), np.random.default_rng(5).integers(0, 256, (6, 7), dtype=np.uint8)
    rgba = np.dstack([rgb, a])
    expected_alpha = torch.from_numpy(a.astype(np.float32) / 255)[None]
    expected_rgb = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb[:, :, 0], a]), "LA").save(tmp_path / "la.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.webp", lossless=True, exact=True)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=("unassalpha",))
    for name in ("rgba.png", "rgba.webp", "rgba.tif"):
        photo = load_photo(tmp_path / name)
        assert photo.alpha is not None and torch.equal(photo.alpha, expected_alpha), name
        assert torch.equal(photo.pixels, expected_rgb), name
    photo = load_photo(tmp_path / "la.png")
    assert photo.alpha is not None and torch.equal(photo.alpha, expected_alpha)
    assert torch.equal(photo.pixels, expected_rgb[:1].expand(3, -1, -1))

    rgba16 = np.random.default_rng(6).integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgba16.tif", rgba16, photometric="rgb", extrasamples=("unassalpha",))
    photo = load_photo(tmp_path / "rgba16.tif")
    assert photo.bit_depth == 16 and photo.alpha is not None
    assert torch.equal(photo.alpha[0], torch.from_numpy(rgba16[:, :, 3].astype(np.float32) / 65535))

    for name in ("rgb.png", "rgb.tif", "rgb.jpg"):
        Image.fromarray(rgb).save(tmp_path / name)
        assert load_photo(tmp_path / name).alpha is None, name


def test_16bit_gray_alpha_png_keeps_both_planes(tmp_path: Path) -> None:
    """A 16-bit gray+alpha PNG (colour type 4), written chunk by chunk: no common writer makes one."""
    la = np.random.default_rng(8).integers(0, 65536, (4, 5, 2), dtype=np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in la)

    def chunk(ctype: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))

    ihdr = struct.pack(">IIBBBBB", 5, 4, 16, 4, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "la16.png").write_bytes(png)
    photo = load_photo(tmp_path / "la16.png")
    assert photo.bit_depth == 16 and photo.alpha is not None
    assert torch.equal(photo.alpha[0], torch.from_numpy(la[:, :, 1].astype(np.float32) / 65535))
    assert torch.equal(
        photo.pixels, torch.from_numpy(la[:, :, 0].astype(np.float32) / 65535).expand(3, -1, -1)
    )


def test_premultiplied_and_lzw_tiff_alpha_come_back_straight(tmp_path: Path) -> None:
    """Associated alpha is divided out; an LZW TIFF (decoded by OpenCV's premultiplying libtiff path when
    tifffile lacks the codec) gives the same straight colour, to rounding."""
    import tifffile

    rgb = _rgb(6, 7)
    a = np.random.default_rng(7).integers(128, 256, (6, 7), dtype=np.uint8)
    premultiplied = np.round(rgb.astype(np.float64) * a[:, :, None] / 255).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "assoc.tif", np.dstack([premultiplied, a]), photometric="rgb", extrasamples=("assocalpha",)
    )
    Image.fromarray(np.dstack([rgb, a]), "RGBA").save(tmp_path / "lzw.tif", compression="tiff_lzw")
    straight = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    for name in ("assoc.tif", "lzw.tif"):
        photo = load_photo(tmp_path / name)
        assert photo.alpha is not None
        assert torch.equal(photo.alpha[0], torch.from_numpy(a.astype(np.float32) / 255)), name
        assert (photo.pixels - straight).abs().max() <= 1.01 / 255, name  # 0.5 level / alpha, alpha >= 1/2


def test_alpha_is_turned_upright_with_the_pixels(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(6, 8), np.arange(48, dtype=np.uint8).reshape(6, 8) * 5])
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.fromarray(rgba, "RGBA").save(tmp_path / "o.png", exif=ex.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    photo = load_photo(tmp_path / "o.png")
    assert photo.size == (6, 8) and photo.alpha is not None
    assert np.array_equal((photo.alpha[0].numpy() * 255 + 0.5).astype(np.uint8), upright[:, :, 3])
    assert np.array_equal(
        (photo.pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), upright[:, :, :3]
    )


def test_heic_keeps_alpha(tmp_path: Path) -> None:
    pixels, alpha = torch.rand(3, 8, 8), _random_alpha(8, 8, 255)
    for bit_depth in (8, 16):
        save_image(tmp_path / "a.heic", pixels, bit_depth=bit_depth, alpha=alpha, quality=100)
        photo = load_photo(tmp_path / "a.heic")
        assert photo.alpha is not None and photo.alpha.shape == (1, 8, 8) and photo.bit_depth == bit_depth
        assert (photo.alpha - alpha).abs().max() < 0.03
    assert holds_alpha(".heic")


def test_jpeg_output_of_rgba_input_is_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.dstack([_rgb(), np.full((5, 6), 9, np.uint8)]), "RGBA").save(tmp_path / "in.png")
    photo = load_photo(tmp_path / "in.png")
    assert photo.alpha is not None
    save_image(tmp_path / "out.jpg", photo.pixels, alpha=photo.alpha, quality=100)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB" and im.size == (6, 5)
    out = load_photo(tmp_path / "out.jpg")
    assert out.alpha is None and (out.pixels - photo.pixels).abs().mean() < 0.02
    assert not holds_alpha(".jpg") and not holds_alpha(".JPEG") and not holds_alpha(".bmp")
    assert holds_alpha(".PNG") and holds_alpha(".tif") and holds_alpha(".webp")


def test_gray_pixels_with_alpha_are_written_as_rgba(tmp_path: Path) -> None:
    gray, alpha = torch.rand(1, 4, 5), _random_alpha(4, 5, 255)
    save_image(tmp_path / "g.png", gray, alpha=alpha)
    photo = load_photo(tmp_path / "g.png")
    assert photo.alpha is not None and torch.equal(photo.alpha, alpha)
    assert torch.equal(photo.pixels[0], photo.pixels[2])


def test_bad_alpha_shape_is_refused(tmp_path: Path) -> None:
    for alpha in (torch.rand(1, 4, 6), torch.rand(3, 4, 5), torch.rand(4)):
        with pytest.raises(ValueError, match="alpha"):
            save_image(tmp_path / "x.png", torch.rand(3, 4, 5), alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):  # checked even where alpha is not written
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 5), alpha=torch.rand(2, 4, 5))
    save_image(tmp_path / "x.png", torch.rand(3, 4, 5), alpha=torch.rand(4, 5))
    assert load_photo(tmp_path / "x.png").alpha is not None


def test_photo_defaults_have_no_alpha_or_xmp() -> None:
    photo = Photo(
        path=Path("a.jpg"), pixels=torch.zeros(3, 2, 2), bit_depth=8, kind="jpeg", info=CaptureInfo()
    )
    assert photo.alpha is None and photo.xmp is None
    assert "alpha" not in repr(photo) and "xmp" not in repr(photo)


# ------------------------------------------------------------------------------------------------ TIFF tags


def test_stale_tiff_tags_do_not_reach_the_output(tmp_path: Path) -> None:
    """tifffile's defaults write ImageDescription {"shape": [5, 6, 3]} and Software "tifffile.py"."""
    import tifffile

    src = tmp_path / "scan.tif"
    tifffile.imwrite(src, _rgb(), photometric="rgb", extratags=[(271, "s", 0, "Nikon", True)])
    with tifffile.TiffFile(src) as tf:  # the fixture carries the stale tags
        assert "shape" in tf.pages.first.tags[270].value and tf.pages.first.tags[305].value
    before = src.read_bytes()
    photo = load_photo(src)
    assert photo.exif is not None
    big = torch.nn.functional.interpolate(photo.pixels[None], size=(10, 12), mode="bicubic")[0].clamp(0, 1)
    exif = update_exif(photo.exif, width=12, height=10)

    save_image(tmp_path / "out.tif", big, exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. tifffile's "shaped series shape does not match page shape"
        with tifffile.TiffFile(tmp_path / "out.tif") as tf:
            page = tf.pages.first
            assert 270 not in page.tags and 305 not in page.tags
            assert (page.imagewidth, page.imagelength) == (12, 10)
            assert page.tags[271].value == "Nikon"
            assert tf.series[0].shape == (10, 12, 3)
    out = load_photo(tmp_path / "out.tif")
    assert out.size == (12, 10) and out.info.make == "Nikon" and out.info.exif_width == 12

    save_image(tmp_path / "out.jpg", big, exif=exif)
    with Image.open(tmp_path / "out.jpg") as im:
        ex = im.getexif()
        assert ex[0x010F] == "Nikon" and 0x010E not in ex and 0x0131 not in ex and 0x0111 not in ex
    assert src.read_bytes() == before


def test_tiff_input_with_alpha_and_xmp_keeps_both_through_a_tiff_output(tmp_path: Path) -> None:
    import tifffile

    rgba = np.dstack([_rgb(), np.full((5, 6), 200, np.uint8)])
    src = tmp_path / "in.tif"
    tifffile.imwrite(
        src,
        rgba,
        photometric="rgb",
        extrasamples=("unassalpha",),
        extratags=[(700, "B", len(XMP), XMP, True)],
    )
    photo = load_photo(src)
    assert photo.alpha is not None and photo.xmp == XMP
    w, h = photo.size
    save_image(
        tmp_path / "out.tif", photo.pixels, alpha=photo.alpha, xmp=update_xmp(photo.xmp, width=w, height=h)
    )
    out = load_photo(tmp_path / "out.tif")
    assert (
        out.alpha is not None
        and torch.equal(out.alpha, photo.alpha)
        and torch.equal(out.pixels, photo.pixels)
    )
    assert out.xmp is not None and _xmp_fields(out.xmp)["xmp:Rating"] == "4"
