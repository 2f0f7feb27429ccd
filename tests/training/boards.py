"""TensorBoard files read back as TensorBoard reads them, for the run tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def read_board(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard folder: ``{tag: [(step, value), ...]}`` in step order,
    what an earlier process wrote past a resumed run's checkpoint dropped (as TensorBoard does)."""
    board = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    board.Reload()
    return {t: [(e.step, e.value) for e in board.Scalars(t)] for t in board.Tags()["scalars"]}


def as_stored(value: float) -> float:
    """A figure as TensorBoard stores it (float32)."""
    return float(np.float32(value))


def event_files(folder: Path) -> list[Path]:
    """The event files in a folder: one per process that wrote."""
    return sorted(folder.glob("events.out.tfevents.*"))
