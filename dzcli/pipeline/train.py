"""``dzsr train``: self-supervised training on a prepared dataset (DESIGN §5).

Run folder (``--out RUN``)::

    RUN/config.yaml                      the resolved configuration (usable as --config)
    RUN/metrics.jsonl                    training losses, the bicubic baseline, validation scores
    RUN/checkpoints/step_<N>.safetensors EMA weights every save_every steps (dzsr_models checkpoints)
    RUN/checkpoints/best.safetensors     the best validation PSNR so far
    RUN/checkpoints/last.safetensors     the latest
    RUN/resume.pt                        optimiser, EMA, step, ...: what --resume continues from

Distributed: ``torchrun --nproc_per_node N -m dzcli train DATA --out RUN ...`` runs the same code in N
processes (nccl on CUDA, gloo on the CPU); each rank trains on its own patches, rank 0 validates and
writes. The run folder must be on a file system every rank can read (for ``--resume``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dzcli.data.dataset import dataset_scale, load_pairs
from dzcli.errors import ConfigError, DatasetError
from dzcli.infer.engine import describe
from dzcli.io.atomic import write_text_atomic
from dzcli.train.config import (
    TrainConfig,
    check_resume_changes,
    normalise,
    read_config_file,
    resolve_config,
)
from dzcli.train.loop import ProgressFn, RunLayout, Trainer, distributed, load_state, model_from_state
from dzsr_models import rescale_model, with_middle_camera
from dzsr_models.bundled import load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    """What ``train`` did.

    Attributes:
        out: The run folder.
        steps: Steps done in total (including those before a resume).
        resumed_from: Step the run continued from (0 for a new run).
        best_psnr: Best validation PSNR (full image, valid pixels, dB).
        last_val: Last validation scores ``{region: {psnr, ssim, psnr_masked}}`` of the EMA model.
        baseline: Bicubic scores on the same pairs.
        checkpoints: Checkpoints written by this call (rank 0).
        world: Number of processes.
        in_sync: Whether every rank ended with the same weights (DDP check; True for one process).
    """

    out: Path
    steps: int
    resumed_from: int
    best_psnr: float | None
    last_val: dict[str, dict[str, float]] | None
    baseline: dict[str, dict[str, float]] | None
    checkpoints: list[Path] = field(default_factory=list)
    world: int = 1
    in_sync: bool = True


def resolve_train_config(
    data: Path,
    out: Path,
    *,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> TrainConfig:
    """The run's configuration: defaults ← saved config (resume) ← ``config_file`` ← ``flags``.

    Args:
        data: Dataset folder.
        out: Run folder.
        config_file: A TOML/YAML file, or None.
        flags: Options given on the command line (None values = not given).
        resume: Continue the run in ``out``: its saved ``config.yaml`` is the base, and only
            :data:`~dzcli.train.config.RESUMABLE_CHANGES` may differ from it.

    Raises:
        ConfigError: Unknown key, bad value, a forbidden change on resume, or nothing to resume.
    """
    layers: list[tuple[Mapping[str, Any], str]] = []
    saved = None
    layout = RunLayout(out)
    if resume:
        if not layout.config.is_file():
            raise ConfigError(f"{out}: nothing to resume (no {layout.config.name}); start without --resume")
        raw = yaml.safe_load(layout.config.read_text(encoding="utf-8")) or {}
        if isinstance(raw, dict):  # a config saved before sw_target existed: its run compared with the tele
            raw.setdefault("sw_target", "tele")
        saved = resolve_config((raw, str(layout.config)), data=data, out=out)
        layers.append((normalise(raw, str(layout.config)), str(layout.config)))
    if config_file is not None:
        layers.append((read_config_file(config_file), str(config_file)))
    if flags:
        layers.append((flags, "command line"))
    cfg = resolve_config(*layers, data=data, out=out)
    if saved is not None:
        check_resume_changes(saved, cfg)
    return cfg


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (work that the resumed run redoes), and a torn last line
    (a power cut or a full disk mid-write) with a warning."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                log.warning("%s: dropped its torn last line (%d characters)", path, len(line))
                continue
            raise DatasetError(f"{path}: line {i + 1} is not JSON; the run's log is corrupt") from None
        if record.get("step", 0) <= step:
            keep.append(line)
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(f"{line}\n" for line in keep))


def train(cfg: TrainConfig, *, resume: bool = False, progress: ProgressFn | None = None) -> TrainSummary:
    """Train (or continue training) a DZSR model on ``cfg.data``'s train split.

    Args:
        cfg: The resolved configuration (:func:`resolve_train_config`).
        resume: Continue from ``cfg.out``'s resume state.
        progress: Called after every step (rank 0 and others alike) as ``progress(step, total, info)``.

    Returns:
        The summary (every rank returns one; only rank 0 writes files).

    Raises:
        DatasetError: Missing or older manifest, empty train or test split, unreadable pairs, patch size
            that fits no pair.
        ConfigError: ``cfg.out`` already holds a run (without ``resume``), nothing to resume, a model
            whose scale differs from the data's, unusable device.
        WeightsError: Missing ImageNet VGG16 weights (matching, SW loss) or an unusable ``--init``.
        ResourceError: Out of memory.
    """
    layout = RunLayout(cfg.out)
    scale = dataset_scale(cfg.data)
    state = None
    if resume:
        state = load_state(layout.state)
    elif layout.state.exists() or layout.metrics.exists():
        raise ConfigError(
            f"{cfg.out}: already holds a training run; continue it with --resume or choose another --out"
        )
    with distributed(cfg.device) as (rank, world):
        init = None
        if state is not None:
            init, source = model_from_state(state), str(layout.state)
        elif cfg.init is not None:
            init, info = load_model(cfg.init)
            source = str(info.path)
            if describe(init).scale != scale:  # e.g. a x4 model started from the x2 one
                total = sum(p.numel() for p in init.parameters())
                init, carried = rescale_model(init, scale)
                log.info(
                    "%s is a x%d model: starting the x%d one from it (%d of its %d parameters carried over, "
                    "the rest start fresh)",
                    source,
                    info.scale,
                    scale,
                    carried,
                    total,
                )
        if init is not None and cfg.triple and describe(init).ref2_scale is None:
            init, carried = with_middle_camera(init, scale)
            log.info(
                "%s is a dual-camera model: the triple one starts from it (%d parameters carried over; the "
                "middle camera read as the tele is, its features fused with zero weight at first)",
                source,
                carried,
            )
        elif init is not None and not cfg.triple and describe(init).ref2_scale is not None:
            raise ConfigError(f"{source} is a triple-camera model: train it with --triple")
        if init is not None and describe(init).scale != scale:
            was = describe(init).scale
            raise ConfigError(
                f"scale mismatch: {source} is a x{was} model but {cfg.data} is a x{scale} dataset; "
                f"prepare the data with --scale {was} or use a x{scale} model"
            )
        train_pairs = load_pairs(cfg.data, "train")
        try:
            val_pairs = load_pairs(cfg.data, "test")
        except DatasetError as exc:
            raise DatasetError(
                f"{exc}; validation needs a test split (`dzsr prepare --test-fraction`)"
            ) from exc
        trainer = Trainer(cfg, train_pairs, val_pairs, scale=scale, init=init, rank=rank, world=world)
        start = 0
        if state is not None:
            trainer.load_state_dict(state)
            start = trainer.step
            if rank == 0:
                _truncate_metrics(layout.metrics, start)
            log.info("resuming %s at step %d of %d", cfg.out, start, cfg.steps)
        result = trainer.run(progress)
        in_sync = trainer.replicas_in_sync()
        if not in_sync:
            log.error("the %d ranks ended with different weights", world)
    return TrainSummary(
        out=cfg.out,
        steps=result.step,
        resumed_from=start,
        best_psnr=result.best_psnr,
        last_val=result.last_val,
        baseline=result.baseline,
        checkpoints=result.checkpoints,
        world=world,
        in_sync=in_sync,
    )
