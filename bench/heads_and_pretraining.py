"""Pretrain → finetune → evaluate on the synthetic dataset, end to end through the `mofo`
commands: MOFO against tube (VideoMAE) pretraining and from scratch, the motion cross-attention
head against mean pooling (BENCHMARKS.md §10).

1. ``prepare`` (bench/mofo_vs_tube.py): the synthetic clips (8 motion directions, 64 x 64, 16
   frames; 20 % of them the evaluation split) and our pipeline's motion boxes for every clip as
   a cache export file (short side 64, every 2nd frame).
2. ``mofo pretrain`` with the tiny CPU config (``training/configs/pretrain_tiny_cpu.toml``) and
   ``--model``, ``--rate``, ``--targets``, MOFO masking and tube masking, 2 DeepSpeed processes
   each.
3. ``mofo finetune`` with the tiny CPU config for every pretraining (and none) × head (``mca``,
   ``mean``) × seed, 2 processes; model selection on 10 % of the training split.
4. ``mofo evaluate`` on the evaluation split, 2 temporal views (the frames are square, so one
   crop: three would be the same pixels).

    PYTHONPATH=. .venv/bin/python bench/heads_and_pretraining.py --clips 2000 \
        --model vit_tiny_patch8_tubelet2_32px --rate 4 --targets raw --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.mofo_vs_tube import MOTION, prepare

MOFO = str(Path(sys.executable).with_name("mofo"))
CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"
CHANCE = 100.0 / 8


def mofo(*args: str) -> float:
    """Run a mofo command; its wall time in seconds."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    t0 = time.perf_counter()
    subprocess.run([MOFO, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def common(data: Path, boxes: Path, args) -> list[str]:
    """Overrides both runs take: the data, its boxes, the model and the frame rate."""
    return [
        "--set",
        f"data.source={data / 'train.json'}",
        "--set",
        f"data.boxes={boxes}",
        "--set",
        f"data.motion.short_side={MOTION.short_side}",
        "--set",
        f"data.motion.stride={MOTION.stride}",
        "--set",
        f"data.rate={args.rate}",
        "--set",
        f"model.name={args.model}",
    ]


def pretrain(out: Path, data: Path, boxes: Path, kind: str, args) -> tuple[Path, float]:
    run = out / f"pretrain-{kind}"
    if (run / "model.pt").exists():
        return run, 0.0
    seconds = mofo(
        "pretrain",
        "--config",
        str(CONFIGS / "pretrain_tiny_cpu.toml"),
        "--nproc",
        "2",
        *common(data, boxes, args),
        "--set",
        f"masking.kind={kind}",
        "--set",
        f"model.norm_targets={str(args.targets == 'norm').lower()}",
        "--set",
        f"optim.epochs={args.pretrain_epochs}",
        "--set",
        f"run.out={run}",
    )
    return run, seconds


def finetune(
    out: Path, data: Path, boxes: Path, pretrained: Path | None, head: str, seed: int, args
) -> dict:
    name = f"finetune-{pretrained.name.removeprefix('pretrain-') if pretrained else 'scratch'}"
    run = out / f"{name}-{head}-seed{seed}"
    command = [
        "--config",
        str(CONFIGS / "finetune_tiny_cpu.toml"),
        *common(data, boxes, args),
        "--set",
        f"model.pretrained={pretrained / 'model.pt' if pretrained else ''}",
        "--set",
        f"model.head={head}",
        "--set",
        f"run.seed={seed}",
        "--set",
        f"optim.epochs={args.epochs}",
        "--set",
        f"run.out={run}",
        "--set",
        f"evaluate.source={data / 'validation.json'}",
        "--set",
        "evaluate.clips=2",
        "--set",
        "evaluate.crops=1",
    ]
    train_s = 0.0 if (run / "model.pt").exists() else mofo("finetune", "--nproc", "2", *command)
    eval_s = mofo("evaluate", *command)
    result = json.loads((run / "eval" / "results.json").read_text())
    return {
        "pretraining": pretrained.name.removeprefix("pretrain-") if pretrained else "none",
        "head": head,
        "seed": seed,
        "held_out_top1": result["held_out"].get("action_top1"),
        "top1": result["views"]["action_top1"],
        "top5": result["views"]["action_top5"],
        "first_view_top1": result["first_view"]["action_top1"],
        "clips": result["scored"],
        "finetune_s": round(train_s, 1),
        "evaluate_s": round(eval_s, 1),
        "run": str(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/heads_and_pretraining"))
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--model", default="vit_tiny_patch8_tubelet2_32px")
    parser.add_argument("--rate", type=int, default=4, help="frames between sampled frames")
    targets = "pretraining targets: normalised per tubelet (VideoMAE) or raw pixels"
    parser.add_argument("--targets", choices=["norm", "raw"], default="raw", help=targets)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=30, help="finetuning epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--json", type=Path, default=Path("bench/results/heads_and_pretraining.json")
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    data = prepare(out, args.clips)
    boxes = out / "boxes.jsonl.gz"
    pretrained: list[Path | None] = []
    timings = {}
    for kind in ("mofo", "tube"):
        run, seconds = pretrain(out, data, boxes, kind, args)
        print(f"pretrain {kind}: {seconds:.0f} s", flush=True)
        pretrained.append(run)
        timings[kind] = round(seconds, 1)
    pretrained.append(None)
    rows = []
    for seed in args.seeds:
        for source in pretrained:
            for head in ("mca", "mean"):
                row = finetune(out, data, boxes, source, head, seed, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(
        f"\n{args.model}, rate {args.rate}, {args.clips} clips (evaluation split "
        f"{args.clips // 5}); pretraining {args.pretrain_epochs} epochs ({args.targets} "
        f"targets), finetuning {args.epochs} epochs, seeds {args.seeds}; top-1 % over 2 views "
        f"(chance {CHANCE:.1f} %)"
    )
    print(f"{'pretraining':12s} {'head':5s} {'top-1 per seed':>24s} {'mean':>6s} {'top-5':>6s}")
    for source in ("mofo", "tube", "none"):
        for head in ("mca", "mean"):
            mine = [r for r in rows if r["pretraining"] == source and r["head"] == head]
            top1 = [r["top1"] for r in mine]
            print(
                f"{source:12s} {head:5s} {' '.join(f'{t:5.1f}' for t in top1):>24s} "
                f"{statistics.mean(top1):6.1f} "
                f"{statistics.mean(r['top5'] for r in mine):6.1f}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(
        json.dumps({**settings, "chance": CHANCE, "pretrain_s": timings, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
