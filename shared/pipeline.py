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

from mofo.shared.cuts import shot_cuts
from mofo.shared.errors import DeviceError
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.motion_boundary import motion_boundary, temporal_average
from mofo.shared.params import DecodeLimits, FlowBackend, MotionParams
from mofo.shared.record import Box, BoxRecord, centre_box, scale_box, union_box
from mofo.shared.refine import (
    EVIDENCE_WINDOW,
    camera_evidence_maps,
    dominant_motion,
    flow_confidence,
    refine_regions,
)
from mofo.shared.regions import (
    admit_second,
    clamp_outliers,
    label_regions,
    smooth,
    strongest_regions,
    suppress_border,
    threshold_masks,
)

# Regions a second look considers beyond ``regions``: a slow mover can rank behind the fast
# one's region and a stray one at the lower threshold.
SECOND_CANDIDATES = 2

if TYPE_CHECKING:  # decoding (PyAV) is imported only when a clip is decoded
    from mofo.shared.decode import Clip, Source

# Computes the flow of frame pairs: ``flow_fn(gray, first, second, params)`` with (N, 1, H, W)
# gray frames and P positions into them each → (P, 2, H, W), pair p from ``gray[first[p]]`` to
# ``gray[second[p]]``. The default runs :func:`flow_pairs` in the caller's thread; the HTTP
# service passes one that hands the pairs to its batcher, so that pairs of concurrent requests
# share flow calls.
FlowFn = Callable[[torch.Tensor, list[int], list[int], MotionParams], torch.Tensor]
# Told (pairs done, pairs in all) as flow batches finish: progress of one long clip.
Progress = Callable[[int, int], None]

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

    # every frame's box: its own, a neighbour's, or the centre fallback; sides may fall between
    # working pixels (``MotionParams.refine_subpixel``), records round them to source pixels
    boxes: list[Box]
    detected: list[bool]  # whether each frame found motion of its own
    cuts: list[bool]  # whether each frame's motion pair crosses a shot boundary
    maps: torch.Tensor  # (T, H, W) float32 smoothed motion-boundary maps, on the device used
    fallback: bool  # no frame had motion: boxes are the centre box
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    # (T, 2, H, W) float32 flow of each kept frame to its partner (u, v in working pixels), kept
    # only when asked for (``keep_flow``): it is twice the maps' size
    flow: torch.Tensor | None = None

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


def fill_from_neighbours(
    boxes: list[Box | None],
    cuts: list[bool] | None = None,
    fallback: Box | None = None,
) -> list[Box | None]:
    """A frame without its own box takes the nearest frame's that has one (earlier on ties).

    With ``cuts`` (per frame: its pair crosses a shot boundary, so the next frame starts a new
    shot) a frame takes boxes only from its own shot; a shot with no box of its own takes
    ``fallback`` (or stays None), so no box is carried from one shot into another.
    """
    shot = np.zeros(len(boxes), dtype=np.int64)
    if cuts is not None and len(boxes) > 1:
        shot[1:] = np.cumsum(np.asarray(cuts[:-1], dtype=np.int64))
    own = np.asarray([b is not None for b in boxes], dtype=bool)
    filled: list[Box | None] = list(boxes)
    for s in np.unique(shot):
        members = np.flatnonzero(shot == s)
        sources = members[own[members]]
        for k in members[~own[members]]:
            if len(sources):
                filled[k] = list(boxes[int(sources[np.argmin(np.abs(sources - k))])])
            elif fallback is not None:
                filled[k] = list(fallback)
    return filled


def flow_pairs(
    gray: torch.Tensor,
    first: list[int],
    second: list[int],
    params: MotionParams,
    batch_size: int,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Flow of the pairs ``gray[first[p]] → gray[second[p]]``: (N, 1, H, W) → (P, 2, H, W), in
    batches of ``batch_size`` pairs, telling ``progress`` after each."""
    chunks = []
    total = len(first)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        a = gray[first[start:stop]]
        b = gray[second[start:stop]]
        chunks.append(optical_flow(a, b, params.flow, params.backend))
        if progress is not None:
            progress(stop, total)
    return torch.cat(chunks)


def motion_maps(flow: torch.Tensor, params: MotionParams) -> torch.Tensor:
    """Each kept frame's pair flow → its smoothed motion map, (T, 2, H, W) → (T, 1, H, W)."""
    short = min(flow.shape[-2:])
    boundary = motion_boundary(flow)  # (T, 1, H, W)
    boundary = suppress_border(boundary, round(params.border * short))
    boundary = clamp_outliers(boundary, params.outlier_quantile)
    boundary = temporal_average(boundary, params.temporal_window)
    return smooth(boundary, params.sigma * short)


def boxes_from_maps(
    maps: torch.Tensor,
    params: MotionParams,
    flow: torch.Tensor | None,
    frames: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[Box | None]:
    """Each frame's own motion box from its smoothed map, or None where nothing moves.

    With ``params.refine`` and the maps' ``flow`` (T, 2, H, W), each region's box is shrunk to
    what moves against the camera (:func:`mofo.shared.refine.refine_regions`), and with the pairs'
    ``frames`` (first, second: (T, 1, H, W) gray each) a region whose pixels the camera's motion
    explains as well as its own flow is dropped (``params.refine_evidence``) and each box is cut
    to the pixels that bear their motion out (``params.refine_pixel_evidence``, measured over
    ``params.refine_pixel_window``); the camera's motion is fitted where the first frames pin
    the flow down (``params.camera_confidence``).
    A frame with fewer than ``params.regions`` regions kept takes a second look at a lower
    threshold (``params.second_threshold_rel``, :func:`mofo.shared.regions.admit_second`).
    ``flow=None`` keeps the regions' union box as the map gives it.
    """
    height, width = maps.shape[-2:]
    masks = threshold_masks(maps, params.threshold_rel, params.threshold_abs)
    labels = label_regions(masks)
    min_area = max(1, round(params.min_region * height * width))
    regions = strongest_regions(labels, maps[:, 0], params.regions, min_area, params.region_ratio)
    if params.refine and flow is not None:
        if not any(regions):  # a still clip: no camera to fit
            return [None] * len(regions)
        weight = None
        if params.camera_confidence is not None and frames is not None:
            weight = flow_confidence(frames[0], scale=params.camera_confidence)
        affine = dominant_motion(flow, weight=weight)
        evidence = fine = None
        if frames is not None and params.refine_evidence is not None:
            windows = [EVIDENCE_WINDOW]
            pixel_level = (params.refine_pixel_evidence, params.refine_grow_evidence)
            if any(v is not None for v in pixel_level):
                windows.append(params.refine_pixel_window)
            pair = (frames[0], frames[1], flow, affine)
            by_window = camera_evidence_maps(
                *pair, windows=windows, min_texture=params.refine_texture
            )
            evidence, fine = by_window[0], by_window[1] if len(by_window) > 1 else None
        settings = {
            "fraction": params.refine_fraction,
            "lead": params.refine_lead,
            "min_motion": params.refine_min_motion,
            "affine": affine,
            "evidence": evidence,
            "pixel_evidence": params.refine_pixel_evidence,
            "grow_evidence": params.refine_grow_evidence,
            "grow_fraction": params.refine_grow_fraction,
            "grow_margin": round(params.refine_grow_margin * min(height, width)),
            "grow_reach": round(params.refine_grow_reach * min(height, width)),
            "grow_noise": params.refine_grow_noise,
            "fine_evidence": fine,
            "subpixel": params.refine_subpixel,
        }
        kept = refine_regions(flow, regions, min_evidence=params.refine_evidence, **settings)
        if params.second_threshold_rel is not None and evidence is not None:
            low = label_regions(
                threshold_masks(maps, params.second_threshold_rel, params.threshold_abs)
            )
            more = strongest_regions(low, maps[:, 0], params.regions + SECOND_CANDIDATES, min_area)
            # only frames short of regions take a look: the others cannot admit any
            more = [m if len(k) < params.regions else [] for m, k in zip(more, kept, strict=True)]
            tested = refine_regions(
                flow, more, min_evidence=params.second_evidence, require_evidence=True, **settings
            )
            kept = admit_second(kept, tested, params.regions)
        return [union_box(boxes) for boxes in kept]
    return [union_box(found) for found in regions]


def _checked_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames_t = torch.as_tensor(frames)
    if frames_t.ndim != 4 or frames_t.shape[-1] != 3 or frames_t.dtype != torch.uint8:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 frames, got {tuple(frames_t.shape)} {frames_t.dtype}"
        )
    return frames_t


def analyse_frames(
    frames: np.ndarray | torch.Tensor,
    params: MotionParams | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    flow_fn: FlowFn | None = None,
    *,
    kept: list[int] | None = None,
    partners: list[int] | None = None,
    progress: Progress | None = None,
    keep_flow: bool = False,
) -> FrameAnalysis:
    """Motion boxes for (N, H, W, 3) uint8 RGB frames already at working size (N >= 2).

    ``kept`` are the positions of the frames to box (default: all of them), ``partners`` the
    frame each one's flow is measured to (default: :func:`mofo.shared.decode.motion_partners` with
    ``params.motion_step``, i.e. consecutive frames of a dense clip). The result has one entry
    per kept frame. ``flow_fn`` replaces the in-thread flow computation (see :data:`FlowFn`).
    """
    from mofo.shared.decode import motion_partners

    params = params or MotionParams()
    dev = resolve_device(device)
    frames_t = _checked_frames(frames)
    count, height, width = frames_t.shape[:3]
    if count < 2:
        raise ValueError(f"need at least 2 frames to measure motion, got {count}")
    kept = list(range(count)) if kept is None else list(kept)
    if partners is None:
        partners = motion_partners(kept, count, params.motion_step)
    if len(partners) != len(kept) or not kept:
        raise ValueError(f"need one partner per kept frame, got {len(kept)} and {len(partners)}")
    if not all(0 <= i < count for i in (*kept, *partners)):
        raise ValueError(f"kept and partner positions must lie in [0, {count})")
    batch_size = batch_size or DEFAULT_BATCH[dev.type]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    gray = rgb_to_gray(frames_t.to(dev))  # (N, 1, H, W)
    if flow_fn is None:
        flow = flow_pairs(gray, kept, partners, params, batch_size, progress)  # (T, 2, H, W)
    else:
        flow = flow_fn(gray, kept, partners, params)
    _sync(dev)
    t1 = time.perf_counter()
    maps = motion_maps(flow, params)  # (T, 1, H, W)
    first, second = gray[kept], gray[partners]  # each pair's frames, (T, 1, H, W)
    own = boxes_from_maps(maps, params, flow, (first, second))
    cuts = [False] * len(kept)
    if params.cut_threshold is not None:  # a pair across a shot boundary has no motion of its own
        cuts = shot_cuts(first, second, flow, params.cut_threshold).tolist()
        own = [None if cut else box for box, cut in zip(own, cuts, strict=True)]
    t2 = time.perf_counter()
    timings["flow"] = t1 - t0
    timings["regions"] = t2 - t1

    fallback = all(b is None for b in own)
    # a shot without motion of its own (every shot, in a still clip) takes the centre box
    boxes = fill_from_neighbours(own, cuts, centre_box(width, height, params.fallback_size))
    return FrameAnalysis(
        boxes=boxes,
        detected=[b is not None for b in own],
        cuts=cuts,
        maps=maps[:, 0].float(),
        fallback=fallback,
        timings=timings,
        flow=flow.float() if keep_flow else None,
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
    progress: Progress | None = None,
    keep_flow: bool = False,
) -> ClipResult:
    """Decode a clip, find its motion boxes and build its box record (source pixels).

    ``name`` is the record's ``video`` (default: the path as given); ``label`` is how error
    messages call the clip (default: ``name`` when given, else the file's basename).
    ``segment=(start, stop)`` analyses only source frames ``start <= i < stop`` (see
    :func:`mofo.shared.decode.read_clip`); the record's ``frame_indices`` are source indices.
    ``progress`` is told (pairs done, pairs in all) as the flow goes (in-thread flow only).
    ``keep_flow`` keeps the pairs' flow in ``analysis.flow`` (for :mod:`mofo.shared.flow_files`).
    """
    from mofo.shared.decode import read_clip

    params = params or MotionParams()
    limits = limits or DecodeLimits()
    t0 = time.perf_counter()
    clip = read_clip(source, params, limits, name=label or name, segment=segment)
    decode_s = time.perf_counter() - t0
    pool = clip.frames
    if clip.motion_frames is not None and len(clip.motion_frames):
        pool = np.concatenate((clip.frames, clip.motion_frames))
    analysis = analyse_frames(
        pool,
        params,
        device,
        batch_size,
        flow_fn,
        kept=list(range(len(clip.frames))),
        partners=clip.partners,
        progress=progress,
        keep_flow=keep_flow,
    )
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
        own=list(analysis.detected),
        cuts=[i for i, cut in zip(clip.frame_indices, analysis.cuts, strict=True) if cut],
    )
    return ClipResult(record=record, clip=clip, analysis=analysis)
