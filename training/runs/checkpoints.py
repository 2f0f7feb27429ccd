"""Checkpoints: the run's folders of them, the final weights, resuming from the latest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def checkpoint_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("step*") if p.is_dir())


def final_weights(engine, checkpoints: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """The model's fp32 weights (gathered from ZeRO-3 shards when partitioned)."""
    if zero_stage < 3:
        return {k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoints))


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
