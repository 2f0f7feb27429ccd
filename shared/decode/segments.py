"""Segments: a frame range of a long video, reached by seeking instead of decoding from the
start (Epic-Kitchens' action segments).
"""

from __future__ import annotations

from collections.abc import Callable

import av
import av.container
import av.video
import numpy as np

from mofo.shared.decode.plan import _too_much_work
from mofo.shared.decode.reader import _check_frame_size, _Decoded, _Frames, _resizer
from mofo.shared.decode.source import Segment, VideoInfo, _Input, _past_end, _times, _video_stream
from mofo.shared.params import DecodeLimits

# Where to seek, in seconds before the segment's first frame. A seek that lands after that frame
# (a demuxer placing keyframes by decode time, say) is retried further back.
_SEEK_BACK_S = (0.0, 1.0, 10.0)


class _SeekFailed(Exception):
    """Timestamps cannot place the frames after a seek: decode from the start, counting frames."""


class _SeekOvershot(_SeekFailed):
    """The first frame after a seek comes after the segment's start: seek further back."""


def _seek(
    container: av.container.InputContainer, stream: av.video.VideoStream, seconds: float
) -> float:
    """Seek to the keyframe at or before ``seconds`` after the stream's start; that start (s).

    Rounding to the time base is safe: a frame that rounds to a later index than the one
    at ``seconds`` lies at least half a frame after it.
    """
    if stream.time_base is None:
        raise _SeekFailed
    first = stream.start_time or 0
    try:
        container.seek(
            first + round(seconds / stream.time_base),
            stream=stream,
            backward=True,
            any_frame=False,
        )
    except av.FFmpegError as e:  # e.g. raw streams, which cannot seek
        raise _SeekFailed from e
    return float(first * stream.time_base)


def _timed_index(frame: av.VideoFrame, t0: float, fps: float, previous: int, start: int) -> int:
    """A frame's index from its timestamp, ``round((time - t0) * fps)``, after a seek.

    ``previous`` is the index of the frame before (-1 for the first after the seek). Indices
    must run on one by one from at most ``start``, else the timestamps do not number frames
    (variable frame rate, broken timestamps) and frames must be counted instead.
    """
    if frame.time is None:
        raise _SeekFailed
    index = round((frame.time - t0) * fps)
    if previous < 0 and index > start:
        raise _SeekOvershot
    if index < 0 or (previous >= 0 and index != previous + 1):
        raise _SeekFailed
    return index


def _decode_span(
    inp: _Input,
    info: VideoInfo,
    limits: DecodeLimits,
    size: tuple[int, int],
    segment: Segment,
    keep: Callable[[int], bool],
    seek_s: float | None,
    most: int | None = None,
) -> _Decoded:
    """Decode ``segment`` after seeking to ``seek_s`` seconds, or from the start when None.

    Frames are indexed by timestamp after a seek, by count from the start; ``keep`` and the
    result use positions within the segment. Raises _SeekFailed when timestamps cannot place
    the frames, and ClipTooShort when the stream ends cleanly before the segment does.
    """
    start, stop = segment
    resize = _resizer(info, size)
    kept: dict[int, np.ndarray] = {}
    raw: list[float | None] = []
    last = -1  # index of the last frame decoded
    with inp.open() as container:
        stream = _video_stream(container)
        assert stream is not None  # probe checked
        stream.thread_type = "AUTO"
        timed = seek_s is not None
        t0 = _seek(container, stream, seek_s) if timed else 0.0
        frames = _Frames(container, stream)
        try:
            for ordinal, frame in enumerate(frames):
                last = _timed_index(frame, t0, info.fps, last, start) if timed else ordinal
                if last >= stop:
                    break
                _check_frame_size(inp.name, last, frame, info, limits)
                if last >= start:
                    raw.append(frame.time)
                    if keep(last - start):
                        if most is not None and len(kept) >= most:
                            raise _too_much_work(inp.name, size, most, limits)
                        kept[last - start] = resize(frame)
        except av.FFmpegError as e:  # e.g. reformat of a broken frame
            frames.error = e
    if frames.error is None and last + 1 < stop:
        if timed and last < 0:  # nothing after the seek: count from the start
            raise _SeekFailed
        raise _past_end(inp.name, segment, last + 1)
    return _Decoded(kept, _times(raw, info.fps), len(raw), frames.error)


def _decode_segment(
    inp: _Input,
    info: VideoInfo,
    limits: DecodeLimits,
    size: tuple[int, int],
    segment: Segment,
    keep: Callable[[int], bool],
    most: int | None = None,
) -> _Decoded:
    """Decode the frames of ``segment``, storing those whose position in it ``keep`` accepts.

    Seeks to a keyframe before the segment, so a segment late in a long video costs about
    one keyframe interval of extra decoding, not the whole lead-in. When the input cannot
    seek, frames have no timestamps, or their timestamps do not number consecutive frames at
    the header's rate, it decodes from the start and counts frames instead.
    """
    start = segment[0]
    for back_s in _SEEK_BACK_S if info.fps > 0 else ():
        seek_s = start / info.fps - back_s
        if seek_s <= 0:
            break
        try:
            return _decode_span(inp, info, limits, size, segment, keep, seek_s, most)
        except _SeekOvershot:
            continue
        except _SeekFailed:
            break
    return _decode_span(inp, info, limits, size, segment, keep, None, most)
