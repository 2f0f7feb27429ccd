"""``mofo synth``: a synthetic motion dataset in SSV2's layout whose classes are motion directions
and whose boxes are known; the cache build's reader takes it, and motion boxes find the mover."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mofo.shared.decode import read_clip
from mofo.shared.params import MotionParams
from mofo.shared.pipeline import analyse_clip
from mofo.shared.record import box_iou, union_box
from mofo.shared.sources import open_source
from mofo.training.synth import DIRECTIONS, make_clip, write_dataset
from testkit.server import MOFO


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert write_dataset(out, clips=10, frames=12, seed=3) == {"train": 8, "validation": 2}
    return out


def test_the_layout_is_ssv2s(dataset):
    labels = json.loads((dataset / "labels.json").read_text())
    assert sorted(labels.values(), key=int) == [str(k) for k in range(8)]
    train = open_source(dataset / "train.json")
    assert train.kind == "ssv2" and len(train.items) == 8
    assert all((train.root / item.path).is_file() for item in train.items)
    entry = json.loads((dataset / "validation.json").read_text())[0]
    assert set(entry) == {"id", "label", "template", "placeholders"}
    assert entry["template"] in labels


def test_each_clip_moves_its_box_in_its_class_direction(dataset):
    for line in (dataset / "boxes.jsonl").read_text().splitlines():
        truth = json.loads(line)
        first, last = np.array(truth["frames"][0]), np.array(truth["frames"][-1])
        dx, dy = (last[:2] - first[:2]).tolist()
        angle = math.degrees(math.atan2(dy, dx)) % 360
        expected = truth["label"] * 45
        assert min(abs(angle - expected), 360 - abs(angle - expected)) < 15, truth
        for x1, y1, x2, y2 in truth["frames"]:
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        clip = read_clip(dataset / "videos" / f"{truth['video']}.webm", MotionParams(short_side=64))
        assert clip.frames.shape == (12, 64, 64, 3)


def test_motion_boxes_find_the_mover(dataset):
    ious = []
    for line in (dataset / "boxes.jsonl").read_text().splitlines()[:5]:
        truth = json.loads(line)
        clip = dataset / "videos" / f"{truth['video']}.webm"
        found = analyse_clip(clip, MotionParams(short_side=64, num_frames=6))
        ious.append(box_iou(found.record.clip_box, union_box(truth["frames"])))
    assert np.median(ious) > 0.4, ious


def test_the_same_seed_gives_the_same_clip_and_others_differ():
    a, b = make_clip(5, seed=1), make_clip(5, seed=1)
    assert np.array_equal(a.frames, b.frames) and a.boxes == b.boxes
    assert not np.array_equal(a.frames, make_clip(5, seed=2).frames)
    assert {make_clip(k).label for k in range(40)} == set(range(len(DIRECTIONS)))


def test_the_command_writes_once(tmp_path):
    out = tmp_path / "synth"
    run = [MOFO, "synth", str(out), "--clips", "4", "--frames", "4"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 training and 1 validation clips" in done.stderr
    again = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a dataset" in again.stderr


def test_long_clips_slow_down_to_stay_in_the_frame():
    for index in range(16):
        clip = make_clip(index, size=64, frames=40, seed=3)
        for x1, y1, x2, y2 in clip.boxes:
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        assert clip.boxes[0] != clip.boxes[-1]  # it still moves


def test_the_truth_reads_like_cached_records(dataset, tmp_path):
    from mofo.shared.cache_files import CacheFileError, FileBoxCache, write_records
    from mofo.training.synth import TRUTH_PARAMS, truth_records

    records = truth_records(dataset)
    truth = [json.loads(line) for line in (dataset / "boxes.jsonl").read_text().splitlines()]
    assert [r.video for r in records] == [t["video"] for t in truth]
    first = records[0]
    assert first.frames == truth[0]["frames"] and first.clip_box == union_box(truth[0]["frames"])
    assert first.frame_indices == list(range(len(truth[0]["frames"]))) and not first.fallback
    path = tmp_path / "truth.jsonl.gz"
    assert write_records(path, reversed(records)) == len(records)
    again = tmp_path / "again.jsonl.gz"
    write_records(again, records)
    assert path.read_bytes() == again.read_bytes()  # key order, no time in the header
    cache = FileBoxCache(path)
    assert cache.get_many([records[1].video, "nope"], TRUTH_PARAMS) == [records[1], None]
    with pytest.raises(CacheFileError, match=r"written as \.jsonl\.gz"):
        write_records(tmp_path / "truth.parquet", records)
