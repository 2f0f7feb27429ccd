"""A synthetic motion dataset with known boxes (``mofo synth OUT``), in Something-Something V2's
layout, so the cache build, pretraining and finetuning run on it as on the real dataset.

Each clip is a textured object moving in a straight line over a textured background beside a
textured static prop; its class is the direction of the motion (8 classes, 45° apart), so a model
must look at how things move, not only at what is there. Backgrounds, props and movers are
procedural (smoothed noise in random colours), drawn from the clip's own seed.

``OUT/`` holds what the SSV2 readers expect: ``labels.json`` (class name → index),
``train.json`` and ``validation.json`` (``[{"id", "label", "template", "placeholders"}]``),
``videos/<id>.webm`` (VP8), and the truth: ``boxes.jsonl``, one line per clip with its mover's
box in every frame (``[x1, y1, x2, y2]`` pixels, x2/y2 exclusive) and its class.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mofo.shared.record import BoxRecord, union_box

DIRECTIONS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")
TEMPLATE = "Moving something {}"
FPS = 12


@dataclass
class SynthClip:
    video: str
    label: int
    frames: np.ndarray  # (T, H, W, 3) uint8
    boxes: list[list[int]]  # the mover's box in each frame


def _texture(rng: np.random.Generator, h: int, w: int, grain: int) -> np.ndarray:
    """Smooth random colour texture (H, W, 3) in [0, 255]: upsampled noise in two colours."""
    small = rng.random((max(2, h // grain), max(2, w // grain)))
    ys = np.linspace(0, small.shape[0] - 1, h)
    xs = np.linspace(0, small.shape[1] - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, small.shape[0] - 1), np.minimum(x0 + 1, small.shape[1] - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    value = (
        small[y0][:, x0] * (1 - fy) * (1 - fx)
        + small[y1][:, x0] * fy * (1 - fx)
        + small[y0][:, x1] * (1 - fy) * fx
        + small[y1][:, x1] * fy * fx
    )
    a, b = rng.random(3) * 255, rng.random(3) * 255
    return value[..., None] * a + (1 - value[..., None]) * b


def make_clip(index: int, size: int = 64, frames: int = 16, seed: int = 0) -> SynthClip:
    """Clip ``index`` of the dataset drawn with ``seed``: same arguments, same clip."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(DIRECTIONS)))
    angle = label * math.pi / 4
    dx, dy = math.cos(angle), math.sin(angle)  # y grows downwards: 'down' is +y
    side = int(rng.integers(size // 5, size // 3 + 1))
    speed = float(rng.uniform(1.0, 2.0)) * size / 64
    # Long clips move slower, so that the whole path fits in the frame.
    speed = min(speed, (size - side - 1) / max(1, frames - 1))
    travel = speed * (frames - 1)
    # A start from which the whole path stays inside the frame.
    lo_x, hi_x = max(0.0, -dx * travel), size - side - max(0.0, dx * travel)
    lo_y, hi_y = max(0.0, -dy * travel), size - side - max(0.0, dy * travel)
    x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)

    background = _texture(rng, size, size, grain=8)
    prop = _texture(rng, side, side, grain=3)
    px, py = (int(v) for v in rng.integers(0, size - side, 2))
    background[py : py + side, px : px + side] = prop
    mover = _texture(rng, side, side, grain=2)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    boxes = []
    for t in range(frames):
        x, y = round(x0 + dx * speed * t), round(y0 + dy * speed * t)
        frame = background.copy()
        frame[y : y + side, x : x + side] = mover
        noise = rng.normal(0, 2.0, frame.shape)
        video[t] = np.clip(frame + noise, 0, 255).astype(np.uint8)
        boxes.append([x, y, x + side, y + side])
    return SynthClip(video=f"{100000 + index}", label=label, frames=video, boxes=boxes)


def write_webm(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """VP8 WebM, as SSV2 ships its clips."""
    import av

    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "b": "1M", "deadline": "realtime"}
        for t, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_dataset(
    out: Path,
    clips: int = 200,
    size: int = 64,
    frames: int = 16,
    seed: int = 0,
    validation: float = 0.2,
) -> dict[str, int]:
    """Write the dataset into ``out`` (created; must not hold one already); the counts."""
    out = Path(out)
    if (out / "labels.json").exists():
        raise FileExistsError(f"{out} already holds a dataset (labels.json)")
    if clips < 2 or not 0.0 < validation < 1.0:
        raise ValueError(f"need clips >= 2 and 0 < validation < 1, got {clips}, {validation}")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    names = [TEMPLATE.format(d) for d in DIRECTIONS]
    (out / "labels.json").write_text(json.dumps({n: str(k) for k, n in enumerate(names)}, indent=1))
    held_out = max(1, round(clips * validation))
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    with open(out / "boxes.jsonl", "w") as truth:
        for index in range(clips):
            clip = make_clip(index, size, frames, seed)
            write_webm(out / "videos" / f"{clip.video}.webm", clip.frames)
            entry = {
                "id": clip.video,
                "label": names[clip.label].lower(),
                "template": names[clip.label],
                "placeholders": [],
            }
            splits["validation" if index < held_out else "train"].append(entry)
            truth.write(
                json.dumps(
                    {
                        "video": clip.video,
                        "label": clip.label,
                        "width": size,
                        "height": size,
                        "frames": clip.boxes,
                    }
                )
                + "\n"
            )
    for split, entries in splits.items():
        (out / f"{split}.json").write_text(json.dumps(entries, indent=1))
    return {k: len(v) for k, v in splits.items()}


TRUTH_PARAMS = "truth"  # the params name of records made from the truth, not from motion


def truth_records(folder: Path, params: str = TRUTH_PARAMS) -> list[BoxRecord]:
    """The dataset's true boxes (``boxes.jsonl``) as box records, so training and evaluation can
    read them like cached motion boxes (``mofo cache`` files, ``CachedBoxes``)."""
    records = []
    for line in (Path(folder) / "boxes.jsonl").read_text().splitlines():
        truth = json.loads(line)
        boxes = truth["frames"]
        records.append(
            BoxRecord(
                video=truth["video"],
                params=params,
                width=truth["width"],
                height=truth["height"],
                fps=float(FPS),
                frame_indices=list(range(len(boxes))),
                frames=boxes,
                clip_box=union_box(boxes),
                fallback=False,
            )
        )
    return records
