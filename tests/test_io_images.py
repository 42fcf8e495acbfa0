"""dzcli.io.images: decoding to the image convention, orientation, bit depth, RAW, errors, atomic saving."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from dzcli.errors import InputError, OutputError, ResourceError
from dzcli.io import images
from dzcli.io.exif import CaptureInfo, capture_info_from_exif, make_exif, read_capture_info, update_exif
from dzcli.io.images import (
    IMAGE_SUFFIXES,
    RAW_SUFFIXES,
    Photo,
    from_hwc,
    is_image_file,
    load_photo,
    save_image,
    to_hwc,
    to_uint,
)

# ------------------------------------------------------------------------------------------------ helpers


def srgb_icc() -> bytes:
    """A real ICC profile (Pillow's built-in sRGB), so decoders accept it."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def upright_blocks() -> np.ndarray:
    """An asymmetric upright RGB uint8 image 16x24 made of 8x8 blocks, each block a distinct colour.

    Every one of the 8 EXIF transforms gives a different array, and 8x8 blocks survive JPEG nearly intact.
    """
    levels = np.array([[10, 60, 110], [160, 210, 250]], dtype=np.uint8)
    base = np.kron(levels, np.ones((8, 8), dtype=np.uint8))
    return np.stack([base, 255 - base, np.roll(base, 8, axis=1)], axis=2)


# PIL's transpose for each orientation, as used by ImageOps.exif_transpose (stored -> upright) ...
_PIL_METHOD = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ... and its inverse (upright -> stored): rotations are inverted, mirrors are their own inverse.
_PIL_INVERSE = {**_PIL_METHOD, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that a viewer applying ``orientation`` shows ``upright``."""
    if orientation == 1:
        return upright
    return np.asarray(Image.fromarray(upright).transpose(_PIL_INVERSE[orientation]))


def orientation_exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    ex[0x010F] = "TestCam"
    return ex.tobytes()


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_dng(path: Path, *, h: int = 48, w: int = 64, orientation: int = 1, focal: bool = True) -> Path:
    """A small RGGB DNG written by pidng from a synthetic scene: red grows to the right, green downwards."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([0.1 + 0.8 * xx / w, 0.1 + 0.8 * yy / h, np.full((h, w), 0.4)], axis=-1)
    white = 4095
    bayer = np.empty((h, w), dtype=np.uint16)
    bayer[0::2, 0::2] = scene[0::2, 0::2, 0] * white
    bayer[0::2, 1::2] = scene[0::2, 1::2, 1] * white
    bayer[1::2, 0::2] = scene[1::2, 0::2, 1] * white
    bayer[1::2, 1::2] = scene[1::2, 1::2, 2] * white
    t = DNGTags()
    t.set(Tag.ImageWidth, w)
    t.set(Tag.ImageLength, h)
    t.set(Tag.TileWidth, w)
    t.set(Tag.TileLength, h)
    t.set(Tag.Orientation, orientation)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, CFAPattern.RGGB)
    t.set(Tag.BlackLevel, 0)
    t.set(Tag.WhiteLevel, white)
    t.set(Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    t.set(Tag.BaselineExposure, [[0, 100]])
    t.set(Tag.Make, "TestCam")
    t.set(Tag.Model, "Dual 1")
    t.set(Tag.UniqueCameraModel, "TestCam Dual 1")
    if focal:
        t.set(Tag.FocalLength, [[13, 2]])
        t.set(Tag.FocalLengthIn35mmFilm, 52)
    t.set(Tag.DNGVersion, DNGVersion.V1_4)
    t.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
    converter = RAW2DNG()
    converter.options(t, path="", compress=False)
    path.write_bytes(bytes(converter.convert(bayer)))
    return path


def no_tmp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------ basics


def test_suffix_sets_and_is_image_file() -> None:
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"} < IMAGE_SUFFIXES
    assert {
        ".dng",
        ".nef",
        ".nrw",
        ".cr2",
        ".cr3",
        ".arw",
        ".raf",
        ".rw2",
        ".orf",
        ".pef",
        ".srw",
    } == RAW_SUFFIXES
    assert RAW_SUFFIXES < IMAGE_SUFFIXES
    assert is_image_file("a/IMG_1.JPG") and is_image_file(Path("x.Dng")) and is_image_file("p.heic")
    assert not is_image_file("notes.txt") and not is_image_file(".hidden.jpg") and not is_image_file("jpg")


def test_hwc_conversions() -> None:
    a8 = np.array([[[0, 128, 255]]], dtype=np.uint8)
    assert torch.equal(from_hwc(a8), torch.tensor([[[0.0]], [[128 / 255]], [[1.0]]], dtype=torch.float32))
    a16 = np.array([[[0, 32768, 65535]]], dtype=np.uint16)
    assert torch.allclose(from_hwc(a16).flatten(), torch.tensor([0.0, 32768 / 65535, 1.0]), rtol=0, atol=1e-7)
    t = torch.rand(3, 5, 7)
    hwc = to_hwc(t)
    assert hwc.shape == (5, 7, 3) and hwc.dtype == np.float32 and hwc.flags.c_contiguous
    assert torch.equal(from_hwc(hwc), t)
    assert from_hwc(np.zeros((4, 6), np.uint8)).shape == (1, 4, 6)
    with pytest.raises(ValueError):
        from_hwc(np.zeros((2, 2, 3), np.int32))


def test_to_uint_rounds_clamps_and_keeps_gray() -> None:
    values = torch.tensor([0.4, 0.6, 254.4, 254.6]) / 255  # truncation would give 0, 0, 254, 254
    assert to_uint(values.view(1, 1, 4), 8).tolist() == [[0, 1, 254, 255]]
    assert to_uint(torch.tensor([[0.6 / 65535, 65534.5 / 65535]]), 16).tolist() == [[1, 65535]]
    assert to_uint(torch.tensor([[-0.5, 1.7, float("nan")]]), 8).tolist() == [[0, 255, 0]]
    t = torch.rand(3, 4, 5)
    out = to_uint(t, 16)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint16
    assert torch.equal(t, t.clone())  # input untouched
    with pytest.raises(ValueError):
        to_uint(t, 12)


# ------------------------------------------------------------------------------------------------ orientation


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applied_once(tmp_path: Path, suffix: str, orientation: int) -> None:
    upright = upright_blocks()
    stored = stored_for(upright, orientation)
    path = tmp_path / f"o{orientation}{suffix}"
    kwargs: dict[str, Any] = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
    Image.fromarray(stored).save(path, exif=orientation_exif(orientation), **kwargs)
    # the fixture itself is checked against Pillow's reference implementation
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    tol = 3 if suffix == ".jpg" else 0
    assert np.abs(reference.astype(int) - upright).max() <= tol

    photo = load_photo(path)
    assert photo.info.orientation == orientation
    assert photo.size == (upright.shape[1], upright.shape[0])
    got = as_uint8(photo.pixels)
    assert np.abs(got.astype(int) - upright).max() <= tol
    assert np.abs(got.astype(int) - reference).max() <= tol


@pytest.mark.parametrize("orientation", range(1, 9))
def test_heif_orientation_applied_once(tmp_path: Path, orientation: int) -> None:
    """pillow-heif turns EXIF Orientation into HEIF irot/imir on save; libheif applies them on decode."""
    import pillow_heif

    upright = upright_blocks()
    stored = np.ascontiguousarray(stored_for(upright, orientation))
    path = tmp_path / f"o{orientation}.heic"
    heif = pillow_heif.from_bytes(mode="RGB", size=(stored.shape[1], stored.shape[0]), data=stored.tobytes())
    heif.save(path, quality=-1, chroma=444, exif=orientation_exif(orientation))

    photo = load_photo(path)
    assert photo.kind == "heif"
    assert photo.info.orientation == orientation  # the value stored in the file
    assert photo.size == (upright.shape[1], upright.shape[0])
    assert np.abs(as_uint8(photo.pixels).astype(int) - upright).mean() < 2.0
    # what pillow-heif does, documented: pixels come back turned, EXIF Orientation reset to 1
    pillow_heif.register_heif_opener()
    with Image.open(path) as im:
        assert im.size == (upright.shape[1], upright.shape[0])
        assert im.getexif().get(0x0112, 1) == 1
        assert im.info.get("original_orientation") in ((None,) if orientation == 1 else (orientation,))


def test_saved_orientation_is_honoured_alike_in_every_format(tmp_path: Path) -> None:
    """EXIF Orientation 6 on stored pixels S means: shown turned 90 degrees clockwise, in every format."""
    rng = np.random.default_rng(3)
    stored = torch.from_numpy(np.kron(rng.random((3, 2, 3)), np.ones((1, 8, 8))).astype(np.float32))
    expected = torch.rot90(stored, k=-1, dims=(1, 2))
    block = make_exif(CaptureInfo(make="X", orientation=6))
    for name in ("a.png", "a.tif", "a.jpg", "a.heic", "a.webp"):
        save_image(tmp_path / name, stored, exif=block, quality=100)
        photo = load_photo(tmp_path / name)
        assert photo.pixels.shape == expected.shape, name
        assert (photo.pixels - expected).abs().mean() < 0.02, name
    # update_exif resets the orientation for pixels that are already upright
    save_image(tmp_path / "b.png", expected, exif=update_exif(block, width=16, height=24))
    assert torch.equal(load_photo(tmp_path / "b.png").pixels, load_photo(tmp_path / "a.png").pixels)


# ------------------------------------------------------------------------------------------------ bit depth


def test_16bit_tiff_loads_exactly_with_ifd0_exif(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (9, 13, 3), dtype=np.uint16)
    arr[0, 0] = (0, 1, 65535)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(
        path,
        arr,
        photometric="rgb",
        metadata=None,
        extratags=[
            (271, "s", 0, "NIKON CORPORATION", True),
            (272, "s", 0, "NIKON D800", True),
            (37386, "2I", 1, (14, 1), True),
        ],
    )
    photo = load_photo(path)
    assert (photo.kind, photo.bit_depth) == ("tiff", 16)
    expected = torch.from_numpy(arr.astype(np.float32) / np.float32(65535)).permute(2, 0, 1)
    assert torch.equal(photo.pixels, expected)
    assert photo.pixels.dtype == torch.float32 and photo.pixels.is_contiguous()
    assert photo.info.make == "NIKON CORPORATION" and photo.info.model == "NIKON D800"
    assert photo.info.focal_mm == 14.0
    assert photo.exif is not None and capture_info_from_exif(photo.exif).focal_mm == 14.0


def test_gray_float_and_alpha_inputs_become_rgb(tmp_path: Path) -> None:
    import tifffile

    gray16 = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    tifffile.imwrite(tmp_path / "g.tif", gray16, photometric="minisblack")
    photo = load_photo(tmp_path / "g.tif")
    assert photo.bit_depth == 16 and photo.pixels.shape == (3, 4, 5)
    assert torch.equal(photo.pixels[0], photo.pixels[2])
    assert torch.equal(photo.pixels[1], torch.from_numpy(gray16.astype(np.float32) / 65535))

    f = np.linspace(-0.5, 1.5, 60, dtype=np.float32).reshape(4, 5, 3)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    photo = load_photo(tmp_path / "f.tif")
    assert photo.bit_depth == 16
    assert torch.allclose(photo.pixels, torch.from_numpy(np.clip(f, 0, 1)).permute(2, 0, 1))

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    photo = load_photo(tmp_path / "a.png")
    assert photo.pixels.shape == (3, 4, 5) and photo.bit_depth == 8
    assert torch.equal(photo.pixels[0], torch.full((4, 5), 200 / 255))


def test_png_round_trips_are_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    v16 = torch.from_numpy(rng.integers(0, 65536, (3, 7, 11)).astype(np.float32) / 65535)
    save_image(tmp_path / "a16.png", v16, bit_depth=16)
    photo = load_photo(tmp_path / "a16.png")
    assert photo.bit_depth == 16 and torch.equal(photo.pixels, v16)

    v8 = torch.from_numpy(rng.integers(0, 256, (3, 7, 11)).astype(np.float32) / 255)
    save_image(tmp_path / "a8.png", v8)
    photo = load_photo(tmp_path / "a8.png")
    assert photo.bit_depth == 8 and torch.equal(photo.pixels, v8)
    # 8-bit output of 16-bit content is quantised to 8 bits, not kept at 16
    save_image(tmp_path / "b8.png", v16, bit_depth=8)
    assert load_photo(tmp_path / "b8.png").bit_depth == 8

    save_image(tmp_path / "t16.tif", v16, bit_depth=16)
    assert torch.equal(load_photo(tmp_path / "t16.tif").pixels, v16)


def test_save_rounds_to_nearest_level(tmp_path: Path) -> None:
    levels = torch.tensor([0.6, 1.4, 127.5, 254.6]) / 255  # truncation: 0, 1, 127, 254
    pixels = levels.view(1, 1, 4).expand(3, 1, 4).clone()
    save_image(tmp_path / "r.png", pixels)
    got = load_photo(tmp_path / "r.png").pixels[0, 0] * 255
    assert got.round().tolist() == [1.0, 1.0, 128.0, 255.0]


def test_gray_save_and_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "g.png"
    save_image(target, torch.full((1, 3, 4), 0.5))
    with Image.open(target) as im:
        assert im.mode == "L"
    assert torch.equal(load_photo(target).pixels, torch.full((3, 3, 4), 128 / 255))


def test_heif_10bit_loads_as_16bit(tmp_path: Path) -> None:
    import pillow_heif

    ramp = np.linspace(0, 65535, 32).astype(np.uint16)
    arr = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (16, 32, 3)))
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(32, 16), data=arr.tobytes())
    heif.save(tmp_path / "hdr.heic", quality=-1, chroma=444)
    photo = load_photo(tmp_path / "hdr.heic")
    assert photo.bit_depth == 16 and photo.kind == "heif"
    assert photo.pixels.max() > 0.995  # 10-bit full scale maps to 1.0, not 1023/1024 or 65472/65535
    assert torch.allclose(photo.pixels[1, 0], torch.from_numpy(ramp / 65535).float(), atol=0.01)


def test_heic_with_jpg_name_is_read_by_content(tmp_path: Path) -> None:
    save_image(tmp_path / "x.heic", torch.full((3, 8, 8), 0.25))
    (tmp_path / "x.heic").rename(tmp_path / "x.jpg")
    photo = load_photo(tmp_path / "x.jpg")
    assert photo.kind == "heif" and abs(photo.pixels.mean().item() - 0.25) < 0.02


# ------------------------------------------------------------------------------------------------ RAW


def test_dng_develops_to_16bit_rgb(tmp_path: Path) -> None:
    path = write_dng(tmp_path / "wide.dng")
    photo = load_photo(path)
    assert (photo.kind, photo.bit_depth) == ("raw", 16)
    assert photo.pixels.shape == (3, 48, 64) and photo.pixels.dtype == torch.float32
    p = photo.pixels
    assert p.min() >= 0.0 and p.max() <= 1.0 and 0.1 < p.mean() < 0.9
    inner = p[:, 4:-4, 4:-4]
    assert inner[0, :, -8:].mean() > inner[0, :, :8].mean() + 0.2  # red grows to the right
    assert inner[1, -8:, :].mean() > inner[1, :8, :].mean() + 0.2  # green grows downwards
    red_x = inner[0, :, -8:].mean() - inner[0, :, :8].mean()
    red_y = inner[0, -8:, :].mean() - inner[0, :8, :].mean()
    assert red_x > 2 * abs(red_y)  # the gradient runs along x, so the image is not transposed or flipped
    assert photo.info.make == "TestCam" and photo.info.focal_mm == 6.5 and photo.info.focal_35mm == 52.0
    assert photo.exif is not None and capture_info_from_exif(photo.exif).focal_35mm == 52.0
    assert photo.icc is None


def test_two_dngs_develop_identically_and_flip_once(tmp_path: Path) -> None:
    a = load_photo(write_dng(tmp_path / "a.dng"))
    b = load_photo(write_dng(tmp_path / "b.DNG"))
    assert torch.equal(a.pixels, b.pixels)
    c = load_photo(write_dng(tmp_path / "c.dng", orientation=6))
    assert c.info.orientation == 6
    assert c.pixels.shape == (3, 64, 48)  # LibRaw applied the flip; not applied a second time
    assert torch.allclose(c.pixels, torch.rot90(a.pixels, k=-1, dims=(1, 2)), atol=1e-3)


def test_raw_focal_from_libraw_when_exif_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import exifread

    path = write_dng(tmp_path / "x.dng")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("unsupported")

    monkeypatch.setattr(exifread, "process_file", boom)
    assert read_capture_info(path).focal_mm == 6.5


# ------------------------------------------------------------------------------------------------ errors


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(upright_blocks()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("random.jpg", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "cannot"),
        ("truncated.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "corrupt or truncated"),
        ("empty.png", b"", "empty file"),
        ("notes.txt", b"hello", "unsupported file type '.txt'"),
        ("random.dng", b"II*\x00" + bytes(300), "RAW"),
        ("random.heic", b"\x00\x00\x00\x18ftypheic" + bytes(100), "HEIF"),
        ("half.png", b"\x89PNG\r\n\x1a\n" + bytes(40), "corrupt or truncated"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_photo(path)
    message = str(err.value)
    assert name in message and problem in message and "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.jpg: file not found"):
        load_photo(tmp_path / "missing.jpg")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(InputError, match=r"folder.jpg: is a directory"):
        load_photo(folder)


def test_max_megapixels_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    big = np.zeros((1000, 1000, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg")
    save_image(tmp_path / "big.tif", torch.zeros(3, 1000, 1000))

    def must_not_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded despite the megapixel limit")

    monkeypatch.setattr(cv2, "imdecode", must_not_decode)
    for name in ("big.jpg", "big.tif"):
        with pytest.raises(ResourceError, match=rf"{name}: image is 1\.0 MP, larger than the 0\.5 MP limit"):
            load_photo(tmp_path / name, max_megapixels=0.5)
    with pytest.raises(ResourceError, match=r"x.dng"):
        load_photo(write_dng(tmp_path / "x.dng"), max_megapixels=0.001)
    monkeypatch.undo()
    assert load_photo(tmp_path / "big.jpg", max_megapixels=1.5).size == (1000, 1000)


def _damaged(path: Path) -> Path:
    """A file whose decoder prints a warning (JPEG, PNG) or an error (DNG) on stderr itself."""
    if path.suffix == ".jpg":
        data = _jpeg_bytes()
        path.write_bytes(data[:-2] + bytes(40) + data[-2:])  # junk before the end marker
    elif path.suffix == ".png":
        Image.fromarray(upright_blocks()).save(path, icc_profile=b"not a profile")  # too short for libpng
    else:
        data = write_dng(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("name", "chatter"),
    [("a.jpg", "Corrupt JPEG data"), ("a.png", "libpng warning"), ("a.dng", "Unexpected end of file")],
)
def test_decoder_chatter_goes_to_the_debug_log_not_to_stderr(
    tmp_path: Path,
    name: str,
    chatter: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _damaged(tmp_path / name)
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])  # not the CLI's of earlier tests
    capfd.readouterr()
    with caplog.at_level("DEBUG", logger="dzcli.io"):
        try:
            load_photo(path)
        except InputError:
            assert name.endswith(".dng")
    assert capfd.readouterr().err == ""
    assert any(
        r.levelname == "DEBUG" and chatter in r.getMessage() and name in r.getMessage()
        for r in caplog.records
    )


def test_opencv_log_only_when_verbose(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import tifffile

    from dzcli.io.quiet import set_opencv_log_level

    path = tmp_path / "tag.tif"
    tifffile.imwrite(path, upright_blocks(), photometric="rgb", extratags=[(65000, "s", 0, "private", True)])
    with caplog.at_level("DEBUG", logger="dzcli.io"):
        set_opencv_log_level(False)
        load_photo(path)
        assert "Unknown field with tag 65000" not in caplog.text
        set_opencv_log_level(True)  # OpenCV's default
        load_photo(path)
        assert "Unknown field with tag 65000" in caplog.text  # from stderr, in the debug log


# ------------------------------------------------------------------------------------------------ saving


@pytest.mark.parametrize(
    ("name", "bit_depth"),
    [("o.jpg", 8), ("o.png", 8), ("o.png", 16), ("o.tif", 8), ("o.tiff", 16), ("o.webp", 8), ("o.heic", 8)],
)
def test_exif_and_icc_are_embedded(tmp_path: Path, name: str, bit_depth: int) -> None:
    import pillow_heif

    icc = srgb_icc()
    block = make_exif(CaptureInfo(make="dzsr", model="Zoom", focal_35mm=52.0), width=11, height=7)
    path = tmp_path / name
    save_image(path, torch.rand(3, 7, 11), bit_depth=bit_depth, exif=block, icc=icc)
    pillow_heif.register_heif_opener()
    with Image.open(path) as im:  # an independent reader
        assert im.size == (11, 7)
        assert im.info.get("icc_profile") == icc
        ex = im.getexif()
        assert ex.get(0x010F) == "dzsr" and ex.get(0x0110) == "Zoom"
        assert ex.get_ifd(0x8769).get(0xA405) == 52
        im.load()  # the whole stream decodes (PNG chunk CRCs, TIFF structure)
    photo = load_photo(path)
    assert photo.icc == icc and photo.bit_depth == bit_depth
    assert photo.info.make == "dzsr" and photo.info.focal_35mm == 52.0 and photo.info.exif_width == 11


def test_png_metadata_chunks_precede_image_data(tmp_path: Path) -> None:
    save_image(
        tmp_path / "m.png",
        torch.rand(3, 4, 4),
        bit_depth=16,
        exif=make_exif(CaptureInfo(make="A")),
        icc=srgb_icc(),
    )
    data = (tmp_path / "m.png").read_bytes()
    order, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        order.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    assert order[0] == b"IHDR" and order[-1] == b"IEND"
    assert order.index(b"iCCP") < order.index(b"IDAT") and order.index(b"eXIf") < order.index(b"IDAT")
    assert order.count(b"iCCP") == 1 and order.count(b"eXIf") == 1


def test_tiff_exif_is_linked_as_a_sub_ifd(tmp_path: Path) -> None:
    import exifread
    import tifffile

    ex = Image.Exif()
    ex.load(make_exif(CaptureInfo(make="dzsr", focal_mm=4.25, focal_35mm=26.0, orientation=1)))
    ex.get_ifd(0x8825).update({1: "N", 2: (45.0, 30.0, 0.0)})
    save_image(tmp_path / "x.tif", torch.rand(3, 5, 6), bit_depth=16, exif=ex.tobytes())
    with Image.open(tmp_path / "x.tif") as im:
        assert im.getexif().get_ifd(0x8825)[1] == "N"
    with tifffile.TiffFile(tmp_path / "x.tif") as tf:
        exif_ifd = tf.pages.first.tags[34665].value
        assert exif_ifd["FocalLengthIn35mmFilm"] == 26 and tuple(exif_ifd["FocalLength"]) == (17, 4)
        assert 34666 not in tf.pages.first.tags  # the placeholder was renamed
    with open(tmp_path / "x.tif", "rb") as fh:
        tags = exifread.process_file(fh, details=False)
    assert str(tags["EXIF FocalLength"]) == "17/4" and str(tags["Image Make"]) == "dzsr"


def test_oversized_exif_in_jpeg_loses_the_maker_note_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = Image.Exif()
    ex.load(make_exif(CaptureInfo(make="dzsr", focal_35mm=26.0)))
    ex.get_ifd(0x8769)[0x927C] = bytes(70_000)  # a JPEG APP1 segment holds at most 64 KB
    with caplog.at_level("WARNING", logger="dzcli.io.images"):
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), exif=ex.tobytes())
    assert "MakerNote dropped" in caplog.text
    with Image.open(tmp_path / "x.jpg") as im:
        got = im.getexif()
        assert got[0x010F] == "dzsr" and 0x927C not in got.get_ifd(0x8769)


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.png"
    save_image(out, torch.rand(3, 4, 4))
    assert out.exists() and no_tmp_files(tmp_path)
    old = out.read_bytes()

    seen: list[Path] = []

    def failing_writer(fh: Any, arr: np.ndarray, exif: Any, icc: Any, xmp: Any, quality: int) -> None:
        fh.write(b"\x89PNG partial data")
        fh.flush()
        seen.append(Path(fh.name))
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(images._WRITERS, "png", failing_writer)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_image(out, torch.rand(3, 4, 4))
    assert out.read_bytes() == old and no_tmp_files(tmp_path)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".") and seen[0].name.endswith(".tmp")
    with pytest.raises(RuntimeError):
        save_image(tmp_path / "new.png", torch.rand(3, 4, 4))
    assert not (tmp_path / "new.png").exists() and no_tmp_files(tmp_path)


def test_failure_inside_tiff_encoder_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile

    original = tifffile.TiffWriter.write

    def write_then_fail(self: Any, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", write_then_fail)
    with pytest.raises(OutputError, match=r"x\.tif: cannot write: no space left on device") as info:
        save_image(tmp_path / "x.tif", torch.rand(3, 4, 4), bit_depth=16)
    assert ".tmp" not in str(info.value)  # the target is named, never the hidden temporary file
    assert os.listdir(tmp_path) == []


def test_save_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="8-bit"):
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), bit_depth=16)
    with pytest.raises(ValueError, match=r"\.bmp"):
        save_image(tmp_path / "x.bmp", torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="quality"):
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), quality=0)
    with pytest.raises(ValueError, match="EXIF"):
        save_image(tmp_path / "x.jpg", torch.rand(3, 4, 4), exif=b"nonsense")
    with pytest.raises(ValueError, match="shape"):
        save_image(tmp_path / "x.png", torch.rand(2, 4, 4))
    assert os.listdir(tmp_path) == []


def test_photo_record() -> None:
    photo = Photo(
        path=Path("a.jpg"), pixels=torch.zeros(3, 5, 9), bit_depth=8, kind="jpeg", info=CaptureInfo()
    )
    assert photo.size == (9, 5)
    assert "pixels" not in repr(photo)
    with pytest.raises(AttributeError):
        photo.kind = "png"  # type: ignore[misc]
