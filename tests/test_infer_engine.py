"""super_resolve: tiled equals untiled where it must, Ref windows land where they belong, OOM fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.errors import ConfigError, InputError, ResourceError
from dzcli.infer import engine
from dzcli.infer.devices import available_memory, resolve_device
from dzcli.infer.engine import RefWindows, clip_reference, describe, global_vector, super_resolve
from dzcli.infer.tiling import Tile
from dzsr_models import create_model
from dzsr_models.descriptor import ModelDescriptor

from .conftest import scene

CPU = torch.device("cpu")


class PasteNet(nn.Module):
    """A ×s toy with a 3×3 receptive field that pastes the Ref's pixels at ``box`` (like DZSR)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.2)
        self.calls: list[
            tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, int, int, int] | None]
        ] = []

    def describe(self) -> ModelDescriptor:
        return ModelDescriptor(scale=self.scale, supports_half=False, bytes_per_pixel=64.0)

    def forward(
        self, lr: Tensor, ref: Tensor | None = None, box: tuple[int, int, int, int] | None = None
    ) -> Tensor:
        self.calls.append((tuple(lr.shape), None if ref is None else tuple(ref.shape), box))
        s = self.scale
        out = F.interpolate(torch.sigmoid(self.conv(lr)), scale_factor=s, mode="nearest")
        if ref is not None and box is not None:
            H, W = lr.shape[-2:]
            x0, y0, w, h = box
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
            if ix1 > ix0 and iy1 > iy0:
                out = out.clone()
                out[..., s * iy0 : s * iy1, s * ix0 : s * ix1] = ref[
                    ..., s * (iy0 - y0) : s * (iy1 - y0), s * (ix0 - x0) : s * (ix1 - x0)
                ]
        return out


def _tiny(scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create_model("dzsr-tiny", scale=scale, matcher_weights="random")


def _inputs(h: int = 90, w: int = 120, box: tuple[int, int, int, int] = (40, 25, 44, 36), s: int = 2):
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(3, h, w, generator=g)
    ref = torch.rand(3, s * box[3], s * box[2], generator=g)
    return lr, ref, box


def test_untiled_equals_the_models_own_forward() -> None:
    model = _tiny()
    lr, ref, box = _inputs()
    out = super_resolve(model, lr, ref=ref, box=box, tile=1000)
    with torch.no_grad():
        direct = model.eval()(lr[None], ref[None], box)[0].clamp(0, 1)
    assert out.shape == (3, 180, 240) and out.dtype == torch.float32
    assert (out - direct).abs().max() < 1e-5
    auto = super_resolve(model, lr, ref=ref, box=box, tile=0)  # automatic tile >= this small image
    assert (auto - out).abs().max() < 1e-6


def test_a_triple_camera_model_gets_its_middle_reference_tile_by_tile() -> None:
    torch.manual_seed(0)
    model = create_model("tzsr-tiny", scale=2, ref2_scale=2, matcher_weights="random")
    lr, ref, box = _inputs()
    ref2, box2 = torch.rand(3, 2 * 60, 2 * 80), (20, 15, 80, 60)
    out = super_resolve(model, lr, ref=ref, box=box, ref2=ref2, box2=box2, tile=1000)
    with torch.no_grad():
        direct = model.eval()(lr[None], ref[None], box, ref2=ref2[None], box2=box2)[0].clamp(0, 1)
    assert (out - direct).abs().max() < 1e-5
    effect = (out - super_resolve(model, lr, ref=ref, box=box, tile=1000)).abs().mean()
    assert effect > 5e-5  # the middle reference is used
    tiled = super_resolve(model, lr, ref=ref, box=box, ref2=ref2, box2=box2, tile=48, overlap=16)
    assert (tiled - out).abs().mean() < 0.2 * effect  # the tiles see it where it lies
    with pytest.raises(InputError, match="ref2 given to a model without"):
        super_resolve(_tiny(), lr, ref=ref, box=box, ref2=ref2, box2=box2)


def test_tiled_equals_untiled_dzsr_without_reference() -> None:
    """DZSR-tiny without Ref is a CNN with a ~9 LR px receptive field: overlap 40 keeps it exact."""
    model = _tiny()
    lr, _, _ = _inputs(83, 131)
    whole = super_resolve(model, lr, tile=0)
    tiled = super_resolve(model, lr, tile=64, overlap=40)
    assert (whole - tiled).abs().max() < 1e-4


def test_tiled_with_reference_pastes_it_where_it_lies() -> None:
    """Every tile meeting the box gets the Ref at its true position: tiled == untiled, exactly."""
    model = PasteNet()
    lr, ref, box = _inputs()
    whole = super_resolve(model, lr, ref=ref, box=box, tile=0)
    x0, y0, w, h = box
    assert torch.equal(whole[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)], ref)
    for tile, overlap in [(32, 8), (48, 16), (40, 4)]:
        tiled = super_resolve(model, lr, ref=ref, box=box, tile=tile, overlap=overlap)
        assert (whole - tiled).abs().max() < 1e-5, (tile, overlap)


def test_tiles_far_from_the_ref_run_without_it() -> None:
    model = PasteNet()
    lr, ref, box = _inputs()
    model.calls.clear()
    super_resolve(model, lr, ref=ref, box=box, tile=32, overlap=8)
    assert any(r is None and b is None for _, r, b in model.calls)
    assert any(r is not None for _, r, _ in model.calls)
    for _, ref_shape, b in model.calls:
        if b is not None:
            assert ref_shape is not None and (ref_shape[-1] // 2, ref_shape[-2] // 2) == (b[2], b[3])


def test_a_ref_needs_its_box() -> None:
    lr, ref, _ = _inputs()
    with pytest.raises(InputError, match="needs its box"):
        super_resolve(PasteNet(), lr, ref=ref)


def test_window_meeting_the_box_is_in_tile_coordinates() -> None:
    s = 2
    ref = torch.arange(s * 40 * s * 60, dtype=torch.float32).reshape(1, s * 40, s * 60).repeat(3, 1, 1)
    windows = RefWindows(ref, (30, 20, 60, 40), s, context=4)
    tile = Tile(x0=20, y0=10, w=32, h=32, row=0, col=0)
    window, b = windows.window(tile)
    assert b is not None
    bx, by, bw, bh = b
    assert window.shape == (3, s * bh, s * bw)
    # The window's top-left lies at tile + (bx, by) = image (30, 20) = the Ref's top-left (clamped).
    assert (tile.x0 + bx, tile.y0 + by) == (30, 20)
    assert (bw, bh) == (20 + 32 + 4 - 30, 10 + 32 + 4 - 20)  # up to the tile's far side + context
    assert torch.equal(window, ref[:, : s * bh, : s * bw])
    assert windows.window(Tile(x0=95, y0=10, w=32, h=32, row=0, col=1)) == (None, None)  # > 4 px away


def test_windows_start_on_the_models_grid() -> None:
    s = 2
    ref = torch.rand(3, s * 80, s * 100)
    windows = RefWindows(ref, (13, 7, 100, 80), s, context=5, grid=4)
    for x0, y0 in [(30, 21), (47, 50), (90, 3)]:
        window, (bx, by, bw, bh) = windows.window(Tile(x0=x0, y0=y0, w=24, h=24, row=0, col=0))
        rx, ry = x0 + bx - 13, y0 + by - 7  # the window's origin relative to the Ref's
        assert rx % 4 == 0 and ry % 4 == 0
        assert rx <= max(x0 - 5 - 13, 0) and ry <= max(y0 - 5 - 7, 0)  # it holds the context
        assert torch.equal(window, ref[:, s * ry : s * (ry + bh), s * rx : s * (rx + bw)])


def test_global_vector_once_and_bounded() -> None:
    model = _tiny()
    stride = describe(model).gvec_stride
    assert stride == 8
    lr, ref, box = _inputs(200, 260, (20, 30, 200, 150))
    exact = model.eval().global_vector(lr[None], ref[None], box)
    with torch.no_grad():
        one = global_vector(model, stride, lr, ref, box, device=CPU)
        many = global_vector(model, stride, lr, ref, box, device=CPU, window=64)
        few = global_vector(model, stride, lr, ref, box, device=CPU, window=32, max_windows=4)
    assert (one - exact).abs().max() < 1e-6  # fits in one window: exactly the model's
    assert (many - exact).abs().max() < 0.2 * exact.abs().max() + 1e-3  # windows approximate the pooled mean
    assert few.shape == exact.shape


def test_restores_training_mode() -> None:
    model = _tiny()
    model.train()
    lr, ref, box = _inputs(40, 50, (10, 10, 20, 16))
    super_resolve(model, lr, ref=ref, box=box)
    assert model.training


def test_progress_counts_tiles() -> None:
    seen: list[tuple[int, int]] = []
    lr, ref, box = _inputs()
    super_resolve(
        PasteNet(), lr, ref=ref, box=box, tile=48, overlap=8, progress=lambda d, n: seen.append((d, n))
    )
    assert seen and seen[-1][0] == seen[-1][1] == len(seen)


class FlakyMemoryNet(PasteNet):
    """Runs out of (pretend CUDA) memory on tiles larger than ``limit`` pixels a side."""

    def __init__(self, limit: int, error: Exception | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.error = error or torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def forward(self, lr: Tensor, ref: Tensor | None = None, box=None) -> Tensor:
        if max(lr.shape[-2:]) > self.limit:
            raise self.error
        return super().forward(lr, ref, box)


def test_out_of_memory_halves_the_tile_and_resumes(caplog: pytest.LogCaptureFixture) -> None:
    lr, ref, box = _inputs()
    model = FlakyMemoryNet(limit=40)
    plain = PasteNet()
    plain.conv.load_state_dict(model.conv.state_dict())
    with caplog.at_level(logging.WARNING):
        out = super_resolve(model, lr, ref=ref, box=box, tile=128, overlap=16)
    # 120x90 fails -> 60-px tiles; a 51x53 one still fails -> 32-px tiles; then everything fits.
    assert "out of memory on cpu with a 120x90 tile: continuing with 60-px tiles" in caplog.text
    assert "continuing with 32-px tiles" in caplog.text
    assert (out - super_resolve(plain, lr, ref=ref, box=box, tile=0)).abs().max() < 1e-5
    with pytest.raises(ResourceError, match="out of memory"):
        super_resolve(FlakyMemoryNet(limit=10), lr, ref=ref, box=box, tile=64)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("could not create a primitive"),  # oneDNN under memory pressure
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 8589934592 bytes."
        ),
        MemoryError(),
    ],
)
def test_cpu_out_of_memory_in_any_wording_takes_the_tile_halving_path(error: Exception) -> None:
    lr, ref, box = _inputs()
    model = FlakyMemoryNet(limit=40, error=error)
    plain = PasteNet()
    plain.conv.load_state_dict(model.conv.state_dict())
    out = super_resolve(model, lr, ref=ref, box=box, tile=128, overlap=16)
    assert (out - super_resolve(plain, lr, ref=ref, box=box, tile=0)).abs().max() < 1e-5
    with pytest.raises(RuntimeError, match="a real bug"):  # other errors are not taken for memory
        super_resolve(
            FlakyMemoryNet(limit=10, error=RuntimeError("a real bug")), lr, ref=ref, box=box, tile=64
        )


def test_box_is_clipped_to_the_image() -> None:
    s = 2
    ref = torch.rand(3, s * 20, s * 30)
    clipped, b = clip_reference(ref, (-10, 85, 30, 20), 90, 120, s)
    assert b == (0, 85, 20, 5)
    assert torch.equal(clipped, ref[:, : s * 5, s * 10 :])
    assert clip_reference(ref, (200, 0, 30, 20), 90, 120, s) == (None, None)
    lr = torch.rand(3, 90, 120)
    out = super_resolve(PasteNet(), lr, ref=ref, box=(-10, 85, 30, 20), tile=0)
    assert torch.equal(out[:, 2 * 85 :, :40], ref[:, : s * 5, s * 10 :])


def test_bad_inputs_and_devices() -> None:
    lr, ref, box = _inputs()
    with pytest.raises(InputError):
        super_resolve(PasteNet(), lr, ref=ref[:, :-2], box=box)
    with pytest.raises(InputError):
        super_resolve(PasteNet(), lr[0], ref=ref, box=box)
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_choose_bundled_prefers_the_closest_scale_then_the_default(tmp_path) -> None:
    from dzcli.errors import WeightsError
    from dzsr_models.bundled import DEFAULT_MODEL, BundledModel, choose_bundled

    def m(name: str, scale: int, automatic: bool = True) -> BundledModel:
        return BundledModel(
            name, f"{name}.safetensors", "0" * 64, scale, f"{name}.md", "MIT", tmp_path, automatic
        )

    models = (m("a-x2", 2), m(DEFAULT_MODEL, 2), m("b-x4", 4))
    assert choose_bundled(2.1, models).name == DEFAULT_MODEL
    assert choose_bundled(3.5, models).name == "b-x4"
    assert choose_bundled(8**0.5, models).name == "b-x4"  # equally far in log scale: the larger s
    assert choose_bundled(None, models).scale == 2
    # a model kept out of the automatic choice is never picked, whatever the scale
    manual = (m(DEFAULT_MODEL, 2), m("c-x4", 4, automatic=False))
    assert choose_bundled(4.0, manual).name == DEFAULT_MODEL
    with pytest.raises(WeightsError, match="no bundled model"):
        choose_bundled(4.0, manual[1:])
    with pytest.raises(WeightsError, match="no bundled model"):
        choose_bundled(2.0, ())


def test_auto_tile_fits_memory_and_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    desc = describe(_tiny())
    monkeypatch.setattr(engine, "available_memory", lambda device: 64 << 30)
    assert engine.auto_tile(desc, CPU) == engine.MAX_AUTO_TILE["cpu"]
    monkeypatch.setattr(engine, "available_memory", lambda device: 200 << 20)
    small = engine.auto_tile(desc, CPU)
    assert engine.MIN_TILE <= small < engine.MAX_AUTO_TILE["cpu"] and small % 16 == 0
    monkeypatch.setattr(engine, "available_memory", lambda device: 1 << 20)
    assert engine.auto_tile(desc, CPU) == engine.MIN_TILE


def test_available_memory_is_positive() -> None:
    assert available_memory(CPU) > 0


def test_a_model_without_a_descriptor_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not describe itself"):
        super_resolve(nn.Conv2d(3, 3, 3), torch.rand(3, 8, 8))


class ContextNet(nn.Module):
    """A toy that is not DZSR: it reads the Ref up to ``context`` LR px around each pixel and has a global
    vector (the mean colour of the LR under the Ref, pooled by 4), and says so in its descriptor."""

    def __init__(self, context: int = 3, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.context = scale, context
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...] | None, object, Tensor | None]] = []

    def describe(self) -> ModelDescriptor:
        return ModelDescriptor(
            scale=self.scale,
            supports_half=False,
            bytes_per_pixel=64.0,
            ref_context=self.context,
            ref_grid=4,
            gvec_stride=4,
        )

    def global_vector(self, lr: Tensor, ref: Tensor | None, box: object) -> Tensor:
        return F.avg_pool2d(lr, 4, ceil_mode=True).mean(dim=(2, 3))  # (B, 3)

    def forward(self, lr: Tensor, ref: Tensor | None, box: object, *, gvec: Tensor) -> Tensor:
        self.calls.append((tuple(lr.shape), None if ref is None else tuple(ref.shape), box, gvec))
        s, c = self.scale, self.context
        out = F.interpolate(lr, scale_factor=s, mode="nearest") + gvec.view(1, 3, 1, 1)
        if ref is not None:
            x0, y0, w, h = box  # type: ignore[misc]
            # every LR pixel within c px of the Ref gets the mean of the Ref's LR pixels within c px of it
            small = F.avg_pool2d(ref, s)
            canvas = torch.zeros(1, 4, lr.shape[-2] + 2 * c, lr.shape[-1] + 2 * c)
            piece = torch.cat((small, torch.ones_like(small[:, :1])), dim=1)
            ax0, ay0 = x0 + c, y0 + c
            cx0, cy0 = max(ax0, 0), max(ay0, 0)
            cx1, cy1 = min(ax0 + w, canvas.shape[-1]), min(ay0 + h, canvas.shape[-2])
            canvas[..., cy0:cy1, cx0:cx1] = piece[..., cy0 - ay0 : cy1 - ay0, cx0 - ax0 : cx1 - ax0]
            summed = F.avg_pool2d(canvas, 2 * c + 1, stride=1) * (2 * c + 1) ** 2
            mean = summed[:, :3] / summed[:, 3:].clamp_min(1)
            out = out + F.interpolate(mean, scale_factor=s, mode="nearest")
        return out.clamp(0, 1) * 0.5


def test_a_toy_models_descriptor_drives_the_engine() -> None:
    """No DZSR code involved: windows widened by the toy's context on its grid, far tiles without the
    Ref, the global vector passed to every tile; so its tiled output equals its untiled one exactly."""
    toy = ContextNet(context=3)
    lr, ref, box = _inputs(90, 120, (41, 26, 44, 36))
    whole = super_resolve(toy, lr, ref=ref, box=box, tile=1000)
    ((_, r, b, gvec),) = toy.calls
    assert r == (1, 3, 72, 88) and b == (41, 26, 44, 36)
    torch.testing.assert_close(gvec, toy.global_vector(lr[None, :, 26:62, 41:85], None, None))
    toy.calls.clear()
    tiled = super_resolve(toy, lr, ref=ref, box=box, tile=24, overlap=4)
    assert (whole - tiled).abs().max() < 1e-6
    near = [c for c in toy.calls if c[1] is not None]
    assert near and any(c[1] is None and c[2] is None for c in toy.calls)
    assert all(torch.equal(c[3], gvec) for c in toy.calls)


def test_tiled_equals_untiled_within_the_stated_tolerance() -> None:
    """The bundled model with a reference and 64-px tiles: within 1/255 on all but 0.05 % of the pixels (and
    under 2/255 everywhere) at the default overlap, within 1/255 everywhere at overlap 32 (README)."""
    from dzsr_models.bundled import load_model

    model, _ = load_model(None)
    hr = scene("life")[:, 100:260, 200:400]
    lr = F.interpolate(hr[None], scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)[0]
    lr = lr.clamp(0, 1)
    box = (19, 13, 51, 43)
    x0, y0, w, h = box
    ref = hr[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)]
    whole = super_resolve(model, lr, ref=ref, box=box, tile=1000)
    diff = (whole - super_resolve(model, lr, ref=ref, box=box, tile=64)).abs()
    assert 0 < diff.max() < 2 / 255 and (diff > 1 / 255).float().mean() < 5e-4, diff.max() * 255
    wide = (whole - super_resolve(model, lr, ref=ref, box=box, tile=64, overlap=32)).abs()
    assert 0 < wide.max() < 1 / 255, wide.max() * 255


def test_tiles_near_the_ref_but_beyond_the_matchers_reach() -> None:
    """A tile within the Ref context but farther than the local search reaches gets a Ref window with no
    candidate for any of its cells: it runs, and gives what the untiled run gives there."""
    model = _tiny()
    lr, ref, box = _inputs(120, 160, (64, 52, 20, 16))
    whole = super_resolve(model, lr, ref=ref, box=box, tile=1000)
    tiled = super_resolve(model, lr, ref=ref, box=box, tile=32, overlap=16)
    assert (whole - tiled).abs().max() < 1 / 255  # the stated tolerance


@pytest.mark.parametrize("view", engine.tta_views(8))
def test_a_view_and_its_box_map_back(view: engine.View) -> None:
    """A box drawn in a photo lands, in the viewed photo, exactly where ``view_box`` says; unview undoes."""
    x = torch.zeros(1, 30, 50)
    x0, y0, w, h = 7, 4, 12, 9
    x[:, y0 : y0 + h, x0 : x0 + w] = 1.0
    seen = engine.view_image(x, view)
    bx, by, bw, bh = engine.view_box((x0, y0, w, h), 50, 30, view)
    expected = torch.zeros_like(seen)
    expected[:, by : by + bh, bx : bx + bw] = 1.0
    assert torch.equal(seen, expected)
    assert torch.equal(engine.unview_image(seen, view), x)


def test_tta_with_a_reference_keeps_it_where_it_lies() -> None:
    """PasteNet pastes the Ref at its box in every view: the averaged output still holds the Ref exactly there,
    tiled or not, and outside it averages the views of the toy's asymmetric convolution."""
    model = PasteNet()
    lr, ref, box = _inputs()
    x0, y0, w, h = box
    single = super_resolve(model, lr, ref=ref, box=box, tile=0)
    for n in (2, 4, 8):
        model.calls.clear()
        out = super_resolve(model, lr, ref=ref, box=box, tile=0, tta=n)
        assert len(model.calls) == n
        assert torch.allclose(out[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)], ref, atol=1e-6)
        assert (out - single).abs().max() > 1e-3  # the other views do change the rest
        tiled = super_resolve(model, lr, ref=ref, box=box, tile=48, overlap=16, tta=n)
        assert torch.allclose(tiled[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)], ref, atol=1e-6)


def test_tta_averages_the_views() -> None:
    """With tta 2 the output is the mean of the model's output and its mirror's output, mirrored back."""
    model = _tiny()
    lr, _, _ = _inputs(40, 56)
    plain = super_resolve(model, lr, tile=0)
    mirrored = super_resolve(model, lr.flip(-1), tile=0).flip(-1)
    assert (super_resolve(model, lr, tile=0, tta=2) - (plain + mirrored) / 2).abs().max() < 1e-5
    assert torch.equal(super_resolve(model, lr, tile=0, tta=1), plain)
    with pytest.raises(ConfigError, match="tta must be one of 1, 2, 4, 8"):
        super_resolve(model, lr, tile=0, tta=3)
