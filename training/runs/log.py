"""The run log (``log.jsonl``) and the tallies every process adds to it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


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
        [
            float(tally.loss),
            tally.losses,
            tally.clips,
            tally.missing,
            *(tally.counts[k] for k in keys),
        ],
        dtype=torch.float64,
    )
    if torch.distributed.get_backend() == "nccl":
        numbers = numbers.cuda()
    torch.distributed.all_reduce(numbers)
    lists: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(lists, tally.errors)
    loss, losses, clips, missing, *counts = numbers.tolist()
    return Tally(
        loss,
        int(losses),
        int(clips),
        int(missing),
        [e for part in lists for e in part],
        dict(zip(keys, counts, strict=True)),
    )
