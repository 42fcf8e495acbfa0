"""The self-supervised training loop (SelfDZSR++ recipe, DESIGN §5): one code path for 1 process or DDP.

One step: the aux-LR generator maps the HR patch to an LR-looking image with the HR's geometry; noise
is injected into it (detached) and it guides the AdaSTNs and the matching of the SR network, which
super-resolves the LR patch with a reference cut from the HR. One ``backward()`` of
``masked L1 + SW term + aux L1 + 100 · position loss`` updates both networks (Adam, one parameter
group each, learning rates halved at half the schedule). An EMA of the SR weights is validated on the
test split through the *inference* path (:func:`dzcli.infer.engine.super_resolve`) and released.

Reproducibility: every random draw of step ``t`` on rank ``r`` (patch choice and augmentation, noise,
SW directions, AdaSTN/paste dropout) derives from ``(seed, t, r)``: the random generators are re-seeded
at each step, so resuming from a saved step continues exactly (bitwise on the CPU) whatever ran in
between (validation, a restart), and no generator state needs saving.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dzcli import __version__
from dzcli.data.dataset import PreparedPair, TrainPatches
from dzcli.errors import ConfigError, OutputError, ResourceError, WeightsError
from dzcli.infer.devices import is_out_of_memory, resolve_device
from dzcli.infer.engine import describe, super_resolve
from dzcli.io.atomic import check_output, remove_stale_temps_in, write_atomic
from dzcli.metrics.image import region_scores
from dzcli.resize import upscale_bicubic
from dzcli.train.config import TrainConfig, write_config
from dzcli.train.losses import SlicedWassersteinLoss, masked_l1
from dzsr_models import ARCHS, create_model, save_checkpoint
from dzsr_models.auxlr import AuxLRGenerator, inject_noise
from dzsr_models.dzsr import DZSR

log = logging.getLogger(__name__)

#: Version of the resume-state layout.
STATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StepReport:
    """What training reports after each step.

    Attributes:
        losses: ``loss`` (everything minimised), ``sr`` (the SR network's loss) and the other terms present
            (``l1``, ``sw``, ``aux_l1``, ``position``): the means over the last ``log_every`` steps at a
            logging step, this step's values otherwise.
        lr: the SR network's learning rate.
        samples_per_s: training throughput over the last ``log_every`` steps (all ranks).
        val: after a validation, the EMA model's scores ``{region: {metric: value}}``; else None.
        baseline: with ``val``, bicubic's scores on the same pairs.
    """

    losses: dict[str, float]
    lr: float
    samples_per_s: float
    val: dict[str, dict[str, float]] | None = None
    baseline: dict[str, dict[str, float]] | None = None


ProgressFn = Callable[[int, int, StepReport], None]
"""``progress(step, total, report)``, after every step (:class:`StepReport`)."""


# --------------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of every random draw of ``step`` on ``rank`` (a 63-bit int)."""
    return int(np.random.SeedSequence((seed, step, rank)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def sample_indices(step: int, batch: int, rank: int = 0, world: int = 1) -> list[int]:
    """Patch indices of ``step`` for ``rank``: ranks and steps read disjoint, consecutive ranges."""
    start = (step * world + rank) * batch
    return list(range(start, start + batch))


def lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier: 1, then 0.5 from ``total // 2`` on."""
    return 0.5 if step >= total // 2 else 1.0


#: DDP option that stops re-broadcasting buffers every forward (ours are constant: VGG weights, means);
#: recent torch names it ``forward_sync_buffers`` (``broadcast_buffers`` is deprecated there).
_NO_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


# --------------------------------------------------------------------------------------------------------
# Objective, EMA
# --------------------------------------------------------------------------------------------------------


class Objective(nn.Module):
    """The self-supervised objective around an SR network (what DDP wraps).

    Args:
        net: The DZSR network (trained).
        aux: The aux-LR generator (trained with its own loss), or None: no aux-LR, AdaSTNs collapsed
            and matching on the LR, as at test time (used by :func:`adapt`).
        sw: The sliced Wasserstein term, or None (ℓ1-only).
        position_weight: Weight of the generator's position-preserving loss.
    """

    def __init__(
        self,
        net: DZSR,
        aux: AuxLRGenerator | None,
        sw: SlicedWassersteinLoss | None,
        *,
        position_weight: float = 100.0,
    ) -> None:
        super().__init__()
        self.net, self.aux, self.sw = net, aux, sw
        self.position_weight = position_weight

    def forward(
        self, batch: dict[str, Tensor], generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch.

        Args:
            batch: ``lr`` ``(B, 3, p, p)``, ``hr`` ``(B, 3, sp, sp)``, ``mask`` ``(B, 1, sp, sp)``,
                ``ref`` ``(B, 3, p, p)``, ``ref_box`` ``(B, 4)``, and for a triple-camera model ``ref2``,
                ``ref2_box``, and ``sw_target`` where the SW term has its own target (see
                :class:`~dzcli.data.dataset.TrainPatches`).
            generator: CPU generator of the aux-LR noise and the SW directions.

        Returns:
            ``(total, parts)``: the scalar to minimise and its detached terms: ``sr`` (the SR network's
            loss, ``l1`` + ``sw``), ``l1``, ``sw``, ``aux_l1``, ``position`` (absent terms omitted).
        """
        lr, hr, mask = batch["lr"], batch["hr"], batch["mask"]
        s = int(self.net.scale)
        parts: dict[str, Tensor] = {}
        guide = None
        total = hr.new_zeros(())
        if self.aux is not None:
            aux = self.aux(hr, lr)
            aux_l1 = masked_l1(aux, lr, F.avg_pool2d(mask, s))
            position = self.aux.position_loss()
            total = total + aux_l1 + self.position_weight * position
            parts |= {"aux_l1": aux_l1.detach(), "position": position.detach()}
            guide = inject_noise(aux, hr, scale=s, generator=generator)
        sr = self.net(
            lr, batch["ref"], batch["ref_box"], aux=guide, ref2=batch.get("ref2"), box2=batch.get("ref2_box")
        )
        l1 = masked_l1(sr, hr, mask)
        parts["l1"] = l1.detach()
        sr_loss = l1
        if self.sw is not None:
            sw = self.sw(sr, batch.get("sw_target", hr), mask, generator=generator)
            sr_loss = sr_loss + sw
            parts["sw"] = sw.detach()
        parts["sr"] = sr_loss.detach()
        return total + sr_loss, parts


class ModelEMA:
    """Exponential moving average of a model's parameters.

    ``ema ← d·ema + (1 − d)·θ`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates: the
    warm-up keeps early averages from being dominated by the random initialisation. Buffers are not
    averaged: dzsr's networks have constant buffers only (no batch norm).

    Args:
        model: The trained model (copied; the copy is frozen and in ``eval()`` mode).
        decay: ``decay`` (0.999).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        """Fold ``model``'s current weights in; ``updates`` = number of updates so far, this one included."""
        d = min(self.decay, (1 + updates) / (10 + updates))
        for e, p in zip(self.module.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------


def _mean_scores(per_pair: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for region in ("full", "centre", "corner"):
        rows = [p[region] for p in per_pair if region in p]
        keys = sorted({k for r in rows for k in r})
        out[region] = {k: round(float(np.mean([r[k] for r in rows if k in r])), 4) for k in keys}
    return out


def score_pairs(
    pairs: Sequence[PreparedPair], upscale: Callable[[PreparedPair], Tensor]
) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM (and PSNR over valid pixels) of ``upscale(pair)`` against each pair's HR.

    Regions (SelfDZSR protocol, :func:`dzcli.metrics.image.region_scores`): ``centre`` = the reference's
    box, ``corner`` = the rest, ``full`` = everything; per-pair values averaged.

    Returns:
        ``{region: {"psnr", "ssim", "psnr_masked"}}``.
    """
    per_pair = []
    for pair in pairs:
        s = pair.scale
        box = tuple(v * s for v in pair.ref_box)
        per_pair.append(region_scores(upscale(pair), pair.hr, box, mask=pair.mask))  # type: ignore[arg-type]
    return _mean_scores(per_pair)


def validate(
    model: nn.Module,
    pairs: Sequence[PreparedPair],
    *,
    device: str | torch.device = "cpu",
    tile: int = 0,
    keep: Callable[[PreparedPair, Tensor], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Scores of ``model`` on whole pairs through the inference path (:func:`super_resolve`); a
    triple-camera model gets each pair's middle camera over the whole LR.

    ``keep(pair, output)``, if given, sees each output (to log images without a second inference).
    """

    middle = describe(model).ref2_scale is not None

    def upscale(p: PreparedPair) -> Tensor:
        ref2 = p.mid if middle else None
        box2 = None if ref2 is None else (0, 0, int(p.lr.shape[-1]), int(p.lr.shape[-2]))
        out = super_resolve(
            model, p.lr, ref=p.ref, box=p.ref_box, ref2=ref2, box2=box2, tile=tile, device=device
        )
        if keep is not None:
            keep(p, out)
        return out

    return score_pairs(pairs, upscale)


def bicubic(pair: PreparedPair) -> Tensor:
    """The baseline: ``pair.lr`` upsampled ×``pair.scale``, bicubic, ``(3, s·h, s·w)`` in [0, 1]."""
    return upscale_bicubic(pair.lr, pair.scale).clamp(0, 1)


def bicubic_scores(pairs: Sequence[PreparedPair]) -> dict[str, dict[str, float]]:
    """Scores of bicubic upsampling (the baseline), same protocol as :func:`validate`."""
    return score_pairs(pairs, bicubic)


# --------------------------------------------------------------------------------------------------------
# One optimisation step (shared by training and adaptation)
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Stepper:
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool

    def __call__(self, batch: dict[str, Tensor], seed: int) -> dict[str, float]:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            total, parts = self.objective(batch, generator)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(total.detach()), **{k: float(v) for k, v in parts.items()}}


def _oom_error(device: torch.device, batch: int, patch: int) -> ResourceError:
    return ResourceError(
        f"out of memory on {device} with batch size {batch} and {patch}-pixel patches: "
        f"lower --batch-size (e.g. {max(1, batch // 2)}) or --patch-size"
    )


# --------------------------------------------------------------------------------------------------------
# Adaptation on in-memory pairs (dzsr zoom --adapt)
# --------------------------------------------------------------------------------------------------------


def adapt(
    model: nn.Module,
    pairs: Sequence[PreparedPair],
    steps: int,
    *,
    batch_size: int = 4,
    patch_size: int = 48,
    lr: float = 5e-5,
    loss: str = "l1",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> nn.Module:
    """Fine-tune a copy of an SR model for ``steps`` self-supervised steps on in-memory pairs.

    Made for ``dzsr zoom --adapt N``: the pair being zoomed (its wide crop, the registered tele and its
    validity, see :meth:`PreparedPair.from_tensors`) teaches the model this camera's degradation. Steps
    run as at test time (no aux-LR: AdaSTNs collapsed, matching on the LR), with random patches, the
    reference cut from the HR patch, and Adam at a constant ``lr``. Deterministic for a seed.

    Args:
        model: A DZSR model (left unchanged).
        pairs: The pairs, each at the model's scale.
        steps: Optimisation steps (0 returns an unchanged copy).
        batch_size: Patches per step.
        patch_size: LR patch side; reduced to the largest multiple of ``s`` that fits the smallest pair.
        lr: Adam learning rate.
        loss: ``l1``, ``l1+sw`` or ``l1+losw`` (the last two need the ImageNet VGG16).
        seed: Seed of the patches and dropout.
        device: Where to train (``auto``, ``cpu``, ``cuda[:N]``, ``mps``).
        progress: Called as ``progress(step, steps, loss)`` after each step.

    Returns:
        The fine-tuned copy, in ``eval()`` mode on ``device``.

    Raises:
        ConfigError: Bad ``steps``/``loss``, or no pair.
        DatasetError: Pairs of another scale, or too small for any patch.
        ResourceError: Out of memory (the message names the batch size to lower).
        WeightsError: ``loss`` with SW and no offline VGG16 weights.
    """
    if steps < 0 or batch_size < 1 or not pairs:
        raise ConfigError(
            f"adapt needs steps >= 0, batch_size >= 1 and pairs (got {steps}, {batch_size}, {len(pairs)})"
        )
    if loss not in ("l1", "l1+sw", "l1+losw"):
        raise ConfigError(f"loss must be l1, l1+sw or l1+losw, not {loss!r}")
    if not isinstance(model, DZSR):
        raise ConfigError(f"--adapt fine-tunes DZSR networks, not a {type(model).__name__}")
    dev = resolve_device(device)
    s = describe(model).scale
    fit = min(min(p.lr.shape[-2:]) for p in pairs) // s * s
    patch = max(s, min(patch_size, fit))
    net = copy.deepcopy(model).to(dev).train()
    sw = None if loss == "l1" else SlicedWassersteinLoss(local=loss == "l1+losw").to(dev)
    objective = Objective(net, None, sw)
    step = _Stepper(
        objective,
        torch.optim.Adam(net.parameters(), lr=lr),
        torch.amp.GradScaler("cuda", enabled=False),
        dev,
        amp=False,
    )
    patches = TrainPatches(pairs, patch=patch, scale=s, seed=seed)
    for t in range(steps):
        try:
            losses = step(patches.batch(sample_indices(t, batch_size)), step_seed(seed, t))
        except (RuntimeError, MemoryError) as exc:
            if is_out_of_memory(exc):
                raise _oom_error(dev, batch_size, patch) from exc
            raise
        if progress is not None:
            progress(t + 1, steps, losses["sr"])
    return net.eval()


# --------------------------------------------------------------------------------------------------------
# TensorBoard (optional: the ``tensorboard`` package)
# --------------------------------------------------------------------------------------------------------

#: Validation pairs shown as images at each validation, and the side of their (HR) crop.
TB_IMAGE_PAIRS = 3
TB_CROP = 128


def validation_panel(pair: PreparedPair, output: Tensor, crop: int = TB_CROP) -> Tensor:
    """``bicubic | output | target`` side by side, ``(3, ch, 3·cw)``, over a ``crop``-pixel HR window.

    ``ch, cw`` is ``crop`` clamped to the HR image's size; values in [0, 1].

    The window is centred on the reference box's top-left corner (clamped into the image), so it shows
    both the tele's footprint and the rest.
    """
    s = pair.scale
    h, w = output.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    top = min(max(pair.ref_box[1] * s - ch // 2, 0), h - ch)
    left = min(max(pair.ref_box[0] * s - cw // 2, 0), w - cw)
    window = (slice(None), slice(top, top + ch), slice(left, left + cw))
    parts = (bicubic(pair)[window], output.detach().to("cpu", torch.float32)[window], pair.hr[window])
    return torch.cat(parts, dim=-1).clamp(0, 1)


class TensorBoardLog:
    """A TensorBoard view of ``metrics.jsonl`` (which stays the record), written to ``folder``.

    Inactive (every method a no-op) when ``folder`` is None or the ``tensorboard`` package is missing.
    Tags: ``train/<term>`` (the loss terms, ``lr``, ``samples_per_s``), ``val/<region>/<metric>``,
    ``bicubic/<region>/<metric>`` and the images ``val_images/<pair id>`` (:func:`validation_panel`).

    Args:
        folder: ``RUN/tensorboard``, or None (not rank 0).
        purge_step: The first step a resumed run logs: TensorBoard hides the events of earlier runs at
            this step or later (redone work, as ``--resume`` drops it from ``metrics.jsonl``).
    """

    def __init__(self, folder: Path | None, *, purge_step: int | None = None) -> None:
        self._writer: Any = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed: no TensorBoard log (pip install tensorboard)")
            return
        try:
            self._writer = SummaryWriter(str(folder), purge_step=purge_step)
        except OSError as exc:
            raise OutputError(f"{folder}: cannot write: {exc.strerror or exc}") from None

    @property
    def active(self) -> bool:
        """Whether anything is written."""
        return self._writer is not None

    def record(self, record: dict[str, Any]) -> None:
        """Log the scalars of one ``metrics.jsonl`` record (``kind`` train, val or baseline)."""
        if self._writer is None:
            return
        step, kind = record["step"], record["kind"]
        if kind == "train":
            scalars = {f"train/{k}": v for k, v in record.items() if k not in ("kind", "step", "time")}
        else:
            scores, prefix = (record["model"], "val") if kind == "val" else (record["bicubic"], "bicubic")
            scalars = {f"{prefix}/{r}/{m}": v for r, row in scores.items() for m, v in row.items()}
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)

    def images(self, step: int, panels: dict[str, Tensor]) -> None:
        """Log ``{pair id: (3, H, W) image in [0, 1]}`` as ``val_images/<pair id>``."""
        if self._writer is None:
            return
        for pid, image in panels.items():
            self._writer.add_image(f"val_images/{pid}", image, step)

    def close(self) -> None:
        """Flush and close the event file (afterwards inactive)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLayout:
    """Files of a run folder.

    Attributes:
        root: ``RUN``.
        config: ``config.yaml``, the resolved configuration.
        metrics: ``metrics.jsonl``, one JSON object per line (``kind``: train, baseline, val).
        checkpoints: ``checkpoints/`` with ``step_<N>.safetensors``, ``best`` and ``last`` (EMA weights).
        state: ``resume.pt``, what ``--resume`` continues from.
        tensorboard: ``tensorboard/``, the TensorBoard event files (with the ``tensorboard`` package).
    """

    root: Path

    @property
    def config(self) -> Path:
        """The resolved configuration."""
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        """The metrics log."""
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.root / "checkpoints"

    @property
    def state(self) -> Path:
        """The resume state."""
        return self.root / "resume.pt"

    @property
    def tensorboard(self) -> Path:
        """The TensorBoard folder."""
        return self.root / "tensorboard"


@dataclass
class TrainResult:
    """What a run produced (each rank returns one; only rank 0 wrote files).

    Attributes:
        step: Steps done.
        best_psnr: Best validation PSNR (full region, valid pixels), dB, or None before any validation.
        last_val: The last validation scores of the EMA model.
        baseline: Bicubic scores on the same pairs.
        checkpoints: Paths written (rank 0).
    """

    step: int
    best_psnr: float | None
    last_val: dict[str, dict[str, float]] | None
    baseline: dict[str, dict[str, float]] | None
    checkpoints: list[Path] = field(default_factory=list)


class Trainer:
    """Builds the networks, optimiser and EMA for a config and runs (or continues) the training.

    Args:
        cfg: The resolved config.
        train_pairs: Training pairs (all at scale ``s``).
        val_pairs: Validation pairs (rank 0 validates on them).
        scale: ``s``, the dataset's scale.
        init: Fine-tune from this model (a DZSR at scale ``s``) instead of a fresh ``cfg.preset``.
        rank: This process's rank; ``world``: number of processes (DDP when > 1, the process group
            already initialised).

    Raises:
        ConfigError: Unusable device.
        WeightsError: The ImageNet VGG16 is needed (matching, SW loss) and missing.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_pairs: Sequence[PreparedPair],
        val_pairs: Sequence[PreparedPair],
        *,
        scale: int,
        init: nn.Module | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.cfg, self.rank, self.world, self.scale = cfg, rank, world, scale
        self.layout = RunLayout(cfg.out)
        self.val_pairs = list(val_pairs)
        self.n_train = len(train_pairs)
        self.device = self._device(cfg.device, rank, world)
        self.amp = cfg.amp and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        net = (
            init.train()
            if init is not None
            else create_model(
                cfg.model_name,
                scale=scale,
                matcher_weights=cfg.trunk_weights,
                ref2_scale=scale if cfg.triple else None,
            )
        )
        if not isinstance(net, DZSR):
            raise ConfigError(f"dzsr train trains DZSR networks, not a {type(net).__name__}")
        if cfg.triple and net.ref2_scale != scale:
            raise ConfigError(
                f"a triple-camera model trains with its middle camera at the data's density x{scale}, "
                f"not x{net.ref2_scale}"
            )
        self.net = net
        aux = create_model("auxlr", scale=scale, channels=int(net.hparams["channels"]))
        assert isinstance(aux, AuxLRGenerator)
        self.aux = aux
        sw = None
        if cfg.loss != "l1":
            sw = SlicedWassersteinLoss(
                local=cfg.loss == "l1+losw",
                weight=cfg.sw_weight,
                trunk_weights=cfg.trunk_weights,  # type: ignore[arg-type]
            )
        self.objective = Objective(self.net, self.aux, sw, position_weight=cfg.position_weight)
        self.objective.to(self.device)
        self.ema = ModelEMA(self.net, cfg.ema_decay)
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.net.parameters()), "lr": cfg.lr, "initial_lr": cfg.lr},
                {"params": list(self.aux.parameters()), "lr": cfg.aux_lr, "initial_lr": cfg.aux_lr},
            ]
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        wrapped: nn.Module = self.objective
        if world > 1:
            wrapped = DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **_NO_BUFFER_SYNC,
            )
        self.stepper = _Stepper(wrapped, self.optimizer, self.scaler, self.device, self.amp)
        self.patches = TrainPatches(
            train_pairs,
            patch=cfg.patch_size,
            scale=scale,
            seed=cfg.seed,
            triple=cfg.triple,
            quiet=cfg.sw_target == "quiet" and cfg.loss != "l1",
        )
        self.step = 0
        self.best_psnr: float | None = None
        self.baseline: dict[str, dict[str, float]] | None = None
        self.last_val: dict[str, dict[str, float]] | None = None
        self.board = TensorBoardLog(None)  # opened by run()

    @staticmethod
    def _device(spec: str, rank: int, world: int) -> torch.device:
        dev = resolve_device(spec)
        if dev.type == "cuda" and world > 1:
            local = int(os.environ.get("LOCAL_RANK", rank))
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        return dev

    # ---------------------------------------------------------------------------------------------------
    # Resume state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (tensors and primitives only: ``weights_only=True`` loads it)."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "dzsr_version": __version__,
            "step": self.step,
            "world": self.world,
            "config": self.cfg.to_dict(),
            "hparams": dict(self.net.hparams),
            "net": self.net.state_dict(),
            "aux": self.aux.state_dict(),
            "ema": self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_psnr": self.best_psnr,
            "last_val": self.last_val,
            "baseline": self.baseline,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (the networks must have the saved hyper-parameters)."""
        self.net.load_state_dict(state["net"])
        self.aux.load_state_dict(state["aux"])
        self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_psnr = state["best_psnr"]
        self.last_val = state["last_val"]
        self.baseline = state["baseline"]
        if state["world"] != self.world:
            log.warning(
                "resuming a %d-process run with %d processes: the patch sequence differs from here on",
                state["world"],
                self.world,
            )

    # ---------------------------------------------------------------------------------------------------
    # Outputs (rank 0)

    def _log_metrics(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            try:  # one write of the whole line: a torn line can only be the last (dropped on resume)
                with self.layout.metrics.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            except OSError as exc:
                raise OutputError(f"{self.layout.metrics}: cannot write: {exc.strerror or exc}") from None
            self.board.record(record)

    def _metadata(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "ema": True,
            "training": {
                "data": str(cfg.data),
                "train_pairs": self.n_train,
                "val_pairs": len(self.val_pairs),
                "steps": self.step,
                "preset": None if cfg.init else cfg.model_name,
                "init": cfg.init,
                "loss": cfg.loss,
                "batch_size": cfg.batch_size * self.world,
                "patch_size": cfg.patch_size,
                "seed": cfg.seed,
                "best_val_psnr": self.best_psnr,
                "val": self.last_val,
                "bicubic": self.baseline,
            },
        }

    def _save(self, *names: str) -> list[Path]:
        folder = self.layout.checkpoints
        folder.mkdir(parents=True, exist_ok=True)
        meta = self._metadata()
        return [save_checkpoint(self.ema.module, folder / f"{n}.safetensors", metadata=meta) for n in names]

    def _save_bytes(self) -> int:
        """About what one save writes: three checkpoints (step, best, last) and the resume state."""
        n_net = sum(p.numel() for p in self.net.parameters())
        n_aux = sum(p.numel() for p in self.aux.parameters())
        state = 4 * (4 * n_net + 3 * n_aux)  # net, EMA and the optimiser's two moments; aux and its moments
        return 3 * 4 * n_net + state

    def save_state(self) -> None:
        """Write the resume state and the ``last`` checkpoint (rank 0 only)."""
        if self.rank == 0:
            self._save("last")
            write_atomic(self.layout.state, lambda fh: torch.save(self.state_dict(), fh))

    def _validate(self) -> dict[str, Any]:
        if self.baseline is None:
            self.baseline = bicubic_scores(self.val_pairs)
            self._log_metrics({"kind": "baseline", "step": self.step, "bicubic": self.baseline})
        t0 = time.perf_counter()
        panels: dict[str, Tensor] = {}

        def keep(pair: PreparedPair, output: Tensor) -> None:
            if len(panels) < TB_IMAGE_PAIRS:
                panels[pair.id] = validation_panel(pair, output)

        scores = validate(
            self.ema.module,
            self.val_pairs,
            device=self.device,
            tile=self.cfg.val_tile,
            keep=keep if self.board.active else None,
        )
        self.last_val = scores
        full = scores["full"]
        psnr = full.get("psnr_masked", full["psnr"])
        improved = self.best_psnr is None or psnr > self.best_psnr
        if improved:
            self.best_psnr = psnr
            self._save("best")
        record = {
            "kind": "val",
            "step": self.step,
            "model": scores,
            "best": improved,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        self._log_metrics(record)
        self.board.images(self.step, panels)
        base = self.baseline["full"]
        log.info(
            "step %d: validation PSNR %.2f dB (bicubic %.2f), centre %.2f (bicubic %.2f)",
            self.step,
            full["psnr"],
            base["psnr"],
            scores["centre"]["psnr"],
            self.baseline["centre"]["psnr"],
        )
        return record

    # ---------------------------------------------------------------------------------------------------

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist(), strict=True))

    def replicas_in_sync(self) -> bool:
        """Whether every rank holds bitwise the same SR and aux weights (always True for one process)."""
        if self.world == 1:
            return True
        flat = torch.cat([p.detach().flatten().double() for p in self.objective.parameters()])
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=flat.dtype)
        digest = torch.stack([flat.sum(), (flat * weights).sum()])
        gathered = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def run(self, progress: ProgressFn | None = None) -> TrainResult:
        """Train from ``self.step`` to ``cfg.steps``, validating, logging and checkpointing on the way.

        Ctrl-C (single process) is deferred to the end of the current step; the resume state of that
        step is then written before :class:`KeyboardInterrupt` is re-raised (a second Ctrl-C stops at once).
        Rank 0 mirrors the metrics to TensorBoard when it is installed (:class:`TensorBoardLog`, closed
        however the run ends).

        Raises:
            ResourceError: Out of memory (the message names the batch size to lower), or a non-finite loss.
            OutputError: The run folder cannot be written or lacks the space for one save (checked before
                the first step), or a later write fails.
        """
        cfg = self.cfg
        written: list[Path] = []
        if self.rank == 0:  # before any step: the run folder can be written and holds one save
            check_output(self.layout.state, self._save_bytes())
            check_output(self.layout.checkpoints / "last.safetensors")
            for folder in (self.layout.root, self.layout.checkpoints):  # what a killed run was writing
                remove_stale_temps_in(folder)
            write_config(cfg, self.layout.config)
        window: dict[str, list[float]] = {}
        t_last, n_last = time.perf_counter(), self.step
        rate = 0.0
        board = self.layout.tensorboard if self.rank == 0 else None
        with (
            TensorBoardLog(board, purge_step=self.step + 1 if self.step else None) as self.board,
            _deferred_interrupt(self.world == 1) as interrupted,
        ):
            while self.step < cfg.steps:
                info: dict[str, Any] = dict(self.train_step())
                for k, v in info.items():
                    if k != "lr":
                        window.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rate = (self.step - n_last) * cfg.batch_size * self.world / max(now - t_last, 1e-9)
                    t_last, n_last = now, self.step
                    means = self._reduce_mean({k: float(np.mean(v)) for k, v in window.items()})
                    window = {}
                    self._log_metrics(
                        {
                            "kind": "train",
                            "step": self.step,
                            **{k: round(v, 6) for k, v in means.items()},
                            "lr": info["lr"],
                            "samples_per_s": round(rate, 2),
                            "time": round(time.time(), 1),
                        }
                    )
                    info.update(means)
                paused = time.perf_counter()
                val = None
                if self.rank == 0 and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    val = self._validate()["model"]
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    if self.rank == 0:
                        written += self._save(f"step_{self.step:08d}")
                    self.save_state()
                t_last += time.perf_counter() - paused  # throughput counts training time only
                if progress is not None:
                    lr = info.pop("lr")
                    report = StepReport(info, lr, rate, val, self.baseline if val is not None else None)
                    progress(self.step, cfg.steps, report)
                if interrupted():
                    self.save_state()
                    log.warning("interrupted at step %d: state saved; continue with --resume", self.step)
                    raise KeyboardInterrupt
        if self.rank == 0:
            written.append(self.layout.checkpoints / "last.safetensors")
        return TrainResult(self.step, self.best_psnr, self.last_val, self.baseline, written)

    def train_step(self) -> dict[str, float]:
        """One optimisation step at ``self.step`` (then incremented), with the EMA update.

        Returns:
            The step's ``loss`` and its terms (``sr``, ``l1``, ``sw``, ``aux_l1``, ``position``), and ``lr``.

        Raises:
            ResourceError: Out of memory, or a non-finite loss (without AMP).
        """
        cfg, t = self.cfg, self.step
        factor = lr_factor(t, cfg.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        batch = self.patches.batch(sample_indices(t, cfg.batch_size, self.rank, self.world))
        try:
            losses = self.stepper(batch, step_seed(cfg.seed, t, self.rank))
        except (RuntimeError, MemoryError) as exc:
            if is_out_of_memory(exc):
                raise _oom_error(self.device, cfg.batch_size, cfg.patch_size) from exc
            raise
        if not math.isfinite(losses["loss"]) and not self.amp:
            raise ResourceError(
                f"the loss became {losses['loss']} at step {t + 1}: lower --lr or check the data"
            )
        self.ema.update(self.net, t + 1)
        self.step = t + 1
        return {**losses, "lr": cfg.lr * factor}


@contextlib.contextmanager
def _deferred_interrupt(enabled: bool) -> Iterator[Callable[[], bool]]:
    """Turn the first SIGINT into a flag (read through the yielded callable); a second one interrupts.

    Only in the main thread and when ``enabled``; otherwise the flag stays False and SIGINT acts as usual.
    """
    flag = {"hit": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True
        log.warning("interrupt: finishing the current step, then saving (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["hit"]
    finally:
        signal.signal(signal.SIGINT, previous)


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a resume state written by :meth:`Trainer.save_state` (``weights_only=True``).

    Raises:
        WeightsError: Missing, unreadable, or of a newer format.
    """
    if not path.is_file():
        raise ConfigError(f"{path.parent}: no resume state ({path.name}); start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a pickled object: said in one line, nothing run
        raise WeightsError(
            f"{path}: not a dzsr resume state (it holds pickled Python objects, which are never loaded)"
        ) from None
    except Exception as exc:  # torch raises many types for corrupt files; its messages run over lines
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise WeightsError(f"{path}: unreadable resume state ({first.strip()})") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if not isinstance(version, int) or version > STATE_FORMAT_VERSION:
        raise WeightsError(f"{path}: resume state format {version!r} is not readable by dzsr {__version__}")
    return state


def model_from_state(state: dict[str, Any]) -> nn.Module:
    """A fresh DZSR with the hyper-parameters recorded in a resume state (weights loaded by the trainer)."""
    return ARCHS["dzsr"](**state["hparams"])


@contextlib.contextmanager
def distributed(device: str) -> Iterator[tuple[int, int]]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo otherwise).

    Yields:
        ``(rank, world)``; ``(0, 1)`` outside ``torchrun``. A group initialised here is destroyed on exit.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1
        return
    own = not dist.is_initialized()
    if own:
        backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if own:
            dist.destroy_process_group()
