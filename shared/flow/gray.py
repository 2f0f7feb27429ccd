"""RGB → gray exactly as OpenCV's ``COLOR_RGB2GRAY`` on uint8: both flow backends see one input."""

from __future__ import annotations

import torch

# OpenCV's fixed-point luma weights for 8-bit input (0.299, 0.587, 0.114) · 2^15.
_WEIGHTS = (9798, 19235, 3735)
_SHIFT = 15


def rgb_to_gray(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB → (T, 1, H, W) float32 gray in [0, 255], bit-equal to OpenCV."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 frames, got {tuple(frames.shape)} {frames.dtype}"
        )
    x = frames.to(torch.int32)
    y = x[..., 0] * _WEIGHTS[0] + x[..., 1] * _WEIGHTS[1] + x[..., 2] * _WEIGHTS[2]
    y = (y + (1 << (_SHIFT - 1))) >> _SHIFT
    return y.to(torch.float32).unsqueeze(1)  # (T, 1, H, W)
