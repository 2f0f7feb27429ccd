"""RandAugment on clips: the geometric operations move the boxes where the pixels went, the
photometric ones leave them, every frame gets the same operations, each drawn operation is
applied half the time, and a seed repeats a draw. Random erasing: per frame, a quarter of the
frames, regions of 2-33 % of a frame filled with noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from mofo.training.augment import (
    GEOMETRIC,
    OPERATIONS,
    RandAugmentSettings,
    _apply,
    rand_augment,
    random_erase,
)

T, S = 3, 48
BOX = torch.tensor([14.0, 10.0, 26.0, 20.0])  # a 12 x 10 bright block


def _clip():
    video = torch.zeros(3, T, S, S)
    video[:, :, 10:20, 14:26] = 1.0
    return video, BOX.repeat(T, 1), torch.ones(T, dtype=torch.bool)


def _lit_box(frame: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(frame > 0.5, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shear_x", 0.3),
        ("shear_y", -0.25),
        ("translate_x", 9.0),
        ("translate_y", -7.0),
        ("rotate", 30.0),
        ("rotate", -17.0),
    ],
)
def test_geometric_operations_move_the_box_with_the_block(name, value):
    video, boxes, _ = _clip()
    clip = tv_tensors.Video(video.permute(1, 0, 2, 3))
    moved = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(S, S))
    out, out_boxes = _apply(name, clip, moved, value)
    lit = _lit_box(out[0, 0])
    box = out_boxes[0].tolist()
    assert box != BOX.tolist()  # it moved
    # The box holds the block (a pixel of slack for resampling) and is about its size.
    assert (
        box[0] <= lit[0] + 1
        and box[1] <= lit[1] + 1
        and box[2] >= lit[2] - 1
        and box[3] >= lit[3] - 1
    )
    assert _iou(box, lit) > 0.6, (box, lit)
    assert torch.equal(out[0], out[-1])  # every frame alike


@pytest.mark.parametrize("name", sorted(set(OPERATIONS) - GEOMETRIC))
def test_photometric_operations_leave_the_boxes(name):
    video, boxes, _ = _clip()
    clip = tv_tensors.Video(video.permute(1, 0, 2, 3) * 0.8 + 0.1)
    moved = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(S, S))
    out, out_boxes = _apply(name, clip, moved, 0.5 if name != "posterize" else 2.0)
    assert torch.equal(out_boxes.as_subclass(torch.Tensor), boxes) and out.shape == clip.shape


def test_a_box_pushed_out_of_the_frame_is_no_longer_a_box():
    video, boxes, valid = _clip()
    clip = tv_tensors.Video(video.permute(1, 0, 2, 3))
    moved = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(S, S))
    _, out_boxes = _apply("translate_x", clip, moved, 40.0)
    from mofo.training import augment

    # rand_augment's clipping and validity on the moved boxes:
    rng = np.random.default_rng(0)
    frames, b, ok, _ = rand_augment(
        video, out_boxes.as_subclass(torch.Tensor), valid, rng, augment.RandAugmentSettings(ops=0)
    )
    assert not ok.any() and torch.equal(b, torch.zeros(T, 4)) and torch.equal(frames, video)


def test_a_seed_repeats_the_draw_and_boxes_stay_inside_the_frame():
    video, boxes, valid = _clip()
    seen, applied = set(), []
    for seed in range(60):
        a = rand_augment(video, boxes, valid, np.random.default_rng(seed))
        b = rand_augment(video, boxes, valid, np.random.default_rng(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3]
        assert len(a[3]) <= 4 and a[0].shape == video.shape
        assert (a[1][:, 0::2] <= S).all() and (a[1][:, 1::2] <= S).all() and (a[1] >= 0).all()
        seen.update(name for name, _ in a[3])
        applied.append(len(a[3]))
    assert len(seen) >= 12  # the operations are drawn from all 15
    assert 1.5 < sum(applied) / len(applied) < 2.5  # each of the 4 applied half the time
    always = RandAugmentSettings(prob=1.0)
    assert len(rand_augment(video, boxes, valid, np.random.default_rng(0), always)[3]) == 4
    never = rand_augment(video, boxes, valid, np.random.default_rng(0), RandAugmentSettings(prob=0))
    assert never[3] == [] and torch.equal(never[0], video)
    with pytest.raises(ValueError, match=r"need video \(C, T, H, W\) and boxes \(T, 4\)"):
        rand_augment(video[0], boxes, valid, np.random.default_rng(0))


def test_unknown_operations_are_refused():
    from mofo.training.augment import RandAugmentSettings

    with pytest.raises(ValueError, match=r"unknown RandAugment operations \['identity'\]"):
        RandAugmentSettings(operations=("rotate", "identity"))
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\]"):
        RandAugmentSettings(prob=1.5)


def test_timms_increasing_operations_at_magnitude_7():
    from mofo.training.augment import _strength

    assert set(OPERATIONS) == {
        "autocontrast",
        "equalize",
        "invert",
        "rotate",
        "posterize",
        "solarize",
        "solarize_add",
        "color",
        "contrast",
        "brightness",
        "sharpness",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
    }
    assert _strength("posterize", 7.0, 224) == 2.0  # 4 - int(2.8) bits kept
    assert _strength("rotate", 7.0, 224) == pytest.approx(21.0)
    assert _strength("translate_x", 7.0, 224) == pytest.approx(0.45 * 224 * 0.7)
    assert _strength("solarize", 7.0, 224) == pytest.approx(0.3)
    clip = tv_tensors.Video(torch.full((1, 3, 4, 4), 0.25))
    out, _ = _apply("invert", clip, None, 0.0)
    assert torch.allclose(out, torch.full_like(out, 0.75))
    out, _ = _apply("solarize_add", clip, None, 0.1)
    assert torch.allclose(out, torch.full_like(out, 0.35))


def test_random_erasing_hides_a_region_of_some_frames_with_noise():
    video = torch.zeros(3, 400, 20, 30)
    out = random_erase(video, np.random.default_rng(0), prob=0.25)
    erased = (out != 0).flatten(2).any(0).any(-1)  # which frames have a region
    assert 0.18 < float(erased.float().mean()) < 0.32  # a quarter of the frames, each alone
    for frame in erased.nonzero().flatten().tolist():
        ys, xs = torch.nonzero((out[:, frame] != 0).any(0), as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert int((out[:, frame] != 0).any(0).sum()) == h * w  # one rectangle
        assert 0.015 * 600 <= h * w <= 0.36 * 600
    assert torch.equal(video, torch.zeros_like(video))  # a copy
    again = random_erase(video, np.random.default_rng(0), prob=0.25)
    assert torch.equal(out, again)
    assert torch.equal(random_erase(video, np.random.default_rng(0), prob=0.0), video)
