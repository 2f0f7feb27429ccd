"""Frame sampling (VideoMAE's dense sampling, Epic's segment-uniform sampling) and the crops,
flips and resizes of training, with the motion boxes moved exactly where their pixels go."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofo.training.transforms import (
    Crop,
    apply_crop,
    centre_crop,
    dense_indices,
    dense_view_indices,
    move_boxes,
    multi_scale_crop,
    random_resized_crop,
    segment_indices,
    segment_view_indices,
    view_crops,
)


def test_dense_indices_are_rate_apart_from_a_random_start():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        idx = dense_indices(100, 16, 2, rng)
        assert len(idx) == 16 and (np.diff(idx) == 2).all() and idx[0] >= 0 and idx[-1] < 100
        starts.add(int(idx[0]))
    assert len(starts) > 10
    short = dense_indices(20, 16, 2, rng)  # 31 frames needed: the last one repeats
    assert short[0] == 0 and short[-1] == 19 and (np.diff(short) >= 0).all()


def test_segment_indices_take_one_frame_from_each_part():
    rng = np.random.default_rng(0)
    idx = segment_indices(100, 260, 16, rng)  # parts of 10 frames
    assert len(idx) == 16 and all(100 + 10 * k <= i < 110 + 10 * k for k, i in enumerate(idx))
    assert list(segment_indices(100, 260, 16, None)) == [104 + 10 * k for k in range(16)]
    tiny = segment_indices(5, 9, 16, rng)  # fewer frames than parts: frames repeat
    assert len(tiny) == 16 and tiny.min() >= 5 and tiny.max() <= 8
    with pytest.raises(ValueError):
        segment_indices(9, 9, 16, rng)


def _frames_with_rectangle(box, width=160, height=120, frames=2) -> torch.Tensor:
    x1, y1, x2, y2 = box
    video = torch.zeros((frames, height, width, 3), dtype=torch.uint8)
    video[:, y1:y2, x1:x2] = 255
    return video


def _bright_box(image: torch.Tensor) -> list[float]:
    """The bounding box [x1, y1, x2, y2) of pixels brighter than half, in a (C, H, W) image."""
    ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("seed", range(12))
def test_boxes_move_with_the_pixels_through_crop_resize_and_flip(seed):
    rng = np.random.default_rng(seed)
    box = [40, 30, 100, 90]
    video = _frames_with_rectangle(box)
    crop = multi_scale_crop(160, 120, 64, rng)
    out = apply_crop(video, crop)
    assert out.shape == (3, 2, 64, 64) and out.dtype == torch.float32
    moved, valid = move_boxes(torch.tensor([box, box]), torch.tensor([True, True]), crop)
    assert valid.all()
    seen = _bright_box(out[:, 0])
    assert np.allclose(moved[0].tolist(), seen, atol=1.5), (crop, moved[0].tolist(), seen)


def test_a_flip_mirrors_the_box():
    crop = Crop(0, 0, 160, 120, 160, flip=True)  # no crop, no resize: only the flip
    moved, _ = move_boxes(torch.tensor([[40.0, 30, 100, 90]]), torch.tensor([True]), crop)
    assert moved[0].tolist() == [60.0, 30 * 160 / 120, 120.0, 90 * 160 / 120]


def test_a_box_outside_the_crop_is_no_longer_a_box():
    crop = Crop(80, 0, 80, 80, 64, flip=False)  # the right half, top
    moved, valid = move_boxes(
        torch.tensor([[0.0, 0, 40, 40], [60.0, 20, 120, 60]]), torch.tensor([True, True]), crop
    )
    assert valid.tolist() == [False, True]
    assert moved[0].tolist() == [0, 0, 0, 0]
    assert moved[1].tolist() == [0.0, 16.0, 32.0, 48.0]  # clipped at the crop's left edge


def test_invalid_boxes_stay_invalid_and_the_centre_crop_is_centred():
    crop = centre_crop(160, 120, 64)
    assert (crop.x, crop.y, crop.w, crop.h, crop.flip) == (20, 0, 120, 120, False)
    _, valid = move_boxes(torch.tensor([[40.0, 30, 100, 90]]), torch.tensor([False]), crop)
    assert not valid.any()


def test_multi_scale_crops_vary_in_size_place_and_flip():
    rng = np.random.default_rng(0)
    crops = [multi_scale_crop(320, 240, 224, rng) for _ in range(200)]
    assert {c.w for c in crops} == {240, 210, 180, 158}
    assert len({(c.x, c.y) for c in crops}) >= 5 and {c.flip for c in crops} == {True, False}
    for c in crops:
        assert c.x >= 0 and c.x + c.w <= 320 and c.y >= 0 and c.y + c.h <= 240


def test_multi_scale_crops_sit_at_videomaes_thirteen_places_and_snap_to_the_size():
    rng = np.random.default_rng(1)
    crops = [multi_scale_crop(320, 240, 224, rng, scales=(0.75,), flip=False) for _ in range(400)]
    assert {(c.w, c.h) for c in crops} == {(180, 180)}
    dx, dy = (320 - 180) // 4, (240 - 180) // 4  # 35, 15
    quarters = {(c.x // dx, c.y // dy) for c in crops}
    assert quarters == {
        (0, 0),
        (4, 0),
        (0, 4),
        (4, 4),
        (2, 2),
        (0, 2),
        (4, 2),
        (2, 4),
        (2, 0),
        (1, 1),
        (3, 1),
        (1, 3),
        (3, 3),
    }
    assert not any(c.flip for c in crops)
    # A side within 3 px of the output size is the output size (256 x 0.875 = 224, 226 -> 224).
    snapped = {multi_scale_crop(300, 258, 224, rng, scales=(0.875,)).w for _ in range(5)}
    assert snapped == {224}


def test_random_resized_crops_cover_8_to_100_percent_at_three_quarters_to_four_thirds():
    rng = np.random.default_rng(2)
    crops = [random_resized_crop(320, 240, 224, rng) for _ in range(300)]
    for c in crops:
        assert c.x >= 0 and c.y >= 0 and c.x + c.w <= 320 and c.y + c.h <= 240
        assert 0.07 <= c.w * c.h / (320 * 240) <= 1.0 and c.size == 224 and not c.flip
        assert 0.7 <= c.w / c.h <= 1.4
    assert min(c.w * c.h for c in crops) < 0.2 * 320 * 240 < max(c.w * c.h for c in crops)
    flips = {random_resized_crop(64, 64, 32, rng, flip=True).flip for _ in range(40)}
    assert flips == {True, False}
    # Ten failed tries (a frame far too tall): the centred crop of the nearest allowed ratio.
    fallback = random_resized_crop(10, 400, 32, np.random.default_rng(0), scale=(0.99, 1.0))
    assert (fallback.x, fallback.w, fallback.h) == (0, 10, 13) and fallback.y == (400 - 13) // 2


# --- test views ---------------------------------------------------------------------------------


def test_dense_views_spread_from_the_first_frame_to_the_last_start():
    assert dense_view_indices(16, 4, 2).tolist() == [4, 6, 8, 10]  # one view: centred
    assert [dense_view_indices(16, 4, 2, v, 2).tolist() for v in range(2)] == [
        [0, 2, 4, 6],
        [9, 11, 13, 15],
    ]
    assert [int(dense_view_indices(20, 4, 2, v, 3)[0]) for v in range(3)] == [0, 7, 13]
    assert dense_view_indices(5, 4, 2, 1, 2).tolist() == [0, 2, 4, 4]  # short: the last repeats
    with pytest.raises(ValueError):
        dense_view_indices(16, 4, 2, 2, 2)


def test_segment_views_take_places_within_each_part():
    one = segment_view_indices(0, 40, 4)
    assert one.tolist() == segment_indices(0, 40, 4, None).tolist() == [4, 14, 24, 34]
    assert segment_view_indices(0, 40, 4, 0, 2).tolist() == [2, 12, 22, 32]
    assert segment_view_indices(0, 40, 4, 1, 2).tolist() == [7, 17, 27, 37]
    assert segment_view_indices(0, 3, 4, 1, 2).tolist() == [0, 0, 1, 2]  # parts under a frame


def test_view_crops_cross_the_long_side():
    assert view_crops(150, 64, 32) == [centre_crop(150, 64, 32)]
    assert [(c.x, c.y, c.w, c.h) for c in view_crops(150, 64, 32, 3)] == [
        (0, 0, 64, 64),
        (43, 0, 64, 64),
        (86, 0, 64, 64),
    ]
    assert [(c.x, c.y) for c in view_crops(48, 100, 16, 2)] == [(0, 0), (0, 52)]  # portrait
    assert all(c.size == 32 and not c.flip for c in view_crops(150, 64, 32, 3))
