"""Box geometry of the record: mapping working-size boxes to source pixels."""

from __future__ import annotations

from mofo.shared.record import scale_box


def test_scale_box_rounds_each_side_to_the_nearest_source_pixel() -> None:
    # 128-px working frame of a 224-px source: sx = sy = 1.75
    assert scale_box([10, 20, 30, 41], 1.75, 1.75, 300, 224) == [18, 35, 53, 72]
    # 17.5 → 18 and 52.5 → 53: halves go up on both sides alike
    assert scale_box([10, 30, 30, 30 + 1], 1.75, 1.0, 300, 224) == [18, 30, 53, 31]
    # an integer scale is exact
    assert scale_box([3, 4, 9, 11], 2.0, 2.0, 96, 64) == [6, 8, 18, 22]


def test_scale_box_clamps_to_the_frame_and_keeps_a_pixel() -> None:
    # a box to the working frame's edges reaches the source's (300 × 224 works at 172 × 128)
    assert scale_box([0, 0, 172, 128], 300 / 172, 224 / 128, 300, 224) == [0, 0, 300, 224]
    assert scale_box([-2, -1, 180, 130], 300 / 172, 224 / 128, 300, 224) == [0, 0, 300, 224]
    # a one-pixel box at a scale under 1 would round to nothing: it keeps one source pixel
    assert scale_box([5, 5, 6, 6], 0.4, 0.4, 50, 50) == [2, 2, 3, 3]
    assert scale_box([124, 0, 125, 1], 0.4, 0.4, 50, 50) == [49, 0, 50, 1]
