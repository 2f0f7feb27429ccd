"""RandAugment for clips, the motion boxes moving with the pixels (VideoMAE finetunes with timm's
``rand-m7-n4-mstd0.5-inc1``: 4 operations a clip, magnitude 7 of 10 with noise of std 0.5).

One draw of operations and magnitudes per clip, applied alike to all its frames (a clip stays a
clip). The geometric operations (shear, translate, rotate) move the boxes: a box becomes the
bounding box of its moved corners, clipped to the frame, and a box with nothing left inside the
frame is no longer a box. The photometric ones leave the boxes as they are. Operations and
ranges follow torchvision's RandAugment; torchvision's own refuses boxes, so this applies its
functional operations itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

OPERATIONS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
    "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
GEOMETRIC = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate"})


@dataclass(frozen=True)
class RandAugmentSettings:
    ops: int = 4
    magnitude: float = 7.0  # of 10
    magnitude_std: float = 0.5
    operations: tuple[str, ...] = OPERATIONS  # drawn from, uniformly

    def __post_init__(self) -> None:
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            raise ValueError(f"unknown RandAugment operations {unknown}; known: {OPERATIONS}")


def _strength(name: str, m: float, size: int) -> float:
    """An operation's unsigned strength at magnitude ``m`` in [0, 10] (torchvision's ranges)."""
    f = m / 10.0
    return {
        "shear_x": 0.3 * f, "shear_y": 0.3 * f, "translate_x": 150.0 / 331.0 * size * f,
        "translate_y": 150.0 / 331.0 * size * f, "rotate": 30.0 * f, "brightness": 0.9 * f,
        "color": 0.9 * f, "contrast": 0.9 * f, "sharpness": 0.9 * f,
        "posterize": float(8 - int(4 * f)), "solarize": 1.0 - f,
    }.get(name, 0.0)  # fmt: skip


def _apply(name: str, video, boxes, value: float):
    """One operation on a Video (T, C, H, W) float in [0, 1] and its BoundingBoxes."""
    if name in ("shear_x", "shear_y"):
        shear = [math.degrees(math.atan(value)), 0.0]
        if name == "shear_y":
            shear = shear[::-1]
        args = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": shear, "center": [0, 0]}
    elif name in ("translate_x", "translate_y"):
        move = [int(value), 0] if name == "translate_x" else [0, int(value)]
        args = {"angle": 0.0, "translate": move, "scale": 1.0, "shear": [0.0, 0.0]}
    elif name == "rotate":
        return TF.rotate(video, value), TF.rotate(boxes, value)
    else:
        photometric = {
            "brightness": lambda v: TF.adjust_brightness(v, 1.0 + value),
            "color": lambda v: TF.adjust_saturation(v, 1.0 + value),
            "contrast": lambda v: TF.adjust_contrast(v, 1.0 + value),
            "sharpness": lambda v: TF.adjust_sharpness(v, 1.0 + value),
            "posterize": lambda v: TF.posterize(v, int(value)),
            "solarize": lambda v: TF.solarize(v, value),
            "autocontrast": TF.autocontrast,
            "equalize": TF.equalize,
            "identity": lambda v: v,
        }
        return photometric[name](video), boxes
    return TF.affine(video, **args), TF.affine(boxes, **args)


def rand_augment(
    video: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    rng: np.random.Generator,
    settings: RandAugmentSettings = RandAugmentSettings(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[str, float]]]:
    """``video`` (C, T, H, W) float in [0, 1], ``boxes`` (T, 4) pixels, ``valid`` (T,) → the
    augmented clip, its boxes and valid flags, and the operations applied (name, value)."""
    if video.ndim != 4 or boxes.shape != (video.shape[1], 4):
        raise ValueError(f"need video (C, T, H, W) and boxes (T, 4), got {tuple(video.shape)} "
                         f"and {tuple(boxes.shape)}")  # fmt: skip
    h, w = video.shape[-2:]
    clip = tv_tensors.Video(video.permute(1, 0, 2, 3).clamp(0, 1))  # (T, C, H, W)
    moved = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(h, w))
    applied = []
    for _ in range(settings.ops):
        name = settings.operations[int(rng.integers(len(settings.operations)))]
        m = float(np.clip(rng.normal(settings.magnitude, settings.magnitude_std), 0, 10))
        value = _strength(name, m, w if name == "translate_x" else h)
        if name in GEOMETRIC or name in ("brightness", "color", "contrast", "sharpness"):
            value = value if rng.random() < 0.5 else -value
        clip, moved = _apply(name, clip, moved, value)
        applied.append((name, value))
    out_boxes = moved.as_subclass(torch.Tensor).clone()
    out_boxes[:, 0::2] = out_boxes[:, 0::2].clamp(0, w)
    out_boxes[:, 1::2] = out_boxes[:, 1::2].clamp(0, h)
    still = valid & (out_boxes[:, 2] > out_boxes[:, 0]) & (out_boxes[:, 3] > out_boxes[:, 1])
    out_boxes = torch.where(still[:, None], out_boxes, torch.zeros_like(out_boxes))
    frames = clip.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()
    return frames, out_boxes, still, applied
