"""Exact test images shared by the motion-box tests."""

from __future__ import annotations

import cv2
import numpy as np


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w) noise smoothed with a Gaussian of σ 1.2 px, stretched over 20..230 and rounded to
    whole grey levels: texture every flow and correlation can lock on to."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.2)
    return (20 + (noise - noise.min()) / (noise.max() - noise.min()) * 210).round()
