"""Registration of a tele inside its wide photo and resampling onto the wide's grid, on simulated pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dzcli.align import register as register_module
from dzcli.align.register import Registration, align_pair, footprint_box, register, register_chained
from dzcli.errors import AlignmentError, TeleNotFoundError
from dzcli.simulate import SimulatedTriple, simulate_pair, simulate_triple

from .conftest import corner_error, low_texture_scene

DATA = Path(__file__).parent / "data"


def _photo(name: str) -> torch.Tensor:
    bgr = cv2.imread(str(DATA / f"{name}.jpg"), cv2.IMREAD_COLOR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).float() / 255.0


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    err = (a - b) ** 2
    if mask is not None:
        err = err[mask.expand_as(err) > 0.5]
    return float(10 * torch.log10(1.0 / err.mean()))


@pytest.mark.parametrize(
    ("scene", "ratio", "offset", "rotation", "hint", "parallax"),
    [
        ("life", 2.0, (23.0, -17.0), 1.5, 2.0, 0.0),
        ("picos", 2.7, (23.0, -17.0), -2.0, 2.7, 0.0),
        ("seeding", 2.0, (-19.0, 12.0), 0.8, None, 0.0),
        ("life", 2.7, (23.0, -17.0), 1.0, None, 0.0),
        ("picos", 2.0, (23.0, -17.0), 1.5, 2.1, 2.0),
    ],
)
def test_register_recovers_ratio_centre_and_rotation(
    scene: str,
    ratio: float,
    offset: tuple[float, float],
    rotation: float,
    hint: float | None,
    parallax: float,
) -> None:
    p = simulate_pair(
        _photo(scene), density=ratio, offset=offset, rotation_deg=rotation, parallax=parallax, seed=1
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=hint)
    assert reg.zoom_ratio == pytest.approx(p.zoom_ratio, rel=0.01)
    assert math.dist(reg.center, p.center) < (1.0 if parallax else 0.15)  # catches half-pixel slips too
    assert reg.rotation_deg == pytest.approx(p.rotation_deg, abs=0.2)
    assert reg.inliers >= 30 and reg.matches >= reg.inliers
    assert reg.density == pytest.approx(ratio, rel=0.01)  # equal pixel counts: density = ratio


HARD_TONES = {"gain": 0.25, "gamma": (0.75, 1.33)}
"""The tele through a colour pipeline far from the uw's (white balance ±25 %, gammas 0.75–1.33)."""


@pytest.mark.parametrize(
    ("seed", "ratio", "hint"), [(0, 2.0, 2.0), (1, 2.0, 2.03), (2, 3.0, 3.0), (3, 2.0, None)]
)
def test_a_low_texture_capture_with_other_tones_is_registered(
    seed: int, ratio: float, hint: float | None
) -> None:
    p = simulate_pair(
        low_texture_scene(seed),
        density=ratio,
        offset=(9.0, -6.0),
        rotation_deg=0.8,
        noise=0.01,
        seed=seed,
        **HARD_TONES,  # type: ignore[arg-type]
    )
    features = register_module._feature_attempts(
        register_module._gray(p.uw), register_module._gray(p.tele), hint, 30
    )
    assert max(a.inliers for a in features) < 30  # what feature matching alone refused
    reg = register(p.uw, p.tele, zoom_ratio_hint=hint)
    assert reg.zoom_ratio == pytest.approx(p.zoom_ratio, rel=0.005)
    assert math.dist(reg.center, p.center) < 1.0
    assert reg.rotation_deg == pytest.approx(p.rotation_deg, abs=0.3)
    assert reg.method == "direct" and reg.correlation > 0.15


def test_low_texture_pairs_that_do_not_belong_together_are_refused() -> None:
    a = simulate_pair(low_texture_scene(0), density=2.0, offset=(9.0, -6.0), seed=0, **HARD_TONES)  # type: ignore[arg-type]
    b = simulate_pair(_photo("seeding"), density=2.0, seed=1)
    for hint in (2.0, None):
        with pytest.raises(
            AlignmentError, match=r"^no overlap found between a\.jpg and b\.jpg \(correlation"
        ):
            register(a.uw, b.tele, zoom_ratio_hint=hint, uw_name="a.jpg", tele_name="b.jpg")
        with pytest.raises(
            AlignmentError, match=r"^no overlap found between b\.jpg and a\.jpg \(correlation"
        ):
            register(b.uw, a.tele, zoom_ratio_hint=hint, uw_name="b.jpg", tele_name="a.jpg")
    for hint in (0.5, None):  # swapped: the wide photo given as the tele
        with pytest.raises(
            AlignmentError, match=r"^w\.jpg is not narrower than t\.jpg \(zoom ratio 0\.50\); pass"
        ):
            register(a.tele, a.uw, zoom_ratio_hint=hint, uw_name="t.jpg", tele_name="w.jpg")
    for hint in (1.0, None):  # the same photo twice
        with pytest.raises(
            AlignmentError, match=r"^u\.jpg is not narrower than u\.jpg \(zoom ratio 1\.00\); pass"
        ):
            register(a.uw, a.uw.clone(), zoom_ratio_hint=hint, uw_name="u.jpg", tele_name="u.jpg")


def test_tone_matching_undoes_a_gamma_and_a_gain() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    b = 0.8 * a**1.4 + 0.05
    out = register_module._match_tones(b, a)
    assert np.abs(out - a).max() < 0.01 and np.abs(b - a).max() > 0.15


def test_the_direct_search_finds_a_known_position_and_ratio() -> None:
    p = simulate_pair(low_texture_scene(4), density=2.5, offset=(-14.0, 8.0), seed=4, noise=0.0, isp=False)
    luma = register_module._Luma
    gray = register_module._gray
    found = register_module._locate(luma(gray(p.uw)), luma(gray(p.tele)), [2.4, 2.45, 2.5, 2.55, 2.6], 1.0)
    reg = register_module._describe(
        found[0].homography, (p.uw.shape[2], p.uw.shape[1]), (p.tele.shape[2], p.tele.shape[1])
    )
    assert reg.zoom_ratio == pytest.approx(2.5, rel=0.021) and math.dist(reg.center, p.center) < 1.5


def test_dense_refinement_corrects_a_rough_homography() -> None:
    p = simulate_pair(_photo("seeding"), density=2.0, offset=(23.0, -17.0), rotation_deg=1.0, seed=4)
    nudge = np.array(
        [[1.006, 0.004, 1.2], [-0.003, 0.997, -0.9], [0.0, 0.0, 1.0]]
    )  # ~1.5 uw px off at the edges
    rough = nudge @ p.tele_to_uw
    gray, luma = register_module._gray, register_module._Luma
    refined, n = register_module._refine(luma(gray(p.uw)), luma(gray(p.tele)), rough)
    assert n > 500
    ht, wt = p.tele.shape[1:]
    pts = np.array(
        [[0, 0, 1], [wt - 1, 0, 1], [0, ht - 1, 1], [wt - 1, ht - 1, 1], [wt / 2, ht / 2, 1]], float
    ).T

    def err(h: np.ndarray) -> float:
        a, b = h @ pts, p.tele_to_uw @ pts
        return float(np.abs(a[:2] / a[2] - b[:2] / b[2]).max())

    assert err(rough) > 1.0 and err(refined) < 0.15


def test_registration_is_json_ready() -> None:
    p = simulate_pair(_photo("life"), density=2.0, offset=(10.0, 5.0), seed=2)
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.0)
    d = json.loads(json.dumps(reg.to_dict()))
    assert set(d) == {
        "homography",
        "inliers",
        "matches",
        "density",
        "ratio",
        "center",
        "rotation_deg",
        "method",
        "correlation",
    }
    np.testing.assert_allclose(np.array(d["homography"]), reg.homography)
    assert d["method"] == "features" and 0.5 < d["correlation"] <= 1.0


def test_unrelated_photos_have_no_overlap() -> None:
    a = simulate_pair(_photo("life"), density=2.0, seed=1)
    b = simulate_pair(_photo("picos"), density=2.0, seed=1)
    with pytest.raises(
        AlignmentError,
        match=r"^no overlap found between a\.jpg and b\.jpg \(correlation -?0\.\d\d over the tele's footprint at best, "
        r"need 0\.\d\d; \d+ feature matches\)$",
    ):
        register(a.uw, b.tele, zoom_ratio_hint=2.0, uw_name="a.jpg", tele_name="b.jpg")


@pytest.mark.parametrize("hint", [2.0, None])
def test_swapped_roles_are_reported(hint: float | None) -> None:
    p = simulate_pair(_photo("life"), density=2.0, offset=(23.0, -17.0), seed=1)
    with pytest.raises(
        AlignmentError, match=r"^wide\.jpg is not narrower than tele\.jpg \(zoom ratio 0\.50\); pass"
    ):
        register(p.tele, p.uw, zoom_ratio_hint=hint, uw_name="tele.jpg", tele_name="wide.jpg")


def test_swapped_only_when_the_uw_fits_inside_the_tele_better_than_anything_tried_the_right_way() -> None:
    p = simulate_pair(_photo("life"), density=2.0, offset=(23.0, -17.0), seed=1)
    uw, tele = (
        register_module._Luma(register_module._gray(p.tele)),
        register_module._Luma(register_module._gray(p.uw)),
    )
    with pytest.raises(AlignmentError, match="not narrower"):  # photos swapped, nothing better found
        register_module._refuse_swapped(uw, tele, None, "tele.jpg", "wide.jpg", [])
    # a pair in the right order whose tele was just not found can match the other way round at some wrong
    # geometry; a candidate of the right direction that correlates better means "not found", not "swapped"
    better = register_module._Candidate(np.eye(3), register_module._Evidence(0.99, 0.5, 0.1), "direct")
    register_module._refuse_swapped(uw, tele, None, "tele.jpg", "wide.jpg", [better])


def test_tele_mostly_outside_the_uw_is_reported() -> None:
    p = simulate_pair(_photo("picos"), density=2.0, seed=1)  # footprint spans uw x in [80, 240]
    with pytest.raises(AlignmentError, match=r"^t\.jpg does not lie inside u\.jpg$"):
        register(p.uw[:, :, :150], p.tele, uw_name="u.jpg", tele_name="t.jpg")


def test_strong_perspective_is_implausible() -> None:
    p = simulate_pair(_photo("life"), density=2.0, seed=1, noise=0.0, isp=False)
    tele = np.ascontiguousarray(p.tele.permute(1, 2, 0).numpy())
    h, w = tele.shape[:2]
    keystone = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6 / w, 0.0, 1.0]])
    warped = cv2.warpPerspective(tele, keystone, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    with pytest.raises(AlignmentError, match="implausible geometry between uw and tele"):
        register(p.uw, torch.from_numpy(warped.transpose(2, 0, 1).copy()), zoom_ratio_hint=2.0)


def test_a_far_tele_too_weak_to_register_directly_is_found_through_the_middle_camera(
    far_triple: SimulatedTriple,
) -> None:
    p, wide = far_triple.pair, far_triple.wide
    tele_wh = (p.tele.shape[2], p.tele.shape[1])
    ratio, wide_ratio = p.zoom_ratio, far_triple.wide_zoom_ratio  # 77/13 and 26/13, as EXIF gives them
    with pytest.raises(TeleNotFoundError, match=r"^no overlap found between u\.jpg and t\.jpg \(correlation"):
        register(
            p.uw, p.tele, zoom_ratio_hint=ratio, uw_name="u.jpg", tele_name="t.jpg"
        )  # measured 0.03, need 0.45
    reg = register_chained(p.uw, wide, p.tele, zoom_ratio_hint=ratio, mid_zoom_ratio_hint=wide_ratio)
    assert reg.method == "chained" and reg.inliers == 0
    assert corner_error(reg.homography, p.tele_to_uw, tele_wh) < 0.2  # measured 0.11 uw px
    assert math.dist(reg.center, p.center) < 0.1  # 0.05
    assert reg.zoom_ratio == pytest.approx(p.zoom_ratio, rel=0.002)  # +0.07 %
    assert reg.rotation_deg == pytest.approx(p.rotation_deg, abs=0.2)  # +0.13°


def test_chaining_composes_tele_to_middle_then_middle_to_uw(
    far_triple: SimulatedTriple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With exact links (the simulation's), the chain is their product; a given middle registration is reused
    and the tele's hint in the middle camera is the ratio of the two hints."""
    p, wide = far_triple.pair, far_triple.wide
    uw_wh, wide_wh, tele_wh = ((t.shape[2], t.shape[1]) for t in (p.uw, wide, p.tele))
    tele_to_wide = np.linalg.inv(far_triple.wide_to_uw) @ p.tele_to_uw
    calls = []

    def link(uw: torch.Tensor, tele: torch.Tensor, **kw: object) -> Registration:
        calls.append((kw["uw_name"], kw["tele_name"], kw["zoom_ratio_hint"]))
        return register_module._describe(tele_to_wide, wide_wh, tele_wh)

    monkeypatch.setattr(register_module, "register", link)
    wide_reg = register_module._describe(far_triple.wide_to_uw, uw_wh, wide_wh)
    reg = register_chained(
        p.uw,
        wide,
        p.tele,
        zoom_ratio_hint=6.0,
        mid_registration=wide_reg,
        mid_name="m.jpg",
        tele_name="t.jpg",
    )
    assert calls == [("m.jpg", "t.jpg", pytest.approx(6.0 / far_triple.wide_zoom_ratio))]
    np.testing.assert_allclose(reg.homography, p.tele_to_uw / p.tele_to_uw[2, 2], atol=1e-9)  # not "polished"
    assert reg.center == pytest.approx(p.center) and reg.zoom_ratio == pytest.approx(p.zoom_ratio)


def test_a_chain_is_polished_where_the_tele_and_the_uw_correlate_well() -> None:
    """A textured scene: the uw and the tele correlate far beyond chance, so a slipped link is corrected."""
    t = simulate_triple(
        _photo("life"),
        density=4.0,
        offset=(4.0, -3.0),
        rotation_deg=0.7,
        wide_offset=(-3.0, 2.0),
        wide_rotation_deg=-0.4,
        seed=1,
    )
    p = t.pair
    uw_wh, wide_wh, tele_wh = ((x.shape[2], x.shape[1]) for x in (p.uw, t.wide, p.tele))
    slip = np.array([[1.0, 0.0, 1.5], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])  # the wide placed 1.8 uw px off
    slipped = register_module._describe(slip @ t.wide_to_uw, uw_wh, wide_wh)
    reg = register_chained(p.uw, t.wide, p.tele, zoom_ratio_hint=4.0, mid_registration=slipped)
    assert corner_error(slip @ p.tele_to_uw, p.tele_to_uw, tele_wh) == pytest.approx(1.5)
    assert corner_error(reg.homography, p.tele_to_uw, tele_wh) < 0.4  # measured 0.26
    assert reg.method == "chained" and reg.correlation > 0.9


def test_a_broken_chain_names_all_three_photos() -> None:
    a = simulate_triple(_photo("life"), density=4.0, seed=0)
    b = simulate_pair(_photo("seeding"), density=2.0, seed=1)
    with pytest.raises(
        TeleNotFoundError,
        match=r"^t\.jpg not found in u\.jpg through m\.jpg: no overlap found between m\.jpg and t\.jpg \(",
    ):
        register_chained(
            a.pair.uw,
            b.uw,
            a.pair.tele,
            zoom_ratio_hint=4.0,
            uw_name="u.jpg",
            mid_name="m.jpg",
            tele_name="t.jpg",
        )


def _inside_tele(reg: Registration, box: tuple[int, int, int, int], tele_wh: tuple[int, int]) -> bool:
    x0, y0, w, h = box
    corners = np.array(
        [
            [x0 - 0.5, y0 - 0.5, 1],
            [x0 + w - 0.5, y0 - 0.5, 1],
            [x0 - 0.5, y0 + h - 0.5, 1],
            [x0 + w - 0.5, y0 + h - 0.5, 1],
        ]
    ).T
    t = np.linalg.inv(reg.homography) @ corners
    tx, ty = t[0] / t[2], t[1] / t[2]
    return bool(np.all((tx >= -0.5) & (ty >= -0.5) & (tx <= tele_wh[0] - 0.5) & (ty <= tele_wh[1] - 0.5)))


@pytest.mark.parametrize("scene", ["picos", "life"])
def test_align_pair_matches_the_truth(scene: str) -> None:
    p = simulate_pair(
        _photo(scene), density=2.0, offset=(23.0, -17.0), rotation_deg=1.5, isp=False, noise=0.0
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.0)
    pair = align_pair(p.uw, p.tele, reg, scale=2)
    x0, y0, w, h = pair.box
    assert pair.lr.shape == (3, h, w) and w >= 100 and h >= 60
    assert pair.hr.shape == (3, 2 * h, 2 * w) and pair.mask.shape == (1, 2 * h, 2 * w)
    assert torch.equal(pair.lr, p.uw[:, y0 : y0 + h, x0 : x0 + w])
    assert set(torch.unique(pair.mask).tolist()) <= {0.0, 1.0}
    assert pair.valid_fraction > 0.9
    assert pair.flow["p95"] < 0.5 and pair.flow["mean"] <= pair.flow["p95"]
    assert _inside_tele(reg, pair.box, (p.tele.shape[2], p.tele.shape[1]))
    # At ratio 2 and scale 2, hr pixel (i, j) is truth pixel (2·y0 + i, 2·x0 + j).
    truth = p.truth[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)]
    assert _psnr(pair.hr, truth, pair.mask) > 30


def test_align_pair_prefilters_a_denser_tele() -> None:
    ratio, s = 2.7, 2
    p = simulate_pair(
        _photo("life"), density=ratio, offset=(23.0, -17.0), rotation_deg=-1.0, isp=False, noise=0.0
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=ratio)
    pair = align_pair(p.uw, p.tele, reg, scale=s)
    x0, y0, w, h = pair.box
    hu, wu = p.uw.shape[1:]
    # The truth on the uw grid at s× density (area resampling), cropped to the box.
    truth = cv2.resize(
        np.ascontiguousarray(p.truth.permute(1, 2, 0).numpy()), (s * wu, s * hu), interpolation=cv2.INTER_AREA
    )
    truth_t = torch.from_numpy(truth[s * y0 : s * (y0 + h), s * x0 : s * (x0 + w)].transpose(2, 0, 1).copy())
    assert pair.hr.shape == truth_t.shape
    assert pair.valid_fraction > 0.9
    assert _psnr(pair.hr, truth_t, pair.mask) > 30


def test_align_pair_follows_parallax_with_the_residual_flow() -> None:
    p = simulate_pair(
        _photo("picos"),
        density=2.0,
        offset=(23.0, -17.0),
        rotation_deg=1.0,
        parallax=4.0,
        isp=False,
        noise=0.0,
        seed=2,
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.0)
    pair = align_pair(p.uw, p.tele, reg, scale=2)
    x0, y0, w, h = pair.box
    truth = p.truth[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)]
    assert pair.flow["p95"] > 1.5  # the homography alone leaves pixels of parallax ...
    assert pair.valid_fraction > 0.9
    assert _psnr(pair.hr, truth, pair.mask) > 32  # ... which the composed remap removes


def test_align_pair_at_a_tele_s_full_density_keeps_it_and_matches_the_truth() -> None:
    # A ×6 tele aligned at 6× (the paste above the network's scale): the residual flow is computed at 2× and
    # resampled, so as much of the tele stays valid as at 2×, and it lands on the truth's pixels.
    p = simulate_pair(
        _photo("picos")[:, :, :636],
        density=6.0,
        offset=(3.0, -2.0),
        rotation_deg=1.0,
        isp=False,
        noise=0.0,
        seed=2,
        tele_size=(360, 270),
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=6.0)
    at2 = align_pair(p.uw, p.tele, reg, scale=2)
    pair = align_pair(p.uw, p.tele, reg, scale=6)
    x0, y0, w, h = pair.box
    assert pair.box == at2.box and pair.hr.shape == (3, 6 * h, 6 * w)
    assert pair.valid_fraction > 0.95 and pair.valid_fraction >= at2.valid_fraction - 0.02
    truth = p.truth[:, 6 * y0 : 6 * (y0 + h), 6 * x0 : 6 * (x0 + w)]  # scene pixels are tele pixels
    assert _psnr(pair.hr, truth, pair.mask) > 31


def test_align_pair_does_not_alias_a_denser_tele() -> None:
    p = simulate_pair(
        _photo("picos"), density=2.7, offset=(23.0, -17.0), rotation_deg=-1.0, isp=False, noise=0.0
    )
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.7)
    ht, wt = p.tele.shape[1:]
    # Stripes at 0.45 cycles per tele pixel: above hr's Nyquist frequency (0.37 at 1.35 tele px per hr px).
    stripes = (
        (0.5 + 0.4 * torch.sin(2 * math.pi * 0.45 * torch.arange(wt).float())).expand(3, ht, wt).contiguous()
    )
    pair = align_pair(p.uw, stripes, reg, scale=2)
    assert float(pair.hr[:, 8:-8, 8:-8].std()) < 0.5 * float(stripes.std())


def test_align_pair_masks_what_the_homography_does_not_explain() -> None:
    p = simulate_pair(_photo("picos"), density=2.0, offset=(23.0, -17.0), isp=False, noise=0.0, seed=3)
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.0)
    tele = p.tele.clone()
    tele[:, 60:120, 100:200] = torch.flip(tele[:, 60:120, 100:200], dims=[2])  # content that matches nothing
    pair = align_pair(p.uw, tele, reg, scale=2)
    # That region lands around uw rows 50..80 (hr rows 2·(50 - y0)...): most of it must be masked out.
    ux0, uy0 = reg.homography[:2] @ np.array([110.0, 70.0, 1.0])
    ux1, uy1 = reg.homography[:2] @ np.array([190.0, 110.0, 1.0])
    x0, y0 = pair.box[:2]
    region = pair.mask[
        0, int(2 * (uy0 - y0)) : int(2 * (uy1 - y0)), int(2 * (ux0 - x0)) : int(2 * (ux1 - x0))
    ]
    assert region.numel() > 1000 and float(region.mean()) < 0.5
    assert pair.valid_fraction > 0.6


def test_align_pair_reuses_a_box_and_rejects_bad_ones() -> None:
    p = simulate_pair(_photo("seeding"), density=2.0, offset=(-10.0, 6.0), seed=5)
    reg = register(p.uw, p.tele, zoom_ratio_hint=2.0)
    box = footprint_box(reg, (p.uw.shape[2], p.uw.shape[1]), (p.tele.shape[2], p.tele.shape[1]))
    inner = (box[0] + 10, box[1] + 5, box[2] - 20, box[3] - 10)
    pair = align_pair(p.uw, p.tele, reg, scale=4, box=inner)
    assert pair.box == inner
    assert pair.hr.shape == (3, 4 * inner[3], 4 * inner[2])
    with pytest.raises(AlignmentError, match=r"too small \(20x40 px, need 32x32\)"):
        align_pair(p.uw, p.tele, reg, scale=2, box=(box[0], box[1], 20, 40))
    with pytest.raises(AlignmentError, match=r"does not lie inside u.png"):
        align_pair(p.uw, p.tele, reg, scale=2, box=(-4, 0, 64, 64), uw_name="u.png")
