"""Training samples: chosen frames of a dataset's clips, cropped, flipped and normalised, with
their motion boxes moved where the pixels go (MOFO §2.2).

A :class:`VideoClips` reads the clips a :func:`mofo.shared.sources.open_source` source lists (the
same ids the box cache was built under) and takes its boxes from a :class:`BoxSource`: the cache
(:class:`CachedBoxes`, Redis or an export file), the pipeline run on the fly
(:class:`ComputedBoxes`), or none at all (:class:`NoBoxes`, for tube masking). A clip without a
record is counted as ``"missing"`` and gets no box (MOFO masking falls back to tube masking for
it), never a made-up centre box.

Each sample's randomness (frames, crop, flip) comes from ``default_rng([seed, epoch, index])``,
so a resumed run and any number of loader workers give the same samples. A clip that cannot be
decoded is replaced by the next one (index + 1), and the failure travels with the replacement's
sample in ``"errors"``, so a run reports what it skipped instead of hiding it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from mofo.shared.decode import Clip, read_training_frames
from mofo.shared.errors import ClipError, MofoError
from mofo.shared.keys import BOX_PREFIX
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.paths import resolve_under_root
from mofo.shared.record import BoxRecord
from mofo.shared.sources import ClipItem
from mofo.training.augment import RandAugmentSettings, rand_augment, random_erase
from mofo.training.boxes import boxes_for_frames
from mofo.training.transforms import (
    apply_crop,
    dense_indices,
    dense_view_indices,
    move_boxes,
    multi_scale_crop,
    random_resized_crop,
    segment_indices,
    segment_view_indices,
    view_crops,
)

# ImageNet statistics, as VideoMAE normalises its input.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

SAMPLINGS = ("dense", "segment")
CROPS = ("multi_scale", "resized")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
EXPORT_SUFFIXES = (".parquet", ".jsonl.gz")

_DEFAULT_LIMITS = DecodeLimits()


class DataError(MofoError):
    """Training data that cannot be used: clip after clip failing, an unknown box source."""


# --- where boxes come from ----------------------------------------------------------------------


class BoxSource(Protocol):
    """The box records of a batch of clips, in one call (one batched cache read)."""

    counted: bool  # True where a None record means "missing", False where none are expected
    kind: str  # what a sample's "box" says when its record was found: "cached" or "computed"

    def records(self, items: Sequence[ClipItem]) -> list[BoxRecord | None]: ...


class CachedBoxes:
    """Boxes from the cache ``mofo cache build`` filled: a ``redis://`` URL, or the path of an
    export file (``.parquet`` / ``.jsonl.gz``) for machines without Redis.

    The client opens on first use in each process, so the object pickles into DataLoader
    workers (each opens its own) and a forked worker never shares its parent's connection.
    """

    counted = True
    kind = "cached"

    def __init__(self, where: str, params_hash: str, prefix: str = BOX_PREFIX):
        where = str(where)
        if not where.startswith(REDIS_SCHEMES):
            if not where.lower().endswith(EXPORT_SUFFIXES):
                raise DataError(
                    f"box source {where!r}: expected 'none', 'compute', a redis:// URL or an "
                    "export file (.parquet or .jsonl.gz)"
                )
            if not Path(where).is_file():
                raise DataError(f"box source {where}: no such export file")
        self.where = where
        self.params_hash = params_hash
        self.prefix = prefix
        self._cache: Any = None
        self._pid = 0

    @property
    def cache(self) -> Any:
        """This process's cache client (a RedisBoxCache or FileBoxCache), opened on first use."""
        if self._cache is None or self._pid != os.getpid():
            from mofo.shared.cache import RedisBoxCache
            from mofo.shared.cache_files import FileBoxCache

            if self.where.startswith(REDIS_SCHEMES):
                self._cache = RedisBoxCache.from_url(self.where, prefix=self.prefix)
            else:
                self._cache = FileBoxCache(Path(self.where))
            self._pid = os.getpid()
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None, "_pid": 0}

    def records(self, items: Sequence[ClipItem]) -> list[BoxRecord | None]:
        if not items:
            return []
        return self.cache.get_many([item.video for item in items], self.params_hash)


class ComputedBoxes:
    """Boxes computed on the fly by the motion pipeline, for small data or no cache.

    Slow (TV-L1 per clip, per sample); a clip the pipeline refuses (too short for motion, say)
    gets no record, so its sample counts as missing.
    """

    counted = True
    kind = "computed"

    def __init__(self, params: MotionParams, root: Path, device: str = "cpu"):
        self.params = params
        self.root = Path(root)
        self.device = device

    def records(self, items: Sequence[ClipItem]) -> list[BoxRecord | None]:
        from mofo.shared.pipeline import analyse_clip

        out: list[BoxRecord | None] = []
        for item in items:
            try:
                path = resolve_under_root(self.root, item.path)[0]
                result = analyse_clip(
                    path, self.params, device=self.device, name=item.video, segment=item.segment
                )
                out.append(result.record)
            except ClipError:
                out.append(None)
        return out


class NoBoxes:
    """No boxes, no lookups: plain tube masking."""

    counted = False
    kind = "none"

    def records(self, items: Sequence[ClipItem]) -> list[BoxRecord | None]:
        return [None] * len(items)


def box_source(
    spec: str | None, params: MotionParams, root: Path, params_hash: str | None = None
) -> BoxSource:
    """``None``/``"none"`` → :class:`NoBoxes`; ``"compute"`` → :class:`ComputedBoxes`; a Redis
    URL or export file → :class:`CachedBoxes` under ``params_hash``, by default ``params``'."""
    if spec is None or spec == "none":
        return NoBoxes()
    if spec == "compute":
        return ComputedBoxes(params, root)
    return CachedBoxes(spec, params_hash or params.hash())


# --- samples ------------------------------------------------------------------------------------


def _stats(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if video.dim() < 4 or video.shape[-4] != 3:
        raise ValueError(
            f"expected video (C=3, T, H, W) or (B, 3, T, H, W), got {tuple(video.shape)}"
        )
    mean = torch.tensor(MEAN, dtype=video.dtype, device=video.device).view(3, 1, 1, 1)
    std = torch.tensor(STD, dtype=video.dtype, device=video.device).view(3, 1, 1, 1)
    return mean, std


def normalise(video: torch.Tensor) -> torch.Tensor:
    """Video in [0, 1], channels at dim -4, → the model's input (ImageNet mean and std)."""
    mean, std = _stats(video)
    return (video - mean) / std


def denormalise(video: torch.Tensor) -> torch.Tensor:
    """The model's input (or a reconstruction of it) back to [0, 1], for pictures."""
    mean, std = _stats(video)
    return (video * std + mean).clamp(0.0, 1.0)


@dataclass
class _Decoded:
    """A clip read for a sample: which index it is, its frames, the rng its crop draws from,
    and the clips that failed before it (each ``"<video id>: <reason>"``)."""

    index: int
    clip: Clip
    rng: np.random.Generator
    errors: list[str]


def _failure(item: ClipItem, error: ClipError) -> str:
    """``"<video id>: <reason>"`` (decode errors already start with the id they were given)."""
    text = str(error)
    return text if text.startswith(f"{item.video}: ") else f"{item.video}: {text}"


class VideoClips(Dataset):
    """Clips of a dataset as training samples (see the module's docstring).

    ``sampling="dense"`` takes ``frames`` frames ``rate`` apart (Something-Something V2,
    Kinetics); ``"segment"`` one frame from each of ``frames`` equal parts of the clip or of the
    item's segment (Epic-Kitchens; Something-Something V2 when finetuning, TSN's sampling).
    Training draws the start, the frames within the parts, a crop (``crop``: VideoMAE's
    multi-scale crop of pretraining, or the random resized crop of its finetuning), a flip
    (when ``flip``), RandAugment (``augment``) and random erasing of frames (``erasing``, after
    normalising); evaluation (``train=False``) takes the centred span (dense) or
    the middle of each part (segment) and the centre crop. Frames are decoded with the short
    side at ``decode_short_side`` (the source size when None) before cropping, by
    :func:`~mofo.shared.decode.read_training_frames`: on the loader process's one thread, only up to
    the last frame the sample takes, skipping frames nothing needs (the frames of
    :func:`~mofo.shared.decode.read_frames`, faster).

    Multi-view testing: ``views=(clips, crops)`` (evaluation only) gives every sample
    ``clips × crops`` views stacked in a leading dimension, temporal view by temporal view, the
    crops within each: the spans (dense) or the places within the parts (segment) spread over
    the clip, and the short-side squares spread along the long side (``view_crops``). Every
    view's frames are decoded in one pass. Something-Something V2 is tested with (2, 3).

    Call :meth:`set_epoch` before each epoch; the epoch lives in shared memory, so workers of a
    loader with ``persistent_workers`` see it too.
    """

    def __init__(
        self,
        items: Sequence[ClipItem],
        root: Path,
        boxes: BoxSource,
        *,
        frames: int = 16,
        rate: int = 2,
        size: int = 224,
        sampling: str = "dense",
        train: bool = True,
        decode_short_side: int | None = None,
        seed: int = 0,
        scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
        flip: bool = True,
        limits: DecodeLimits = _DEFAULT_LIMITS,
        max_replacements: int = 8,
        augment: RandAugmentSettings | None = None,
        views: tuple[int, int] | None = None,
        crop: str = "multi_scale",
        erasing: float = 0.0,
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if crop not in CROPS or not 0.0 <= erasing <= 1.0:
            raise ValueError(
                f"crop must be one of {', '.join(CROPS)} and erasing in [0, 1], got "
                f"{crop!r} and {erasing}"
            )
        if frames < 1 or rate < 1 or size < 1 or max_replacements < 0:
            raise ValueError(
                "need frames, rate and size >= 1 and max_replacements >= 0, got "
                f"{frames}, {rate}, {size}, {max_replacements}"
            )
        if views is not None and (train or len(views) != 2 or min(views) < 1):
            raise ValueError(f"views are (clips, crops) >= 1 of an evaluation set, got {views}")
        if not items:
            raise DataError(f"{root}: the dataset lists no clips")
        self.items = list(items)
        self.root = Path(root)
        self.boxes = boxes
        self.frames, self.rate, self.size = frames, rate, size
        self.sampling, self.train = sampling, train
        self.decode_short_side = decode_short_side
        self.seed = seed
        self.scales, self.flip = tuple(scales), flip
        self.limits = limits
        self.max_replacements = max_replacements
        self.augment = augment  # RandAugment when training (finetuning), boxes moved along
        self.crop = crop  # training crops: "multi_scale" (pretraining) or "resized" (finetuning)
        self.erasing = erasing  # random erasing's probability per frame, training only
        self.views = tuple(views) if views is not None else None  # test (clips, crops)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch of samples: every clip decoded (failures replaced), then one box lookup."""
        epoch, failed = self.epoch, {}
        decoded = [self._read_or_replace(range(len(self))[i], epoch, failed) for i in indices]
        records = self.boxes.records([self.items[d.index] for d in decoded])
        return [self._sample(d, r) for d, r in zip(decoded, records, strict=True)]

    def _read_or_replace(self, index: int, epoch: int, failed: dict[int, str]) -> _Decoded:
        """The clip at ``index``, or the next that decodes; ``failed`` remembers, for the batch,
        the clips that did not."""
        errors: list[str] = []
        while True:
            if index not in failed:
                rng = np.random.default_rng([self.seed, epoch, index])
                try:
                    return _Decoded(index, self._read(self.items[index], rng), rng, errors)
                except ClipError as error:
                    failed[index] = _failure(self.items[index], error)
            errors.append(failed[index])
            if len(errors) > self.max_replacements or len(errors) == len(self):
                raise DataError(
                    f"{len(errors)} clips in a row failed to decode (at most "
                    f"{self.max_replacements} are replaced): " + "; ".join(errors)
                )
            index = (index + 1) % len(self)

    def _pick(self, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        """Which of ``count`` frames a sample takes, as :func:`read_frames` asks; with test
        views, every temporal view's frames one after the other."""
        if self.train:
            if self.sampling == "segment":
                return lambda count: segment_indices(0, count, self.frames, rng)
            return lambda count: dense_indices(count, self.frames, self.rate, rng)
        clips = self.views[0] if self.views else 1
        if self.sampling == "segment":
            one = lambda count, v: segment_view_indices(0, count, self.frames, v, clips)  # noqa: E731
        else:
            one = lambda count, v: dense_view_indices(count, self.frames, self.rate, v, clips)  # noqa: E731
        return lambda count: np.concatenate([one(count, v) for v in range(clips)])

    def _read(self, item: ClipItem, rng: np.random.Generator) -> Clip:
        path = resolve_under_root(self.root, item.path)[0]
        return read_training_frames(
            path,
            self._pick(rng),
            self.decode_short_side,
            self.limits,
            name=item.video,
            segment=item.segment,
        )

    def _sample(self, decoded: _Decoded, record: BoxRecord | None) -> dict[str, Any]:
        clip = decoded.clip
        frames = torch.from_numpy(clip.frames)  # (T, H, W, 3) uint8; (clips · T, ...) with views
        indices = torch.tensor(clip.frame_indices, dtype=torch.int64)
        height, width = frames.shape[1:3]
        if record is None:
            box = "missing" if self.boxes.counted else "none"
            all_boxes = torch.zeros(len(indices), 4)
            all_valid = torch.zeros(len(indices), dtype=torch.bool)
        else:
            box = self.boxes.kind
            all_boxes, all_valid = boxes_for_frames(record, clip.frame_indices, width, height)
        if self.train and self.crop == "resized":
            crops = [random_resized_crop(width, height, self.size, decoded.rng, flip=self.flip)]
        elif self.train:
            crops = [
                multi_scale_crop(width, height, self.size, decoded.rng, self.scales, flip=self.flip)
            ]
        else:
            crops = view_crops(width, height, self.size, self.views[1] if self.views else 1)
        views = []  # (video, boxes, valid, frame indices): temporal view by temporal view
        for t in range(len(indices) // self.frames):
            part = slice(t * self.frames, (t + 1) * self.frames)
            for crop in crops:
                video = apply_crop(frames[part], crop)  # (C, T, size, size) in [0, 1]
                boxes, valid = move_boxes(all_boxes[part], all_valid[part], crop)
                if self.train and self.augment is not None:
                    video, boxes, valid, _ = rand_augment(
                        video, boxes, valid, decoded.rng, self.augment
                    )
                video = normalise(video)
                if self.train and self.erasing > 0:
                    video = random_erase(video, decoded.rng, self.erasing)
                views.append((video, boxes, valid, indices[part]))
        if self.views is None:
            video, boxes, valid, frame_indices = views[0]
        else:
            video, boxes, valid, frame_indices = (torch.stack(v) for v in zip(*views, strict=True))
        return {
            "video": video,  # (C, T, size, size); with views (V, C, T, size, size)
            "boxes": boxes,  # (T, 4) float32 pixels of the model input, x2/y2 exclusive
            "valid": valid,  # (T,) bool
            "frame_indices": frame_indices,  # (T,); with views (V, ...) each
            "index": decoded.index,
            "box": box,
            "errors": decoded.errors,
            "labels": dict(self.items[decoded.index].labels),  # task → class, when known
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A DataLoader ``collate_fn``: tensors stacked (into shared memory inside a worker),
    ``"missing"`` the number of samples whose record was missing, ``"errors"`` flattened."""
    stacked = {
        key: default_collate([s[key] for s in samples])
        for key in ("video", "boxes", "valid", "frame_indices")
    }
    # Classes per task, for the tasks every sample of the batch has (none for unlabelled splits).
    tasks = set.intersection(*(set(s["labels"]) for s in samples)) if samples else set()
    labels = {t: torch.tensor([s["labels"][t] for s in samples]) for t in sorted(tasks)}
    return {
        **stacked,
        "labels": labels,
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
        "box": [s["box"] for s in samples],
        "missing": sum(s["box"] == "missing" for s in samples),
        "errors": [e for s in samples for e in s["errors"]],
    }
