"""The models shipped with dzsr, and :func:`load_model` (a bundled name or a checkpoint path).

:data:`BUNDLED` is the explicit table of shipped weights: each row names its file in :data:`WEIGHTS_DIR`,
its SHA-256 (checked every time it is loaded, so a corrupt or replaced file is refused), its scale, its
model card and its licence. A weight file in the folder that is not in the table is not a bundled model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from dzcli.errors import WeightsError
from dzcli.infer.devices import resolve_device

from . import load_checkpoint

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "WEIGHTS_DIR",
    "BundledModel",
    "choose_bundled",
    "load_model",
    "weight_count",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the bundled weights (``<name>.safetensors``) and their model cards (``<name>.md``)."""
DEFAULT_MODEL = "dzsr-small-x2"
"""The bundled model preferred when ``--model`` is not given (among those of the best-fitting scale)."""


@dataclass(frozen=True)
class BundledModel:
    """One row of the table of shipped models.

    Attributes:
        name: what ``--model NAME`` accepts.
        file: the weights' file name in ``folder``.
        sha256: hex digest the file must have.
        scale: the network's scale ``s``.
        card: the model card's file name in ``folder``.
        licence: the weights' licence.
        folder: where the files are (:data:`WEIGHTS_DIR`).
        automatic: whether :func:`choose_bundled` may pick it for an output scale (``--model`` not given);
            False for a model that measured below another path at the scales it would be picked for, which
            ``--model NAME`` still selects.
    """

    name: str
    file: str
    sha256: str
    scale: int
    card: str
    licence: str
    folder: Path = WEIGHTS_DIR
    automatic: bool = True

    @property
    def path(self) -> Path:
        """The weights file."""
        return self.folder / self.file

    @property
    def summary(self) -> str:
        """The first paragraph of the model card that is not a heading, on one line ('' without a card)."""
        card = self.folder / self.card
        if not card.is_file():
            return ""
        paragraph: list[str] = []
        for line in card.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text.startswith("#") or (not text and not paragraph):
                continue
            if not text:
                break
            paragraph.append(text)
        return " ".join(paragraph)

    def verified_path(self) -> Path:
        """The weights file, after checking that it is there and has the table's SHA-256.

        Raises:
            WeightsError: missing file, or a digest that differs (corrupt or replaced).
        """
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: bundled model {self.name!r} is missing; reinstall dzsr")
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise WeightsError(
                f"{self.path}: SHA-256 {digest[:12]}… differs from the bundled {self.name!r}'s "
                f"{self.sha256[:12]}… (corrupt or replaced file); reinstall dzsr"
            )
        return self.path


BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        name="dzsr-small-x2",
        file="dzsr-small-x2.safetensors",
        sha256="822a211b1dd499637c7c0fc81fe473f2ed440ac3e21612de0e300afcaf8054c0",
        scale=2,
        card="dzsr-small-x2.md",
        licence="MIT",
    ),
    BundledModel(
        name="dzsr-small-x2-sharp",
        file="dzsr-small-x2-sharp.safetensors",
        sha256="f4550c1b19906350a47c54bd899136eead3f33be8f857b00e5084e506ac135fc",
        scale=2,
        card="dzsr-small-x2-sharp.md",
        licence="MIT",
    ),
    BundledModel(
        name="dzsr-small-x4",
        file="dzsr-small-x4.safetensors",
        sha256="77a30464466ee60aa346bf7700ce0a80caafa5866631c078892d2ebf40982f41",
        scale=4,
        card="dzsr-small-x4.md",
        licence="MIT",
        automatic=False,  # at x4 and x5.9 the x2 network and the banded paste scored higher (its card)
    ),
)
"""The shipped models, by name."""


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`load_model` loaded.

    Attributes:
        name: the bundled model's name, a checkpoint's file stem, or a run folder's name.
        path: the weights file.
        scale: the network's scale ``s``.
        metadata: the checkpoint's metadata (architecture, hyper-parameters, training summary, ...).
    """

    name: str
    path: Path
    scale: int
    metadata: dict[str, Any]

    @property
    def perceptual(self) -> bool:
        """The network was trained for looks: its training loss has a perceptual term (``dzsr train --loss``
        other than ``l1``; a checkpoint that does not say is taken as trained with ℓ1)."""
        training = self.metadata.get("training")
        return isinstance(training, dict) and training.get("loss", "l1") != "l1"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``path`` as a string)."""
        return {"name": self.name, "path": str(self.path), "scale": self.scale, "metadata": self.metadata}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        """The inverse of :meth:`to_json`."""
        return cls(str(data["name"]), Path(data["path"]), int(data["scale"]), dict(data["metadata"]))


def weight_count(path: Path) -> int:
    """Number of stored values in a safetensors file (without loading it)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return int(sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys()))  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: unreadable weights ({exc})") from exc


def choose_bundled(outscale: float | None, models: tuple[BundledModel, ...] | None = None) -> BundledModel:
    """The bundled model for an output scale: among the :attr:`~BundledModel.automatic` ones, the scale ``s``
    closest to it (log ratio, the larger ``s`` on ties), :data:`DEFAULT_MODEL` among models of that scale if
    present.

    Args:
        outscale: the intended output scale (None: 2).
        models: the table to choose from; default :data:`BUNDLED`.

    Raises:
        WeightsError: no bundled model.
    """
    models = tuple(m for m in (BUNDLED if models is None else models) if m.automatic)
    if not models:
        raise WeightsError("no bundled model; pass --model PATH to a checkpoint from `dzsr train`")
    target = outscale if outscale and outscale > 0 else 2.0
    best = min({m.scale for m in models}, key=lambda sc: (abs(math.log(target / sc)), -sc))
    same = [m for m in models if m.scale == best]
    return next((m for m in same if m.name == DEFAULT_MODEL), same[0])


def load_model(
    spec: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    outscale: float | None = None,
    table: tuple[BundledModel, ...] | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Load the SR model named by ``--model``.

    Args:
        spec: the name of a bundled model (its SHA-256 is checked), a checkpoint path (from ``dzsr train``
            / :func:`dzsr_models.save_checkpoint`), a ``dzsr train`` run folder (its
            ``checkpoints/best.safetensors``), or None for the bundled default
            (:func:`choose_bundled` with ``outscale``).
        device: ``auto``, ``cpu``, ``cuda[:N]``, ``mps`` or a ``torch.device``.
        outscale: the intended output scale, to choose among bundled models of different scales.
        table: the bundled models; default :data:`BUNDLED`.

    Returns:
        ``(model, info)``: the model in ``eval()`` mode, and its :class:`ModelInfo`.

    Raises:
        WeightsError: unknown name, missing, corrupt or unusable checkpoint, no bundled model.
        ConfigError: an unavailable device.
    """
    dev = resolve_device(device)
    table = BUNDLED if table is None else table
    by_name = {m.name: m for m in table}
    text = None if spec is None else str(spec)
    if text is None or text in by_name:
        chosen = choose_bundled(outscale, table) if text is None else by_name[text]
        path, name = chosen.verified_path(), chosen.name
    else:
        candidate = Path(text).expanduser()
        if candidate.is_file():
            path, name = candidate, candidate.stem
        elif candidate.is_dir():  # a `dzsr train` run folder: its best checkpoint
            path, name = candidate / "checkpoints" / "best.safetensors", candidate.resolve().name
            if not path.is_file():
                raise WeightsError(
                    f"{text}: a folder without checkpoints/best.safetensors (not a dzsr train run)"
                )
        elif candidate.suffix or "/" in text or os.sep in text:
            raise WeightsError(f"{text}: checkpoint not found")
        else:
            names = ", ".join(by_name) or "none"
            raise WeightsError(
                f"unknown model {text!r}: bundled models are {names}; or pass the path of a checkpoint"
            )
    model, meta = load_checkpoint(path, device=dev)
    if meta.get("arch") != "dzsr":
        raise WeightsError(f"{path}: not a super-resolution model (architecture {meta.get('arch')!r})")
    scale = int(meta["scale"])
    log.debug("model %s (x%d) from %s", name, scale, path)
    return model, ModelInfo(name=name, path=path, scale=scale, metadata=meta)
