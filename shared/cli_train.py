"""``mofo pretrain``: the training commands (registered by ``shared.cli``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from shared.cli import EXIT_USAGE, fail
from shared.errors import MofoError

EXIT_FAILED = 1


def pretrain(
    config: Annotated[Path, typer.Option("--config", help="The run's TOML config.")],
    nproc: Annotated[
        int, typer.Option(help="Processes on this machine (GPUs; CPU processes without CUDA).")
    ] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: section.key=value (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Resume from the run folder's latest checkpoint when it has one.")
    ] = True,
) -> None:
    """MOFO pretraining under DeepSpeed (masked autoencoder focused on the motion boxes).

    Under torchrun or the deepspeed launcher, each process runs this command with --nproc 1.
    """
    from training.config import ConfigError
    from training.pretrain import launch, load_config
    from training.pretrain import pretrain as run

    overrides = overrides or []
    if nproc < 1:
        raise fail(f"--nproc must be >= 1, got {nproc}")
    try:
        cfg = load_config(config, overrides)  # checked here, before any process starts
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if nproc > 1 and "RANK" not in os.environ:
        code = launch(config, overrides, nproc, resume)
        if code:
            raise typer.Exit(code)
        return
    try:
        run(cfg, resume=resume)
    except MofoError as exc:
        raise fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED) from None
