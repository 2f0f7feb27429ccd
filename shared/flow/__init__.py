"""Optical flow behind one function, two backends: ``opencv`` (the reference) and ``torch``."""

from __future__ import annotations

import torch

from mofo.shared.flow.exposure import exposure_matched_flow
from mofo.shared.flow.opencv_backend import opencv_tvl1
from mofo.shared.flow.tvl1 import tvl1_flow
from mofo.shared.params import FLOW_BACKENDS, FlowBackend, FlowParams

__all__ = ["opencv_tvl1", "optical_flow", "tvl1_flow"]


def optical_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: FlowParams | None = None,
    backend: FlowBackend = "opencv",
) -> torch.Tensor:
    """TV-L1 flow for a batch of pairs: (B, 1, H, W) gray in [0, 255] → (B, 2, H, W) (u, v).

    With ``params.exposure == "gain"``, a pair whose exposure changed is measured again at one
    exposure (:mod:`mofo.shared.flow.exposure`); the others keep their first flow.
    """
    params = params or FlowParams()
    flow = _tvl1(i0, i1, params, backend)
    if params.exposure == "gain":
        flow = exposure_matched_flow(i0, i1, flow, lambda a, b: _tvl1(a, b, params, backend))
    return flow


def _tvl1(i0: torch.Tensor, i1: torch.Tensor, params: FlowParams, backend: str) -> torch.Tensor:
    if backend == "opencv":
        return opencv_tvl1(i0, i1, params)
    if backend == "torch":
        if not i0.is_cuda:
            return tvl1_flow(i0, i1, params)
        # the inner loop on CUDA (params.cuda_kernel): Triton kernels, or torch.compile's step;
        # both replay CUDA graphs. The default is the faster one measured (BENCHMARKS.md §12).
        fused = params.cuda_kernel == "triton"
        return tvl1_flow(i0, i1, params, compile=not fused, fused=fused)
    raise ValueError(f"unknown flow backend {backend!r}; use one of {', '.join(FLOW_BACKENDS)}")
