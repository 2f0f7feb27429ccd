"""TensorBoard scalars of a run (``run.tensorboard``), written by rank 0 only.

The figures are those of ``log.jsonl`` (summed over every rank before they are written), on the
axis of optimiser steps, under tags grouped by what they measure: ``train/loss``, ``train/lr``,
``train/clips_per_s``, ``masking/hidden_in_box``, ``held_out/action_top1``, ``eval/...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Where each figure of a log line goes; figures not named here are not plotted (step, epoch).
TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "clips_per_s": "train/clips_per_s",
    "missing_boxes": "data/missing_boxes",
    "replaced_clips": "data/replaced_clips",
    "hidden_in_box": "masking/hidden_in_box",
    "hidden_outside_box": "masking/hidden_outside_box",
}
OFF = "none"  # run.tensorboard = "none": no TensorBoard files


def board_dir(out: Path, setting: str) -> Path | None:
    """The folder a run writes its TensorBoard files to: ``setting`` when it names one (taken
    from the working directory), ``out/tensorboard`` when empty, none for ``"none"``."""
    if setting == OFF:
        return None
    return Path(setting) if setting else out / "tensorboard"


class Board:
    """A TensorBoard writer that exists on rank 0 only (``enabled``); elsewhere it does nothing.

    ``resumed_at``: the step of the checkpoint a resumed run starts from; TensorBoard then drops
    what an earlier process wrote after it (those steps are run again), so every step appears
    once, as the resumed run computed it.
    """

    def __init__(self, folder: Path | None, enabled: bool, resumed_at: int | None = None):
        self.writer = None
        if folder is not None and enabled:
            from torch.utils.tensorboard import SummaryWriter

            folder.mkdir(parents=True, exist_ok=True)
            purge = None if resumed_at is None else resumed_at + 1
            self.writer = SummaryWriter(str(folder), purge_step=purge)

    def figures(self, step: int, figures: dict[str, Any]) -> None:
        """A log line's figures (those of :data:`TAGS`) at ``step``."""
        self.scalars(step, {TAGS[k]: v for k, v in figures.items() if k in TAGS})

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """``{tag: number}`` at ``step`` (tags under ``prefix/`` when given); None and
        non-numbers are left out. Flushed at once, as the run log is, so a killed run keeps
        what it logged."""
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{tag}" if prefix else tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
