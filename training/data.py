"""The ``[data]`` table every training command reads (pretraining, finetuning, evaluation), and
how it opens: the clips of a source, their box source and, for labelled sources, the classes of
each task. The commands share it through this module, never through each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mofo.shared.params import MotionParams
from mofo.training.classifier import EPIC_CLASSES
from mofo.training.config import ConfigError


@dataclass(frozen=True)
class DataSection:
    source: str = ""  # SSV2 train.json, an Epic-Kitchens CSV, or a folder of clips
    videos: str | None = None  # the videos folder, when not the source's default
    root: str | None = None  # the data root clip paths are under (default: the source's)
    # Where boxes come from: a Redis URL or an export file ("mofo cache export"), "compute"
    # (on the fly, slow), or "none" (tube masking needs none).
    boxes: str = "none"
    motion: dict[str, Any] = field(default_factory=dict)  # the cache build's motion settings
    params: str | None = None  # or the params hash of the cached records, given directly
    rate: int = 2  # dense sampling: frames this far apart
    sampling: Literal["dense", "segment"] | None = None  # default: segment for Epic, else dense
    decode_short_side: int | None = None  # resize while decoding (None: native size)
    workers: int = 4  # DataLoader processes per rank
    max_replacements: int = 8
    # Left-right flips: None is the command's default (pretraining: none, as VideoMAE's
    # pretraining; finetuning: see training/finetune.py).
    flip: bool | None = None


def motion_params(data: DataSection) -> MotionParams:
    try:
        return MotionParams.from_dict(data.motion)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[data] motion: {e}") from None


def open_data(d: DataSection):
    """The clips a ``[data]`` table names and their box source, the cache checked reachable
    (a cache that is down fails here, not in a loader process). Imported here: the data
    pipeline pulls in decoding, which the config checks do not need."""
    from mofo.shared.sources import open_source
    from mofo.training.datasets import box_source

    source = open_source(
        Path(d.source), Path(d.videos) if d.videos else None, Path(d.root) if d.root else None
    )
    boxes = box_source(d.boxes, motion_params(d), source.root, d.params)
    if hasattr(boxes, "cache"):
        boxes.cache.ping()
    return source, boxes


def task_classes(kind: str, source: Path) -> dict[str, int]:
    """The classes of each task of a labelled source."""
    from mofo.shared.sources import ssv2_classes

    if kind == "epic":
        return dict(EPIC_CLASSES)
    if kind == "ssv2":
        names = ssv2_classes(source)
        if names:
            return {"action": len(names)}
    raise ConfigError(f"{source}: no classes (SSV2 needs labels.json beside it; Epic its CSV)")


def sampling_of(d: DataSection, kind: str) -> str:
    """Finetuning's and evaluation's frame sampling: ``data.sampling``, else segment (TSN, as
    VideoMAE finetunes and tests SSV2; Epic's segments) for labelled datasets, dense for
    folders."""
    return d.sampling or ("dense" if kind == "folder" else "segment")


def open_labelled(d: DataSection):
    """A labelled source, its box source and its tasks' classes; every clip must have a class
    of every task."""
    source, boxes = open_data(d)
    classes = task_classes(source.kind, source.source)
    unlabelled = [i.video for i in source.items if set(i.labels) != set(classes)]
    if unlabelled:
        raise ConfigError(
            f"{d.source}: {len(unlabelled)} clips have no class, e.g. {unlabelled[0]}"
        )
    return source, boxes, classes
