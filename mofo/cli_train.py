"""``mofo pretrain``, ``mofo finetune`` and ``mofo evaluate``: the training commands (registered
by ``mofo.cli``)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer

from mofo.cli_options import EXIT_INFRA, EXIT_USAGE, fail
from mofo.shared.cache import CacheUnavailable
from mofo.shared.errors import MofoError

EXIT_FAILED = 1

Config = Annotated[Path, typer.Option("--config", help="The run's TOML config.")]
Nproc = Annotated[
    int, typer.Option(help="Processes on this machine (GPUs; CPU processes without CUDA).")
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: section.key=value (repeatable)."),
]
Resume = Annotated[
    bool, typer.Option(help="Resume from the run folder's latest checkpoint when it has one.")
]


class TrainingJob(Protocol):
    """What a training entry module (``mofo.training.pretrain``, ``.finetune``, ``.evaluate``)
    gives the command line: its config loader, the checks before any process starts, the run."""

    def load_config(self, path: Path | None, overrides: list[str] = ...) -> Any: ...

    def check_inputs(self, cfg: Any) -> None: ...

    def run(self, cfg: Any, resume: bool = True) -> dict[str, Any]: ...


def _run(module: str, config: Path, nproc: int, overrides: list[str] | None, resume: bool) -> None:
    """Check the config here, then run ``module``'s job in this process, or in ``nproc``
    processes through torch's launcher (each running ``python -m module``)."""
    from mofo.training.config import ConfigError
    from mofo.training.runs import launch

    job: TrainingJob = importlib.import_module(module)  # type: ignore[assignment]
    overrides = overrides or []
    if nproc < 1:
        raise fail(f"--nproc must be >= 1, got {nproc}")
    try:
        cfg = job.load_config(config, overrides)  # checked before any process starts
        job.check_inputs(cfg)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if nproc > 1 and "RANK" not in os.environ:
        code = launch(module, config, overrides, nproc, resume)
        if code:
            raise typer.Exit(code)
        return
    try:
        job.run(cfg, resume=resume)
    except MofoError as exc:
        code = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
        if isinstance(exc, CacheUnavailable):
            code = EXIT_INFRA  # the box cache, not the run, is what failed
        raise fail(str(exc), code) from None


def pretrain(config: Config, nproc: Nproc = 1, overrides: Overrides = None, resume: Resume = True):
    """MOFO pretraining under DeepSpeed (masked autoencoder focused on the motion boxes).

    Under torchrun or the deepspeed launcher, each process runs this command with --nproc 1.
    """
    _run("mofo.training.pretrain", config, nproc, overrides, resume)


def finetune(config: Config, nproc: Nproc = 1, overrides: Overrides = None, resume: Resume = True):
    """MOFO finetuning under DeepSpeed (motion cross-attention head or mean pooling), model
    selection on a held-out part of the training split."""
    _run("mofo.training.finetune", config, nproc, overrides, resume)


def evaluate(config: Config, nproc: Nproc = 1, overrides: Overrides = None):
    """Score a finetuned classifier on the evaluation split ([evaluate] of the finetuning
    config): multi-view top-1/top-5, per-class accuracy, confusion matrices, saliency maps."""
    _run("mofo.training.evaluate", config, nproc, overrides, True)
