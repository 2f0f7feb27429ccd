"""Weights from elsewhere: what finetuning starts from (``model.pretrained``) and what evaluation
scores (``evaluate.weights``), told apart by what the path holds.

- This project's weights: a pretraining ``model.pt``, a finetuning ``best.pt`` / ``model.pt``,
  an export folder (``model.safetensors`` + ``config.json``) or a run's DeepSpeed checkpoint
  folder (:mod:`mofo.training.export`).
- A VideoMAE checkpoint in its released layout, pretraining or finetuned
  (:mod:`mofo.training.videomae_format`): its keys say which.

Finetuning takes the encoder (and, from a VideoMAE mean-pooling classifier, its ``fc_norm`` as
the head's norm over the pooled tokens); every encoder weight must be placed. Evaluation takes a
whole classifier: one of ours, or a VideoMAE finetuned classifier (mean pooling), rebuilt as the
``mean`` head over an encoder without the token norm, which computes what VideoMAE's does.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from mofo.training.classifier import ClassifierConfig, VideoClassifier
from mofo.training.config import ConfigError
from mofo.training.export import ExportError, SavedModel, from_run_dict, read_saved
from mofo.training.models import MAEConfig
from mofo.training.videomae_format import (
    VideoMAEFormatError,
    VideoMAEWeights,
    from_videomae,
    is_videomae,
    unwrap,
)


class WeightsError(ConfigError, ValueError):
    """Weights that are none of the known kinds, or do not fit the model they are loaded into
    (a setting that names the wrong file: the run stops as for a bad config)."""


@dataclass
class EncoderInit:
    """An encoder's weights (:class:`~mofo.training.models.VideoEncoder`'s names) and where
    they came from."""

    path: str
    source: Literal["mofo", "videomae"]
    layout: str  # mofo: pretraining | classifier; videomae: pretraining | finetuned
    encoder: dict[str, torch.Tensor]
    config: MAEConfig | None  # ours say what they are; VideoMAE's files do not
    videomae: VideoMAEWeights | None = None
    head_norm: dict[str, torch.Tensor] = field(default_factory=dict)  # VideoMAE's fc_norm
    unplaced: list[str] = field(default_factory=list)  # the file's keys nothing here takes
    dropped: list[str] = field(default_factory=list)  # placed, but not used: decoder, classifier

    @property
    def token_norm(self) -> bool:
        """Whether the encoder normalises its tokens (not so VideoMAE's mean-pooling models)."""
        return "norm.weight" in self.encoder

    def summary(self) -> dict[str, Any]:
        """What the run log says of it."""
        return {
            "path": self.path,
            "source": self.source,
            "layout": self.layout,
            "tensors": len(self.encoder) + len(self.head_norm),
            "unplaced": self.unplaced,
            "dropped": len(self.dropped),
        }


def read_any(path: Path) -> SavedModel | VideoMAEWeights:
    """The weights at ``path``: one of this project's models, or a VideoMAE checkpoint."""
    path = Path(path)
    if path.is_dir():
        try:
            return read_saved(path)
        except ExportError as exc:
            raise WeightsError(str(exc)) from None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    ours = from_run_dict(saved, path)
    if ours is not None:
        return ours
    try:
        weights = unwrap(saved)
    except VideoMAEFormatError:
        weights = {}
    if not is_videomae(weights):
        raise WeightsError(
            f"{path}: neither a model of mofo pretrain/finetune nor a VideoMAE checkpoint"
        )
    return from_videomae(weights)


def read_encoder(path: Path) -> EncoderInit:
    """The encoder weights at ``path`` (see the module notes)."""
    found = read_any(path)
    if isinstance(found, VideoMAEWeights):
        head_norm = {
            k[len("head.norm.") :]: v
            for k, v in found.state_dict.items()
            if k.startswith("head.norm.")
        }
        # Not used by finetuning: the decoder (pretraining) or the classifier (finetuned).
        dropped = sorted(
            k for k in found.state_dict if not k.startswith(("encoder.", "head.norm."))
        )
        return EncoderInit(
            str(path),
            "videomae",
            found.layout,
            found.encoder(),
            None,
            found,
            head_norm,
            list(found.unplaced),
            dropped,
        )
    encoder = found.config if isinstance(found.config, MAEConfig) else found.config.encoder
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in found.state_dict.items() if k.startswith(prefix)}
    if not weights:
        raise WeightsError(f"{path}: holds no encoder weights (encoder.*)")
    dropped = sorted(k for k in found.state_dict if not k.startswith(prefix))
    return EncoderInit(str(path), "mofo", found.kind, weights, encoder, dropped=dropped)


def check_fits(init: EncoderInit, cfg: MAEConfig) -> None:
    """Refuse an encoder of another architecture than ``cfg``'s (drop path aside)."""
    if init.videomae is not None:
        try:
            init.videomae.check_fits(cfg, init.path)
        except VideoMAEFormatError as exc:
            raise WeightsError(str(exc)) from None
        return
    theirs = init.config
    if (theirs.grid, theirs.width, theirs.depth, theirs.heads) != (
        cfg.grid,
        cfg.width,
        cfg.depth,
        cfg.heads,
    ):
        raise WeightsError(
            f"{init.path}: pretrained {theirs.name} ({theirs.width} wide, {theirs.depth} deep, "
            f"{theirs.grid}) does not fit this encoder ({cfg.name})"
        )


def load_encoder(model: VideoClassifier, init: EncoderInit) -> list[str]:
    """Put ``init``'s encoder into ``model`` (and VideoMAE's ``fc_norm`` into its head's norm);
    the encoder weights the source did not have (names). Weights the encoder has no place for
    are an error, as is another architecture."""
    check_fits(init, model.cfg.encoder)
    result = model.encoder.load_state_dict(init.encoder, strict=False)
    if result.unexpected_keys:
        raise WeightsError(f"{init.path}: unexpected encoder weights {result.unexpected_keys[:5]}")
    if init.head_norm:
        model.head.norm.load_state_dict(init.head_norm)
    return list(result.missing_keys)


def load_pretrained(model: VideoClassifier, path: Path) -> list[str]:
    """The encoder's weights from ``path`` (any of the module notes' kinds) into ``model``; the
    encoder weights the source did not have (names)."""
    return load_encoder(model, read_encoder(Path(path)))


def videomae_classifier(
    weights: VideoMAEWeights, encoder: MAEConfig, classes: dict[str, int], where: str
) -> VideoClassifier:
    """A VideoMAE finetuned classifier (mean pooling) as ours: the ``mean`` head, the encoder
    without its token norm, the file's classifier as the one task of ``classes``."""
    if weights.layout != "finetuned" or weights.classes is None:
        raise WeightsError(
            f"{where}: a VideoMAE pretraining checkpoint has no classifier to score; finetune "
            "from it (model.pretrained) first"
        )
    if weights.token_norm or "head.norm.weight" not in weights.state_dict:
        raise WeightsError(
            f"{where}: this VideoMAE classifier reads its first token (no mean pooling, no "
            "fc_norm), which no head here does; finetune from it instead"
        )
    if len(classes) != 1 or next(iter(classes.values())) != weights.classes:
        raise WeightsError(
            f"{where}: its classifier has {weights.classes} classes; the split has {classes}"
        )
    task = next(iter(classes))
    encoder = replace(encoder, token_norm=False)
    try:
        weights.check_fits(encoder, where)
    except VideoMAEFormatError as exc:
        raise WeightsError(str(exc)) from None
    cfg = ClassifierConfig(encoder=encoder, classes=dict(classes), head="mean")
    state = {
        k.replace("classifier.", f"head.classifiers.{task}.", 1): v
        for k, v in weights.state_dict.items()
    }
    model = VideoClassifier(cfg)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{where}: does not fill the classifier: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model
