"""DZSR network: odd sizes, AdaSTN collapse and deformable conv, matching, the exact deformable gather, paste,
global vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import deform_conv2d

from dzcli.errors import ConfigError, InputError
from dzsr_models import PRESETS, create_model, list_models
from dzsr_models.dzsr import (
    DZSR,
    AdaSTN,
    PatchMatcher,
    _paste,
    centre_box,
    crop_ref,
    deform_depthwise_conv3x3,
    match_features,
    match_local,
    shifted_depthwise_conv,
)

DATA = Path(__file__).parent / "data"
NETWORKS = [name for name in list_models() if PRESETS[name][0] == "dzsr"]


def photo(name: str = "life") -> torch.Tensor:
    """(3, H, W) float photo in [0, 1]."""
    with Image.open(DATA / f"{name}.jpg") as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255


def inputs(model: DZSR, batch: int, height: int, width: int, seed: int = 0) -> dict:
    """Training-style inputs: LR, centre Ref cut from a random HR, aux-LR, and ref2 for triple models."""
    gen = torch.Generator().manual_seed(seed)
    s = model.scale
    lr = torch.rand(batch, 3, height, width, generator=gen)
    hr = torch.rand(batch, 3, s * height, s * width, generator=gen)
    box = centre_box(height, width, s)
    kw = {"lr": lr, "ref": crop_ref(hr, box, s).contiguous(), "box": box}
    if model.ref2_scale is not None:
        r = model.ref2_scale
        box2 = centre_box(height, width, 2)
        kw |= {"ref2": torch.rand(batch, 3, r * box2[3], r * box2[2], generator=gen), "box2": box2}
    return kw


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", NETWORKS)
def test_forward_backward_odd_sizes(name, scale):
    torch.manual_seed(0)
    model = create_model(name, scale=scale)
    kw = inputs(model, 2, 17, 23)
    out = model(**kw, aux=torch.rand_like(kw["lr"]))
    assert out.shape == (2, 3, 17 * scale, 23 * scale)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []  # every weight is in the graph (DDP-friendly) and gets a finite gradient
    model.eval()
    with torch.no_grad():
        a, b = model(**kw), model(**kw)
        plain = model(kw["lr"])  # reference disabled
    assert torch.equal(a, b) and a.shape == plain.shape == out.shape
    assert not torch.allclose(a, plain)


def test_presets_sizes():
    counts = {
        (name, s): sum(p.numel() for p in create_model(name, scale=s).parameters())
        for name in NETWORKS
        for s in (2, 4)
    }
    assert all(counts[(n, s)] < 50_000 for n in ("dzsr-tiny", "tzsr-tiny") for s in (2, 4))
    assert 1.9e6 < counts[("dzsr-base", 4)] < 2.2e6
    assert counts[("dzsr-small", 4)] < counts[("dzsr-base", 4)] / 4
    assert counts[("tzsr-base", 4)] > counts[("dzsr-base", 4)]


def test_adastn_collapse_is_a_channel_scale():
    torch.manual_seed(1)
    block = AdaSTN(5)
    x = torch.randn(2, 5, 9, 11)
    scale = x * block.weight.sum(dim=(2, 3)).view(1, 5, 1, 1)
    off = block.collapsed_offsets().expand(2, 18, 9, 11)
    torch.testing.assert_close(deform_conv2d(x, off, block.weight, padding=(1, 1)), scale)
    block.eval()
    torch.testing.assert_close(block(x, torch.randn_like(x)), scale)
    block.train()
    block.collapse_p = 1.0
    torch.testing.assert_close(block(x, torch.randn_like(x)), scale)
    block.collapse_p = 0.0
    assert not torch.allclose(block(x, torch.randn_like(x)), scale)


def test_adastn_identity_matrix_gives_the_plain_conv():
    """A = I, b = 0 → offsets 0 → an ordinary depthwise 3×3 conv; b shifts every tap."""
    torch.manual_seed(2)
    block = AdaSTN(4)
    with torch.no_grad():
        block.affine.weight.zero_()
        block.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))
        block.translation.weight.zero_()
        block.translation.bias.copy_(torch.tensor([1.0, -2.0]))
    x = torch.randn(1, 4, 12, 13)
    off = block.offsets(x, torch.randn_like(x))
    assert torch.allclose(off[:, 0::2], torch.ones(())) and torch.allclose(off[:, 1::2], torch.full((), -2.0))
    block.translation.bias.data.zero_()
    off = block.offsets(x, torch.randn_like(x))
    plain = torch.nn.functional.conv2d(x, block.weight, padding=1, groups=4)
    torch.testing.assert_close(deform_conv2d(x, off, block.weight, padding=(1, 1)), plain)


def _deform_case(shape: tuple[int, int, int, int], dtype: torch.dtype, seed: int = 5) -> tuple:
    """Input, random fractional offsets (many samples partly or wholly outside the image), weight, grad."""
    gen = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    off = 2.5 * torch.randn(B, 18, H, W, generator=gen, dtype=dtype)
    off[:, :, ::3, ::4] *= 4  # some samples far outside
    weight = torch.randn(C, 1, 3, 3, generator=gen, dtype=dtype)
    grad = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    return x, off, weight, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 5, 13, 17), (2, 4, 1, 7), (2, 3, 6, 1), (1, 2, 2, 3)])
def test_deform_depthwise_conv_equals_torchvision(shape, dtype):
    x, off, weight, grad = _deform_case(shape, dtype)
    H, _W = shape[-2:]
    ky = torch.arange(-1, 2, dtype=dtype).repeat_interleave(3).view(9, 1, 1)
    pos_y = torch.arange(H, dtype=dtype).view(H, 1) + ky + off[:, 0::2]  # (B, 9, H, W) tap rows sampled
    assert (pos_y <= -1).any() and (pos_y >= H).any() and ((pos_y > -1) & (pos_y < 0)).any()  # cases covered
    results = []
    for fn in (lambda *a: deform_conv2d(*a, padding=(1, 1)), deform_depthwise_conv3x3):
        inputs = [t.clone().requires_grad_() for t in (x, off, weight)]
        out = fn(*inputs)
        results.append((out, *torch.autograd.grad(out, inputs, grad)))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for theirs, ours, what in zip(*results, ("output", "d/dx", "d/doffset", "d/dweight"), strict=True):
        assert ours.dtype == dtype and ours.shape == theirs.shape, what
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * theirs.abs().max().item(), msg=what)


def test_deform_depthwise_conv_integer_offsets_and_autocast():
    """Integer offsets land exactly on pixels (forward only: the offset gradient is one-sided there)."""
    x, _, weight, _ = _deform_case((2, 3, 9, 8), torch.float32)
    gen = torch.Generator().manual_seed(6)
    off = torch.randint(-3, 4, (2, 18, 9, 8), generator=gen).float()
    expected = deform_conv2d(x, off, weight, padding=(1, 1))
    torch.testing.assert_close(deform_depthwise_conv3x3(x, off, weight), expected)
    plain = torch.nn.functional.conv2d(x, weight, padding=1, groups=3)
    torch.testing.assert_close(deform_depthwise_conv3x3(x, torch.zeros_like(off), weight), plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32, returned in the input's dtype
        out = deform_depthwise_conv3x3(x.bfloat16(), off.bfloat16(), weight.bfloat16())
        out32 = deform_depthwise_conv3x3(x, off, weight)
    assert out.dtype == torch.bfloat16 and out32.dtype == torch.float32
    torch.testing.assert_close(out32, expected)
    reference = deform_conv2d(x.bfloat16().float(), off, weight.bfloat16().float(), padding=(1, 1))
    torch.testing.assert_close(out.float(), reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())


def test_adastn_training_path_is_torchvision_deform_conv():
    """The non-collapsed AdaSTN equals deform_conv2d on its offsets, gradients of every parameter included."""
    torch.manual_seed(7)
    block = AdaSTN(6, collapse_p=0.0).train()
    keys = {f"{m}.{p}" for m in ("offset_features", "affine", "translation") for p in ("weight", "bias")}
    assert set(block.state_dict()) == keys | {"weight"}  # checkpoints unchanged
    x, guide = torch.randn(3, 6, 11, 15), torch.randn(3, 6, 11, 15)
    grad = torch.randn(3, 6, 11, 15)
    results = []
    for fn in (block, lambda a, g: deform_conv2d(a, block.offsets(a, g), block.weight, padding=(1, 1))):
        xi = x.clone().requires_grad_()
        out = fn(xi, guide)
        results.append((out, *torch.autograd.grad(out, [xi, *block.parameters()], grad)))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


def _shifted_pair(dy: int, dx: int, size: int = 64, at: tuple[int, int] = (150, 300)) -> tuple:
    """LR crop and a Ref crop of the same photo such that LR pixel p shows Ref pixel p + (dy, dx)."""
    img = photo()
    y, x = at
    return img[:, y : y + size, x : x + size], img[:, y - dy : y - dy + size, x - dx : x - dx + size]


@pytest.mark.parametrize("weights", ["imagenet", "random"])
def test_matcher_recovers_a_known_shift(weights):
    matcher = PatchMatcher(weights=weights)
    shifts = [(3, -2), (-1, 2)]  # feature pixels (4 LR pixels each)
    pairs = [_shifted_pair(4 * dy, 4 * dx) for dy, dx in shifts]
    lr = torch.stack([p[0] for p in pairs])
    ref = torch.stack([p[1] for p in pairs])
    flow, score = matcher(lr, ref)
    assert flow.shape == (2, 2, 64, 64) and score.shape == (2, 64, 64)
    fq, fr = matcher.features(lr), matcher.features(ref)
    index, _ = match_features(fq, fr)
    for b, (dy, dx) in enumerate(shifts):
        # Interior: the matched cell and both VGG receptive fields lie inside both crops.
        ys = slice(max(3, 3 - dy), min(13, 13 - dy))
        xs = slice(max(3, 3 - dx), min(13, 13 - dx))
        cell_flow = flow[b, :, ::4, ::4][:, ys, xs]
        assert (cell_flow[0] == 4 * dy).all() and (cell_flow[1] == 4 * dx).all()
        assert (score[b, ::4, ::4][ys, xs] > 0.995).all()
        qy, qx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        assert torch.equal(index[b][ys, xs], ((qy + dy) * 16 + qx + dx)[ys, xs])


def test_matching_in_chunks_equals_matching_at_once():
    matcher = PatchMatcher()
    lr, ref = _shifted_pair(8, 4, size=48)
    lr2, ref2 = _shifted_pair(-4, 12, size=48, at=(200, 100))
    fq = matcher.features(torch.stack([lr, lr2]))
    fr = matcher.features(torch.stack([ref, ref2]))[..., :, :10]  # unequal sizes are fine
    whole_idx, whole_score = match_features(fq, fr, chunk_elements=1 << 30)
    for budget in (1, 700, 5000):
        idx, score = match_features(fq, fr, chunk_elements=budget)
        assert torch.equal(idx, whole_idx)
        torch.testing.assert_close(score, whole_score)
    # Against a brute-force all-pairs cosine on explicit patches.
    q = torch.nn.functional.unfold(fq, 3, padding=1)
    r = torch.nn.functional.unfold(fr, 3, padding=1)
    cos = torch.einsum(
        "bcq,bcr->bqr", torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(r, dim=1)
    )
    assert torch.equal(whole_idx.flatten(1), cos.argmax(dim=2))
    torch.testing.assert_close(whole_score.flatten(1), cos.amax(dim=2))


def test_matcher_pads_odd_sizes():
    matcher = PatchMatcher(weights="random")
    flow, score = matcher(torch.rand(1, 3, 17, 23), torch.rand(1, 3, 9, 7))
    assert flow.shape == (1, 2, 17, 23) and score.shape == (1, 17, 23)
    assert torch.equal(flow, flow.round())
    qy = torch.arange(17).view(17, 1) + flow[0, 0]
    qx = torch.arange(23).view(1, 23) + flow[0, 1]
    assert qy.min() >= 0 and qy.max() < 12 and qx.min() >= 0 and qx.max() < 8  # inside the padded Ref


def test_shifted_conv_equals_torchvision_deform_conv():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 3, 6, 9, generator=gen)
    weight, bias = torch.randn(3, 1, 3, 3, generator=gen), torch.randn(3, generator=gen)
    H, W = 11, 7
    flow = torch.randint(-8, 9, (2, 2, H, W), generator=gen).float()
    ours = shifted_depthwise_conv(feats, flow, weight, bias)
    Hc, Wc = max(H, 6), max(W, 9)
    canvas = torch.nn.functional.pad(feats, (0, Wc - 9, 0, Hc - 6))
    offsets = torch.nn.functional.pad(flow.repeat(1, 9, 1, 1), (0, Wc - W, 0, Hc - H))
    theirs = deform_conv2d(canvas, offsets, weight, bias, padding=(1, 1))[..., :H, :W]
    # where the 3x3 window centred at p + flow meets the features: torchvision's; elsewhere exactly 0
    cy = torch.arange(H).view(H, 1) + flow[:, 0]
    cx = torch.arange(W).view(1, W) + flow[:, 1]
    meets = ((cy >= -1) & (cy <= 6) & (cx >= -1) & (cx <= 9)).unsqueeze(1).expand_as(ours)
    assert meets.any() and (~meets).any()
    torch.testing.assert_close(ours[meets], theirs[meets])
    assert (ours[~meets] == 0).all()


def test_local_search_finds_the_all_pairs_correspondence_on_a_registered_pair():
    """A Ref cut out of the LR at a known, unaligned place: the local search around it finds the same
    cells as the all-pairs search wherever that one's best lies within the radius, which is everywhere
    inside the Ref."""
    matcher = PatchMatcher()
    img = photo()
    lr = img[:, 100:196, 200:328][None]
    x0, y0 = 37, 22
    ref = lr[..., y0 : y0 + 48, x0 : x0 + 64]
    s = matcher.stride
    shift = (-y0 % s, -x0 % s)
    offset = (-(y0 + shift[0]) // s, -(x0 + shift[1]) // s)
    fq, fr = matcher.features(lr, shift), matcher.features(ref)
    all_idx, all_score = match_features(fq, fr)
    loc_idx, loc_score = match_local(fq, fr, offset, matcher.radius)
    hq, wq = fq.shape[-2:]
    wr = fr.shape[-1]
    dy = all_idx[0] // wr - torch.arange(hq).view(hq, 1) - offset[0]
    dx = all_idx[0] % wr - torch.arange(wq).view(1, wq) - offset[1]
    within = (dy.abs() <= matcher.radius) & (dx.abs() <= matcher.radius)
    assert within.sum() >= fr.shape[-2] * fr.shape[-1]  # at least as many cells as the Ref has
    assert torch.equal(loc_idx[0][within], all_idx[0][within])
    torch.testing.assert_close(loc_score[0][within], all_score[0][within])
    # In pixels: inside the Ref (away from its edge) every pixel maps to where it was cut from.
    flow, _ = matcher(lr, ref, [(x0, y0)])
    assert (flow[0, 0, y0 + 8 : y0 + 40, x0 + 8 : x0 + 56] == -y0).all()
    assert (flow[0, 1, y0 + 8 : y0 + 40, x0 + 8 : x0 + 56] == -x0).all()
    # Far from the Ref nothing is within reach: the registered position, outside the Ref.
    assert (loc_idx[0, :, -2:] == -1).all() and (flow[0, 1, :, -4:] == -x0).all()
    far_idx, far_score = match_local(fq, fr, (-40, 3), matcher.radius)  # the Ref far below: no candidate
    assert (far_idx == -1).all() and torch.isinf(far_score).all()


def test_a_tile_inside_the_box_needs_no_matching(monkeypatch):
    torch.manual_seed(7)
    model = create_model("dzsr-tiny", scale=2, matcher_weights="random").eval()
    lr, ref = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 2 * 24, 2 * 28)
    box = (-3, -5, 28, 24)  # covers the whole LR tile
    gvec = torch.zeros(1, model.hparams["channels"])
    with torch.no_grad():
        expected = model(lr, ref, box, gvec=gvec)
        monkeypatch.setattr(model.matcher, "forward", lambda *a, **k: pytest.fail("matched inside the box"))
        torch.testing.assert_close(model(lr, ref, box, gvec=gvec), expected)


def test_paste_clips_to_the_frame_and_respects_keep():
    base = torch.zeros(3, 2, 5, 6)
    patch = torch.arange(1.0, 13.0).view(1, 1, 3, 4).expand(3, 2, 3, 4)
    boxes = [(1, 1, 4, 3), (4, -1, 4, 3), (1, 1, 4, 3)]
    out = _paste(base, patch, boxes, torch.tensor([True, True, False]))
    assert torch.equal(out[0, :, 1:4, 1:5], patch[0])
    assert out[0].sum() == patch[0].sum()
    assert torch.equal(out[1, :, 0:2, 4:6], patch[1, :, 1:3, 0:2])  # clipped at the top and the right
    assert out[1].sum() == patch[1, :, 1:3, 0:2].sum()
    assert torch.equal(out[2], base[2])


def test_eval_paste_puts_the_ref_inside_the_box_only():
    torch.manual_seed(5)
    model = create_model("dzsr-tiny", scale=2).eval()
    kw = inputs(model, 1, 16, 20)
    x0, y0, w, h = kw["box"]
    with torch.no_grad():
        a = model._reference(model.ref, 2, kw["lr"], kw["ref"], kw["box"], torch.tensor([True]), "ref")
        b = model._reference(model.ref, 2, kw["lr"], kw["ref"], kw["box"], torch.tensor([False]), "ref")
    inside = torch.zeros(16, 20, dtype=torch.bool)
    inside[y0 : y0 + h, x0 : x0 + w] = True
    pasted = model.ref.paste_head(torch.nn.functional.pixel_unshuffle(kw["ref"] - model.mean, 2))
    assert torch.equal(a[..., ~inside], b[..., ~inside])  # outside the box: the matched features
    torch.testing.assert_close(a[..., y0 : y0 + h, x0 : x0 + w], pasted)


@pytest.mark.parametrize("name", ["dzsr-tiny", "tzsr-tiny"])
def test_global_vector_passed_in_equals_computed_inside(name):
    torch.manual_seed(6)
    model = create_model(name, scale=4).eval()
    kw = inputs(model, 2, 21, 18)
    with torch.no_grad():
        inside = model(**kw)
        g = model.global_vector(kw["lr"], kw["ref"], kw["box"])
        assert g.shape == (2, 8)
        torch.testing.assert_close(model(**kw, gvec=g), inside)
        assert not torch.allclose(model(**kw, gvec=g + 1), inside)
        # One vector for a batch of tiles: (1, C) broadcasts, and each tile sees that same vector.
        ref2 = kw.get("ref2")
        tiles = model(kw["lr"], kw["ref"], None, ref2=ref2, gvec=g[:1])
        first = model(kw["lr"][:1], kw["ref"][:1], None, ref2=None if ref2 is None else ref2[:1], gvec=g[:1])
        torch.testing.assert_close(tiles[:1], first)


def test_boxes_accept_tensors_and_per_sample_lists():
    torch.manual_seed(7)
    model = create_model("dzsr-tiny", scale=2).eval()
    kw = inputs(model, 2, 12, 14)
    with torch.no_grad():
        a = model(**kw)
        b = model(kw["lr"], kw["ref"], torch.tensor([kw["box"]] * 2))
        c = model(kw["lr"], kw["ref"], [kw["box"], kw["box"]])
    assert torch.equal(a, b) and torch.equal(a, c)


def test_input_errors():
    model = create_model("dzsr-tiny", scale=4).eval()
    lr = torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match="multiple"):
        model(lr, torch.rand(1, 3, 10, 16), None)
    with pytest.raises(InputError, match="does not match"):
        model(lr, torch.rand(1, 3, 16, 16), (0, 0, 5, 4))
    with pytest.raises(InputError, match="triple"):
        model(lr, ref2=torch.rand(1, 3, 16, 16))
    with pytest.raises(InputError, match="inside"):
        model.global_vector(lr, torch.rand(1, 3, 16, 16), (14, 0, 4, 4))
    with pytest.raises(ConfigError, match="scale"):
        DZSR(scale=3)


def test_centre_box_and_crop_ref():
    assert centre_box(48, 48, 4) == (18, 18, 12, 12)
    assert centre_box(17, 23, 2) == (6, 4, 11, 8)
    hr = torch.arange(34 * 46.0).view(1, 1, 34, 46)
    ref = crop_ref(hr, centre_box(17, 23, 2), 2)
    assert ref.shape == (1, 1, 16, 22) and ref[0, 0, 0, 0] == hr[0, 0, 8, 12]


def test_checkpoint_saved_before_bicubic_skip_loads_without_it(tmp_path: Path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from dzsr_models import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    old = create_model("dzsr-tiny", scale=2, matcher_weights="random", bicubic_skip=False).eval()
    path = tmp_path / "old.safetensors"
    save_checkpoint(old, path, metadata={})
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    info = json.loads(meta["dzsr"])
    del info["hparams"]["bicubic_skip"]  # as written by dzsr before the option existed
    save_file(load_file(str(path)), str(path), metadata={**meta, "dzsr": json.dumps(info)})
    model, _ = load_checkpoint(path)
    lr, ref = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    assert not model.bicubic_skip
    with torch.no_grad():
        assert torch.allclose(model.eval()(lr, ref), old(lr, ref), atol=1e-6)


def test_ref_dropout_trains_the_reference_free_path():
    torch.manual_seed(8)
    model = create_model(
        "dzsr-tiny", scale=2, matcher_weights="random", collapse_p=0.0, ref_drop_p=1.0
    ).train()
    lr, ref = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 2 * 8, 2 * 10)
    gvec = torch.rand(2, model.hparams["channels"])
    dropped = model(lr, ref, centre_box(16, 20, 2), gvec=gvec)
    torch.testing.assert_close(dropped, model(lr, None, None, gvec=gvec))  # the Ref's features are zero
    model.ref_drop_p = 0.0
    assert (model(lr, ref, centre_box(16, 20, 2), gvec=gvec) - dropped).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="ref_drop_p"):
        create_model("dzsr-tiny", ref_drop_p=1.5)


@pytest.mark.parametrize(
    "box", [(100, -16, 200, 288), (-20, -30, 120, 100), (150, 170, 60, 50), (37, 22, 150, 120)]
)
def test_ring_flow_equals_the_full_matching_where_it_is_used(box):
    """In eval() only the ring outside the box and within the search's reach is matched (in strips, or at
    once when they would cover most of the tile); there it equals matching the whole tile, elsewhere it is
    the registered position."""
    matcher = PatchMatcher()
    img = photo()
    lr = img[:, 40:296, 60:316][None]
    x0, y0, w, h = box
    ref = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    ref[..., max(-y0, 0) :, max(-x0, 0) :] = img[
        None, :, 40 + max(y0, 0) : 40 + y0 + h, 60 + max(x0, 0) : 60 + x0 + w
    ]
    full, _ = matcher(lr, ref, [(x0, y0)])
    ring = matcher.ring_flow(lr, ref, box)
    yy, xx = torch.arange(256).view(256, 1), torch.arange(256).view(1, 256)
    inside = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
    reach = matcher.stride * (matcher.radius + 1)
    near = (yy >= y0 - reach) & (yy < y0 + h + reach) & (xx >= x0 - reach) & (xx < x0 + w + reach)
    assert (near & ~inside).sum() > 1000
    assert torch.equal(ring[0][:, near & ~inside], full[0][:, near & ~inside])
    assert (ring[0, 0][~near] == -y0).all() and (ring[0, 1][~near] == -x0).all()
