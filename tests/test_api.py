"""The Python API: the README's example runs as written, and the API gives what the CLI gives."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

import dzcli
from dzcli.errors import AlignmentError, TeleNotFoundError
from dzcli.simulate import simulate_pair
from dzcli.viz import fit_within
from dzsr_models import create_model

from .conftest import low_texture_scene, scene, write_capture

README = Path(__file__).parent.parent / "README.md"


def _readme_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert found, f"no python block after <!-- {marker} --> in the README"
    return found.group(1)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _readme_block("api")
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("import")]) <= 5
    # the same files as in the repository's examples/, only smaller (a real zoom of them takes a minute)
    sim = simulate_pair(
        fit_within(scene("seeding"), 320), density=2.0, offset=(5.0, -3.0), rotation_deg=0.5, seed=0
    )
    (tmp_path / "examples").mkdir()
    write_capture(tmp_path / "examples", "seeding", sim, ratio_exif=2.0, when=datetime(2026, 1, 1))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, dzcli.ZoomedPhoto) and result.no_ref is None
    assert result.registration is not None and result.registration.zoom_ratio == pytest.approx(
        sim.zoom_ratio, rel=0.01
    )
    out = dzcli.load_photo(tmp_path / "out_api.png")
    assert out.size == (2 * sim.uw.shape[2], 2 * sim.uw.shape[1])


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("dzsr-tiny", scale=2, matcher_weights="random").eval()


def test_zoom_photo_takes_numpy_or_tensors_alike() -> None:
    sim = simulate_pair(fit_within(scene("life"), 320), density=2.0, offset=(4.0, 2.0), seed=1)
    model = _tiny()
    as_tensor = dzcli.zoom_photo(model, sim.uw, sim.tele, zoom_ratio=2.0, device="cpu")
    as_numpy = dzcli.zoom_photo(
        model,
        (sim.uw.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
        (sim.tele.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
        zoom_ratio=2.0,
        device="cpu",
    )
    assert as_tensor.image.shape == as_numpy.image.shape == (3, 2 * sim.uw.shape[1], 2 * sim.uw.shape[2])
    assert float((as_tensor.image - as_numpy.image).abs().mean()) < 2 / 255  # 8-bit quantisation apart
    assert as_tensor.aligned is not None and as_tensor.aligned.box == as_numpy.aligned.box  # type: ignore[union-attr]
    check = as_tensor.self_check  # the self-check ran
    assert check is not None and 0.0 <= check.gain <= 1.0 and check.base <= 0.0
    assert (
        dzcli.zoom_photo(model, sim.uw, sim.tele, zoom_ratio=2.0, device="cpu", self_check=False).self_check
        is None
    )
    with pytest.raises(ValueError, match="expected an RGB image"):
        dzcli.zoom_photo(model, sim.uw[:1], sim.tele, device="cpu")


def test_zoom_photo_without_the_tele_and_with_require_ref() -> None:
    a = simulate_pair(fit_within(scene("life"), 320), density=2.0, seed=1)
    b = simulate_pair(low_texture_scene(2), density=2.0, seed=2)
    model = _tiny()
    alone = dzcli.zoom_photo(
        model, a.uw, b.tele, zoom_ratio=2.0, device="cpu", uw_name="a.jpg", tele_name="b.jpg"
    )
    assert alone.outscale == pytest.approx(2.0 * b.tele.shape[2] / a.uw.shape[2])  # the EXIF ratio's density
    alone = dzcli.zoom_photo(
        model, a.uw, b.tele, outscale=2, device="cpu", uw_name="a.jpg", tele_name="b.jpg", guard=False
    )
    assert alone.registration is None and alone.aligned is None and alone.no_ref is not None
    assert alone.no_ref.startswith("no overlap found between a.jpg and b.jpg")
    from dzcli.infer.engine import super_resolve

    assert torch.allclose(alone.image, super_resolve(model, a.uw), atol=1e-6)  # the reference-free network
    with pytest.raises(TeleNotFoundError, match=r"^no overlap found between a.jpg and b.jpg"):
        dzcli.zoom_photo(
            model, a.uw, b.tele, device="cpu", require_ref=True, uw_name="a.jpg", tele_name="b.jpg"
        )
    with pytest.raises(AlignmentError, match="not narrower"):  # photos swapped: an error, not a fallback
        dzcli.zoom_photo(model, a.tele, a.uw, device="cpu")


def test_align_capture_is_what_prepare_stores() -> None:
    sim = simulate_pair(
        fit_within(scene("picos"), 480), density=2.0, offset=(7.0, -4.0), rotation_deg=0.6, seed=3, noise=0.0
    )
    aligned = dzcli.align_capture(sim.uw, sim.tele, scale=2, zoom_ratio=2.0)
    x0, y0, w, h = aligned.box
    assert aligned.lr.shape == (3, h, w) and aligned.ref.shape == (3, 2 * h, 2 * w)
    assert torch.equal(aligned.lr, sim.uw[:, y0 : y0 + h, x0 : x0 + w])
    assert aligned.valid_fraction > 0.9 and math.dist(aligned.registration.center, sim.center) < 0.3
    truth = sim.truth[:, 2 * y0 : 2 * (y0 + h), 2 * x0 : 2 * (x0 + w)]
    err = ((aligned.ref - truth) ** 2)[aligned.mask.expand(3, -1, -1) > 0.5].mean()
    assert 10 * math.log10(1 / float(err)) > 30  # colour-matched to the uw: close to the truth


def test_the_api_names_are_lazy() -> None:
    assert set(dzcli.__all__) >= {"align_capture", "zoom_photo", "load_model", "load_photo", "save_image"}
    with pytest.raises(AttributeError):
        dzcli.nope  # noqa: B018
    probe = "import sys, dzcli; print('torch' in sys.modules)"  # `import dzcli` alone stays light
    assert subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip() == ("False")
