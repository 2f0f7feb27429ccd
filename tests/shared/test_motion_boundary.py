"""Tests for mofo.shared.motion_boundary: eq. 1 of MOFO and the temporal average of its maps."""

from __future__ import annotations

import math

import pytest
import torch

from mofo.shared.motion_boundary import motion_boundary, temporal_average

H, W = 6, 7


def grid(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) pixel coordinates x, y as float32."""
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32, device=device),
        torch.arange(W, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return xs, ys


def flow_of(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.stack((u, v))[None]  # (1, 2, H, W)


def test_shape_and_dtype(device: torch.device) -> None:
    flow = torch.randn(3, 2, H, W, device=device)
    out = motion_boundary(flow)
    assert out.shape == (3, 1, H, W)
    assert out.dtype == torch.float32
    assert out.device.type == device.type


def test_constant_flow_is_exactly_zero(device: torch.device) -> None:
    flow = torch.zeros(2, 2, H, W, device=device)
    out = motion_boundary(flow)
    assert torch.equal(out, torch.zeros(2, 1, H, W, device=device))


def test_translating_flow_is_exactly_zero(device: torch.device) -> None:
    """Camera translation: u and v constant (and different), no boundary anywhere."""
    u = torch.full((H, W), 3.7, device=device)
    v = torch.full((H, W), -1.3, device=device)
    out = motion_boundary(flow_of(u, v))
    assert float(out.abs().max()) == 0.0


@pytest.mark.parametrize("a", [0.5, -2.0])
def test_linear_flow_gives_its_slope(device: torch.device, a: float) -> None:
    """u = a·x: central differences give |a| inside; replicated borders give |a|/2 at the left and
    right edges (and top and bottom rows change nothing, u does not vary in y)."""
    xs, _ = grid(device)
    out = motion_boundary(flow_of(a * xs, torch.zeros_like(xs)))[0, 0]
    torch.testing.assert_close(out[:, 1:-1], torch.full((H, W - 2), abs(a), device=device))
    torch.testing.assert_close(out[:, 0], torch.full((H,), abs(a) / 2, device=device))
    torch.testing.assert_close(out[:, -1], torch.full((H,), abs(a) / 2, device=device))


def test_linear_flow_in_y(device: torch.device) -> None:
    _, ys = grid(device)
    out = motion_boundary(flow_of(torch.zeros_like(ys), 1.5 * ys))[0, 0]
    torch.testing.assert_close(out[1:-1, :], torch.full((H - 2, W), 1.5, device=device))


def test_both_components_count(device: torch.device) -> None:
    """v varying in x alone is a boundary (the public MOFO code dropped one component)."""
    xs, ys = grid(device)
    only_v = motion_boundary(flow_of(torch.zeros_like(xs), 2.0 * xs))[0, 0]
    torch.testing.assert_close(only_v[:, 1:-1], torch.full((H, W - 2), 2.0, device=device))
    only_u_in_y = motion_boundary(flow_of(3.0 * ys, torch.zeros_like(ys)))[0, 0]
    torch.testing.assert_close(only_u_in_y[1:-1, :], torch.full((H - 2, W), 3.0, device=device))
    # all four derivatives add in quadrature: u = x + 2y, v = 3x - 4y
    both = motion_boundary(flow_of(xs + 2 * ys, 3 * xs - 4 * ys))[0, 0]
    expected = math.sqrt(1 + 4 + 9 + 16)
    torch.testing.assert_close(
        both[1:-1, 1:-1], torch.full((H - 2, W - 2), expected, device=device)
    )


def test_step_edge_hand_values(device: torch.device) -> None:
    """u steps from 0 to 4 between columns 2 and 3: central differences give 2 on both columns."""
    u = torch.zeros(H, W, device=device)
    u[:, 3:] = 4.0
    out = motion_boundary(flow_of(u, torch.zeros_like(u)))[0, 0]
    expected = torch.zeros(H, W, device=device)
    expected[:, 2:4] = 2.0
    torch.testing.assert_close(out, expected)


def test_integer_flow_is_converted(device: torch.device) -> None:
    xs, _ = grid(device)
    flow = flow_of(2 * xs, torch.zeros_like(xs)).to(torch.int64)
    out = motion_boundary(flow)
    assert out.dtype == torch.float32
    assert float(out[0, 0, 2, 3]) == 2.0


@pytest.mark.gpu
def test_cuda_matches_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(0))
    expected = motion_boundary(flow)
    # as run (cuDNN may use TF32 for the derivative convolution): close
    torch.testing.assert_close(motion_boundary(flow.cuda()).cpu(), expected, rtol=5e-3, atol=5e-3)
    # in full float32: the same computation
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.testing.assert_close(motion_boundary(flow.cuda()).cpu(), expected)


@pytest.mark.parametrize("shape", [(2, 3, H, W), (2, H, W), (1, 1, H, W), (2, 2, H, W, 1)])
def test_bad_shape_raises_and_names_it(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as info:
        motion_boundary(torch.zeros(shape))
    assert str(shape) in str(info.value)


# --------------------------------------------------------------------------- temporal_average


def stack(values: list[float], device: torch.device) -> torch.Tensor:
    """(T, 1, 2, 3) maps, map t constant at values[t]."""
    return torch.tensor(values, device=device).view(-1, 1, 1, 1).expand(-1, 1, 2, 3).contiguous()


def test_temporal_average_window_1_is_identity(device: torch.device) -> None:
    maps = torch.randn(4, 1, 2, 3, device=device)
    assert torch.equal(temporal_average(maps, 1), maps)


def test_temporal_average_window_3_hand_values(device: torch.device) -> None:
    out = temporal_average(stack([1.0, 2.0, 4.0, 8.0], device), 3)
    assert out.shape == (4, 1, 2, 3)
    # the ends average over the neighbours that exist: (1+2)/2, (1+2+4)/3, (2+4+8)/3, (4+8)/2
    expected = stack([1.5, 7 / 3, 14 / 3, 6.0], device)
    torch.testing.assert_close(out, expected)


def test_temporal_average_window_5_hand_values(device: torch.device) -> None:
    out = temporal_average(stack([1.0, 2.0, 4.0, 8.0], device), 5)
    expected = stack([7 / 3, 15 / 4, 15 / 4, 14 / 3], device)
    torch.testing.assert_close(out, expected)


def test_temporal_average_keeps_pixels_apart(device: torch.device) -> None:
    maps = torch.zeros(3, 1, 2, 2, device=device)
    maps[1, 0, 0, 1] = 3.0
    out = temporal_average(maps, 3)
    expected = torch.zeros(3, 1, 2, 2, device=device)
    expected[0, 0, 0, 1] = 1.5
    expected[1, 0, 0, 1] = 1.0
    expected[2, 0, 0, 1] = 1.5
    torch.testing.assert_close(out, expected)


def test_temporal_average_single_map(device: torch.device) -> None:
    maps = torch.randn(1, 1, 2, 3, device=device)
    assert torch.equal(temporal_average(maps, 3), maps)


@pytest.mark.parametrize("window", [0, 2, 4, -1])
def test_temporal_average_bad_window_raises(window: int) -> None:
    with pytest.raises(ValueError, match=str(window)):
        temporal_average(torch.zeros(3, 1, 2, 2), window)
