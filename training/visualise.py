"""Reconstruction images of the masked autoencoder, like the MOFO paper's Figs. 4–5 and VideoMAE's
visualisation: for one clip, three rows of frames — the original, the masked input (hidden
patches grey), the reconstruction (visible patches from the original, hidden ones from the
model's prediction) — with the motion box drawn on each frame where it is valid.

The model predicts each hidden token's pixels normalised over its tubelet per channel
(``VideoMAE.targets``). A prediction is mapped back to pixels with that token's own mean and
standard deviation taken from the original clip, as VideoMAE's visualisation does: the image shows
the predicted pattern at the original's brightness and contrast.

Tensors are one clip: ``video`` (C, T, H, W) normalised model input, ``mask`` (N,) bool
(True = hidden, tokens flattened T'·H'·W'), ``pred`` (N_hidden, pixels_per_token) in the order of
the hidden tokens. Boxes are ``[x1, y1, x2, y2]`` float pixels of the model input, x2/y2
exclusive, one per frame (T, 4) with a (T,) ``valid`` flag, as the transforms give them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mofo.shared.render import draw_box
from mofo.training import models
from mofo.training.datasets import MEAN as IMAGENET_MEAN
from mofo.training.datasets import STD as IMAGENET_STD
from mofo.training.masking import TokenGrid
from mofo.training.models import TARGET_EPS

GREEN = (0, 255, 0)
GREY = 0.5  # what a hidden patch shows in the masked-input row
GAP = 2  # pixels between the cells of one clip's image
CLIP_GAP = 8  # pixels between the clips of a saved batch
BACKGROUND = 255  # gaps are white

ArrayLike = torch.Tensor | np.ndarray | Sequence


def patchify(video: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """One clip's pixels as tokens, (C, T, H, W) → (N, pixels_per_token), in the order of
    ``VideoMAE.targets`` (tokens T'·H'·W'; within one, tubelet frame, row, column, channel), not
    normalised."""
    if video.ndim != 4 or tuple(video.shape[1:]) != (grid.frames, grid.height, grid.width):
        raise ValueError(
            f"video must be (C, {grid.frames}, {grid.height}, {grid.width}), "
            f"got {tuple(video.shape)}"
        )
    return models.patchify(video[None], grid)[0].flatten(1)


def unpatchify(tokens: torch.Tensor, grid: TokenGrid, channels: int = 3) -> torch.Tensor:
    """The inverse of ``patchify``: (N, pixels_per_token) → (C, T, H, W)."""
    per_token = grid.tubelet * grid.patch * grid.patch * channels
    if tuple(tokens.shape) != (grid.tokens, per_token):
        raise ValueError(f"tokens must be ({grid.tokens}, {per_token}), got {tuple(tokens.shape)}")
    t, h, w = grid.shape
    x = tokens.reshape(t, h, w, grid.tubelet, grid.patch, grid.patch, channels)
    x = x.permute(6, 0, 3, 1, 4, 2, 5)  # (C, T', tubelet, H', patch, W', patch)
    return x.reshape(channels, grid.frames, grid.height, grid.width)


def reconstruct(
    video: torch.Tensor,
    mask: torch.Tensor,
    pred: torch.Tensor,
    grid: TokenGrid,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    fill: float = GREY,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(original, masked input, reconstruction), each (C, T, H, W) float in [0, 1].

    The masked input shows ``fill`` in the hidden patches; the reconstruction keeps the visible
    patches of the original and maps each hidden token's prediction back to pixels with the
    token's own mean and (unbiased) standard deviation in the original.
    """
    c = len(mean)
    if len(std) != c or video.ndim != 4 or video.shape[0] != c:
        raise ValueError(
            f"video must be ({c}, T, H, W) for {c} channel means and {len(std)} stds, "
            f"got {tuple(video.shape)}"
        )
    if tuple(mask.shape) != (grid.tokens,):
        raise ValueError(f"mask must be ({grid.tokens},), got {tuple(mask.shape)}")
    mask = mask.to(device=video.device, dtype=torch.bool)
    hidden = int(mask.sum())
    per_token = grid.tubelet * grid.patch * grid.patch * c
    if tuple(pred.shape) != (hidden, per_token):
        raise ValueError(
            f"pred must be ({hidden}, {per_token}) for a mask hiding {hidden} tokens, "
            f"got {tuple(pred.shape)}"
        )

    video = video.float()
    shape = (c, 1, 1, 1)
    m = torch.tensor(mean, dtype=video.dtype, device=video.device).view(shape)
    s = torch.tensor(std, dtype=video.dtype, device=video.device).view(shape)
    original = (video * s + m).clamp(0, 1)
    tokens = patchify(original, grid)  # (N, pixels_per_token)
    is_hidden = mask[:, None]
    masked = torch.where(is_hidden, tokens.new_tensor(fill), tokens)

    pixels = tokens[mask].reshape(hidden, per_token // c, c)  # (N_hidden, tubelet·patch², C)
    token_mean = pixels.mean(dim=1, keepdim=True)
    token_std = pixels.var(dim=1, unbiased=True, keepdim=True).sqrt()
    predicted = pred.to(pixels).reshape(pixels.shape) * (token_std + TARGET_EPS) + token_mean
    filled = torch.zeros_like(tokens)
    filled[mask] = predicted.reshape(hidden, per_token)
    rebuilt = torch.where(is_hidden, filled, tokens)
    return (
        original,
        unpatchify(masked, grid, c),
        unpatchify(rebuilt, grid, c).clamp(0, 1),
    )


def reconstruction_image(
    video: torch.Tensor,
    mask: torch.Tensor,
    pred: torch.Tensor,
    grid: TokenGrid,
    boxes: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: int = 2,
    frames: int | None = None,
    fill: float = GREY,
    colour: tuple[int, int, int] = GREEN,
    box_width: int = 2,
) -> Image.Image:
    """One clip as 3 rows (original, masked input, reconstruction) × one column per frame (all,
    or ``frames`` evenly spaced), each cell upscaled ``scale`` times (nearest neighbour),
    ``GAP`` pixels apart, with the box drawn where it is valid.

    ``boxes`` is (T, 4) or one box (4,) for the clip; ``valid`` (T,) or one flag (all valid when
    left out).
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    video, mask, pred = _cpu(video), _cpu(mask).to(torch.bool), _cpu(pred)
    rows = reconstruct(video, mask, pred, grid, mean, std, fill)
    picked = pick_frames(grid.frames, frames)
    per_frame, frame_valid = frame_boxes(boxes, valid, grid.frames)
    cells = []
    for clip in rows:
        pixels = to_uint8(clip)  # (T, H, W, 3)
        row = []
        for t in picked:
            cell = pixels[t].repeat(scale, axis=0).repeat(scale, axis=1)
            if per_frame is not None and frame_valid[t]:
                cell = draw_box(cell, per_frame[t] * scale, colour, box_width, cover=True)
            row.append(cell)
        cells.append(stack_images(row, GAP, axis=1))
    return Image.fromarray(stack_images(cells, GAP, axis=0))


def save_reconstructions(
    path: str | Path,
    videos: torch.Tensor,
    masks: torch.Tensor,
    preds: torch.Tensor,
    grid: TokenGrid,
    boxes: ArrayLike | None = None,
    valid: ArrayLike | None = None,
    count: int = 4,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: int = 2,
    frames: int | None = None,
    fill: float = GREY,
) -> Path:
    """The images of a batch's first ``count`` clips, one under another ``CLIP_GAP`` pixels
    apart, saved as one PNG at ``path`` (parent folders made); returns the path.

    ``videos`` (B, C, T, H, W), ``masks`` (B, N), ``preds`` (B, N_hidden, pixels_per_token) as
    the model gives them, on any device and dtype; ``boxes`` (B, T, 4) or (B, 4), ``valid``
    (B, T) or (B,).
    """
    if videos.ndim != 5 or masks.ndim != 2 or preds.ndim != 3:
        raise ValueError(
            "videos, masks and preds must be (B, C, T, H, W), (B, N) and (B, N_hidden, P), "
            f"got {tuple(videos.shape)}, {tuple(masks.shape)} and {tuple(preds.shape)}"
        )
    b = videos.shape[0]
    if masks.shape[0] != b or preds.shape[0] != b:
        raise ValueError(
            f"videos, masks and preds must share the batch size, got {tuple(videos.shape)}, "
            f"{tuple(masks.shape)} and {tuple(preds.shape)}"
        )
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    n = min(count, b)
    videos, masks, preds = _cpu(videos[:n]), _cpu(masks[:n]), _cpu(preds[:n])
    boxes = None if boxes is None else _numpy(boxes)
    valid = None if valid is None else _numpy(valid)
    images = [
        np.asarray(
            reconstruction_image(
                videos[i],
                masks[i],
                preds[i],
                grid,
                None if boxes is None else boxes[i],
                None if valid is None else valid[i],
                mean,
                std,
                scale,
                frames,
                fill,
            )
        )
        for i in range(n)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stack_images(images, CLIP_GAP, axis=0)).save(path, format="PNG")
    return path


def _cpu(x: torch.Tensor) -> torch.Tensor:
    """Detached, on the CPU, float32 (bool stays bool)."""
    x = x.detach().cpu()
    return x if x.dtype == torch.bool else x.float()


def _numpy(x: ArrayLike) -> np.ndarray | ArrayLike:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) in [0, 1], C 1 or 3 → (T, H, W, 3) uint8."""
    if clip.shape[0] not in (1, 3):
        raise ValueError(f"can show 1 or 3 channels, got {tuple(clip.shape)}")
    pixels = (clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def pick_frames(total: int, frames: int | None) -> list[int]:
    """All frames, or at most ``frames`` of them evenly spaced, first and last included."""
    if frames is None:
        return list(range(total))
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return np.linspace(0, total - 1, min(frames, total)).round().astype(int).tolist()


def frame_boxes(
    boxes: ArrayLike | None, valid: ArrayLike | None, frames: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Boxes (T, 4) float and flags (T,) bool, broadcasting one box or flag to every frame."""
    if boxes is None:
        return None, np.zeros(frames, dtype=bool)
    boxes = np.asarray(_numpy(boxes), dtype=np.float64)
    if boxes.shape == (4,):
        boxes = np.broadcast_to(boxes, (frames, 4))
    if boxes.shape != (frames, 4):
        raise ValueError(f"boxes must be ({frames}, 4) or (4,), got {boxes.shape}")
    flags = np.ones(frames, dtype=bool) if valid is None else np.asarray(_numpy(valid), dtype=bool)
    if flags.shape == ():
        flags = np.broadcast_to(flags, (frames,))
    if flags.shape != (frames,):
        raise ValueError(f"valid must be ({frames},) or one flag, got {flags.shape}")
    return boxes, flags


def stack_images(arrays: Sequence[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """Images (H, W, 3) uint8 side by side along ``axis`` (0 down, 1 across), ``gap`` pixels of
    background between them."""
    parts = []
    for i, array in enumerate(arrays):
        if i:
            shape = list(array.shape)
            shape[axis] = gap
            parts.append(np.full(shape, BACKGROUND, dtype=np.uint8))
        parts.append(array)
    return np.concatenate(parts, axis=axis)


def confusion_image(
    matrix: ArrayLike, names: Sequence[str] | None = None, cell: int | None = None
) -> Image.Image:
    """A confusion matrix (rows true, columns predicted) as a picture: each row normalised by its
    clips, white (0) to dark blue (1), a cell ``cell`` pixels wide (about 640 pixels in all by
    default). Class indices (or ``names``, for up to 40 classes) label the rows."""
    counts = np.asarray(_numpy(matrix), dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 1:
        raise ValueError(f"matrix must be square (C, C), got {counts.shape}")
    classes = counts.shape[0]
    cell = cell or max(2, 640 // classes)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    pixels = (white + (blue - white) * share[..., None]).round().astype(np.uint8)
    pixels = pixels.repeat(cell, axis=0).repeat(cell, axis=1)
    if classes > 40:
        return Image.fromarray(pixels)
    from PIL import ImageDraw

    labels = [str(n) for n in (names if names is not None else range(classes))]
    margin = 6 * min(32, max(len(label) for label in labels)) + 8
    canvas = Image.new("RGB", (margin + pixels.shape[1], pixels.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(pixels), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i in range(1, classes):  # faint lines between the rows, where the labels are
        draw.line([(0, i * cell), (margin - 2, i * cell)], fill=(230, 230, 230))
    for i, label in enumerate(labels):
        draw.text((2, i * cell + max(0, cell // 2 - 5)), label[:32], fill=(0, 0, 0))
    return canvas
