"""Open clips safely with PyAV: check header limits first, then decode and sample frames.

Every failure caused by the input becomes a :class:`~mofo.shared.errors.ClipError` subclass with
a one-line message that starts with the clip's name (file basename, or ``<upload>`` for bytes),
so callers can show it as-is; no PyAV/FFmpeg exception type escapes this package.

By concern: :mod:`.source` (where a clip comes from, its header and the limits, a segment's
range), :mod:`.plan` (the working size, the frames kept and their motion partners, the work
they cost), :mod:`.reader` (one decoding pass), :mod:`.segments` (seeking to a segment of a
long video), :mod:`.clips` (the reads of motion analysis) and :mod:`.training` (the reads of
training's data loaders).
"""

from mofo.shared.decode.clips import Clip, read_clip, read_frames
from mofo.shared.decode.plan import (
    WorkPlan,
    frames_held,
    motion_partners,
    plan_frames,
    plan_work,
    working_size,
)
from mofo.shared.decode.source import UPLOAD_NAME, Segment, Source, VideoInfo, probe
from mofo.shared.decode.training import read_training_frames

__all__ = [
    "UPLOAD_NAME",
    "Clip",
    "Segment",
    "Source",
    "VideoInfo",
    "WorkPlan",
    "frames_held",
    "motion_partners",
    "plan_frames",
    "plan_work",
    "probe",
    "read_clip",
    "read_frames",
    "read_training_frames",
    "working_size",
]
