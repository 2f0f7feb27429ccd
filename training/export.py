"""Weights as a folder anyone can load: ``model.safetensors`` and ``config.json``.

``config.json`` holds what rebuilds the model from the folder alone: what it is (``kind``:
``pretraining``, the masked autoencoder with its pixel decoder, or ``classifier``, the finetuned
encoder with its head), the model config as the runs save it (``model_config`` or
``classifier_config``), the head, the classes, the input it takes, the versions that shaped it
(this package, the classifier config, the motion-box algorithm and the box settings' hash the
run read) and where it came from. :func:`load_model` rebuilds it; safetensors holds tensors and
nothing executable, so loading a folder runs no code from it.

Pretraining and finetuning write ``run.out/export/`` at their end (the final weights; for
finetuning the selected ``best.pt``). ``mofo export WEIGHTS OUT`` (:func:`export`) exports a
``model.pt`` / ``best.pt``, a DeepSpeed checkpoint folder of a run (``checkpoints/step…`` or
``checkpoints``, its latest; ZeRO shards gathered in fp32), or another export.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mofo.shared.errors import MofoError
from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.models import MAEConfig, VideoMAE

FORMAT = "mofo.model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXPORT_DIR = "export"  # under run.out
Kind = Literal["pretraining", "classifier"]


class ExportError(MofoError):
    """Weights that cannot be read or rebuilt: not a model of ours, a broken folder."""


@dataclass
class SavedModel:
    """A model's weights, in this project's names, with the config that shapes it."""

    kind: Kind
    config: MAEConfig | ClassifierConfig
    state_dict: dict[str, torch.Tensor]
    about: dict[str, Any] = field(default_factory=dict)  # step, held-out figures, source, ...

    def build(self) -> VideoMAE | VideoClassifier:
        """The model with these weights (every tensor placed, none left over)."""
        model = (
            VideoMAE(self.config) if self.kind == "pretraining" else VideoClassifier(self.config)
        )
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def box_params(run_config: dict[str, Any] | None) -> str | None:
    """The hash of the motion-box settings a run read its boxes with (None: no boxes)."""
    data = (run_config or {}).get("data") or {}
    if not data or data.get("boxes") == "none":
        return None
    if data.get("params"):
        return str(data["params"])
    from mofo.shared.params import MotionParams

    try:
        return MotionParams.from_dict(data.get("motion") or {}).hash()
    except (TypeError, ValueError):
        return None


def describe(saved: SavedModel) -> dict[str, Any]:
    """``config.json``: what the model is and how to feed it."""
    from importlib.metadata import PackageNotFoundError, version

    from mofo.shared.params import ALGORITHM_VERSION
    from mofo.training.classifier import CONFIG_VERSION
    from mofo.training.datasets import MEAN, STD

    cfg = saved.config
    encoder = cfg if isinstance(cfg, MAEConfig) else cfg.encoder
    g = encoder.grid
    try:
        package = version("mofo")
    except PackageNotFoundError:  # a checkout that is not installed
        package = "unknown"
    about = dict(saved.about)
    run_config = about.pop("config", None)
    out: dict[str, Any] = {
        "format": FORMAT,
        "kind": saved.kind,
        "architecture": _class_name(saved.kind),
        "encoder": encoder.name,
        "head": "pixel_decoder" if saved.kind == "pretraining" else cfg.head,
    }
    if saved.kind == "pretraining":
        out["model_config"] = cfg.to_dict()
    else:
        out["classes"] = dict(cfg.classes)
        out["classifier_config"] = cfg.to_dict()
    out["input"] = {
        "video": ["batch", encoder.channels, g.frames, g.height, g.width],
        "mean": list(MEAN),
        "std": list(STD),
        "tokens": g.tokens,
    }
    if saved.kind == "classifier":
        out["input"]["boxes"] = "(batch, 4) or (batch, frames, 4): x1, y1, x2, y2 in input pixels"
    out["versions"] = {
        "mofo": package,
        "classifier_config": CONFIG_VERSION if saved.kind == "classifier" else None,
        "motion_algorithm": ALGORITHM_VERSION,
    }
    out["boxes"] = {"params": box_params(run_config)}
    out["parameters"] = sum(v.numel() for v in saved.state_dict.values())
    out["trained"] = about
    return out


def _class_name(kind: Kind) -> str:
    return "VideoMAE" if kind == "pretraining" else "VideoClassifier"


def write_export(folder: Path, saved: SavedModel) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``; the folder."""
    from safetensors.torch import save_file

    from mofo.shared.files import write_bytes_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = describe(saved)
    tensors = {k: v.detach().cpu().contiguous() for k, v in saved.state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "mofo": FORMAT})
    text = json.dumps(description, indent=1, default=str) + "\n"
    write_bytes_atomic(folder / CONFIG_FILE, text.encode())
    return folder


def read_export(folder: Path) -> SavedModel:
    """The model of an export folder, as :func:`write_export` wrote it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        description = json.loads((folder / CONFIG_FILE).read_text())
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ExportError(
            f"{folder}: not an exported model ({type(exc).__name__}: {exc})"
        ) from None
    if description.get("format") != FORMAT:
        raise ExportError(
            f"{folder}/{CONFIG_FILE}: format {description.get('format')!r}, "
            f"this code reads {FORMAT!r}"
        )
    kind = description["kind"]
    if kind == "pretraining":
        cfg: MAEConfig | ClassifierConfig = MAEConfig.from_dict(description["model_config"])
    else:
        cfg = ClassifierConfig.from_dict(description["classifier_config"])
    return SavedModel(kind, cfg, tensors, description.get("trained", {}))


def load_model(folder: Path) -> VideoMAE | VideoClassifier:
    """The model an export folder holds, rebuilt from the folder alone, in eval mode."""
    return read_export(folder).build()


def read_run_file(path: Path) -> SavedModel:
    """A ``model.pt`` of pretraining, or a ``best.pt`` / ``model.pt`` of finetuning."""
    try:
        saved = torch.load(Path(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ExportError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    model = from_run_dict(saved, path)
    if model is None:
        raise ExportError(f"{path}: holds no model of mofo pretrain or finetune")
    return model


def from_run_dict(saved: Any, path: Path) -> SavedModel | None:
    """The model of a loaded ``model.pt`` / ``best.pt`` (None: not one of ours)."""
    if not isinstance(saved, dict) or "state_dict" not in saved:
        return None
    about = {"source": str(path), "step": saved.get("step"), "config": saved.get("config")}
    if "classifier_config" in saved:
        about["held_out"] = saved.get("held_out")
        cfg = ClassifierConfig.from_dict(saved["classifier_config"])
        return SavedModel("classifier", cfg, saved["state_dict"], about)
    if "model_config" in saved:
        cfg = MAEConfig.from_dict(saved["model_config"])
        return SavedModel("pretraining", cfg, saved["state_dict"], about)
    return None


def read_checkpoint(path: Path) -> SavedModel:
    """A run's DeepSpeed checkpoint: a ``step…`` folder, or the ``checkpoints`` folder (its
    ``latest``). ZeRO stages 1-3 keep fp32 weights in their optimiser shards: those are
    gathered; stage 0, the module's own weights are taken."""
    path = Path(path)
    if (path / "latest").is_file():
        root, tag = path, (path / "latest").read_text().strip()
    else:
        root, tag = path.parent, path.name
    states_file = root / tag / "mp_rank_00_model_states.pt"
    if not states_file.is_file():
        raise ExportError(f"{path}: not a DeepSpeed checkpoint ({states_file} is missing)")
    states = torch.load(states_file, map_location="cpu", weights_only=False)
    run_config = states.get("config") or {}
    zero_stage = int((run_config.get("run") or {}).get("zero_stage", 0))
    if zero_stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = dict(get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag))
    else:
        weights = {k: v.float() for k, v in states["module"].items()}
    about = {"source": str(root / tag), "step": states.get("step"), "config": run_config}
    if "classifier_config" in states:
        about["held_out"] = (states.get("best") or {}) or None
        cfg = ClassifierConfig.from_dict(states["classifier_config"])
        return SavedModel("classifier", cfg, weights, about)
    if "model_config" in states:
        return SavedModel(
            "pretraining", MAEConfig.from_dict(states["model_config"]), weights, about
        )
    raise ExportError(f"{path}: the checkpoint carries no model config")


def read_saved(path: Path) -> SavedModel:
    """Any weights of this project: an export folder, a DeepSpeed checkpoint folder, or a
    ``model.pt`` / ``best.pt``."""
    path = Path(path)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return read_export(path)
        return read_checkpoint(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file or folder")
    return read_run_file(path)


def export(source: Path, folder: Path) -> Path:
    """Export the weights at ``source`` (see :func:`read_saved`) into ``folder``."""
    return write_export(folder, read_saved(source))
