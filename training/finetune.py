"""MOFO finetuning under DeepSpeed (the paper's §2.3): ``mofo finetune --config FILE``.

The pretrained encoder (``model.pt`` of ``mofo pretrain``, or none: from scratch) with the motion
cross-attention head or mean pooling, trained on the labelled clips of a source (SSV2: 174
actions; Epic-Kitchens-100: 97 verbs and 300 nouns) with VideoMAE's recipe (its SSV2 script):
base lr 5e-4 × batch / 256, layer-wise lr decay 0.75, drop path 0.1, TSN segment sampling,
random resized crops, RandAugment ``rand-m7-n4-mstd0.5-inc1``, random erasing 0.25, Mixup /
CutMix and label smoothing 0.1, classifiers initialised × 0.001, every augmentation moving the
motion boxes with the pixels. Every random draw is seeded by where it is in the run (samples by
(seed, epoch, clip); Mixup, drop path and dropout by (seed, step, micro-step, rank)), so a resumed
run goes on exactly as the run that was never stopped.

Model selection uses a held-out part of the training split (``data.holdout``, drawn by the seed),
never the evaluation split: after every epoch the model is scored there (top-1 of the first
task) and the best is kept as ``best.pt`` (and, at the end, exported to ``export/``).
Checkpoints, resuming, ``log.jsonl``, TensorBoard and the progress bar work as in pretraining;
``model.pt`` is the last model. ``model.pretrained`` may also name a VideoMAE checkpoint
(``training/pretrained.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mofo.training.augment import RandAugmentSettings
from mofo.training.classifier import (
    ClassifierConfig,
    VideoClassifier,
    param_groups,
)
from mofo.training.data import open_labelled, sampling_of
from mofo.training.finetune_config import FinetuneConfig, load_config
from mofo.training.finetune_config import check_inputs as check_paths
from mofo.training.mixing import MixSettings, mix_batch, smooth_targets
from mofo.training.models import config
from mofo.training.runs import (
    Board,
    EpochSampler,
    RunLog,
    StepLoop,
    board_dir,
    data_loader,
    ds_config,
    init_processes,
    learning_rate,
    load_latest,
    plan_steps,
    process_main,
    resolve_precision,
    seed_of,
)


def split_holdout(count: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and held-out indices: a permutation by ``seed``, its first ``share`` held out."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(share * count))
    return sorted(order[held:]), sorted(order[:held])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def build_data(cfg: FinetuneConfig):
    """Training and held-out datasets of the config's source, and the tasks' classes."""
    from mofo.training.datasets import VideoClips

    d = cfg.data
    source, boxes, classes = open_labelled(d)
    grid = config(cfg.model.name).grid
    train_idx, held_idx = split_holdout(len(source.items), d.holdout, cfg.run.seed)
    a = cfg.augment
    augment = None
    if a.randaugment:
        augment = RandAugmentSettings(a.ops, a.magnitude, a.magnitude_std, a.prob)
    common = dict(
        frames=grid.frames,
        rate=d.rate,
        size=grid.height,
        sampling=sampling_of(d, source.kind),
        decode_short_side=d.decode_short_side,
        seed=cfg.run.seed,
        max_replacements=d.max_replacements,
    )
    flip = d.flip if d.flip is not None else source.kind != "ssv2"
    train = VideoClips(
        [source.items[i] for i in train_idx],
        source.root,
        boxes,
        train=True,
        augment=augment,
        flip=flip,
        crop=d.crop,
        erasing=a.erasing,
        **common,
    )
    held = VideoClips(
        [source.items[i] for i in held_idx], source.root, boxes, train=False, **common
    )
    return train, held, classes


@torch.no_grad()
def score(engine, loader, rank: int, world: int, dtype) -> dict:
    """Every rank scores its share of the held-out clips (``loader``); rank 0 gets the summary
    of all of them."""
    from mofo.training.metrics import summary

    engine.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    labels: dict[str, list[torch.Tensor]] = {}
    for b in loader:
        out = engine(
            b["video"].to(engine.device, dtype=dtype),
            b["boxes"].to(engine.device),
            b["valid"].to(engine.device),
        )
        for task, value in out.items():
            logits.setdefault(task, []).append(value.float().cpu())
            labels.setdefault(task, []).append(b["labels"][task])
    engine.train()
    parts: list[Any] = [None] * world
    mine_out = {t: (torch.cat(logits[t]), torch.cat(labels[t])) for t in logits}
    torch.distributed.all_gather_object(parts, mine_out)
    if rank != 0:
        return {}
    tasks = parts[0].keys()
    all_logits = {t: torch.cat([p[t][0] for p in parts if t in p]) for t in tasks}
    all_labels = {t: torch.cat([p[t][1] for p in parts if t in p]) for t in tasks}
    return summary(all_logits, all_labels)


def check_inputs(cfg: FinetuneConfig) -> None:
    """What the command line checks before any process starts: the source and the pretrained
    weights exist, and those weights are readable and fit the encoder (a wrong file is told
    once, not by every process after start-up)."""
    check_paths(cfg)
    if cfg.model.pretrained:
        from mofo.training.pretrained import check_fits, read_encoder

        check_fits(read_encoder(Path(cfg.model.pretrained)), config(cfg.model.name))


def finetune(cfg: FinetuneConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) the finetuning the config describes; the best held-out figures."""
    import deepspeed
    from rich.console import Console

    from mofo.training.datasets import collate
    from mofo.training.export import EXPORT_DIR, read_run_file, write_export
    from mofo.training.pretrained import load_encoder, read_encoder

    check_paths(cfg)
    rank, world, _ = init_processes()
    out = Path(cfg.run.out)
    checkpoints = out / "checkpoints"
    if rank == 0:
        checkpoints.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    console = Console(stderr=True, soft_wrap=True)
    log = RunLog(out / "log.jsonl", rank == 0)

    train, held, classes = build_data(cfg)
    o, m = cfg.optim, cfg.model
    plan = plan_steps(len(train), world, o, cfg.data.source)

    # The encoder normalises its tokens unless it comes from a VideoMAE mean-pooling classifier.
    init = read_encoder(Path(m.pretrained)) if m.pretrained else None
    model_cfg = ClassifierConfig(
        encoder=config(m.name, drop_path=m.drop_path, token_norm=init is None or init.token_norm),
        classes=classes,
        head=m.head,
        mca_heads=m.mca_heads,
        mca_depth=m.mca_depth,
        mca_mlp_ratio=m.mca_mlp_ratio,
        dropout=m.dropout,
        min_overlap=m.min_overlap,
        init_scale=m.init_scale,
    )
    torch.manual_seed(cfg.run.seed)
    model = VideoClassifier(model_cfg)
    missing = load_encoder(model, init) if init is not None else []
    groups = param_groups(model, o.weight_decay, o.layer_decay)
    for g in groups:
        g["lr"] = plan.peak * g["lr_scale"]
        del g["names"]
    optimizer = torch.optim.AdamW(groups, lr=plan.peak, betas=o.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: learning_rate(s, plan.peak, o.min_lr, plan.warmup, plan.total) / plan.peak,
    )
    precision, dtype = resolve_precision(cfg.run.precision)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=ds_config(
            o.batch_size, o.grad_accum, cfg.run.zero_stage, precision, o.clip_grad, cfg.deepspeed
        ),
    )

    step, best = 0, {"metric": -1.0}
    identity = model_cfg.to_dict()
    client = load_latest(engine, checkpoints, "classifier_config", identity) if resume else None
    if client is not None:
        step, best = int(client["step"]), client["best"]
        log.write(event="resume", step=step, checkpoint=client["path"])
    else:
        log.write(
            event="start",
            world=world,
            **plan.log_fields(),
            precision=precision,
            clips=len(train),
            held_out=len(held),
            classes=classes,
            config=cfg.to_dict(),
            init={**init.summary(), "missing": missing} if init is not None else None,
        )
        if init is not None and rank == 0 and (missing or init.unplaced):
            console.print(
                f"[yellow]warning:[/] {init.path}: encoder weights not in it {missing[:5]}; "
                f"its weights with no place here {init.unplaced[:5]}",
                highlight=False,
            )
    board = Board(board_dir(out, cfg.run.tensorboard), rank == 0, step if client else None)

    a = cfg.augment
    mixing = MixSettings(a.mixup, a.cutmix, a.mix_prob, a.switch_prob, a.smoothing)
    first_task = next(iter(classes))
    sampler = EpochSampler(len(train), world, rank, plan.per_rank, cfg.run.seed)
    loader = data_loader(
        train,
        cfg.data.workers,
        batch_size=o.batch_size,
        sampler=sampler,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
    )
    mine = list(range(rank, len(held), world))  # this rank's share of the held-out clips
    held_loader = data_loader(
        held, cfg.data.workers, batch_size=o.batch_size, sampler=mine, collate_fn=collate
    )
    loop = StepLoop(
        engine,
        schedule,
        train,
        loader,
        sampler,
        plan,
        o,
        cfg.run,
        checkpoints,
        log,
        rank,
        "finetune",
        console,
        board=board,
    )

    def weights_file(name: str, at: int, figures: dict) -> None:
        weights = {k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()}
        torch.save(
            {
                "classifier_config": identity,
                "state_dict": weights,
                "step": at,
                "held_out": figures,
                "config": cfg.to_dict(),
            },
            out / name,
        )

    def forward(batch, at: int, micro: int):
        seed = seed_of(cfg.run.seed, at, micro, rank)
        rng = np.random.default_rng(seed)
        # Drop path and dropout draw from torch's generators: seeded here by where the step is
        # in the run, each rank its own, so a resumed run draws what the whole run drew.
        torch.manual_seed(seed)
        # Mixed where the batch will be used: on the GPU, not in this process's CPU.
        device = engine.device
        video, boxes, valid = (
            batch[k].to(device, non_blocking=True) for k in ("video", "boxes", "valid")
        )
        labels = {t: y.to(device, non_blocking=True) for t, y in batch["labels"].items()}
        if a.mixup > 0 or a.cutmix > 0:
            video, boxes, valid, targets, _ = mix_batch(
                video, boxes, valid, labels, classes, rng, mixing
            )
        else:
            targets = {t: smooth_targets(y, classes[t], a.smoothing) for t, y in labels.items()}
        logits = engine(video.to(dtype), boxes, valid)
        return sum(soft_cross_entropy(logits[t], targets[t]) for t in classes), None

    def after_step(at: int, epoch: int, batch, extra, last: bool, epoch_end: bool) -> None:
        nonlocal best
        if not (epoch_end or last):
            return
        figures = score(engine, held_loader, rank, world, dtype)
        if rank == 0:
            metric = figures[f"{first_task}_top1"]
            log.write(event="held_out", step=at, epoch=epoch, **figures)
            board.scalars(at, figures, prefix="held_out")
            if metric > best["metric"]:
                best = {"metric": metric, "step": at, **figures}
                weights_file("best.pt", at, figures)
                log.write(event="best", step=at, metric=metric)
        shared = [best]
        torch.distributed.broadcast_object_list(shared, src=0)
        best = shared[0]

    def state(at: int, epoch: int) -> dict[str, Any]:
        return {"classifier_config": identity, "config": cfg.to_dict(), "best": best}

    step = loop(step, forward, after_step, state)
    board.close()

    if rank == 0:
        weights_file("model.pt", step, {})
        if cfg.run.export:  # the selected model, what mofo evaluate scores by default
            write_export(out / EXPORT_DIR, read_run_file(out / "best.pt"))
        log.write(event="end", step=step, best=best)
        console.print(
            f"finetuned {step} steps; best held-out {first_task} top-1 "
            f"{best['metric']:.1f} % at step {best.get('step')}; weights in "
            f"{out / 'best.pt'}",
            highlight=False,
        )
    log.close()
    torch.distributed.barrier()
    return best


run = finetune  # what `mofo finetune` calls


def main(argv: list[str] | None = None) -> int:
    """``python -m mofo.training.finetune --config FILE [--set k=v]... [--no-resume]``, per
    process."""
    return process_main("python -m mofo.training.finetune", load_config, finetune, argv)


if __name__ == "__main__":
    sys.exit(main())
