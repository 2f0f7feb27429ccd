"""Weights in the layout of VideoMAE's released checkpoints (MCG-NJU/VideoMAE), renamed into
this project's models.

Two layouts, told apart by their keys:

- ``pretraining`` (VideoMAE's ``PretrainVisionTransformer``): ``encoder.patch_embed.proj.*``,
  ``encoder.blocks.{i}.*``, ``encoder.norm.*``, then ``encoder_to_decoder.weight``,
  ``mask_token``, ``decoder.blocks.{i}.*``, ``decoder.norm.*``, ``decoder.head.*`` and, in some
  files, the fixed sinusoidal ``pos_embed``.
- ``finetuned`` (VideoMAE's ``VisionTransformer``): the encoder's names without ``encoder.``,
  then ``fc_norm.*`` (mean pooling, whose encoder has no norm over the tokens) or ``norm.*``,
  and the classifier ``head.*``.

The weights sit under ``model`` (or ``module``) of a ``torch.save`` dict, or are the dict
itself; a ``module.`` prefix on every key (a DDP wrapper's) is dropped.

Renamed: ``patch_embed.proj`` → ``patch_embed`` (the Conv3d itself), ``encoder_to_decoder`` →
``to_decoder``, ``decoder.blocks`` → ``decoder_blocks``, ``decoder.norm`` → ``decoder_norm``,
``decoder.head`` → ``head``, ``fc_norm`` → the classifier head's ``head.norm`` (the norm over
the pooled tokens), a finetuned ``head`` → ``classifier``. VideoMAE's attention has a bias-free
``qkv`` and separate ``q_bias`` and ``v_bias``, the key's bias fixed at zero; ours has one
``qkv.bias``, which becomes ``cat(q_bias, 0, v_bias)``. A key bias adds the same number to every
logit of a query, which the softmax ignores: zero is exact, and it receives no gradient.
Positions are fixed sinusoids on both sides (the same table); a ``pos_embed`` that is not that
table (learnt positions) cannot be placed. Nothing is guessed: every key of the file is placed
or named in ``unplaced``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mofo.training.models import MAEConfig, sinusoid_positions

# A transformer block's parameters, the same on both sides (q_bias/v_bias aside).
BLOCK_PARAMETERS = frozenset(
    f"{layer}.{kind}"
    for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    for kind in ("weight", "bias")
)
# Prefixes of the pretraining layout (and of the finetuned one once its encoder keys carry
# ``encoder.``) and where they go; the first that matches wins.
RENAMES = (
    ("encoder.patch_embed.proj.", "encoder.patch_embed."),
    ("encoder.norm.", "encoder.norm."),
    ("encoder_to_decoder.", "to_decoder."),
    ("decoder.norm.", "decoder_norm."),
    ("decoder.head.", "head."),
    ("fc_norm.", "head.norm."),
    ("head.", "classifier."),
)
_BLOCK = re.compile(r"^(encoder\.blocks|decoder\.blocks)\.(\d+)\.(.+)$")
_BLOCKS = {"encoder.blocks": "encoder.blocks", "decoder.blocks": "decoder_blocks"}
_ENCODER_PARTS = ("patch_embed.", "blocks.", "norm.", "pos_embed")


class VideoMAEFormatError(ValueError):
    """A file that is not a VideoMAE checkpoint, or one that does not fit the model."""


@dataclass
class VideoMAEWeights:
    """A VideoMAE checkpoint in this project's names.

    ``state_dict``: for ``pretraining``, :class:`~mofo.training.models.VideoMAE`'s names
    (``encoder.*``, ``to_decoder.weight``, ``mask_token``, ``decoder_blocks.*``,
    ``decoder_norm.*``, ``head.*``); for ``finetuned``, ``encoder.*``, ``head.norm.*`` (from
    ``fc_norm``) and ``classifier.weight``/``.bias`` (the file's classifier, for one task).
    """

    layout: Literal["pretraining", "finetuned"]
    state_dict: dict[str, torch.Tensor]
    unplaced: list[str] = field(default_factory=list)  # the file's keys nothing here takes

    def encoder(self) -> dict[str, torch.Tensor]:
        """The encoder's weights, in :class:`~mofo.training.models.VideoEncoder`'s names."""
        return {
            k[len("encoder.") :]: v for k, v in self.state_dict.items() if k.startswith("encoder.")
        }

    @property
    def token_norm(self) -> bool:
        """Whether the encoder normalises its output tokens (False: VideoMAE's mean-pooling
        classifier, whose ``fc_norm`` normalises the pooled features instead)."""
        return "encoder.norm.weight" in self.state_dict

    @property
    def classes(self) -> int | None:
        """The finetuned classifier's class count (None: no classifier)."""
        weight = self.state_dict.get("classifier.weight")
        return None if weight is None else int(weight.shape[0])

    def shape(self) -> dict[str, int]:
        """What the file says of the encoder's architecture (the head count is not in it)."""
        patch = self.state_dict["encoder.patch_embed.weight"]  # (D, C, tubelet, patch, patch)
        matches = (_BLOCK.match(k) for k in self.state_dict)
        blocks = {m.group(2) for m in matches if m and m.group(1) == "encoder.blocks"}
        fc1 = self.state_dict.get("encoder.blocks.0.mlp.fc1.weight")
        return {
            "width": int(patch.shape[0]),
            "channels": int(patch.shape[1]),
            "tubelet": int(patch.shape[2]),
            "patch": int(patch.shape[3]),
            "depth": len(blocks),
            "mlp": int(fc1.shape[0]) if fc1 is not None else 0,
        }

    def check_fits(self, cfg: MAEConfig, where: str) -> None:
        """Refuse, in words, an encoder of another shape than ``cfg``'s."""
        theirs = self.shape()
        ours = {
            "width": cfg.width,
            "channels": cfg.channels,
            "tubelet": cfg.grid.tubelet,
            "patch": cfg.grid.patch,
            "depth": cfg.depth,
            "mlp": int(cfg.width * cfg.mlp_ratio),
        }
        if theirs != ours:
            differ = ", ".join(
                f"{k} {theirs[k]} (model: {ours[k]})" for k in ours if theirs[k] != ours[k]
            )
            raise VideoMAEFormatError(
                f"{where}: the VideoMAE encoder does not fit model {cfg.name}: {differ}"
            )


def unwrap(saved: Any) -> dict[str, torch.Tensor]:
    """The weights of a loaded checkpoint: under ``model`` or ``module`` (VideoMAE's keys for
    them), or the dict itself; a ``module.`` prefix on every key removed."""
    if isinstance(saved, dict):
        for key in ("model", "module"):
            if isinstance(saved.get(key), dict):
                saved = saved[key]
                break
    if not isinstance(saved, dict):
        raise VideoMAEFormatError(f"holds {type(saved).__name__}, not a dict of weights")
    weights = {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module.") :]: v for k, v in weights.items()}
    return weights


def is_videomae(weights: dict[str, Any]) -> bool:
    """Whether these keys are VideoMAE's (its patch embedding's ``proj`` names it)."""
    return "encoder.patch_embed.proj.weight" in weights or "patch_embed.proj.weight" in weights


def layout_of(weights: dict[str, Any]) -> Literal["pretraining", "finetuned"]:
    if "encoder.patch_embed.proj.weight" in weights:
        return "pretraining"
    if "patch_embed.proj.weight" in weights:
        return "finetuned"
    raise VideoMAEFormatError("no VideoMAE patch embedding (patch_embed.proj.weight)")


def from_videomae(weights: dict[str, torch.Tensor]) -> VideoMAEWeights:
    """A VideoMAE state dict (either layout) in this project's names, and what has no place."""
    layout = layout_of(weights)
    if layout == "finetuned":  # the encoder's keys as in the pretraining layout
        weights = {
            (f"encoder.{k}" if k.startswith(_ENCODER_PARTS) else k): v for k, v in weights.items()
        }
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    qv_bias: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        block = _BLOCK.match(key)
        if block:
            side, index, name = block.groups()
            ours = f"{_BLOCKS[side]}.{index}"
            if name in ("attn.q_bias", "attn.v_bias"):
                qv_bias.setdefault(f"{ours}.attn.qkv.bias", {})[name[len("attn.")]] = value
            elif name in BLOCK_PARAMETERS:
                out[f"{ours}.{name}"] = value
            else:  # e.g. layer scale (gamma_1, gamma_2): no such parameter here
                unplaced.append(_original(key, layout))
        elif key == "mask_token":
            out[key] = value
        elif key in ("pos_embed", "encoder.pos_embed"):
            if not _fixed_positions(value):
                unplaced.append(_original(key, layout))
        else:
            target = next(
                (new + key[len(old) :] for old, new in RENAMES if key.startswith(old)), None
            )
            if target is None:
                unplaced.append(_original(key, layout))
            else:
                out[target] = value
    for target, parts in qv_bias.items():
        if set(parts) != {"q", "v"}:
            unplaced += [_original(target.replace("qkv.bias", f"{p}_bias"), layout) for p in parts]
            continue
        q, v = parts["q"], parts["v"]
        out[target] = torch.cat([q, torch.zeros_like(q), v])  # (3 D,): the key's bias is 0
    return VideoMAEWeights(layout, out, sorted(unplaced))


def read_videomae(path: Path) -> VideoMAEWeights:
    """A VideoMAE checkpoint file in this project's names."""
    try:
        saved = torch.load(Path(path), map_location="cpu", weights_only=False)
        weights = unwrap(saved)
        return from_videomae(weights)
    except VideoMAEFormatError as exc:
        raise VideoMAEFormatError(f"{path}: {exc}") from None


def _original(key: str, layout: str) -> str:
    """A key as the file names it (the finetuned layout has no ``encoder.``)."""
    if layout == "finetuned" and key.startswith("encoder."):
        return key[len("encoder.") :]
    return key


def _fixed_positions(table: torch.Tensor) -> bool:
    """Whether a ``pos_embed`` (1, N, D) is the fixed sinusoid table this project computes."""
    if table.ndim != 3 or table.shape[0] != 1:
        return False
    expected = sinusoid_positions(table.shape[1], table.shape[2])
    return bool(torch.allclose(table[0].float(), expected, atol=1e-5))
