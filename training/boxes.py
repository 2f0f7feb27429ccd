"""A clip's motion boxes for the frames a training sample takes.

A box record holds boxes for the frames its settings sampled (``frame_indices``, source pixels);
training takes other frames (16 frames 2 apart, say) at another size. Each taken frame gets the
box of the nearest recorded frame (the earlier one on a tie), scaled to the decoded frame size.
A recorded frame without a box, and every frame of a record that fell back to the centre box (no
motion was found), gives no box: MOFO masking then falls back to tube masking for it, rather than
pretending the centre is where things move.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mofo.shared.record import BoxRecord


def boxes_for_frames(
    record: BoxRecord, frame_indices: Sequence[int], width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes (T, 4) float pixels of a ``width`` × ``height`` frame, valid (T,) bool) for the
    source frames ``frame_indices``."""
    taken = np.asarray(frame_indices, dtype=np.int64)
    count = len(taken)
    if record.fallback or not record.frame_indices:
        return torch.zeros(count, 4), torch.zeros(count, dtype=torch.bool)
    recorded = np.asarray(record.frame_indices, dtype=np.int64)
    order = np.argsort(recorded, kind="stable")
    recorded = recorded[order]
    after = np.clip(np.searchsorted(recorded, taken), 1, len(recorded) - 1)
    before = after - 1
    if len(recorded) == 1:
        nearest = np.zeros(count, dtype=np.int64)
    else:
        nearest = np.where(taken - recorded[before] <= recorded[after] - taken, before, after)
    source = [record.frames[i] for i in order[nearest]]
    valid = torch.tensor([b is not None for b in source], dtype=torch.bool)
    boxes = torch.tensor(
        [b if b is not None else [0, 0, 0, 0] for b in source], dtype=torch.float32
    ).reshape(count, 4)
    scale = torch.tensor([width / record.width, height / record.height] * 2)
    return boxes * scale, valid
