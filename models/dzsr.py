"""DZSR: reference-based ×s super-resolution of the wide photo with the telephoto as reference (DESIGN §4).

SelfDZSR++ recipe, re-implemented from the method description, with TZSR's progressive fusion of a
second (middle-camera) reference as an option.

Geometry convention (all images ``(B, 3, ·, ·)`` float RGB in ``[0, 1]``):

- ``lr``: ``(B, 3, H, W)``, any size.
- ``ref``: ``(B, 3, s·h, s·w)``, the telephoto resampled to exactly ``s×`` the LR's pixel density, so
  one LR pixel covers ``s×s`` Ref pixels.
- ``box``: where the Ref lies in the LR, ``(x0, y0, w, h)`` in integer LR pixels (``w, h`` = Ref size / s).
  One 4-tuple for the whole batch, one per sample, or an int tensor ``(4,)`` / ``(B, 4)``. A box may
  stick out of the LR (tiles at the edge of the tele's field of view); the part inside is used.
  ``box=None`` means "the Ref's position is unknown" (a tile that got a tele window from elsewhere):
  the Ref is only matched, never pasted. In training the Ref is the centre ``1/s`` of the HR patch:
  :func:`centre_box` and :func:`crop_ref` give the box and the Ref.
- ``ref=None`` disables the reference: Ref features are zero, nothing is pasted, and the global vector
  sees zeros for the Ref (the "model with its reference disabled" baseline).

Matching happens at the LR's density: the Ref is area-downsampled by ``s`` and both images go through the
frozen ImageNet VGG16 up to conv3_1 at its natural 1/4 resolution (one feature cell per 4×4 LR pixels),
and 3×3 feature patches are compared by cosine similarity. With a box, each cell is compared only with
the Ref cells within ``match_radius`` cells of its registered position (the Ref has been registered to
sub-pixel accuracy; training registers it by construction), so a pixel more than about
``match_radius + 1`` cells outside the Ref has no match and gets the reference-free path's zero
features; without a box, all pairs are compared. Each cell's match gives integer offsets in LR pixels.
Ref features are made at LR density by space-to-depth (the Ref's ``s²`` sub-pixels become channels), and
the matched offsets drive a depthwise deformable 3×3 conv whose 9 taps all share the matched offset;
because the offsets are integers, it is evaluated exactly as a depthwise conv on the Ref features
followed by a gather (:func:`shifted_depthwise_conv`). In ``eval()`` the Ref's own features are pasted
over its box, so a tile that lies inside the box needs no matching at all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dzcli.errors import ConfigError, InputError

from .descriptor import ModelDescriptor
from .pretrained import VGG16Features

Box = tuple[int, int, int, int]
BoxLike = Box | Sequence[Box] | Tensor

#: DIV2K RGB mean, subtracted at the input and added back at the output.
RGB_MEAN = (0.4488, 0.4371, 0.4040)

SCALES = (2, 4)


# --------------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------------


def centre_box(height: int, width: int, scale: int) -> Box:
    """The centred ``1/scale`` box of an LR image, as used in training (Ref = centre of the HR).

    Args:
        height: LR height ``H``.
        width: LR width ``W``.
        scale: Network scale ``s``.

    Returns:
        ``(x0, y0, w, h)`` with ``w = W // s``, ``h = H // s``, centred (rounded towards the top-left).
    """
    w, h = width // scale, height // scale
    if w < 1 or h < 1:
        raise InputError(f"LR {height}x{width} is too small for a centred 1/{scale} reference box")
    return (width - w) // 2, (height - h) // 2, w, h


def crop_ref(hr: Tensor, box: Box, scale: int) -> Tensor:
    """Cut the Ref that corresponds to an LR box out of the HR (training data).

    Args:
        hr: ``(..., s·H, s·W)`` the HR aligned with the LR.
        box: ``(x0, y0, w, h)`` in LR pixels, inside the LR.
        scale: ``s``.

    Returns:
        ``(..., s·h, s·w)`` view of ``hr``.
    """
    x0, y0, w, h = box
    return hr[..., scale * y0 : scale * (y0 + h), scale * x0 : scale * (x0 + w)]


def _boxes(box: BoxLike, batch: int) -> list[Box]:
    """Normalise a box argument to one python ``(x0, y0, w, h)`` per sample."""
    rows: Any = box.detach().to("cpu", torch.int64).tolist() if isinstance(box, Tensor) else box
    if len(rows) == 4 and all(isinstance(v, numbers.Integral) for v in rows):
        rows = [rows] * batch
    if len(rows) != batch or any(len(r) != 4 for r in rows):
        raise InputError(
            f"box must be (x0, y0, w, h) or one such box per sample (batch {batch}), got {box!r}"
        )
    return [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


def _paste(base: Tensor, patch: Tensor, boxes: list[Box], keep: Tensor) -> Tensor:
    """Overwrite ``base`` with ``patch`` at each sample's box where ``keep`` (clipped to the frame).

    Args:
        base: ``(B, C, H, W)``.
        patch: ``(B, C, h, w)``, ``(w, h)`` equal to every box's size.
        boxes: ``(x0, y0, w, h)`` per sample, LR pixels.
        keep: ``(B,)`` bool, which samples get the paste.

    Returns:
        ``(B, C, H, W)``.
    """
    B, _, H, W = base.shape
    canvases = []
    mask = torch.zeros(B, 1, H, W, dtype=torch.bool, device=base.device)
    for b, (x0, y0, w, h) in enumerate(boxes):
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
        if ix1 <= ix0 or iy1 <= iy0:
            canvases.append(torch.zeros_like(base[b]))
            continue
        piece = patch[b, :, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        canvases.append(F.pad(piece, (ix0, W - ix1, iy0, H - iy1)))
        mask[b, :, iy0:iy1, ix0:ix1] = keep[b]
    return torch.where(mask, torch.stack(canvases), base)


# --------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------


def match_features(query: Tensor, ref: Tensor, *, chunk_elements: int = 1 << 24) -> tuple[Tensor, Tensor]:
    """Best Ref 3×3 feature patch for every query position, by cosine similarity, in bounded memory.

    Both maps are zero-padded by one pixel, so every position has a 3×3 patch. The correlation volume
    is never held whole: Ref patches are processed in chunks (and query rows in bands) so that no
    intermediate exceeds about ``chunk_elements`` values, keeping a running max/argmax. The batch is
    vectorised with a grouped convolution.

    Args:
        query: ``(B, C, hq, wq)`` features, L2-normalised over channels per pixel.
        ref: ``(B, C, hr, wr)`` features, L2-normalised over channels per pixel.
        chunk_elements: Memory budget in tensor elements for one correlation slab.

    Returns:
        ``index``: ``(B, hq, wq)`` int64, row-major index ``y·wr + x`` of the best Ref patch centre
        (the first one on ties); ``score``: ``(B, hq, wq)`` its cosine similarity in ``[-1, 1]``.
    """
    B, C, hq, wq = query.shape
    _, _, hr, wr = ref.shape
    total = hr * wr
    n = max(1, min(total, chunk_elements // max(1, B * hq * wq), chunk_elements // (B * C * 9)))
    band = max(1, min(hq, chunk_elements // (B * n * wq)))
    rp = F.pad(ref, (1, 1, 1, 1))
    qp = F.pad(query, (1, 1, 1, 1)).reshape(1, B * C, hq + 2, wq + 2)
    taps = torch.arange(3, device=ref.device)
    tap_y = taps.repeat_interleave(3)
    tap_x = taps.repeat(3)
    best = query.new_full((B, hq, wq), -math.inf)
    arg = torch.zeros(B, hq, wq, dtype=torch.int64, device=query.device)
    for j0 in range(0, total, n):
        j = torch.arange(j0, min(j0 + n, total), device=ref.device)
        ys, xs = j // wr, j % wr
        patches = rp[:, :, ys[:, None] + tap_y, xs[:, None] + tap_x]  # (B, C, nj, 9)
        patches = patches.permute(0, 2, 1, 3).reshape(B, len(j), C * 9)
        kernel = F.normalize(patches, dim=2, eps=1e-8).reshape(B * len(j), C, 3, 3)
        for r0 in range(0, hq, band):
            r1 = min(r0 + band, hq)
            corr = F.conv2d(qp[:, :, r0 : r1 + 2], kernel, groups=B).view(B, len(j), r1 - r0, wq)
            val, idx = corr.max(dim=1)
            better = val > best[:, r0:r1]
            best[:, r0:r1] = torch.where(better, val, best[:, r0:r1])
            arg[:, r0:r1] = torch.where(better, idx + j0, arg[:, r0:r1])
    qnorm = F.conv2d(query.pow(2).sum(1, keepdim=True), query.new_ones(1, 1, 3, 3), padding=1).sqrt()
    return arg, best / qnorm.squeeze(1).clamp_min(1e-8)


def _box3(x: Tensor) -> Tensor:
    """``(B, h + 2, w + 2)`` → ``(B, h, w)``: sum over each 3×3 neighbourhood (no padding)."""
    return F.conv2d(x[:, None], x.new_ones(1, 1, 3, 3))[:, 0]


def _place(x: Tensor, oy: int, ox: int, height: int, width: int, margin: int) -> Tensor:
    """``canvas[..., i + margin, j + margin] = x[..., i + oy, j + ox]``, zero where ``x`` has nothing.

    Args:
        x: ``(..., h, w)``.
        oy, ox: where canvas cell ``(0, 0)`` (after the margin) reads ``x``.
        height, width: canvas size (margins included).
        margin: canvas cells before cell ``(0, 0)``.

    Returns:
        ``(..., height, width)``.
    """
    h, w = x.shape[-2:]
    canvas = x.new_zeros(*x.shape[:-2], height, width)
    y0, y1 = max(0, margin - oy), min(height, margin - oy + h)
    x0, x1 = max(0, margin - ox), min(width, margin - ox + w)
    if y1 > y0 and x1 > x0:
        canvas[..., y0:y1, x0:x1] = x[
            ..., y0 - margin + oy : y1 - margin + oy, x0 - margin + ox : x1 - margin + ox
        ]
    return canvas


def match_local(query: Tensor, ref: Tensor, offset: tuple[int, int], radius: int) -> tuple[Tensor, Tensor]:
    """Best Ref 3×3 feature patch near a known position, for every query position.

    The same cosine similarity of zero-padded 3×3 patches as :func:`match_features`, but query cell
    ``(i, j)`` is only compared with the Ref cells ``(i + oy + dy, j + ox + dx)``, ``|dy|, |dx| <=
    radius``, that exist: ``(2·radius + 1)²`` candidates per cell instead of all of them. On a registered
    pair the best match lies near the registered position, where this finds the same cell as the
    all-pairs search (ties: the first in row-major order, as there) at a cost independent of the Ref's size.

    Args:
        query: ``(B, C, hq, wq)`` features, L2-normalised over channels per pixel.
        ref: ``(B, C, hr, wr)`` features, L2-normalised over channels per pixel.
        offset: ``(oy, ox)``, the Ref cell registered with query cell ``(0, 0)``.
        radius: search radius in cells.

    Returns:
        ``index``: ``(B, hq, wq)`` int64, row-major ``y·wr + x`` of the best Ref patch centre, ``-1`` where
        no candidate exists (the query cell is more than ``radius`` cells away from the Ref);
        ``score``: ``(B, hq, wq)`` its cosine similarity (``-inf`` where ``index`` is ``-1``).
    """
    B, _C, hq, wq = query.shape
    hr, wr = ref.shape[-2:]
    oy, ox = offset
    m = radius + 1
    H, W = hq + 2 * m, wq + 2 * m
    canvas = _place(ref, oy, ox, H, W, m)
    rnorm = _place(_box3(F.pad(ref.pow(2).sum(1), (2, 2, 2, 2)))[:, 1:-1, 1:-1].sqrt(), oy, ox, H, W, m)
    exists = _place(ref.new_ones(1, hr, wr, dtype=torch.bool), oy, ox, H, W, m)
    qp = F.pad(query, (1, 1, 1, 1))
    qnorm = _box3(qp.pow(2).sum(1)).sqrt().clamp_min(1e-8)
    iy = torch.arange(hq, device=query.device).view(hq, 1) + oy
    ix = torch.arange(wq, device=query.device).view(1, wq) + ox
    best = query.new_full((B, hq, wq), -math.inf)
    arg = torch.full((B, hq, wq), -1, dtype=torch.int64, device=query.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ya, xa = m + dy, m + dx  # canvas position of query cell (0, 0)'s candidate
            dot = _box3((qp * canvas[:, :, ya - 1 : ya + hq + 1, xa - 1 : xa + wq + 1]).sum(1))
            cos = dot / rnorm[:, ya : ya + hq, xa : xa + wq].clamp_min(1e-8) / qnorm
            cos = cos.masked_fill(~exists[:, ya : ya + hq, xa : xa + wq], -math.inf)
            better = cos > best
            best = torch.where(better, cos, best)
            arg = torch.where(better, (iy + dy) * wr + (ix + dx), arg)
    return arg, best


RING_MARGIN = 24
"""Pixels of image context around each strip of :meth:`PatchMatcher.ring_flow` (>= the 17 a cell's
conv3_1 features and 3×3 patch reach, plus up to 3 of cell alignment)."""


class PatchMatcher(nn.Module):
    """Frozen correspondence between an LR image and a Ref at the same pixel density.

    Features: ImageNet VGG16 up to conv3_1 with its pools, i.e. at its natural ``1/4`` resolution (one
    feature cell per ``4×4`` pixels; average-pooled further for a larger ``stride``), L2-normalised per
    pixel. Images are edge-padded so that cells start at multiples of ``stride`` from the Ref's origin.
    Matching: around the registered position (:func:`match_local`) when the Ref's position is known,
    else all pairs (:func:`match_features`). Weights are non-persistent buffers (never in a checkpoint).

    Args:
        weights: ``"imagenet"`` (offline, :mod:`.pretrained`) or ``"random"`` (seeded, for tests).
        stride: Feature cell size in image pixels, a multiple of 4.
        radius: Local search radius in cells.
        chunk_elements: Memory budget of one all-pairs correlation slab, in elements.
    """

    def __init__(
        self,
        *,
        weights: Literal["imagenet", "random"] = "imagenet",
        stride: int = 4,
        radius: int = 3,
        chunk_elements: int = 1 << 24,
    ) -> None:
        super().__init__()
        if stride < 4 or stride % 4:
            raise ConfigError(f"match stride must be a positive multiple of 4, got {stride}")
        if radius < 0:
            raise ConfigError(f"match radius must be >= 0, got {radius}")
        self.hparams: dict[str, Any] = {
            "weights": weights,
            "stride": stride,
            "radius": radius,
            "chunk_elements": chunk_elements,
        }
        self.stride = stride
        self.radius = radius
        self.chunk_elements = chunk_elements
        self.trunk = VGG16Features("conv3_1", pool=True, weights=weights)

    def features(self, image: Tensor, shift: tuple[int, int] = (0, 0)) -> Tensor:
        """Matching features.

        Args:
            image: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
            shift: ``(sy, sx)`` in ``[0, stride)``: pixels of edge padding before the image, so that cell
                ``(0, 0)`` starts at pixel ``(-sy, -sx)``.

        Returns:
            ``(B, 256, ceil((H + sy) / stride), ceil((W + sx) / stride))``, unit L2 norm per pixel.
        """
        s = self.stride
        sy, sx = shift
        H, W = image.shape[-2:]
        image = F.pad(image, (sx, -(W + sx) % s, sy, -(H + sy) % s), mode="replicate")
        feats = self.trunk(image)
        if s > 4:
            feats = F.avg_pool2d(feats, s // 4)
        return F.normalize(feats, dim=1, eps=1e-8)

    def _match(self, image: Tensor, ref: Tensor, origin: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
        s = self.stride
        H, W = image.shape[-2:]
        if origin is None:
            shift, offset = (0, 0), (0, 0)
        else:  # query cells start at the Ref's origin + multiples of s
            shift = (-origin[1] % s, -origin[0] % s)
            offset = (-(origin[1] + shift[0]) // s, -(origin[0] + shift[1]) // s)
        fq, fr = self.features(image, shift), self.features(ref)
        if origin is None:
            index, score = match_features(fq, fr, chunk_elements=self.chunk_elements)
        else:
            index, score = match_local(fq, fr, offset, self.radius)
        hq, wq = fq.shape[-2:]
        wr = fr.shape[-1]
        qy = torch.arange(hq, device=index.device).view(1, hq, 1)
        qx = torch.arange(wq, device=index.device).view(1, 1, wq)
        none = index < 0  # no candidate: the registered position (outside the Ref)
        ky = torch.where(none, qy + offset[0], index // wr)
        kx = torch.where(none, qx + offset[1], index % wr)
        flow = torch.stack((ky - qy, kx - qx), dim=1) * s + torch.tensor(shift, device=index.device).view(
            1, 2, 1, 1
        )
        flow = flow.to(image.dtype).repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        score = score.masked_fill(none, 0.0).repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
        rows, cols = slice(shift[0], shift[0] + H), slice(shift[1], shift[1] + W)
        return flow[..., rows, cols], score[..., rows, cols]

    @torch.no_grad()
    def ring_flow(self, image: Tensor, ref: Tensor, box: Box) -> Tensor:
        """:meth:`forward`'s flow where it is used when the Ref is pasted over its box, in bounded work.

        Inside ``box`` the Ref's own features replace the matched ones, and beyond the local search's reach
        (``(radius + 1)·stride`` pixels) there is nothing to match; so only the ring in between is matched,
        as four strips with :data:`RING_MARGIN` pixels of context (each cell's features and 3×3 patch see
        at most 17 pixels beyond it), on the Ref's part within reach (the whole image at once when the
        strips would cover more than half of it). Elsewhere the flow is the registered position.

        Args:
            image: ``(1, 3, H, W)`` RGB in ``[0, 1]``.
            ref: ``(1, 3, h, w)`` at the same density, lying at ``box = (x0, y0, w, h)`` in ``image``.

        Returns:
            ``(1, 2, H, W)``, as :meth:`forward`'s flow (equal to it on the ring).
        """
        H, W = image.shape[-2:]
        x0, y0, w, h = box
        s, reach, m = self.stride, self.stride * (self.radius + 1), RING_MARGIN
        flow = torch.empty(1, 2, H, W, dtype=image.dtype, device=image.device)
        flow[:, 0], flow[:, 1] = -y0, -x0
        cores = [
            (y0 - reach, y0, x0 - reach, x0 + w + reach),  # top
            (y0 + h, y0 + h + reach, x0 - reach, x0 + w + reach),  # bottom
            (y0, y0 + h, x0 - reach, x0),  # left
            (y0, y0 + h, x0 + w, x0 + w + reach),  # right
        ]
        strips = []
        for cy0, cy1, cx0, cx1 in cores:
            cy0, cy1, cx0, cx1 = max(cy0, 0), min(cy1, H), max(cx0, 0), min(cx1, W)
            if cy1 > cy0 and cx1 > cx0:
                strips.append(
                    (cy0, cy1, cx0, cx1, max(cy0 - m, 0), min(cy1 + m, H), max(cx0 - m, 0), min(cx1 + m, W))
                )
        if sum((yb - ya) * (xb - xa) for *_, ya, yb, xa, xb in strips) > H * W // 2:  # cheaper at once
            return self._match(image, ref, (x0, y0))[0]
        for cy0, cy1, cx0, cx1, ya, yb, xa, xb in strips:
            rya, rxa = max(ya - y0 - reach - m, 0) // s * s, max(xa - x0 - reach - m, 0) // s * s
            ryb, rxb = min(yb - y0 + reach + m, h), min(xb - x0 + reach + m, w)
            if ryb <= rya or rxb <= rxa:
                continue
            part, _ = self._match(
                image[..., ya:yb, xa:xb], ref[..., rya:ryb, rxa:rxb], (x0 + rxa - xa, y0 + rya - ya)
            )
            part[:, 0] += rya - ya
            part[:, 1] += rxa - xa
            flow[..., cy0:cy1, cx0:cx1] = part[..., cy0 - ya : cy1 - ya, cx0 - xa : cx1 - xa]
        return flow

    @torch.no_grad()
    def forward(
        self, image: Tensor, ref: Tensor, origins: Sequence[tuple[int, int]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Match every ``stride×stride`` cell of ``image`` to a cell of ``ref``.

        Args:
            image: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (the LR, or the aux-LR in training).
            ref: ``(B, 3, h, w)`` RGB in ``[0, 1]`` at the same density as ``image``.
            origins: per sample, ``(x0, y0)``: where the Ref's top-left pixel lies in ``image`` (its
                registered position; local search); None: unknown (all pairs).

        Returns:
            ``flow``: ``(B, 2, H, W)`` float, integer-valued ``(dy, dx)`` in pixels such that LR pixel
            ``p`` corresponds to Ref pixel ``p + flow(p)`` (constant over each cell; the registered
            position where no Ref cell is within reach); ``score``: ``(B, H, W)`` the cell's cosine
            similarity (0 where nothing was within reach).
        """
        if origins is None:
            return self._match(image, ref, None)
        if len(set(origins)) == 1:
            return self._match(image, ref, origins[0])
        parts = [self._match(image[b : b + 1], ref[b : b + 1], o) for b, o in enumerate(origins)]
        return torch.cat([f for f, _ in parts]), torch.cat([sc for _, sc in parts])


def shifted_depthwise_conv(feats: Tensor, flow: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Depthwise deformable 3×3 conv whose 9 taps share one integer offset per output pixel.

    Output pixel ``p`` is the depthwise 3×3 conv of ``feats`` (zero outside) centred at ``p + flow(p)``,
    plus the bias, and exactly 0 where that 3×3 window does not meet ``feats`` (a pixel the Ref has
    nothing for gets the reference-free path's zero features). Where the window meets ``feats`` it is
    identical to ``torchvision.ops.deform_conv2d`` on ``feats`` placed at the top-left of a zero canvas
    of the output's size, with offsets ``flow`` repeated for all 9 taps, but one conv + gather instead of
    a sampled im2col.

    Args:
        feats: ``(B, C, h, w)`` features (any size).
        flow: ``(B, 2, H, W)`` integer-valued ``(dy, dx)``; ``(H, W)`` is the output size.
        weight: ``(C, 1, 3, 3)`` depthwise kernel.
        bias: ``(C,)`` or None.

    Returns:
        ``(B, C, H, W)``.
    """
    B, C, h, w = feats.shape
    H, W = flow.shape[-2:]
    conv = F.conv2d(F.pad(feats, (1, 1, 1, 1)), weight, None, padding=1, groups=C)  # centres -1 … h
    fy, fx = flow[:, 0].round().long(), flow[:, 1].round().long()
    qy = torch.arange(H, device=flow.device).view(1, H, 1) + fy + 1
    qx = torch.arange(W, device=flow.device).view(1, 1, W) + fx + 1
    inside = (qy >= 0) & (qy < h + 2) & (qx >= 0) & (qx < w + 2)
    lin = (qy.clamp(0, h + 1) * (w + 2) + qx.clamp(0, w + 1)).view(B, 1, H * W).expand(B, C, H * W)
    out = conv.flatten(2).gather(2, lin).view(B, C, H, W)
    if bias is not None:
        out = out + bias.view(1, C, 1, 1)
    return out * inside.unsqueeze(1)


# --------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------


def deform_depthwise_conv3x3(x: Tensor, offset: Tensor, weight: Tensor) -> Tensor:
    """Depthwise deformable 3×3 conv (stride 1, padding 1), as bilinear sampling + a per-channel tap sum.

    Exactly ``torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))`` for a ``(C, 1, 3, 3)``
    weight and one offset group: tap ``k = (ky, kx)`` of output pixel ``p`` reads ``x`` bilinearly at
    ``p + (ky, kx) + offset_k(p)``, with the out-of-image neighbours of a sample counting as 0 (so a sample
    fades to 0 over the pixel around the image and is 0 beyond). Here the 9 samples of every pixel come
    from one ``F.grid_sample`` (zeros padding, which interpolates out of the image exactly that way) and
    are summed with the tap weights by a batched ``(1×9)·(9×HW)`` matmul. On CPU its backward is several
    times faster than ``deform_conv2d``'s sampled-im2col one. Only the float rounding differs (the pixel
    positions go through ``grid_sample``'s normalised coordinates): in float64 the two agree to ~1e-15.
    Under autocast it runs in float32 and returns ``x``'s dtype, as torchvision's op does.

    Args:
        x: ``(B, C, H, W)``.
        offset: ``(B, 18, H, W)``: ``(dy, dx)`` for each tap, taps row-major (torchvision's layout).
        weight: ``(C, 1, 3, 3)``.

    Returns:
        ``(B, C, H, W)``.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return deform_depthwise_conv3x3(x.float(), offset.float(), weight.float()).to(x.dtype)
    B, C, H, W = x.shape
    off = offset.to(x.dtype).reshape(B, 9, 2, H, W)
    r = _tap_grid().to(device=x.device, dtype=x.dtype)  # (2, 9) integers, exact in any float dtype
    # p + R_k, then + offset: the positions torchvision computes; (B, 9, H, W) in pixels
    y = torch.arange(H, device=x.device, dtype=x.dtype).view(1, H, 1) + r[0].view(9, 1, 1) + off[:, :, 0]
    xx = torch.arange(W, device=x.device, dtype=x.dtype).view(1, 1, W) + r[1].view(9, 1, 1) + off[:, :, 1]
    # pixel i ↔ normalised (2i + 1) / size − 1 (align_corners=False: also fine for a size of 1)
    grid = torch.stack(((2 * xx + 1) / W - 1, (2 * y + 1) / H - 1), dim=-1).view(B, 9 * H, W, 2)
    taps = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, 9H, W)
    out = torch.matmul(weight.reshape(1, C, 1, 9).to(x.dtype), taps.view(B, C, 9, H * W))
    return out.view(B, C, H, W)


def _tap_grid() -> Tensor:
    """R: ``(2, 9)`` the (ky, kx) position of each 3×3 tap, row-major, in {-1, 0, 1}."""
    k = torch.arange(-1.0, 2.0)
    return torch.stack((k.repeat_interleave(3), k.repeat(3)))


class AdaSTN(nn.Module):
    """Adaptive spatial transformer: depthwise deformable 3×3 conv with offsets ``A·R − R + b``.

    A per-pixel 2×2 matrix ``A`` and translation ``b`` are predicted from the LR features and the
    aux-LR features (corresponding channels paired in a grouped conv), so the 9 taps sample
    ``p + A·R_k + b``. In training, each sample's offsets are replaced with probability ``collapse_p`` by
    ``−R``: every tap then reads the centre pixel and the layer is a per-channel scale (the sum of its 9
    taps). At test time (``eval()``) or without an aux-LR the layer is always collapsed. The deformable
    conv is torchvision's ``deform_conv2d``, evaluated by :func:`deform_depthwise_conv3x3`.

    Args:
        channels: Feature channels ``C``.
        collapse_p: Per-sample collapse probability in training.
    """

    grid: Tensor

    def __init__(self, channels: int, *, collapse_p: float = 0.3) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = {"channels": channels, "collapse_p": collapse_p}
        self.collapse_p = collapse_p
        self.offset_features = nn.Conv2d(2 * channels, channels, 3, padding=1, groups=channels)
        self.affine = nn.Conv2d(channels, 4, 5, padding=2)
        self.translation = nn.Conv2d(channels, 2, 5, padding=2)
        self.weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("grid", _tap_grid(), persistent=False)

    def offsets(self, x: Tensor, guide: Tensor) -> Tensor:
        """Predicted deformable offsets.

        Args:
            x: ``(B, C, H, W)`` LR features.
            guide: ``(B, C, H, W)`` aux-LR features.

        Returns:
            ``(B, 18, H, W)``: ``(dy, dx)`` for each tap, row-major (torchvision's layout).
        """
        f = F.leaky_relu(self.offset_features(torch.stack((x, guide), dim=2).flatten(1, 2)), 0.2)
        a, t = self.affine(f), self.translation(f)
        ky, kx = self.grid[0].view(1, 9, 1, 1), self.grid[1].view(1, 9, 1, 1)
        dy = a[:, 0:1] * ky + a[:, 1:2] * kx - ky + t[:, 0:1]
        dx = a[:, 2:3] * ky + a[:, 3:4] * kx - kx + t[:, 1:2]
        return torch.stack((dy, dx), dim=2).flatten(1, 2)

    def collapsed_offsets(self) -> Tensor:
        """``(1, 18, 1, 1)`` offsets ``−R``: every tap reads the centre pixel."""
        return (-self.grid).t().reshape(1, 18, 1, 1)

    def forward(self, x: Tensor, guide: Tensor | None = None) -> Tensor:
        """Deform the LR features.

        Args:
            x: ``(B, C, H, W)`` LR features.
            guide: ``(B, C, H, W)`` aux-LR features, or None (collapsed mode).

        Returns:
            ``(B, C, H, W)``.
        """
        if guide is None or not self.training:
            return x * self.weight.sum(dim=(2, 3)).view(1, -1, 1, 1)
        collapse = torch.rand(x.shape[0], device=x.device) < self.collapse_p
        off = torch.where(collapse.view(-1, 1, 1, 1), self.collapsed_offsets(), self.offsets(x, guide))
        return deform_depthwise_conv3x3(x, off, self.weight)


class ModulatedResBlock(nn.Module):
    """conv–ReLU–conv residual block whose input is scaled channel-wise by ``1 + MLP(g)``.

    Args:
        channels: ``C``.
        hidden: Width of the modulation MLP.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """``x``: ``(B, C, H, W)``; ``g``: ``(B, C)`` global vector. Returns ``(B, C, H, W)``."""
        m = self.mlp(g).view(g.shape[0], -1, 1, 1)
        return x + self.conv2(F.relu(self.conv1(x * (1 + m))))


class GlobalEncoder(nn.Module):
    """Image-level vector from (the LR under the Ref, the Ref), at LR density.

    Input: ``concat(lr_region, space-to-depth(ref, s))``, mean-shifted; conv, conv, three stride-2 convs
    (ReLU after each), global average pool.

    Args:
        scale: Ref density ``s`` relative to the LR.
        channels: ``C`` (also the vector length).
    """

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3 + 3 * scale * scale, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3 + 3s², h, w)``. Returns ``(B, C)``."""
        return self.body(x).mean(dim=(2, 3))


class RefBranch(nn.Module):
    """One reference's features: extractor, matched depthwise deformable conv, and paste head.

    Both the extractor and the paste head see the Ref by space-to-depth at LR density
    (``3·s²`` channels), so the Ref's sub-pixel detail is kept in channels.

    Args:
        scale: The Ref's density relative to the LR.
        channels: ``C``.
        layers: Number of ``C→C`` convs after the first conv of the extractor.
    """

    def __init__(self, scale: int, channels: int, layers: int) -> None:
        super().__init__()
        cin = 3 * scale * scale
        ext: list[nn.Module] = [nn.Conv2d(cin, channels, 3, padding=1)]
        for _ in range(layers):
            ext += [nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1)]
        self.extractor = nn.Sequential(*ext)
        self.align_weight = nn.Parameter(torch.empty(channels, 1, 3, 3))
        self.align_bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.align_weight, a=math.sqrt(5))
        self.paste_head = nn.Conv2d(cin, channels, 3, padding=1)


# --------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------


class DZSR(nn.Module):
    """Dual-zoom (or triple-camera) reference-based SR network.

    LR path: conv 3→C, ``adastn`` AdaSTN blocks → ``h``. Ref path: VGG matching → depthwise deformable
    conv on space-to-depth Ref features; the Ref's own pixels are pasted at ``box`` (probability
    ``paste_p`` per sample in training, always in ``eval()``). Fusion: concat → conv → ``blocks``
    residual blocks modulated by a global vector → conv → ``+ h`` → PixelShuffle ×s → conv to RGB.
    Triple (TZSR): the middle camera's Ref (``ref2``, density ``ref2_scale``) is fused into the LR features
    before the tele, as a residual (``h + fuse2([h, middle])``), so that a zero ``fuse2`` is the dual network.

    All hyper-parameters are keyword-only and recorded in ``self.hparams``.

    Args:
        scale: ``s``, 2 or 4.
        channels: Feature width ``C``.
        blocks: Residual blocks in the body.
        adastn: AdaSTN blocks on the LR path.
        ref_layers: Depth of the Ref feature extractor.
        collapse_p: AdaSTN per-sample collapse probability in training.
        paste_p: Per-sample paste probability in training.
        ref_drop_p: Per-sample probability in training that the Ref's features are zeroed (the model also
            learns its reference-free path: the part of a photo the tele does not reach, or no tele).
        triple: Add the second (middle-camera) reference.
        ref2_scale: Density of ``ref2`` relative to the LR; default ``max(1, s // 2)``.
        matcher_weights: ``"imagenet"`` (needs the offline VGG16, see :mod:`.pretrained`) or ``"random"``.
        match_stride: Matching cell size in LR pixels (a multiple of 4).
        match_radius: Search radius (cells) around the Ref's registered position.
        match_chunk_elements: Memory budget of one correlation slab (elements).
        bicubic_skip: Add the bicubic upsampled LR to the output (the network learns a residual, so it
            starts from bicubic quality and trains much faster); ``False`` adds the RGB mean as in SelfDZSR.
    """

    arch = "dzsr"
    legacy_hparams: ClassVar[dict[str, object]] = {"bicubic_skip": False}
    """Values of hyper-parameters added later, for checkpoints saved without them (read by ``load_checkpoint``)."""

    mean: Tensor

    def __init__(
        self,
        *,
        scale: int = 4,
        channels: int = 64,
        blocks: int = 16,
        adastn: int = 3,
        ref_layers: int = 4,
        collapse_p: float = 0.3,
        paste_p: float = 0.3,
        ref_drop_p: float = 0.25,
        triple: bool = False,
        ref2_scale: int | None = None,
        matcher_weights: Literal["imagenet", "random"] = "imagenet",
        match_stride: int = 4,
        match_radius: int = 3,
        match_chunk_elements: int = 1 << 24,
        bicubic_skip: bool = True,
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ConfigError(f"DZSR scale must be one of {SCALES}, got {scale}")
        if channels < 1 or blocks < 1 or adastn < 0 or ref_layers < 0:
            raise ConfigError(
                f"invalid DZSR size: channels={channels}, blocks={blocks}, adastn={adastn}, ref_layers={ref_layers}"
            )
        if not (0.0 <= collapse_p <= 1.0 and 0.0 <= paste_p <= 1.0 and 0.0 <= ref_drop_p <= 1.0):
            raise ConfigError(
                f"collapse_p, paste_p and ref_drop_p must be in [0, 1], got {collapse_p}, {paste_p}, {ref_drop_p}"
            )
        if triple:
            ref2_scale = max(1, scale // 2) if ref2_scale is None else int(ref2_scale)
            if not 1 <= ref2_scale <= scale:
                raise ConfigError(f"ref2_scale must be in [1, {scale}], got {ref2_scale}")
        else:
            ref2_scale = None
        self.hparams: dict[str, Any] = {
            "scale": scale,
            "channels": channels,
            "blocks": blocks,
            "adastn": adastn,
            "ref_layers": ref_layers,
            "collapse_p": collapse_p,
            "paste_p": paste_p,
            "ref_drop_p": ref_drop_p,
            "triple": triple,
            "ref2_scale": ref2_scale,
            "matcher_weights": matcher_weights,
            "match_stride": match_stride,
            "match_radius": match_radius,
            "match_chunk_elements": match_chunk_elements,
            "bicubic_skip": bicubic_skip,
        }
        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.ref2_scale = ref2_scale
        self.paste_p = paste_p
        self.ref_drop_p = ref_drop_p
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.adastn = nn.ModuleList(AdaSTN(channels, collapse_p=collapse_p) for _ in range(adastn))
        self.matcher = PatchMatcher(
            weights=matcher_weights,
            stride=match_stride,
            radius=match_radius,
            chunk_elements=match_chunk_elements,
        )
        self.ref = RefBranch(scale, channels, ref_layers)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.ref2 = RefBranch(ref2_scale, channels, ref_layers) if ref2_scale is not None else None
        self.fuse2 = nn.Conv2d(2 * channels, channels, 3, padding=1) if ref2_scale is not None else None
        self.encoder = GlobalEncoder(scale, channels)
        self.blocks = nn.ModuleList(
            ModulatedResBlock(channels, max(1, channels // 16)) for _ in range(blocks)
        )
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
        self.upsampler = nn.Sequential(*up)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        if bicubic_skip:  # start as (almost exactly) bicubic upsampling; the body learns the residual
            with torch.no_grad():
                self.tail.weight.mul_(0.1)
                self.tail.bias.zero_()  # type: ignore[union-attr]  # Conv2d(bias=True) has one

    # ---------------------------------------------------------------------------------------------------

    def _check_ref(self, lr: Tensor, ref: Tensor, density: int, name: str) -> tuple[int, int]:
        if ref.dim() != 4 or ref.shape[0] != lr.shape[0] or ref.shape[1] != 3:
            raise InputError(
                f"{name} must be (B, 3, h, w) with the LR's batch {lr.shape[0]}, got {tuple(ref.shape)}"
            )
        rh, rw = ref.shape[-2:]
        if rh % density or rw % density:
            raise InputError(
                f"{name} size {rh}x{rw} is not a multiple of its density {density} (s× the LR box)"
            )
        return rh // density, rw // density

    def _checked_boxes(self, box: BoxLike, batch: int, size: tuple[int, int], name: str) -> list[Box]:
        boxes = _boxes(box, batch)
        h, w = size
        for b in boxes:
            if (b[2], b[3]) != (w, h):
                raise InputError(f"{name} box {b} does not match the reference's LR footprint w={w}, h={h}")
        return boxes

    def describe(self) -> ModelDescriptor:
        """What the inference engine needs to know (see :class:`~dzsr_models.descriptor.ModelDescriptor`).

        Memory per LR pixel (float32, conservative; dzsr-small ×2 measures about 2 kB per pixel in
        peak RSS): the tile's and its Ref window's VGG conv1 maps (64 channels, two at a time, full
        resolution), about ``12·C`` of body activations, and ``4C`` channels at each PixelShuffle. The
        Ref context: the local search reaches ``match_radius`` cells beyond a pixel's own cell, a 3×3
        patch one more, and a conv3_1 feature sees about 12 pixels around its cell (16 with the pooling).
        """
        hp = self.hparams
        channels, stride, s = int(hp["channels"]), int(hp["match_stride"]), self.scale
        floats = 2 * 2 * 64 + 12 * channels + 4 * channels * s * s // 2 + 3 * s * s * 3
        return ModelDescriptor(
            scale=s,
            supports_half=True,
            bytes_per_pixel=4.0 * floats,
            workspace_bytes=0,
            ref_context=stride * (int(hp["match_radius"]) + 1) + 16,
            ref_grid=stride,
            gvec_stride=8,
            ref2_scale=self.ref2_scale,
        )

    def global_vector(self, lr: Tensor, ref: Tensor | None = None, box: BoxLike | None = None) -> Tensor:
        """The image-level modulation vector; compute it once per image and pass it to every tile.

        Args:
            lr: ``(B, 3, H, W)`` in ``[0, 1]``, the whole LR.
            ref: ``(B, 3, s·h, s·w)`` in ``[0, 1]``, the tele Ref, or None (reference disabled: zeros).
            box: The Ref's box in ``lr`` (must lie inside it); None uses the whole LR resized to ``h×w``.

        Returns:
            ``(B, C)``.
        """
        s = self.scale
        B = lr.shape[0]
        if ref is None:
            region = lr - self.mean
            refs = region.new_zeros(B, 3 * s * s, *lr.shape[-2:])
        else:
            h, w = self._check_ref(lr, ref, s, "ref")
            if box is None:
                region = F.interpolate(lr, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            else:
                H, W = lr.shape[-2:]
                crops = []
                for b, (x0, y0, bw, bh) in enumerate(self._checked_boxes(box, B, (h, w), "ref")):
                    if x0 < 0 or y0 < 0 or x0 + bw > W or y0 + bh > H:
                        raise InputError(f"ref box {(x0, y0, bw, bh)} is not inside the {H}x{W} LR")
                    crops.append(lr[b, :, y0 : y0 + bh, x0 : x0 + bw])
                region = torch.stack(crops)
            region = region - self.mean
            refs = F.pixel_unshuffle(ref - self.mean, s)
        return self.encoder(torch.cat((region, refs), dim=1))

    def _reference(
        self,
        branch: RefBranch,
        density: int,
        probe: Tensor,
        ref: Tensor | None,
        box: BoxLike | None,
        keep: Tensor,
        name: str,
    ) -> Tensor:
        B, _, H, W = probe.shape
        channels = branch.paste_head.out_channels
        if ref is None:
            return probe.new_zeros(B, channels, H, W)
        size = self._check_ref(probe, ref, density, name)
        ref_lr = F.avg_pool2d(ref, density) if density > 1 else ref
        s2d = F.pixel_unshuffle(ref - self.mean, density)
        if box is None:
            flow, _ = self.matcher(probe, ref_lr)
            return shifted_depthwise_conv(branch.extractor(s2d), flow, branch.align_weight, branch.align_bias)
        boxes = self._checked_boxes(box, B, size, name)
        pasted = branch.paste_head(s2d)
        if bool(keep.all()):  # the Ref's own features replace the matched ones inside every box
            if all(x0 <= 0 and y0 <= 0 and x0 + w >= W and y0 + h >= H for x0, y0, w, h in boxes):
                return _paste(pasted.new_zeros(B, channels, H, W), pasted, boxes, keep)
            flow = torch.cat(
                [
                    self.matcher.ring_flow(probe[b : b + 1], ref_lr[b : b + 1], bx)
                    for b, bx in enumerate(boxes)
                ]
            )
        else:
            flow, _ = self.matcher(probe, ref_lr, [(b[0], b[1]) for b in boxes])
        aligned = shifted_depthwise_conv(branch.extractor(s2d), flow, branch.align_weight, branch.align_bias)
        return _paste(aligned, pasted, boxes, keep)

    def forward(
        self,
        lr: Tensor,
        ref: Tensor | None = None,
        box: BoxLike | None = None,
        *,
        aux: Tensor | None = None,
        ref2: Tensor | None = None,
        box2: BoxLike | None = None,
        gvec: Tensor | None = None,
    ) -> Tensor:
        """Super-resolve ``lr`` by ``s`` with the reference(s).

        Args:
            lr: ``(B, 3, H, W)`` RGB in ``[0, 1]``, any ``H, W``.
            ref: ``(B, 3, s·h, s·w)`` tele Ref in ``[0, 1]``, or None (reference disabled).
            box: The Ref's ``(x0, y0, w, h)`` in ``lr`` (see module doc); None: match only, no paste.
            aux: ``(B, 3, H, W)`` aux-LR (training only): guides the AdaSTNs and replaces ``lr`` for
                matching. Ignored in ``eval()``.
            ref2: ``(B, 3, r·h2, r·w2)`` middle-camera Ref at density ``r = ref2_scale`` (triple models).
            box2: ``ref2``'s box in ``lr``.
            gvec: ``(B, C)`` or ``(1, C)`` from :meth:`global_vector` (tiled inference); None computes it
                from ``(lr, ref, box)``.

        Returns:
            ``(B, 3, s·H, s·W)``, not clamped.
        """
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise InputError(f"lr must be (B, 3, H, W), got {tuple(lr.shape)}")
        B = lr.shape[0]
        aux = aux if self.training else None  # the aux-LR guides training only
        if aux is not None and aux.shape != lr.shape:
            raise InputError(f"aux {tuple(aux.shape)} must have the LR's shape {tuple(lr.shape)}")
        x = self.head(lr - self.mean)
        guide = self.head(aux - self.mean) if aux is not None else None
        h = x
        for block in self.adastn:
            h = block(h, guide)
        probe = aux if aux is not None else lr
        if self.training:
            keep = torch.rand(B, device=lr.device) < self.paste_p
        else:
            keep = torch.ones(B, dtype=torch.bool, device=lr.device)
        tele = self._reference(self.ref, self.scale, probe, ref, box, keep, "ref")
        if self.training and self.ref_drop_p > 0:
            kept = (torch.rand(B, device=lr.device) >= self.ref_drop_p).to(tele.dtype).view(B, 1, 1, 1)
            tele = tele * kept
        if gvec is None:
            gvec = self.global_vector(lr, ref, box)
        elif gvec.dim() != 2 or gvec.shape[0] not in (1, B) or gvec.shape[1] != self.hparams["channels"]:
            raise InputError(
                f"gvec must be (B, {self.hparams['channels']}) or (1, ·), got {tuple(gvec.shape)}"
            )
        gvec = gvec.expand(B, -1)

        lr_features = h
        if self.ref2 is None or self.fuse2 is None or self.ref2_scale is None:
            if ref2 is not None:
                raise InputError("ref2 given to a dual-camera model (build it with triple=True)")
        else:
            middle = self._reference(self.ref2, self.ref2_scale, probe, ref2, box2, keep, "ref2")
            lr_features = h + self.fuse2(torch.cat((h, middle), dim=1))
        y = F.leaky_relu(self.fuse(torch.cat((lr_features, tele), dim=1)), 0.1)
        for block in self.blocks:
            y = block(y, gvec)
        y = self.body_tail(y) + h
        base = (
            F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
            if self.bicubic_skip
            else self.mean
        )
        return self.tail(self.upsampler(y)) + base
