"""Tube masking against MOFO masking, equal steps, on the synthetic dataset (BENCHMARKS.md §8).

1. ``write_dataset``: clips of a textured object moving over a textured background, 64 x 64, with
   the mover's true box in every frame.
2. Motion boxes from our pipeline (TV-L1 → motion boundaries → regions; ``analyse_clip`` at short
   side 64, every 2nd frame) for every clip, written as a cache export file: what `mofo cache
   build` + `mofo cache export` give, without a Redis.
3. ``mofo pretrain`` twice with one config and seed, differing only in ``masking.kind``: tube
   (VideoMAE) and MOFO (75 % of the tubes in the motion box always hidden), one DeepSpeed process
   on the CPU each, the same number of steps.
4. Both models reconstruct the held-out clips under the same masks: tube masks (90 %), and masks
   that hide every tube in the true box (what the paper's MOFO masking aims at: the model must
   infer the moving object). Errors of the hidden tokens inside the true box and outside it, as
   the loss (MSE of per-tubelet normalised pixels) and as pixel RMSE in grey levels (predictions
   mapped back with each tubelet's own mean and spread, as in the reconstruction images).

    PYTHONPATH=. .venv/bin/python bench/mofo_vs_tube.py [--steps 600] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from mofo.shared.cache_files import write_records
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord
from mofo.shared.sources import open_source
from mofo.training.datasets import MEAN, STD, CachedBoxes, VideoClips, collate, denormalise
from mofo.training.masking import box_cells, mofo_mask, tube_mask
from mofo.training.models import TARGET_EPS, MAEConfig, VideoMAE, patchify
from mofo.training.synth import TRUTH_PARAMS, truth_records, write_dataset

MODEL = "vit_tiny_patch8_tubelet2_64px"
MOTION = MotionParams(short_side=64, stride=2)
MOFO = str(Path(sys.executable).with_name("mofo"))


def _boxes(job: tuple[Path, str]) -> BoxRecord:
    from mofo.shared.pipeline import analyse_clip

    path, video = job
    return analyse_clip(path, MOTION, name=video).record


def prepare(out: Path, clips: int) -> Path:
    """The dataset, its motion-box export and its truth export (made once)."""
    data = out / "synth"
    if not (data / "labels.json").exists():
        write_dataset(data, clips=clips, size=64, frames=16, seed=0)
    boxes = out / "boxes.jsonl.gz"
    if not boxes.exists():
        splits = [open_source(data / f"{split}.json") for split in ("train", "validation")]
        jobs = [(s.root / i.path, i.video) for s in splits for i in s.items]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            records = list(pool.map(_boxes, jobs))
        write_records(boxes, records)
        fallback = sum(r.fallback for r in records)
        print(
            f"motion boxes for {len(records)} clips in {time.perf_counter() - t0:.0f} s "
            f"({fallback} fell back to the centre box)"
        )
    write_records(out / "truth.jsonl.gz", truth_records(data))
    return data


def train(
    out: Path, data: Path, kind: str, steps: int, seed: int, batch: int, norm_targets: bool
) -> Path:
    targets = "norm" if norm_targets else "raw"
    run = out / f"{kind}-{targets}-seed{seed}"
    if (run / "model.pt").exists():
        return run
    config = out / f"{run.name}.toml"
    config.write_text(f"""
[model]
name = "{MODEL}"
norm_targets = {str(norm_targets).lower()}
[data]
source = "{data / "train.json"}"
boxes = "{out / "boxes.jsonl.gz"}"
motion = {{ short_side = {MOTION.short_side}, stride = {MOTION.stride} }}
workers = 2
[masking]
kind = "{kind}"
ratio = 0.9
inside_ratio = 0.75
[optim]
batch_size = {batch}
base_lr = 0.1
warmup_epochs = 2
epochs = 100000
max_steps = {steps}
[run]
out = "{run}"
seed = {seed}
precision = "fp32"
save_every = {steps}
log_every = 50
images_every = {steps}
""")
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    t0 = time.perf_counter()
    subprocess.run([MOFO, "pretrain", "--config", str(config)], env=env, check=True)
    print(f"{run.name}: {steps} steps in {time.perf_counter() - t0:.0f} s")
    return run


@torch.no_grad()
def evaluate(run: Path, data: Path, out: Path, mask_seeds: int) -> dict[str, dict[str, float]]:
    """Errors of hidden tokens inside / outside the true box, per kind of evaluation mask."""
    saved = torch.load(run / "model.pt", weights_only=False)
    cfg = MAEConfig.from_dict(saved["model_config"])
    model = VideoMAE(cfg)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    grid = cfg.grid
    source = open_source(data / "validation.json")
    truth = CachedBoxes(str(out / "truth.jsonl.gz"), TRUTH_PARAMS)
    clips = VideoClips(
        source.items, source.root, truth, frames=grid.frames, rate=2, size=grid.height, train=False
    )
    batch = collate(clips.__getitems__(list(range(len(clips)))))
    video, b = batch["video"], batch["video"].shape[0]
    inside = box_cells(batch["boxes"], batch["valid"], grid)  # (B, T', cells)
    inside_tokens = inside.flatten(1)
    pixels = patchify(denormalise(video), grid)  # (B, N, P, C) in [0, 1]
    mean = pixels.mean(dim=2, keepdim=True)
    spread = pixels.var(dim=2, unbiased=True, keepdim=True).sqrt() + TARGET_EPS
    targets = model.targets(video)
    results = {}
    for name in ("tube masks", "box hidden"):
        sums = {
            k: torch.zeros(()) for k in ("in_loss", "out_loss", "in_sq", "out_sq", "in_n", "out_n")
        }
        for s in range(mask_seeds):
            gen = torch.Generator().manual_seed(1000 + s)
            if name == "tube masks":
                mask = tube_mask(b, grid, 0.9, gen)
            else:
                mask = mofo_mask(inside, grid, 0.9, 1.0, gen)
            _, pred = model(video, mask)
            hidden = mask.sum(1)[0]
            target = targets[mask].reshape(b, hidden, -1)
            loss = (pred - target).pow(2).mean(-1)  # (B, hidden)
            shape = pixels[mask].reshape(b, hidden, -1, pixels.shape[-1])
            if cfg.norm_targets:  # back with each tubelet's own mean and spread
                scale = spread[mask].reshape(b, hidden, 1, -1)
                shift = mean[mask].reshape(b, hidden, 1, -1)
            else:  # back from the input's normalisation
                scale, shift = torch.tensor(STD), torch.tensor(MEAN)
            back = pred.reshape(shape.shape) * scale + shift
            sq = (back.clamp(0, 1) - shape).pow(2).mean((-1, -2)) * 255**2  # grey levels²
            where = inside_tokens[mask].reshape(b, hidden)
            sums["in_loss"] += loss[where].sum()
            sums["out_loss"] += loss[~where].sum()
            sums["in_sq"] += sq[where].sum()
            sums["out_sq"] += sq[~where].sum()
            sums["in_n"] += where.sum()
            sums["out_n"] += (~where).sum()
        results[name] = {
            "loss_inside": float(sums["in_loss"] / sums["in_n"]),
            "loss_outside": float(sums["out_loss"] / sums["out_n"]),
            "rmse_inside": float((sums["in_sq"] / sums["in_n"]).sqrt()),
            "rmse_outside": float((sums["out_sq"] / sums["out_n"]).sqrt()),
            "hidden_inside": int(sums["in_n"]),
            "hidden_outside": int(sums["out_n"]),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/mofo_vs_tube"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mask-seeds", type=int, default=5)
    parser.add_argument(
        "--targets",
        choices=["norm", "raw"],
        nargs="+",
        default=["norm", "raw"],
        help="per-tubelet normalised pixels (VideoMAE) and/or raw pixels",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/mofo_vs_tube.json"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    data = prepare(out, args.clips)
    table = []
    for targets in args.targets:
        for seed in args.seeds:
            for kind in ("tube", "mofo"):
                run = train(out, data, kind, args.steps, seed, args.batch, targets == "norm")
                for masks, figures in evaluate(run, data, out, args.mask_seeds).items():
                    table.append(
                        {
                            "targets": targets,
                            "pretraining": kind,
                            "seed": seed,
                            "eval masks": masks,
                            **figures,
                        }
                    )
    print(
        f"\n{MODEL}, {args.steps} steps x batch {args.batch}, seeds {args.seeds}; errors of "
        f"hidden tokens, {args.clips // 5} held-out clips x {args.mask_seeds} masks"
    )
    print(
        f"{'targets':7s} {'pretraining':12s} {'seed':>4s} {'eval masks':12s} {'loss in':>8s} "
        f"{'loss out':>8s} {'RMSE in':>8s} {'RMSE out':>8s}"
    )
    for row in table:
        print(
            f"{row['targets']:7s} {row['pretraining']:12s} {row['seed']:4d} "
            f"{row['eval masks']:12s} {row['loss_inside']:8.4f} {row['loss_outside']:8.4f} "
            f"{row['rmse_inside']:8.2f} {row['rmse_outside']:8.2f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model": MODEL,
                "steps": args.steps,
                "batch": args.batch,
                "clips": args.clips,
                "rows": table,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
