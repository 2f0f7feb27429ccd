"""OpenCV's ``DualTVL1OpticalFlow`` (opencv-contrib): the reference TV-L1 and the CPU default."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from mofo.shared.flow.tvl1 import check_pair
from mofo.shared.params import FlowParams


def _create(params: FlowParams) -> cv2.optflow.DualTVL1OpticalFlow:
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.scales,
        warps=params.warps,
        epsilon=params.epsilon,
        innnerIterations=params.inner_iterations,
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_step,
        gamma=0.0,
        medianFiltering=params.median_filtering,
        useInitialFlow=False,
    )


def opencv_tvl1(i0: torch.Tensor, i1: torch.Tensor, params: FlowParams) -> torch.Tensor:
    """TV-L1 flow from ``i0`` to ``i1``, (B, 1, H, W) gray in [0, 255] → (B, 2, H, W) (u, v).

    Runs pair by pair on the CPU (OpenCV threads each pair); the result returns to i0's device.
    """
    check_pair(i0, i1)
    if params.stopping != "epsilon":
        raise ValueError("the opencv backend only stops on epsilon; use backend='torch' for fixed")
    algo = _create(params)
    a = i0[:, 0].detach().to("cpu", torch.float32).numpy()
    b = i1[:, 0].detach().to("cpu", torch.float32).numpy()
    flows = np.empty((a.shape[0], 2, *a.shape[1:]), np.float32)
    for k in range(a.shape[0]):
        # uint8 in: OpenCV then works on the same 0..255 float values as the torch backend.
        flow = algo.calc(a[k].astype(np.uint8), b[k].astype(np.uint8), None)  # (H, W, 2)
        flows[k] = flow.transpose(2, 0, 1)
    return torch.from_numpy(flows).to(i0.device)
