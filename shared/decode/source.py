"""Where a clip comes from and what its header says: a path, bytes or a stream opened
safely, its video stream, the header's facts (:class:`VideoInfo`) checked against the decode
limits before any frame is decoded, and the frames' timestamps.
"""

from __future__ import annotations

import contextlib
import io
import operator
import os
import stat
from collections.abc import Iterator
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
    EmptyClip,
    FileTooLarge,
    NotAVideo,
    ResolutionTooHigh,
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


def _times(raw: list[float | None], fps: float) -> np.ndarray:
    """Frame times from the start of the clip; index/fps when any timestamp is missing."""
    if not raw:
        return np.zeros(0)
    if any(t is None for t in raw):
        return np.arange(len(raw)) / (fps or 25.0)
    t = np.asarray(raw, dtype=np.float64)
    return t - t[0]


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


# --- segments: a frame range of a long video, reached by seeking --------------------------------

Segment = tuple[int, int]


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


def _frame_range(name: str, segment: Segment | None) -> Segment | None:
    """A segment as whole frame numbers ``start < stop``, or ValueError naming the clip."""
    if segment is None:
        return None
    segment = (operator.index(segment[0]), operator.index(segment[1]))
    if not 0 <= segment[0] < segment[1]:
        raise ValueError(
            f"{name}: segment {_span(segment)} is not a frame range: needs 0 <= start < stop"
        )
    return segment


def _open_clip(
    source: Source, limits: DecodeLimits, name: str | None, segment: Segment | None
) -> tuple[_Input, VideoInfo, Segment | None]:
    """Resolve, probe and check a clip (and its segment) before decoding: what both readers do.

    The length limits apply to the segment when there is one, else to the file.
    """
    inp = _resolve(source, limits, name)
    segment = _frame_range(inp.name, segment)
    info = _probe_input(inp, limits, length=segment is None)
    if segment is not None:
        _check_segment(inp.name, info, segment, limits)
    return inp, info, segment
