"""Tests for mofo.shared.refine: the camera's motion, the residual flow and the refined region
boxes."""

from __future__ import annotations

import pytest
import torch

import mofo.shared.refine
from mofo.shared.refine import (
    dominant_motion,
    refine_boxes,
    refine_region_boxes,
    refine_regions,
    residual_flow,
)

H, W = 32, 40
PATCH = [12, 10, 20, 18]  # x1, y1, x2, y2 of the mover, exclusive
HALO = [8, 6, 24, 22]  # its region's box from the motion-boundary map: 4 px too wide each side


def grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) pixel coordinates x, y as float32."""
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32, device=device),
        torch.arange(W, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return xs, ys


def camera_flow(device: torch.device, kind: str, frames: int = 1) -> torch.Tensor:
    """(T, 2, H, W) flow of a static, panning or zooming camera."""
    xs, ys = grid(device)
    if kind == "static":
        u, v = torch.zeros_like(xs), torch.zeros_like(ys)
    elif kind == "pan":
        u, v = torch.full_like(xs, 3.0), torch.full_like(ys, -1.5)
    elif kind == "zoom":  # 3 % per frame about the frame centre
        u, v = 0.03 * (xs - (W - 1) / 2), 0.03 * (ys - (H - 1) / 2)
    else:
        raise AssertionError(kind)
    return torch.stack((u, v))[None].repeat(frames, 1, 1, 1)


def with_mover(flow: torch.Tensor, box: list[int], motion: tuple[float, float]) -> torch.Tensor:
    """The flow with a mover's own motion added on ``box`` in every frame."""
    out = flow.clone()
    x1, y1, x2, y2 = box
    out[:, 0, y1:y2, x1:x2] += motion[0]
    out[:, 1, y1:y2, x1:x2] += motion[1]
    return out


# --------------------------------------------------------------------------- dominant_motion


def test_dominant_motion_shape_and_dtype(device: torch.device) -> None:
    flow = torch.randn(3, 2, H, W, device=device)
    affine = dominant_motion(flow)
    assert affine.shape == (3, 2, 3)
    assert affine.dtype == torch.float32
    assert affine.device.type == device.type


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_dominant_motion_recovers_the_camera_despite_a_mover(
    device: torch.device, kind: str
) -> None:
    flow = with_mover(camera_flow(device, kind), PATCH, (2.0, 0.0))
    expected = {
        "static": [[0, 0, 0], [0, 0, 0]],
        "pan": [[0, 0, 3.0], [0, 0, -1.5]],
        "zoom": [[0.03, 0, -0.03 * (W - 1) / 2], [0, 0.03, -0.03 * (H - 1) / 2]],
    }[kind]
    torch.testing.assert_close(
        dominant_motion(flow)[0].cpu(),
        torch.tensor(expected, dtype=torch.float32),
        rtol=0,
        atol=1e-4,
    )


def test_residual_of_a_camera_flow_is_zero_off_the_mover(device: torch.device) -> None:
    flow = with_mover(camera_flow(device, "zoom", frames=2), PATCH, (2.0, -1.0))
    residual = residual_flow(flow)
    assert residual.shape == (2, 2, H, W)
    x1, y1, x2, y2 = PATCH
    mover = torch.zeros(H, W, dtype=torch.bool, device=device)
    mover[y1:y2, x1:x2] = True
    assert float(residual[:, :, ~mover].abs().max()) < 1e-4
    torch.testing.assert_close(
        residual[:, :, mover].mean(dim=2).cpu(), torch.tensor([[2.0, -1.0]] * 2)
    )


# --------------------------------------------------------------------------- refine_regions


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_mover_region_shrinks_to_the_mover(device: torch.device, kind: str) -> None:
    """A square moving by (2, 0): its loose region box shrinks to the square, whatever the
    camera does. With ``lead=0`` the flow is exactly the mover's."""
    flow = with_mover(camera_flow(device, kind), PATCH, (2.0, 0.0))
    assert refine_regions(flow, [[HALO]], lead=0.0) == [[PATCH]]


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_lead_pulls_back_the_flow_ahead_of_the_mover(device: torch.device, kind: str) -> None:
    """TV-L1 gives the mover's flow to the 2 px it moves onto next (right of it): the default
    ``lead=1`` pulls the box's right side back by the mover's own 2 px."""
    x1, y1, x2, y2 = PATCH
    flow = with_mover(camera_flow(device, kind), [x1, y1, x2 + 2, y2], (2.0, 0.0))
    assert refine_regions(flow, [[HALO]], lead=0.0) == [[[x1, y1, x2 + 2, y2]]]
    assert refine_regions(flow, [[HALO]]) == [[PATCH]]
    # moving up-left instead: the left and top sides are ahead
    flow = with_mover(camera_flow(device, kind), [x1 - 2, y1 - 1, x2, y2], (-2.0, -1.0))
    assert refine_regions(flow, [[HALO]]) == [[PATCH]]


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_region_moving_with_the_camera_is_dropped(device: torch.device, kind: str) -> None:
    """No mover: a region the map found (say at a strong edge) has no residual motion."""
    flow = camera_flow(device, kind, frames=2)
    assert refine_regions(flow, [[HALO], [HALO, [0, 0, 10, 10]]]) == [[], []]
    assert refine_boxes(flow, [[HALO], [HALO]]) == [None, None]


def test_slow_region_is_dropped_under_min_motion(device: torch.device) -> None:
    """0.1 px/frame is under the default 0.004 × 32 = 0.128 px; kept when min_motion is 0."""
    flow = with_mover(camera_flow(device, "pan"), PATCH, (0.1, 0.0))
    assert refine_regions(flow, [[HALO]]) == [[]]
    assert refine_regions(flow, [[HALO]], min_motion=0.0, lead=0.0) == [[PATCH]]


def test_each_region_refined_on_its_own_frame(device: torch.device) -> None:
    """Two movers in frame 0 (one 4× slower: a shared threshold would lose it), one in frame 1,
    none in frame 2; order is kept, and refine_boxes is their union per frame."""
    other = [28, 4, 34, 12]
    flow = camera_flow(device, "zoom", frames=3)
    flow[:1] = with_mover(with_mover(flow[:1], PATCH, (2.0, 0.0)), other, (0.0, 0.5))
    flow[1:2] = with_mover(flow[1:2], other, (0.0, 0.5))
    regions = [[HALO, [25, 1, 37, 15]], [[25, 1, 37, 15]], []]
    assert refine_regions(flow, regions, lead=0.0) == [[PATCH, other], [other], []]
    assert refine_boxes(flow, regions, lead=0.0) == [[12, 4, 34, 18], other, None]


def test_given_affine_is_used(device: torch.device) -> None:
    flow = with_mover(camera_flow(device, "pan"), PATCH, (2.0, 0.0))
    affine = dominant_motion(flow)
    assert refine_regions(flow, [[HALO]], lead=0.0, affine=affine) == [[PATCH]]
    # told the camera moves like the mover, its surroundings are what moves: nothing is cut
    like_mover = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 0.0, -1.5]]], device=device)
    assert refine_regions(flow, [[HALO]], lead=0.0, affine=like_mover) == [[HALO]]


def test_no_regions_gives_no_boxes(device: torch.device) -> None:
    flow = camera_flow(device, "static", frames=2)
    assert refine_regions(flow, [[], []]) == [[], []]
    assert refine_boxes(flow, [[], []]) == [None, None]


def test_regions_refined_in_chunks_equal_at_once(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    flow = torch.randn(4, 2, H, W, device=device)
    regions = [[[2, 3, 30, 25], [10, 10, 20, 20]], [[0, 0, W, H]], [], [[5, 5, 9, 9]]]
    settings = {"min_motion": 0.0}
    whole = refine_regions(flow, regions, **settings)
    monkeypatch.setattr(mofo.shared.refine, "_CHUNK_PIXELS", H * W)  # one region per chunk
    assert refine_regions(flow, regions, **settings) == whole


def test_refine_region_boxes_returns_levels(device: torch.device) -> None:
    flow = with_mover(camera_flow(device, "static"), PATCH, (3.0, 4.0))
    boxes = torch.tensor([HALO, [0, 0, 6, 6]], device=device)
    refined, level, gain = refine_region_boxes(
        residual_flow(flow), torch.tensor([0, 0], device=device), boxes, lead=0.0
    )
    assert refined.tolist()[0] == PATCH
    assert refined[1, 2] == refined[1, 0]  # nothing moves there: an empty box
    torch.testing.assert_close(level.cpu(), torch.tensor([5.0, 0.0]))
    assert gain.tolist() == [float("inf")] * 2  # no evidence given: nothing to tell


def grow_scene(device: torch.device, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fast part (PATCH, 2 px/frame) with a slow part attached on its right (0.3 px/frame,
    x 20-26, reaching past the region box HALO at 24), and a halo of the same slow flow on its left
    (x 8-12) that the frames do not bear out; flow and evidence (T = 1)."""
    flow = with_mover(camera_flow(device, kind), PATCH, (2.0, 0.0))
    flow = with_mover(flow, [20, 12, 26, 16], (0.3, 0.0))
    flow = with_mover(flow, [8, 10, 12, 18], (0.3, 0.0))
    evidence = torch.full((1, H, W), -0.2, device=device)
    evidence[:, 10:18, 12:20] = 0.5  # the fast part
    evidence[:, 12:16, 20:26] = 0.3  # the slow part
    evidence[:, 16:18, 20:26] = float("nan")  # untextured: cannot tell, never grown into
    return flow, evidence


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_growth_takes_slow_parts_the_frames_bear_out(device: torch.device, kind: str) -> None:
    """The half-level cut keeps only the fast part; growth by evidence adds the slow part the
    frames bear out (within the region box), never the halo they do not, nor pixels that cannot
    tell; ``grow_margin`` pulls grown sides back (the evidence is a windowed correlation)."""
    flow, evidence = grow_scene(device, kind)
    settings = {"lead": 0.0, "min_evidence": 0.0, "evidence": evidence}
    assert refine_regions(flow, [[HALO]], **settings) == [[PATCH]]
    grow = {**settings, "grow_evidence": 0.1, "grow_fraction": 0.1}
    assert refine_regions(flow, [[HALO]], **grow) == [[[12, 10, 24, 18]]]
    assert refine_regions(flow, [[HALO]], **grow, grow_margin=2) == [[[12, 10, 22, 18]]]
    # a margin never cuts into what the half-level cut kept
    assert refine_regions(flow, [[HALO]], **grow, grow_margin=9) == [[PATCH]]
    # the slow part under grow_fraction of the region's level (0.3 < 0.2 × 2) is not grown into
    assert refine_regions(flow, [[HALO]], **{**grow, "grow_fraction": 0.2}) == [[PATCH]]
    # evidence it does not reach: nothing grows
    assert refine_regions(flow, [[HALO]], **{**grow, "grow_evidence": 0.4}) == [[PATCH]]


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_growth_needs_motion_above_the_frames_noise(device: torch.device, kind: str) -> None:
    """``grow_noise`` sets a floor on growth at that many times the frame's median residual:
    a clean frame (median 0) grows into the slow part as before; a frame whose flow carries
    +/-0.1 px of noise everywhere (a checkerboard, which no camera explains) grows into it only
    while the floor stays under the slow part's 0.3 +/- 0.1 px."""
    flow, evidence = grow_scene(device, kind)
    settings = {"lead": 0.0, "min_evidence": 0.0, "evidence": evidence}
    grow = {**settings, "grow_evidence": 0.1, "grow_fraction": 0.1}
    assert refine_regions(flow, [[HALO]], **grow, grow_noise=4.0) == [[[12, 10, 24, 18]]]
    xs, ys = grid(device)
    noisy = flow.clone()
    noisy[:, 0] += 0.1 * (1 - 2 * ((xs + ys) % 2))  # +/-0.1 px, alternating pixel by pixel
    # without a floor the noisy frame grows as the clean one does
    assert refine_regions(noisy, [[HALO]], **grow) == [[[12, 10, 24, 18]]]
    assert refine_regions(noisy, [[HALO]], **grow, grow_noise=1.5) == [[[12, 10, 24, 18]]]
    # 5 x 0.1 px = 0.5 px: over every pixel of the slow part, none joins
    assert refine_regions(noisy, [[HALO]], **grow, grow_noise=5.0) == [[PATCH]]


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_growth_reaches_past_the_region_box(device: torch.device, kind: str) -> None:
    """``grow_reach`` lets growth leave the region's box by up to that many pixels, through
    moving pixels the frames bear out or cannot tell (a flat stretch of the mover), never through
    still ones; only pixels that bear their motion out set the grown sides."""
    flow, evidence = grow_scene(device, kind)
    settings = {"lead": 0.0, "min_evidence": 0.0, "evidence": evidence}
    grow = {**settings, "grow_evidence": 0.1, "grow_fraction": 0.1}
    # the slow part reaches x 26, past the box's side at 24
    assert refine_regions(flow, [[HALO]], **grow, grow_reach=1) == [[[12, 10, 25, 18]]]
    assert refine_regions(flow, [[HALO]], **grow, grow_reach=2) == [[[12, 10, 26, 18]]]
    assert refine_regions(flow, [[HALO]], **grow, grow_reach=6) == [[[12, 10, 26, 18]]]

    # a flat, moving stretch (x 26-30: no texture, so no evidence) joins a told part beyond it
    bridged = with_mover(flow, [26, 12, 33, 16], (0.3, 0.0))
    evidence[:, 12:16, 26:30] = float("nan")
    evidence[:, 12:16, 30:33] = 0.3
    far = {**grow, "evidence": evidence}
    assert refine_regions(bridged, [[HALO]], **far, grow_reach=9) == [[[12, 10, 33, 18]]]
    # out of reach: the stretch itself sets no side
    assert refine_regions(bridged, [[HALO]], **far, grow_reach=5) == [[[12, 10, 26, 18]]]
    # a still stretch does not carry the growth
    still = with_mover(flow, [30, 12, 33, 16], (0.3, 0.0))
    assert refine_regions(still, [[HALO]], **far, grow_reach=9) == [[[12, 10, 26, 18]]]


def flat_beside_scene(device: torch.device, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The mover (PATCH, 3 px/frame) and TV-L1's spill of its flow over flat pixels below it
    (y 18-22, where the frames cannot tell), with the mover's pixels bearing their motion out."""
    flow = with_mover(camera_flow(device, kind), PATCH, (3.0, 0.0))
    flow = with_mover(flow, [12, 18, 20, 22], (3.0, 0.0))
    evidence = torch.full((1, H, W), -0.2, device=device)
    evidence[:, 10:18, 12:20] = 0.4
    evidence[:, 18:22, 12:20] = float("nan")
    return flow, evidence


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_pixels_that_cannot_tell_do_not_set_the_sides(device: torch.device, kind: str) -> None:
    """Flat pixels carrying the mover's flow stay out of the box once enough pixels bear the
    motion out; with too few telling pixels (min_pixels) the moving pixels set it as before."""
    flow, evidence = flat_beside_scene(device, kind)
    settings = {"lead": 0.0, "min_evidence": 0.0, "evidence": evidence}
    assert refine_regions(flow, [[HALO]], **settings) == [[[12, 10, 20, 22]]]  # no pixel cut
    assert refine_regions(flow, [[HALO]], **settings, pixel_evidence=0.05) == [[PATCH]]
    # growth joins telling pixels only: the flat spill stays out
    grown = refine_regions(flow, [[HALO]], **settings, pixel_evidence=0.05, grow_evidence=0.1)
    assert grown == [[PATCH]]
    residual = residual_flow(flow)
    frame, boxes = torch.tensor([0], device=device), torch.tensor([HALO], device=device)
    few, _, _ = refine_region_boxes(
        residual, frame, boxes, lead=0.0, evidence=evidence, pixel_evidence=0.05, min_pixels=65
    )
    assert few.tolist() == [[12, 10, 20, 22]]  # 64 telling pixels < 65: the moving ones count


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_untestable_region_kept_only_where_no_region_bore_its_motion_out(
    device: torch.device, kind: str
) -> None:
    """A moving region too flat for the frames to tell (evidence NaN: flat sky taking TV-L1's
    guess) is dropped beside a mover whose motion the frames bear out, kept on the benefit of
    the doubt where no region of its frame is borne out, and dropped everywhere when evidence is
    required."""
    flat, flat_region = [28, 4, 34, 12], [26, 2, 36, 14]
    flow = camera_flow(device, kind, frames=3)
    flow = with_mover(with_mover(flow, PATCH, (3.0, 0.0)), flat, (0.0, 2.0))
    evidence = torch.full((3, H, W), -0.2, device=device)
    evidence[:, 10:18, 12:20] = 0.4  # the mover bears its motion out...
    evidence[2, 10:18, 12:20] = -0.1  # ...but not in frame 2, where the camera explains it
    evidence[:, 2:14, 26:36] = float("nan")  # the flat region cannot tell
    regions = [[HALO, flat_region], [flat_region], [HALO, flat_region]]
    settings = {"lead": 0.0, "min_evidence": 0.05, "evidence": evidence}
    assert refine_regions(flow, regions, **settings) == [[PATCH], [flat], [flat]]
    assert refine_regions(flow, regions, **settings, require_evidence=True) == [[PATCH], [], []]


def test_fine_evidence_cuts_pixels_and_evidence_keeps_regions(device: torch.device) -> None:
    """The region's mean (drop or keep) reads ``evidence``; the pixel cut reads
    ``fine_evidence``."""
    flow = with_mover(camera_flow(device, "static"), HALO, (3.0, 0.0))  # the whole halo moves
    coarse = torch.full((1, H, W), 0.3, device=device)  # a wide window: all of it bears out
    fine = torch.full((1, H, W), -0.1, device=device)
    fine[:, 10:18, 12:20] = 0.3  # a small window: only the mover's pixels
    settings = {"lead": 0.0, "min_evidence": 0.2, "evidence": coarse, "pixel_evidence": 0.05}
    assert refine_regions(flow, [[HALO]], **settings) == [[HALO]]
    assert refine_regions(flow, [[HALO]], **settings, fine_evidence=fine) == [[PATCH]]
    # the region's own mean under min_evidence on the coarse map: dropped whatever the fine says
    low = {**settings, "evidence": torch.full_like(coarse, 0.1), "fine_evidence": fine}
    assert refine_regions(flow, [[HALO]], **low) == [[]]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(2, H, W), (1, 3, H, W), (2, 2, H)])
def test_bad_flow_shape_raises_and_names_it(shape: tuple[int, ...]) -> None:
    flow = torch.zeros(shape)
    for call in (
        lambda: dominant_motion(flow),
        lambda: residual_flow(flow),
        lambda: refine_regions(flow, [[HALO]]),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert str(shape) in str(info.value)


def test_bad_affine_and_region_count_raise() -> None:
    flow = torch.zeros(2, 2, H, W)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        residual_flow(flow, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="regions for 2 frames, got 1"):
        refine_regions(flow, [[HALO]])
    with pytest.raises(ValueError, match=r"\[x1, y1, x2, y2\]"):
        refine_regions(flow, [[HALO], [[1, 2, 3]]])


def test_bad_residual_and_boxes_raise_and_name_shapes() -> None:
    frame = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(1, 32, 40\)"):
        refine_region_boxes(torch.zeros(1, H, W), frame, torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        refine_region_boxes(torch.zeros(1, 2, H, W), frame, torch.zeros(1, 3))


# --------------------------------------------------------------------------- devices


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    flow = with_mover(camera_flow(torch.device("cpu"), "zoom", frames=3), PATCH, (2.0, 1.0))
    flow = flow + 0.05 * torch.randn_like(flow)
    regions = [[HALO], [HALO, [25, 1, 37, 15]], []]
    torch.testing.assert_close(
        dominant_motion(flow.cuda()).cpu(), dominant_motion(flow), rtol=0, atol=1e-4
    )
    assert refine_regions(flow.cuda(), regions) == refine_regions(flow, regions)


# --------------------------------------------------------------------------- sub-pixel sides


def test_bilinear_crops_read_the_flow_as_an_upsampled_frame(device: torch.device) -> None:
    """A crop read at ``scale`` samples a pixel is that part of the frame upsampled bilinearly
    (half-pixel centres, edges clamped); at one sample a pixel it is the pixels, exactly."""
    torch.manual_seed(0)
    maps = torch.randn(2, 2, H, W, device=device)
    crops = torch.tensor([[0, 0, 10, 8], [25, 20, W, H]], device=device)  # frame edges on both
    frame = torch.tensor([1, 0], device=device)
    for scale in (1, 4):
        xs, ys, valid = mofo.shared.refine._crop_grid(crops, scale, H, W)
        got = mofo.shared.refine._sample_bilinear(maps, frame, xs, ys)
        whole = torch.nn.functional.interpolate(
            maps, scale_factor=scale, mode="bilinear", align_corners=False
        )
        for r, (x1, y1, x2, y2) in enumerate(crops.tolist()):
            h, w = (y2 - y1) * scale, (x2 - x1) * scale
            assert valid[r].sum() == h * w and valid[r, :h, :w].all()
            want = whole[frame[r], :, y1 * scale : y2 * scale, x1 * scale : x2 * scale]
            torch.testing.assert_close(got[r, :, :h, :w], want)
        if scale == 1:
            assert torch.equal(got[0, :, :8, :10], maps[1, :, 0:8, 0:10])
    near = mofo.shared.refine._sample_nearest(maps[:, 0], frame, crops, 4, (32, 60))
    assert torch.equal(near[1, :12:4, :15:4], maps[0, 0, 20:23, 25:29])


def test_subpixel_sides_fall_where_the_flow_crosses_the_cut(device: torch.device) -> None:
    """A mover whose outermost columns move only in part (1 and 3 px a frame against 4: TV-L1
    on a pixel the edge crosses) crosses the half-level cut (2) at x = 10.83 on the left and
    21.83 on the right (linearly between pixel centres). Whole pixels keep the right column and
    drop the left (11 and 22); at 4 samples a pixel both sides land on the quarter pixel
    before the crossing (10.75 and 21.75), and the sharp top and bottom stay where they are."""
    flow = camera_flow(device, "static")
    flow[0, 0, 8:17, 11:21] = 4.0
    flow[0, 0, 8:17, 10] = 1.0
    flow[0, 0, 8:17, 21] = 3.0
    settings = {"lead": 0.0, "affine": torch.zeros(1, 2, 3, device=device)}
    assert refine_regions(flow, [[HALO]], **settings) == [[[11, 8, 22, 17]]]
    [[box]] = refine_regions(flow, [[HALO]], subpixel=4, **settings)
    assert box == [10.75, 8.0, 21.75, 17.0]
    with pytest.raises(ValueError, match="subpixel"):
        refine_regions(flow, [[HALO]], subpixel=0, **settings)


@pytest.mark.parametrize("kind", ["static", "pan", "zoom"])
def test_subpixel_keeps_whole_pixel_movers_and_growth(device: torch.device, kind: str) -> None:
    """A mover with sharp edges keeps its whole-pixel box at any sampling, under any camera;
    growth and its margin count in pixels, not samples."""
    flow = with_mover(camera_flow(device, kind), PATCH, (3.0, 4.0))
    for subpixel in (1, 2, 4):
        assert refine_regions(flow, [[HALO]], lead=0.0, subpixel=subpixel) == [[PATCH]]
    flow, evidence = grow_scene(device, kind)
    grow = {"lead": 0.0, "min_evidence": 0.0, "evidence": evidence, "grow_evidence": 0.1}
    grow |= {"grow_fraction": 0.1, "grow_margin": 2}
    assert refine_regions(flow, [[HALO]], **grow, subpixel=4) == [[[12, 10, 22, 18]]]


def test_like_sized_chunks_partition_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mofo.shared.refine, "_CHUNK_PIXELS", 1000)
    sizes = [[30, 30], [5, 5], [10, 10], [6, 4], [20, 2]]
    chunks = mofo.shared.refine._like_sized_chunks(sizes)
    assert sorted(k for c in chunks for k in c) == list(range(len(sizes)))
    assert chunks[0][:2] == [3, 1]  # smallest first
    for chunk in chunks:
        w = max(sizes[k][0] for k in chunk)
        h = max(sizes[k][1] for k in chunk)
        assert len(chunk) == 1 or len(chunk) * w * h <= 1000
    assert [0] in chunks  # a crop over the budget goes alone
