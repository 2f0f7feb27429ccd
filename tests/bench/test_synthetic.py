"""Synthetic clips for the box-quality benchmark: ground truth, clipping, determinism, reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.paper_pipeline import opencv_flows, paper_boxes
from bench.synthetic import (
    SCENARIOS,
    Scenario,
    _make_patch,
    _visible_box,
    make_clip,
    write_mp4,
)
from shared.record import box_iou

STATIC_ONE = next(s for s in SCENARIOS if s.camera == "static" and s.movers == 1)


def _pixel_box(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_scenarios_cover_cameras_and_movers() -> None:
    assert {(s.camera, s.movers) for s in SCENARIOS} == {
        (c, m) for c in ("static", "pan", "zoom", "shaky") for m in (1, 2)
    }
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    assert all(1 <= s.min_props <= s.max_props <= 3 for s in SCENARIOS)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gt_box_is_the_mover_and_not_the_props(seed: int) -> None:
    clip = make_clip(STATIC_ONE, seed, flat=True)  # mover red, props blue, background black
    frames = clip.frames.astype(int)
    red = (frames[..., 0] > 127) & (frames[..., 1] < 128) & (frames[..., 2] < 128)
    blue = (frames[..., 2] > 127) & (frames[..., 0] < 128) & (frames[..., 1] < 128)
    assert blue.any(), "every scenario has at least one prop"
    for t, gt in enumerate(clip.boxes):
        mover = _pixel_box(red[t])
        assert gt is not None and mover is not None
        # the GT box is the mover's own pixel box (anti-aliasing moves an edge by at most 1 px)
        assert np.abs(np.subtract(gt, mover)).max() <= 1, (t, gt, mover)
        # props stay out: the frame's prop pixels lie (almost) all outside the GT box
        inside = np.zeros_like(blue[t])
        inside[gt[1] : gt[3], gt[0] : gt[2]] = True
        assert (blue[t] & inside).sum() <= 0.05 * blue[t].sum(), t


def test_flat_render_keeps_the_geometry() -> None:
    textured = make_clip(SCENARIOS[3], 5)
    flat = make_clip(SCENARIOS[3], 5, flat=True)
    assert textured.boxes == flat.boxes
    assert textured.prop_boxes == flat.prop_boxes
    np.testing.assert_array_equal(textured.cameras, flat.cameras)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_boxes_are_clipped_to_the_frame(scenario: Scenario) -> None:
    for seed in range(3):
        clip = make_clip(scenario, seed)
        assert clip.frames.shape == (scenario.frames, scenario.height, scenario.width, 3)
        assert clip.frames.dtype == np.uint8
        per_object = [b for row in clip.mover_boxes + clip.prop_boxes for b in row]
        for box in [*clip.boxes, *per_object]:
            if box is None:
                continue
            x1, y1, x2, y2 = box
            assert all(isinstance(v, int) for v in box)
            assert 0 <= x1 < x2 <= scenario.width and 0 <= y1 < y2 <= scenario.height


def test_visible_box_of_a_mover_half_out_of_frame_is_clipped() -> None:
    patch = _make_patch(20.0, 20.0, "rounded", None, (255.0, 0.0, 0.0), np.random.default_rng(0))
    size = patch.alpha.shape[0]
    # put the patch centre on the frame's left edge and 10 px from the top
    affine = np.array([[1.0, 0.0, -size / 2], [0.0, 1.0, 10 - size / 2]])
    box = _visible_box(patch, affine, (100, 120))
    assert box is not None
    assert box[0] == 0 and box[1] == 0
    assert 18 <= box[2] <= 21 and 28 <= box[3] <= 31
    off = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]])
    assert _visible_box(patch, off, (100, 120)) is None


def test_same_seed_same_clip() -> None:
    a = make_clip(SCENARIOS[-1], 7)
    b = make_clip(SCENARIOS[-1], 7)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.boxes == b.boxes
    c = make_clip(SCENARIOS[-1], 8)
    assert not np.array_equal(a.frames, c.frames)


def test_write_mp4_round_trip(tmp_path: Path) -> None:
    import av

    clip = make_clip(dataclasses.replace(STATIC_ONE, frames=4, height=65, width=81), 0)
    path = write_mp4(clip, tmp_path / "clip.mp4", fps=12)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 4
    assert decoded[0].shape == (66, 82, 3)  # padded to even sides for yuv420p
    error = np.abs(decoded[0][:65, :81].astype(int) - clip.frames[0].astype(int)).mean()
    assert error < 8


def test_paper_reference_finds_the_mover_on_a_static_camera() -> None:
    # Larger movers than the benchmark's: the reference's σ = 30 spreads boxes by ~40 px.
    scenario = dataclasses.replace(STATIC_ONE, frames=3, mover_half=(35.0, 50.0))
    ious = []
    for seed in (0, 1):
        clip = make_clip(scenario, seed)
        flows = opencv_flows(clip.frames)
        assert flows.shape == (2, scenario.height, scenario.width, 2)
        boxes = paper_boxes(clip.frames, flows)
        assert len(boxes) == len(clip.boxes)
        for gt, box in zip(clip.boxes, boxes, strict=True):
            assert gt is not None and box is not None
            cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
            assert box[0] <= cx <= box[2] and box[1] <= cy <= box[3], (gt, box)
            ious.append(box_iou(gt, box))
    assert np.mean(ious) > 0.3, ious
