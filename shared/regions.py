"""From motion-boundary maps to motion boxes: smoothing, per-frame threshold, connected regions,
the strongest regions and their union box (MOFO §2.1's "two most significant contours").

Connected components run batched: CuPy's ``ndimage.label`` on CUDA (one call for the whole batch,
frames kept apart by the structuring element), OpenCV on CPU. Region statistics (area, summed
motion, bounding box) are one scatter over the labels in PyTorch on either device.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from kornia.filters import gaussian_blur2d

from mofo.shared.record import Box, box_iou, union_box


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B, 1, H, W) maps; sigma in pixels, kernel ±3σ, replicated border."""
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"expected maps of shape (B, 1, H, W), got {tuple(maps.shape)}")
    if sigma <= 0:
        return maps
    size = 2 * math.ceil(3 * sigma) + 1
    size = min(size, 2 * (min(maps.shape[-2:]) // 2) - 1)  # kornia needs kernel < image
    return gaussian_blur2d(maps, (size, size), (sigma, sigma), border_type="replicate")


def suppress_border(maps: torch.Tensor, margin: int) -> torch.Tensor:
    """Zero ``margin`` pixels along each edge (flow is unreliable where content enters)."""
    if margin <= 0:
        return maps
    out = maps.clone()
    out[..., :margin, :] = 0
    out[..., -margin:, :] = 0
    out[..., :, :margin] = 0
    out[..., :, -margin:] = 0
    return out


def clamp_outliers(maps: torch.Tensor, quantile: float) -> torch.Tensor:
    """Clamp each (B, 1, H, W) map at its own ``quantile`` (e.g. 0.99): isolated TV-L1 spikes
    then cannot set the frame's threshold. 1.0 leaves the maps as they are."""
    if quantile >= 1.0:
        return maps
    flat = maps.flatten(1)
    k = max(1, min(flat.shape[1], round(quantile * flat.shape[1])))
    cap = flat.kthvalue(k, dim=1).values.view(-1, 1, 1, 1)
    return torch.minimum(maps, cap)


def threshold_masks(maps: torch.Tensor, rel: float, floor: float) -> torch.Tensor:
    """Per-frame adaptive threshold of (B, 1, H, W) maps → (B, H, W) bool.

    The frame's median is its background level (zoom/rotation add a constant there); a pixel is
    moving when it exceeds ``median + max(floor, rel · (max − median))``. A frame whose peak is
    under ``median + floor`` has no motion.
    """
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"expected maps of shape (B, 1, H, W), got {tuple(maps.shape)}")
    flat = maps.flatten(1)  # (B, H*W)
    median = flat.median(dim=1).values
    peak = flat.amax(dim=1)
    level = median + torch.clamp(rel * (peak - median), min=floor)  # (B,)
    return maps[:, 0] > level.view(-1, 1, 1)


def _label_cpu(masks: np.ndarray) -> np.ndarray:
    labels = np.zeros(masks.shape, np.int64)
    offset = 0
    for k, mask in enumerate(masks):
        count, lab = cv2.connectedComponents(
            mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        lab = lab.astype(np.int64)
        lab[lab > 0] += offset
        labels[k] = lab
        offset += count - 1
    return labels


def _label_cuda(masks: torch.Tensor) -> torch.Tensor | None:
    try:
        import cupy
        from cupyx.scipy import ndimage
    except ImportError:
        return None
    structure = cupy.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a frame, never across frames
    with cupy.cuda.Device(masks.device.index or 0):
        labels, _ = ndimage.label(cupy.asarray(masks), structure=structure)
        return torch.as_tensor(labels, device=masks.device).to(torch.int64)


def label_regions(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool → (B, H, W) int64 labels, 8-connected, unique across the batch, 0 = none."""
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"expected (B, H, W) bool masks, got {tuple(masks.shape)} {masks.dtype}")
    if masks.is_cuda:
        labels = _label_cuda(masks)
        if labels is not None:
            return labels
    return torch.from_numpy(_label_cpu(masks.cpu().numpy())).to(masks.device)


def region_stats(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per label: (frame, area, mass, x1, y1, x2, y2) as an (N + 1, 7) float64 table (row 0 unused).

    ``weights`` (B, H, W) is summed over each region (its "mass"); boxes are exclusive.
    """
    b, h, w = labels.shape
    n = int(labels.max()) + 1
    flat = labels.flatten()
    dev = labels.device
    frame = torch.arange(b, device=dev).view(b, 1, 1).expand(b, h, w).flatten()
    ys = torch.arange(h, device=dev).view(1, h, 1).expand(b, h, w).flatten()
    xs = torch.arange(w, device=dev).view(1, 1, w).expand(b, h, w).flatten()
    area = torch.bincount(flat, minlength=n).double()
    mass = torch.bincount(flat, weights=weights.flatten().double(), minlength=n)

    def reduce(values: torch.Tensor, how: str, init: int) -> torch.Tensor:
        out = torch.full((n,), init, dtype=torch.int64, device=dev)
        return out.scatter_reduce(0, flat, values, reduce=how, include_self=True).double()

    return torch.stack(
        (
            reduce(frame, "amax", 0),
            area,
            mass,
            reduce(xs, "amin", w),
            reduce(ys, "amin", h),
            reduce(xs, "amax", -1) + 1,
            reduce(ys, "amax", -1) + 1,
        ),
        dim=1,
    )


def strongest_regions(
    labels: torch.Tensor,
    weights: torch.Tensor,
    regions: int = 2,
    min_area: int = 1,
    ratio: float = 0.0,
) -> list[list[Box]]:
    """The boxes of each frame's ``regions`` regions with the largest summed weight, strongest
    first, ignoring regions under ``min_area`` pixels and those weaker than ``ratio`` × the
    frame's strongest. A list (empty: no region) per frame."""
    batch = labels.shape[0]
    out: list[list[Box]] = [[] for _ in range(batch)]
    if int(labels.max()) == 0:
        return out
    stats = region_stats(labels, weights)[1:].cpu().numpy()  # drop background; one small copy
    stats = stats[stats[:, 1] >= min_area]
    # sort by frame, then by mass descending; take the first `regions` rows of each frame
    order = np.lexsort((-stats[:, 2], stats[:, 0]))
    stats = stats[order]
    frames, first = np.unique(stats[:, 0], return_index=True)
    for frame, start in zip(frames.astype(int), first, strict=True):
        rows = stats[start : start + regions]
        rows = rows[(rows[:, 0] == frame) & (rows[:, 2] >= ratio * rows[0, 2])]
        out[frame] = [[int(v) for v in row[3:7]] for row in rows]
    return out


def admit_second(
    kept: list[list[Box]],
    candidates: list[list[Box]],
    regions: int,
    max_aspect: float = 4.0,
) -> list[list[Box]]:
    """A second look: each frame's ``kept`` region boxes, then its ``candidates`` (found at a
    lower threshold, already tested) in their order while the frame has fewer than ``regions``:
    a candidate joins unless it overlaps a box the frame has or is a strip (its long side over
    ``max_aspect`` × its short side). Lists of [x1, y1, x2, y2] per frame; inputs unchanged."""
    if len(candidates) != len(kept):
        raise ValueError(f"expected candidates for {len(kept)} frames, got {len(candidates)}")
    out = [list(boxes) for boxes in kept]
    for boxes, found in zip(out, candidates, strict=True):
        for box in found:
            if len(boxes) >= regions:
                break
            width, height = box[2] - box[0], box[3] - box[1]
            if max(width, height) > max_aspect * max(1, min(width, height)):
                continue
            if any(box_iou(box, k) > 0 for k in boxes):
                continue
            boxes.append(box)
    return out


def strongest_region_boxes(
    labels: torch.Tensor,
    weights: torch.Tensor,
    regions: int = 2,
    min_area: int = 1,
    ratio: float = 0.0,
) -> list[Box | None]:
    """The union box of each frame's :func:`strongest_regions` (None: no region)."""
    found = strongest_regions(labels, weights, regions, min_area, ratio)
    return [union_box(boxes) for boxes in found]
