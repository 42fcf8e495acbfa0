"""dzsr zoom end to end on small simulated captures: sizes, formats, metadata, safety, errors, batches."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from datetime import datetime
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import ImageCms
from typer.testing import CliRunner

from dzcli.align.capture import AlignedCapture
from dzcli.cli import app
from dzcli.errors import AlignmentError, ConfigError, InputError, OutputError, ResourceError, WeightsError
from dzcli.infer import engine
from dzcli.infer.guard import guard_flat
from dzcli.io.exif import CaptureInfo, make_exif, read_xmp
from dzcli.io.images import load_photo, save_image
from dzcli.metrics.image import psnr
from dzcli.pipeline import zoom as zoom_module
from dzcli.pipeline.zoom import ZoomConfig, fill_invalid, merge_references, zoom
from dzcli.resize import resample, torch_resize
from dzcli.simulate import SimulatedPair, SimulatedTriple, simulate_pair
from dzcli.viz import fit_within
from dzsr_models import bundled, create_model, save_checkpoint
from dzsr_models.bundled import BundledModel, ModelInfo

from .conftest import scene, write_capture, write_triple
from .test_io_metadata import XMP, _xmp_fields

runner = CliRunner()
WHEN = datetime(2026, 3, 1, 9, 0, 0)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight dzsr-tiny ×2 checkpoint (no ImageNet weights needed)."""
    torch.manual_seed(0)
    model = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", metadata={})


@pytest.fixture(scope="session")
def sims() -> dict[str, SimulatedPair]:
    """Simulated ×2 pairs with 240-px-wide wide photos (small, so a zoom takes a fraction of a second)."""
    geo = {"life": ((8.0, -5.0), 0.8), "picos": ((-6.5, 4.0), -1.2), "seeding": ((3.0, 6.0), 0.5)}
    return {
        name: simulate_pair(
            fit_within(scene(name), 480),
            density=2.0,
            offset=off,
            rotation_deg=rot,
            parallax=0.5,
            noise=0.005,
            seed=i,
        )
        for i, (name, (off, rot)) in enumerate(geo.items())
    }


@pytest.fixture
def pair(tmp_path: Path, sims: dict[str, SimulatedPair]) -> tuple[Path, Path]:
    """``life_uw.jpg`` / ``life_tele.jpg`` with phone EXIF (×2)."""
    return write_capture(tmp_path, "life", sims["life"], ratio_exif=2.0, when=WHEN)


def _cfg(inputs: tuple[Path, ...], ckpt: Path, **kw: object) -> ZoomConfig:
    return ZoomConfig(inputs=inputs, model=str(ckpt), device="cpu", **kw)  # type: ignore[arg-type]


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# ------------------------------------------------------------------------------------------------ pure steps


def _aligned(box: tuple[int, int, int, int], value: float, s: int = 2) -> AlignedCapture:
    """A reference of constant ``value`` over ``box``, valid everywhere."""
    w, h = box[2:]
    return AlignedCapture(
        registration=None,  # type: ignore[arg-type]  # not read by merge_references
        lr=torch.zeros(3, h, w),
        ref=torch.full((3, s * h, s * w), value),
        mask=torch.ones(1, s * h, s * w),
        box=box,
        scale=s,
        valid_fraction=1.0,
        flow={"mean": 0.0, "p95": 0.0},
        colour=None,  # type: ignore[arg-type]
    )


def test_merge_references_puts_the_tele_inside_the_wide_and_the_uw_where_neither_reaches() -> None:
    uw = torch.full((3, 40, 60), 0.5)
    wide, tele = _aligned((10, 8, 30, 20), 0.2), _aligned((20, 14, 10, 8), 0.9)
    tele.mask[:, :, :8] = 0  # the tele's left 4 uw px are not consistent with the uw: the wide shows there
    m = merge_references(uw, wide, tele)
    assert m.box == (10, 8, 30, 20) and m.ref.shape == (3, 40, 60) and m.mask.shape == (1, 40, 60)
    assert bool((m.mask == 1).all()) and m.registration is tele.registration and m.scale == 2
    ty, tx = 2 * (14 - 8), 2 * (20 - 10)  # the tele's footprint in the merged reference
    assert torch.allclose(m.ref[:, ty + 4 : ty + 12, tx + 12 : tx + 16], torch.tensor(0.9))  # inside, 4 px in
    assert torch.allclose(m.ref[:, ty + 4 : ty + 12, tx : tx + 8], torch.tensor(0.2))  # its invalid part
    assert torch.allclose(m.ref[:, :8, :], torch.tensor(0.2))  # the wide around it
    # a tele reaching beyond the wide widens the reference; there the upsampled uw fills the gaps
    far = merge_references(uw, wide, _aligned((36, 2, 10, 10), 0.9))
    assert far.box == (10, 2, 36, 26) and far.mask[0, :10, :40].sum() == 0
    assert torch.allclose(far.ref[:, :10, :40], torch.tensor(0.5), atol=1e-5)
    assert merge_references(uw, wide, None).box == wide.box
    with pytest.raises(ValueError, match="x2 and x4"):
        merge_references(uw, wide, _aligned((20, 14, 10, 8), 0.9, s=4))


def test_fill_invalid_replaces_only_invalid_pixels() -> None:
    s = 2
    lr = torch.rand(3, 20, 30)
    ref = torch.rand(3, 40, 60)
    mask = torch.zeros(1, 40, 60)
    mask[:, 5:35, 10:50] = 1
    out = fill_invalid(ref, lr, mask, s)
    up = F.interpolate(lr[None], size=(40, 60), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    assert torch.allclose(out[:, mask[0] == 0], up[:, mask[0] == 0])  # invalid -> upsampled uw
    assert torch.allclose(out[:, 15:25, 20:40], ref[:, 15:25, 20:40])  # deep inside -> the tele
    assert torch.equal(fill_invalid(ref, lr, torch.ones(1, 40, 60), s), ref)
    background = torch.rand(3, 40, 60)
    out = fill_invalid(ref, lr, mask, s, background=background)
    assert torch.equal(out[:, mask[0] == 0], background[:, mask[0] == 0])  # invalid -> the background given
    assert torch.allclose(out[:, 15:25, 20:40], ref[:, 15:25, 20:40])


def test_pull_towards_reference_moves_the_output_only_where_the_reference_is_valid() -> None:
    ref = _aligned((10, 6, 20, 12), 0.8)
    ref.mask[:, :, :20] = 0  # its left half is not valid
    sr = torch.full((3, 60, 80), 0.4)
    out = zoom_module.pull_towards_reference(sr.clone(), ref, 0.25)
    inside = out[:, 2 * 6 + 6 : 2 * 18 - 6, 2 * 20 + 6 : 2 * 30 - 6]  # valid, away from the soft edge
    assert torch.allclose(inside, torch.tensor(0.4 + 0.25 * (0.8 - 0.4)))
    assert torch.equal(out[:, :, : 2 * 20], sr[:, :, : 2 * 20])  # the invalid half and the left of it
    assert torch.equal(out[:, : 2 * 6], sr[:, : 2 * 6]) and torch.equal(out[:, 2 * 18 :], sr[:, 2 * 18 :])
    pasted = zoom_module.pull_towards_reference(sr.clone(), ref, 1.0)
    assert torch.allclose(pasted[:, 2 * 6 + 6 : 2 * 18 - 6, 2 * 20 + 6 : 2 * 30 - 6], torch.tensor(0.8))
    assert torch.equal(zoom_module.pull_towards_reference(sr.clone(), ref, 0.0), sr)


def test_where_the_tele_is_not_valid_the_network_is_given_its_own_reference_free_output(
    sims: dict[str, SimulatedPair],
) -> None:
    sim = sims["picos"]
    tele = sim.tele.clone()
    h, w = tele.shape[-2:]
    torch.manual_seed(1)
    tele[:, : h // 2, : w // 2] = torch.rand(3, h // 2, w // 2)  # a quarter of the tele shows something else
    torch.manual_seed(0)
    model = create_model("dzsr-tiny", scale=2, matcher_weights="random").eval()
    z = zoom_module.zoom_photo(model, sim.uw, tele, outscale=2, zoom_ratio=2.0, device="cpu", half=False)
    assert z.aligned is not None and 0.05 < z.aligned.valid_fraction < 0.9
    x0, y0, bw, bh = z.aligned.box
    own = engine.super_resolve(model, sim.uw)[:, 2 * y0 : 2 * (y0 + bh), 2 * x0 : 2 * (x0 + bw)]
    bicubic = torch_resize(z.aligned.lr, tuple(own.shape[-2:]), "bicubic")
    far = F.max_pool2d(z.aligned.mask[None], 9, stride=1, padding=4)[0, 0] == 0  # 4 px from any valid one
    assert int(far.sum()) > 1000
    ref = z.aligned.ref[:, far]
    assert (ref - own[:, far]).abs().mean() < 0.1 * (ref - bicubic[:, far]).abs().mean()


# ------------------------------------------------------------------------------------------------ one pair


def test_zoom_writes_the_tele_density_with_exif(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    uw, _tele = pair
    before = {p: p.read_bytes() for p in pair}
    (res,) = zoom(_cfg(pair, tiny_ckpt))
    assert res.ok and res.output == uw.parent / "life_uw_out.jpg"
    src = load_photo(uw)
    out = load_photo(res.output)
    w, h = src.size
    written = res.written
    assert written is not None and written.density is not None and written.reference is not None
    assert abs(written.density - 2.0) < 0.005 and written.scale == 2 and written.tiles >= 1
    assert written.outscale == 2.0 and written.resample == 1.0  # the measured density, snapped to s
    assert out.size == written.out_size == (2 * w, 2 * h)
    assert written.zoom_ratio == pytest.approx(2.0, abs=0.01) and written.no_ref is None
    assert out.kind == "jpeg" and out.bit_depth == 8
    assert out.info.make == "dzsr" and out.info.focal_35mm == 26.0  # EXIF kept
    assert out.info.orientation == 1 and (out.info.exif_width, out.info.exif_height) == out.size
    assert {p: p.read_bytes() for p in pair} == before


def test_a_network_trained_for_looks_keeps_its_detail_outside_the_tele(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # the same random network, once as trained with l1 and once with a perceptual term: least squares
    # against the tele throws its invented detail away; the perceptual one keeps it (only β is fitted)
    torch.manual_seed(0)
    net = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    checks = {}
    for loss in ("l1", "l1+losw"):
        ckpt = save_checkpoint(net, tmp_path / f"{loss}.safetensors", metadata={"training": {"loss": loss}})
        (res,) = zoom(_cfg(pair, ckpt, out=tmp_path / f"{loss}.png", ext="png"))
        assert res.written is not None and res.written.reference is not None
        checks[loss] = res.written.reference.self_check
    plain, perceptual = checks["l1"], checks["l1+losw"]
    assert plain is not None and perceptual is not None
    assert plain.gain < 0.5 and perceptual.gain == 1.0 and perceptual.base <= 0.0


def test_output_at_the_tele_density_when_it_is_not_the_network_scale(tmp_path: Path, tiny_ckpt: Path) -> None:
    sim = simulate_pair(
        fit_within(scene("life"), 560),
        density=2.6,
        offset=(5.0, 3.0),
        rotation_deg=0.4,
        parallax=0.5,
        noise=0.005,
        seed=3,
    )
    uw, tele = write_capture(tmp_path, "r26", sim, ratio_exif=2.6, when=WHEN)
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, ext="png"))
    w, h = load_photo(uw).size
    density = res.written.density if res.written else None
    assert density is not None and abs(density - 2.6) < 0.02
    assert res.output.suffix == ".png" and load_photo(res.output).size == (
        round(density * w),
        round(density * h),
    )
    assert res.written is not None and math.isclose(res.written.resample, density / 2)


def test_sixteen_bit_tiff_with_icc_and_outscale(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    sim = sims["picos"]
    icc = srgb_icc()
    uw, tele = tmp_path / "p_uw.tif", tmp_path / "p_tele.tif"
    info = CaptureInfo(make="dzsr", model="TestPhone", focal_mm=4.25, focal_35mm=26.0, orientation=1)
    save_image(uw, sim.uw, bit_depth=16, exif=make_exif(info), icc=icc)
    save_image(tele, sim.tele, bit_depth=16, exif=make_exif(CaptureInfo(focal_35mm=52.0)), icc=icc)
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, outscale=2.5, out=tmp_path / "res"))
    assert res.output == tmp_path / "res" / "p_uw_out.tif"
    out = load_photo(res.output)
    w, h = sim.uw.shape[-1], sim.uw.shape[-2]
    assert out.size == (round(2.5 * w), round(2.5 * h))
    assert res.written is not None and math.isclose(res.written.resample, 1.25)
    assert out.bit_depth == 16 and out.kind == "tiff"
    assert out.icc == icc and out.info.model == "TestPhone"


def test_the_tele_is_pasted_where_it_lies(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[Path, Path], sims: dict[str, SimulatedPair]
) -> None:
    """With a paste-only model the output under the tele's footprint is the registered, colour-matched
    tele: much closer to the ground truth than the upsampled wide, and exactly at its place."""
    from .test_infer_engine import PasteNet

    model = PasteNet()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.fill_(-20.0)  # outside the box the output is ~0, inside it is the Ref
    info = ModelInfo(name="paste", path=Path("paste.safetensors"), scale=2, metadata={})
    monkeypatch.setattr(zoom_module, "load_model", lambda *a, **k: (model, info))
    (res,) = zoom(
        ZoomConfig(
            inputs=pair,
            out=pair[0].parent / "o.png",
            outscale=2.0,
            model="paste",
            device="cpu",
            self_check=False,
            guard=False,
        )
    )  # the network alone, outside the footprint too
    out = load_photo(res.output).pixels
    truth = sims["life"].truth
    assert res.written is not None and res.written.reference is not None
    x0, y0, w, h = res.written.reference.box
    inner = (slice(None), slice(2 * y0 + 8, 2 * (y0 + h) - 8), slice(2 * x0 + 8, 2 * (x0 + w) - 8))
    uw = load_photo(pair[0]).pixels
    bicubic = F.interpolate(uw[None], scale_factor=2, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    gain = psnr(out[inner], truth[inner]) - psnr(bicubic[inner], truth[inner])
    assert gain > 2.0, gain
    assert out[:, : 2 * y0 - 4].max() < 0.01  # nothing pasted above the footprint


def test_inputs_are_never_overwritten(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    uw, tele = pair
    before = {p: p.read_bytes() for p in pair}
    for kw in (
        {"out": uw, "overwrite": True},
        {"out": tele, "overwrite": True},
        {"suffix": "", "overwrite": True},
    ):
        with pytest.raises(ConfigError, match="input photo"):
            zoom(_cfg(pair, tiny_ckpt, **kw))
    link = uw.parent / "link.jpg"
    os.link(uw, link)
    with pytest.raises(ConfigError, match="input photo"):
        zoom(_cfg(pair, tiny_ckpt, out=link, overwrite=True))
    assert {p: p.read_bytes() for p in pair} == before


def test_existing_output_is_skipped_unless_overwrite(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    out = pair[0].parent / "done.png"
    out.write_bytes(b"previous")
    (res,) = zoom(_cfg(pair, tiny_ckpt, out=out))
    assert res.status == "skipped" and out.read_bytes() == b"previous"
    (res,) = zoom(_cfg(pair, tiny_ckpt, out=out, overwrite=True))
    assert res.ok and load_photo(out).kind == "png"


def test_a_tele_not_found_is_zoomed_without_the_reference(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    uw, _ = write_capture(tmp_path, "a", sims["life"], ratio_exif=2.0, when=WHEN)
    _, tele = write_capture(tmp_path, "b", sims["seeding"], ratio_exif=2.0, when=WHEN)
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "out.png", guard=False))
    written = res.written
    assert res.ok and written is not None and written.no_ref is not None
    assert "no overlap found between a_uw.jpg and b_tele.jpg" in written.no_ref
    assert written.reference is None and written.out_size == (2 * written.in_size[0], 2 * written.in_size[1])
    # exactly the network without the reference (the EXIF ratio sets the output scale: x2 here)
    model, _ = bundled.load_model(str(tiny_ckpt))
    lr = load_photo(uw).pixels
    plain = engine.super_resolve(model, lr, tile=0)
    assert psnr(load_photo(res.output).pixels, plain) > 45
    # the guard (the default): the network guarded everywhere, no reference being valid
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "guarded.png"))
    assert res.ok and res.written is not None and res.written.no_ref is not None
    expected = guard_flat(plain.clone(), lr)
    got = load_photo(res.output).pixels
    assert psnr(got, expected) > 45 and psnr(got, expected) > psnr(got, plain) + 3


def test_require_ref_makes_a_missing_tele_an_error(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    uw, _ = write_capture(tmp_path, "a", sims["life"], ratio_exif=2.0, when=WHEN)
    _, tele = write_capture(tmp_path, "b", sims["seeding"], ratio_exif=2.0, when=WHEN)
    with pytest.raises(AlignmentError, match=r"^no overlap found between a_uw.jpg and b_tele.jpg"):
        zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "out.png", require_ref=True))
    assert not (tmp_path / "out.png").exists()


def test_tele_wider_than_the_uw(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    uw, tele = pair
    with pytest.raises(AlignmentError, match="not narrower"):
        zoom(_cfg((tele, uw), tiny_ckpt))


def test_unreadable_and_missing_files(pair: tuple[Path, Path], tiny_ckpt: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad_uw.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match=r"bad_uw.jpg"):
        zoom(_cfg((bad, pair[1]), tiny_ckpt))
    with pytest.raises(InputError, match="no such file"):
        zoom(_cfg((tmp_path / "nope.jpg", pair[1]), tiny_ckpt))


def test_image_too_large_is_a_resource_error(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    with pytest.raises(ResourceError, match="max-megapixels"):
        zoom(_cfg(pair, tiny_ckpt, max_megapixels=0.01))


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        ZoomConfig(inputs=(Path("a"), Path("b"), Path("c")))
    with pytest.raises(ConfigError):
        ZoomConfig(inputs=(Path("a"), Path("b")), ext="bmp")
    with pytest.raises(ConfigError):
        ZoomConfig(inputs=(Path("a"), Path("b")), tile=8)
    with pytest.raises(ConfigError):
        ZoomConfig(inputs=(Path("a"), Path("b")), outscale=0)
    with pytest.raises(ConfigError, match="--ref-blend must be in"):
        ZoomConfig(inputs=(Path("a"), Path("b")), ref_blend=1.5)
    result = runner.invoke(app, ["zoom", "a.jpg", "b.jpg", "--ref-blend", "-0.1"])
    assert result.exit_code == 2 and "--ref-blend must be in [0, 1]" in result.output
    with pytest.raises(ConfigError, match="--tta must be one of 1, 2, 4, 8"):
        ZoomConfig(inputs=(Path("a"), Path("b")), tta=3)


def test_adapt_fine_tunes_a_copy_on_the_capture(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    cfg = _cfg(pair, tiny_ckpt, adapt=2, adapt_batch=1, adapt_patch=32, out=pair[0].parent / "a.png")
    plain = _cfg(pair, tiny_ckpt, out=pair[0].parent / "p.png")
    (res,) = zoom(cfg, progress=lambda stage, d, n, item: seen.append((stage, d, n)))
    (ref,) = zoom(plain)
    assert res.ok and res.written is not None
    assert res.written.model == "tiny+adapt2" and "adapt" in res.written.timings
    assert [x for x in seen if x[0] == "adapt"] == [("adapt", 1, 2), ("adapt", 2, 2)]
    adapted, untouched = load_photo(res.output).pixels, load_photo(ref.output).pixels
    assert adapted.shape == untouched.shape and not torch.equal(adapted, untouched)


def test_tta_runs_every_pass_in_its_views(pair: tuple[Path, Path], tiny_ckpt: Path) -> None:
    """``--tta 2``: the summary names it, and the output is not the single view's (the network's passes — the
    main one, the reference fill and the self-check — run mirrored too)."""
    (res,) = zoom(_cfg(pair, tiny_ckpt, tta=2, out=pair[0].parent / "t.png"))
    (one,) = zoom(_cfg(pair, tiny_ckpt, out=pair[0].parent / "o.png"))
    assert res.ok and res.written is not None and res.written.model == "tiny+tta2"
    two, single = load_photo(res.output).pixels, load_photo(one.output).pixels
    assert two.shape == single.shape and 0 < (two - single).abs().mean() < 0.05


# ------------------------------------------------------------------------------------------------ folders


def test_folder_mode(tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path) -> None:
    src = tmp_path / "captures"
    (src / "trip").mkdir(parents=True)
    write_capture(src, "life", sims["life"], ratio_exif=2.0, when=WHEN)
    write_capture(src / "trip", "picos", sims["picos"], ratio_exif=2.0, when=WHEN)
    _, bad_tele = write_capture(src, "mixed", sims["seeding"], ratio_exif=2.0, when=WHEN)
    bad_tele.write_bytes((src / "life_tele.jpg").read_bytes())  # not the same scene as mixed_uw
    results = zoom(ZoomConfig(inputs=(src,), out=tmp_path / "out", model=str(tiny_ckpt), device="cpu"))
    by_id = {r.id: r for r in results}
    assert set(by_id) == {"life", "mixed", "trip_picos"}
    assert by_id["life"].ok and by_id["life"].output == tmp_path / "out" / "life_uw_out.jpg"
    assert (
        by_id["trip_picos"].ok
        and by_id["trip_picos"].output == tmp_path / "out" / "trip" / "picos_uw_out.jpg"
    )
    written = {k: r.written for k, r in by_id.items()}
    assert all(w is not None for w in written.values())
    mixed, life, picos = (written[k] for k in ("mixed", "life", "trip_picos"))
    assert mixed and "no overlap" in (mixed.no_ref or "") and mixed.reference is None  # without the reference
    assert life and life.no_ref is None and picos and picos.no_ref is None and picos.reference is not None
    for r in by_id.values():
        assert r.written is not None and load_photo(r.output).size == r.written.out_size
    res = runner.invoke(
        app,
        ["zoom", str(src), "-o", str(tmp_path / "cli"), "-m", str(tiny_ckpt), "--device", "cpu"],
        terminal_width=300,
    )
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "3 zoomed (2 with the reference, 1 without: tele not found), 0 skipped, 0 failed" in text
    res = runner.invoke(
        app,
        [
            "zoom",
            str(src),
            "-o",
            str(tmp_path / "strict"),
            "-m",
            str(tiny_ckpt),
            "--device",
            "cpu",
            "--require-ref",
        ],
        terminal_width=300,
    )
    assert res.exit_code == 1 and "2 zoomed (2 with the reference, 0 without" in " ".join(res.output.split())
    assert not (tmp_path / "strict" / "mixed_uw_out.jpg").exists()


def test_the_far_tele_of_a_triple_capture_is_found_through_its_wide(
    tmp_path: Path, far_triple: SimulatedTriple, tiny_ckpt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wide helps find the tele where the direct match is too weak; it is not a reference here, as
    under the tele its texture (periods of 2 to 3 of its pixels) is no closer to the tele than the
    bicubic uw."""
    src = tmp_path / "captures"
    src.mkdir()
    files = write_triple(src, "far", far_triple, when=WHEN)
    with caplog.at_level(logging.INFO, logger="dzcli.pipeline.zoom"):
        (triple,) = zoom(ZoomConfig(inputs=(src,), out=tmp_path / "out", model=str(tiny_ckpt), device="cpu"))
    w = triple.written
    assert triple.ok and w is not None and w.no_ref is None and w.reference is not None
    assert w.zoom_ratio == pytest.approx(far_triple.pair.zoom_ratio, rel=0.002)  # registered: 5.928 for 5.923
    assert not w.reference.wide and w.reference.box[2] < 70
    assert "far_wide.jpg not used: under the tele it is no closer to it than the bicubic uw" in caplog.text
    (pair,) = zoom(_cfg((files["uw"], files["tele"]), tiny_ckpt, out=tmp_path / "pair.png"))  # no wide
    assert pair.written is not None and pair.written.reference is None
    assert (pair.written.no_ref or "").startswith("no overlap found between far_uw.jpg and far_tele.jpg")


def test_a_triple_captures_wide_is_the_reference_around_the_tele(
    tmp_path: Path, photo_triple: SimulatedTriple, tiny_ckpt: Path
) -> None:
    src = tmp_path / "captures"
    src.mkdir()
    write_triple(src, "life", photo_triple, when=WHEN)
    (res,) = zoom(ZoomConfig(inputs=(src,), out=tmp_path / "out", model=str(tiny_ckpt), device="cpu"))
    w = res.written
    assert w is not None and w.no_ref is None and w.reference is not None and w.reference.wide
    # the reference spans the wide's footprint (the central half of the uw, 240x160 px), the tele inside it
    x0, y0, bw, bh = w.reference.box
    cx, cy = photo_triple.wide_center
    assert abs(x0 + bw / 2 - cx) < 3 and abs(y0 + bh / 2 - cy) < 3 and 225 <= bw <= 245 and 150 <= bh <= 165
    (tele_only,) = zoom(
        ZoomConfig(inputs=(src,), out=tmp_path / "tele_only", model=str(tiny_ckpt), device="cpu", wide=False)
    )
    t = tele_only.written
    assert t is not None and t.reference is not None and not t.reference.wide
    assert t.reference.box[2] < 125 and t.zoom_ratio == pytest.approx(w.zoom_ratio)


def test_wide_photo_makes_two_files_a_triple_capture(
    tmp_path: Path, photo_triple: SimulatedTriple, tiny_ckpt: Path
) -> None:
    files = write_triple(tmp_path, "life", photo_triple, when=WHEN)
    args = ["zoom", str(files["uw"]), str(files["tele"]), "--wide-photo", str(files["wide"])]
    args += ["-o", str(tmp_path / "out.png"), "-m", str(tiny_ckpt), "--device", "cpu"]
    res = runner.invoke(app, args, terminal_width=300)
    assert res.exit_code == 0, res.output
    assert "the wide around the tele" in " ".join(res.output.split())
    with pytest.raises(ConfigError, match="--wide-photo goes with UW TELE"):
        ZoomConfig(inputs=(tmp_path,), wide_photo=files["wide"])
    with pytest.raises(InputError, match=r"missing\.jpg: no such file"):
        zoom(_cfg((files["uw"], files["tele"]), tiny_ckpt, wide_photo=tmp_path / "missing.jpg"))


def test_a_triple_capture_whose_tele_is_not_found_is_zoomed_with_its_wide(
    tmp_path: Path, photo_triple: SimulatedTriple, tiny_ckpt: Path
) -> None:
    files = write_triple(tmp_path, "life", photo_triple, when=WHEN)
    save_image(files["tele"], scene("picos")[:, :200, :300])  # another scene: the tele is not found
    args = ["zoom", str(files["uw"]), str(files["tele"]), "--wide-photo", str(files["wide"])]
    args += ["-o", str(tmp_path / "out.png"), "-m", str(tiny_ckpt), "--device", "cpu", "--outscale", "2"]
    res = runner.invoke(app, args, terminal_width=300)
    assert res.exit_code == 0, res.output
    assert "zoomed with the wide as the reference" in " ".join(res.output.split())
    (alone,) = zoom(_cfg((files["uw"], files["tele"]), tiny_ckpt, out=tmp_path / "alone.png", outscale=2.0))
    assert alone.written is not None and alone.written.reference is None  # without the wide: no reference


def test_a_triple_camera_model_gets_the_wide_as_its_second_reference(
    tmp_path: Path, photo_triple: SimulatedTriple, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = create_model("tzsr-tiny", scale=2, ref2_scale=2, matcher_weights="random")
    ckpt = save_checkpoint(model, tmp_path / "tzsr.safetensors", metadata={})
    src = tmp_path / "captures"
    src.mkdir()
    write_triple(src, "life", photo_triple, when=WHEN)
    seen: list[tuple[object, object, object]] = []
    run = engine.super_resolve

    def spy(model, lr, **kw):  # type: ignore[no-untyped-def]
        seen.append((kw.get("box"), kw.get("ref2"), kw.get("box2")))
        return run(model, lr, **kw)

    monkeypatch.setattr(zoom_module, "super_resolve", spy)
    (res,) = zoom(ZoomConfig(inputs=(src,), out=tmp_path / "out", model=str(ckpt), device="cpu"))
    w = res.written
    assert w is not None and w.reference is not None and w.reference.wide
    (box, ref2, box2), *_ = seen
    assert isinstance(box, tuple) and isinstance(box2, tuple) and isinstance(ref2, torch.Tensor)
    assert box2[2] > 2 * box[2] and ref2.shape[-2:] == (2 * box2[3], 2 * box2[2])  # the wide, at x2
    assert w.reference.box == box  # the tele's own footprint: the wide was not merged into it


# ------------------------------------------------------------------------------------------------ bundled models


def test_bundled_default_model_and_models_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_ckpt: Path, pair: tuple[Path, Path]
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "tiny-x2.safetensors").write_bytes(tiny_ckpt.read_bytes())
    (weights / "tiny-x2.md").write_text("# tiny-x2\n\nA test card, first paragraph.\n\nMore.\n")
    (weights / "other-x4.safetensors").write_bytes(tiny_ckpt.read_bytes())
    digest = hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    table = (
        BundledModel("dzsr-small-x2", "tiny-x2.safetensors", digest, 2, "tiny-x2.md", "MIT", weights),
        BundledModel(
            "other-x4", "other-x4.safetensors", digest, 4, "none.md", "MIT", weights, automatic=False
        ),
    )
    monkeypatch.setattr(bundled, "BUNDLED", table)
    assert table[0].summary == "A test card, first paragraph." and table[1].summary == ""
    res = runner.invoke(app, ["models"], terminal_width=300)
    assert res.exit_code == 0 and "dzsr-small-x2 (default)" in res.output and digest in res.output
    rows = {line.split()[1]: line for line in res.output.splitlines() if "MIT" in line}
    assert "by output scale" in rows["dzsr-small-x2"] and "with -m only" in rows["other-x4"]
    params = sum(p.numel() for p in create_model("dzsr-tiny", scale=2).state_dict().values())
    assert f"{params:,}" in res.output
    (r,) = zoom(ZoomConfig(inputs=pair, device="cpu"))  # no --model: the bundled default
    assert r.ok and r.written is not None and r.written.model == "dzsr-small-x2"
    with pytest.raises(WeightsError, match="unknown model 'nope'"):
        bundled.load_model("nope")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_zoom_summary_and_errors(pair: tuple[Path, Path], tiny_ckpt: Path, tmp_path: Path) -> None:
    uw, tele = pair
    out = tmp_path / "cli.png"
    res = runner.invoke(
        app,
        ["zoom", str(uw), str(tele), "-o", str(out), "-m", str(tiny_ckpt), "--device", "cpu", "-t", "128"],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert "life_uw.jpg ->" in res.output and "x2 network tiny" in res.output and "tiles" in res.output
    assert load_photo(out).kind == "png"
    res = runner.invoke(app, ["zoom", str(tele), str(uw), "-m", str(tiny_ckpt)])
    assert res.exit_code == 4 and "not narrower" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["zoom", str(uw), str(uw), "-m", str(tiny_ckpt)])  # the same photo twice
    assert res.exit_code == 4 and "not narrower" in res.output and "Traceback" not in res.output


def test_cli_zoom_without_the_tele(tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path) -> None:
    uw, _ = write_capture(tmp_path, "a", sims["life"], ratio_exif=2.0, when=WHEN)
    _, tele = write_capture(tmp_path, "b", sims["seeding"], ratio_exif=2.0, when=WHEN)
    out = tmp_path / "o.png"
    args = ["zoom", str(uw), str(tele), "-o", str(out), "-m", str(tiny_ckpt), "--device", "cpu"]
    res = runner.invoke(app, args, terminal_width=400)
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "tele not found (no overlap found between a_uw.jpg and b_tele.jpg" in text
    assert "zoomed without the reference" in text and load_photo(out).size == (
        2 * sims["life"].uw.shape[2],
        2 * sims["life"].uw.shape[1],
    )
    assert "flat areas guarded" in text  # the default
    guarded = load_photo(out).pixels
    out.unlink()
    res = runner.invoke(app, [*args, "--no-guard"], terminal_width=400)
    assert res.exit_code == 0 and "flat areas guarded" not in " ".join(res.output.split())
    assert psnr(load_photo(out).pixels, guarded) < 60  # the guard changed the output
    out.unlink()
    res = runner.invoke(app, [*args, "--require-ref"], terminal_width=400)
    assert res.exit_code == 4 and "error: no overlap found between a_uw.jpg and b_tele.jpg" in res.output
    assert not out.exists() and "Traceback" not in res.output
    res = runner.invoke(app, ["zoom", str(uw), str(tele), "-o", str(uw), "--overwrite", "-m", str(tiny_ckpt)])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output
    res = runner.invoke(app, ["zoom", str(uw), str(tele), "-m", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 7 and "not found" in res.output


# ------------------------------------------------------------------------------------------------ outputs


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the network ran although the output cannot be written")


def test_unwritable_outputs_are_found_before_the_work(
    pair: tuple[Path, Path], tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uw, tele = pair
    monkeypatch.setattr(zoom_module, "super_resolve", _no_work)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    res = runner.invoke(
        app, ["zoom", str(uw), str(tele), "-o", str(blocker / "out.png"), "-m", str(tiny_ckpt)]
    )
    assert res.exit_code == 8 and "out.png: cannot write" in res.output and "not a folder" in res.output
    assert "Traceback" not in res.output and ".tmp" not in res.output

    class Full:
        free = 1024

    monkeypatch.setattr("dzcli.io.atomic.shutil.disk_usage", lambda p: Full())
    with pytest.raises(OutputError, match=r"out\.png: not enough free space on its disk \(1\.0 KiB free"):
        zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "out.png"))
    assert not (tmp_path / "out.png").exists()


def test_a_temp_file_left_by_a_killed_run_is_removed(
    pair: tuple[Path, Path], tiny_ckpt: Path, tmp_path: Path
) -> None:
    uw, tele = pair
    stale = tmp_path / ".out.png.00aa11bb22cc.tmp"
    stale.write_bytes(b"")  # kill -9 during the write leaves this
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "out.png"))
    assert res.ok and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_and_ext_must_agree_and_conversions_are_said(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    uw, tele = write_capture(tmp_path, "life", sims["life"], ratio_exif=2.0, when=WHEN)
    with pytest.raises(ConfigError, match=r"-o .*x\.png and --ext jpg disagree"):
        zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "x.png", ext="jpg"))
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "x.jpeg", ext="jpg"))  # the same format
    assert res.ok and res.written is not None and res.written.notes == ()
    uw16, tele16 = tmp_path / "d_uw.png", tmp_path / "d_tele.png"
    save_image(uw16, load_photo(uw).pixels, bit_depth=16, exif=load_photo(uw).exif)
    save_image(tele16, load_photo(tele).pixels, bit_depth=16, exif=load_photo(tele).exif)
    res = runner.invoke(
        app,
        ["zoom", str(uw16), str(tele16), "--ext", "jpg", "-m", str(tiny_ckpt), "--device", "cpu"],
        terminal_width=250,
    )
    assert res.exit_code == 0, res.output
    assert "16-bit input written as 8-bit (.jpg holds 8 bits" in res.output
    assert load_photo(tmp_path / "d_uw_out.jpg").bit_depth == 8


def _soft_disc(h: int, w: int) -> torch.Tensor:
    """An alpha channel ``(1, h, w)``: opaque in the middle, fading out, transparent in the corners."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return (1.6 - 1.2 * torch.hypot(xx, yy)).clamp(0, 1)[None]


def test_alpha_is_upscaled_where_the_format_holds_it_and_said_dropped_where_not(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    uw_jpg, tele = write_capture(folder, "a", sims["life"], ratio_exif=2.0, when=WHEN)
    src = load_photo(uw_jpg)
    w, h = src.size
    uw = folder / "a_uw.png"
    save_image(uw, src.pixels, exif=src.exif, alpha=_soft_disc(h, w))
    uw_jpg.unlink()
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt))
    assert res.ok and res.output.suffix == ".png" and res.written is not None and res.written.notes == ()
    alpha = load_photo(res.output).alpha
    assert alpha is not None and alpha.shape == (1, 2 * h, 2 * w)
    expected = torch_resize(load_photo(uw).alpha, (2 * h, 2 * w), "bicubic", antialias=True)
    assert (alpha - expected).abs().max() <= 0.5 / 255 + 1e-6  # bicubic, then 8-bit levels
    assert alpha[0, 0, 0] == 0 and alpha[0, h, w] == 1
    res = runner.invoke(
        app,
        [
            "zoom",
            str(folder),
            "--ext",
            "jpg",
            "-o",
            str(tmp_path / "jpg"),
            "-m",
            str(tiny_ckpt),
            "--device",
            "cpu",
        ],
        terminal_width=300,
    )
    assert res.exit_code == 0, res.output
    assert "a_uw.png -> " in res.output
    assert "alpha channel dropped (.jpg holds none; use --ext png, tif, webp or heic)" in " ".join(
        res.output.split()
    )
    assert load_photo(tmp_path / "jpg" / "a_uw_out.jpg").alpha is None


def test_xmp_is_kept_with_the_new_size(
    tmp_path: Path, sims: dict[str, SimulatedPair], tiny_ckpt: Path
) -> None:
    uw, tele = write_capture(tmp_path, "x", sims["life"], ratio_exif=2.0, when=WHEN)
    src = load_photo(uw)
    save_image(uw, src.pixels, exif=src.exif, xmp=XMP, quality=95)  # a rating, sizes of another image
    (res,) = zoom(_cfg((uw, tele), tiny_ckpt))
    xmp = read_xmp(res.output)
    assert res.ok and res.output.suffix == ".jpg" and xmp is not None and res.written is not None
    w, h = res.written.out_size
    fields = _xmp_fields(xmp)
    assert fields["xmp:Rating"] == "4" and fields["tiff:Orientation"] == "1"
    assert (fields["tiff:ImageWidth"], fields["tiff:ImageLength"]) == (str(w), str(h))
    assert (fields["exif:PixelXDimension"], fields["exif:PixelYDimension"]) == (str(w), str(h))
    assert b'xmpMM:softwareAgent="Darktable"' in xmp  # the rest of the packet as it was


def test_library_chatter_reaches_the_terminal_only_with_verbose(
    pair: tuple[Path, Path],
    tiny_ckpt: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libjpeg prints "Corrupt JPEG data" on stderr itself, Python prints libraries' warnings: both become
    log records, shown only with -v, and nothing reaches stderr past logging."""
    uw, tele = pair
    data = uw.read_bytes()
    uw.write_bytes(data[:-2] + bytes(50) + data[-2:])  # junk before the end marker
    calls = []

    def chatty(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        calls.append(size)
        warnings.warn(f"a library's warning {len(calls)}", UserWarning, stacklevel=1)
        return resample(img, size)

    monkeypatch.setattr(zoom_module, "resample", chatty)
    logging.captureWarnings(False)  # pytest undid an earlier CLI run's capture; let this run capture anew
    args = ["zoom", str(uw), str(tele), "-m", str(tiny_ckpt), "--device", "cpu"]
    capfd.readouterr()
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "quiet.png")], terminal_width=300)
    err = capfd.readouterr().err
    assert res.exit_code == 0, res.output
    assert "Corrupt JPEG" not in err + res.output and "library's warning" not in err + res.output
    res = runner.invoke(app, ["-v", *args, "-o", str(tmp_path / "verbose.png")], terminal_width=300)
    err = capfd.readouterr().err
    assert res.exit_code == 0, res.output
    assert "Corrupt JPEG" not in err and "library's warning" not in err
    text = " ".join(res.output.split())
    assert "life_uw.jpg: Corrupt JPEG data:" in text and "extraneous bytes before marker 0xd9" in text
    assert "a library's warning 2" in text and len(calls) == 2


def test_beyond_the_networks_scale_the_tele_is_pasted_at_its_own_density(
    tmp_path: Path, tiny_ckpt: Path
) -> None:
    """A x2 network on a x4 capture: inside the tele's footprint the output gets the tele's own detail above
    x2 (closer to the truth than the network's x2 output resampled to x4), and the summary says so."""
    big = torch_resize(scene("picos"), (960, 1280), "bicubic").clamp(0, 1)  # a 320x240 wide photo at x4
    sim = simulate_pair(big, density=4.0, offset=(3.0, -2.0), rotation_deg=0.4, seed=3)
    uw, tele = write_capture(tmp_path, "x4", sim, ratio_exif=4.0, when=WHEN)
    (pasted,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "p.png"))
    (plain,) = zoom(_cfg((uw, tele), tiny_ckpt, out=tmp_path / "n.png", paste=False))
    assert pasted.written and pasted.written.reference and pasted.written.reference.pasted
    assert plain.written and plain.written.reference and not plain.written.reference.pasted
    assert pasted.written.outscale == pytest.approx(4.0, abs=0.05)
    truth = sim.truth
    x0, y0, w, h = pasted.written.reference.box
    inner = (slice(None), slice(4 * y0 + 40, 4 * (y0 + h) - 40), slice(4 * x0 + 40, 4 * (x0 + w) - 40))

    def psnr(path: Path) -> float:
        out = load_photo(path).pixels[:, : truth.shape[1], : truth.shape[2]]
        return float(-10 * torch.log10(((out - truth)[inner] ** 2).mean()))

    assert psnr(tmp_path / "p.png") > psnr(tmp_path / "n.png") + 0.3
    outside = (slice(None), slice(0, 4 * y0 - 4), slice(None))  # above the footprint: the network alone
    assert torch.equal(
        load_photo(tmp_path / "p.png").pixels[outside], load_photo(tmp_path / "n.png").pixels[outside]
    )
    res = runner.invoke(
        app, ["zoom", str(uw), str(tele), "-o", str(tmp_path / "c.png"), "-m", str(tiny_ckpt)]
    )
    assert res.exit_code == 0 and "the tele pasted at x4.00 in its footprint" in " ".join(res.output.split())
