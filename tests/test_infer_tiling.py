"""Tile plans and feathered blend weights: coverage, partition of unity, untouched tile borders."""

from __future__ import annotations

import itertools

import pytest
import torch

from dzcli.errors import ConfigError
from dzcli.infer.tiling import axis_spans, axis_weights, plan_tiles, run_tiled, tile_weights

CASES = [
    # (length, tile, overlap, scale)
    (100, 64, 32, 2),
    (1000, 256, 16, 2),
    (37, 16, 8, 4),
    (500, 128, 0, 1),
    (129, 64, 5, 3),
    (64, 64, 16, 2),
    (65, 64, 16, 1),
    (23, 10, 5, 2),
    (300, 96, 40, 2),
]


@pytest.mark.parametrize(("length", "tile", "overlap", "scale"), CASES)
def test_axis_spans_cover_with_overlap(length: int, tile: int, overlap: int, scale: int) -> None:
    spans = axis_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    if tile >= length:
        assert spans == [(0, length)]
    sizes = {b - a for a, b in spans}
    assert len(sizes) == 1 and sizes.pop() <= max(tile, length if tile >= length else 0)
    for (a0, b0), (a1, b1) in itertools.pairwise(spans):
        assert a0 < a1 and b0 < b1
        assert b0 - a1 >= overlap  # neighbours overlap by at least `overlap`


@pytest.mark.parametrize(("length", "tile", "overlap", "scale"), CASES)
def test_axis_weights_partition_of_unity(length: int, tile: int, overlap: int, scale: int) -> None:
    spans = axis_spans(length, tile, overlap)
    weights = axis_weights(spans, overlap, scale)
    total = torch.zeros(scale * length, dtype=torch.float64)
    for (a, b), w in zip(spans, weights, strict=True):
        assert w.shape == (scale * (b - a),)
        assert w.min() >= 0 and w.max() <= 1
        total[scale * a : scale * b] += w
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


@pytest.mark.parametrize(("length", "tile", "overlap", "scale"), CASES)
def test_weights_vanish_near_interior_edges(length: int, tile: int, overlap: int, scale: int) -> None:
    """A tile never contributes within overlap // 4 input pixels of an edge that is not the image's."""
    spans = axis_spans(length, tile, overlap)
    weights = axis_weights(spans, overlap, scale)
    m = scale * (overlap // 4)
    for (a, b), w in zip(spans, weights, strict=True):
        if a > 0 and m:
            assert torch.all(w[:m] == 0)
        if b < length and m:
            assert torch.all(w[-m:] == 0)


def test_tile_weights_sum_to_one_in_2d() -> None:
    for h, w, tile, ov, s in [(150, 200, 64, 16, 2), (97, 33, 32, 12, 3), (40, 40, 64, 16, 2)]:
        tiles = plan_tiles(h, w, tile, ov)
        total = torch.zeros(s * h, s * w)
        for t, wt in zip(tiles, tile_weights(tiles, h, w, ov, s), strict=True):
            assert wt.shape == (s * t.h, s * t.w)
            total[s * t.y0 : s * (t.y0 + t.h), s * t.x0 : s * (t.x0 + t.w)] += wt
        assert (total - 1).abs().max() < 1e-6


def test_plan_single_tile_when_it_covers_the_image() -> None:
    assert [t.box for t in plan_tiles(50, 70, 0, 16)] == [(0, 0, 70, 50)]
    assert [t.box for t in plan_tiles(50, 70, 70, 16)] == [(0, 0, 70, 50)]
    assert [t.box for t in plan_tiles(50, 70, 512, 16)] == [(0, 0, 70, 50)]


def test_overlap_larger_than_half_a_tile_is_refused() -> None:
    with pytest.raises(ConfigError):
        axis_spans(100, 32, 20)


def test_run_tiled_pointwise_equals_untiled() -> None:
    torch.manual_seed(0)
    img = torch.rand(3, 45, 61)
    s = 2

    def fn(t):  # pointwise ×2 "model"
        x = img[:, t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        return (x**2).repeat_interleave(s, 1).repeat_interleave(s, 2)

    ref = (img**2).repeat_interleave(s, 1).repeat_interleave(s, 2)
    calls = []
    out = run_tiled(fn, 45, 61, tile=16, overlap=6, scale=s, progress=lambda d, n: calls.append((d, n)))
    assert out.shape == (3, 90, 122)
    assert (out - ref).abs().max() < 1e-6
    n = len(plan_tiles(45, 61, 16, 6))
    assert calls == [(k + 1, n) for k in range(n)]


def test_run_tiled_checks_tile_output_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        run_tiled(lambda t: torch.zeros(3, t.h, t.w), 20, 20, tile=10, overlap=2, scale=2)
