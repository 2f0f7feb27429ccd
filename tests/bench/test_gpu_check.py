"""The GPU benchmarks' pure helpers: byte counts and bandwidth names (bench/gpu_flow.py), box
comparison (bench/gpu_pipeline.py) and crops of real frames (bench/realframes.py). The GPU check's
own tooling (gpu/report.py, gpu/pack.py) is tested in tests/gpu/test_tooling.py."""

from __future__ import annotations

import numpy as np
import pytest

from bench.gpu_flow import (
    INNER_BYTES_PER_PIXEL,
    fixed_replays,
    inner_bytes,
    nominal_bandwidth,
    parse_size,
    size_label,
)
from bench.gpu_pipeline import box_difference
from bench.realframes import centre_crop, cover_short_side
from mofo.shared.flow.tvl1 import pyramid_sizes
from mofo.shared.params import FlowParams


def test_inner_iteration_moves_16_floats_per_pixel() -> None:
    # read u, px, py, grad_i (2 channels each), grad_sq, rho_c; write u, px, py
    assert INNER_BYTES_PER_PIXEL == 4 * (10 + 6)


def test_inner_bytes_sums_levels_times_replays() -> None:
    replays = {(10, 20): 3, (8, 16): 5}
    expected = (3 * 10 * 20 + 5 * 8 * 16) * 30 * 4 * INNER_BYTES_PER_PIXEL
    assert inner_bytes(replays, batch=4, inner_iterations=30) == expected
    assert inner_bytes({}, batch=4, inner_iterations=30) == 0


def test_fixed_replays_are_warps_times_outer_at_every_level() -> None:
    params = FlowParams(stopping="fixed")
    replays = fixed_replays(224, 224, params)
    assert list(replays) == pyramid_sizes(224, 224, params.scales, params.scale_step)
    assert set(replays.values()) == {params.warps * params.outer_iterations}


@pytest.mark.parametrize(
    ("name", "bandwidth"),
    [
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H100 PCIe", 2.0e12),
        ("NVIDIA H100 NVL", 3.9e12),
        ("Tesla T4", None),
    ],
)
def test_nominal_bandwidth(name: str, bandwidth: float | None) -> None:
    assert nominal_bandwidth(name) == bandwidth


def test_sizes_are_height_by_width_and_labelled_width_first() -> None:
    assert parse_size("240x320") == (240, 320)
    assert size_label((240, 320)) == "320x240"


def test_box_difference_counts_equal_frames_and_worst_coordinate() -> None:
    a = [[0, 0, 10, 10], None, [5, 5, 9, 9]]
    b = [[0, 0, 10, 12], None, [5, 5, 9, 9]]
    assert box_difference(a, b) == {"equal": 2, "frames": 3, "max_coordinate_diff": 2}
    assert box_difference([None], [[0, 0, 1, 1]])["max_coordinate_diff"] == 10**6


def test_cover_short_side_then_centre_crop() -> None:
    # carphone is 176x144: to cover 320x240 its short side must become 262 (width 320 + 2)
    short = cover_short_side(144, 176, 240, 320)
    assert short == 262 and round(176 * short / 144) >= 320
    assert cover_short_side(272, 640, 224, 224) == 224
    frames = np.arange(2 * 6 * 8 * 3).reshape(2, 6, 8, 3).astype(np.uint8)
    crop = centre_crop(frames, 4, 4)
    assert crop.shape == (2, 4, 4, 3) and crop.flags.c_contiguous
    assert (crop == frames[:, 1:5, 2:6]).all()
    with pytest.raises(ValueError, match="cannot crop 6x8 frames to 7x4"):
        centre_crop(frames, 7, 4)


def test_regions_figures_compare_two_devices() -> None:
    """The CUDA branch's bookkeeping, with the CPU standing in for the GPU."""
    import torch

    from bench.gpu_pipeline import regions_figures

    flow = torch.zeros(3, 2, 48, 48)
    flow[:, 0, 16:32, 16:32] = 3.0  # a moving square
    out = regions_figures(flow, [4], reps=1, fast=torch.device("cpu"))
    row = out["4"]
    assert row["frames"] == 4 and row["size"] == [48, 48]
    assert row["cuda"]["frames_with_box"] == row["cpu"]["frames_with_box"] == 4
    assert row["cuda_labels_equal_cpu_labels_same_maps"]["equal"] == 4
    assert row["cuda_path_vs_cpu_path"] == {"equal": 4, "frames": 4, "max_coordinate_diff": 0}
    assert row["maps_max_abs_diff"] == 0.0
