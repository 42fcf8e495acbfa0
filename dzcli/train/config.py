"""Training configuration: one flat, frozen dataclass whose defaults are the documentation.

Precedence, lowest first: the defaults below → the run's saved ``config.yaml`` (when resuming) → a
``--config`` file (TOML or YAML) → explicit command-line flags. Unknown keys are rejected (``-`` and
``_`` are interchangeable in key names); values are type-checked. The resolved config is written to
``RUN/config.yaml``, which is itself a valid ``--config`` file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dzcli.errors import ConfigError
from dzcli.io.atomic import write_text_atomic

#: Training losses: ℓ1 only, ℓ1 + global sliced Wasserstein (SelfDZSR), ℓ1 + local overlapped SW (++).
LOSSES = ("l1", "l1+sw", "l1+losw")
#: Targets of the sliced Wasserstein term (see :class:`TrainConfig`).
SW_TARGETS = ("quiet", "tele")
#: Trainable network sizes (``dzsr-<preset>``).
PRESETS = ("base", "small", "tiny")
#: Keys that may differ from the saved config when a run is resumed.
RESUMABLE_CHANGES = ("steps", "val_every", "save_every", "log_every", "device", "amp", "val_tile")


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``dzsr train`` (SelfDZSR++ recipe, DESIGN §5).

    Attributes:
        data: Prepared dataset folder (``dzsr prepare``); trains on its ``train`` split and validates on
            its ``test`` split.
        out: Run folder: config, metrics, checkpoints, resume state.
        preset: Network size, ``base`` (≈1.8 M parameters), ``small`` (CPU) or ``tiny`` (tests); the
            scale comes from the dataset.
        init: Fine-tune from this checkpoint (path, or a bundled model's name) instead of random weights.
        loss: ``l1+losw`` (SelfDZSR++), ``l1+sw`` (SelfDZSR) or ``l1`` (the ℓ1-only model: best PSNR).
        steps: Optimisation steps; the learning rates halve at ``steps // 2``.
        batch_size: Patches per step and process (DDP: the global batch is this × the number of ranks).
        patch_size: LR patch side in pixels (a multiple of the scale); the HR patch is ``s×`` larger.
        lr: Adam learning rate of the SR network.
        aux_lr: Adam learning rate of the auxiliary-LR generator.
        ema_decay: Decay of the exponential moving average of the weights used for validation and release.
        sw_weight: Weight of the sliced Wasserstein term.
        sw_target: What the sliced Wasserstein term compares the output with: ``quiet`` (the registered tele
            with the noise of its flat areas taken out, the flat-area guard applied to it: the term then does
            not teach the network to reproduce the tele camera's noise as grain) or ``tele`` (the tele as it
            is, the papers' recipe).
        position_weight: Weight of the aux-LR generator's position-preserving kernel loss.
        seed: Seed of sampling, noise, dropout and initialisation; a run is a function of it.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        amp: Mixed precision (float16 autocast + gradient scaling) on CUDA; ignored elsewhere.
        val_every: Validate (EMA weights, inference path, test split) every this many steps.
        save_every: Write ``step_N``/``last`` checkpoints and the resume state every this many steps.
        log_every: Append the mean training losses to ``metrics.jsonl`` every this many steps.
        val_tile: Tile side for validation inference in LR pixels (0: automatic, as ``dzsr zoom``).
        trunk_weights: ``imagenet`` VGG16 for matching and the SW loss, or ``random`` (tests, no weights).
        triple: train a triple-camera model (``tzsr-<preset>``, TZSR) on triple captures: the middle camera
            (``mid.png`` of each pair) is a second reference, fused into the LR features before the tele.
    """

    data: Path
    out: Path
    preset: str = "base"
    init: str | None = None
    loss: str = "l1+losw"
    steps: int = 400_000
    batch_size: int = 16
    patch_size: int = 48
    lr: float = 1e-4
    aux_lr: float = 5e-5
    ema_decay: float = 0.999
    sw_weight: float = 0.08
    sw_target: str = "quiet"
    position_weight: float = 100.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    val_every: int = 1000
    save_every: int = 5000
    log_every: int = 50
    val_tile: int = 0
    trunk_weights: str = "imagenet"
    triple: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            hint = " (a triple-camera model: --triple with its size)" if "tzsr" in self.preset else ""
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}{hint}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.sw_target not in SW_TARGETS:
            raise ConfigError(f"sw_target must be one of {', '.join(SW_TARGETS)}, not {self.sw_target!r}")
        if self.trunk_weights not in ("imagenet", "random"):
            raise ConfigError(f"trunk_weights must be 'imagenet' or 'random', not {self.trunk_weights!r}")
        for name in ("steps", "batch_size", "patch_size", "val_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("lr", "aux_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, not {value}")
        for name in ("sw_weight", "position_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative number, not {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        if self.val_tile < 0:
            raise ConfigError(f"val_tile must be >= 0, not {self.val_tile}")

    @property
    def model_name(self) -> str:
        """The registered model of the preset (``dzsr-<preset>``, ``tzsr-<preset>`` with ``triple``)."""
        return f"{'tzsr' if self.triple else 'dzsr'}-{self.preset}"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), in field order: what ``config.yaml`` holds."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats, strings for paths."""
    kind = str(_FIELDS[key].type)
    if value is None and "None" in kind:
        return None
    if kind.startswith("float") and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 (PyYAML) reads 1e-4 as a string (1.0e-4 is a number)
            value = float(value)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "Path": isinstance(value, str | Path),
    }.get(kind.split(" |")[0], isinstance(value, str))
    if not ok:
        raise ConfigError(f"{source}: {key} must be {kind.replace('None', 'null')}, not {value!r}")
    if kind == "float":
        return float(value)
    if kind == "Path":
        return Path(value)
    return value


def normalise(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Canonical keys and checked values of one config layer.

    Raises:
        ConfigError: Unknown key (the message lists the known ones) or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for raw, value in values.items():
        key = str(raw).replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(f"{source}: unknown key {raw!r}; known keys: {', '.join(_FIELDS)}")
        out[key] = _coerce(key, value, source)
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a flat TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file.

    Raises:
        ConfigError: Missing or unparsable file, unknown suffix, not a flat table, unknown key, wrong type.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # tomllib is 3.11+; tomli is the same parser (a dependency on 3.10)
                import tomli as tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files must be .toml, .yaml or .yml")
    except yaml.MarkedYAMLError as exc:  # its str() is several lines: problem, context, position
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable config file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a table of key = value")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"{path}: the config is flat; unexpected section(s) {', '.join(map(str, nested))}")
    return normalise(data, str(path))


def resolve_config(*layers: tuple[Mapping[str, Any], str], data: Path, out: Path) -> TrainConfig:
    """Merge config layers (lowest precedence first) into a :class:`TrainConfig`.

    Args:
        *layers: ``(values, source name)`` pairs; ``None`` values mean "not set" and are skipped.
        data: The dataset folder (the command's argument; overrides any layer).
        out: The run folder (overrides any layer).

    Raises:
        ConfigError: Unknown key, wrong type or invalid value (the message names the layer).
    """
    merged: dict[str, Any] = {}
    for values, source in layers:
        merged.update(normalise({k: v for k, v in values.items() if v is not None}, source))
    merged.update(data=data, out=out)
    return TrainConfig(**merged)


def check_resume_changes(saved: TrainConfig, new: TrainConfig) -> None:
    """Refuse a resumed config that changes what the saved state depends on.

    Raises:
        ConfigError: A key outside :data:`RESUMABLE_CHANGES` (and ``data``/``out``) differs.
    """
    a, b = saved.to_dict(), new.to_dict()
    changed = [k for k in a if k not in (*RESUMABLE_CHANGES, "data", "out") and a[k] != b[k]]
    if changed:
        diffs = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in changed)
        raise ConfigError(
            f"{new.out}: cannot change {diffs} when resuming "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change); "
            "start a new run with --init instead"
        )


def write_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (a valid ``--config`` file)."""
    header = "# dzsr train: resolved configuration (usable as --config)\n"
    write_text_atomic(path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
