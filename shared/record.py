"""The box record: what the CLI prints, the API returns, the cache stores and training reads.

``{schema, video, params, width, height, fps, frame_indices, frames, clip_box, fallback, own,
cuts}``. Boxes are ``[x1, y1, x2, y2]`` integer pixels of the *source* video, x2/y2 exclusive.

``mofo.box/2`` added ``own`` (per frame: whether the frame found a box of its own; the others
took a neighbour's, or the centre fallback) and ``cuts`` (the frames whose motion pair crosses
a shot boundary, by source index). ``mofo.box/1`` records are still read: every frame counts as
its own unless the record fell back, and no cut is known.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "mofo.box/2"
READABLE_SCHEMAS = ("mofo.box/1", SCHEMA)

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
    own: list[bool] | None = None  # None: every frame its own unless the record fell back
    cuts: list[int] = field(default_factory=list)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        if self.own is None:
            self.own = [not self.fallback] * len(self.frames)

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
        schema = data.get("schema")
        if schema not in READABLE_SCHEMAS:
            readable = ", ".join(READABLE_SCHEMAS)
            raise ValueError(f"unknown box record schema {schema!r}, expected one of {readable}")
        names = set(cls.__dataclass_fields__) - {"schema"}
        if schema != SCHEMA:  # /1: no own flags, no cuts; read as the defaults say
            names -= {"own", "cuts"}
        fields = {k: data[k] for k in names if k in data}
        missing = names - set(fields)
        if missing:
            raise ValueError(f"box record lacks {sorted(missing)}")
        wrong = [name for name in sorted(fields) if not _FIELD_CHECKS[name](fields[name])]
        if wrong:
            raise ValueError(f"box record fields of the wrong type: {', '.join(wrong)}")
        if "own" in fields and len(fields["own"]) != len(fields["frames"]):
            raise ValueError(
                f"box record has {len(fields['own'])} own flags for {len(fields['frames'])} frames"
            )
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
    "own": lambda x: type(x) is list and all(type(v) is bool for v in x),
    "cuts": _ints,
}


def scale_box(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    """Map a working-resolution box to source pixels, clamped to the frame.

    Working pixel ``x`` covers source pixels ``[x · sx, (x + 1) · sx)``, so the exclusive box
    ``[x1, x2)`` covers ``[x1 · sx, x2 · sx)``; each side is rounded to the nearest source pixel
    (halves up), which is unbiased, where rounding outwards would grow every box by about half a
    source pixel a side. A side pair that rounds together keeps one pixel.
    """

    def span(lo: float, hi: float, scale: float, size: int) -> tuple[int, int]:
        a, b = (max(0, min(size, math.floor(v * scale + 0.5))) for v in (lo, hi))
        if hi > lo and b <= a:  # a side pair that rounds together keeps one pixel
            a = min(a, size - 1)
            b = a + 1
        return a, b

    x1, x2 = span(box[0], box[2], sx, width)
    y1, y2 = span(box[1], box[3], sy, height)
    return [x1, y1, x2, y2]


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
