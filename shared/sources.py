"""What a cache build works through: the clips of a dataset, named as the dataset names them.

Three kinds of source, chosen by what ``mofo cache build SOURCE`` is given:

- a folder: every video file below it; a clip's id is its POSIX path under the data root (the
  same id the API gives a path request, so the service finds what the workers cached);
- a Something-Something V2 label file (``train.json``, ``validation.json``, ``test.json``): a JSON
  list of objects with an ``id``; the clip is ``<videos>/<id>.webm`` and its id is the dataset's;
- an Epic-Kitchens-100 annotation CSV (``EPIC_100_train.csv``, ...): one action segment per row,
  named by its ``narration_id``, frames ``start_frame``..``stop_frame`` (1-based, inclusive) of the
  video ``<videos>/<participant_id>/videos/<video_id>.MP4`` (or ``<videos>/<video_id>.MP4``).

Paths are kept relative to a root folder, so workers on other hosts can mount the data elsewhere
(each worker resolves them under its own ``MOFO_DATA_ROOT``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mofo.shared.errors import MofoError
from mofo.shared.jobs import JobClip

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg"})
SSV2_VIDEO_DIRS = ("20bn-something-something-v2", "videos")
EPIC_COLUMNS = ("narration_id", "participant_id", "video_id", "start_frame", "stop_frame")
EPIC_LABELS = ("verb_class", "noun_class")  # in the train and validation CSVs, not the test one


class SourceError(MofoError):
    """A dataset source that cannot be read: a missing folder, a malformed label file or row."""


@dataclass(frozen=True)
class ClipItem:
    """One clip of a dataset: its id, its file under the root, its frames when a segment, and
    its classes when the source has them (SSV2: ``action``; Epic-Kitchens: ``verb``, ``noun``)."""

    video: str
    path: str  # POSIX path relative to the dataset root
    segment: tuple[int, int] | None = None  # 0-based source frames [start, stop)
    labels: dict[str, int] = field(default_factory=dict, hash=False)

    def to_job(self) -> JobClip:
        """The clip as a cache build's job names it."""
        return JobClip(self.video, path=self.path, segment=self.segment)


@dataclass
class Dataset:
    """The clips of a source, the root their paths are under, and a default build name."""

    kind: str  # "folder", "ssv2" or "epic"
    name: str
    source: Path
    root: Path
    items: list[ClipItem]


def open_source(source: Path, videos: Path | None = None, data_root: Path | None = None) -> Dataset:
    """Read a folder, SSV2 label file or Epic-Kitchens CSV into a :class:`Dataset`.

    ``videos`` is the folder of the label file's videos (SSV2: by default
    ``20bn-something-something-v2`` or ``videos`` beside the file; Epic: the CSV's folder).
    Paths are made relative to ``data_root`` when given (the clips must lie under it), else to
    the clips' own folder.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        kind, base, items = "folder", source.resolve(), _folder_items(source.resolve())
        name = source.resolve().name
    elif not source.exists():
        raise SourceError(f"{source}: no such file or folder")
    elif source.suffix.lower() == ".json":
        base = _videos_dir(source, videos, SSV2_VIDEO_DIRS)
        kind, items, name = "ssv2", _ssv2_items(source), f"ssv2-{source.stem}"
    elif source.suffix.lower() == ".csv":
        base = _videos_dir(source, videos, ())
        kind, items, name = "epic", _epic_items(source, base), f"epic-{source.stem}"
    else:
        raise SourceError(
            f"{source}: not a folder, an SSV2 label file (.json) or an Epic-Kitchens CSV (.csv)"
        )
    root = base
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if not base.is_relative_to(root):
            raise SourceError(f"{base} is not under the data root {root}")
        prefix = PurePosixPath(*base.relative_to(root).parts)
        moved = [str(prefix / item.path) for item in items]
        items = [
            ClipItem(path if kind == "folder" else item.video, path, item.segment, item.labels)
            for item, path in zip(items, moved, strict=True)
        ]
    return Dataset(kind=kind, name=name, source=source.resolve(), root=root, items=items)


def _videos_dir(label_file: Path, videos: Path | None, defaults: tuple[str, ...]) -> Path:
    if videos is not None:
        if not videos.is_dir():
            raise SourceError(f"--videos {videos}: no such folder")
        return videos.resolve()
    for name in defaults:
        if (label_file.parent / name).is_dir():
            return (label_file.parent / name).resolve()
    if defaults:
        raise SourceError(
            f"{label_file}: where are its videos? Pass --videos DIR (looked for "
            + " and ".join(f"{label_file.parent / d}" for d in defaults)
            + ")"
        )
    return label_file.parent.resolve()


def _folder_items(folder: Path) -> list[ClipItem]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if not filename.startswith(".") and Path(filename).suffix.lower() in VIDEO_SUFFIXES:
                rel = Path(dirpath, filename).relative_to(folder)
                paths.append(PurePosixPath(*rel.parts).as_posix())
    if not paths:
        raise SourceError(f"{folder}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in it")
    return [ClipItem(p, p) for p in sorted(paths)]


def _ssv2_items(label_file: Path) -> list[ClipItem]:
    """Clips of an SSV2 label file: ``[{"id": "78687", "label": ..., ...}, ...]``."""
    try:
        entries = json.loads(label_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{label_file}: cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{label_file}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(entries, list):
        raise SourceError(
            f"{label_file}: expected a JSON list of clips, got {type(entries).__name__}"
        )
    classes = ssv2_classes(label_file)
    items, seen = [], set()
    for k, entry in enumerate(entries):
        video = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(video, int) and not isinstance(video, bool):
            video = str(video)
        if not isinstance(video, str) or not video or "/" in video or video.startswith("."):
            raise SourceError(f'{label_file}: entry {k} has no valid "id": {str(entry)[:120]}')
        if video in seen:
            raise SourceError(f"{label_file}: entry {k}: id {video!r} appears twice")
        seen.add(video)
        labels = {}
        if classes is not None and "template" in entry:
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in classes:
                raise SourceError(
                    f"{label_file}: entry {k} (id {video}): template {entry['template']!r} is "
                    f"not a class of {label_file.parent / 'labels.json'}"
                )
            labels = {"action": classes[template]}
        items.append(ClipItem(video, f"{video}.webm", labels=labels))
    if not items:
        raise SourceError(f"{label_file}: lists no clips")
    return items


def ssv2_classes(label_file: Path) -> dict[str, int] | None:
    """``labels.json`` beside an SSV2 label file (class name → index as a string), when there."""
    path = label_file.parent / "labels.json"
    if not path.is_file() or path == label_file:
        return None
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: cannot be read as JSON: {exc}") from None
    if not isinstance(names, dict):
        raise SourceError(f"{path}: expected an object of class name -> index")
    try:
        classes = {str(name): int(index) for name, index in names.items()}
    except (TypeError, ValueError):
        raise SourceError(f"{path}: every class index must be a whole number") from None
    if sorted(classes.values()) != list(range(len(classes))):
        raise SourceError(f"{path}: class indices must be 0..{len(classes) - 1}, each once")
    return classes


def _epic_items(csv_file: Path, videos: Path) -> list[ClipItem]:
    """Segments of an Epic-Kitchens-100 annotation CSV (one per row, 1-based inclusive frames)."""
    try:
        handle = csv_file.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"{csv_file}: cannot be read: {exc}") from None
    items, seen, files = [], set(), {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in EPIC_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{csv_file}: line 1: the header lacks {', '.join(missing)}")
        labelled = all(c in (reader.fieldnames or []) for c in EPIC_LABELS)
        for row in reader:
            line = reader.line_num
            try:
                start, stop = int(row["start_frame"]), int(row["stop_frame"])
            except (TypeError, ValueError):
                raise SourceError(
                    f"{csv_file}: line {line}: start_frame {row['start_frame']!r} and stop_frame "
                    f"{row['stop_frame']!r} must be whole numbers"
                ) from None
            if not 1 <= start <= stop:
                raise SourceError(
                    f"{csv_file}: line {line}: frames {start}..{stop} are not 1 <= start <= stop"
                )
            narration, participant, video = (
                (row[c] or "").strip() for c in ("narration_id", "participant_id", "video_id")
            )
            if not (narration and participant and video):
                raise SourceError(
                    f"{csv_file}: line {line}: narration_id, participant_id and video_id must "
                    "not be empty"
                )
            if narration in seen:
                raise SourceError(f"{csv_file}: line {line}: narration_id {narration!r} repeats")
            seen.add(narration)
            if video not in files:
                files[video] = _epic_video(videos, participant, video)
            labels = _epic_labels(csv_file, line, row) if labelled else {}
            items.append(ClipItem(narration, files[video], (start - 1, stop), labels))
    if not items:
        raise SourceError(f"{csv_file}: lists no segments")
    return items


def _epic_labels(csv_file: Path, line: int, row: dict[str, str]) -> dict[str, int]:
    """A row's verb and noun classes (the dataset's 97 verbs and 300 nouns)."""
    labels = {}
    for column, task, count in (("verb_class", "verb", 97), ("noun_class", "noun", 300)):
        value = (row[column] or "").strip()
        if not value.isdigit() or int(value) >= count:
            raise SourceError(
                f"{csv_file}: line {line}: {column} {row[column]!r} is not a class 0..{count - 1}"
            )
        labels[task] = int(value)
    return labels


def _epic_video(videos: Path, participant: str, video: str) -> str:
    """The video's path under ``videos``: the dataset's layout ``P01/videos/P01_01.MP4`` or a
    flat ``P01_01.MP4`` (either case of suffix); the dataset's layout when none exists here."""
    candidates = [
        f"{participant}/videos/{video}.MP4",
        f"{participant}/videos/{video}.mp4",
        f"{video}.MP4",
        f"{video}.mp4",
    ]
    for candidate in candidates:
        if (videos / candidate).is_file():
            return candidate
    return candidates[0]
