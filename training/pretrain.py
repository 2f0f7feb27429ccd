"""MOFO pretraining under DeepSpeed (the paper's §2.2): ``mofo pretrain --config FILE``.

One process per GPU (or CPU process with ``DS_ACCELERATOR=cpu``), started by ``--nproc N``,
``torchrun`` or the ``deepspeed`` launcher. Each step: a batch of clips with their motion boxes
(from the box cache), MOFO or tube masks drawn for that step, the masked autoencoder's loss,
AdamW through DeepSpeed (ZeRO stage as configured, bf16 on GPU).

What a run leaves in its ``run.out`` folder:

- ``checkpoints/step00001234/``: DeepSpeed checkpoints, written by every rank; each carries the
  model config, the whole run config and the step, so a model can be rebuilt from it alone.
  ``latest`` names the newest; a run started again resumes from it at the same step, with the
  same data order and masks (sampling and masking are seeded by step, not by process history).
- ``model.pt``: the final weights in fp32 with the model config (what finetuning starts from),
  and ``export/``: the same as ``model.safetensors`` with ``config.json`` (``run.export``).
- ``log.jsonl``: one line per logged step (loss, lr, clips/s, boxes missing, clips replaced,
  the shares of the box and of the rest hidden), plus events (start, resume, checkpoint, bad
  clip, end); ``tensorboard/`` (``run.tensorboard``): the same figures for TensorBoard.
- ``reconstructions/step00001234.png``: original, masked input and reconstruction of a few clips
  with their motion boxes drawn, as the paper's Fig. 4-5.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mofo.training.config import ConfigError, load_run_config
from mofo.training.data import DataSection, motion_params, open_data
from mofo.training.masking import (
    TokenGrid,
    box_cells,
    clip_boxes,
    hidden_shares,
    mofo_mask,
    tube_mask,
)
from mofo.training.models import MAEConfig, VideoMAE, config
from mofo.training.runs import (
    Board,
    EpochSampler,
    RunLog,
    StepLoop,
    board_dir,
    data_loader,
    ds_config,
    final_weights,
    init_processes,
    learning_rate,
    load_latest,
    plan_steps,
    process_main,
    resolve_precision,
    seed_of,
)


@dataclass(frozen=True)
class ModelSection:
    name: str = "vit_base_patch16_tubelet2"
    drop_path: float = 0.0
    norm_targets: bool = True  # VideoMAE's per-tubelet normalised pixels; False: raw pixels


@dataclass(frozen=True)
class MaskingSection:
    kind: Literal["mofo", "tube"] = "mofo"
    ratio: float = 0.9
    inside_ratio: float = 0.75
    # After the inside quota: the rest drawn from every tube not yet hidden ("anywhere", the
    # released code's rule) or from outside the box only ("outside", the abstract's words).
    remainder: Literal["anywhere", "outside"] = "anywhere"
    boxes: Literal["frame", "clip"] = "frame"  # per-frame boxes, or one box for the clip
    min_overlap: float = 0.5


@dataclass(frozen=True)
class OptimSection:
    batch_size: int = 32  # clips per process per micro-step
    grad_accum: int = 1
    base_lr: float = 1.5e-4  # scaled by the global batch / 256
    min_lr: float = 1e-5
    warmup_epochs: float = 40.0
    epochs: int = 800
    max_steps: int | None = None  # stop early (and schedule for this many steps)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None


@dataclass(frozen=True)
class RunSection:
    out: str = "runs/pretrain"
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPU, else fp32
    zero_stage: int = 1
    save_every: int = 1000  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    images_every: int = 0  # steps between reconstruction images (0: at the end only)
    images: int = 4  # clips per reconstruction image
    tensorboard: str = ""  # TensorBoard's folder; empty: out/tensorboard; "none": off
    export: bool = True  # the final weights as out/export/ (model.safetensors + config.json)


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    masking: MaskingSection = field(default_factory=MaskingSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    deepspeed: dict[str, Any] = field(default_factory=dict)  # merged into DeepSpeed's config

    def model_config(self) -> MAEConfig:
        m = self.model
        return config(m.name, drop_path=m.drop_path, norm_targets=m.norm_targets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "masking": MaskingSection,
    "optim": OptimSection,
    "run": RunSection,
}


def load_config(path: Path | None, overrides: list[str] = ()) -> PretrainConfig:
    """The config in ``path`` (or the defaults) with ``section.key=value`` overrides on top."""
    where = str(path) if path else "config"
    cfg = load_run_config(PretrainConfig, _SECTIONS, path, list(overrides))
    _check(cfg, where)
    return cfg


def _check(cfg: PretrainConfig, where: str) -> None:
    if not cfg.data.source:
        raise ConfigError(f"{where}: [data] source is required (a label file, CSV or folder)")
    try:
        cfg.model_config()
    except ValueError as e:
        raise ConfigError(f"{where}: [model] {e}") from None
    if cfg.masking.kind == "mofo" and cfg.data.boxes == "none":
        raise ConfigError(
            f"{where}: MOFO masking needs motion boxes: set [data] boxes to a Redis URL, an "
            'export file or "compute" (or [masking] kind = "tube")'
        )
    checks = [
        (0.0 <= cfg.masking.ratio < 1.0, "[masking] ratio must be in [0, 1)"),
        (0.0 <= cfg.masking.inside_ratio <= 1.0, "[masking] inside_ratio must be in [0, 1]"),
        (cfg.optim.batch_size >= 1 and cfg.optim.grad_accum >= 1, "[optim] batch sizes >= 1"),
        (cfg.optim.epochs >= 1, "[optim] epochs must be >= 1"),
        (cfg.run.zero_stage in (0, 1, 2, 3), "[run] zero_stage must be 0, 1, 2 or 3"),
        (cfg.run.save_every >= 1 and cfg.run.log_every >= 1, "[run] save/log every >= 1"),
        (cfg.run.keep_checkpoints >= 1, "[run] keep_checkpoints must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")


def check_inputs(cfg: PretrainConfig) -> None:
    """What must exist before any process starts: the source."""
    if not Path(cfg.data.source).exists():
        raise ConfigError(f"[data] source {cfg.data.source}: no such file or folder")


# --- the schedule and the data order ------------------------------------------------------------


SHARES = {
    "hidden_in_box": ("hidden_inside", "tokens_inside"),
    "hidden_outside_box": ("hidden_outside", "tokens_outside"),
}


def make_masks(
    batch: dict[str, Any], grid: TokenGrid, masking: MaskingSection, seed: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's masks (B, N) on the CPU, seeded by ``seed``: new every step and
    sample, and the same again when a run resumes at that step; and the counts of hidden
    tokens inside the motion boxes and outside them (``hidden_shares``; under tube masking too,
    where there are boxes, to compare)."""
    generator = torch.Generator().manual_seed(seed)
    size = batch["video"].shape[0]
    boxes, valid = batch["boxes"], batch["valid"]
    if masking.boxes == "clip":
        boxes, valid = clip_boxes(boxes, valid)
    inside = box_cells(boxes, valid, grid, masking.min_overlap)
    if masking.kind == "tube":
        mask = tube_mask(size, grid, masking.ratio, generator)
    else:
        mask = mofo_mask(
            inside, grid, masking.ratio, masking.inside_ratio, generator, masking.remainder
        )
    return mask, hidden_shares(mask, inside)


# --- processes ----------------------------------------------------------------------------------


def pretrain_ds_config(cfg: PretrainConfig, precision: str) -> dict[str, Any]:
    o = cfg.optim
    return ds_config(
        o.batch_size, o.grad_accum, cfg.run.zero_stage, precision, o.clip_grad, cfg.deepspeed
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and the mask token, as MAE/VideoMAE."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


# --- the run ------------------------------------------------------------------------------------


def build_data(cfg: PretrainConfig):
    """The dataset of the config's source, with its box source."""
    from mofo.training.datasets import VideoClips

    d = cfg.data
    source, boxes = open_data(d)
    grid = cfg.model_config().grid
    if grid.height != grid.width:
        raise ConfigError(
            f"[model] {cfg.model.name}: square inputs only, got {grid.height}x{grid.width}"
        )
    sampling = d.sampling or ("segment" if source.kind == "epic" else "dense")
    dataset = VideoClips(
        source.items,
        source.root,
        boxes,
        frames=grid.frames,
        rate=d.rate,
        size=grid.height,
        sampling=sampling,
        train=True,
        decode_short_side=d.decode_short_side,
        seed=cfg.run.seed,
        max_replacements=d.max_replacements,
        flip=bool(d.flip),  # VideoMAE pretrains without flips (its multi-scale crop only)
    )
    return source, dataset


def pretrain(cfg: PretrainConfig, resume: bool = True) -> dict[str, Any]:
    """Run (or resume) the pretraining the config describes; the last logged figures."""
    import deepspeed
    from rich.console import Console

    from mofo.training.datasets import collate
    from mofo.training.export import EXPORT_DIR, SavedModel, write_export
    from mofo.training.visualise import save_reconstructions

    check_inputs(cfg)
    rank, world, _ = init_processes()
    out = Path(cfg.run.out)
    checkpoints = out / "checkpoints"
    if rank == 0:
        (out / "reconstructions").mkdir(parents=True, exist_ok=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    console = Console(stderr=True, soft_wrap=True)
    log = RunLog(out / "log.jsonl", rank == 0)

    _, dataset = build_data(cfg)
    o = cfg.optim
    plan = plan_steps(len(dataset), world, o, cfg.data.source)

    model_cfg = cfg.model_config()
    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    model = VideoMAE(model_cfg)
    optimizer = torch.optim.AdamW(
        param_groups(model, o.weight_decay),
        lr=plan.peak,
        betas=o.betas,
        weight_decay=o.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: learning_rate(s, plan.peak, o.min_lr, plan.warmup, plan.total) / plan.peak,
    )
    precision, dtype = resolve_precision(cfg.run.precision)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=pretrain_ds_config(cfg, precision),
    )

    step = 0
    client = (
        load_latest(engine, checkpoints, "model_config", model_cfg.to_dict()) if resume else None
    )
    if client is not None:
        step = int(client["step"])
        log.write(event="resume", step=step, checkpoint=client["path"])
    else:
        log.write(
            event="start",
            world=world,
            **plan.log_fields(),
            precision=precision,
            clips=len(dataset),
            config=cfg.to_dict(),
            model_config=model_cfg.to_dict(),
        )

    sampler = EpochSampler(len(dataset), world, rank, plan.per_rank, cfg.run.seed)
    loader = data_loader(
        dataset,
        cfg.data.workers,
        batch_size=o.batch_size,
        sampler=sampler,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
    )
    loop = StepLoop(
        engine,
        schedule,
        dataset,
        loader,
        sampler,
        plan,
        o,
        cfg.run,
        checkpoints,
        log,
        rank,
        "pretrain",
        console,
        shares=SHARES,
        board=Board(board_dir(out, cfg.run.tensorboard), rank == 0, step if client else None),
    )

    def forward(batch, at: int, micro: int):
        video = batch["video"].to(engine.device, dtype=dtype, non_blocking=True)
        # Seeded by where it is in the run, so a resumed run draws the same masks (and, through
        # torch's generators, the same drop path).
        seed = seed_of(cfg.run.seed, at, micro, rank)
        mask, counts = make_masks(batch, model_cfg.grid, cfg.masking, seed)
        loop.count(counts)
        torch.manual_seed(seed)
        loss, pred = engine(video, mask.to(engine.device, non_blocking=True))
        return loss, (mask, pred)

    def after_step(at: int, epoch: int, batch, extra, last: bool, epoch_end: bool) -> None:
        images_due = cfg.run.images_every and at % cfg.run.images_every == 0
        if rank == 0 and (images_due or last):
            mask, pred = extra
            save_reconstructions(
                out / "reconstructions" / f"step{at:08d}.png",
                batch["video"],
                mask,
                pred.detach().float().cpu(),
                model_cfg.grid,
                batch["boxes"],
                batch["valid"],
                count=cfg.run.images,
            )

    def state(at: int, epoch: int) -> dict[str, Any]:
        return {"model_config": model_cfg.to_dict(), "config": cfg.to_dict()}

    step = loop(step, forward, after_step, state)
    loop.board.close()

    figures = loop.figures
    final = final_weights(engine, checkpoints, cfg.run.zero_stage)
    if rank == 0:
        torch.save(
            {
                "model_config": model_cfg.to_dict(),
                "state_dict": final,
                "step": step,
                "config": cfg.to_dict(),
            },
            out / "model.pt",
        )
        if cfg.run.export:
            about = {"source": str(out / "model.pt"), "step": step, "config": cfg.to_dict()}
            write_export(out / EXPORT_DIR, SavedModel("pretraining", model_cfg, final, about))
        log.write(event="end", step=step, missing_boxes=loop.missing, replaced_clips=loop.replaced)
        _report(console, cfg, figures, loop.missing, loop.replaced, plan.total, o, world, out)
    log.close()
    torch.distributed.barrier()
    return figures


def _report(console, cfg, figures, missing, errors, total, o, world, out) -> None:
    clips = total * o.batch_size * o.grad_accum * world
    console.print(
        f"pretrained {figures.get('step', total)} steps; "
        f"loss {figures.get('loss', float('nan')):.4f}; weights in {out / 'model.pt'}",
        highlight=False,
    )
    if missing:
        console.print(
            f"[yellow]warning:[/] {missing} of {clips} samples had no cached motion box "
            f"({cfg.data.boxes}, params {cfg.data.params or motion_params(cfg.data).hash()}) and "
            "were tube-masked; fill the cache with `mofo cache build`",
            highlight=False,
        )
    if errors:
        console.print(
            f"[yellow]warning:[/] {errors} clips could not be decoded and were replaced; "
            f"see the bad_clip lines of {out / 'log.jsonl'}",
            highlight=False,
        )


run = pretrain  # what `mofo pretrain` calls


def main(argv: list[str] | None = None) -> int:
    """``python -m mofo.training.pretrain --config FILE [--set k=v]... [--no-resume]``, per
    process."""
    return process_main("python -m mofo.training.pretrain", load_config, pretrain, argv)


if __name__ == "__main__":
    sys.exit(main())
