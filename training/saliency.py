"""Grad-CAM saliency maps of a finetuned classifier, as the MOFO paper's Figs. 2 and 6 draw them.

Grad-CAM (Selvaraju et al., 2017) on a ViT: take the tokens one encoder block puts out, A
(N, D), and the gradient of the chosen class's logit with respect to them; each channel's weight
is its gradient averaged over the tokens, and a token's saliency is ReLU(Σ_d w_d · A_nd). The map
lives on the token grid (T', H', W'); it is scaled to [0, 1] and spread over the tubelet's frames
and patch pixels. The paper takes the fifth block of ViT-Base.

``saliency_image`` writes, for one clip, a row of frames with the motion box drawn and a row of
the same frames under the map (red: salient), so where the model looked can be checked against
where the motion was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mofo.shared.render import draw_box
from mofo.training.datasets import denormalise
from mofo.training.visualise import (
    BACKGROUND,
    GAP,
    GREEN,
    frame_boxes,
    pick_frames,
    stack_images,
    to_uint8,
)


def grad_cam(
    model: torch.nn.Module,
    video: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    task: str,
    layer: int,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of ``model`` (a ``VideoClassifier``) for a batch: (maps (B, T', H', W') in
    [0, 1], the classes they explain (B,)).

    ``layer`` is the encoder block, counted from 1; ``target`` the class per clip (default: the
    predicted one). A clip whose map is zero everywhere (no token pushes the class up) gets
    zeros.
    """
    blocks = model.encoder.blocks
    if not 1 <= layer <= len(blocks):
        raise ValueError(f"layer must be 1..{len(blocks)} (the encoder's blocks), got {layer}")
    kept: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        kept.append(output)

    hook = blocks[layer - 1].register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(video, boxes, valid)[task].float()
            if target is None:
                target = logits.argmax(dim=1)
            chosen = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            model.zero_grad(set_to_none=True)
            chosen.backward()
    finally:
        hook.remove()
        model.train(was_training)
    tokens = kept[0]  # (B, N, D)
    weights = tokens.grad.float().mean(dim=1, keepdim=True)  # (B, 1, D)
    cam = F.relu((tokens.detach().float() * weights).sum(dim=-1))  # (B, N)
    cam = cam / cam.amax(dim=1, keepdim=True).clamp(min=1e-12)
    grid = model.cfg.encoder.grid
    model.zero_grad(set_to_none=True)
    return cam.reshape(-1, *grid.shape), target.detach().cpu()


def upsample(cam: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """A token-grid map (T', H', W') spread over the clip's pixels (T, H, W): trilinear."""
    return F.interpolate(
        cam[None, None].float(), size=(frames, height, width), mode="trilinear", align_corners=False
    )[0, 0].clamp(0, 1)


def heat_colours(value: np.ndarray) -> np.ndarray:
    """(…) in [0, 1] → (…, 3) uint8: dark blue through cyan, yellow to red (a jet-like ramp)."""
    v = np.clip(value, 0.0, 1.0)[..., None]
    stops = np.array(
        [[0, 0, 128], [0, 128, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float64
    )
    position = v[..., 0] * (len(stops) - 1)
    lo = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = (position - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).round().astype(np.uint8)


def saliency_image(
    video: torch.Tensor,
    cam: torch.Tensor,
    boxes: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    frames: int | None = 8,
    alpha: float = 0.5,
) -> np.ndarray:
    """One clip's picture (H', W', 3) uint8: its frames with the box (top row) and the same
    frames under the map (bottom row), ``alpha`` the map's weight.

    ``video`` is the model input (C, T, H, W), normalised; ``cam`` the token-grid map
    (T', H', W'); ``boxes`` (T, 4) pixels with ``valid`` (T,).
    """
    t, h, w = video.shape[1:]
    clip = to_uint8(denormalise(video.detach().float().cpu()))  # (T, H, W, 3)
    heat = heat_colours(upsample(cam.detach().cpu(), t, h, w).numpy())  # (T, H, W, 3)
    shown = pick_frames(t, frames)
    box_of, drawn = frame_boxes(boxes, valid, t)
    top, bottom = [], []
    for i in shown:
        mixed = (clip[i] * (1 - alpha) + heat[i] * alpha).round().astype(np.uint8)
        if box_of is not None and drawn[i]:
            top.append(draw_box(clip[i], box_of[i], GREEN, cover=True))
            bottom.append(draw_box(mixed, box_of[i], (255, 255, 255), cover=True))
        else:
            top.append(clip[i])
            bottom.append(mixed)
    return stack_images(
        [stack_images(top, GAP, axis=1), stack_images(bottom, GAP, axis=1)], GAP, axis=0
    )


def save_saliency(path: Path, images: Sequence[np.ndarray]) -> Path:
    """Clips' pictures stacked top to bottom into one PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max(i.shape[1] for i in images)
    padded = [
        np.pad(i, ((0, 0), (0, width - i.shape[1]), (0, 0)), constant_values=BACKGROUND)
        for i in images
    ]
    Image.fromarray(stack_images(padded, 4 * GAP, axis=0)).save(path)
    return path
