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


def gather_tally(tally: Tally) -> Tally:
    """The sum of every rank's tally (errors concatenated)."""
    numbers = torch.tensor(
        [float(tally.loss), tally.losses, tally.clips, tally.missing], dtype=torch.float64
    )
    if torch.distributed.get_backend() == "nccl":
        numbers = numbers.cuda()
    torch.distributed.all_reduce(numbers)
    lists: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(lists, tally.errors)
    loss, losses, clips, missing = numbers.tolist()
    return Tally(loss, int(losses), int(clips), int(missing), [e for part in lists for e in part])


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
