"""Tests for read_clip's ``segment``: decoding a frame range of a longer video by seeking.

The clips come from badclips.numbered_clip: 64×48, 25 fps, a keyframe every 10 frames, and each
frame showing its own index in binary, so a test can tell which source frame it got. At
``short_side=48`` the working size is the source size, so frames come through unscaled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mofo.shared import decode
from mofo.shared.decode import read_clip, reader, segments
from mofo.shared.errors import ClipTooLong, ClipTooShort, ResolutionTooHigh
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.pipeline import analyse_clip
from testkit import badclips

SOURCE = MotionParams(short_side=48)  # working size 64×48, the source size


def numbers(frames: np.ndarray) -> list[int]:
    """The index each frame of a numbered clip shows: 8 stripes, least significant bit left."""
    width = frames.shape[2]
    centres = [int((bit + 0.5) * width / 8) for bit in range(8)]
    bits = frames[:, :, centres].mean(axis=(1, 3)) > 128  # (T, 8)
    return [int(sum(1 << b for b in range(8) if row[b])) for row in bits]


@pytest.fixture(scope="module")
def clip150(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return badclips.numbered_clip(tmp_path_factory.mktemp("segments"), frames=150)


@pytest.fixture(scope="module")
def clip150_bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return badclips.numbered_clip(tmp_path_factory.mktemp("segments_b"), frames=150, bframes=2)


def test_numbered_clip_reads_back(clip150: Path) -> None:
    """The helper's numbers survive encoding, so the tests below can trust them."""
    full = read_clip(clip150, SOURCE)
    assert full.frame_indices == list(range(150))
    assert numbers(full.frames) == list(range(150))


# --- which frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bframes", [False, True], ids=["no-bframes", "bframes"])
@pytest.mark.parametrize(
    "segment",
    [(37, 64), (40, 50), (39, 41), (41, 60), (99, 131)],
    ids=["mid-gop", "on-keyframe", "across-keyframe", "after-keyframe", "late"],
)
def test_segment_gives_exactly_its_frames(
    clip150: Path, clip150_bframes: Path, bframes: bool, segment: tuple[int, int]
) -> None:
    path = clip150_bframes if bframes else clip150
    clip = read_clip(path, SOURCE, segment=segment)
    expected = list(range(*segment))
    assert clip.frame_indices == expected
    assert numbers(clip.frames) == expected  # the right pictures, not off by one
    assert clip.frames.shape == (len(expected), 48, 64, 3)
    assert clip.info == decode.probe(path)


def test_segment_equals_full_decode(clip150_bframes: Path) -> None:
    for params in (SOURCE, MotionParams(short_side=224)):  # unscaled, and resized to 298×224
        full = read_clip(clip150_bframes, params)
        part = read_clip(clip150_bframes, params, segment=(53, 97))
        np.testing.assert_array_equal(part.frames, full.frames[53:97])


@pytest.mark.parametrize(
    ("params", "segment", "expected"),
    [
        (MotionParams(short_side=48, stride=4), (37, 64), list(range(37, 64, 4))),
        # positions round(linspace(0, 59, 4)) = 0, 20, 39, 59
        (MotionParams(short_side=48, num_frames=4), (40, 100), [40, 60, 79, 99]),
        # 25 fps to 5 fps: every 5th frame, targets up to the end of the segment's last frame
        (MotionParams(short_side=48, fps=5), (40, 100), list(range(40, 100, 5))),
        # stride keeps positions 0, 10, ..., 50; num_frames spreads 3 of those 6
        (MotionParams(short_side=48, stride=10, num_frames=3), (33, 93), [33, 53, 83]),
    ],
    ids=["stride", "num_frames", "fps", "stride+num_frames"],
)
def test_sampling_within_segment(
    clip150: Path, params: MotionParams, segment: tuple[int, int], expected: list[int]
) -> None:
    clip = read_clip(clip150, params, segment=segment)
    assert clip.frame_indices == expected
    assert numbers(clip.frames) == expected


def test_segment_sampling_matches_a_clip_of_the_same_frames(clip150: Path, tmp_path: Path) -> None:
    """Sampling a segment chooses what sampling a clip holding only those frames would."""
    alone = badclips.numbered_clip(tmp_path, frames=60)
    for params in (MotionParams(short_side=48, fps=3), MotionParams(short_side=48, num_frames=7)):
        part = read_clip(clip150, params, segment=(70, 130))
        assert part.frame_indices == [70 + i for i in read_clip(alone, params).frame_indices]


@pytest.mark.parametrize("segment", [(0, 12), (0, 2), (130, 150), (148, 150), (0, 150)], ids=str)
def test_segment_at_either_end(clip150: Path, segment: tuple[int, int]) -> None:
    clip = read_clip(clip150, SOURCE, segment=segment)
    assert clip.frame_indices == list(range(*segment))
    assert numbers(clip.frames) == list(range(*segment))


def test_segment_accepts_bytes_and_file_objects(clip150: Path) -> None:
    by_path = read_clip(clip150, SOURCE, segment=(85, 110))
    by_bytes = read_clip(clip150.read_bytes(), SOURCE, segment=(85, 110))
    with open(clip150, "rb") as f:
        by_file = read_clip(f, SOURCE, segment=(85, 110))
        assert f.tell() == 0
    assert by_path.frame_indices == by_bytes.frame_indices == by_file.frame_indices
    np.testing.assert_array_equal(by_bytes.frames, by_path.frames)
    np.testing.assert_array_equal(by_file.frames, by_path.frames)


# --- seeking ----------------------------------------------------------------------------------


class _CountingFrames(reader._Frames):
    """The decoder's frames, counting the frames it yields, across all instances."""

    yielded = 0

    def __iter__(self):
        for frame in super().__iter__():
            _CountingFrames.yielded += 1
            yield frame


def test_segment_seeks_instead_of_decoding_the_lead_in(
    clip150: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "_Frames", _CountingFrames)
    _CountingFrames.yielded = 0
    clip = read_clip(clip150, SOURCE, segment=(125, 135))
    assert clip.frame_indices == list(range(125, 135))
    # Keyframe 120 to frame 135 (which ends the loop): 16 frames, not the 136 from the start.
    assert _CountingFrames.yielded == 16


def test_overshooting_seek_is_retried_further_back(
    clip150: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seek that lands after the segment's start (as some demuxers do) is redone earlier."""
    calls: list[float] = []
    seek = segments._seek

    def late_first_seek(container, stream, seconds: float) -> float:
        calls.append(seconds)
        return seek(container, stream, seconds + (1.0 if len(calls) == 1 else 0.0))

    monkeypatch.setattr(segments, "_seek", late_first_seek)
    clip = read_clip(clip150, SOURCE, segment=(95, 105))
    assert numbers(clip.frames) == clip.frame_indices == list(range(95, 105))
    assert calls == pytest.approx([95 / 25, 95 / 25 - 1.0])


def test_stream_without_timestamps_counts_frames(tmp_path: Path) -> None:
    """A raw H.264 stream cannot seek and has no timestamps: decode from the start, counting."""
    path = badclips.headerless_clip(tmp_path, frames=30)
    full = read_clip(path)
    part = read_clip(path, segment=(12, 25))
    assert part.frame_indices == list(range(12, 25))
    np.testing.assert_array_equal(part.frames, full.frames[12:25])


# --- errors and limits ------------------------------------------------------------------------


def test_segment_past_the_end_is_too_short(clip150: Path) -> None:
    message = (
        r"^numbered_150f_g10_b0\.mp4: segment \[140, 151\) runs past the end of the video "
        r"\(150 frames\)$"
    )
    with pytest.raises(ClipTooShort, match=message):
        read_clip(clip150, SOURCE, segment=(140, 151))
    with pytest.raises(ClipTooShort, match=r"^clip-7: segment \[150, 160\) runs past the end"):
        read_clip(clip150, SOURCE, name="clip-7", segment=(150, 160))


def test_segment_past_the_end_found_while_decoding(tmp_path: Path) -> None:
    """Without a frame count in the header, the end is found by decoding."""
    path = badclips.headerless_clip(tmp_path, frames=30)
    assert decode.probe(path).frame_count == 0
    message = r"^raw_30f\.h264: segment \[20, 31\) runs past the end of the video \(30 frames\)$"
    with pytest.raises(ClipTooShort, match=message):
        read_clip(path, segment=(20, 31))
    with pytest.raises(ClipTooShort, match=r"\[40, 50\) runs past the end .* \(30 frames\)$"):
        read_clip(path, segment=(40, 50))


def test_truncated_file_serves_segments_before_the_cut(tmp_path: Path) -> None:
    path = badclips.truncated_mp4(tmp_path, keep=0.7, faststart=True)
    assert decode.probe(path).frame_count == 30  # the header does not know about the cut
    assert read_clip(path, segment=(5, 15)).frame_indices == list(range(5, 15))
    with pytest.raises(ClipTooShort, match=r"segment \[20, 28\) runs past the end of the video"):
        read_clip(path, segment=(20, 28))


@pytest.mark.parametrize("segment", [(5, 5), (7, 3), (-1, 4)], ids=str)
def test_segment_must_be_a_frame_range(clip150: Path, segment: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"^numbered_150f_g10_b0\.mp4: segment .* 0 <= start"):
        read_clip(clip150, SOURCE, segment=segment)


def test_length_limits_apply_to_the_segment_not_the_file(clip150: Path) -> None:
    limits = DecodeLimits(max_frames=50, max_duration_s=2.0)  # the file: 150 frames, 6 s
    with pytest.raises(ClipTooLong, match=r"duration 6 s exceeds the limit 2 s$"):
        read_clip(clip150, SOURCE, limits)
    clip = read_clip(clip150, SOURCE, limits, segment=(100, 130))  # 30 frames, 1.2 s
    assert clip.frame_indices == list(range(100, 130))


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (DecodeLimits(max_frames=50), r"segment \[10, 70\) frame count 60 exceeds the limit 50$"),
        (
            DecodeLimits(max_duration_s=2.0),
            r"segment \[10, 70\) duration 2\.4 s exceeds the limit 2 s$",
        ),
    ],
    ids=["frames", "duration"],
)
def test_segment_longer_than_limits(clip150: Path, limits: DecodeLimits, message: str) -> None:
    with pytest.raises(ClipTooLong, match=r"^numbered_150f_g10_b0\.mp4: " + message):
        read_clip(clip150, SOURCE, limits, segment=(10, 70))


def test_resolution_limit_still_applies(clip150: Path) -> None:
    with pytest.raises(ResolutionTooHigh, match=r"resolution 64x48 exceeds the limit 32x32$"):
        read_clip(clip150, SOURCE, DecodeLimits(max_width=32, max_height=32), segment=(0, 10))


def test_one_frame_segment_is_too_short(clip150: Path) -> None:
    message = (
        r"^numbered_150f_g10_b0\.mp4: segment \[20, 21\) has 1 frame; motion needs at least 2$"
    )
    with pytest.raises(ClipTooShort, match=message):
        read_clip(clip150, SOURCE, segment=(20, 21))
    with pytest.raises(ClipTooShort, match=r"segment \[20, 30\) sampling keeps 1 of 10 frames"):
        read_clip(clip150, MotionParams(short_side=48, stride=20), segment=(20, 30))


# --- pipeline ---------------------------------------------------------------------------------


def test_analyse_clip_segment_records_source_indices(clip150: Path) -> None:
    result = analyse_clip(clip150, MotionParams(short_side=48, stride=3), segment=(60, 90))
    record = result.record
    assert record.frame_indices == list(range(60, 90, 3))
    assert all(60 <= i < 90 for i in record.frame_indices)
    assert len(record.frames) == len(record.frame_indices)
    assert (record.width, record.height, record.fps) == (64, 48, 25.0)
