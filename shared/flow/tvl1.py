"""Zach–Pock–Bischof TV-L1 optical flow in PyTorch, batched over frame pairs.

A primal–dual solver with coarse-to-fine pyramid and warping that follows OpenCV's
``DualTVL1OpticalFlow`` step for step (same gradients, bicubic warping with zero border, 5×5
median filtering at the start of each outer iteration, per-warp epsilon stopping), so that the
two backends agree to a fraction of a pixel. The same code runs on CPU and CUDA.

Stopping: ``"epsilon"`` freezes each pair on the device once its squared update falls under
``epsilon² · area`` (OpenCV's rule, per pair) and asks the host once per outer iteration whether
all pairs have stopped; ``"fixed"`` runs every iteration and never syncs, so a CUDA graph can
replay it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from mofo.shared.params import FlowParams

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)
_MIN_SIDE = 16  # OpenCV stops adding pyramid levels below 16 pixels


def check_pair(i0: torch.Tensor, i1: torch.Tensor) -> None:
    if i0.ndim != 4 or i0.shape[1] != 1:
        raise ValueError(f"expected i0 of shape (B, 1, H, W), got {tuple(i0.shape)}")
    if i1.shape != i0.shape:
        raise ValueError(f"i0 and i1 differ in shape: {tuple(i0.shape)} vs {tuple(i1.shape)}")
    if min(i0.shape[-2:]) < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {tuple(i0.shape[-2:])}")


def _sample_grid(xs: torch.Tensor, ys: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel coordinates → grid_sample's normalised grid (align_corners=True)."""
    gx = xs * (2.0 / max(width - 1, 1)) - 1.0
    gy = ys * (2.0 / max(height - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1)


def resize_linear(
    x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float]
) -> torch.Tensor:
    """OpenCV ``INTER_LINEAR`` resize: dst pixel d samples src at (d + 0.5) / scale − 0.5."""
    height, width = x.shape[-2:]
    out_h, out_w = size
    dev = x.device
    ys = ((torch.arange(out_h, device=dev, dtype=torch.float32) + 0.5) / scale[0] - 0.5).clamp(
        0, height - 1
    )
    xs = ((torch.arange(out_w, device=dev, dtype=torch.float32) + 0.5) / scale[1] - 0.5).clamp(
        0, width - 1
    )
    grid = _sample_grid(xs[None, :].expand(out_h, -1), ys[:, None].expand(-1, out_w), width, height)
    grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def centered_gradient(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 2C, H, W): [d/dx of each channel, d/dy of each channel], half-differences
    with replicated borders (OpenCV's ``centeredGradient``)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return torch.cat((dx, dy), dim=1)


def forward_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero on the last column/row (OpenCV's ``forwardGradient``)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence, treating values before the first column/row as zero."""
    return px - F.pad(px[..., :, :-1], (1, 0, 0, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))


def median_blur5(x: torch.Tensor, ksize: int = 5) -> torch.Tensor:
    """Per-channel ksize×ksize median with replicated borders (OpenCV's ``medianBlur``)."""
    b, c, h, w = x.shape
    r = ksize // 2
    padded = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode="replicate")
    patches = F.unfold(padded, ksize)  # (B*C, k*k, H*W)
    return patches.median(dim=1).values.reshape(b, c, h, w)


_CUBIC_A = -0.75  # OpenCV's (and PyTorch's) cubic convolution constant


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Weights of the taps at −1, 0, 1, 2 for a fractional offset t ∈ [0, 1): (..., 4)."""
    a = _CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    s = 1 - t
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    return torch.stack((w0, w1, w2, 1 - w0 - w1 - w2), dim=-1)


def warp_bicubic(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) x at (px + u, py + v), like OpenCV's ``remap`` with ``INTER_CUBIC`` and
    a constant 0 border: 4×4 cubic taps (a = −0.75), taps outside the image read 0.

    Taps are gathered at integer positions (not through grid_sample's [−1, 1] coordinates, whose
    float32 round trip is off by ~1e-4 px), so zero flow returns x exactly."""
    b, c, h, w = x.shape
    dev = x.device
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w) + flow[:, 0]
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1) + flow[:, 1]
    # beyond these bounds every tap is outside anyway; clamping keeps the integers small
    xs, ys = xs.clamp(-4, w + 3), ys.clamp(-4, h + 3)
    fx, fy = xs.floor(), ys.floor()
    wx = _cubic_weights(xs - fx)  # (B, H, W, 4)
    wy = _cubic_weights(ys - fy)
    ix, iy = fx.long(), fy.long()
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    for j in range(4):
        row = iy + (j - 1)
        row_ok = (row >= 0) & (row < h)
        for i in range(4):
            col = ix + (i - 1)
            ok = row_ok & (col >= 0) & (col < w)
            index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).view(b, 1, h * w)
            taps = flat.gather(2, index.expand(b, c, h * w))
            weight = (wy[..., j] * wx[..., i] * ok).view(b, 1, h * w)
            out += weight * taps
    return out.view(b, c, h, w)


def pyramid_sizes(height: int, width: int, scales: int, step: float) -> list[tuple[int, int]]:
    """Level sizes, finest first, as OpenCV builds them (rounded, stop under 16 px)."""
    sizes = [(height, width)]
    for _ in range(1, scales):
        h, w = round(sizes[-1][0] * step), round(sizes[-1][1] * step)
        if h < _MIN_SIDE or w < _MIN_SIDE:
            break
        sizes.append((h, w))
    return sizes


def _iterate(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    grad_i: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    coef: tuple[float, float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One primal–dual iteration for both flow components.

    u, px, py, grad_i: (B, 2, H, W); grad_sq, rho_c: (B, 1, H, W); coef: (λθ, θ, τ/θ).
    Returns the new u, px, py and each pair's squared update (B,).
    """
    l_t, theta, taut = coef
    rho = rho_c + (grad_i * u).sum(1, keepdim=True)  # (B, 1, H, W)
    bound = l_t * grad_sq
    step = torch.where(
        rho < -bound,
        l_t,
        torch.where(
            rho > bound,
            -l_t,
            torch.where(grad_sq > _FLT_EPSILON, -rho / grad_sq.clamp_min(_FLT_EPSILON), 0.0),
        ),
    )
    v = u + step * grad_i  # thresholding step TH
    u_new = v + theta * divergence(px, py)  # (B, 2, H, W)
    error = (u_new - u).square().sum(dim=(1, 2, 3))  # (B,)
    ux, uy = forward_gradient(u_new)
    norm = 1.0 + taut * torch.sqrt(ux * ux + uy * uy)
    return u_new, (px + taut * ux) / norm, (py + taut * uy) / norm, error


def _step(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    active: torch.Tensor,
    grad_i: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    coef: tuple[float, float, float],
    scaled_eps: float,
    gate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration; with ``gate``, pairs already converged (``active`` false, (B,1,1,1))
    keep their state, as if their loop had ended, and pairs whose update fell under
    ``scaled_eps`` stop after this one."""
    u_new, px_new, py_new, error = _iterate(u, px, py, grad_i, grad_sq, rho_c, coef)
    if not gate:
        return u_new, px_new, py_new, active
    return (
        torch.where(active, u_new, u),
        torch.where(active, px_new, px),
        torch.where(active, py_new, py),
        active & (error > scaled_eps).view(-1, 1, 1, 1),
    )


_compiled_step = None


def _get_step(compile_step: bool):
    """The inner step, eager or fused by ``torch.compile`` (compiled once, dynamic shapes)."""
    global _compiled_step
    if not compile_step:
        return _step
    if _compiled_step is None:
        # one specialisation per pyramid level shape × batch × stopping: allow plenty
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        _compiled_step = torch.compile(_step, dynamic=True, fullgraph=True)
    return _compiled_step


class _ScaleSolver:
    """The state of one pyramid level, held in fixed buffers so an outer iteration (median filter
    plus the inner iterations) can be captured once as a CUDA graph and replayed."""

    def __init__(
        self,
        batch: int,
        height: int,
        width: int,
        params: FlowParams,
        device: torch.device,
        compile_step: bool = False,
        fused: bool = False,
    ) -> None:
        def buf(channels: int) -> torch.Tensor:
            return torch.zeros(batch, channels, height, width, device=device)

        self.params = params
        self.u, self.px, self.py, self.grad_i = buf(2), buf(2), buf(2), buf(2)
        self.grad_sq, self.rho_c = buf(1), buf(1)
        self.active = torch.ones(batch, 1, 1, 1, dtype=torch.bool, device=device)
        self.scaled_eps = params.epsilon**2 * height * width
        self.coef = (params.lambda_ * params.theta, params.theta, params.tau / params.theta)
        self.graph: torch.cuda.CUDAGraph | None = None
        self._outer_iteration = self._outer_iteration_torch
        if fused:
            # Triton kernels, imported only when asked for (the import may pick its interpreter)
            from mofo.shared.flow import tvl1_triton

            self.kernels = tvl1_triton
            self.alt = (buf(2), buf(2), buf(2))  # the second state of the ping-pong
            self.filtered = buf(2)  # the median-filtered u the first iteration reads
            self.err = torch.zeros(params.inner_iterations, batch, device=device)
            self._outer_iteration = self._outer_iteration_fused
        else:
            self.step = _get_step(compile_step)

    def capture(self) -> None:
        """Record one outer iteration as a CUDA graph (after a warm-up on a side stream)."""
        stream = torch.cuda.Stream(self.u.device)
        stream.wait_stream(torch.cuda.current_stream(self.u.device))
        with torch.cuda.stream(stream):
            self._outer_iteration()
        torch.cuda.current_stream(self.u.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # "thread_local": only this thread's calls are checked during the capture. In the API and
        # workers the flow runs on one thread while request threads do their own CUDA work
        # (motion maps, CuPy labels, copies); under the default "global" mode any of that during
        # a capture fails ("operation not permitted when stream is capturing") and poisons the
        # capture (seen on an H200 at 16 concurrent requests, BENCHMARKS.md §11).
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self._outer_iteration()

    def _outer_iteration_torch(self) -> None:
        """Median filter, then the inner iterations, each a call of ``self.step``."""
        params = self.params
        gate = params.stopping == "epsilon"
        u, px, py, active = self.u, self.px, self.py, self.active
        if params.median_filtering > 1:
            filtered = median_blur5(u, params.median_filtering)
            u = torch.where(active, filtered, u) if gate else filtered
        for _ in range(params.inner_iterations):
            u, px, py, active = self.step(
                u,
                px,
                py,
                active,
                self.grad_i,
                self.grad_sq,
                self.rho_c,
                self.coef,
                self.scaled_eps,
                gate,
            )
        self.u.copy_(u)
        self.px.copy_(px)
        self.py.copy_(py)
        self.active.copy_(active)

    def _outer_iteration_fused(self) -> None:
        """The same outer iteration as hand-written Triton kernels (``tvl1_triton``): one launch
        for the median filter, one per inner iteration, state ping-ponging between two buffers."""
        params, kernels = self.params, self.kernels
        gate = params.stopping == "epsilon"
        active = self.active if gate else None
        state = (self.u, self.px, self.py)
        source = state
        if params.median_filtering > 1:
            kernels.median_blur(self.u, self.filtered, params.median_filtering, active)
            source = (self.filtered, self.px, self.py)
        if gate:
            self.err.zero_()
        for k in range(params.inner_iterations):
            target = (self.alt, state)[k % 2]
            kernels.inner_iteration(
                source,
                target,
                self.grad_i,
                self.grad_sq,
                self.rho_c,
                self.coef,
                k,
                self.err if gate else None,
                active,
                self.scaled_eps,
            )
            source = target
        if source is not state:
            for held, last in zip(state, source, strict=True):
                held.copy_(last)
        if gate:
            self.active &= (self.err > self.scaled_eps).all(dim=0).view(-1, 1, 1, 1)

    def solve(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """TV-L1 at this level from the initial flow u; returns the refined flow (a new tensor)."""
        params = self.params
        self.u.copy_(u)
        self.px.zero_()
        self.py.zero_()
        i1_stack = torch.cat((i1, centered_gradient(i1)), dim=1)  # (B, 3, H, W)
        for _ in range(params.warps):
            warped = warp_bicubic(i1_stack, self.u)  # I1, dI1/dx, dI1/dy at x + u
            grad_i = warped[:, 1:3]
            self.grad_i.copy_(grad_i)
            self.grad_sq.copy_((grad_i * grad_i).sum(1, keepdim=True))
            self.rho_c.copy_(warped[:, :1] - (grad_i * self.u).sum(1, keepdim=True) - i0)
            self.active.fill_(True)
            for outer in range(params.outer_iterations):
                if params.stopping == "epsilon" and outer > 0 and not bool(self.active.any()):
                    break  # the one host sync per outer iteration; "fixed" never syncs
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self._outer_iteration()
        return self.u.clone()


# Captured graphs, keyed by shape, device and settings: levels × graph batches × frame sizes.
_GRAPHS: OrderedDict[tuple, _ScaleSolver] = OrderedDict()
_MAX_GRAPHS = 128


def graph_batch(batch: int) -> int:
    """The batch a graph is captured for: the smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers
    of two and 1.5 × them) that holds ``batch``. The API's batcher meets every batch size from 1
    to its cap; one graph per size thrashed the graph cache (5 levels × 16 sizes × each frame
    size) and spent the GPU on captures. Padding costs under half as many pairs again, and none
    under epsilon stopping (the padding repeats the last pair, which stops when it stops)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    power = 1 << (batch - 1).bit_length()  # smallest power of two >= batch
    return power * 3 // 4 if power >= 4 and batch <= power * 3 // 4 else power


def clear_graph_cache() -> None:
    """Free the captured CUDA graphs and their buffers."""
    _GRAPHS.clear()


def _solver(
    batch: int,
    height: int,
    width: int,
    params: FlowParams,
    device: torch.device,
    graphs: bool,
    compile_step: bool,
    fused: bool,
) -> _ScaleSolver:
    if not graphs:
        return _ScaleSolver(batch, height, width, params, device, compile_step, fused)
    key = (batch, height, width, params, str(device), compile_step, fused)
    solver = _GRAPHS.get(key)
    if solver is None:
        solver = _ScaleSolver(batch, height, width, params, device, compile_step, fused)
        solver.capture()
        _GRAPHS[key] = solver
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    return solver


def tvl1_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: FlowParams | None = None,
    cuda_graphs: bool | None = None,
    compile: bool = False,
    fused: bool = False,
) -> torch.Tensor:
    """TV-L1 optical flow from i0 to i1.

    Args:
        i0, i1: (B, 1, H, W) gray images in [0, 255] (float; uint8 values as OpenCV sees them).
        params: solver settings; OpenCV's defaults when None.
        cuda_graphs: replay each level's outer iteration as a CUDA graph (default: on CUDA).
        compile: fuse the inner iteration with ``torch.compile`` (costs a one-off compile).
        fused: run the median filter and each inner iteration as one hand-written Triton kernel
            (:mod:`.tvl1_triton`; overrides ``compile``). On CUDA; without CUDA, Triton's
            interpreter runs them, very slowly (for tests).

    Returns:
        (B, 2, H, W) float32 flow (u: x displacement, v: y displacement) in pixels, such that
        i1(x + u, y + v) ≈ i0(x, y).
    """
    params = params or FlowParams()
    check_pair(i0, i1)
    if cuda_graphs is None:
        cuda_graphs = i0.is_cuda
    if cuda_graphs and not i0.is_cuda:
        raise ValueError("cuda_graphs needs CUDA tensors")
    i0 = i0.to(torch.float32)
    i1 = i1.to(torch.float32)
    batch = i0.shape[0]
    if cuda_graphs and graph_batch(batch) > batch:  # pad with the last pair, drop it at the end
        index = torch.arange(graph_batch(batch), device=i0.device).clamp_max(batch - 1)
        return tvl1_flow(i0[index], i1[index], params, True, compile, fused)[:batch]
    batch, _, height, width = i0.shape
    sizes = pyramid_sizes(height, width, params.scales, params.scale_step)
    step = (params.scale_step, params.scale_step)
    i0s, i1s = [i0], [i1]
    for size in sizes[1:]:
        i0s.append(resize_linear(i0s[-1], size, step))
        i1s.append(resize_linear(i1s[-1], size, step))
    coarse_h, coarse_w = sizes[-1]
    u = i0.new_zeros(batch, 2, coarse_h, coarse_w)
    for level in range(len(sizes) - 1, -1, -1):
        h, w = sizes[level]
        solver = _solver(batch, h, w, params, i0.device, cuda_graphs, compile, fused)
        u = solver.solve(i0s[level], i1s[level], u)
        if level == 0:
            break
        fine_h, fine_w = sizes[level - 1]
        u = resize_linear(u, (fine_h, fine_w), (fine_h / h, fine_w / w))
        u = u * (1.0 / params.scale_step)
    return u
