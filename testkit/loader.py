"""Training-like clips and box records, and the pretraining loader's path as it was (decoding with
``read_frames``, cropping channels-last floats): the reference that the fast path
(``read_training_frames``, the planar crop) is checked against in the tests and timed against in
``bench/loader.py``."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as photos

import mofo.training.datasets as datasets
from mofo.shared.decode import read_frames, working_size
from mofo.shared.params import MotionParams
from mofo.shared.paths import resolve_under_root
from mofo.shared.record import BoxRecord, union_box
from mofo.training.datasets import VideoClips
from mofo.training.transforms import Crop

PHOTOS = (
    photos.astronaut,
    photos.coffee,
    photos.chelsea,
    photos.rocket,
    photos.immunohistochemistry,
)
HASH = MotionParams().hash()


# --- clips and records --------------------------------------------------------------------------


def write_clip(
    path: Path,
    codec: str,
    size: tuple[int, int],
    fps: int,
    frames: int,
    seed: int,
    options: dict[str, str],
) -> None:
    """A window of ``size`` panning over an enlarged photo, encoded with ``codec``."""
    if path.exists():
        return
    image = PHOTOS[seed % len(PHOTOS)]()
    image = cv2.resize(image[..., :3], None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
    height, width = image.shape[:2]
    w, h = size
    tmp = path.with_name(f".{path.name}")
    with av.open(str(tmp), "w", format=path.suffix[1:]) as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(frames):
            x = int((width - w) * (0.5 + 0.45 * np.sin(t / 40 + seed)))
            y = int((height - h) * (0.5 + 0.4 * np.cos(t / 53 + 2 * seed)))
            crop = np.ascontiguousarray(image[y : y + h, x : x + w])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        out.mux(stream.encode())
    tmp.rename(path)


def record(
    video: str, size: tuple[int, int], indices: range, rng: np.random.Generator
) -> BoxRecord:
    """A record of boxes on ``indices`` at the 224-short-side working size of ``size``."""
    w, h = working_size(*size, 224)
    boxes = []
    for _ in indices:
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        boxes.append([x, y, x + int(rng.integers(16, w // 2)), y + int(rng.integers(16, h // 2))])
    return BoxRecord(
        video=video,
        params=HASH,
        width=w,
        height=h,
        fps=12.0,
        frame_indices=list(indices),
        frames=boxes,
        clip_box=union_box(boxes),
        fallback=False,
    )


# --- today's path, the reference ----------------------------------------------------------------


def apply_crop_before(frames: torch.Tensor, crop: Crop) -> torch.Tensor:
    """``apply_crop`` as it was: the resize runs on channels-last floats."""
    x = frames[:, crop.y : crop.y + crop.h, crop.x : crop.x + crop.w]
    x = x.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(
        x, size=(crop.size, crop.size), mode="bilinear", antialias=True, align_corners=False
    )
    if crop.flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()


class TodayClips(VideoClips):
    """The dataset with today's decoding (``read_frames``) and crop."""

    def _read(self, item, rng):
        path = resolve_under_root(self.root, item.path)[0]
        return read_frames(
            path,
            self._pick(rng),
            self.decode_short_side,
            self.limits,
            name=item.video,
            segment=item.segment,
        )

    def _sample(self, decoded, record):
        with swapped(datasets, "apply_crop", apply_crop_before):
            return super()._sample(decoded, record)


@contextmanager
def swapped(module: Any, name: str, value: Any):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)
