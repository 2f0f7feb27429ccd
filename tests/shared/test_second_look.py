"""A second look at a lower threshold (mofo.shared.regions.admit_second): a slow mover beside a fast
one keeps its box, strips along edges do not join, per frame (so sampling cannot change it)."""

from __future__ import annotations

import numpy as np
import pytest

from mofo.shared.params import MotionParams, preset_params
from mofo.shared.regions import admit_second
from tests.images import ious_on_and_off, texture


def test_a_candidate_joins_a_frame_short_of_regions() -> None:
    fast, slow = [10, 10, 30, 30], [60, 40, 76, 58]
    assert admit_second([[fast], [fast]], [[slow], []], regions=2) == [[fast, slow], [fast]]
    assert admit_second([[], [fast]], [[slow], [slow]], regions=2) == [[slow], [fast, slow]]


def test_no_candidate_joins_a_full_frame_or_overlaps_a_kept_box() -> None:
    a, b = [10, 10, 30, 30], [40, 10, 60, 30]
    assert admit_second([[a, b]], [[[70, 10, 90, 30]]], regions=2) == [[a, b]]
    assert admit_second([[a]], [[[25, 25, 45, 45]]], regions=2) == [[a]]  # the same mover, wider
    assert admit_second([[a]], [[[70, 10, 90, 30], [70, 40, 90, 60]]], regions=2) == [
        [a, [70, 10, 90, 30]]
    ]  # one more, the stronger first


def test_strips_do_not_join() -> None:
    a = [10, 10, 30, 30]
    strip, tall = [60, 0, 64, 40], [60, 0, 70, 40]  # 4 × 40 (10:1) and 10 × 40 (4:1, allowed)
    assert admit_second([[a]], [[strip]], regions=2) == [[a]]
    assert admit_second([[a]], [[strip, tall]], regions=2) == [[a, tall]]
    assert admit_second([[a]], [[tall]], regions=2, max_aspect=3.0) == [[a]]
    kept = [[a]]
    admit_second(kept, [[tall]], regions=2)
    assert kept == [[a]]  # the input is not changed
    with pytest.raises(ValueError, match="candidates for 1 frames"):
        admit_second(kept, [], regions=2)


def fast_and_slow(count: int = 10) -> tuple[np.ndarray, list[list[int]]]:
    """Two textured squares on a still textured wall (160 × 120): one moves 2 px a frame for
    three frames, then 8 px; the other 1 px a frame throughout: (frames, both boxes' union)."""
    wall = texture(120, 160, seed=3)
    fast, slow = texture(24, 24, seed=4), texture(20, 20, seed=5)
    frames, truth = [], []
    x_fast = 10
    for t in range(count):
        frame = wall.copy()
        x_slow = 100 + t
        frame[20:44, x_fast : x_fast + 24] = fast
        frame[80:100, x_slow : x_slow + 20] = slow
        frames.append(np.repeat(frame[..., None], 3, axis=2).astype(np.uint8))
        truth.append([x_fast, 20, x_slow + 20, 100])
        x_fast += 2 if t < 3 else 8
    return np.stack(frames), truth


def test_a_slow_mover_beside_a_fast_one_keeps_its_box() -> None:
    frames, truth = fast_and_slow()
    params = preset_params("balanced", short_side=120)
    assert params.second_threshold_rel == MotionParams().second_threshold_rel is not None
    scores = ious_on_and_off(frames, truth, params, second_threshold_rel=None)
    late = slice(4, 9)  # the fast mover at 8 px a frame: the slow one under 0.3 of its peak
    assert np.mean(scores["off"][late]) < 0.5
    assert np.mean(scores["on"][late]) > 0.7
    assert min(scores["on"][:3]) > 0.7  # where both are strong, as before
