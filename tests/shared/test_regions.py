"""Tests for mofo.shared.regions: smoothing, border suppression, thresholds, labels, region
boxes."""

from __future__ import annotations

import pytest
import torch

from mofo.shared.regions import (
    label_regions,
    region_stats,
    smooth,
    strongest_region_boxes,
    suppress_border,
    threshold_masks,
)

# --------------------------------------------------------------------------- smooth


def test_smooth_keeps_shape_and_mass(device: torch.device) -> None:
    maps = torch.zeros(2, 1, 21, 23, device=device)
    maps[0, 0, 10, 11] = 1.0
    maps[1, 0, 5:8, 6:9] = 2.0
    out = smooth(maps, 1.5)
    assert out.shape == maps.shape
    # kernel ±3σ lies inside the frame: the sum is kept (the kernel is normalised); rtol 1e-3
    # leaves room for TF32 convolutions on CUDA
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), maps.sum(dim=(1, 2, 3)), rtol=1e-3, atol=0)
    # an impulse spreads symmetrically and keeps its peak in place
    assert int(out[0, 0].argmax()) == 10 * 23 + 11
    torch.testing.assert_close(out[0, 0], out[0, 0].flip(0).flip(1), rtol=0, atol=1e-4)
    assert 0 < float(out[0, 0].max()) < 1.0
    # it stays within ±3σ (5 px), and frames are smoothed apart
    assert float(out[0, 0, :4].abs().max()) < 1e-6
    torch.testing.assert_close(out[:1], smooth(maps[:1], 1.5), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_smooth_sigma_zero_is_identity(device: torch.device, sigma: float) -> None:
    maps = torch.rand(2, 1, 9, 11, device=device)
    assert torch.equal(smooth(maps, sigma), maps)


def test_smooth_constant_stays_constant_on_tiny_frames(device: torch.device) -> None:
    """A sigma too large for the frame is clipped to the largest kernel kornia accepts; the
    replicated border keeps a constant map constant."""
    maps = torch.full((1, 1, 6, 8), 3.0, device=device)
    out = smooth(maps, 3.0)
    torch.testing.assert_close(out, maps, rtol=1e-3, atol=0)  # TF32 room on CUDA


@pytest.mark.parametrize("shape", [(2, 2, 8, 8), (8, 8), (1, 8, 8)])
def test_smooth_bad_shape_raises_and_names_it(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as info:
        smooth(torch.zeros(shape), 1.0)
    assert str(shape) in str(info.value)


@pytest.mark.gpu
def test_smooth_cuda_matches_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    maps = torch.rand(2, 1, 17, 19, generator=torch.Generator().manual_seed(0))
    expected = smooth(maps, 1.2)
    # as run (TF32 convolutions allowed): close
    torch.testing.assert_close(smooth(maps.cuda(), 1.2).cpu(), expected, rtol=2e-3, atol=1e-3)
    # in full float32: the same computation
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.testing.assert_close(smooth(maps.cuda(), 1.2).cpu(), expected)


# --------------------------------------------------------------------------- suppress_border


def test_suppress_border_zeros_exactly_the_margin(device: torch.device) -> None:
    maps = torch.ones(2, 1, 8, 10, device=device)
    out = suppress_border(maps, 2)
    expected = torch.zeros_like(maps)
    expected[..., 2:-2, 2:-2] = 1.0
    assert torch.equal(out, expected)
    assert torch.equal(maps, torch.ones(2, 1, 8, 10, device=device))  # input untouched


def test_suppress_border_zero_margin_is_identity(device: torch.device) -> None:
    maps = torch.rand(1, 1, 5, 6, device=device)
    assert torch.equal(suppress_border(maps, 0), maps)


# --------------------------------------------------------------------------- threshold_masks


def block_map(device: torch.device, value: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """(1, 1, 10, 12): ``offset`` everywhere, plus ``value`` on rows 3..5, columns 4..7."""
    maps = torch.full((1, 1, 10, 12), offset, device=device)
    maps[..., 3:6, 4:8] += value
    return maps


def block_mask(device: torch.device) -> torch.Tensor:
    mask = torch.zeros(1, 10, 12, dtype=torch.bool, device=device)
    mask[:, 3:6, 4:8] = True
    return mask


def test_threshold_selects_exactly_the_block(device: torch.device) -> None:
    masks = threshold_masks(block_map(device), rel=0.3, floor=0.02)
    assert masks.shape == (1, 10, 12)
    assert masks.dtype == torch.bool
    assert torch.equal(masks, block_mask(device))


def test_threshold_peak_under_floor_is_empty(device: torch.device) -> None:
    masks = threshold_masks(block_map(device, value=0.01), rel=0.3, floor=0.02)
    assert not bool(masks.any())


def test_threshold_ignores_a_constant_offset(device: torch.device) -> None:
    """Zoom adds a roughly constant boundary everywhere; the median absorbs it."""
    masks = threshold_masks(block_map(device, value=1.0, offset=5.0), rel=0.3, floor=0.02)
    assert torch.equal(masks, block_mask(device))


def test_threshold_rel_level(device: torch.device) -> None:
    """Level = median + rel·(max − median): a 0.5 bump passes at rel 0.3, not at rel 0.6."""
    maps = block_map(device)
    maps[..., 8, 1] = 0.5
    low = threshold_masks(maps, rel=0.3, floor=0.02)
    high = threshold_masks(maps, rel=0.6, floor=0.02)
    assert bool(low[0, 8, 1]) and not bool(high[0, 8, 1])
    assert torch.equal(high, block_mask(device))


def test_threshold_is_per_frame(device: torch.device) -> None:
    maps = torch.cat((block_map(device, 1.0), block_map(device, 10.0)))
    maps[1, 0, 8, 1] = 2.0  # under 0.3 · 10 in frame 1, would pass in frame 0
    masks = threshold_masks(maps, rel=0.3, floor=0.02)
    assert torch.equal(masks[0], block_mask(device)[0])
    assert torch.equal(masks[1], block_mask(device)[0])


# --------------------------------------------------------------------------- label_regions


def two_frame_masks(device: torch.device) -> torch.Tensor:
    masks = torch.zeros(2, 5, 6, dtype=torch.bool, device=device)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal pair: one region (8-connected)
    masks[0, 4, 2] = True  # bottom row of frame 0 ...
    masks[0, 2, 4] = masks[0, 3, 4] = True  # vertical pair
    masks[1, 0, 2] = True  # ... directly "above" this one in frame 1: never joined
    masks[1, 3, 0] = masks[1, 4, 1] = True  # diagonal pair
    return masks


def test_label_regions_8_connected_unique_per_batch(device: torch.device) -> None:
    masks = two_frame_masks(device)
    labels = label_regions(masks)
    assert labels.shape == masks.shape
    assert labels.dtype == torch.int64
    assert labels.device.type == device.type
    lab = labels.cpu()
    assert torch.equal(lab > 0, masks.cpu())
    assert set(lab.unique().tolist()) == {0, 1, 2, 3, 4, 5}  # five regions, numbered 1..5
    assert lab[0, 0, 0] == lab[0, 1, 1]  # diagonal join
    assert lab[0, 2, 4] == lab[0, 3, 4]
    assert lab[1, 3, 0] == lab[1, 4, 1]
    assert lab[0, 4, 2] != lab[1, 0, 2]  # nothing crosses frames
    frame0 = set(lab[0].unique().tolist()) - {0}
    frame1 = set(lab[1].unique().tolist()) - {0}
    assert len(frame0) == 3 and len(frame1) == 2
    assert not frame0 & frame1


def test_label_regions_empty(device: torch.device) -> None:
    labels = label_regions(torch.zeros(3, 4, 5, dtype=torch.bool, device=device))
    assert torch.equal(labels.cpu(), torch.zeros(3, 4, 5, dtype=torch.int64))


@pytest.mark.gpu
def test_label_regions_cuda_same_partition_as_cpu() -> None:
    masks = two_frame_masks(torch.device("cpu"))
    masks[0, 2:4, 0:3] = True
    cpu = label_regions(masks)
    cuda = label_regions(masks.cuda()).cpu()
    pairs = set(zip(cpu.flatten().tolist(), cuda.flatten().tolist(), strict=True))
    assert len(pairs) == len(set(cpu.flatten().tolist())) == len(set(cuda.flatten().tolist()))


@pytest.mark.parametrize(
    "masks",
    [torch.zeros(2, 4, 5), torch.zeros(4, 5, dtype=torch.bool), torch.zeros(1, 1, 4, 5) > 0],
)
def test_label_regions_bad_input_raises(masks: torch.Tensor) -> None:
    with pytest.raises(ValueError) as info:
        label_regions(masks)
    assert str(tuple(masks.shape)) in str(info.value)


# --------------------------------------------------------------------------- region_stats


def test_region_stats_hand_values(device: torch.device) -> None:
    labels = torch.tensor(
        [
            [[1, 1, 0, 0], [0, 1, 0, 2], [0, 0, 0, 2]],
            [[0, 0, 0, 0], [3, 3, 3, 0], [0, 0, 0, 0]],
        ],
        device=device,
    )
    weights = torch.tensor(
        [
            [[1.0, 2.0, 0.0, 0.0], [0.0, 3.0, 0.0, 4.0], [9.0, 0.0, 0.0, 5.0]],
            [[7.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        ],
        device=device,
    )
    stats = region_stats(labels, weights)
    assert stats.shape == (4, 7)
    assert stats.dtype == torch.float64
    # frame, area, mass, x1, y1, x2, y2 (exclusive)
    assert stats[1:].tolist() == [
        [0, 3, 6, 0, 0, 2, 2],
        [0, 2, 9, 3, 1, 4, 3],
        [1, 3, 3, 0, 1, 3, 2],
    ]


# --------------------------------------------------------------------------- strongest boxes


def blobs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 12, 16) labels and weights: A mass 45, B mass 48, C largest area but mass 2."""
    labels = torch.zeros(1, 12, 16, dtype=torch.int64)
    weights = torch.zeros(1, 12, 16)
    labels[0, 1:4, 1:4], weights[0, 1:4, 1:4] = 1, 5.0  # A: box [1, 1, 4, 4]
    labels[0, 8:11, 10:14], weights[0, 8:11, 10:14] = 2, 4.0  # B: box [10, 8, 14, 11]
    labels[0, 0:4, 7:12], weights[0, 0:4, 7:12] = 3, 0.1  # C: box [7, 0, 12, 4], area 20
    return labels.to(device), weights.to(device)


def test_strongest_two_regions_by_mass(device: torch.device) -> None:
    labels, weights = blobs(device)
    assert strongest_region_boxes(labels, weights, regions=2) == [[1, 1, 14, 11]]
    assert strongest_region_boxes(labels, weights, regions=1) == [[10, 8, 14, 11]]
    assert strongest_region_boxes(labels, weights, regions=3) == [[1, 0, 14, 11]]


def test_min_area_drops_a_strong_speck(device: torch.device) -> None:
    labels, weights = blobs(device)
    labels[0, 6, 6], weights[0, 6, 6] = 4, 1000.0
    assert strongest_region_boxes(labels, weights, regions=2, min_area=1) == [[6, 6, 14, 11]]
    assert strongest_region_boxes(labels, weights, regions=2, min_area=2) == [[1, 1, 14, 11]]


def test_frame_without_regions_is_none(device: torch.device) -> None:
    labels, weights = blobs(device)
    empty = torch.zeros_like(labels)
    two = torch.cat((empty, labels))
    assert strongest_region_boxes(two, torch.cat((weights, weights))) == [None, [1, 1, 14, 11]]
    assert strongest_region_boxes(torch.cat((empty, empty)), torch.cat((weights, weights))) == [
        None,
        None,
    ]


def test_frame_with_only_small_regions_is_none(device: torch.device) -> None:
    labels, weights = blobs(device)
    assert strongest_region_boxes(labels, weights, min_area=100) == [None]


def test_strongest_regions_chosen_per_frame(device: torch.device) -> None:
    """Labels numbered across the batch: each frame ranks only its own regions."""
    labels, weights = blobs(device)
    second = torch.where(labels > 0, labels + 3, labels)  # labels 4..6 in frame 1
    weights2 = weights.clone()
    weights2[labels == 3] = 100.0  # C is the strongest in frame 1
    boxes = strongest_region_boxes(torch.cat((labels, second)), torch.cat((weights, weights2)))
    assert boxes == [[1, 1, 14, 11], [7, 0, 14, 11]]


def test_regions_pipeline_end_to_end(device: torch.device) -> None:
    """threshold → label → strongest box on a hand-made map with two bumps and noise-free zeros."""
    maps = torch.zeros(1, 1, 16, 20, device=device)
    maps[..., 2:5, 3:6] = 1.0
    maps[..., 10:13, 14:18] = 0.9
    maps[..., 7, 9] = 0.35  # a weak third speck above threshold
    masks = threshold_masks(maps, rel=0.3, floor=0.02)
    labels = label_regions(masks)
    assert int(labels.max()) == 3
    assert strongest_region_boxes(labels, maps[:, 0], regions=2) == [[3, 2, 18, 13]]


@pytest.mark.parametrize("shape", [(2, 10, 12), (2, 3, 10, 12)])
def test_threshold_bad_shape_raises_and_names_it(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as info:
        threshold_masks(torch.rand(shape), rel=0.3, floor=0.02)
    assert str(shape) in str(info.value)
