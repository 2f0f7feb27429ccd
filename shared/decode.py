"""Open clips safely with PyAV: check header limits first, then decode and sample frames.

Every failure caused by the input becomes a :class:`~shared.errors.ClipError` subclass with a
one-line message that starts with the clip's name (file basename, or ``<upload>`` for bytes), so
callers can show it as-is; no PyAV/FFmpeg exception type escapes this module.
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import av
import av.container
import av.video
import numpy as np

from mofo.shared.errors import (
    ClipError,
    ClipNotFound,
    ClipTooLong,
    ClipTooShort,
    CorruptClip,
    EmptyClip,
    FileTooLarge,
    FrameSizeChanged,
    NotAVideo,
    ResolutionTooHigh,
    WorkTooLarge,
)
from mofo.shared.params import DecodeLimits, MotionParams

# FFmpeg logs through Python's logging (stderr by default); our errors carry what matters.
av.logging.set_level(av.logging.PANIC)

Source = str | os.PathLike | bytes | BinaryIO

UPLOAD_NAME = "<upload>"

# Shared defaults (both dataclasses are frozen, so sharing one instance is safe).
_DEFAULT_PARAMS = MotionParams()
_DEFAULT_LIMITS = DecodeLimits()

# Demuxers that read single pictures; FFmpeg happily presents a PNG as a one-frame "video".
_IMAGE_DEMUXERS = frozenset({"image2", "image2pipe"})
# Still-image codecs: a stream of one such frame is a picture, whatever the container.
_IMAGE_CODECS = frozenset({"png", "mjpeg", "bmp", "webp", "tiff", "jpeg2000", "jpegls", "qoi"})


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about the first video stream.

    ``frame_count`` is the header's count, else ``round(duration_s * fps)``, else 0 (unknown);
    ``duration_s`` and ``fps`` are 0.0 when the header does not say.
    """

    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    codec: str
    size_bytes: int


@dataclass
class Clip:
    """Sampled frames of a clip at working size, with where each came from.

    ``partners[t]`` is the position of kept frame ``t``'s motion partner (the frame its flow is
    measured to, see :func:`motion_partners`) in ``frames`` followed by ``motion_frames``; the
    latter holds the partners that sampling did not keep (none when every frame is kept).
    """

    frames: np.ndarray  # (T, h, w, 3) uint8 RGB, C-contiguous
    frame_indices: list[int]  # 0-based index of each kept frame in the source video
    info: VideoInfo
    motion_frames: np.ndarray | None = None  # (M, h, w, 3) uint8 RGB
    partners: list[int] | None = None  # (T,) positions into frames + motion_frames
    partner_indices: list[int] | None = None  # (T,) source index of each partner


@dataclass
class _Input:
    """A resolved source: its display name, byte size, and something PyAV can reopen."""

    name: str
    size: int
    target: str | BinaryIO
    start: int = 0
    where: str = ""  # ": <path>" where messages may show the path (not the service's)

    @contextlib.contextmanager
    def open(self) -> Iterator[av.container.InputContainer]:
        """Open a fresh input container, mapping open-time FFmpeg errors to ClipErrors.

        File objects are rewound to where they started, before and after. On leaving, the
        decoders are flushed (without the GIL) before anything can free them: decoding stopped
        mid-stream leaves FFmpeg's frame threads busy, and one that logs needs the GIL (PyAV's
        log callback) while freeing its decoder holds the GIL and waits for it: a deadlock.
        """
        if not isinstance(self.target, str):
            self.target.seek(self.start)
        try:
            container = av.open(self.target, mode="r")
        except FileNotFoundError as e:  # av.error.FileNotFoundError subclasses this
            raise ClipNotFound(f"{self.name}: no such file{self.where}") from e
        except PermissionError as e:
            raise ClipError(f"{self.name}: cannot read file: permission denied") from e
        except (av.FFmpegError, OSError, ValueError) as e:
            raise NotAVideo(f"{self.name}: is not a readable video ({_reason(e)})") from e
        try:
            with container:
                try:
                    yield container
                finally:
                    for stream in container.streams.video:
                        if stream.codec_context is not None:
                            stream.codec_context.flush_buffers()
        finally:
            if not isinstance(self.target, str):
                self.target.seek(self.start)


def _reason(error: BaseException) -> str:
    """One-line cause of an FFmpeg error: its errno text plus FFmpeg's last log line."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    log = getattr(error, "log", None)
    if isinstance(log, tuple) and len(log) == 3 and log[2]:
        text = f"{text}: {str(log[2]).strip()}"
    return " ".join(str(text).split())


def _read_at_most(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes from a stream, looping over short reads (pipes, sockets)."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _resolve(source: Source, limits: DecodeLimits, name: str | None = None) -> _Input:
    """Name and size a source, and refuse empty or oversized inputs without opening them.

    ``name`` replaces the name messages give the clip (the service names uploads by their
    filename and paths relative to its data root, never by server paths); messages then leave
    the path out.
    """
    inp = _resolve_unnamed(source, limits, name)
    if inp.size == 0:
        raise EmptyClip(f"{inp.name}: is empty (0 bytes)")
    if inp.size > limits.max_bytes:
        raise FileTooLarge(
            f"{inp.name}: size {inp.size} bytes exceeds the limit {limits.max_bytes} bytes"
        )
    return inp


# What a path that is not a regular file is, for messages (a FIFO or /dev/zero reads as 0 bytes).
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _resolve_unnamed(source: Source, limits: DecodeLimits, name: str | None = None) -> _Input:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        inp = _Input(name or UPLOAD_NAME, len(data), io.BytesIO(data))
    elif isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        where = "" if name is not None else f": {path}"
        name = name or os.path.basename(path.rstrip("/\\")) or path
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise ClipNotFound(f"{name}: no such file{where}") from e
        except OSError as e:
            raise ClipError(f"{name}: cannot read file: {e.strerror or e}") from e
        if stat.S_ISDIR(st.st_mode):
            raise ClipNotFound(f"{name}: is a directory, not a video file{where}")
        for is_kind, kind in _SPECIAL_FILES:
            if is_kind(st.st_mode):  # decoding reads a clip more than once: it needs a file
                raise NotAVideo(f"{name}: is a {kind}, not a regular file{where}")
        inp = _Input(name, st.st_size, path, where=where)
    elif hasattr(source, "read"):
        raw_name = getattr(source, "name", None)
        if name is None:
            name = os.path.basename(raw_name) if isinstance(raw_name, str) else UPLOAD_NAME
        seekable = getattr(source, "seekable", lambda: False)()
        if seekable:
            start = source.tell()
            source.seek(0, io.SEEK_END)
            size = source.tell() - start
            source.seek(start)
            inp = _Input(name, size, source, start)
        else:  # read it once (at most one byte past the limit) so it can be opened twice
            data = _read_at_most(source, limits.max_bytes + 1)
            inp = _Input(name, len(data), io.BytesIO(data))
    else:
        raise TypeError(f"expected a path, bytes or a binary file object, got {type(source)!r}")
    return inp


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """First video stream that is not cover art (an attached picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _is_image(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> bool:
    """True for pictures that FFmpeg opens as one-frame video (PNG, JPEG, ...)."""
    formats = set(container.format.name.split(","))
    if formats & _IMAGE_DEMUXERS or any(f.endswith("_pipe") for f in formats):
        return True
    return stream.codec_context.name in _IMAGE_CODECS and stream.frames == 1


def _header_info(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, size: int
) -> VideoInfo:
    """VideoInfo from stream/container metadata only; nothing is decoded."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate and rate > 0 else 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    elif stream.frames and fps:
        duration = stream.frames / fps
    else:
        duration = 0.0
    if stream.frames and stream.frames > 0:
        frame_count = int(stream.frames)
    elif duration and fps:
        frame_count = round(duration * fps)
    else:
        frame_count = 0
    return VideoInfo(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=fps,
        frame_count=frame_count,
        duration_s=max(duration, 0.0),
        codec=stream.codec_context.name,
        size_bytes=size,
    )


def _check_limits(name: str, info: VideoInfo, limits: DecodeLimits, length: bool = True) -> None:
    """Raise a ClipTooLarge subclass when header values exceed a limit.

    ``length=False`` skips the duration and frame-count limits, for callers that decode only
    part of the clip and check that part's length themselves.
    """
    if info.width > limits.max_width or info.height > limits.max_height:
        raise ResolutionTooHigh(
            f"{name}: resolution {info.width}x{info.height} exceeds the limit "
            f"{limits.max_width}x{limits.max_height}"
        )
    if not length:
        return
    if info.duration_s > limits.max_duration_s:
        raise ClipTooLong(
            f"{name}: duration {info.duration_s:g} s exceeds the limit {limits.max_duration_s:g} s"
        )
    if info.frame_count > limits.max_frames:
        raise ClipTooLong(
            f"{name}: frame count {info.frame_count} exceeds the limit {limits.max_frames}"
        )


def _probe_input(inp: _Input, limits: DecodeLimits, length: bool = True) -> VideoInfo:
    """Open, classify and check a resolved input from its header (``length``: see _check_limits)."""
    with inp.open() as container:
        return _probe_container(inp, container, limits, length)


def _probe_container(
    inp: _Input, container: av.container.InputContainer, limits: DecodeLimits, length: bool
) -> VideoInfo:
    """:func:`_probe_input` on a container already open."""
    stream = _video_stream(container)
    if stream is None:
        raise NotAVideo(f"{inp.name}: has no video stream")
    if _is_image(container, stream):
        raise NotAVideo(f"{inp.name}: is an image, not a video")
    info = _header_info(container, stream, inp.size)
    if info.width <= 0 or info.height <= 0:
        raise NotAVideo(f"{inp.name}: video stream has no frame size (unsupported codec?)")
    _check_limits(inp.name, info, limits, length)
    return info


def probe(source: Source, limits: DecodeLimits = _DEFAULT_LIMITS) -> VideoInfo:
    """Read a clip's header and enforce ``limits`` without decoding any frame."""
    return _probe_input(_resolve(source, limits), limits)


def working_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side at ``short_side`` and the aspect ratio kept.

    Both sides are rounded to the nearest even number (halves round up), so an odd
    ``short_side`` becomes the next even one. Smaller sources are scaled up, so every clip is
    processed at the same working resolution.
    """
    if width <= 0 or height <= 0 or short_side <= 0:
        raise ValueError(f"sizes must be positive, got {width}x{height}, short side {short_side}")

    def even(x: float) -> int:
        return max(2, 2 * math.floor(x / 2 + 0.5))

    if width <= height:
        return even(short_side), even(height * short_side / width)
    return even(width * short_side / height), even(short_side)


@dataclass(frozen=True)
class WorkPlan:
    """What motion analysis of a clip holds at most: ``frames`` frames of ``width`` x ``height``
    working pixels (kept frames and their motion partners)."""

    width: int
    height: int
    frames: int

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames


def _work_size(
    name: str, info: VideoInfo, short_side: int, limits: DecodeLimits
) -> tuple[int, int]:
    """The working size, refused when its long side exceeds ``limits.max_work_side`` (an extreme
    aspect ratio: one flow pair at 16x2160 and short side 224 is 224x30240 pixels)."""
    w, h = working_size(info.width, info.height, short_side)
    if max(w, h) > limits.max_work_side:
        ratio = max(info.width, info.height) / min(info.width, info.height)
        raise WorkTooLarge(
            f"{name}: aspect ratio {ratio:.4g}:1 ({info.width}x{info.height}) gives a working "
            f"size of {w}x{h} at short side {short_side}; the long side exceeds the limit "
            f"{limits.max_work_side} px"
        )
    return w, h


def frames_held(count: int, fps: float, params: MotionParams) -> int:
    """At most how many of a clip's ``count`` frames (at ``fps``) sampling holds: the kept
    frames (stride or target rate, then at most num_frames) and one motion partner each."""
    if params.fps is not None:
        kept = math.ceil(count / (fps or 25.0) * params.fps) + 1
    else:
        kept = math.ceil(count / params.stride)
    if params.num_frames is not None:
        kept = min(kept, params.num_frames)
    return min(count, 2 * kept)


def _check_work(name: str, plan: WorkPlan, limits: DecodeLimits) -> None:
    """Refuse a plan over ``limits.max_work_pixels`` before any frame is decoded."""
    if plan.pixels > limits.max_work_pixels:
        raise WorkTooLarge(
            f"{name}: {plan.frames} frames at working size {plan.width}x{plan.height} are "
            f"{plan.pixels} pixels of work, over the limit {limits.max_work_pixels}; "
            "sample fewer frames (stride, fps, num_frames) or lower short_side"
        )


def _too_much_work(
    name: str, size: tuple[int, int], frames: int, limits: DecodeLimits
) -> WorkTooLarge:
    """The error for a stream found, while decoding, to need more frames than its header said."""
    return WorkTooLarge(
        f"{name}: more than {frames} frames at working size {size[0]}x{size[1]} found while "
        f"decoding, over the work limit of {limits.max_work_pixels} pixels"
    )


def _times(raw: list[float | None], fps: float) -> np.ndarray:
    """Frame times from the start of the clip; index/fps when any timestamp is missing."""
    if not raw:
        return np.zeros(0)
    if any(t is None for t in raw):
        return np.arange(len(raw)) / (fps or 25.0)
    t = np.asarray(raw, dtype=np.float64)
    return t - t[0]


def _nearest_to_rate(times: np.ndarray, fps: float, source_fps: float) -> list[int]:
    """Indices of the frames nearest to 0, 1/fps, 2/fps, ... (ties go to the earlier frame).

    Targets run up to the end of the last frame; a frame nearest to several targets is kept
    once, so there are never more indices than frames.
    """
    n = len(times)
    if n <= 1:
        return list(range(n))
    steps = np.diff(times)
    step = float(np.median(steps)) if np.median(steps) > 0 else 1.0 / (source_fps or 25.0)
    end = float(times[-1]) + step
    targets = np.arange(math.ceil(end * fps - 1e-9)) / fps
    after = np.clip(np.searchsorted(times, targets), 1, n - 1)
    before = after - 1
    pick_after = (times[after] - targets) < (targets - times[before]) - 1e-9
    return sorted(set(np.where(pick_after, after, before).tolist()))


def plan_frames(times: np.ndarray, params: MotionParams, source_fps: float) -> list[int]:
    """Which of ``len(times)`` frames to keep: by stride or target fps, then at most num_frames."""
    if params.fps is not None:
        kept = _nearest_to_rate(times, params.fps, source_fps)
    else:
        kept = list(range(0, len(times), params.stride))
    if params.num_frames is not None and params.num_frames < len(kept):
        positions = np.round(np.linspace(0, len(kept) - 1, params.num_frames)).astype(int)
        kept = [kept[p] for p in positions]
    return kept


def motion_partners(kept: Sequence[int], count: int, step: int) -> list[int]:
    """The frame each kept frame's motion is measured to: ``step`` frames later, or, where the
    clip (of ``count`` frames) ends before that, ``step`` frames earlier; a clip too short for
    either pairs with its farther end. Positions, like ``kept``, are in ``[0, count)``."""
    if count < 2:
        raise ValueError(f"motion needs at least 2 frames, got {count}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    partners = []
    for k in kept:
        if k + step < count:
            partners.append(k + step)
        elif k - step >= 0:
            partners.append(k - step)
        else:
            partners.append(count - 1 if k < count - 1 - k else 0)
    return partners


def _too_many_frames(name: str, info: VideoInfo, limits: DecodeLimits) -> ClipTooLong:
    """The error for a stream found to hold more frames than ``limits.max_frames``."""
    said = f"header said {info.frame_count}" if info.frame_count else "header gave no count"
    return ClipTooLong(
        f"{name}: more than {limits.max_frames} frames found ({said}), "
        f"exceeds the limit {limits.max_frames}"
    )


def _scan_times(inp: _Input, info: VideoInfo, limits: DecodeLimits) -> np.ndarray:
    """Presentation times of all frames from packet timestamps, without decoding."""
    raw: list[float | None] = []
    with inp.open() as container:
        stream = _video_stream(container)
        assert stream is not None  # probe checked
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                raw.append(None if packet.pts is None else float(packet.pts * stream.time_base))
                if len(raw) > limits.max_frames:
                    raise _too_many_frames(inp.name, info, limits)
        except av.FFmpegError:
            pass  # truncated or corrupt: decoding will find out, and the plan is redone
    if all(t is not None for t in raw):
        raw.sort()
    return _times(raw, info.fps)


# Fewer decoded frames than this share of the header's count means the file is cut short (the
# margin allows for headers that estimate the count from duration × rate).
_TRUNCATED = 0.9


class _Frames:
    """Decoded frames of a stream in order; a mid-stream error ends it and is kept in ``error``."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.VideoStream):
        self.container = container
        self.stream = stream
        self.error: av.FFmpegError | None = None

    def __iter__(self) -> Iterator[av.VideoFrame]:
        codec = self.stream.codec_context
        try:
            for packet in self.container.demux(self.stream):
                yield from codec.decode(packet)
        except av.FFmpegError as e:
            self.error = e
            with contextlib.suppress(av.FFmpegError):  # frames inside the decoder are still good
                yield from codec.decode(None)


@dataclass
class _Decoded:
    kept: dict[int, np.ndarray]
    times: np.ndarray
    count: int
    error: av.FFmpegError | None


def _resizer(info: VideoInfo, size: tuple[int, int]) -> Callable[[av.VideoFrame], np.ndarray]:
    """Frame → RGB array at working ``size`` (w, h): area averaging to shrink, else bilinear."""
    w, h = size
    interpolation = "AREA" if w <= info.width and h <= info.height else "BILINEAR"

    def resize(frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation=interpolation)
        return rgb.to_ndarray()

    return resize


def _check_frame_size(
    name: str, index: int, frame: av.VideoFrame, info: VideoInfo, limits: DecodeLimits
) -> None:
    """Refuse a decoded frame larger than the limits, or of another size than the header's
    (streams may change size mid-way; a record has one width and height)."""
    if frame.width > limits.max_width or frame.height > limits.max_height:
        raise ResolutionTooHigh(
            f"{name}: frame {index} is {frame.width}x{frame.height}, exceeds "
            f"the limit {limits.max_width}x{limits.max_height}"
        )
    if frame.width != info.width or frame.height != info.height:
        raise FrameSizeChanged(
            f"{name}: frame {index} is {frame.width}x{frame.height}, the stream began at "
            f"{info.width}x{info.height}; clips whose frame size changes are not supported"
        )


def _holds(size: tuple[int, int], limits: DecodeLimits) -> int:
    """How many frames of working ``size`` the work limit lets decoding hold."""
    return max(2, limits.max_work_pixels // (size[0] * size[1]))


def _decode(
    inp: _Input,
    info: VideoInfo,
    limits: DecodeLimits,
    size: tuple[int, int],
    keep: Callable[[int], bool],
    most: int | None = None,
) -> _Decoded:
    """Decode every frame, resizing and storing those ``keep`` accepts; enforce frame limits,
    and hold at most ``most`` frames (the work limit) when given."""
    resize = _resizer(info, size)
    kept: dict[int, np.ndarray] = {}
    raw: list[float | None] = []
    with inp.open() as container:
        stream = _video_stream(container)
        assert stream is not None  # probe checked
        stream.thread_type = "AUTO"
        frames = _Frames(container, stream)
        try:
            for index, frame in enumerate(frames):
                if index >= limits.max_frames:
                    raise _too_many_frames(inp.name, info, limits)
                _check_frame_size(inp.name, index, frame, info, limits)
                raw.append(frame.time)
                if keep(index):
                    if most is not None and len(kept) >= most:  # a header that undercounts
                        raise _too_much_work(inp.name, size, most, limits)
                    kept[index] = resize(frame)
        except av.FFmpegError as e:  # e.g. reformat of a broken frame
            frames.error = e
    return _Decoded(kept, _times(raw, info.fps), len(raw), frames.error)


# --- segments: a frame range of a long video, reached by seeking --------------------------------

Segment = tuple[int, int]

# Where to seek, in seconds before the segment's first frame. A seek that lands after that frame
# (a demuxer placing keyframes by decode time, say) is retried further back.
_SEEK_BACK_S = (0.0, 1.0, 10.0)


class _SeekFailed(Exception):
    """Timestamps cannot place the frames after a seek: decode from the start, counting frames."""


class _SeekOvershot(_SeekFailed):
    """The first frame after a seek comes after the segment's start: seek further back."""


def _span(segment: Segment) -> str:
    """A segment as messages write it, ``[start, stop)``."""
    return f"[{segment[0]}, {segment[1]})"


def _past_end(name: str, segment: Segment, frames: int) -> ClipTooShort:
    """The error for a segment that ends after the video's last frame."""
    return ClipTooShort(
        f"{name}: segment {_span(segment)} runs past the end of the video ({frames} frames)"
    )


def _check_segment(name: str, info: VideoInfo, segment: Segment, limits: DecodeLimits) -> None:
    """Refuse a segment past the header's frame count, or longer than the length limits.

    The limits bound what is decoded and held, so they apply to the segment, not to the file;
    its duration is known only when the header gives a frame rate.
    """
    start, stop = segment
    if info.frame_count and stop > info.frame_count:
        raise _past_end(name, segment, info.frame_count)
    duration = (stop - start) / info.fps if info.fps else 0.0
    if duration > limits.max_duration_s:
        raise ClipTooLong(
            f"{name}: segment {_span(segment)} duration {duration:g} s exceeds the limit "
            f"{limits.max_duration_s:g} s"
        )
    if stop - start > limits.max_frames:
        raise ClipTooLong(
            f"{name}: segment {_span(segment)} frame count {stop - start} exceeds the limit "
            f"{limits.max_frames}"
        )


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


@dataclass
class _Sampled:
    """What sampling chose from the decoded frames: kept positions and their motion partners."""

    decoded: _Decoded
    kept: list[int]
    partners: list[int]


def _sample(
    name: str,
    decode: Callable[[Callable[[int], bool]], _Decoded],
    times: Callable[[], np.ndarray],
    params: MotionParams,
    fps: float,
) -> _Sampled:
    """Decode, holding only the frames sampling chooses and their motion partners.

    ``decode(keep)`` stores the frames whose position ``keep`` accepts. With ``params.fps`` or
    ``num_frames``, the choice is planned from ``times()`` (frame times known before decoding),
    then made again from the decoded frames' times; by stride it is made while decoding. Either
    way, a frame the final choice needs and decoding did not hold is decoded once more.
    """
    step = params.step_frames(fps)
    if params.fps is None and params.num_frames is None:
        stride = params.stride

        def kept_at(i: int) -> bool:
            return i >= 0 and i % stride == 0

        # Partners lie step frames after (or, at the end, before) a kept frame.
        decoded = decode(lambda i: kept_at(i) or kept_at(i - step) or kept_at(i + step))

        def choose(d: _Decoded) -> list[int]:
            return list(range(0, d.count, stride))
    else:
        planned_times = times()
        planned = plan_frames(planned_times, params, fps)
        wanted = set(planned)
        if len(planned_times) >= 2:
            wanted |= set(motion_partners(planned, len(planned_times), step))
        decoded = decode(wanted.__contains__)

        def choose(d: _Decoded) -> list[int]:
            return plan_frames(d.times, params, fps)

    kept = choose(decoded)
    if decoded.count < 2 or decoded.error is not None:  # refused by the caller's checks
        return _Sampled(decoded, kept, [])
    partners = motion_partners(kept, decoded.count, step)
    needed = set(kept) | set(partners)
    if not needed <= decoded.kept.keys():  # planned and decoded counts disagreed: redo
        decoded = decode(needed.__contains__)
        if decoded.count >= 2:
            kept = choose(decoded)
            partners = motion_partners(kept, decoded.count, step)
            if not set(kept) | set(partners) <= decoded.kept.keys():
                raise CorruptClip(
                    f"{name}: is corrupt: two decodings gave different frames "
                    f"({decoded.count} frames)"
                )
    return _Sampled(decoded, kept, partners)


def _open_clip(
    source: Source, limits: DecodeLimits, name: str | None, segment: Segment | None
) -> tuple[_Input, VideoInfo, Segment | None]:
    """Resolve, probe and check a clip (and its segment) before decoding: what both readers do.

    The length limits apply to the segment when there is one, else to the file.
    """
    inp = _resolve(source, limits, name)
    if segment is not None:
        segment = (operator.index(segment[0]), operator.index(segment[1]))
        if not 0 <= segment[0] < segment[1]:
            raise ValueError(
                f"{inp.name}: segment {_span(segment)} is not a frame range: "
                "needs 0 <= start < stop"
            )
    info = _probe_input(inp, limits, length=segment is None)
    if segment is not None:
        _check_segment(inp.name, info, segment, limits)
    return inp, info, segment


def _planned_work(
    inp: _Input,
    info: VideoInfo,
    params: MotionParams,
    limits: DecodeLimits,
    segment: Segment | None,
) -> WorkPlan:
    """The work of a probed clip from its header (its packets when the header has no count),
    refused over the work limits."""
    w, h = _work_size(inp.name, info, params.short_side, limits)
    if segment is not None:
        count = segment[1] - segment[0]
    else:
        count = info.frame_count or len(_scan_times(inp, info, limits))
    plan = WorkPlan(w, h, frames_held(max(count, 2), info.fps, params))
    _check_work(inp.name, plan, limits)
    return plan


def plan_work(
    source: Source,
    params: MotionParams = _DEFAULT_PARAMS,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> WorkPlan:
    """What :func:`read_clip` and the analysis after it would hold, from the header alone, and
    refused as read_clip refuses it: the service reserves this much before decoding.

    Decoding holds to it too: a stream found to have more frames than its header said is
    refused once the frames kept pass the work limit.
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    return _planned_work(inp, info, params, limits, segment)


def _decoder(
    inp: _Input,
    info: VideoInfo,
    limits: DecodeLimits,
    size: tuple[int, int],
    segment: Segment | None,
    most: int | None = None,
) -> Callable[[Callable[[int], bool]], _Decoded]:
    """``decode(keep)`` over the whole clip or the segment; positions are within the segment;
    at most ``most`` frames held when given."""
    if segment is None:
        return lambda keep: _decode(inp, info, limits, size, keep, most)
    return lambda keep: _decode_segment(inp, info, limits, size, segment, keep, most)


def _check_decoded(name: str, info: VideoInfo, decoded: _Decoded, segment: Segment | None) -> None:
    """Refuse a stream that broke, gave no frame, or ended well before its header's count."""
    if decoded.count == 0 or decoded.error is not None:
        why = _reason(decoded.error) if decoded.error else "no frame could be decoded"
        raise CorruptClip(f"{name}: is corrupt or truncated: {why}")
    if segment is None and decoded.count < _TRUNCATED * info.frame_count:
        # A partial clip would give a record that looks complete: refuse it. (A segment's
        # decoding already refuses a stream that ends before the segment does.)
        raise CorruptClip(
            f"{name}: is truncated: the header promises {info.frame_count} frames, "
            f"only {decoded.count} could be decoded"
        )


def read_clip(
    source: Source,
    params: MotionParams = _DEFAULT_PARAMS,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> Clip:
    """Decode a clip's first video stream and sample frames at working size.

    Limits are checked from the header before decoding, and the frame limit again while
    decoding. Sampling keeps every ``params.stride``-th frame, or when ``params.fps`` is set
    (it then overrides stride) the frames nearest to 0, 1/fps, 2/fps, ... seconds; then at
    most ``params.num_frames`` of those, evenly spread. A stream that breaks mid-way, or that
    ends well before the frame count its header promises, is refused as truncated.

    ``segment=(start, stop)`` reads only source frames ``start <= i < stop`` (0-based), as
    datasets such as Epic-Kitchens annotate actions in long videos: decoding starts at a
    keyframe before ``start`` rather than at the beginning, the duration and frame limits apply
    to the segment rather than the file, and sampling runs over the segment as over a whole
    clip. ``frame_indices`` are indices in the source video either way; a segment that runs
    past the video's last frame is refused.

    Each kept frame also brings its motion partner (:func:`motion_partners`, ``params``' motion
    step; within the segment when there is one), decoded at the same size: the flow that gives
    a frame its box is measured between the two, never across a sampling gap.
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    plan = _planned_work(inp, info, params, limits, segment)
    size = (plan.width, plan.height)
    decode = _decoder(inp, info, limits, size, segment, _holds(size, limits))

    if segment is None:
        # Plan from packet timestamps so only the chosen frames are resized and held.
        sampled = _sample(
            inp.name, decode, lambda: _scan_times(inp, info, limits), params, info.fps
        )
        offset, part = 0, ""
    else:
        offset, stop = segment
        sampled = _sample(
            inp.name,
            decode,
            lambda: _times([None] * (stop - offset), info.fps),  # at the header's rate
            params,
            info.fps,
        )
        part = f"segment {_span(segment)} "

    decoded, indices = sampled.decoded, sampled.kept
    _check_decoded(inp.name, info, decoded, segment)
    if len(indices) < 2:
        if decoded.count < 2:
            plural = "frame" if decoded.count == 1 else "frames"
            raise ClipTooShort(
                f"{inp.name}: {part}has {decoded.count} {plural}; motion needs at least 2"
            )
        raise ClipTooShort(
            f"{inp.name}: {part}sampling keeps {len(indices)} of {decoded.count} frames; "
            "motion needs at least 2"
        )
    frames = np.stack([decoded.kept[i] for i in indices])
    position = {k: t for t, k in enumerate(indices)}
    extra = sorted(set(sampled.partners) - position.keys())
    position |= {p: len(indices) + m for m, p in enumerate(extra)}
    motion_frames = np.stack([decoded.kept[p] for p in extra]) if extra else frames[:0].copy()
    return Clip(
        frames=np.ascontiguousarray(frames),
        frame_indices=[offset + i for i in indices],
        info=info,
        motion_frames=np.ascontiguousarray(motion_frames),
        partners=[position[p] for p in sampled.partners],
        partner_indices=[offset + p for p in sampled.partners],
    )


def _picked(name: str, pick: Callable[[int], Sequence[int]], count: int) -> list[int]:
    """``pick(count)`` as a list of positions, refused unless each lies in ``[0, count)``."""
    positions = [operator.index(p) for p in pick(count)]
    if not positions:
        raise ValueError(f"{name}: pick({count}) chose no frames")
    outside = [p for p in positions if not 0 <= p < count]
    if outside:
        shown = ", ".join(map(str, outside[:10])) + (", ..." if len(outside) > 10 else "")
        raise ValueError(f"{name}: pick({count}) chose positions outside [0, {count}): {shown}")
    return positions


def read_frames(
    source: Source,
    pick: Callable[[int], Sequence[int]],
    short_side: int | None = None,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    name: str | None = None,
    segment: Segment | None = None,
) -> Clip:
    """Decode the frames ``pick`` chooses, in its order, as training samples them.

    ``pick(count)`` gets the number of frames in the clip (or in ``segment``) and returns
    positions in ``[0, count)``, repeats and any order allowed (16 frames 2 apart, say). Only
    those frames are resized (short side ``short_side``, see :func:`working_size`; the source
    size when None) and held; ``frame_indices`` are their indices in the source video.

    A whole clip's count comes from its packet timestamps, before decoding; when decoding
    finds another count (a header or packets that lie), ``pick`` is asked again with the
    decoded count, and the frames it then chooses are decoded once more if need be. Limits,
    truncation and corruption are checked as :func:`read_clip` checks them; unlike it, one
    frame is enough (a sample may repeat it).
    """
    inp, info, segment = _open_clip(source, limits, name, segment)
    if short_side is None:
        size = (info.width, info.height)
    else:
        size = working_size(info.width, info.height, short_side)
    decode = _decoder(inp, info, limits, size, segment)

    # A whole clip's count from its packets (nothing decoded yet); a segment's from its range.
    count = len(_scan_times(inp, info, limits)) if segment is None else segment[1] - segment[0]
    positions = _picked(inp.name, pick, count) if count else []
    decoded = decode(set(positions).__contains__)
    _check_decoded(inp.name, info, decoded, segment)
    if decoded.count != count:  # the plan's count was wrong: choose again from what is there
        positions = _picked(inp.name, pick, decoded.count)
        if not set(positions) <= decoded.kept.keys():
            decoded = decode(set(positions).__contains__)
            _check_decoded(inp.name, info, decoded, segment)
            if not set(positions) <= decoded.kept.keys():
                raise CorruptClip(
                    f"{inp.name}: is corrupt: two decodings gave different frames "
                    f"({decoded.count} frames, positions {sorted(set(positions))[:10]} chosen)"
                )
    offset = 0 if segment is None else segment[0]
    return Clip(
        frames=np.ascontiguousarray(np.stack([decoded.kept[p] for p in positions])),
        frame_indices=[offset + p for p in positions],
        info=info,
    )


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
    if segment is not None:
        segment = (operator.index(segment[0]), operator.index(segment[1]))
        if not 0 <= segment[0] < segment[1]:
            raise ValueError(
                f"{inp.name}: segment {_span(segment)} is not a frame range: "
                "needs 0 <= start < stop"
            )
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
