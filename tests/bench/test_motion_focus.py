"""The motion-focus benchmark's clips and report: the class is the actor's motion pattern, the
scene gives the class away in training (and the matched split) but not in the shuffled split,
every clip is the same for the same seed; the per-split scores and the paired test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.motion_focus import (
    PATTERNS,
    PHOTOS,
    SPLITS,
    Look,
    Spec,
    actor_path,
    class_and_photo,
    clip_rng,
    grid,
    make_clip,
    merged,
    only,
    paired,
    photos,
    scene_figures,
    split_of,
    split_top1,
    summary,
    write_dataset,
)

SIZE, FRAMES = 64, 16


def _path(pattern: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return actor_path(pattern, FRAMES, SIZE, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", range(5))
def test_each_class_is_its_motion_pattern(seed: int) -> None:
    names = dict(enumerate(PATTERNS))
    assert len(PATTERNS) == 8 and len(PHOTOS) == 8
    look = Look()
    # right, left: x moves half the frame, y and the side stay.
    for pattern, sign in ((0, 1), (1, -1)):
        x, y, side = _path(pattern, seed)
        assert names[pattern] in ("right", "left")
        assert np.all(sign * np.diff(x) > 0)
        assert x[-1] - x[0] == pytest.approx(sign * SIZE * look.span)
        assert np.ptp(y) == 0 and np.ptp(side) == 0
    # circles: the same radius all along; clockwise on screen (y down) turns positively.
    for pattern, sign in ((2, 1), (3, -1)):
        x, y, side = _path(pattern, seed)
        cx, cy = np.random.default_rng(seed).uniform(0.35, 0.65, 2) * SIZE
        radius = np.hypot(x - cx, y - cy)
        np.testing.assert_allclose(radius, SIZE * look.radius)
        turn = (x[:-1] - cx) * (y[1:] - cy) - (y[:-1] - cy) * (x[1:] - cx)
        assert np.all(sign * turn > 0)
    # shaking: two periods along one axis only, back where it started.
    for pattern, moving in ((4, 0), (5, 1)):
        path = _path(pattern, seed)
        assert np.ptp(path[1 - moving]) == 0 and np.ptp(path[2]) == 0
        assert path[moving][-1] == pytest.approx(path[moving][0])
        crossings = np.sum(np.diff(np.sign(path[moving] - path[moving].mean())) != 0)
        assert 3 <= crossings <= 5
    # growing, shrinking: the side goes from 0.6 to 1.6 of the actor's side, or back.
    for pattern, (first, last) in ((6, (0.6, 1.6)), (7, (1.6, 0.6))):
        x, y, side = _path(pattern, seed)
        assert np.ptp(x) == 0 and np.ptp(y) == 0
        assert side[0] == pytest.approx(first * SIZE * look.actor)
        assert side[-1] == pytest.approx(last * SIZE * look.actor)


def test_the_clip_box_follows_the_actor() -> None:
    spec = Spec(index=3, split="train", size=SIZE, frames=FRAMES, bias=0.9, seed=0)
    _, pattern, video, boxes = make_clip(spec, photos(SIZE))
    rng = clip_rng(spec)
    assert (pattern, class_and_photo(spec, rng)[0]) == (pattern, pattern)
    assert video.shape == (FRAMES, SIZE, SIZE, 3) and video.dtype == np.uint8
    assert len(boxes) == FRAMES
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        assert 2 <= x2 - x1 <= math.ceil(1.6 * SIZE * Look().actor) + 1


def _scenes(split: str, count: int, bias: float = 0.9, seed: int = 0) -> list[tuple[int, int]]:
    specs = [Spec(i, split, SIZE, FRAMES, bias, seed) for i in range(count)]
    return [class_and_photo(s, clip_rng(s)) for s in specs]


@pytest.mark.parametrize("split", ["train", "matched"])
def test_training_and_matched_clips_mostly_show_their_class_scene(split: str) -> None:
    scenes = _scenes(split, 2000)
    share = np.mean([pattern == photo for pattern, photo in scenes])
    assert 0.88 <= share <= 0.92  # bias 0.9; binomial std over 2000 clips: 0.007
    assert {p for p, _ in scenes} == set(range(8))
    assert _scenes(split, 200, bias=1.0) == [(p, p) for p, _ in _scenes(split, 200, bias=1.0)]
    assert all(p != photo for p, photo in _scenes(split, 200, bias=0.0))


def test_the_shuffled_split_draws_the_scene_independently_of_the_class() -> None:
    scenes = _scenes("validation", 4000)
    counts = np.zeros((8, 8), int)
    for pattern, photo in scenes:
        counts[pattern, photo] += 1
    share = np.trace(counts) / counts.sum()
    assert 0.10 <= share <= 0.15  # 1/8, binomial std 0.005
    # every class on every photo, each about an eighth of the class's clips
    per_class = counts / counts.sum(1, keepdims=True)
    assert per_class.min() > 0.07 and per_class.max() < 0.19
    assert _scenes("validation", 500, bias=1.0) == _scenes("validation", 500, bias=0.0)


def test_clips_are_the_same_for_the_same_seed_and_differ_across_seeds() -> None:
    one = Spec(7, "validation", 32, 8, 0.9, seed=0)
    a, b = make_clip(one, photos(32)), make_clip(one, photos(32))
    assert a[:2] == b[:2] and a[3] == b[3]
    np.testing.assert_array_equal(a[2], b[2])
    other = make_clip(Spec(7, "validation", 32, 8, 0.9, seed=1), photos(32))
    assert not np.array_equal(a[2], other[2])


def test_the_dataset_files(tmp_path: Path) -> None:
    write_dataset(tmp_path, clips=10, size=32, frames=8, bias=0.9, seed=0)
    assert [split_of(i) for i in range(5)] == ["validation", "matched", "train", "train", "train"]
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels == {f"Something {p}": str(k) for k, p in enumerate(PATTERNS)}
    truth = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    splits = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in ("train", *SPLITS)}
    assert [len(splits[s]) for s in ("train", *SPLITS)] == [6, 2, 2]
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation == splits["validation"] + splits["matched"]
    by_id = {t["video"]: t for t in truth}
    for split, entries in splits.items():
        for e in entries:
            index = int(e["id"]) - 200000
            assert split_of(index) == split
            assert labels[e["template"]] == str(by_id[e["id"]]["label"])
            spec = Spec(index, split, 32, 8, 0.9, 0)
            assert by_id[e["id"]]["label"] == class_and_photo(spec, clip_rng(spec))[0]
            assert (tmp_path / "videos" / f"{e['id']}.webm").stat().st_size > 0


def test_split_scores_and_the_paired_test(tmp_path: Path) -> None:
    (tmp_path / "validation.json").write_text(json.dumps([{"id": "a"}, {"id": "b"}]))
    (tmp_path / "matched.json").write_text(json.dumps([{"id": "c"}, {"id": "d"}]))
    lines = [
        {"video": "a", "labels": {"action": 1}, "action": [[1, 0.9], [0, 0.1]]},
        {"video": "b", "labels": {"action": 2}, "action": [[1, 0.9], [2, 0.1]]},
        {"video": "c", "labels": {"action": 3}, "action": [[3, 0.6], [2, 0.4]]},
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    # d was not scored: it counts as wrong
    assert split_top1(tmp_path / "p.jsonl", tmp_path) == {
        "validation_top1": 50.0,
        "matched_top1": 50.0,
    }

    def row(kind: str, head: str, seed: int, top1: float) -> dict:
        return {
            "pretraining": kind,
            "head": head,
            "heads": 3,
            "depth": 1,
            "seed": seed,
            "validation_top1": top1,
            "matched_top1": 90.0,
            "validation_reads_scene": 95.0,
            "validation_top1_scene_differs": 1.0,
            "matched_top1_scene_differs": 0.0,
        }

    rows = [row("tube", "mean", s, 20.0 + s) for s in range(4)]
    rows += [row("mofo0.75", "mca", s, 25.0 + 2 * s) for s in range(3)]
    report = summary(rows)
    assert report["settings"]["tube + mean"]["n"] == 4
    assert report["settings"]["mofo0.75 + mca"]["validation"]["mean"] == 27.0
    assert report["settings"]["mofo0.75 + mca"]["validation"]["std"] == 2.0
    main = report["paired"][0]
    assert (main["a"], main["b"], main["pairs"]) == ("mofo0.75 + mca", "tube + mean", 3)
    assert main["mean_difference"] == 6.0 and main["std_difference"] == 1.0
    assert main["t_pvalue"] == 0.0091  # t = 6 / (1 / √3) = 10.4 on 2 degrees of freedom
    assert main["wilcoxon_pvalue"] == 0.25  # 3 of 3 positive: 2 / 2³
    assert paired(rows, "mofo0.75 + mca", "tube + mean", "matched")["mean_difference"] == 0.0


def test_the_grid_runs_the_main_comparison_first() -> None:
    chains = grid([0, 1, 2, 3, 4], [0])
    main = [(c.name, c.seed, f.head) for c in chains[:10] for f in c.finetunings]
    assert len(main) == 30
    assert main[:6] == [
        ("tube", 0, "mean"),
        ("tube", 0, "mca"),
        ("tube", 0, "mca_literal"),
        ("mofo0.75", 0, "mean"),
        ("mofo0.75", 0, "mca"),
        ("mofo0.75", 0, "mca_literal"),
    ]
    sweep = [(c.name, f.heads, f.depth) for c in chains[10:] for f in c.finetunings]
    assert sweep == [
        ("mofo0.5", 3, 1),
        ("mofo0.9", 3, 1),
        ("mofo0.75", 1, 1),
        ("mofo0.75", 1, 2),
        ("mofo0.75", 3, 2),
    ]


def test_the_grid_can_run_fewer_heads() -> None:
    chains = grid([0, 1], [], heads_run=("mean", "mca"))
    assert [(c.name, c.seed, [f.head for f in c.finetunings]) for c in chains] == [
        ("tube", 0, ["mean", "mca"]),
        ("mofo0.75", 0, ["mean", "mca"]),
        ("tube", 1, ["mean", "mca"]),
        ("mofo0.75", 1, ["mean", "mca"]),
    ]


def test_only_cuts_the_grid_to_the_named_settings() -> None:
    chains = only(grid([0, 1], [0]), ["mofo0.75 + mca h3d2", "tube + mca_literal"])
    assert [
        (c.name, c.seed, [(f.head, f.heads, f.depth) for f in c.finetunings]) for c in chains
    ] == [
        ("tube", 0, [("mca_literal", 3, 1)]),
        ("tube", 1, [("mca_literal", 3, 1)]),
        ("mofo0.75", 0, [("mca", 3, 2)]),
    ]
    with pytest.raises(SystemExit, match="no run in the grid"):
        only(grid([0], []), ["mofo0.75 + mca h3d2"])  # no sweep: the setting is not in the grid


def test_merged_rows_keep_earlier_runs_and_take_this_runs_in_their_place() -> None:
    def row(pretraining: str, head: str, seed: int, top1: float) -> dict:
        return {
            "pretraining": pretraining,
            "head": head,
            "heads": 3,
            "depth": 1,
            "seed": seed,
            "validation_top1": top1,
        }

    earlier = [
        row("tube", "mean", 0, 10.0),
        row("tube", "mca", 0, 20.0),
        row("tube", "mean", 1, 11.0),
    ]
    rows = merged(earlier, [row("tube", "mca", 0, 25.0), row("tube", "mca_literal", 0, 15.0)])
    assert [(r["head"], r["seed"], r["validation_top1"]) for r in rows] == [
        ("mean", 0, 10.0),
        ("mean", 1, 11.0),
        ("mca", 0, 25.0),
        ("mca_literal", 0, 15.0),
    ]


def test_the_control_runs_tube_and_mean_pooling_only() -> None:
    chains = grid([0, 1], [0], control=True)
    assert [(c.name, c.seed, [f.head for f in c.finetunings]) for c in chains] == [
        ("tube", 0, ["mean"]),
        ("tube", 1, ["mean"]),
    ]


def test_the_look_scales_the_actor_the_camera_and_the_distractors() -> None:
    small, big = Look(actor=0.1, span=0.2, radius=0.1), Look(actor=0.3, span=0.6, radius=0.25)
    for pattern in range(len(PATTERNS)):
        a = actor_path(pattern, FRAMES, SIZE, np.random.default_rng(1), small)
        b = actor_path(pattern, FRAMES, SIZE, np.random.default_rng(1), big)
        np.testing.assert_allclose(b[2], a[2] * 3)  # the side
        assert np.ptp(b[0]) + np.ptp(b[1]) >= np.ptp(a[0]) + np.ptp(a[1])
    # No camera, no distractor moving: away from the actor's boxes, frames differ by noise only;
    # a panning camera or walking distractors change them.
    change = {}
    for name, look in (
        ("still", Look(pan=0.0, walk=0.0)),
        ("pan", Look(pan=0.05, walk=0.0)),
        ("walk", Look(pan=0.0, walk=0.05)),
    ):
        spec = Spec(index=4, split="train", size=SIZE, frames=FRAMES, bias=0.9, seed=0, look=look)
        _, _, video, boxes = make_clip(spec, photos(SIZE))
        outside = np.ones((SIZE, SIZE), bool)
        for x1, y1, x2, y2 in boxes:
            outside[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = False
        diff = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(-1)
        change[name] = float(diff[:, outside].mean())
    assert change["still"] < 3.0  # the noise (σ 2 per channel)
    assert change["pan"] > 4.0 and change["walk"] > 4.0


def test_scene_figures_tell_a_scene_reader_from_a_motion_reader(tmp_path: Path) -> None:
    specs = {s: [Spec(i, s, 0, 0, 0.9, 0) for i in range(400) if split_of(i) == s] for s in SPLITS}
    for split, mine in specs.items():
        (tmp_path / f"{split}.json").write_text(
            json.dumps([{"id": str(200000 + s.index)} for s in mine])
        )
    scenes = {
        str(200000 + s.index): class_and_photo(s, clip_rng(s))
        for mine in specs.values()
        for s in mine
    }
    differs = [i for i, (pattern, photo) in scenes.items() if pattern != photo]
    assert len(differs) > 60  # the shuffled split's 7/8 and the matched split's tenth

    def answers(pick: int) -> Path:
        path = tmp_path / f"p{pick}.jsonl"
        path.write_text(
            "\n".join(
                json.dumps({"video": i, "labels": {"action": c}, "action": [[(c, p)[pick], 1.0]]})
                for i, (c, p) in scenes.items()
            )
        )
        return path

    motion = scene_figures(answers(0), tmp_path, 0.9)  # answers the class
    assert motion["validation_top1_scene_differs"] == 100.0
    assert motion["matched_top1_scene_differs"] == 100.0
    assert 5.0 <= motion["validation_reads_scene"] <= 20.0  # the photos that match by chance
    scene = scene_figures(answers(1), tmp_path, 0.9)  # answers the photo's class
    assert scene["validation_reads_scene"] == 100.0
    assert scene["validation_top1_scene_differs"] == 0.0
    assert scene["matched_top1_scene_differs"] == 0.0
