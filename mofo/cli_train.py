"""``mofo pretrain``, ``mofo finetune`` and ``mofo evaluate``: the training commands (registered
by ``mofo.cli``), and ``export`` (weights as ``model.safetensors`` + ``config.json``)."""

from __future__ import annotations

import importlib
import json
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
TensorBoard = Annotated[
    Path | None,
    typer.Option(
        "--tensorboard",
        help="TensorBoard's folder (run.tensorboard; default: the run's out/tensorboard; "
        "'none': no TensorBoard files).",
    ),
]
Init = Annotated[
    Path | None,
    typer.Option(
        "--init",
        help="Start from these weights (model.pretrained): a pretraining model.pt, an export "
        "folder, or a VideoMAE checkpoint (pretraining or finetuned layout).",
    ),
]
Weights = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="The classifier to score (evaluate.weights): a best.pt / model.pt, an export "
        "folder, or a VideoMAE finetuned checkpoint.",
    ),
]


def _settings(overrides: list[str] | None, **paths: Path | None) -> list[str]:
    """``--set`` overrides with the path options on top (``section.key`` → path), each path
    quoted as a TOML string."""
    out = list(overrides or [])
    for key, path in paths.items():
        if path is not None:
            out.append(f"{key.replace('__', '.')}={json.dumps(str(path))}")
    return out


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


def pretrain(
    config: Config,
    nproc: Nproc = 1,
    overrides: Overrides = None,
    resume: Resume = True,
    tensorboard: TensorBoard = None,
):
    """MOFO pretraining under DeepSpeed (masked autoencoder focused on the motion boxes).

    Under torchrun or the deepspeed launcher, each process runs this command with --nproc 1.
    """
    settings = _settings(overrides, run__tensorboard=tensorboard)
    _run("mofo.training.pretrain", config, nproc, settings, resume)


def finetune(
    config: Config,
    nproc: Nproc = 1,
    overrides: Overrides = None,
    resume: Resume = True,
    tensorboard: TensorBoard = None,
    init: Init = None,
):
    """MOFO finetuning under DeepSpeed (motion cross-attention head or mean pooling), model
    selection on a held-out part of the training split."""
    settings = _settings(overrides, run__tensorboard=tensorboard, model__pretrained=init)
    _run("mofo.training.finetune", config, nproc, settings, resume)


def evaluate(
    config: Config,
    nproc: Nproc = 1,
    overrides: Overrides = None,
    tensorboard: TensorBoard = None,
    weights: Weights = None,
):
    """Score a finetuned classifier on the evaluation split ([evaluate] of the finetuning
    config): multi-view top-1/top-5, per-class accuracy, confusion matrices, saliency maps."""
    settings = _settings(overrides, run__tensorboard=tensorboard, evaluate__weights=weights)
    _run("mofo.training.evaluate", config, nproc, settings, True)


def export(
    weights: Annotated[
        Path, typer.Argument(help="model.pt, best.pt, a run's checkpoint folder, an export.")
    ],
    out: Annotated[Path, typer.Argument(help="The folder to write.")],
):
    """Export weights as model.safetensors + config.json (the model config, head, classes,
    versions): a folder that rebuilds the model alone (mofo.training.export.load_model)."""
    from mofo.training.export import WEIGHTS_FILE
    from mofo.training.export import export as export_weights

    try:
        folder = export_weights(weights, out)
    except MofoError as exc:
        raise fail(str(exc)) from None
    typer.echo(folder / WEIGHTS_FILE)
