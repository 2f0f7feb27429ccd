"""The step loop of pretraining and finetuning: micro-steps, logging, checkpoints, resuming."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mofo.training.runs.board import Board
from mofo.training.runs.checkpoints import checkpoint_dirs
from mofo.training.runs.log import RunLog, Tally, gather_tally
from mofo.training.runs.schedule import Plan


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
    ``board`` gets every log line's figures too (TensorBoard, rank 0).
    """

    def __init__(
        self,
        engine,
        schedule,
        dataset,
        loader,
        sampler,
        plan: Plan,
        optim: Any,
        run: Any,
        checkpoints: Path,
        log: RunLog,
        rank: int,
        label: str,
        console,
        shares: dict[str, tuple[str, str]] | None = None,
        board: Board | None = None,
    ) -> None:
        self.engine, self.schedule = engine, schedule
        self.dataset, self.loader, self.sampler = dataset, loader, sampler
        self.plan, self.optim, self.run = plan, optim, run
        self.checkpoints, self.log, self.rank = checkpoints, log, rank
        self.label, self.console = label, console
        self.shares = dict(shares or {})
        self.board = board or Board(None, False)
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
            "step": step,
            "epoch": epoch,
            "loss": seen.loss / max(1, seen.losses),
            "lr": lr,
            "clips_per_s": seen.clips / max(1e-9, time.perf_counter() - since),
            "missing_boxes": self.missing,
            "replaced_clips": self.replaced,
        }
        for name, (num, den) in self.shares.items():
            total = seen.counts[den]
            self.figures[name] = round(seen.counts[num] / total, 6) if total else None
        for error in seen.errors:
            self.log.write(event="bad_clip", step=step, clip=error)
        self.log.write(**self.figures)
        self.board.figures(step, self.figures)
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
        progress = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.rank != 0,
        )
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
