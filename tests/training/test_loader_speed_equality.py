"""The fast training read gives today's samples: ``read_training_frames`` against ``read_frames``
on real VP9 and H.264 clips (B-frames, short GOPs, segments reached by seeking), and the
pretraining sample of ``VideoClips`` against today's path (``bench/loader.py``'s ``TodayClips``),
frames, boxes and pixels exactly equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mofo.shared.decode.training as decode_training
from mofo.shared.cache_files import write_records
from mofo.shared.decode import read_frames, read_training_frames
from mofo.shared.errors import ClipError
from mofo.shared.sources import ClipItem
from mofo.training.datasets import CachedBoxes, VideoClips
from mofo.training.transforms import apply_crop, dense_indices, multi_scale_crop, segment_indices
from testkit.loader import HASH, TodayClips, apply_crop_before, record, write_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SSV2-like VP9 WebM (96x64, 12 fps, 40 frames) and a long H.264 MP4 (160x96, 30 fps,
    300 frames, B-frames, a keyframe every 48 frames), panning over photos."""
    out = tmp_path_factory.mktemp("loader")
    write_clip(
        out / "ssv2.webm",
        "libvpx-vp9",
        (96, 64),
        12,
        40,
        0,
        {"deadline": "good", "cpu-used": "8", "crf": "30", "b": "0"},
    )
    write_clip(
        out / "epic.mp4",
        "libx264",
        (160, 96),
        30,
        300,
        1,
        {"preset": "veryfast", "crf": "23", "g": "48", "bf": "3"},
    )
    return out


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of ``read_frames`` made by ``read_training_frames`` (its fallback)."""
    calls: list[int] = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        return read_frames(*args, **kwargs)

    monkeypatch.setattr(decode_training, "read_frames", wrapped)
    return calls


@pytest.mark.parametrize("skip", [True, False])
def test_dense_picks_give_the_frames_of_read_frames(clips, monkeypatch, skip):
    calls = counting(monkeypatch)
    for seed in range(6):
        pick = lambda count, s=seed: dense_indices(count, 16, 2, np.random.default_rng(s))  # noqa: E731
        today = read_frames(clips / "ssv2.webm", pick)
        fast = read_training_frames(clips / "ssv2.webm", pick, skip=skip)
        assert fast.frame_indices == today.frame_indices
        assert np.array_equal(fast.frames, today.frames)
        assert fast.info == today.info
    short = read_training_frames(clips / "ssv2.webm", lambda count: [3, 3, 0], short_side=32)
    assert short.frame_indices == [3, 3, 0] and short.frames.shape == (3, 32, 48, 3)
    assert np.array_equal(
        short.frames, read_frames(clips / "ssv2.webm", lambda c: [3, 3, 0], 32).frames
    )
    assert calls == []  # every clip took the fast path


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("segment", [(0, 40), (5, 100), (47, 48), (130, 290), (250, 300)])
def test_segment_picks_give_the_frames_of_read_frames(clips, monkeypatch, segment, skip):
    calls = counting(monkeypatch)
    for seed in range(3):
        pick = lambda count, s=seed: segment_indices(0, count, 16, np.random.default_rng(s))  # noqa: E731
        today = read_frames(clips / "epic.mp4", pick, segment=segment)
        fast = read_training_frames(clips / "epic.mp4", pick, segment=segment, skip=skip)
        assert fast.frame_indices == today.frame_indices
        assert all(segment[0] <= i < segment[1] for i in fast.frame_indices)
        assert np.array_equal(fast.frames, today.frames)
    assert calls == []


@pytest.mark.parametrize("name", ["ssv2.webm", "epic.mp4"])
def test_a_truncated_clip_fails_as_read_frames_fails(clips, tmp_path, monkeypatch, name):
    """Cut in half: the WebM still opens (its header promises 40 frames, its packets hold
    fewer) and goes to read_frames, which refuses it; the MP4 loses its index and is refused
    on opening. Either way the error is read_frames' own."""
    data = (clips / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    pick = lambda count: [0, count - 1]  # noqa: E731
    with pytest.raises(ClipError) as today:
        read_frames(cut, pick)
    calls = counting(monkeypatch)
    with pytest.raises(type(today.value)) as fast:
        read_training_frames(cut, pick)
    assert str(fast.value) == str(today.value)
    assert calls == ([1] if name.endswith(".webm") else [])


def test_bad_picks_are_refused_as_read_frames_refuses_them(clips):
    with pytest.raises(ValueError, match=r"pick\(40\) chose positions outside \[0, 40\): 40"):
        read_training_frames(clips / "ssv2.webm", lambda count: [count])


def test_planar_crop_gives_the_values_of_todays_crop():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 240, 428, 3), np.uint8))
    for seed in range(12):
        crop = multi_scale_crop(428, 240, 224, np.random.default_rng(seed))
        assert torch.equal(apply_crop(frames, crop), apply_crop_before(frames, crop))


@pytest.mark.parametrize("sampling", ["dense", "segment"])
def test_pretraining_samples_equal_todays(clips, tmp_path, sampling):
    if sampling == "dense":
        items = [ClipItem("a", "ssv2.webm"), ClipItem("b", "ssv2.webm")]
        size, spans = (96, 64), [range(0, 40, 2)] * 2
    else:
        items = [ClipItem("a", "epic.mp4", (5, 100)), ClipItem("b", "epic.mp4", (130, 290))]
        size, spans = (160, 96), [range(5, 100, 2), range(130, 290, 2)]
    rng = np.random.default_rng(0)
    records = [record(i.video, size, s, rng) for i, s in zip(items, spans, strict=True)]
    write_records(tmp_path / "boxes.jsonl.gz", records)
    boxes = CachedBoxes(str(tmp_path / "boxes.jsonl.gz"), HASH)
    options = dict(frames=16, rate=2, size=56, sampling=sampling, train=True, seed=3, flip=True)
    today = TodayClips(items, clips, boxes, **options)
    new = VideoClips(items, clips, boxes, **options)
    for epoch in range(3):
        today.set_epoch(epoch)
        new.set_epoch(epoch)
        for a, b in zip(today.__getitems__([0, 1]), new.__getitems__([0, 1]), strict=True):
            assert a["box"] == b["box"] == "cached"
            assert torch.equal(a["frame_indices"], b["frame_indices"])
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["valid"], b["valid"])
            assert a["valid"].any()
            assert torch.equal(a["video"], b["video"])
