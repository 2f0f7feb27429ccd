"""The camera fitted where the flow can be trusted (mofo.shared.refine.flow_confidence) and a
region's box cut to the pixels its motion is seen in (pixel evidence), on exact images. End to
end, on a scene of the box-quality benchmark: tests/bench/test_box_quality_camera.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofo.shared.record import box_iou
from mofo.shared.refine import dominant_motion, flow_confidence, refine_regions
from tests.images import texture

H, W = 48, 64


# --------------------------------------------------------------------------- flow confidence


def test_confidence_is_high_on_texture_and_nil_on_flat_and_on_a_plain_edge(
    device: torch.device,
) -> None:
    image = torch.full((1, 1, H, W), 100.0)
    image[0, 0, :, :24] = torch.from_numpy(texture(H, 24))  # textured left
    image[0, 0, :, 44:] = 200.0  # a vertical edge at x = 44, flat each side
    conf = flow_confidence(image.to(device), scale=2.0).cpu()
    assert conf.shape == (1, H, W)
    assert float(conf[0, 4:-4, 4:20].min()) == 1.0  # capped at 1
    assert float(conf[0, :, 30:38].max()) == 0.0  # flat
    # an edge pins the flow across it, not along it: the smaller eigenvalue is nil there
    assert float(conf[0, 4:-4, 42:47].max()) < 1e-3
    half = flow_confidence(image.to(device), scale=1e9).cpu()
    assert 0 < float(half[0, 20, 10]) < 1e-6  # the scale divides before the cap


def test_confidence_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(T, 1, H, W\)"):
        flow_confidence(torch.zeros(2, 3, 8, 8))


def test_a_weighted_fit_ignores_the_flow_of_flat_sky(device: torch.device) -> None:
    """The camera pans 1 px right; over a flat upper half TV-L1's smoothness term invents a
    flow of its own (here 1.5 px left). The plain fit is pulled off; weighted by confidence it
    is the camera's motion."""
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = 1.0
    flow[:, 0, : H // 2 + 4] = -1.5  # more than half the frame: the plain fit follows it
    gray = torch.full((1, 1, H, W), 120.0)
    gray[0, 0, H // 2 + 4 :] = torch.from_numpy(texture(H // 2 - 4, W))
    flow, gray = flow.to(device), gray.to(device)
    plain = dominant_motion(flow).cpu()
    weighted = dominant_motion(flow, weight=flow_confidence(gray, scale=2.0)).cpu()
    model = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    assert float((plain - model).abs().max()) > 0.5
    torch.testing.assert_close(weighted, model, atol=1e-3, rtol=0)


def test_a_weight_of_ones_is_the_plain_fit(device: torch.device) -> None:
    flow = torch.randn(2, 2, H, W, generator=torch.Generator().manual_seed(0)).to(device)
    ones = torch.ones(2, H, W, device=device)
    torch.testing.assert_close(dominant_motion(flow, weight=ones), dominant_motion(flow))
    with pytest.raises(ValueError, match="weight"):
        dominant_motion(flow, weight=torch.ones(1, H, W))


# --------------------------------------------------------------------------- pixel evidence


def test_pixel_evidence_cuts_a_box_to_the_pixels_that_move() -> None:
    """A textured 16-px square moves 3 px on a still textured wall; TV-L1-like flow spreads its
    motion 8 px below it. The region's box covers both; the per-pixel test keeps the square."""
    wall, patch = texture(H, W), texture(16, 16, seed=1)
    first, second = wall.copy(), wall.copy()
    first[12:28, 20:36] = patch
    second[12:28, 23:39] = patch
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0, 12:36, 20:36] = 3.0  # the square and a band below it that does not move
    frames = tuple(torch.from_numpy(f.astype(np.float32))[None, None] for f in (first, second))
    settings = {"lead": 0.0, "min_motion": 0.0, "frames": frames, "min_evidence": 0.05}
    region = [[[18, 10, 40, 38]]]
    assert refine_regions(flow, region, **settings) == [[[20, 12, 36, 36]]]
    [[box]] = refine_regions(flow, region, pixel_evidence=0.05, **settings)
    assert box_iou(box, [20, 12, 36, 28]) > 0.8
    assert box[3] <= 31  # the band below is gone, but for the correlation window's reach
