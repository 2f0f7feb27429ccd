"""What a run does when: the learning-rate schedule, each epoch's data order, seeds by
position in the run, how many steps a run has, and the data loader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
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


def data_loader(dataset, workers: int, **options) -> DataLoader:
    """A DataLoader whose worker processes start once, from a fork server.

    Forking a training process (DeepSpeed's and the progress bar's threads, CUDA) for every
    epoch's loader can deadlock: CPython 3.11 may hang a child in fork's clean-up when another
    thread holds the interpreter's thread-list lock (seen here: a finetuning run stopped after
    17 epochs). Workers forked by a fork server from a single-threaded process, kept for the
    whole run, never meet that. The dataset travels to them by pickling.
    """
    if workers > 0:
        options.update(
            num_workers=workers,
            persistent_workers=True,
            prefetch_factor=2,
            multiprocessing_context="forkserver",
        )
    return DataLoader(dataset, **options)


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

    def log_fields(self) -> dict[str, int | float]:
        """The plan as a run's start line in ``log.jsonl`` gives it."""
        return {
            "steps": self.total,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch": self.global_batch,
            "peak_lr": self.peak,
        }


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
    return Plan(
        per_rank,
        steps_per_epoch,
        total,
        global_batch,
        optim.base_lr * global_batch / 256,
        round(optim.warmup_epochs * steps_per_epoch),
    )
