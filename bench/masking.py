"""MOFO masks for a batch, batched against a per-sample loop, on the CPU.

    PYTHONPATH=. .venv/bin/python bench/masking.py [--batch 64] [--repeats 50]

Both sides make the masks of one training batch at VideoMAE's ViT-B input (16 × 224 × 224,
tubelet 2, patch 16: 8 × 14 × 14 tokens), ratio 0.9, inside ratio 0.75, from one random motion
box per clip (pixels of the input): ``mofo.training.masking`` (``box_cells`` then ``mofo_mask``,
batched tensors) against a reference that works sample by sample in NumPy, as data loaders
usually do (map the box to cells, shuffle the inside and outside cells, take the counts, repeat
the mask over the time slots). Both give the same counts; the figures are medians over
``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import cpu_model
from mofo.training.masking import TokenGrid, box_cells, masked_per_slot, mofo_mask

GRID = TokenGrid()


def random_boxes(batch: int, rng: np.random.Generator) -> np.ndarray:
    """Boxes of 24 to 160 px a side anywhere in the 224 × 224 input."""
    w, h = rng.integers(24, 161, batch), rng.integers(24, 161, batch)
    x1, y1 = rng.integers(0, 224 - w + 1), rng.integers(0, 224 - h + 1)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)


def batched(boxes: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    inside = box_cells(torch.from_numpy(boxes), torch.ones(len(boxes), dtype=torch.bool), GRID)
    return mofo_mask(inside, GRID, 0.9, 0.75, gen)


def per_sample(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The reference: one sample at a time (same overlap rule and counts)."""
    slots, rows, cols = GRID.shape
    p = GRID.patch
    per_slot = masked_per_slot(GRID, 0.9)
    out = np.zeros((len(boxes), GRID.tokens), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        inside = np.zeros(rows * cols, dtype=bool)
        for r in range(rows):
            for c in range(cols):
                ox = min(x2, (c + 1) * p) - max(x1, c * p)
                oy = min(y2, (r + 1) * p) - max(y1, r * p)
                inside[r * cols + c] = ox > 0 and oy > 0 and ox * oy >= 0.5 * p * p
        if not inside.any():
            inside[int((y1 + y2) / 2 // p) * cols + int((x1 + x2) / 2 // p)] = True
        cells_in, cells_out = np.flatnonzero(inside), np.flatnonzero(~inside)
        take_in = max(min(math.ceil(0.75 * len(cells_in)), per_slot), per_slot - len(cells_out))
        mask = np.zeros(rows * cols, dtype=bool)
        mask[rng.permutation(cells_in)[:take_in]] = True
        mask[rng.permutation(cells_out)[: per_slot - take_in]] = True
        out[k] = np.tile(mask, slots)
    return out


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path, default=Path("bench/results/masking.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(args.batch, rng)
    ours, ref = batched(boxes, gen), per_sample(boxes, rng)
    inside = box_cells(torch.from_numpy(boxes), torch.ones(len(boxes), dtype=torch.bool), GRID)
    ours_in = (ours.view(args.batch, 8, 196) & inside).sum(-1)
    ref_in = (torch.from_numpy(ref).view(args.batch, 8, 196) & inside).sum(-1)
    assert torch.equal(ours.sum(1), torch.from_numpy(ref.sum(1))), "total counts differ"
    assert torch.equal(ours_in, ref_in), "inside counts differ"

    batched_s = timed(lambda: batched(random_boxes(args.batch, rng), gen), args.repeats)
    loop_s = timed(lambda: per_sample(random_boxes(args.batch, rng), rng), args.repeats)
    med_b, med_l = statistics.median(batched_s), statistics.median(loop_s)
    lines = [
        f"machine: {cpu_model()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}",
        f"MOFO masks for a batch of {args.batch} clips, {GRID.tokens} tokens each, ratio 0.9, "
        f"inside 0.75; medians of {args.repeats}",
        f"  batched (training.masking)   {med_b * 1e3:8.2f} ms",
        f"  per-sample loop (reference)  {med_l * 1e3:8.2f} ms",
        f"  batched is {med_l / med_b:.1f}x faster; same counts per sample "
        f"({int(ours.sum(1)[0])} hidden, inside {int(ours_in[0, 0])} of {int(inside[0, 0].sum())} "
        "in sample 0's slot 0)",
    ]
    print("\n".join(lines))
    args.json.write_text(
        json.dumps(
            {
                "batch": args.batch,
                "repeats": args.repeats,
                "batched_ms": med_b * 1e3,
                "loop_ms": med_l * 1e3,
                "ratio": med_l / med_b,
                "log": lines,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
