"""The queue's contract: the jobs the motion service and ``mofo cache build`` enqueue for the
workers, typed at both ends, and the loop that boxes a job's clips (shared by the service's
in-process jobs and the RQ workers). Redis key names live in :mod:`mofo.shared.keys`.

On the wire a job's arguments are plain JSON-able values (RQ stores them; a worker of this
version reads what a service of this version wrote): :meth:`BoxJob.args` and
:meth:`BuildChunk.args` write them, ``from_args`` reads them back and refuses what it does not
know, so a payload from another version fails its job with a message rather than half-working.

A clip that fails (corrupt, too long, missing) is recorded with its reason and the loop goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from mofo.shared.errors import Cancelled, ClipError
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.record import BoxRecord

# The RQ jobs, by import path (the service and the build never import the workers).
JOB_FUNCTION = "mofo.workers.jobs.box_clips_job"
BUILD_FUNCTION = "mofo.workers.jobs.build_chunk_job"
JOB_RETRY_AFTER_S = (5, 30)  # an API job runs again after these delays (a worker killed mid-job)


@dataclass(frozen=True)
class JobClip:
    """One clip of a job: its id (the record's ``video``) and where a worker reads it: a
    ``path`` under the data root, or an ``upload`` (the Redis key of its bytes); neither for a
    job of the service's own threads, which hold the clip. ``name`` is what the user called it
    (an upload's filename); ``segment`` the source frames [start, stop) of a dataset's clip."""

    video: str
    path: str | None = None
    upload: str | None = None
    name: str | None = None
    segment: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.video:
            raise ValueError("a job's clip needs its video id")
        if self.path is not None and self.upload is not None:
            raise ValueError(f"{self.video}: a job's clip is a path or an upload, not both")

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"video": self.video}
        for key in ("path", "upload", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.segment is not None:
            out["segment"] = list(self.segment)
        return out

    @classmethod
    def from_payload(cls, item: dict[str, Any]) -> JobClip:
        unknown = set(item) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"a job's clip has unknown fields {sorted(unknown)}: {item!r}")
        segment = item.get("segment")
        return cls(**{**item, "segment": tuple(segment) if segment else None})


def _clips(items: Sequence[dict[str, Any]]) -> tuple[JobClip, ...]:
    return tuple(JobClip.from_payload(item) for item in items)


def _limits(limits: dict[str, Any]) -> DecodeLimits:
    return DecodeLimits(**limits)


@dataclass(frozen=True)
class BoxJob:
    """What the service enqueues (:data:`JOB_FUNCTION`): clips to box with these parameters
    under these limits; each record goes to the box cache and the job's result."""

    clips: tuple[JobClip, ...]
    params: MotionParams
    limits: DecodeLimits

    def args(self) -> list[Any]:
        """The RQ job's positional arguments."""
        items = [c.to_payload() for c in self.clips]
        return [items, self.params.to_dict(), dataclasses.asdict(self.limits)]

    @classmethod
    def from_args(cls, items: list, params: dict, limits: dict) -> BoxJob:
        return cls(_clips(items), MotionParams.from_dict(params), _limits(limits))

    def timeout_s(self) -> int:
        """How long a worker may take: ten minutes, or a minute a clip for longer jobs."""
        return max(600, 60 * len(self.clips))


@dataclass(frozen=True)
class BuildChunk:
    """A chunk of a cache build (:data:`BUILD_FUNCTION`): the build's id, its clips (paths under
    ``root`` unless the worker has its own data root), parameters and limits."""

    build_id: str
    clips: tuple[JobClip, ...]
    params: MotionParams
    limits: DecodeLimits
    root: str | None = None

    def args(self) -> list[Any]:
        """The RQ job's positional arguments."""
        items = [c.to_payload() for c in self.clips]
        limits = dataclasses.asdict(self.limits)
        return [self.build_id, items, self.params.to_dict(), limits, self.root]

    @classmethod
    def from_args(
        cls, build_id: str, items: list, params: dict, limits: dict, root: str | None
    ) -> BuildChunk:
        return cls(build_id, _clips(items), MotionParams.from_dict(params), _limits(limits), root)


class Outcome(TypedDict, total=False):
    """One clip's outcome in a job's result: its record, or why it failed."""

    video: str
    ok: bool
    record: dict[str, Any]
    error: str


@dataclass
class JobCounts:
    """A job's progress as its clients read it: clips ``done`` and ``failed`` of ``total``, and
    the frame pairs of the clip being boxed (``None`` until its flow starts). Written by the job's
    thread and, for the pairs, the flow thread; read as a whole with :meth:`as_dict`."""

    total: int
    done: int = 0
    failed: int = 0
    pairs_done: int | None = None
    pairs_total: int | None = None

    def pairs(self, done: int, total: int) -> None:
        """The current clip's flow: ``done`` of ``total`` frame pairs (a flow progress hook)."""
        self.pairs_done, self.pairs_total = done, total

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def box_clips(
    clips: Sequence[JobClip],
    analyse: Callable[[JobClip], BoxRecord],
    counts: JobCounts | None = None,
) -> list[Outcome]:
    """Box each clip in turn; one outcome per clip, in order, counted in ``counts``.

    A clip whose analysis is :class:`~mofo.shared.errors.Cancelled` (the job was cancelled)
    ends the loop: the outcomes of the clips before it are returned.
    """
    counts = counts if counts is not None else JobCounts(len(clips))
    outcomes: list[Outcome] = []
    for clip in clips:
        counts.pairs_done = counts.pairs_total = None
        try:
            record = analyse(clip)
        except Cancelled:
            break
        except ClipError as exc:
            counts.failed += 1
            outcomes.append({"video": clip.video, "ok": False, "error": str(exc)})
        else:
            counts.done += 1
            outcomes.append({"video": clip.video, "ok": True, "record": record.to_dict()})
    return outcomes
