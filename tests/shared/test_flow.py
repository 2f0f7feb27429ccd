"""Tests for mofo.shared.flow: gray conversion, the TV-L1 building blocks, and both flow backends.

Building blocks are checked against hand computation or OpenCV on tiny inputs; the solvers on a
smoothed-noise image shifted by a known integer displacement (48×64, a few seconds on CPU).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.flow.tvl1 import (
    centered_gradient,
    divergence,
    forward_gradient,
    median_blur5,
    pyramid_sizes,
    resize_linear,
    tvl1_flow,
    warp_bicubic,
)
from mofo.shared.params import FlowParams

# A 3×4 image for hand-computed derivatives.
X34 = [[0.0, 1.0, 3.0, 6.0], [2.0, 2.0, 5.0, 9.0], [7.0, 4.0, 4.0, 0.0]]
SHIFT = (2, 1)  # (u, v): i1(x + 2, y + 1) = i0(x, y)
MARGIN = 8  # interior crop for flow statistics


def t4(rows: list[list[float]], device: torch.device | str = "cpu") -> torch.Tensor:
    """A (1, 1, H, W) float32 tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float32, device=device)[None, None]


def texture(h: int, w: int, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """Smoothed noise stretched to 0..255 and rounded: what uint8 frames give both backends."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return np.round(noise).astype(np.float32)


def shifted_pair(
    h: int, w: int, shift: tuple[int, int] = SHIFT, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 1, h, w) frames i0, i1 with i1(x + u, y + v) = i0(x, y) for integer (u, v) >= 0."""
    u, v = shift
    pad = 4
    big = texture(h + 2 * pad, w + 2 * pad, seed)
    i0 = big[pad : pad + h, pad : pad + w]
    i1 = big[pad - v : pad - v + h, pad - u : pad - u + w]
    return torch.from_numpy(i0.copy())[None, None], torch.from_numpy(i1.copy())[None, None]


def interior(x: torch.Tensor, margin: int = MARGIN) -> torch.Tensor:
    return x[..., margin:-margin, margin:-margin]


def mean_epe(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean end-point error between two (B, 2, H, W) flows."""
    return float((a - b).norm(dim=1).mean())


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    return shifted_pair(48, 64)


@pytest.fixture(scope="module")
def flows(pair: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Both backends' flow on the shifted pair (default settings), computed once."""
    i0, i1 = pair
    return {backend: optical_flow(i0, i1, FlowParams(), backend) for backend in ("torch", "opencv")}


# --------------------------------------------------------------------------- rgb_to_gray


def test_rgb_to_gray_bit_equal_to_opencv(device: torch.device) -> None:
    frames = np.random.default_rng(3).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    gray = rgb_to_gray(torch.from_numpy(frames).to(device))
    assert gray.shape == (3, 1, 17, 23)
    assert gray.dtype == torch.float32
    expected = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    np.testing.assert_array_equal(gray[:, 0].cpu().numpy(), expected.astype(np.float32))


def test_rgb_to_gray_extremes() -> None:
    frames = torch.tensor(
        [[[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]]], dtype=torch.uint8
    )
    expected = cv2.cvtColor(frames[0].numpy(), cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(rgb_to_gray(frames)[0, 0].numpy(), expected)
    assert rgb_to_gray(frames)[0, 0, 0].tolist() == [0.0, 255.0, 76.0, 29.0]


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(2, 8, 8, 3),  # float, not uint8
        torch.zeros(2, 8, 8, 4, dtype=torch.uint8),  # RGBA
        torch.zeros(8, 8, 3, dtype=torch.uint8),  # one frame without T
    ],
)
def test_rgb_to_gray_bad_input_names_shape(frames: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tuple(frames.shape)))):
        rgb_to_gray(frames)


# --------------------------------------------------------------------------- derivatives


def test_centered_gradient_hand_values(device: torch.device) -> None:
    out = centered_gradient(t4(X34, device))
    assert out.shape == (1, 2, 3, 4)
    dx = [[0.5, 1.5, 2.5, 1.5], [0.0, 1.5, 3.5, 2.0], [-1.5, -1.5, -2.0, -2.0]]
    dy = [[1.0, 0.5, 1.0, 1.5], [3.5, 1.5, 0.5, -3.0], [2.5, 1.0, -0.5, -4.5]]
    assert out[0, 0].tolist() == dx
    assert out[0, 1].tolist() == dy


def test_centered_gradient_channels_order(device: torch.device) -> None:
    """(B, C, H, W) → (B, 2C, H, W): all d/dx first, then all d/dy."""
    x = torch.cat((t4(X34, device), 2 * t4(X34, device)), dim=1)  # (1, 2, 3, 4)
    out = centered_gradient(x)
    assert out.shape == (1, 4, 3, 4)
    single = centered_gradient(t4(X34, device))
    torch.testing.assert_close(out[:, 0], single[:, 0])
    torch.testing.assert_close(out[:, 1], 2 * single[:, 0])
    torch.testing.assert_close(out[:, 2], single[:, 1])
    torch.testing.assert_close(out[:, 3], 2 * single[:, 1])


def test_forward_gradient_hand_values(device: torch.device) -> None:
    dx, dy = forward_gradient(t4(X34, device))
    assert dx.shape == dy.shape == (1, 1, 3, 4)
    assert dx[0, 0].tolist() == [[1.0, 2.0, 3.0, 0.0], [0.0, 3.0, 4.0, 0.0], [-3.0, 0.0, -4.0, 0.0]]
    assert dy[0, 0].tolist() == [[2.0, 1.0, 2.0, 3.0], [5.0, 2.0, -1.0, -9.0], [0.0, 0.0, 0.0, 0.0]]


def test_divergence_hand_values(device: torch.device) -> None:
    px = t4(X34, device)
    py = t4([[1.0, 0.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], device)
    out = divergence(px, py)
    assert out.shape == (1, 1, 3, 4)
    # px[y, x] - px[y, x-1] + py[y, x] - py[y-1, x], zero before the first column/row
    assert out[0, 0].tolist() == [
        [1.0, 1.0, 2.0, 5.0],
        [1.0, 3.0, 3.0, 2.0],
        [7.0, -6.0, 1.0, -4.0],
    ]


def test_divergence_is_minus_adjoint_of_forward_gradient(device: torch.device) -> None:
    """<∇u, p> = -<u, div p> for dual fields that vanish where the forward gradient does (last
    column of px, last row of py): the solver's p always does, as it starts at 0 and is updated
    from forward differences only."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 2, 7, 9, generator=gen, dtype=torch.float64)
    px = torch.randn(2, 2, 7, 9, generator=gen, dtype=torch.float64)
    py = torch.randn(2, 2, 7, 9, generator=gen, dtype=torch.float64)
    px[..., :, -1] = 0
    py[..., -1, :] = 0
    u, px, py = u.to(device), px.to(device), py.to(device)
    ux, uy = forward_gradient(u)
    lhs = float((ux * px).sum() + (uy * py).sum())
    rhs = -float((u * divergence(px, py)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-9)


# --------------------------------------------------------------------------- median, resize, warp


@pytest.mark.parametrize("ksize", [3, 5])
def test_median_blur_equals_opencv(device: torch.device, ksize: int) -> None:
    rng = np.random.default_rng(ksize)
    x = rng.normal(0, 3, (2, 2, 11, 13)).astype(np.float32)
    out = median_blur5(torch.from_numpy(x).to(device), ksize)
    assert out.shape == x.shape
    expected = np.stack([np.stack([cv2.medianBlur(ch, ksize) for ch in img]) for img in x])
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_resize_linear_downscale_equals_opencv(device: torch.device) -> None:
    """On [0, 1] images: grid_sample's normalised coordinates cost ~2e-6 px, so on 0..255
    noise the two differ by up to ~5e-4 gray levels (still 2e-6 relative)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (2, 2, 31, 43)).astype(np.float32)
    h, w = round(31 * 0.8), round(43 * 0.8)
    out = resize_linear(torch.from_numpy(x).to(device), (h, w), (0.8, 0.8))
    assert out.shape == (2, 2, h, w)
    for b in range(2):
        for c in range(2):
            expected = cv2.resize(x[b, c], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
            assert expected.shape == (h, w)
            np.testing.assert_allclose(out[b, c].cpu().numpy(), expected, atol=1e-4, rtol=0)


def test_resize_linear_upscale_with_dsize_equals_opencv(device: torch.device) -> None:
    """The pyramid's flow upsampling: scale is dsize / src size per axis, as cv2.resize computes."""
    rng = np.random.default_rng(6)
    x = rng.normal(0, 2, (1, 2, 19, 26)).astype(np.float32)
    size = (24, 33)
    out = resize_linear(torch.from_numpy(x).to(device), size, (24 / 19, 33 / 26))
    assert out.shape == (1, 2, 24, 33)
    for c in range(2):
        expected = cv2.resize(x[0, c], (33, 24), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out[0, c].cpu().numpy(), expected, atol=1e-4, rtol=0)


def test_warp_bicubic_zero_flow_is_identity_inside(device: torch.device) -> None:
    x = torch.from_numpy(texture(20, 24, seed=2))[None, None].to(device)
    out = warp_bicubic(x, torch.zeros(1, 2, 20, 24, device=device))
    assert out.shape == x.shape
    torch.testing.assert_close(interior(out, 2), interior(x, 2), atol=1e-3, rtol=0)


def test_warp_bicubic_integer_flow_shifts(device: torch.device) -> None:
    """Sampling at (x + 2, y + 1) reads the pixel two right and one down."""
    x = torch.from_numpy(texture(20, 24, seed=2))[None, None].to(device)
    flow = torch.zeros(1, 2, 20, 24, device=device)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    out = warp_bicubic(x, flow)
    expected = x[..., 1:, 2:]  # expected[y, x] = x[y + 1, x + 2]
    torch.testing.assert_close(out[..., 1:-2, 1:-3], expected[..., 1:-1, 1:-1], atol=1e-3, rtol=0)


def test_warp_bicubic_zero_outside(device: torch.device) -> None:
    """Samples entirely outside the image are 0 (constant border), as OpenCV's remap gives."""
    x = torch.full((1, 1, 8, 8), 100.0, device=device)
    flow = torch.zeros(1, 2, 8, 8, device=device)
    flow[:, 0] = 20.0
    assert float(warp_bicubic(x, flow).abs().max()) == 0.0


def test_pyramid_sizes() -> None:
    assert pyramid_sizes(224, 298, 5, 0.8) == [
        (224, 298),
        (179, 238),
        (143, 190),
        (114, 152),
        (91, 122),
    ]
    # levels stop before a side falls under 16 pixels
    assert pyramid_sizes(20, 30, 5, 0.8) == [(20, 30), (16, 24)]
    assert pyramid_sizes(224, 298, 1, 0.8) == [(224, 298)]


# --------------------------------------------------------------------------- TV-L1


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_shifted_texture_gives_the_shift(flows: dict[str, torch.Tensor], backend: str) -> None:
    flow = flows[backend]
    assert flow.shape == (1, 2, 48, 64)
    assert flow.dtype == torch.float32
    mean_u, mean_v = interior(flow)[0].mean(dim=(1, 2)).tolist()
    assert mean_u == pytest.approx(SHIFT[0], abs=0.1)
    assert mean_v == pytest.approx(SHIFT[1], abs=0.1)


def test_torch_matches_opencv_on_shifted_texture(flows: dict[str, torch.Tensor]) -> None:
    assert mean_epe(flows["torch"], flows["opencv"]) < 0.1


@pytest.fixture(scope="module")
def still_flows(pair: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Both backends' flow from a frame to itself."""
    i0, _ = pair
    return {b: optical_flow(i0, i0.clone(), FlowParams(), b) for b in ("torch", "opencv")}


@pytest.mark.parametrize("backend", ["torch", "opencv"])
def test_identical_frames_give_zero_flow(
    still_flows: dict[str, torch.Tensor], backend: str
) -> None:
    assert float(still_flows[backend].abs().max()) < 1e-3


def test_identical_frames_torch_small_inside(still_flows: dict[str, torch.Tensor]) -> None:
    """What the torch backend does achieve on identical frames: well under a pixel inside."""
    assert float(interior(still_flows["torch"]).norm(dim=1).max()) < 0.1


def test_batch_equals_pairs_alone() -> None:
    """Per-pair epsilon stopping in a batch freezes each pair exactly as if it ran alone."""
    params = FlowParams(scales=3, warps=3)
    pairs = [
        shifted_pair(32, 40, shift, seed) for seed, shift in enumerate([(1, 0), (0, 2), (2, 1)])
    ]
    i0 = torch.cat([p[0] for p in pairs])
    i1 = torch.cat([p[1] for p in pairs])
    batched = tvl1_flow(i0, i1, params)
    assert batched.shape == (3, 2, 32, 40)
    for k, (a, b) in enumerate(pairs):
        torch.testing.assert_close(batched[k : k + 1], tvl1_flow(a, b, params), atol=1e-4, rtol=0)


def test_fixed_stopping_close_to_epsilon(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    """``fixed`` runs every iteration; on CPU that is slow, so both use 2 outer iterations."""
    i0, i1 = pair
    eps = tvl1_flow(i0, i1, FlowParams(outer_iterations=2))
    fixed = tvl1_flow(i0, i1, FlowParams(outer_iterations=2, stopping="fixed"))
    assert mean_epe(fixed, eps) < 0.05
    mean_u, mean_v = interior(fixed)[0].mean(dim=(1, 2)).tolist()
    assert (mean_u, mean_v) == pytest.approx(SHIFT, abs=0.1)


@pytest.mark.gpu
def test_tvl1_cuda_matches_cpu(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    i0, i1 = pair
    cpu = tvl1_flow(i0, i1)
    cuda = tvl1_flow(i0.cuda(), i1.cuda())
    assert cuda.is_cuda
    assert mean_epe(cuda.cpu(), cpu) < 0.02


@pytest.mark.gpu
def test_opencv_backend_returns_to_input_device(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    i0, i1 = pair
    flow = optical_flow(i0.cuda(), i1.cuda(), FlowParams(), "opencv")
    assert flow.is_cuda
    torch.testing.assert_close(flow.cpu(), optical_flow(i0, i1, FlowParams(), "opencv"))


@pytest.mark.parametrize(
    ("shape0", "shape1", "named"),
    [
        ((1, 2, 8, 8), (1, 2, 8, 8), "(1, 2, 8, 8)"),
        ((2, 8, 8), (2, 8, 8), "(2, 8, 8)"),
        ((1, 1, 8, 8), (1, 1, 8, 9), "(1, 1, 8, 9)"),
        ((1, 1, 2, 8), (1, 1, 2, 8), "(2, 8)"),
    ],
)
def test_tvl1_bad_shapes_raise(
    shape0: tuple[int, ...], shape1: tuple[int, ...], named: str
) -> None:
    with pytest.raises(ValueError) as info:
        optical_flow(torch.zeros(shape0), torch.zeros(shape1), FlowParams(), "torch")
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("shape0", "shape1", "named"),
    [
        ((1, 2, 8, 8), (1, 2, 8, 8), "(1, 2, 8, 8)"),
        ((1, 1, 8, 8), (1, 1, 8, 9), "(1, 1, 8, 9)"),
        ((1, 1, 2, 8), (1, 1, 2, 8), "(2, 8)"),
        ((2, 8, 8), (2, 8, 8), "(2, 8, 8)"),
    ],
)
def test_opencv_backend_bad_shapes_raise(
    shape0: tuple[int, ...], shape1: tuple[int, ...], named: str
) -> None:
    with pytest.raises(ValueError) as info:
        optical_flow(torch.zeros(shape0), torch.zeros(shape1), FlowParams(), "opencv")
    assert named in str(info.value)


def test_opencv_backend_refuses_fixed_stopping() -> None:
    i0 = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="fixed"):
        optical_flow(i0, i0, FlowParams(stopping="fixed"), "opencv")


def test_unknown_backend_raises() -> None:
    i0 = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="cupy"):
        optical_flow(i0, i0, FlowParams(), "cupy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_step": 1.0},
        {"scale_step": 0.0},
        {"scales": 0},
        {"warps": 0},
        {"inner_iterations": 0},
        {"outer_iterations": 0},
        {"median_filtering": 2},
        {"median_filtering": 7},
        {"stopping": "never"},
    ],
)
def test_flow_params_validation(kwargs: dict) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        FlowParams(**kwargs)


def test_flow_params_defaults_are_opencv() -> None:
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    p = FlowParams()
    assert p.tau == pytest.approx(algo.getTau())
    assert p.lambda_ == pytest.approx(algo.getLambda())
    assert p.theta == pytest.approx(algo.getTheta())
    assert p.scales == algo.getScalesNumber()
    assert p.warps == algo.getWarpingsNumber()
    assert p.epsilon == pytest.approx(algo.getEpsilon())
    assert p.inner_iterations == algo.getInnerIterations()
    assert p.outer_iterations == algo.getOuterIterations()
    assert p.scale_step == pytest.approx(algo.getScaleStep())
    assert p.median_filtering == algo.getMedianFiltering()


# --------------------------------------------------------------------------- a real clip


@pytest.mark.slow
def test_torch_matches_opencv_on_carphone(carphone: Path) -> None:
    """Frames 40 and 48 of carphone (176×144) at 136×112: real motion, both backends agree."""
    import av

    frames = []
    with av.open(str(carphone)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in (40, 48):
                frames.append(frame.reformat(width=136, height=112, format="rgb24").to_ndarray())
            if index >= 48:
                break
    gray = rgb_to_gray(torch.from_numpy(np.stack(frames)))
    torch_flow = optical_flow(gray[:1], gray[1:], FlowParams(), "torch")
    cv_flow = optical_flow(gray[:1], gray[1:], FlowParams(), "opencv")
    assert float(cv_flow.norm(dim=1).max()) > 1.0  # there is real motion to agree on
    assert mean_epe(torch_flow, cv_flow) < 0.25
