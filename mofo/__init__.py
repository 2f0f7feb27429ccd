"""MOFO: where things move in a video, without a detector (TV-L1 optical flow → motion-boundary
map → the two strongest motion regions → a box), for motion-focused self-supervision.

The library's front door::

    import mofo

    record = mofo.boxes(mofo.sample())  # a BoxRecord, in source pixels
    record.clip_box, record.frames[0], record.own[0]
    mofo.boxes("clip.mp4", quality="fast", num_frames=8)  # a preset, and sampling on top
    cache = mofo.open_box_cache("boxes.parquet")  # or a Redis URL: the records of a dataset
    grid = mofo.TokenGrid()  # MOFO's masks (torch) on VideoMAE's 16 x 224 x 224 token grid
    inside = mofo.box_cells(boxes, valid, grid)  # boxes (B, 4) in input pixels, valid (B,)
    hidden = mofo.mofo_mask(inside, grid, ratio=0.9, inside_ratio=0.75)  # (B, tokens) bool

The mask and cache-file names load their modules (torch for the masks) when first used, so
``import mofo`` stays light.

The ``mofo`` command (:mod:`mofo.cli`) composes the same parts with the motion service, the
workers and the training jobs; this package is the only one that imports all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mofo.shared.cache import MemoryBoxCache, RedisBoxCache
from mofo.shared.errors import ClipError, MofoError
from mofo.shared.params import DecodeLimits, FlowParams, MotionParams, preset_params
from mofo.shared.record import BoxRecord
from mofo.shared.sample import sample_clip

# Names loaded when first used: module, attribute.
_LAZY = {
    "TokenGrid": "mofo.training.masking",
    "box_cells": "mofo.training.masking",
    "mofo_mask": "mofo.training.masking",
    "tube_mask": "mofo.training.masking",
    "open_box_cache": "mofo.shared.cache_files",
    "read_flow_file": "mofo.shared.flow_files",
}

__all__ = [
    "BoxRecord",
    "ClipError",
    "DecodeLimits",
    "FlowParams",
    "MemoryBoxCache",
    "MofoError",
    "MotionParams",
    "RedisBoxCache",
    "TokenGrid",
    "box_cells",
    "boxes",
    "mofo_mask",
    "open_box_cache",
    "preset_params",
    "read_flow_file",
    "sample",
    "tube_mask",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once loaded, an attribute like the others
        return value
    raise AttributeError(f"module 'mofo' has no attribute {name!r}")


def sample() -> Path:
    """The bundled sample clip: a synthetic scene with two movers and a static prop."""
    return sample_clip()


def boxes(
    source: str | Path | bytes,
    params: MotionParams | None = None,
    *,
    quality: str = "balanced",
    device: str = "auto",
    limits: DecodeLimits | None = None,
    **settings: Any,
) -> BoxRecord:
    """The box record of one clip (a path or the file's bytes), as ``mofo boxes --json`` gives it.

    ``params``: the motion parameters in full; otherwise the ``quality`` preset (``fast``,
    ``balanced``, ``paper``) with ``settings`` on top (``num_frames=8``, ``fps=4``,
    ``short_side=160``, ``backend="torch"``, ...). ``device``: ``auto`` (CUDA when present),
    ``cpu`` or ``cuda[:N]``; with ``params`` not given, the backend follows it (PyTorch TV-L1 on
    CUDA, OpenCV's on CPU). ``limits``: what a clip may be (default :class:`DecodeLimits`).
    A clip that cannot be read or is over a limit raises a :class:`ClipError` naming it; bad
    settings raise ValueError.
    """
    from mofo.shared.pipeline import analyse_clip, default_backend, resolve_device

    dev = resolve_device(device)
    if params is None:
        settings.setdefault("backend", default_backend(dev))
        params = preset_params(quality, **settings)  # type: ignore[arg-type]
    elif settings or quality != "balanced":
        raise ValueError("give either params or a quality preset with settings, not both")
    return analyse_clip(source, params, limits, dev).record
