"""A region must move in its pixels, not only in its flow: mofo.shared.refine.camera_evidence and
the regions it drops (a drifting shadow, changing light), on exact images and on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mofo.shared.params import MotionParams, preset_params
from mofo.shared.refine import (
    camera_evidence,
    camera_evidence_maps,
    dominant_motion,
    local_ncc,
    refine_regions,
)
from tests.images import ious_on_and_off, texture

H, W = 48, 64
MOVER = [24, 16, 40, 32]  # x1, y1, x2, y2 in the first frame
STEP = (3, 0)  # the mover's own motion, px per frame


def scene(camera: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured world seen by a camera shifted by ``camera`` between the frames, a textured
    mover moving ``STEP`` more: (first, second) (1, 1, H, W) and the exact flow (1, 2, H, W)."""
    world, patch = texture(H + 20, W + 20), texture(16, 16, seed=1)

    def frame(offset: tuple[int, int], mover_at: tuple[int, int]) -> np.ndarray:
        image = world[10 + offset[1] : 10 + offset[1] + H, 10 + offset[0] : 10 + offset[0] + W]
        image = image.copy()
        x, y = mover_at
        image[y : y + 16, x : x + 16] = patch
        return image

    x1, y1 = MOVER[:2]
    first = frame((0, 0), (x1, y1))
    second = frame(camera, (x1 + STEP[0] - camera[0], y1 + STEP[1] - camera[1]))
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0], flow[:, 1] = -float(camera[0]), -float(camera[1])  # content moves against it
    flow[:, 0, y1 : y1 + 16, x1 : x1 + 16] = STEP[0] - camera[0]
    flow[:, 1, y1 : y1 + 16, x1 : x1 + 16] = STEP[1] - camera[1]
    as_t = [torch.from_numpy(f.astype(np.float32))[None, None] for f in (first, second)]
    return as_t[0], as_t[1], flow


def test_local_ncc_ignores_brightness_and_contrast_and_finds_a_shift(device: torch.device) -> None:
    a = torch.from_numpy(texture(H, W).astype(np.float32))[None, None].to(device)
    same, std = local_ncc(a, 0.6 * a + 30.0, 7)
    torch.testing.assert_close(
        same[..., 4:-4, 4:-4], torch.ones_like(same[..., 4:-4, 4:-4]), atol=1e-4, rtol=0
    )
    assert float(std.min()) > 2.0  # textured everywhere
    shifted, _ = local_ncc(a, torch.roll(a, 2, dims=-1), 7)
    assert float(shifted[..., 4:-4, 4:-4].mean()) < 0.6


@pytest.mark.parametrize("camera", [(0, 0), (2, -1)], ids=["static", "pan"])
def test_a_mover_has_evidence_and_the_background_none(
    device: torch.device, camera: tuple[int, int]
) -> None:
    first, second, flow = (x.to(device) for x in scene(camera))
    affine = dominant_motion(flow)
    evidence = camera_evidence(first, second, flow, affine).cpu()
    assert evidence.shape == (1, H, W)
    x1, y1, x2, y2 = MOVER
    inner = evidence[0, y1 + 4 : y2 - 4, x1 + 4 : x2 - 4]
    assert float(inner.nanmean()) > 0.5  # the camera's motion misses the mover by 3 px
    background = evidence[0, :, :].clone()
    background[y1 - 6 : y2 + 6, x1 - 6 : x2 + 6] = float("nan")  # away from its windows
    assert float(background.nan_to_num(0.0).abs().max()) < 1e-4  # flow == camera there


def test_maps_over_several_windows_share_the_warps(device: torch.device) -> None:
    """One map a window, each equal to :func:`camera_evidence` at that window; a smaller window
    reaches less far past the mover's edge."""
    first, second, flow = (x.to(device) for x in scene((2, -1)))
    affine = dominant_motion(flow)
    maps = camera_evidence_maps(first, second, flow, affine, windows=[0.1, 0.05])
    for window, got in zip([0.1, 0.05], maps, strict=True):
        torch.testing.assert_close(
            got, camera_evidence(first, second, flow, affine, window=window), equal_nan=True
        )
    _, y1, x2, y2 = MOVER
    row = [m[0, (y1 + y2) // 2].cpu().nan_to_num(0.0) for m in maps]  # across the mover's middle
    reach = [int((r[x2:] > 0.05).sum()) for r in row]  # pixels past its right edge that "move"
    assert reach[1] < reach[0]


def test_faint_texture_cannot_tell_under_the_texture_floor(device: torch.device) -> None:
    """A world of faint texture (local std about 3 grey levels over the evidence's window, as
    compression noise or a shadow's soft edge): most of its pixels tell at a floor of 2 grey
    levels and most cannot at 5, where the same world at full contrast tells almost everywhere."""
    first, second, flow = (x.to(device) for x in scene((2, 0)))
    faint = (first - 125.0) * 0.22 + 125.0, (second - 125.0) * 0.22 + 125.0
    affine = dominant_motion(flow)
    std = local_ncc(faint[0], faint[0], 3)[1][0, 0, 8:-8, 8:-8].cpu()  # the evidence's window
    assert 2.0 < float(std.median()) < 5.0
    low, high = (
        camera_evidence(*faint, flow, affine, min_texture=floor)[0, 8:-8, 8:-8].cpu()
        for floor in (2.0, 5.0)
    )
    assert float(low.isnan().float().mean()) < 0.25
    assert float(high.isnan().float().mean()) > 0.7
    sharp = camera_evidence(first, second, flow, affine, min_texture=5.0)[0, 8:-8, 8:-8].cpu()
    assert float(sharp.isnan().float().mean()) < 0.05


def test_flat_pixels_and_pixels_warped_off_the_frame_cannot_tell(device: torch.device) -> None:
    first, second, flow = (x.to(device) for x in scene((2, 0)))
    first[..., :, -12:] = 100.0  # a flat band: no texture to correlate
    # the scene's texture is faint in places (local std 2-5 grey levels): count it here
    affine = dominant_motion(flow)
    evidence = camera_evidence(first, second, flow, affine, min_texture=2.0).cpu()
    assert bool(evidence[0, :, -8:].isnan().all())
    assert bool(evidence[0, :, :2].isnan().all())  # the content moves left: these targets leave
    assert not bool(evidence[0, :, 4:40].isnan().any())
    # the default floor is the product's (MotionParams.refine_texture): fewer pixels tell
    default = camera_evidence(first, second, flow, affine).cpu()
    assert bool(default[~evidence.isnan()].isnan().any())
    assert not bool((evidence.isnan() & ~default.isnan()).any())  # and none that could not


def test_a_drifting_shadow_is_not_a_mover(device: torch.device) -> None:
    """A still wall, a soft shadow moving 3 px between the frames and the flow TV-L1 gives it
    (the shadow's motion on its band): the camera explains the pixels as well, so the region
    goes, unless the test is off; a real mover in the same frame stays."""
    wall = texture(H, W)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)

    def shade(cx: float) -> np.ndarray:
        inside = np.clip((1 - np.hypot((xs - cx) / 14, (ys - 24) / 12)) * 2 + 0.5, 0, 1)
        return 1 - 0.5 * inside * inside * (3 - 2 * inside)

    first = torch.from_numpy((wall * shade(26)).round().astype(np.float32))[None, None]
    second = torch.from_numpy((wall * shade(29)).round().astype(np.float32))[None, None]
    band = [10, 10, 46, 38]
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0, band[1] : band[3], band[0] : band[2]] = 3.0
    first, second, flow = first.to(device), second.to(device), flow.to(device)
    frames = (first, second)
    settings = {"lead": 0.0, "min_motion": 0.0}
    assert refine_regions(flow, [[band]], **settings) != [[]]  # moves in its flow
    assert refine_regions(flow, [[band]], frames=frames, min_evidence=0.05, **settings) == [[]]
    m_first, m_second, m_flow = (x.to(device) for x in scene((0, 0)))
    kept = refine_regions(
        m_flow, [[[20, 12, 44, 36]]], frames=(m_first, m_second), min_evidence=0.05, **settings
    )
    assert kept == [[MOVER]]


def test_bad_frames_are_refused() -> None:
    _, _, flow = scene((0, 0))
    with pytest.raises(ValueError, match="frames of shape"):
        camera_evidence(
            torch.zeros(1, 1, H, W - 1), torch.zeros(1, 1, H, W), flow, dominant_motion(flow)
        )


def shadowed_mover(count: int = 12) -> tuple[np.ndarray, list[list[int]]]:
    """A textured 24-px square crossing a still photo (scikit-image's astronaut, 128 × 96),
    3 px a frame, while a soft shadow (half dark at its core) drifts 3 px a frame across the
    upper half: (frames, the square's boxes)."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = cv2.resize(skimage_data.astronaut(), (128, 96), interpolation=cv2.INTER_AREA)
    patch = texture(24, 24, seed=2)
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float32)
    frames, boxes = [], []
    for t in range(count):
        frame = photo.astype(np.float32)
        x, y = 10 + 3 * t, 60
        frame[y : y + 24, x : x + 24] = patch[..., None]
        inside = np.clip((1 - np.hypot((xs - 70 - 3 * t) / 24, (ys - 22) / 16)) * 2 + 0.5, 0, 1)
        frame *= (1 - 0.5 * inside * inside * (3 - 2 * inside))[..., None]
        frames.append(np.clip(frame, 0, 255).round().astype(np.uint8))
        boxes.append([x, y, x + 24, y + 24])
    return np.stack(frames), boxes


def test_a_drifting_shadow_on_a_photo_leaves_the_mover_its_box() -> None:
    frames, truth = shadowed_mover()
    params = preset_params("balanced", short_side=96)
    assert params.refine_evidence == MotionParams().refine_evidence is not None
    scores = ious_on_and_off(frames, truth, params, refine_evidence=None)
    assert np.mean(scores["off"]) < 0.2  # the shadow's regions join (or beat) the mover's
    assert np.mean(scores["on"]) > 0.5
    assert sum(s > 0.8 for s in scores["on"]) >= 6
