"""What an SR network tells the inference engine about itself (``model.describe()``).

The engine (``dzcli.infer.engine``) tiles and runs any module that has ``describe() ->
ModelDescriptor`` and the call convention ``model(lr, ref, box[, gvec=…])``; it reads everything else
it needs (memory per pixel, how much Ref a tile needs, whether there is a global vector) from here,
as spandrel's model descriptors do for single-image networks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDescriptor:
    """An SR network's needs, as the engine sees them.

    Attributes:
        scale: ``s``: the output is ``s×`` the LR in each dimension.
        supports_half: float16 autocast on CUDA gives the same result to within float16 precision.
        bytes_per_pixel: peak working memory per LR pixel of a tile (its Ref window included), float32.
        workspace_bytes: extra working memory per tile independent of its size.
        ref_context: LR pixels of Ref the model reads beyond a tile's own footprint (a tile gets its Ref
            window widened by this much). A tile farther than this from the Ref gives the same output
            with ``ref=None``, and is run that way.
        ref_grid: Ref windows must start at multiples of this many LR pixels from the Ref's origin
            (the model's matching cell), so that every tile sees the Ref on the same grid.
        gvec_stride: the model has ``global_vector(lr, ref, box) -> (B, C)``, the mean of a feature map
            pooled by this many LR pixels, computed once per image and passed to every tile as
            ``gvec=``; None when the model has no global vector.
        ref2_scale: the model also takes a second, middle-camera reference ``ref2`` at this density over
            its box ``box2`` (``model(lr, ref, box, ref2=…, box2=…)``, the same ``ref_context`` and
            ``ref_grid``); None for a dual-camera model.
    """

    scale: int
    supports_half: bool
    bytes_per_pixel: float
    workspace_bytes: int = 0
    ref_context: int = 0
    ref_grid: int = 1
    gvec_stride: int | None = None
    ref2_scale: int | None = None
