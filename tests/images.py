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


def ious_on_and_off(frames: np.ndarray, truth: list, params, **off) -> dict[str, list[float]]:
    """Per-frame IoU of ``analyse_frames`` boxes with ``truth``, at ``params`` ("on") and at
    ``params`` with the ``off`` fields set ("off"): a setting's effect on the same frames."""
    from dataclasses import replace

    from mofo.shared.pipeline import analyse_frames
    from mofo.shared.record import box_iou

    scores = {}
    for name, p in (("on", params), ("off", replace(params, **off))):
        boxes = analyse_frames(frames, p).boxes
        scores[name] = [box_iou(b, t) for b, t in zip(boxes, truth, strict=True)]
    return scores
