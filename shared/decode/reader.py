"""Frame reading: one pass of PyAV's decoder over a clip, each frame resized to the working
size as it comes, its size checked against the first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import av.container
import av.video
import numpy as np

from mofo.shared.decode.plan import _too_much_work
from mofo.shared.decode.source import VideoInfo, _Input, _times, _too_many_frames, _video_stream
from mofo.shared.errors import (
    FrameSizeChanged,
    ResolutionTooHigh,
)
from mofo.shared.params import DecodeLimits

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
