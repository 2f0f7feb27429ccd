"""Which frames a motion analysis uses: the working size, the frames kept at a stride, a rate
or a count, each one's motion partner, and the work (pixels held) that plan costs, checked
against the limits before decoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mofo.shared.decode.source import (
    _DEFAULT_LIMITS,
    _DEFAULT_PARAMS,
    Segment,
    Source,
    VideoInfo,
    _Input,
    _open_clip,
    _scan_times,
)
from mofo.shared.errors import (
    WorkTooLarge,
)
from mofo.shared.params import DecodeLimits, MotionParams


def working_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side at ``short_side`` and the aspect ratio kept.

    Both sides are rounded to the nearest even number (halves round up), so an odd
    ``short_side`` becomes the next even one. Smaller sources are scaled up, so every clip is
    processed at the same working resolution.
    """
    if width <= 0 or height <= 0 or short_side <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height}, short side {short_side}")

    def even(x: float) -> int:
        return max(2, 2 * math.floor(x / 2 + 0.5))

    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


@dataclass(frozen=True)
class WorkPlan:
    """What motion analysis of a clip holds at most: ``frames`` frames of ``width`` x ``height``
    working pixels (kept frames and their motion partners)."""

    width: int
    height: int
    frames: int

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames


def _work_size(
    name: str, info: VideoInfo, short_side: int, limits: DecodeLimits
) -> tuple[int, int]:
    """The working size, refused when its long side exceeds ``limits.max_work_side`` (an extreme
    aspect ratio: one flow pair at 16x2160 and short side 224 is 224x30240 pixels)."""
    w, h = working_size(info.width, info.height, short_side)
    if max(w, h) > limits.max_work_side:
        ratio = max(info.width, info.height) / min(info.width, info.height)
        raise WorkTooLarge(
            f"{name}: aspect ratio {ratio:.4g}:1 ({info.width}x{info.height}) gives a working "
            f"size of {w}x{h} at short side {short_side}; the long side exceeds the limit "
            f"{limits.max_work_side} px"
        )
    return w, h


def frames_held(count: int, fps: float, params: MotionParams) -> int:
    """At most how many of a clip's ``count`` frames (at ``fps``) sampling holds: the kept
    frames (stride or target rate, then at most num_frames) and one motion partner each."""
    if params.fps is not None:
        kept = math.ceil(count / (fps or 25.0) * params.fps) + 1
    else:
        kept = math.ceil(count / params.stride)
    if params.num_frames is not None:
        kept = min(kept, params.num_frames)
    return min(count, 2 * kept)


def _check_work(name: str, plan: WorkPlan, limits: DecodeLimits) -> None:
    """Refuse a plan over ``limits.max_work_pixels`` before any frame is decoded."""
    if plan.pixels > limits.max_work_pixels:
        raise WorkTooLarge(
            f"{name}: {plan.frames} frames at working size {plan.width}x{plan.height} are "
            f"{plan.pixels} pixels of work, over the limit {limits.max_work_pixels}; "
            "sample fewer frames (stride, fps, num_frames) or lower short_side"
        )


def _too_much_work(
    name: str, size: tuple[int, int], frames: int, limits: DecodeLimits
) -> WorkTooLarge:
    """The error for a stream found, while decoding, to need more frames than its header said."""
    return WorkTooLarge(
        f"{name}: more than {frames} frames at working size {size[0]}x{size[1]} found while "
        f"decoding, over the work limit of {limits.max_work_pixels} pixels"
    )


def _nearest_to_rate(times: np.ndarray, fps: float, source_fps: float) -> list[int]:
    """Indices of the frames nearest to 0, 1/fps, 2/fps, ... (ties go to the earlier frame).

    Targets run up to the end of the last frame; a frame nearest to several targets is kept
    once, so there are never more indices than frames.
    """
    n = len(times)
    if n <= 1:
        return list(range(n))
    steps = np.diff(times)
    step = float(np.median(steps)) if np.median(steps) > 0 else 1.0 / (source_fps or 25.0)
    end = float(times[-1]) + step
    targets = np.arange(math.ceil(end * fps - 1e-9)) / fps
    after = np.clip(np.searchsorted(times, targets), 1, n - 1)
    before = after - 1
    pick_after = (times[after] - targets) < (targets - times[before]) - 1e-9
    return sorted(set(np.where(pick_after, after, before).tolist()))


def plan_frames(times: np.ndarray, params: MotionParams, source_fps: float) -> list[int]:
    """Which of ``len(times)`` frames to keep: by stride or target fps, then at most num_frames."""
    if params.fps is not None:
        kept = _nearest_to_rate(times, params.fps, source_fps)
    else:
        kept = list(range(0, len(times), params.stride))
    if params.num_frames is not None and params.num_frames < len(kept):
        positions = np.round(np.linspace(0, len(kept) - 1, params.num_frames)).astype(int)
        kept = [kept[p] for p in positions]
    return kept


def motion_partners(kept: Sequence[int], count: int, step: int) -> list[int]:
    """The frame each kept frame's motion is measured to: ``step`` frames later, or, where the
    clip (of ``count`` frames) ends before that, ``step`` frames earlier; a clip too short for
    either pairs with its farther end. Positions, like ``kept``, are in ``[0, count)``."""
    if count < 2:
        raise ValueError(f"motion needs at least 2 frames, got {count}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    partners = []
    for k in kept:
        if k + step < count:
            partners.append(k + step)
        elif k - step >= 0:
            partners.append(k - step)
        else:
            partners.append(count - 1 if k < count - 1 - k else 0)
    return partners


def _planned_work(
    inp: _Input,
    info: VideoInfo,
    params: MotionParams,
    limits: DecodeLimits,
    segment: Segment | None,
) -> WorkPlan:
    """The work of a probed clip from its header (its packets when the header has no count),
    refused over the work limits."""
    w, h = _work_size(inp.name, info, params.short_side, limits)
    if segment is not None:
        count = segment[1] - segment[0]
    else:
        count = info.frame_count or len(_scan_times(inp, info, limits))
    plan = WorkPlan(w, h, frames_held(max(count, 2), info.fps, params))
    _check_work(inp.name, plan, limits)
    return plan


def plan_work(
    source: Source,
    params: MotionParams = _DEFAULT_PARAMS,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> WorkPlan:
    """What :func:`read_clip` and the analysis after it would hold, from the header alone, and
    refused as read_clip refuses it: the service reserves this much before decoding.

    Decoding holds to it too: a stream found to have more frames than its header said is
    refused once the frames kept pass the work limit.
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    return _planned_work(inp, info, params, limits, segment)
