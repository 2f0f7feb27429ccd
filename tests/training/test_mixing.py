"""Mixup and CutMix: the pixels, the targets and the motion boxes of a mixed batch, on small
hand-made clips whose movers sit where their boxes say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofo.training.mixing import MixSettings, cut_region, mix_batch, smooth_targets

B, T, H, W = 4, 2, 16, 16
CLASSES = {"action": 5}


def _batch():
    video = torch.zeros(B, 3, T, H, W)
    boxes = torch.zeros(B, T, 4)
    for i in range(B):  # clip i: a bright square at (2 + 3i, 2 + 3i), 3 pixels wide
        x = 2 + 3 * i
        video[i, :, :, x : x + 3, x : x + 3] = 1.0
        boxes[i] = torch.tensor([x, x, x + 3, x + 3])
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[3, 1] = False  # the last clip has no box in its second frame
    return video, boxes, valid, {"action": torch.tensor([0, 1, 2, 3])}


def test_smoothed_targets_sum_to_one():
    t = smooth_targets(torch.tensor([2, 0]), 5, 0.1)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert t[0, 2] == pytest.approx(0.92) and t[0, 0] == pytest.approx(0.02)


def test_mixup_blends_pixels_targets_and_unites_boxes():
    video, boxes, valid, labels = _batch()
    settings = MixSettings(cutmix_alpha=0.0)
    mixed, new_boxes, new_valid, targets, info = mix_batch(
        video, boxes, valid, labels, CLASSES, np.random.default_rng(0), settings
    )
    lam = info["lam"]
    assert info["mode"] == "mixup" and 0 < lam < 1
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.flip(0))
    one = smooth_targets(labels["action"], 5, 0.1)
    assert torch.allclose(targets["action"], lam * one + (1 - lam) * one.flip(0))
    # Clip 0 is mixed with clip 3: its box covers both squares (clip 3's only where it has one).
    assert new_boxes[0, 0].tolist() == [2, 2, 14, 14] and new_boxes[0, 1].tolist() == [2, 2, 5, 5]
    assert new_valid.all()


def test_cutmix_pastes_a_region_and_boxes_follow_what_is_visible():
    video, boxes, valid, labels = _batch()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        mixed, new_boxes, new_valid, _, info = mix_batch(
            video, boxes, valid, labels, CLASSES, rng, MixSettings(mixup_alpha=0.0)
        )
        x1, y1, x2, y2 = info["region"]
        lam = info["lam"]
        assert info["mode"] == "cutmix"
        assert lam == pytest.approx(1 - (x2 - x1) * (y2 - y1) / (H * W))
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        expected = torch.where(inside, video.flip(0), video)
        assert torch.equal(mixed, expected)
        # Every lit pixel of a mixed frame lies in that frame's new box.
        for i in range(B):
            for t in range(T):
                lit = mixed[i, 0, t] > 0
                own = valid[i, t]
                other = valid.flip(0)[i, t]
                if not lit.any():
                    continue
                if not (own and other):
                    continue  # a box missing in the source frame cannot be recovered
                assert new_valid[i, t]
                bx1, by1, bx2, by2 = new_boxes[i, t].int().tolist()
                ys, xs = torch.nonzero(lit, as_tuple=True)
                assert xs.min() >= bx1 and xs.max() < bx2 and ys.min() >= by1 and ys.max() < by2


def test_cut_region_sizes_and_no_mixing():
    rng = np.random.default_rng(1)
    x1, y1, x2, y2 = cut_region(100, 100, 0.75, rng)
    assert x2 - x1 <= 50 and y2 - y1 <= 50 and 0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 100
    video, boxes, valid, labels = _batch()
    out = mix_batch(video, boxes, valid, labels, CLASSES, rng, MixSettings(prob=0.0))
    assert out[4]["mode"] == "none" and torch.equal(out[0], video) and torch.equal(out[1], boxes)
    assert torch.allclose(out[3]["action"], smooth_targets(labels["action"], 5, 0.1))
    with pytest.raises(ValueError, match=r"need video \(B, C, T, H, W\) and boxes \(B, T, 4\)"):
        mix_batch(video[0], boxes, valid, labels, CLASSES, rng)


def test_a_box_loses_what_the_pasted_region_covers():
    from mofo.training.mixing import _subtract

    boxes = torch.tensor([[2.0, 2.0, 8.0, 8.0]] * 4)
    regions = [[0, 0, 16, 5], [0, 0, 16, 16], [4, 4, 6, 6], [5, 0, 16, 16]]
    one = torch.ones(1, dtype=torch.bool)
    out = [
        _subtract(boxes[i : i + 1], one, torch.tensor(r, dtype=torch.float32))
        for i, r in enumerate(regions)
    ]
    assert out[0][0].tolist() == [[2, 5, 8, 8]]  # the top rows are gone
    assert out[1][1].tolist() == [False]  # covered whole
    assert out[2][0].tolist() == [[2, 2, 8, 8]]  # a hole: the box still holds the rest
    assert out[3][0].tolist() == [[2, 2, 5, 8]]  # the right columns are gone
