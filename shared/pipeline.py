"""The motion-box pipeline (MOFO §2.1): frames → TV-L1 flow → motion boundaries → regions → boxes.

:func:`analyse_frames` works on frames already at working size (what the benchmarks and the API's
batching use); :func:`analyse_clip` decodes a clip, runs it and builds the :class:`BoxRecord`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.errors import DeviceError
from shared.flow import optical_flow
from shared.flow.gray import rgb_to_gray
from shared.motion_boundary import motion_boundary, temporal_average
from shared.params import DecodeLimits, FlowBackend, MotionParams
from shared.record import Box, BoxRecord, centre_box, scale_box, union_box
from shared.regions import (
    clamp_outliers,
    label_regions,
    smooth,
    strongest_region_boxes,
    suppress_border,
    threshold_masks,
)

if TYPE_CHECKING:  # decoding (PyAV) is imported only when a clip is decoded
    from shared.decode import Clip, Source

# Computes flow for all consecutive pairs of (T, 1, H, W) gray frames → (T − 1, 2, H, W). The
# default runs :func:`flow_pairs` in the caller's thread; the HTTP service passes one that hands
# the pairs to its batcher, so that pairs of concurrent requests share flow calls.
FlowFn = Callable[[torch.Tensor, MotionParams], torch.Tensor]

# Pairs per flow batch. On an H200, 16 gave the most pairs/s with epsilon stopping (a batch runs
# until its slowest pair converges, so larger batches wait more); see BENCHMARKS.md.
DEFAULT_BATCH = {"cpu": 8, "cuda": 16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; a CUDA request without CUDA is a DeviceError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {device!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


def default_backend(device: torch.device) -> FlowBackend:
    """The fast backend for a device: PyTorch TV-L1 on CUDA, OpenCV's on CPU."""
    return "torch" if device.type == "cuda" else "opencv"


@dataclass
class FrameAnalysis:
    """Per-frame results at working size."""

    boxes: list[Box]  # every frame's box: its own, a neighbour's, or the centre fallback
    detected: list[bool]  # whether each frame found motion of its own
    maps: torch.Tensor  # (T, H, W) float32 smoothed motion-boundary maps, on the device used
    fallback: bool  # no frame had motion: boxes are the centre box
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @functools.cached_property
    def motion(self) -> np.ndarray:
        """The maps on the host, (T, H, W) float32; copied only when asked for (strips, tests)."""
        return self.maps.cpu().numpy()

    @property
    def clip_box(self) -> Box:
        """Union of the frames' own boxes (the centre box when there is none)."""
        own = [b for b, d in zip(self.boxes, self.detected, strict=True) if d]
        return union_box(own) or self.boxes[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fill_from_neighbours(boxes: list[Box | None]) -> list[Box | None]:
    """A frame without its own box takes the nearest frame's that has one (earlier on ties)."""
    own = [k for k, b in enumerate(boxes) if b is not None]
    if not own:
        return list(boxes)
    idx = np.asarray(own)
    filled = []
    for k, box in enumerate(boxes):
        if box is not None:
            filled.append(box)
            continue
        nearest = idx[np.argmin(np.abs(idx - k))]
        filled.append(list(boxes[nearest]))
    return filled


def flow_pairs(gray: torch.Tensor, params: MotionParams, batch_size: int) -> torch.Tensor:
    """Flow between consecutive frames: (T, 1, H, W) gray → (T − 1, 2, H, W), in batches."""
    chunks = []
    for start in range(0, gray.shape[0] - 1, batch_size):
        stop = min(start + batch_size, gray.shape[0] - 1)
        chunks.append(
            optical_flow(gray[start:stop], gray[start + 1 : stop + 1], params.flow, params.backend)
        )
    return torch.cat(chunks)


def motion_maps(flow: torch.Tensor, params: MotionParams, num_frames: int) -> torch.Tensor:
    """Pair flows → one smoothed motion map per frame, (T, 1, H, W).

    Frame i's map comes from the pair (i, i + 1); the last frame shares the last pair's map.
    """
    short = min(flow.shape[-2:])
    boundary = motion_boundary(flow)  # (T-1, 1, H, W)
    boundary = suppress_border(boundary, round(params.border * short))
    boundary = clamp_outliers(boundary, params.outlier_quantile)
    boundary = temporal_average(boundary, params.temporal_window)
    boundary = torch.cat((boundary, boundary[-1:]))[:num_frames]
    return smooth(boundary, params.sigma * short)


def boxes_from_maps(maps: torch.Tensor, params: MotionParams) -> list[Box | None]:
    """Each frame's own motion box from its smoothed map, or None where nothing moves."""
    height, width = maps.shape[-2:]
    masks = threshold_masks(maps, params.threshold_rel, params.threshold_abs)
    labels = label_regions(masks)
    min_area = max(1, round(params.min_region * height * width))
    return strongest_region_boxes(labels, maps[:, 0], params.regions, min_area, params.region_ratio)


def analyse_frames(
    frames: np.ndarray | torch.Tensor,
    params: MotionParams | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    flow_fn: FlowFn | None = None,
) -> FrameAnalysis:
    """Motion boxes for (T, H, W, 3) uint8 RGB frames already at working size (T >= 2).

    ``flow_fn`` replaces the in-thread flow computation (see :data:`FlowFn`).
    """
    params = params or MotionParams()
    dev = resolve_device(device)
    frames_t = torch.as_tensor(frames)
    if frames_t.ndim != 4 or frames_t.shape[-1] != 3 or frames_t.dtype != torch.uint8:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 frames, got {tuple(frames_t.shape)} {frames_t.dtype}"
        )
    num_frames, height, width = frames_t.shape[:3]
    if num_frames < 2:
        raise ValueError(f"need at least 2 frames to measure motion, got {num_frames}")
    batch_size = batch_size or DEFAULT_BATCH[dev.type]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    gray = rgb_to_gray(frames_t.to(dev))  # (T, 1, H, W)
    flow_fn = flow_fn or functools.partial(flow_pairs, batch_size=batch_size)
    flow = flow_fn(gray, params)  # (T-1, 2, H, W)
    _sync(dev)
    t1 = time.perf_counter()
    maps = motion_maps(flow, params, num_frames)  # (T, 1, H, W)
    own = boxes_from_maps(maps, params)
    t2 = time.perf_counter()
    timings["flow"] = t1 - t0
    timings["regions"] = t2 - t1

    fallback = all(b is None for b in own)
    if fallback:
        boxes = [centre_box(width, height, params.fallback_size) for _ in range(num_frames)]
    else:
        boxes = fill_from_neighbours(own)
    return FrameAnalysis(
        boxes=boxes,
        detected=[b is not None for b in own],
        maps=maps[:, 0].float(),
        fallback=fallback,
        timings=timings,
    )


def source_name(source: Source) -> str:
    """How a clip is named in records and messages: its path as given, or ``<upload>``."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<upload>"))


@dataclass
class ClipResult:
    """A clip's record, plus what previews and motion-map strips are drawn from."""

    record: BoxRecord
    clip: Clip
    analysis: FrameAnalysis


def analyse_clip(
    source: Source,
    params: MotionParams | None = None,
    limits: DecodeLimits | None = None,
    device: str | torch.device = "cpu",
    name: str | None = None,
    batch_size: int | None = None,
    flow_fn: FlowFn | None = None,
    label: str | None = None,
    segment: tuple[int, int] | None = None,
) -> ClipResult:
    """Decode a clip, find its motion boxes and build its box record (source pixels).

    ``name`` is the record's ``video`` (default: the path as given); ``label`` is how error
    messages call the clip (default: ``name`` when given, else the file's basename).
    ``segment=(start, stop)`` analyses only source frames ``start <= i < stop`` (see
    :func:`shared.decode.read_clip`); the record's ``frame_indices`` are source indices.
    """
    from shared.decode import read_clip

    params = params or MotionParams()
    limits = limits or DecodeLimits()
    t0 = time.perf_counter()
    clip = read_clip(source, params, limits, name=label or name, segment=segment)
    decode_s = time.perf_counter() - t0
    analysis = analyse_frames(clip.frames, params, device, batch_size, flow_fn)
    analysis.timings["decode"] = decode_s

    if name is None:
        name = source_name(source)
    info = clip.info
    work_h, work_w = clip.frames.shape[1:3]
    sx, sy = info.width / work_w, info.height / work_h

    def to_source(box: Box) -> Box:
        return scale_box(box, sx, sy, info.width, info.height)

    record = BoxRecord(
        video=name,
        params=params.hash(),
        width=info.width,
        height=info.height,
        fps=info.fps,
        frame_indices=list(clip.frame_indices),
        frames=[to_source(b) for b in analysis.boxes],
        clip_box=to_source(analysis.clip_box),
        fallback=analysis.fallback,
    )
    return ClipResult(record=record, clip=clip, analysis=analysis)
