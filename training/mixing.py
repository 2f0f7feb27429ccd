"""Mixup and CutMix for video batches, with the motion boxes following the pixels and the
targets smoothed (the finetuning recipe of VideoMAE, after timm's ``Mixup`` in batch mode).

Each batch is mixed with itself reversed (clip i with clip B-1-i), by one λ for the batch:

- **Mixup** (λ ~ Beta(0.8, 0.8)): every pixel is λ·a + (1-λ)·b, so both clips' movers are in
  the frame; a frame's box is the union of the two clips' boxes.
- **CutMix** (λ ~ Beta(1, 1)): a box of area (1-λ) of the frame, at a random place, is taken from
  clip b in every frame; λ is then recomputed from the pasted area (clipped at the edges). A
  frame's box is the union of what is left of clip a's box (nothing if the pasted region covers
  it whole; cut where the rest is a rectangle; else the whole box) and the part of clip b's box
  inside the pasted region.

Targets: one-hot with label smoothing ε (ε / C off the class), mixed with the same λ, per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixSettings:
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0  # chance that a batch is mixed at all
    switch_prob: float = 0.5  # chance of CutMix rather than Mixup when both are on
    smoothing: float = 0.1


def smooth_targets(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """(B,) classes → (B, C): 1 - ε + ε/C on the class, ε/C elsewhere."""
    off = smoothing / classes
    out = torch.full((labels.shape[0], classes), off, device=labels.device)
    return out.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def _union(a: torch.Tensor, a_ok: torch.Tensor, b: torch.Tensor, b_ok: torch.Tensor):
    """Per-frame union of two box sets (..., 4) with their valid flags."""
    lo = torch.minimum(
        torch.where(a_ok[..., None], a[..., :2], b[..., :2]),
        torch.where(b_ok[..., None], b[..., :2], a[..., :2]),
    )
    hi = torch.maximum(
        torch.where(a_ok[..., None], a[..., 2:], b[..., 2:]),
        torch.where(b_ok[..., None], b[..., 2:], a[..., 2:]),
    )
    ok = a_ok | b_ok
    return torch.where(ok[..., None], torch.cat([lo, hi], -1), torch.zeros_like(a)), ok


def _subtract(
    boxes: torch.Tensor, valid: torch.Tensor, region: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (..., 4) less a region: none where the region covers a box whole; cut on one side
    where the region spans the box along the other axis and covers one end; else unchanged (the
    rest is not a rectangle, so the box still holds every visible pixel of it)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    rx1, ry1, rx2, ry2 = region.unbind(-1)
    spans_x, spans_y = (rx1 <= x1) & (rx2 >= x2), (ry1 <= y1) & (ry2 >= y2)
    top = spans_x & (ry1 <= y1) & (ry2 > y1)  # the region covers the box's top rows
    bottom = spans_x & (ry2 >= y2) & (ry1 < y2)
    left = spans_y & (rx1 <= x1) & (rx2 > x1)
    right = spans_y & (rx2 >= x2) & (rx1 < x2)
    ny1 = torch.where(top & ~bottom, ry2, y1)
    ny2 = torch.where(bottom & ~top, ry1, y2)
    nx1 = torch.where(left & ~right, rx2, x1)
    nx2 = torch.where(right & ~left, rx1, x2)
    covered = spans_x & spans_y
    out = torch.stack([nx1, ny1, nx2, ny2], -1)
    ok = valid & ~covered
    return torch.where(ok[..., None], out, torch.zeros_like(out)), ok


def cut_region(
    height: int, width: int, lam: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A region ``(x1, y1, x2, y2)`` of about ``(1 - lam)`` of the frame, centred at a random
    pixel and clipped to the frame (timm's ``rand_bbox``)."""
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return x1, y1, x2, y2


def mix_batch(
    video: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    labels: dict[str, torch.Tensor],
    classes: dict[str, int],
    rng: np.random.Generator,
    settings: MixSettings = MixSettings(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict]:
    """Mix a batch: video (B, C, T, H, W), boxes (B, T, 4) pixels, valid (B, T), labels per task
    (B,) → mixed video, boxes, valid, soft targets per task (B, C), and what was done
    (``{"mode": "mixup" | "cutmix" | "none", "lam": λ, "region": (x1, y1, x2, y2) | None}``)."""
    if video.ndim != 5 or boxes.shape != (*video.shape[:1], video.shape[2], 4):
        raise ValueError(
            f"need video (B, C, T, H, W) and boxes (B, T, 4), got "
            f"{tuple(video.shape)} and {tuple(boxes.shape)}"
        )
    s = settings

    def targets(lam: float) -> dict[str, torch.Tensor]:
        out = {}
        for task, y in labels.items():
            one = smooth_targets(y, classes[task], s.smoothing)
            out[task] = lam * one + (1.0 - lam) * one.flip(0)
        return out

    use = (s.mixup_alpha > 0 or s.cutmix_alpha > 0) and rng.random() < s.prob
    if not use:
        return video, boxes, valid, targets(1.0), {"mode": "none", "lam": 1.0, "region": None}
    cutmix = s.cutmix_alpha > 0 and (s.mixup_alpha <= 0 or rng.random() < s.switch_prob)
    alpha = s.cutmix_alpha if cutmix else s.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    other_boxes, other_valid = boxes.flip(0), valid.flip(0)
    if not cutmix:
        mixed = lam * video + (1.0 - lam) * video.flip(0)
        new_boxes, new_valid = _union(boxes, valid, other_boxes, other_valid)
        return (
            mixed,
            new_boxes,
            new_valid,
            targets(lam),
            {"mode": "mixup", "lam": lam, "region": None},
        )

    h, w = video.shape[-2:]
    x1, y1, x2, y2 = cut_region(h, w, lam, rng)
    lam = 1.0 - (x2 - x1) * (y2 - y1) / (h * w)
    mixed = video.clone()
    mixed[..., y1:y2, x1:x2] = video.flip(0)[..., y1:y2, x1:x2]
    region = torch.tensor([x1, y1, x2, y2], dtype=boxes.dtype, device=boxes.device)
    # Clip b's box, cut to the pasted region.
    inner_lo = torch.maximum(other_boxes[..., :2], region[:2])
    inner_hi = torch.minimum(other_boxes[..., 2:], region[2:])
    inner_ok = other_valid & (inner_hi > inner_lo).all(-1)
    inner = torch.cat([inner_lo, inner_hi], -1)
    # Clip a's box, less the pasted region where what is left is a rectangle.
    kept, kept_ok = _subtract(boxes, valid, region)
    new_boxes, new_valid = _union(kept, kept_ok, inner, inner_ok)
    return (
        mixed,
        new_boxes,
        new_valid,
        targets(lam),
        {"mode": "cutmix", "lam": lam, "region": (x1, y1, x2, y2)},
    )
