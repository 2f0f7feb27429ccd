"""Training's reads: only the frames a sample needs, on the loader process's one thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import av
import av.container
import av.video
import numpy as np

from mofo.shared.decode.clips import Clip, _picked, read_frames
from mofo.shared.decode.plan import working_size
from mofo.shared.decode.reader import _TRUNCATED, _check_frame_size, _resizer
from mofo.shared.decode.segments import _SEEK_BACK_S, _seek, _SeekFailed, _SeekOvershot
from mofo.shared.decode.source import (
    _DEFAULT_LIMITS,
    Segment,
    Source,
    VideoInfo,
    _check_segment,
    _frame_range,
    _Input,
    _probe_container,
    _resolve,
    _video_stream,
)
from mofo.shared.params import DecodeLimits

# --- training: only the frames a sample needs ---------------------------------------------------


class _Unusual(Exception):
    """Something the fast training read does not handle: :func:`read_frames` takes the clip."""


def _keep_decoding(codec: av.VideoCodecContext, needed: bool, skip: bool) -> None:
    """Decode the next packet's frame fully when it is ``needed``; else, with ``skip``, let the
    decoder drop it where no other frame refers to it (``skip_frame="NONREF"``)."""
    codec.skip_frame = "DEFAULT" if needed or not skip else "NONREF"


def _one_thread(stream: av.video.stream.VideoStream) -> av.VideoCodecContext:
    """The stream's decoder on the calling thread only: a loader runs a process per core."""
    codec = stream.codec_context
    codec.thread_type = "SLICE"
    codec.thread_count = 1
    return codec


def _train_whole(
    inp: _Input,
    container: av.container.InputContainer,
    info: VideoInfo,
    limits: DecodeLimits,
    resize: Callable[[av.VideoFrame], np.ndarray],
    pick: Callable[[int], Sequence[int]],
    skip: bool,
) -> tuple[list[int], dict[int, np.ndarray]]:
    """Read a whole clip's packets once, ask ``pick`` with their count, and decode up to the last
    frame it chose, skipping unneeded frames nothing refers to when packet timestamps order the
    frames (each packet's display position is its timestamp's rank)."""
    stream = _video_stream(container)
    assert stream is not None  # probe checked
    packets: list[av.Packet] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            packets.append(packet)
            if len(packets) > limits.max_frames:
                raise _Unusual
    except av.FFmpegError as e:
        raise _Unusual from e
    count = len(packets)
    if count == 0 or count < _TRUNCATED * info.frame_count:
        raise _Unusual
    positions = _picked(inp.name, pick, count)
    needed = set(positions)
    stamps = [p.pts for p in packets]
    timed = None not in stamps and len(set(stamps)) == count
    rank = {pts: i for i, pts in enumerate(sorted(stamps))} if timed else {}
    codec = _one_thread(stream)
    kept: dict[int, np.ndarray] = {}
    made = 0

    def take(frames: Iterable[av.VideoFrame]) -> None:
        nonlocal made
        for frame in frames:
            index = rank.get(frame.pts, -1) if timed else made
            made += 1
            if index < 0:
                raise _Unusual
            _check_frame_size(inp.name, index, frame, info, limits)
            if index in needed:
                kept[index] = resize(frame)

    try:
        for packet in packets:
            if timed:
                _keep_decoding(codec, rank[packet.pts] in needed, skip)
            take(codec.decode(packet))
            if len(kept) == len(needed):
                break
        else:
            codec.skip_frame = "DEFAULT"
            take(codec.decode(None))
    except av.FFmpegError as e:
        raise _Unusual from e
    if len(kept) != len(needed):
        raise _Unusual
    return positions, kept


def _train_span(
    inp: _Input,
    container: av.container.InputContainer,
    info: VideoInfo,
    limits: DecodeLimits,
    resize: Callable[[av.VideoFrame], np.ndarray],
    needed: set[int],
    skip: bool,
    seek_s: float | None,
    start: int,
) -> dict[int, np.ndarray] | None:
    """The ``needed`` source frames of a segment from ``start``, decoded after seeking to
    ``seek_s`` (from where the container is, counting frames, when None) up to the last of them;
    None when the seek landed after ``start``. Frames are placed by timestamp after a seek, as
    :func:`_decode_span` places them, and refused (:class:`_Unusual`) unless the packets'
    timestamps number consecutive frames at the header's rate."""
    last = max(needed)
    kept: dict[int, np.ndarray] = {}
    stream = _video_stream(container)
    assert stream is not None  # probe checked
    codec = _one_thread(stream)
    timed = seek_s is not None
    try:
        t0 = _seek(container, stream, seek_s) if timed else 0.0
    except _SeekFailed as e:
        raise _Unusual from e
    time_base = stream.time_base
    fed: set[int] = set()  # the frame indices of the packets read
    shown = -1  # index of the last frame out of the decoder
    made = 0

    def place(frame: av.VideoFrame) -> int:
        nonlocal shown, made
        if timed:
            if frame.pts is None:  # (frames flushed at the end have no time base: use the pts)
                raise _Unusual
            index = round((float(frame.pts * time_base) - t0) * info.fps)
            if shown < 0 and index > start:
                raise _SeekOvershot
            if index <= shown or index not in fed:
                raise _Unusual
        else:
            index = made
        shown, made = index, made + 1
        return index

    def take(frames: Iterable[av.VideoFrame]) -> bool:
        for frame in frames:
            index = place(frame)
            if index > last:
                return True
            _check_frame_size(inp.name, index, frame, info, limits)
            if index in needed:
                kept[index] = resize(frame)
        return len(kept) == len(needed)

    try:
        done = False
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if timed:
                if packet.pts is None or time_base is None:
                    raise _Unusual
                index = round((float(packet.pts * time_base) - t0) * info.fps)
                if index in fed:  # two packets at one frame: timestamps do not number them
                    raise _Unusual
                fed.add(index)
                _keep_decoding(codec, index in needed, skip)
            if take(codec.decode(packet)):
                done = True
                break
        if not done:
            codec.skip_frame = "DEFAULT"
            take(codec.decode(None))
    except _SeekOvershot:
        codec.flush_buffers()
        codec.skip_frame = "DEFAULT"
        return None
    except av.FFmpegError as e:
        raise _Unusual from e
    if timed:  # the packets up to the last frame out must number consecutive frames
        seen = sorted(i for i in fed if i <= shown)
        if not seen or seen != list(range(seen[0], seen[0] + len(seen))):
            raise _Unusual
    if len(kept) != len(needed):
        raise _Unusual
    return kept


def _train_segment(
    inp: _Input,
    container: av.container.InputContainer,
    info: VideoInfo,
    limits: DecodeLimits,
    resize: Callable[[av.VideoFrame], np.ndarray],
    segment: Segment,
    positions: list[int],
    skip: bool,
) -> dict[int, np.ndarray]:
    """The chosen frames of a segment, seeking as :func:`_decode_segment` seeks (again, further
    back, on the same container when a seek lands late); from the start when it cannot."""
    start = segment[0]
    needed = {start + p for p in positions}
    for back_s in _SEEK_BACK_S if info.fps > 0 else ():
        seek_s = start / info.fps - back_s
        if seek_s <= 0:
            break
        args = (inp, container, info, limits, resize, needed, skip, seek_s, start)
        kept = _train_span(*args)
        if kept is not None:
            return kept
    with inp.open() as fresh:
        kept = _train_span(inp, fresh, info, limits, resize, needed, False, None, start)
    if kept is None:
        raise _Unusual
    return kept


def read_training_frames(
    source: Source,
    pick: Callable[[int], Sequence[int]],
    short_side: int | None = None,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
    skip: bool = True,
) -> Clip:
    """:func:`read_frames`' frames, decoded as a training loader wants them: the file opened and
    demuxed once, decoded on one thread (a loader runs a process per core) up to the last frame
    ``pick`` chose and no further, and (``skip``) frames that are neither chosen nor referred to
    by others not decoded at all. The frames and indices are read_frames'. Clips out of the
    ordinary (counts that disagree, broken or truncated streams, timestamps that do not number
    the frames) go to read_frames, ``pick`` answered there as here. Unlike read_frames, damage
    after the last chosen frame goes unnoticed: the frames a sample takes are whole.
    """
    inp = _resolve(source, limits, name)
    segment = _frame_range(inp.name, segment)
    asked: dict[int, list[int]] = {}

    def remembered(count: int) -> list[int]:
        if count not in asked:
            asked[count] = _picked(inp.name, pick, count)
        return asked[count]

    try:
        with inp.open() as container:
            info = _probe_container(inp, container, limits, length=segment is None)
            if segment is not None:
                _check_segment(inp.name, info, segment, limits)
            size = (info.width, info.height)
            if short_side is not None:
                size = working_size(info.width, info.height, short_side)
            resize = _resizer(info, size)
            if segment is None:
                args = (inp, container, info, limits, resize, remembered, skip)
                positions, kept = _train_whole(*args)
            else:
                positions = remembered(segment[1] - segment[0])
                args = (inp, container, info, limits, resize, segment, positions, skip)
                kept = {i - segment[0]: f for i, f in _train_segment(*args).items()}
    except _Unusual:
        return read_frames(source, remembered, short_side, limits, name, segment)
    offset = 0 if segment is None else segment[0]
    return Clip(
        frames=np.ascontiguousarray(np.stack([kept[p] for p in positions])),
        frame_indices=[offset + p for p in positions],
        info=info,
    )
