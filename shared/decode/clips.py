"""Clips for motion analysis: :func:`read_clip` (the planned frames of a clip, or of a
segment, in gray at the working size) and :func:`read_frames` (given frames, for pictures).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mofo.shared.decode.plan import _planned_work, motion_partners, plan_frames, working_size
from mofo.shared.decode.reader import _TRUNCATED, _decode, _Decoded, _holds
from mofo.shared.decode.segments import _decode_segment
from mofo.shared.decode.source import (
    _DEFAULT_LIMITS,
    _DEFAULT_PARAMS,
    Segment,
    Source,
    VideoInfo,
    _Input,
    _open_clip,
    _reason,
    _scan_times,
    _span,
    _times,
)
from mofo.shared.errors import (
    ClipTooShort,
    CorruptClip,
)
from mofo.shared.params import DecodeLimits, MotionParams


@dataclass
class Clip:
    """Sampled frames of a clip at working size, with where each came from.

    ``partners[t]`` is the position of kept frame ``t``'s motion partner (the frame its flow is
    measured to, see :func:`motion_partners`) in ``frames`` followed by ``motion_frames``; the
    latter holds the partners that sampling did not keep (none when every frame is kept).
    """

    frames: np.ndarray  # (T, h, w, 3) uint8 RGB, C-contiguous
    frame_indices: list[int]  # 0-based index of each kept frame in the source video
    info: VideoInfo
    motion_frames: np.ndarray | None = None  # (M, h, w, 3) uint8 RGB
    partners: list[int] | None = None  # (T,) positions into frames + motion_frames
    partner_indices: list[int] | None = None  # (T,) source index of each partner


@dataclass
class _Sampled:
    """What sampling chose from the decoded frames: kept positions and their motion partners."""

    decoded: _Decoded
    kept: list[int]
    partners: list[int]


def _sample(
    name: str,
    decode: Callable[[Callable[[int], bool]], _Decoded],
    times: Callable[[], np.ndarray],
    params: MotionParams,
    fps: float,
) -> _Sampled:
    """Decode, holding only the frames sampling chooses and their motion partners.

    ``decode(keep)`` stores the frames whose position ``keep`` accepts. With ``params.fps`` or
    ``num_frames``, the choice is planned from ``times()`` (frame times known before decoding),
    then made again from the decoded frames' times; by stride it is made while decoding. Either
    way, a frame the final choice needs and decoding did not hold is decoded once more.
    """
    step = params.step_frames(fps)
    if params.fps is None and params.num_frames is None:
        stride = params.stride

        def kept_at(i: int) -> bool:
            return i >= 0 and i % stride == 0

        # Partners lie step frames after (or, at the end, before) a kept frame.
        decoded = decode(lambda i: kept_at(i) or kept_at(i - step) or kept_at(i + step))

        def choose(d: _Decoded) -> list[int]:
            return list(range(0, d.count, stride))
    else:
        planned_times = times()
        planned = plan_frames(planned_times, params, fps)
        wanted = set(planned)
        if len(planned_times) >= 2:
            wanted |= set(motion_partners(planned, len(planned_times), step))
        decoded = decode(wanted.__contains__)

        def choose(d: _Decoded) -> list[int]:
            return plan_frames(d.times, params, fps)

    kept = choose(decoded)
    if decoded.count < 2 or decoded.error is not None:  # refused by the caller's checks
        return _Sampled(decoded, kept, [])
    partners = motion_partners(kept, decoded.count, step)
    needed = set(kept) | set(partners)
    if not needed <= decoded.kept.keys():  # planned and decoded counts disagreed: redo
        decoded = decode(needed.__contains__)
        if decoded.count >= 2:
            kept = choose(decoded)
            partners = motion_partners(kept, decoded.count, step)
            if not set(kept) | set(partners) <= decoded.kept.keys():
                raise CorruptClip(
                    f"{name}: is corrupt: two decodings gave different frames "
                    f"({decoded.count} frames)"
                )
    return _Sampled(decoded, kept, partners)


def _decoder(
    inp: _Input,
    info: VideoInfo,
    limits: DecodeLimits,
    size: tuple[int, int],
    segment: Segment | None,
    most: int | None = None,
) -> Callable[[Callable[[int], bool]], _Decoded]:
    """``decode(keep)`` over the whole clip or the segment; positions are within the segment;
    at most ``most`` frames held when given."""
    if segment is None:
        return lambda keep: _decode(inp, info, limits, size, keep, most)
    return lambda keep: _decode_segment(inp, info, limits, size, segment, keep, most)


def _check_decoded(name: str, info: VideoInfo, decoded: _Decoded, segment: Segment | None) -> None:
    """Refuse a stream that broke, gave no frame, or ended well before its header's count."""
    if decoded.count == 0 or decoded.error is not None:
        why = _reason(decoded.error) if decoded.error else "no frame could be decoded"
        raise CorruptClip(f"{name}: is corrupt or truncated: {why}")
    if segment is None and decoded.count < _TRUNCATED * info.frame_count:
        # A partial clip would give a record that looks complete: refuse it. (A segment's
        # decoding already refuses a stream that ends before the segment does.)
        raise CorruptClip(
            f"{name}: is truncated: the header promises {info.frame_count} frames, "
            f"only {decoded.count} could be decoded"
        )


def read_clip(
    source: Source,
    params: MotionParams = _DEFAULT_PARAMS,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> Clip:
    """Decode a clip's first video stream and sample frames at working size.

    Limits are checked from the header before decoding, and the frame limit again while
    decoding. Sampling keeps every ``params.stride``-th frame, or when ``params.fps`` is set
    (it then overrides stride) the frames nearest to 0, 1/fps, 2/fps, ... seconds; then at
    most ``params.num_frames`` of those, evenly spread. A stream that breaks mid-way, or that
    ends well before the frame count its header promises, is refused as truncated.

    ``segment=(start, stop)`` reads only source frames ``start <= i < stop`` (0-based), as
    datasets such as Epic-Kitchens annotate actions in long videos: decoding starts at a
    keyframe before ``start`` rather than at the beginning, the duration and frame limits apply
    to the segment rather than the file, and sampling runs over the segment as over a whole
    clip. ``frame_indices`` are indices in the source video either way; a segment that runs
    past the video's last frame is refused.

    Each kept frame also brings its motion partner (:func:`motion_partners`, ``params``' motion
    step; within the segment when there is one), decoded at the same size: the flow that gives
    a frame its box is measured between the two, never across a sampling gap.
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    plan = _planned_work(inp, info, params, limits, segment)
    size = (plan.width, plan.height)
    decode = _decoder(inp, info, limits, size, segment, _holds(size, limits))

    if segment is None:
        # Plan from packet timestamps so only the chosen frames are resized and held.
        sampled = _sample(
            inp.name, decode, lambda: _scan_times(inp, info, limits), params, info.fps
        )
        offset, part = 0, ""
    else:
        offset, stop = segment
        sampled = _sample(
            inp.name,
            decode,
            lambda: _times([None] * (stop - offset), info.fps),  # at the header's rate
            params,
            info.fps,
        )
        part = f"segment {_span(segment)} "

    decoded, indices = sampled.decoded, sampled.kept
    _check_decoded(inp.name, info, decoded, segment)
    if len(indices) < 2:
        if decoded.count < 2:
            plural = "frame" if decoded.count == 1 else "frames"
            raise ClipTooShort(
                f"{inp.name}: {part}has {decoded.count} {plural}; motion needs at least 2"
            )
        raise ClipTooShort(
            f"{inp.name}: {part}sampling keeps {len(indices)} of {decoded.count} frames; "
            "motion needs at least 2"
        )
    frames = np.stack([decoded.kept[i] for i in indices])
    position = {k: t for t, k in enumerate(indices)}
    extra = sorted(set(sampled.partners) - position.keys())
    position |= {p: len(indices) + m for m, p in enumerate(extra)}
    motion_frames = np.stack([decoded.kept[p] for p in extra]) if extra else frames[:0].copy()
    return Clip(
        frames=np.ascontiguousarray(frames),
        frame_indices=[offset + i for i in indices],
        info=info,
        motion_frames=np.ascontiguousarray(motion_frames),
        partners=[position[p] for p in sampled.partners],
        partner_indices=[offset + p for p in sampled.partners],
    )


def _picked(name: str, pick: Callable[[int], Sequence[int]], count: int) -> list[int]:
    """``pick(count)`` as a list of positions, refused unless each lies in ``[0, count)``."""
    positions = [operator.index(p) for p in pick(count)]
    if not positions:
        raise ValueError(f"{name}: pick({count}) chose no frames")
    outside = [p for p in positions if not 0 <= p < count]
    if outside:
        shown = ", ".join(map(str, outside[:10])) + (", ..." if len(outside) > 10 else "")
        raise ValueError(f"{name}: pick({count}) chose positions outside [0, {count}): {shown}")
    return positions


def read_frames(
    source: Source,
    pick: Callable[[int], Sequence[int]],
    short_side: int | None = None,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> Clip:
    """Decode the frames ``pick`` chooses, in its order, as training samples them.

    ``pick(count)`` gets the number of frames in the clip (or in ``segment``) and returns
    positions in ``[0, count)``, repeats and any order allowed (16 frames 2 apart, say). Only
    those frames are resized (short side ``short_side``, see :func:`working_size`; the source
    size when None) and held; ``frame_indices`` are their indices in the source video.

    A whole clip's count comes from its packet timestamps, before decoding; when decoding
    finds another count (a header or packets that lie), ``pick`` is asked again with the
    decoded count, and the frames it then chooses are decoded once more if need be. Limits,
    truncation and corruption are checked as :func:`read_clip` checks them; unlike it, one
    frame is enough (a sample may repeat it).
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    if short_side is None:
        size = (info.width, info.height)
    else:
        size = working_size(info.width, info.height, short_side)
    decode = _decoder(inp, info, limits, size, segment)

    # A whole clip's count from its packets (nothing decoded yet); a segment's from its range.
    count = len(_scan_times(inp, info, limits)) if segment is None else segment[1] - segment[0]
    positions = _picked(inp.name, pick, count) if count else []
    decoded = decode(set(positions).__contains__)
    _check_decoded(inp.name, info, decoded, segment)
    if decoded.count != count:  # the plan's count was wrong: choose again from what is there
        positions = _picked(inp.name, pick, decoded.count)
        if not set(positions) <= decoded.kept.keys():
            decoded = decode(set(positions).__contains__)
            _check_decoded(inp.name, info, decoded, segment)
            if not set(positions) <= decoded.kept.keys():
                raise CorruptClip(
                    f"{inp.name}: is corrupt: two decodings gave different frames "
                    f"({decoded.count} frames, positions {sorted(set(positions))[:10]} chosen)"
                )
    offset = 0 if segment is None else segment[0]
    return Clip(
        frames=np.ascontiguousarray(np.stack([decoded.kept[p] for p in positions])),
        frame_indices=[offset + p for p in positions],
        info=info,
    )
