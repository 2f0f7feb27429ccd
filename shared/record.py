"""The box record: what the CLI prints, the API returns, the cache stores and training reads.

``{schema, video, params, width, height, fps, frame_indices, frames, clip_box, fallback}``.
Boxes are ``[x1, y1, x2, y2]`` integer pixels of the *source* video, x2/y2 exclusive.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

SCHEMA = "mofo.box/1"

Box = list[int]  # [x1, y1, x2, y2], x2/y2 exclusive


@dataclass
class BoxRecord:
    video: str
    params: str
    width: int
    height: int
    fps: float
    frame_indices: list[int]
    frames: list[Box | None]
    clip_box: Box
    fallback: bool
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # schema first, as documented
        return {"schema": out.pop("schema"), **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoxRecord:
        """A record from its dict, checked: schema, every field, and each field's type."""
        if not isinstance(data, dict):
            raise ValueError(f"a box record is a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ValueError(
                f"unknown box record schema {data.get('schema')!r}, expected {SCHEMA!r}"
            )
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = set(cls.__dataclass_fields__) - set(fields)
        if missing:
            raise ValueError(f"box record lacks {sorted(missing)}")
        wrong = [name for name, ok in _FIELD_CHECKS.items() if not ok(fields[name])]
        if wrong:
            raise ValueError(f"box record fields of the wrong type: {', '.join(wrong)}")
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> BoxRecord:
        return cls.from_dict(json.loads(text))


def _ints(x: Any) -> bool:
    # type() is: bools are ints to isinstance, not to a box record.
    return type(x) is list and all(type(v) is int for v in x)


def _is_box(x: Any) -> bool:
    return _ints(x) and len(x) == 4


_FIELD_CHECKS = {
    "video": lambda x: type(x) is str,
    "params": lambda x: type(x) is str,
    "width": lambda x: type(x) is int,
    "height": lambda x: type(x) is int,
    "fps": lambda x: type(x) in (int, float),
    "frame_indices": _ints,
    "frames": lambda x: type(x) is list and all(b is None or _is_box(b) for b in x),
    "clip_box": _is_box,
    "fallback": lambda x: type(x) is bool,
}


def scale_box(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    """Map a working-resolution box to source pixels: outward rounding, clamped to the frame."""
    x1, y1, x2, y2 = box
    return [
        max(0, min(width, math.floor(x1 * sx))),
        max(0, min(height, math.floor(y1 * sy))),
        max(0, min(width, math.ceil(x2 * sx))),
        max(0, min(height, math.ceil(y2 * sy))),
    ]


def union_box(boxes: list[Box | None]) -> Box | None:
    present = [b for b in boxes if b is not None]
    if not present:
        return None
    return [
        min(b[0] for b in present),
        min(b[1] for b in present),
        max(b[2] for b in present),
        max(b[3] for b in present),
    ]


def centre_box(width: int, height: int, size: float) -> Box:
    """The fallback box: ``size`` of each side, centred."""
    w, h = round(width * size), round(height * size)
    x1, y1 = (width - w) // 2, (height - h) // 2
    return [x1, y1, x1 + w, y1 + h]


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
