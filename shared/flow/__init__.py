"""Optical flow behind one function, two backends: ``opencv`` (the reference) and ``torch``."""

from __future__ import annotations

import torch

from shared.flow.opencv_backend import opencv_tvl1
from shared.flow.tvl1 import tvl1_flow
from shared.params import FlowBackend, FlowParams

__all__ = ["opencv_tvl1", "optical_flow", "tvl1_flow"]


def optical_flow(
    i0: torch.Tensor,
    i1: torch.Tensor,
    params: FlowParams | None = None,
    backend: FlowBackend = "opencv",
) -> torch.Tensor:
    """TV-L1 flow for a batch of pairs: (B, 1, H, W) gray in [0, 255] → (B, 2, H, W) (u, v)."""
    params = params or FlowParams()
    if backend == "opencv":
        return opencv_tvl1(i0, i1, params)
    if backend == "torch":
        # On CUDA: fused step + graph replay, the fastest variant measured (BENCHMARKS.md).
        return tvl1_flow(i0, i1, params, compile=i0.is_cuda)
    raise ValueError(f"unknown flow backend {backend!r}; use 'opencv' or 'torch'")
