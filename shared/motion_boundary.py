"""Motion boundaries (MOFO eq. 1): the magnitude of the flow's spatial derivatives.

m = sqrt(u_x² + u_y² + v_x² + v_y²), from *both* flow components. Differentiating the flow
cancels camera translation exactly; zoom and rotation leave a small constant.
"""

from __future__ import annotations

import torch
from kornia.filters import spatial_gradient


def motion_boundary(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow → (B, 1, H, W) motion-boundary magnitude.

    Derivatives are central differences (Kornia's ``diff`` gradient) with replicated borders, so a
    constant or purely translating flow gives exactly zero everywhere.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected flow of shape (B, 2, H, W), got {tuple(flow.shape)}")
    grads = spatial_gradient(flow.float(), mode="diff", order=1)  # (B, 2, 2, H, W): (u, v) × (x, y)
    return grads.square().sum(dim=(1, 2)).sqrt().unsqueeze(1)


def temporal_average(maps: torch.Tensor, window: int) -> torch.Tensor:
    """Average (T, 1, H, W) maps over ``window`` neighbours in time (odd), over those that exist."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    if window == 1 or maps.shape[0] == 1:
        return maps
    half = window // 2
    t = maps.shape[0]
    csum = torch.cat((maps.new_zeros(1, *maps.shape[1:]), maps.cumsum(dim=0)))
    idx = torch.arange(t, device=maps.device)
    lo = (idx - half).clamp(min=0)
    hi = (idx + half + 1).clamp(max=t)
    counts = (hi - lo).to(maps.dtype).view(-1, 1, 1, 1)
    return (csum[hi] - csum[lo]) / counts
