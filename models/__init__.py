"""dzsr's networks (installed as ``dzsr_models``): one file per architecture, an explicit registry.

- :func:`create_model` builds a registered preset (``dzsr-base``, ``dzsr-small``, ``dzsr-tiny``, their
  triple-camera ``tzsr-*`` twins, and the training-only ``auxlr`` generators); :func:`list_models` lists them.
- :func:`save_checkpoint` / :func:`load_checkpoint`: safetensors weights with JSON metadata in the header
  (architecture, hyper-parameters, scale, dzsr version, format version, and any training summary), so a
  checkpoint alone rebuilds its model. Frozen ImageNet trunks are never stored; they come from
  :mod:`dzsr_models.pretrained`.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from dzcli import __version__
from dzcli.errors import ConfigError, WeightsError
from dzcli.io.atomic import write_atomic

from .auxlr import AuxLRGenerator
from .dzsr import DZSR

__all__ = [
    "ARCHS",
    "CHECKPOINT_FORMAT_VERSION",
    "PRESETS",
    "create_model",
    "list_models",
    "load_checkpoint",
    "rescale_model",
    "save_checkpoint",
    "with_middle_camera",
]

#: Architecture name (stored in checkpoints) → class.
ARCHS: dict[str, type[nn.Module]] = {"dzsr": DZSR, "auxlr": AuxLRGenerator}

_BASE = {"channels": 64, "blocks": 16, "adastn": 3, "ref_layers": 4}
_SMALL = {"channels": 32, "blocks": 6, "adastn": 3, "ref_layers": 2}
_TINY = {"channels": 8, "blocks": 2, "adastn": 3, "ref_layers": 1}

#: Preset name → (architecture, default hyper-parameters). Explicit: nothing registers itself.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "dzsr-base": ("dzsr", _BASE),
    "dzsr-small": ("dzsr", _SMALL),
    "dzsr-tiny": ("dzsr", _TINY),
    "tzsr-base": ("dzsr", {**_BASE, "triple": True}),
    "tzsr-small": ("dzsr", {**_SMALL, "triple": True}),
    "tzsr-tiny": ("dzsr", {**_TINY, "triple": True}),
    "auxlr": ("auxlr", {"channels": 64}),
    "auxlr-tiny": ("auxlr", {"channels": 8}),
}

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 1
_META_KEY = "dzsr"
_RESERVED = ("format_version", "arch", "hparams", "scale", "dzsr_version", "dtype")


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(PRESETS)


def create_model(name: str, **hparams: Any) -> nn.Module:
    """Build a registered preset, with overrides.

    Args:
        name: One of :func:`list_models`.
        **hparams: Keyword hyper-parameters overriding the preset's (``scale=2``, ``matcher_weights=…``);
            None values are dropped so unset CLI options keep the preset's defaults.

    Returns:
        The model, in training mode, on the CPU; ``model.hparams`` holds every resolved hyper-parameter.

    Raises:
        ConfigError: Unknown name (the message lists the available ones) or invalid hyper-parameters.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}: available models are {', '.join(list_models())}")
    arch, defaults = PRESETS[name]
    return _build(arch, {**defaults, **{k: v for k, v in hparams.items() if v is not None}})


def _build(arch: str, hparams: dict[str, Any]) -> nn.Module:
    cls = ARCHS[arch]
    known = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ConfigError(f"unknown hyper-parameters {unknown} for {arch}: known are {', '.join(known)}")
    return cls(**hparams)


def _spread_subpixels(weight: torch.Tensor, lead: int, old: int, new: int) -> torch.Tensor | None:
    """A conv weight ``(O, lead + 3·old², k, k)`` that reads an RGB image by space-to-depth at ``old``, for
    ``new``: each new sub-pixel takes its old sub-pixel's weights, shared (or summed) so that a flat image
    gives the same response. None when neither scale divides the other."""
    out, _, kh, kw = weight.shape
    grid = weight[:, lead:].reshape(out, 3, old, old, kh, kw)
    if new % old == 0:
        m = new // old
        grid = grid.repeat_interleave(m, dim=2).repeat_interleave(m, dim=3) / (m * m)
    elif old % new == 0:
        m = old // new
        grid = grid.reshape(out, 3, new, m, new, m, kh, kw).sum(dim=(3, 5))
    else:
        return None
    return torch.cat((weight[:, :lead], grid.reshape(out, 3 * new * new, kh, kw)), dim=1)


def rescale_model(model: nn.Module, scale: int) -> tuple[nn.Module, int]:
    """A DZSR at another ``scale`` that starts from ``model``'s weights (to fine-tune, as EDSR's ×4 starts
    from its ×2).

    Weights whose shape does not depend on the scale are copied; the convolutions that read the reference
    by space-to-depth get the old ones spread over the new sub-pixel grid (:func:`_spread_subpixels`). Going
    up one ×2 stage, the new model starts as the old one's detail (its output minus bicubic) upsampled
    bilinearly, over bicubic at the new scale (:func:`_detail_stage`).

    Returns:
        ``(new_model, carried)``: the model (training mode, CPU) and how many of its parameters came from
        ``model``.

    Raises:
        ConfigError: ``model`` is not a DZSR.
    """
    if not isinstance(model, DZSR):
        raise ConfigError(f"cannot rescale a {type(model).__name__}: only DZSR models have a scale")
    old = int(model.hparams["scale"])
    new_model = _build("dzsr", {**model.hparams, "scale": scale})
    source = model.state_dict()
    state = new_model.state_dict()
    lead = {"ref.extractor.0.weight": 0, "ref.paste_head.weight": 0, "encoder.body.0.weight": 3}
    carried = 0
    for name, value in state.items():
        src = source.get(name)
        if src is not None and src.shape == value.shape:
            state[name] = src.clone()
        elif src is not None and name in lead:
            spread = _spread_subpixels(src, lead[name], old, scale)
            if spread is None or spread.shape != value.shape:
                continue
            state[name] = spread
        else:
            continue
        carried += value.numel()
    if scale == 2 * old:
        stage = f"upsampler.{2 * int(math.log2(old))}"
        state[f"{stage}.weight"], state["tail.weight"] = _detail_stage(source["tail.weight"])
        state[f"{stage}.bias"] = torch.zeros_like(state[f"{stage}.bias"])
        carried -= state["tail.weight"].numel()  # the tail is no longer the old one's
    new_model.load_state_dict(state)
    return new_model.train(), carried


def _detail_stage(tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights of an extra ×2 stage (a 3×3 conv ``C → 4C`` before PixelShuffle) and of the tail after it
    (``C → 3``) that make the deeper network output the old tail's RGB, upsampled bilinearly (with a zero
    stage bias).

    The stage writes the old tail's response into channels 0–2 of every sub-pixel (nearest-neighbour
    upsampling of the old detail); the new tail blurs them by ``[1, 2, 1]ᵀ[1, 2, 1] / 16``, which turns a
    nearest-neighbour ×2 into bilinear ×2 (half-pixel centres). Channels 3…C−1 carry features 3…C−1,
    upsampled bilinearly, with zero tail weights: training starts from the old output and learns to use them.
    (Nearest-neighbour features under the old tail, the simpler start, are 0.3 dB worse on ×4 captures:
    the tail's 3×3 then spans half the detail it was trained on.)

    Args:
        tail: ``(3, C, 3, 3)`` the old tail's weight (its bias is kept as is).

    Returns:
        ``(stage_weight (4C, C, 3, 3), tail_weight (3, C, 3, 3))``.
    """
    channels = tail.shape[1]
    weight = torch.zeros(4 * channels, channels, 3, 3, dtype=tail.dtype)
    taps = ({-1: 0.25, 0: 0.75}, {0: 0.75, 1: 0.25})  # bilinear ×2: sub-pixel 0 leans back, 1 forward
    rest = torch.arange(3, channels)
    for i in (0, 1):
        for j in (0, 1):
            weight[torch.arange(3) * 4 + 2 * i + j] = tail
            for dy, a in taps[i].items():
                for dx, b in taps[j].items():
                    weight[rest * 4 + 2 * i + j, rest, 1 + dy, 1 + dx] = a * b
    ramp = torch.tensor([1.0, 2.0, 1.0], dtype=tail.dtype)
    new_tail = torch.zeros_like(tail)
    new_tail[torch.arange(3), torch.arange(3)] = torch.outer(ramp, ramp) / 16
    return weight, new_tail


def with_middle_camera(model: nn.Module, ref2_scale: int | None = None) -> tuple[nn.Module, int]:
    """A triple-camera DZSR (TZSR: a second, middle-camera reference fused before the tele) that starts
    from a dual-camera ``model``'s weights.

    Every weight the two share is copied; the middle camera's reference branch starts as a copy of the
    tele's when their densities match (it reads the wide as the tele is read), and its residual fusion
    starts at zero: the new model computes exactly what ``model`` does, and training learns what the wide
    adds.

    Args:
        model: a dual-camera DZSR.
        ref2_scale: density of the middle camera's reference; None: the scale (a ×2 network with a wide at
            2× the uw's density, as a 13/26 mm pair of a phone's cameras).

    Returns:
        ``(new_model, carried)``: the triple model (training mode, CPU) and how many of its parameters came
        from ``model``.

    Raises:
        ConfigError: ``model`` is not a dual-camera DZSR, or ``ref2_scale`` is out of range.
    """
    if not isinstance(model, DZSR) or model.hparams["triple"]:
        raise ConfigError(f"cannot add a middle camera to a {type(model).__name__}: not a dual-camera DZSR")
    scale = int(model.hparams["scale"])
    new_model = _build("dzsr", {**model.hparams, "triple": True, "ref2_scale": ref2_scale or scale})
    assert isinstance(new_model, DZSR) and new_model.fuse2 is not None
    source = model.state_dict()
    state = new_model.state_dict()
    carried = 0
    for name, value in state.items():
        src = source.get(name)
        if src is None and name.startswith("ref2."):
            src = source.get("ref." + name.removeprefix("ref2."))
        if src is not None and src.shape == value.shape:
            state[name] = src.clone()
            carried += value.numel()
    state["fuse2.weight"] = torch.zeros_like(state["fuse2.weight"])
    state["fuse2.bias"] = torch.zeros_like(state["fuse2.bias"])
    new_model.load_state_dict(state)
    return new_model.train(), carried


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    metadata: dict[str, Any],
    dtype: Literal["float32", "float16"] = "float32",
) -> Path:
    """Write a model's weights and metadata to a safetensors file, atomically.

    Stored: the model's ``state_dict()`` (its trainable weights; frozen trunks are non-persistent and
    left out), floating tensors cast to ``dtype``. The header's metadata key ``"dzsr"`` holds JSON with
    ``format_version``, ``arch``, ``hparams``, ``scale``, ``dzsr_version``, ``dtype`` and every entry of
    ``metadata`` (e.g. a training summary).

    Args:
        model: A model from :func:`create_model` (any registered architecture).
        path: Destination (``.safetensors``); its folder must exist. Written to a temporary file in the
            same folder, then renamed over ``path``.
        metadata: JSON-serialisable extra information; may not use the reserved keys above.
        dtype: ``"float32"`` or ``"float16"`` (half the size; loaded back as float32).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: Unregistered architecture, reserved or non-JSON metadata, or unknown ``dtype``.
    """
    arch = getattr(model, "arch", None)
    if (
        arch not in ARCHS
        or not isinstance(model, ARCHS[arch])
        or not isinstance(model, (DZSR, AuxLRGenerator))
    ):
        raise ConfigError(f"cannot save a {type(model).__name__}: not a registered dzsr architecture")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"checkpoint dtype must be 'float32' or 'float16', got {dtype!r}")
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ConfigError(f"checkpoint metadata keys {clash} are reserved")
    header = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": arch,
        "hparams": dict(model.hparams),
        "scale": model.hparams["scale"],
        "dzsr_version": __version__,
        "dtype": dtype,
        **metadata,
    }
    try:
        text = json.dumps(header, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    target = torch.float16 if dtype == "float16" else torch.float32
    tensors = {
        k: (v.detach().to("cpu", target) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    blob = save(tensors, metadata={_META_KEY: text})
    write_atomic(path, lambda fh: fh.write(blob))
    return path


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The ``.safetensors`` file.
        device: Where to put the model.

    Returns:
        ``(model, metadata)``: the model in ``eval()`` mode with float32 weights on ``device``, and the
        header's metadata dict (as written, including the caller's entries).

    Raises:
        WeightsError: Missing or unreadable file, not a dzsr checkpoint, a newer format, an unknown
            architecture, or weights that do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get(_META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if raw is None:
        raise WeightsError(f"{path}: not a dzsr checkpoint (no dzsr metadata in the header)")
    try:
        metadata = json.loads(raw)
    except ValueError as exc:
        raise WeightsError(f"{path}: corrupt dzsr metadata ({exc})") from exc
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise WeightsError(
            f"{path}: checkpoint format {version!r} is newer than this dzsr ({__version__}); upgrade dzsr"
        )
    arch = metadata.get("arch")
    if arch not in ARCHS:
        raise WeightsError(f"{path}: unknown architecture {arch!r} (known: {', '.join(sorted(ARCHS))})")
    # hyper-parameters added after a checkpoint was saved take the value that reproduces it
    hparams = {**getattr(ARCHS[arch], "legacy_hparams", {}), **metadata["hparams"]}
    try:
        model = _build(arch, hparams)
    except ConfigError as exc:
        raise WeightsError(f"{path}: {exc}") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit {arch} {metadata['hparams']} ({exc})") from exc
    return model.to(device).eval(), metadata
