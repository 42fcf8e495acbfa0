"""super_resolve: tiled equals untiled where it must, Ref windows land where they belong, OOM fallback."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.errors import ConfigError, InputError, ResourceError
from dzcli.infer.engine import (
    RefWindows,
    clip_reference,
    global_vector,
    resolve_device,
    super_resolve,
)
from dzcli.infer.tiling import Tile
from dzsr_models import create_model

CPU = torch.device("cpu")


class PasteNet(nn.Module):
    """A ×s toy with a 3×3 receptive field that pastes the Ref's pixels at ``box`` (like DZSR)."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.2)
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, int, int, int] | None]] = []

    def forward(self, lr: Tensor, ref: Tensor | None = None, box: tuple[int, int, int, int] | None = None) -> Tensor:
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


def test_tiles_outside_get_a_searched_window_and_no_box() -> None:
    model = PasteNet()
    lr, ref, box = _inputs()
    model.calls.clear()
    super_resolve(model, lr, ref=ref, box=box, tile=32, overlap=8)
    boxes = [b for _, _, b in model.calls]
    assert any(b is None for b in boxes) and any(b is not None for b in boxes)
    for shape, ref_shape, b in model.calls:
        assert ref_shape is not None and ref_shape[-2] % 2 == 0 and ref_shape[-1] % 2 == 0
        if b is not None:
            assert (ref_shape[-1] // 2, ref_shape[-2] // 2) == (b[2], b[3])


def test_search_picks_the_window_with_matching_colour_and_texture() -> None:
    s = 2
    ref = torch.zeros(3, s * 64, s * 128)
    ref[0, :, : s * 64] = 0.8  # left half: flat red
    ref[1, :, s * 64 :] = torch.rand(s * 64, s * 64)  # right half: textured green
    lr = torch.zeros(3, 200, 300)
    lr[1] = torch.rand(200, 300)  # the LR is textured green everywhere
    windows = RefWindows(ref, (100, 100, 128, 64), lr, s, context=0)
    tile = Tile(x0=0, y0=0, w=48, h=48, row=0, col=0)
    window, b = windows.window(tile)
    assert b is None and window.shape == (3, 96, 96)
    assert window[1].mean() > 0.3 and window[0].mean() < 0.1  # from the green half
    lr[:] = 0
    lr[0] = 0.8  # now flat red
    window, _ = RefWindows(ref, (100, 100, 128, 64), lr, s, context=0).window(tile)
    assert window[0].mean() > 0.7


def test_window_meeting_the_box_is_in_tile_coordinates() -> None:
    s = 2
    ref = torch.arange(s * 40 * s * 60, dtype=torch.float32).reshape(1, s * 40, s * 60).repeat(3, 1, 1)
    lr = torch.rand(3, 100, 100)
    windows = RefWindows(ref, (30, 20, 60, 40), lr, s, context=4)
    tile = Tile(x0=20, y0=10, w=32, h=32, row=0, col=0)
    window, b = windows.window(tile)
    assert b is not None
    bx, by, bw, bh = b
    assert window.shape == (3, s * bh, s * bw)
    # The window's top-left lies at tile + (bx, by) = image (30, 20) = the Ref's top-left (clamped).
    assert (tile.x0 + bx, tile.y0 + by) == (30, 20)
    assert torch.equal(window, ref[:, : s * bh, : s * bw])


def test_global_vector_once_and_bounded() -> None:
    model = _tiny()
    lr, ref, box = _inputs(200, 260, (20, 30, 200, 150))
    exact = model.eval().global_vector(lr[None], ref[None], box)
    with torch.no_grad():
        one = global_vector(model, lr, ref, box, device=CPU)
        many = global_vector(model, lr, ref, box, device=CPU, window=64)
        few = global_vector(model, lr, ref, box, device=CPU, window=32, max_windows=4)
    assert (one - exact).abs().max() < 1e-6  # fits in one window: exactly the model's
    assert (many - exact).abs().max() < 0.2 * exact.abs().max() + 1e-3  # windows approximate the pooled mean
    assert few.shape == exact.shape
    assert global_vector(PasteNet(), lr, ref, box, device=CPU) is None


def test_restores_training_mode() -> None:
    model = _tiny()
    model.train()
    lr, ref, box = _inputs(40, 50, (10, 10, 20, 16))
    super_resolve(model, lr, ref=ref, box=box)
    assert model.training


def test_progress_counts_tiles() -> None:
    seen: list[tuple[int, int]] = []
    lr, ref, box = _inputs()
    super_resolve(PasteNet(), lr, ref=ref, box=box, tile=48, overlap=8, progress=lambda d, n: seen.append((d, n)))
    assert seen and seen[-1][0] == seen[-1][1] == len(seen)


class FlakyMemoryNet(PasteNet):
    """Runs out of (pretend CUDA) memory on tiles larger than ``limit`` pixels a side."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, lr: Tensor, ref: Tensor | None = None, box=None) -> Tensor:
        if max(lr.shape[-2:]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
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
    from dzcli.infer.engine import DEFAULT_MODEL, BundledModel, choose_bundled

    def m(name: str, scale: int) -> BundledModel:
        return BundledModel(name, tmp_path / name, "dzsr", scale, 1, "0" * 64, 1, "", {})

    models = [m("a-x2", 2), m(DEFAULT_MODEL, 2), m("b-x4", 4)]
    assert choose_bundled(2.1, models).name == DEFAULT_MODEL
    assert choose_bundled(3.5, models).name == "b-x4"
    assert choose_bundled(8**0.5, models).name == "b-x4"  # equally far in log scale: the larger s
    assert choose_bundled(None, models).scale == 2
    with pytest.raises(WeightsError, match="no bundled model"):
        choose_bundled(2.0, [])


def test_auto_tile_fits_memory_and_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    from dzcli.infer import engine

    model = _tiny()
    monkeypatch.setattr(engine, "available_memory", lambda device: 64 << 30)
    assert engine.auto_tile(model, CPU) == engine.MAX_AUTO_TILE["cpu"]
    monkeypatch.setattr(engine, "available_memory", lambda device: 200 << 20)
    small = engine.auto_tile(model, CPU)
    assert engine.MIN_TILE <= small < engine.MAX_AUTO_TILE["cpu"] and small % 16 == 0
    monkeypatch.setattr(engine, "available_memory", lambda device: 1 << 20)
    assert engine.auto_tile(model, CPU) == engine.MIN_TILE


def test_available_memory_is_positive() -> None:
    from dzcli.infer.engine import available_memory

    assert available_memory(CPU) > 0
