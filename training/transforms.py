"""Which frames a training clip takes, and the crops, flips and resizes that make the model's
input, each moving the motion boxes with the pixels (the public code moves the pixels only).

Frame sampling follows VideoMAE: ``dense_indices`` takes ``count`` frames ``rate`` apart from a
random start (Something-Something V2, Kinetics); ``segment_indices`` cuts a range into ``count``
equal parts and takes one frame from each (Epic-Kitchens segments; the middle of each part
when testing). The spatial pipeline of pretraining follows VideoMAE's multi-scale crop
(``GroupMultiScaleCrop`` with its defaults): a crop whose sides are drawn from ``scales`` × the
short side (a side within 3 px of ``size`` taken as ``size``), at one of thirteen places (corners,
centre, edge middles and quarter points), resized to ``size`` × ``size``; that of finetuning
VideoMAE's random resized crop (area 8–100 % of the frame, aspect ratio 3/4–4/3). Either is
flipped left-right with probability one half when asked.

Boxes are ``[x1, y1, x2, y2]`` float pixels with x2/y2 exclusive, one per frame (T, 4), and a
``valid`` flag per frame; a box that leaves the crop entirely is no longer valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def dense_indices(total: int, count: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` frame indices ``rate`` apart from a random start; a clip shorter than the span
    repeats its last frame (VideoMAE's choice), so every clip gives ``count`` indices."""
    if total < 1 or count < 1 or rate < 1:
        raise ValueError(f"need total, count and rate >= 1, got {total}, {count}, {rate}")
    span = (count - 1) * rate + 1
    start = int(rng.integers(0, total - span + 1)) if total >= span else 0
    return np.minimum(start + rate * np.arange(count), total - 1)


def segment_indices(
    start: int, stop: int, count: int, rng: np.random.Generator | None
) -> np.ndarray:
    """One frame from each of ``count`` equal parts of ``[start, stop)``: a random one when
    training (``rng``), the middle one when testing (``rng`` None)."""
    if stop <= start or count < 1:
        raise ValueError(f"need start < stop and count >= 1, got [{start}, {stop}), {count}")
    edges = np.linspace(start, stop, count + 1)
    lo = np.floor(edges[:-1]).astype(int)
    hi = np.maximum(np.floor(edges[1:]).astype(int), lo + 1)  # a part under a frame holds one
    middle = (lo + hi - 1) // 2
    picked = middle if rng is None else lo + (rng.random(count) * (hi - lo)).astype(int)
    return np.minimum(picked, stop - 1)


def dense_view_indices(
    total: int, count: int, rate: int, view: int = 0, views: int = 1
) -> np.ndarray:
    """Test view ``view`` of ``views``: ``count`` frames ``rate`` apart, the spans' starts spread
    evenly from the clip's first frame to its last possible start (VideoMAE's test clips); one
    view is the centred span. A clip shorter than the span repeats its last frame."""
    if total < 1 or count < 1 or rate < 1 or not 0 <= view < views:
        raise ValueError(
            f"need total, count, rate >= 1 and 0 <= view < views, got {total}, "
            f"{count}, {rate}, {view}, {views}"
        )
    room = max(0, total - ((count - 1) * rate + 1))
    start = room // 2 if views == 1 else (view * room + (views - 1) // 2) // (views - 1)
    return np.minimum(start + rate * np.arange(count), total - 1)


def segment_view_indices(
    start: int, stop: int, count: int, view: int = 0, views: int = 1
) -> np.ndarray:
    """Test view ``view`` of ``views`` of segment sampling: from each of ``count`` equal parts of
    ``[start, stop)`` the frame at ``(view + ½) / views`` of the part (one view: the middle, as
    ``segment_indices`` without an rng)."""
    if stop <= start or count < 1 or not 0 <= view < views:
        raise ValueError(
            f"need start < stop, count >= 1 and 0 <= view < views, got "
            f"[{start}, {stop}), {count}, {view}, {views}"
        )
    edges = np.linspace(start, stop, count + 1)
    lo = np.floor(edges[:-1]).astype(int)
    hi = np.maximum(np.floor(edges[1:]).astype(int), lo + 1)
    picked = lo + ((2 * view + 1) * (hi - lo) - 1) // (2 * views)
    return np.minimum(picked, stop - 1)


@dataclass(frozen=True)
class Crop:
    """A crop ``[x, y, x + w, y + h)`` of the frame, resized to ``size`` × ``size``, flipped."""

    x: int
    y: int
    w: int
    h: int
    size: int
    flip: bool


def multi_scale_crop(
    width: int,
    height: int,
    size: int,
    rng: np.random.Generator,
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    flip: bool = True,
) -> Crop:
    """VideoMAE's multi-scale crop: crop sides from ``scales`` × the short side (width and height
    scales at most ``max_distort`` steps apart; a side within 3 px of ``size`` is ``size``), at
    one of the 13 places of its ``more_fix_crop`` grid, and a coin-flip."""
    short = min(width, height)
    sides = [size if abs(int(short * s) - size) < 3 else int(short * s) for s in scales]
    pairs = [
        (w, h)
        for i, h in enumerate(sides)
        for j, w in enumerate(sides)
        if abs(i - j) <= max_distort
    ]
    w, h = pairs[int(rng.integers(len(pairs)))]
    w, h = min(w, width), min(h, height)
    x, y = FIXED_PLACES[int(rng.integers(len(FIXED_PLACES)))]
    dx, dy = (width - w) // 4, (height - h) // 4
    return Crop(x * dx, y * dy, w, h, size, flip and bool(rng.integers(2)))


# Where a multi-scale crop may sit, in quarters of the room left: the corners and centre, then
# the edge middles and quarter points (VideoMAE's fill_fix_offset with more_fix_crop).
FIXED_PLACES = (
    (0, 0),
    (4, 0),
    (0, 4),
    (4, 4),
    (2, 2),
    (0, 2),
    (4, 2),
    (2, 4),
    (2, 0),
    (1, 1),
    (3, 1),
    (1, 3),
    (3, 3),
)


def random_resized_crop(
    width: int,
    height: int,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
) -> Crop:
    """VideoMAE's finetuning crop (Inception-style): an area of ``scale`` × the frame's, an
    aspect ratio drawn log-uniformly from ``ratio``, anywhere in the frame, 10 tries, else the
    centred crop of the nearest allowed ratio; and a coin-flip when ``flip``."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            return Crop(x, y, w, h, size, flip and bool(rng.integers(2)))
    shape = width / height
    if shape < min(ratio):
        w, h = width, round(width / min(ratio))
    elif shape > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return Crop((width - w) // 2, (height - h) // 2, w, h, size, flip and bool(rng.integers(2)))


def centre_crop(width: int, height: int, size: int) -> Crop:
    """The test-time crop: the centred short-side square, resized to ``size``."""
    short = min(width, height)
    return Crop((width - short) // 2, (height - short) // 2, short, short, size, False)


def view_crops(width: int, height: int, size: int, crops: int = 1) -> list[Crop]:
    """The test-time spatial views: ``crops`` short-side squares spread evenly along the long
    side (3: left, centre, right of a landscape frame, as VideoMAE tests), each resized to
    ``size``; one crop is the centred square (``centre_crop``)."""
    if crops < 1:
        raise ValueError(f"crops must be >= 1, got {crops}")
    short = min(width, height)
    room_x, room_y = width - short, height - short
    if crops == 1:
        return [centre_crop(width, height, size)]
    out = []
    half = (crops - 1) // 2  # rounds the places to the nearest pixel
    for i in range(crops):
        x, y = (room_x * i + half) // (crops - 1), (room_y * i + half) // (crops - 1)
        out.append(Crop(x, y, short, short, size, False))
    return out


def apply_crop(frames: torch.Tensor, crop: Crop) -> torch.Tensor:
    """(T, H, W, C) uint8 frames → (C, T, size, size) float in [0, 1], cropped, resized
    (bilinear, antialiased when shrinking) and flipped."""
    x = frames[:, crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
    # (T, C, h, w), made contiguous while still uint8: the resize runs faster on planar input
    # and gives the same values.
    x = x.permute(0, 3, 1, 2).contiguous().float() / 255.0
    x = F.interpolate(
        x, size=(crop.size, crop.size), mode="bilinear", antialias=True, align_corners=False
    )
    if crop.flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()


def move_boxes(
    boxes: torch.Tensor, valid: torch.Tensor, crop: Crop
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes (T, 4) where ``apply_crop`` puts their pixels: clipped to the crop, scaled to
    ``size``, mirrored when flipped. A box with nothing left inside the crop becomes invalid."""
    boxes = boxes.to(torch.float32)
    x1 = (boxes[:, 0] - crop.x).clamp(0, crop.w) * (crop.size / crop.w)
    x2 = (boxes[:, 2] - crop.x).clamp(0, crop.w) * (crop.size / crop.w)
    y1 = (boxes[:, 1] - crop.y).clamp(0, crop.h) * (crop.size / crop.h)
    y2 = (boxes[:, 3] - crop.y).clamp(0, crop.h) * (crop.size / crop.h)
    if crop.flip:
        x1, x2 = crop.size - x2, crop.size - x1
    moved = torch.stack([x1, y1, x2, y2], dim=-1)
    still = valid.to(torch.bool) & (x2 > x1) & (y2 > y1)
    return torch.where(still[:, None], moved, torch.zeros_like(moved)), still
