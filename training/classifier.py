"""The finetuning model (the paper's §2.3): the pretrained encoder over every token of the clip,
then a head: the motion cross-attention head (MCA) fed with which tokens overlap the motion box,
or VideoMAE's mean pooling.

``VideoClassifier(cfg)(video, boxes, valid)`` → ``{task: logits}``: one classifier per task
(``{"action": 174}`` for Something-Something V2; ``{"verb": 97, "noun": 300}`` and more for
Epic-Kitchens-100). The boxes are those the datasets give (pixels of the model's input, per
frame or per clip); tokens overlap a box by the same rule as MOFO masking (``box_cells``).

Heads (``training/heads.py``): ``mca`` (the cross-attention block, the released code's reading),
``mca_literal`` (eqs. 3–6 with no residual) and ``mean``. A checkpoint's classifier config
carries ``version``: configs without it were written when ``mca`` named the literal head, and
are read as ``mca_literal``, so older finetuned weights keep loading as what they were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from mofo.training.heads import (
    MeanPoolHead,
    MotionCrossAttentionHead,
    MotionCrossAttentionLiteralHead,
)
from mofo.training.masking import box_cells
from mofo.training.models import MAEConfig, VideoEncoder

SSV2_CLASSES = {"action": 174}
EPIC_CLASSES = {"verb": 97, "noun": 300}
HEADS = ("mca", "mca_literal", "mean")
# 2: "mca" is the cross-attention block; 1 (configs without a version): "mca" was the literal head.
CONFIG_VERSION = 2


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that shapes the finetuning model; saved in its checkpoints."""

    encoder: MAEConfig
    classes: dict[str, int] = field(default_factory=lambda: dict(SSV2_CLASSES))
    head: Literal["mca", "mca_literal", "mean"] = "mca"
    mca_heads: int = 3
    mca_depth: int = 1
    mca_mlp_ratio: float = 4.0  # the block's MLP (mca only)
    dropout: float = 0.0
    min_overlap: float = 0.5
    init_scale: float = 0.001  # the classifiers' initial weights x this (VideoMAE's)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        """A saved config; one without ``version`` is of the first format, whose ``mca`` head
        is today's ``mca_literal``."""
        data = dict(data)
        version = data.setdefault("version", 1)
        if version > CONFIG_VERSION:
            raise ValueError(
                f"classifier config version {version} is newer than this code reads "
                f"({CONFIG_VERSION}); update mofo"
            )
        if version == 1 and data.get("head") == "mca":
            data["head"] = "mca_literal"
        data["version"] = CONFIG_VERSION
        data["encoder"] = MAEConfig.from_dict(data["encoder"])
        return cls(**data)


class VideoClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        if not cfg.classes or min(cfg.classes.values()) < 2:
            raise ValueError(f"classes must name tasks with 2 or more classes, got {cfg.classes}")
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg.encoder)
        width = cfg.encoder.width
        common = {"dropout": cfg.dropout, "init_scale": cfg.init_scale}
        self.head: nn.Module
        if cfg.head == "mca":
            self.head = MotionCrossAttentionHead(
                width,
                cfg.classes,
                cfg.mca_heads,
                cfg.mca_depth,
                mlp_ratio=cfg.mca_mlp_ratio,
                **common,
            )
        elif cfg.head == "mca_literal":
            self.head = MotionCrossAttentionLiteralHead(
                width, cfg.classes, cfg.mca_heads, cfg.mca_depth, **common
            )
        elif cfg.head == "mean":
            self.head = MeanPoolHead(width, cfg.classes, **common)
        else:
            raise ValueError(f"head must be one of {', '.join(HEADS)}; got {cfg.head!r}")

    def inside(self, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Which tokens overlap the motion box: (B, N) bool."""
        return box_cells(boxes, valid, self.cfg.encoder.grid, self.cfg.min_overlap).flatten(1)

    def forward(
        self, video: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        tokens = self.encoder.forward_features(video)  # (B, N, D)
        return self.head(tokens, self.inside(boxes, valid))


def layer_id(name: str, depth: int) -> int:
    """Where a parameter sits for layer-wise lr decay: the embedding 0, block i at i + 1, the
    encoder's final norm and the head at ``depth + 1`` (BEiT / VideoMAE's rule)."""
    if name.startswith("encoder.patch_embed"):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups(
    model: VideoClassifier, weight_decay: float, layer_decay: float = 0.75
) -> list[dict]:
    """AdamW groups for finetuning: each layer's lr scaled by ``layer_decay`` per layer below the
    head (``lr_scale``), no weight decay on biases and norms."""
    depth = model.cfg.encoder.depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        decays = p.ndim > 1
        group = groups.setdefault(
            (layer, decays),
            {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - layer),
            },
        )
        group["params"].append(p)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]
