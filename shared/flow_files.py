"""A clip's optical flow and motion maps in one file, for models that take flow as input.

Format ``mofo.flow/1``: a NumPy ``.npz`` (zip, deflate) holding

- ``flow``: (T, 2, H, W) the flow of each kept frame to its motion partner, ``u`` then ``v``,
  in pixels of the working size (H × W), float16 (default) or float32;
- ``maps``: (T, H, W) the motion-boundary maps the boxes come from (paper eq. 1, smoothed),
  same dtype;
- ``frames`` and ``partners``: (T,) int64 source frame indices of each pair's two frames;
- ``meta``: a JSON string: ``format``, ``video``, ``params`` (the records' hash), the working
  size ``width``/``height``, the source size ``source_width``/``source_height``, ``fps``.

float32 keeps the values exactly; float16 halves the file and keeps about three significant
digits (a relative error under 2^-11 ≈ 0.05 %, and 0.001 px absolute below 2 px), where the
8-bit JPEGs of common flow extractors keep a fixed step of the clipped range (e.g. 20 px / 255
≈ 0.08 px) and lose everything past it.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mofo.shared.files import write_bytes_atomic

FORMAT = "mofo.flow/1"
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FlowFile:
    """A clip's flows and maps as read back (arrays in the dtype they were stored in)."""

    flow: np.ndarray  # (T, 2, H, W)
    maps: np.ndarray  # (T, H, W)
    frames: np.ndarray  # (T,) int64 source index of each pair's first frame
    partners: np.ndarray  # (T,) int64 source index of each pair's second frame
    meta: dict[str, Any]


def write_flow_file(
    path: str | Path,
    flow: np.ndarray,
    maps: np.ndarray,
    frames: list[int],
    partners: list[int],
    meta: dict[str, Any],
    dtype: str = "float16",
) -> Path:
    """Write one clip's flows and maps (see the module's format), atomically; returns the path."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    flow, maps = np.asarray(flow), np.asarray(maps)
    count = len(frames)
    if flow.ndim != 4 or flow.shape[:2] != (count, 2):
        raise ValueError(f"flow must be ({count}, 2, H, W), got {flow.shape}")
    if maps.shape != (count, *flow.shape[2:]):
        raise ValueError(
            f"maps must be ({count}, {flow.shape[2]}, {flow.shape[3]}), got {maps.shape}"
        )
    if len(partners) != count:
        raise ValueError(f"need one partner per frame, got {len(partners)} for {count}")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        flow=flow.astype(dtype),
        maps=maps.astype(dtype),
        frames=np.asarray(frames, dtype=np.int64),
        partners=np.asarray(partners, dtype=np.int64),
        meta=np.array(json.dumps({"format": FORMAT, **meta}, sort_keys=True)),
    )
    return write_bytes_atomic(path, buffer.getvalue())


def read_flow_file(path: str | Path) -> FlowFile:
    """Read a file :func:`write_flow_file` wrote; ValueError for anything else."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {key: data[key] for key in ("flow", "maps", "frames", "partners")}
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a {FORMAT} file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (its format is not named)")
    return FlowFile(meta=meta, **arrays)
