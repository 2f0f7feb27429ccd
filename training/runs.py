"""What every training run shares: the process group, the learning-rate schedule, the data
order, seeds, the run log and its tallies, DeepSpeed's config and the checkpoint folders.

Used by ``mofo pretrain`` (``training/pretrain.py``) and ``mofo finetune``
(``training/finetune.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def learning_rate(step: int, peak: float, minimum: float, warmup: int, total: int) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine down to ``minimum``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class EpochSampler(Sampler[int]):
    """This rank's share of epoch ``e``'s order: a permutation seeded by (seed, e), cut to
    ``per_rank`` indices per rank; ``skip`` drops the first indices (a resumed epoch)."""

    def __init__(self, size: int, world: int, rank: int, per_rank: int, seed: int):
        self.size, self.world, self.rank, self.per_rank, self.seed = (
            size,
            world,
            rank,
            per_rank,
            seed,
        )
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed_of(self.seed, epoch))
        everything = torch.randperm(self.size, generator=generator)
        return everything[: self.per_rank * self.world][self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def seed_of(*parts: int) -> int:
    """One 63-bit seed from several integers (so neighbouring steps get unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """On Linux, end this process when its launcher dies, even by SIGKILL: torch's launcher
    starts each rank in its own session, so a killed launcher would leave ranks training on."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def init_processes() -> tuple[int, int, int]:
    """Start (or join) the process group: (rank, world size, local rank). A process started
    on its own becomes a group of one; on a machine without CUDA, DeepSpeed runs on the CPU."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _die_with_parent()
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    import deepspeed

    deepspeed.init_distributed(verbose=False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), local


def merge_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = (
            merge_config(merged[k], v)
            if isinstance(v, dict) and isinstance(merged.get(k), dict)
            else v
        )
    return merged


class RunLog:
    """``log.jsonl`` lines, written by rank 0 only."""

    def __init__(self, path: Path, enabled: bool):
        self.enabled = enabled
        self.file = open(path, "a") if enabled else None  # noqa: SIM115 - open for the run

    def write(self, **fields: Any) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclass
class Tally:
    """What a rank saw since the last log line, summed over ranks at log time."""

    loss: float | torch.Tensor = 0.0  # a device tensor while training: no sync per step
    losses: int = 0
    clips: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)
    # Counts a run adds up (e.g. hidden tokens inside the boxes); every rank has the same keys.
    counts: dict[str, float] = field(default_factory=dict)


def gather_tally(tally: Tally) -> Tally:
    """The sum of every rank's tally (errors concatenated)."""
    keys = sorted(tally.counts)
    numbers = torch.tensor(
        [float(tally.loss), tally.losses, tally.clips, tally.missing,
         *(tally.counts[k] for k in keys)], dtype=torch.float64,
    )  # fmt: skip
    if torch.distributed.get_backend() == "nccl":
        numbers = numbers.cuda()
    torch.distributed.all_reduce(numbers)
    lists: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(lists, tally.errors)
    loss, losses, clips, missing, *counts = numbers.tolist()
    return Tally(loss, int(losses), int(clips), int(missing), [e for part in lists for e in part],
                 dict(zip(keys, counts, strict=True)))  # fmt: skip


def checkpoint_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("step*") if p.is_dir())


def ds_config(
    batch_size: int,
    grad_accum: int,
    zero_stage: int,
    precision: str,
    clip_grad: float | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """DeepSpeed's config for a run: micro-batch and accumulation, ZeRO stage, bf16 or fp16,
    gradient clipping, then the config file's ``[deepspeed]`` table on top."""
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # torch's AdamW, so CPU and GPU run the same one
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if clip_grad is not None:
        out["gradient_clipping"] = clip_grad
    return merge_config(out, extra)


def resolve_precision(precision: str) -> tuple[str, torch.dtype]:
    """``auto`` → bf16 on GPU, fp32 on CPU; the name and the input dtype."""
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    return precision, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def final_weights(engine, checkpoints: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """The model's fp32 weights (gathered from ZeRO-3 shards when partitioned)."""
    if zero_stage < 3:
        return {k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoints))


def launch(module: str, config_path: Path, overrides: list[str], nproc: int, resume: bool) -> int:
    """``nproc`` processes on this machine through torch's launcher, each running ``module``."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", module, "--config", str(config_path)]  # fmt: skip
    for item in overrides:
        command += ["--set", item]
    if not resume:
        command.append("--no-resume")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    with subprocess.Popen(command, env=env) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()


def data_loader(dataset, workers: int, **options) -> DataLoader:
    """A DataLoader whose worker processes start once, from a fork server.

    Forking a training process (DeepSpeed's and the progress bar's threads, CUDA) for every
    epoch's loader can deadlock: CPython 3.11 may hang a child in fork's clean-up when another
    thread holds the interpreter's thread-list lock (seen here: a finetuning run stopped after
    17 epochs). Workers forked by a fork server from a single-threaded process, kept for the
    whole run, never meet that. The dataset travels to them by pickling.
    """
    if workers > 0:
        options.update(num_workers=workers, persistent_workers=True, prefetch_factor=2,
                       multiprocessing_context="forkserver")  # fmt: skip
    return DataLoader(dataset, **options)


# --- the step loop of pretraining and finetuning -----------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a run's clips become steps: each rank's share of an epoch, steps per epoch and in
    all, the global batch, the learning rate's peak (``base_lr`` × global batch / 256) and its
    warmup in steps."""

    per_rank: int
    steps_per_epoch: int
    total: int
    global_batch: int
    peak: float
    warmup: int


def plan_steps(clips: int, world: int, optim: Any, source: str) -> Plan:
    """The plan of an ``[optim]`` section (batch_size, grad_accum, epochs, max_steps, base_lr,
    warmup_epochs) over ``clips`` clips and ``world`` processes."""
    per_step = optim.batch_size * optim.grad_accum
    per_rank = clips // world // per_step * per_step
    steps_per_epoch = per_rank // per_step
    if steps_per_epoch == 0:
        from mofo.shared.errors import MofoError

        raise MofoError(
            f"{source}: {clips} clips is less than one step ({world} processes x batch "
            f"{optim.batch_size} x accumulation {optim.grad_accum})"
        )
    total = optim.epochs * steps_per_epoch
    if optim.max_steps is not None:
        total = min(total, optim.max_steps)
    global_batch = per_step * world
    return Plan(per_rank, steps_per_epoch, total, global_batch,
                optim.base_lr * global_batch / 256,
                round(optim.warmup_epochs * steps_per_epoch))  # fmt: skip


def load_latest(engine, checkpoints: Path, key: str, identity: dict) -> dict[str, Any] | None:
    """The client state of the run folder's latest checkpoint, loaded into ``engine``; None
    when there is none. A checkpoint whose ``key`` is not ``identity`` (another model) is
    refused rather than half-loaded."""
    if not (checkpoints / "latest").exists():
        return None
    from mofo.shared.errors import MofoError

    path, client = engine.load_checkpoint(str(checkpoints))
    if path is None:
        raise MofoError(f"{checkpoints}: could not load the latest checkpoint")
    if client.get(key) != identity:
        raise MofoError(
            f"{checkpoints}: holds a checkpoint of another model "
            f"({(client.get(key) or {}).get('name', '?')}); use another run.out"
        )
    return {**client, "path": str(path)}


class StepLoop:
    """The loop both runs share: epochs of the sampler's order (a resumed epoch skips what was
    done), micro-batches and gradient accumulation under DeepSpeed, the tally summed over ranks
    and written to the log every ``log_every`` steps and at each epoch's end, checkpoints every
    ``save_every`` steps and at the end (the newest ``keep`` kept), and the progress bar.

    ``forward(batch, step, micro)`` returns the loss of a micro-batch and anything the run
    wants back in ``after_step(step, epoch, batch, extra, last, epoch_end)``, called once per
    optimiser step before any checkpoint of that step; ``client(step, epoch)`` is the state
    saved with a checkpoint.

    ``shares`` names ratios the log lines carry, ``{name: (numerator, denominator)}`` of counts
    that ``forward`` adds with :meth:`count` (null in a line when the denominator is 0).
    """

    def __init__(self, engine, schedule, dataset, loader, sampler, plan: Plan, optim: Any,
                 run: Any, checkpoints: Path, log: RunLog, rank: int, label: str,
                 console, shares: dict[str, tuple[str, str]] | None = None) -> None:  # fmt: skip
        self.engine, self.schedule = engine, schedule
        self.dataset, self.loader, self.sampler = dataset, loader, sampler
        self.plan, self.optim, self.run = plan, optim, run
        self.checkpoints, self.log, self.rank = checkpoints, log, rank
        self.label, self.console = label, console
        self.shares = dict(shares or {})
        self.missing = self.replaced = 0
        self.figures: dict[str, Any] = {}
        self.tally = self._new_tally()

    def _new_tally(self) -> Tally:
        """An empty tally holding every count the shares name, so all ranks reduce alike."""
        return Tally(counts={k: 0.0 for pair in self.shares.values() for k in pair})

    def count(self, counts: dict[str, float]) -> None:
        """Add a micro-batch's counts (keys named in ``shares``) to this log period's tally."""
        for key, value in counts.items():
            if key in self.tally.counts:
                self.tally.counts[key] += float(value)

    def save(self, step: int, epoch: int, client: dict[str, Any]) -> None:
        import shutil

        tag = f"step{step:08d}"
        state = {"step": step, "epoch": epoch, **client}
        self.engine.save_checkpoint(str(self.checkpoints), tag=tag, client_state=state)
        torch.distributed.barrier()
        if self.rank == 0:
            for old in checkpoint_dirs(self.checkpoints)[: -self.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            self.log.write(event="checkpoint", step=step, path=str(self.checkpoints / tag))

    def _log(self, tally: Tally, step: int, epoch: int, lr: float, since: float) -> Tally:
        seen = gather_tally(tally)
        self.missing += seen.missing
        self.replaced += len(seen.errors)
        self.figures = {
            "step": step, "epoch": epoch, "loss": seen.loss / max(1, seen.losses), "lr": lr,
            "clips_per_s": seen.clips / max(1e-9, time.perf_counter() - since),
            "missing_boxes": self.missing, "replaced_clips": self.replaced,
        }  # fmt: skip
        for name, (num, den) in self.shares.items():
            total = seen.counts[den]
            self.figures[name] = round(seen.counts[num] / total, 6) if total else None
        for error in seen.errors:
            self.log.write(event="bad_clip", step=step, clip=error)
        self.log.write(**self.figures)
        return self._new_tally()

    def __call__(self, step: int, forward, after_step, client) -> int:
        """Train from ``step`` to the plan's total; the step reached."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        plan, o, run, engine = self.plan, self.optim, self.run, self.engine
        progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                            console=self.console, disable=self.rank != 0)  # fmt: skip
        bar = progress.add_task("steps", total=plan.total, completed=step, info="")
        self.tally, since = self._new_tally(), time.perf_counter()
        engine.train()
        with progress:
            while step < plan.total:
                epoch, done_in_epoch = divmod(step, plan.steps_per_epoch)
                self.dataset.set_epoch(epoch)
                self.sampler.start(epoch, done_in_epoch * o.grad_accum * o.batch_size)
                micro = 0
                for batch in self.loader:
                    tally = self.tally
                    loss, extra = forward(batch, step, micro % o.grad_accum)
                    engine.backward(loss)
                    lr = self.schedule.get_last_lr()[-1]  # this step's (the head's, finetuning)
                    engine.step()
                    tally.loss += loss.detach()  # on the device: read at log time
                    tally.losses += 1
                    tally.clips += batch["video"].shape[0]
                    tally.missing += int(batch["missing"])
                    tally.errors += batch["errors"]
                    micro += 1
                    if micro % o.grad_accum:
                        continue
                    step += 1
                    last = step == plan.total
                    epoch_end = step % plan.steps_per_epoch == 0
                    if step % run.log_every == 0 or last or epoch_end:
                        self.tally = self._log(tally, step, epoch, lr, since)
                        since = time.perf_counter()
                        progress.update(bar, info=f"loss {self.figures['loss']:.4f}")
                    after_step(step, epoch, batch, extra, last, epoch_end)
                    if step % run.save_every == 0 or last:
                        self.save(step, epoch, client(step, epoch))
                    progress.update(bar, completed=step)
                    if last or epoch_end:
                        break
        return step


def process_main(prog: str, load_config, job, argv: list[str] | None = None) -> int:
    """One process of a run: ``python -m MODULE --config FILE [--set k=v]... [--no-resume]``
    (what torch's launcher starts); exit 2 for a bad config, 1 for another failure."""
    import argparse

    from mofo.shared.errors import MofoError
    from mofo.training.config import ConfigError

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-resume", dest="resume", action="store_false")
    args = parser.parse_args(argv)
    try:
        job(load_config(args.config, args.overrides), resume=args.resume)
    except MofoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    finally:
        with contextlib.suppress(Exception):
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    return 0
