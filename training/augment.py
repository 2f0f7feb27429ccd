"""RandAugment and random erasing for clips, the motion boxes moving with the pixels.

RandAugment as VideoMAE finetunes with it, timm's ``rand-m7-n4-mstd0.5-inc1``: 4 operations a
clip drawn with replacement from timm's "increasing" set (``inc1``: a higher magnitude is always
a stronger change), each applied with probability 0.5 (timm's default for RandAugment), at
magnitude 7 of 10 with noise of std 0.5 per operation, signed operations negated half the time;
geometric ones fill with the ImageNet mean, as VideoMAE passes it. One draw per clip, applied
alike to all its frames (a clip stays a clip). The geometric operations (shear, translate,
rotate) move the boxes: a box becomes the bounding box of its moved corners, clipped to the
frame, and a box with nothing left inside the frame is no longer a box. The photometric ones
leave the boxes as they are. torchvision's RandAugment refuses boxes, so this applies its
functional operations itself, with timm's ranges.

Random erasing as VideoMAE's (timm's ``RandomErasing``, mode ``pixel``, one region, on the
normalised input): each *frame* on its own, with probability ``prob``, gets a rectangle of 2–33 %
of its area, aspect ratio 0.3–3.3, filled with normal noise (VideoMAE hands the clip to timm as a
batch of frames). The boxes stay: erasing hides pixels, it moves none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

# timm's _RAND_INCREASING_TRANSFORMS, in its order.
OPERATIONS = (
    "autocontrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
GEOMETRIC = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate"})
SIGNED = GEOMETRIC | {"brightness", "color", "contrast", "sharpness"}
FILL = [0.485, 0.456, 0.406]  # what geometric operations leave uncovered: the ImageNet mean


@dataclass(frozen=True)
class RandAugmentSettings:
    ops: int = 4
    magnitude: float = 7.0  # of 10
    magnitude_std: float = 0.5
    prob: float = 0.5  # each drawn operation is applied with this probability (timm's)
    operations: tuple[str, ...] = OPERATIONS  # drawn from, uniformly, with replacement

    def __post_init__(self) -> None:
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            raise ValueError(f"unknown RandAugment operations {unknown}; known: {OPERATIONS}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"RandAugment prob must be in [0, 1], got {self.prob}")


def _strength(name: str, m: float, size: int) -> float:
    """An operation's unsigned strength at magnitude ``m`` in [0, 10] (timm's increasing
    ranges: translation 0.45 of the side, posterize 4 down to 0 bits, solarize's threshold
    from 1 down to 0, solarize-add up to 110 of 255)."""
    f = m / 10.0
    return {
        "shear_x": 0.3 * f,
        "shear_y": 0.3 * f,
        "translate_x": 0.45 * size * f,
        "translate_y": 0.45 * size * f,
        "rotate": 30.0 * f,
        "brightness": 0.9 * f,
        "color": 0.9 * f,
        "contrast": 0.9 * f,
        "sharpness": 0.9 * f,
        "posterize": float(4 - int(4 * f)),
        "solarize": 1.0 - f,
        "solarize_add": 110 / 255 * f,
    }.get(name, 0.0)


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
        return TF.rotate(video, value, fill=FILL), TF.rotate(boxes, value)
    else:
        photometric = {
            "brightness": lambda v: TF.adjust_brightness(v, 1.0 + value),
            "color": lambda v: TF.adjust_saturation(v, 1.0 + value),
            "contrast": lambda v: TF.adjust_contrast(v, 1.0 + value),
            "sharpness": lambda v: TF.adjust_sharpness(v, 1.0 + value),
            "posterize": lambda v: TF.posterize(v, int(value)),
            "solarize": lambda v: TF.solarize(v, value),
            "solarize_add": lambda v: torch.where(v < 128 / 255, (v + value).clamp(max=1.0), v),
            "invert": TF.invert,
            "autocontrast": TF.autocontrast,
            "equalize": TF.equalize,
        }
        return photometric[name](video), boxes
    return TF.affine(video, **args, fill=FILL), TF.affine(boxes, **args)


def rand_augment(
    video: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    rng: np.random.Generator,
    settings: RandAugmentSettings = RandAugmentSettings(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[str, float]]]:
    """``video`` (C, T, H, W) float in [0, 1], ``boxes`` (T, 4) pixels, ``valid`` (T,) → the
    augmented clip, its boxes and valid flags, and the operations applied (name, value): of the
    ``ops`` drawn, those whose coin (``prob``) came up."""
    if video.ndim != 4 or boxes.shape != (video.shape[1], 4):
        raise ValueError(
            f"need video (C, T, H, W) and boxes (T, 4), got {tuple(video.shape)} "
            f"and {tuple(boxes.shape)}"
        )
    h, w = video.shape[-2:]
    clip = tv_tensors.Video(video.permute(1, 0, 2, 3).clamp(0, 1))  # (T, C, H, W)
    moved = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(h, w))
    applied = []
    for _ in range(settings.ops):
        name = settings.operations[int(rng.integers(len(settings.operations)))]
        if rng.random() >= settings.prob:
            continue
        m = float(np.clip(rng.normal(settings.magnitude, settings.magnitude_std), 0, 10))
        value = _strength(name, m, w if name == "translate_x" else h)
        if name in SIGNED:
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


def random_erase(
    video: torch.Tensor,
    rng: np.random.Generator,
    prob: float = 0.25,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """Random erasing of each frame of a normalised clip (C, T, H, W), a copy: with probability
    ``prob`` a rectangle of ``area`` × the frame's, aspect ratio log-uniform in ``aspect`` (10
    tries to fit), filled with standard normal noise per pixel and channel."""
    if video.ndim != 4:
        raise ValueError(f"need video (C, T, H, W), got {tuple(video.shape)}")
    c, t, h, w = video.shape
    out = video.clone()
    for frame in range(t):
        if rng.random() >= prob:
            continue
        for _ in range(10):
            target = rng.uniform(*area) * h * w
            ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
            eh, ew = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if ew < w and eh < h:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                noise = torch.from_numpy(rng.standard_normal((c, eh, ew)).astype(np.float32))
                out[:, frame, top : top + eh, left : left + ew] = noise.to(out.dtype)
                break
    return out
