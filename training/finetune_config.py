"""The config of ``mofo finetune`` and ``mofo evaluate`` (one file serves both): its sections as
typed dataclasses, loaded from TOML with ``section.key=value`` overrides and checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mofo.training.config import ConfigError, load_run_config
from mofo.training.data import DataSection
from mofo.training.models import config


@dataclass(frozen=True)
class FinetuneModelSection:
    name: str = "vit_base_patch16_tubelet2"
    # "mca": the cross-attention block (the released code's reading); "mca_literal": eqs. 3-6
    # with no residual (ablation); "mean": VideoMAE's mean pooling.
    head: Literal["mca", "mca_literal", "mean"] = "mca"
    mca_heads: int = 3
    mca_depth: int = 1
    mca_mlp_ratio: float = 4.0
    init_scale: float = 0.001  # the classifiers' initial weights x this (VideoMAE's init_scale)
    drop_path: float = 0.1
    dropout: float = 0.0
    min_overlap: float = 0.5
    # A pretraining run's model.pt (or export folder, or checkpoint folder), or a VideoMAE
    # checkpoint (its released layout, detected by its keys); empty: from scratch.
    pretrained: str = ""


@dataclass(frozen=True)
class FinetuneDataSection(DataSection):
    holdout: float = 0.1  # share of the training split kept aside for model selection
    # Left-right flips (data.flip): off by default for SSV2 (and the synthetic set), whose
    # classes name directions ("... from left to right"), on for Epic-Kitchens and folders.
    # Sampling (data.sampling): segment (TSN) by default for SSV2 and Epic, dense for folders.
    crop: Literal["resized", "multi_scale"] = "resized"  # training crops


@dataclass(frozen=True)
class AugmentSection:
    randaugment: bool = True
    ops: int = 4
    magnitude: float = 7.0
    magnitude_std: float = 0.5
    prob: float = 0.5  # each RandAugment operation applied with this probability (timm's)
    erasing: float = 0.25  # random erasing's probability per frame (VideoMAE's reprob); 0: off
    mixup: float = 0.8  # Beta(α, α); 0: off
    cutmix: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1


@dataclass(frozen=True)
class FinetuneOptimSection:
    batch_size: int = 16
    grad_accum: int = 1
    base_lr: float = 5e-4  # scaled by the global batch / 256 (VideoMAE's ViT-B SSV2 script)
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    epochs: int = 40
    max_steps: int | None = None
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None


@dataclass(frozen=True)
class FinetuneRunSection:
    out: str = "runs/finetune"
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    zero_stage: int = 1
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: str = ""  # TensorBoard's folder; empty: run.out/tensorboard; "none": off
    export: bool = True  # best.pt as run.out/export/ (model.safetensors + config.json)


@dataclass(frozen=True)
class EvaluateSection:
    """``mofo evaluate`` (training/evaluate.py): the evaluation split and its views."""

    source: str = ""  # the evaluation split (label file or CSV); never used for selection
    # A classifier: empty: run.out/best.pt; or a .pt, an export folder, a VideoMAE finetuned
    # checkpoint (mean pooling; detected by its keys).
    weights: str = ""
    out: str = ""  # empty: run.out/eval
    clips: int = 2  # temporal views (SSV2: 2)
    crops: int = 3  # spatial views (SSV2: 3)
    batch_size: int = 4  # clips per batch, each with clips x crops views
    saliency: int = 4  # clips whose Grad-CAM maps are drawn (the first of the split) ...
    saliency_clips: tuple[str, ...] = ()  # ... or these clip ids
    saliency_layer: int = 5  # encoder block, from 1 (the paper: the fifth of ViT-B's 12)


@dataclass(frozen=True)
class FinetuneConfig:
    model: FinetuneModelSection = field(default_factory=FinetuneModelSection)
    data: FinetuneDataSection = field(default_factory=FinetuneDataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: FinetuneOptimSection = field(default_factory=FinetuneOptimSection)
    run: FinetuneRunSection = field(default_factory=FinetuneRunSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    deepspeed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "model": FinetuneModelSection,
    "data": FinetuneDataSection,
    "augment": AugmentSection,
    "optim": FinetuneOptimSection,
    "run": FinetuneRunSection,
    "evaluate": EvaluateSection,
}


def load_config(path: Path | None, overrides: list[str] = ()) -> FinetuneConfig:
    where = str(path) if path else "config"
    cfg = load_run_config(FinetuneConfig, _SECTIONS, path, list(overrides))
    checks = [
        (bool(cfg.data.source), "[data] source is required (a label file or CSV)"),
        (0.0 < cfg.data.holdout < 1.0, "[data] holdout must be in (0, 1)"),
        (cfg.run.zero_stage in (0, 1, 2), "[run] zero_stage must be 0, 1 or 2 for finetuning"),
        (cfg.optim.epochs >= 1 and cfg.optim.batch_size >= 1, "[optim] epochs, batch >= 1"),
        (0.0 < cfg.optim.layer_decay <= 1.0, "[optim] layer_decay must be in (0, 1]"),
        (0.0 <= cfg.augment.smoothing < 1.0, "[augment] smoothing must be in [0, 1)"),
        (0.0 <= cfg.augment.erasing <= 1.0, "[augment] erasing must be in [0, 1]"),
        (0.0 <= cfg.augment.prob <= 1.0, "[augment] prob must be in [0, 1]"),
        (cfg.model.mca_heads >= 1 and cfg.model.mca_depth >= 1, "[model] mca_heads, depth >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")
    try:
        config(cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"{where}: [model] {e}") from None
    return cfg


def check_inputs(cfg: FinetuneConfig) -> None:
    """What must exist before any process starts: the source and the pretrained weights."""
    if not Path(cfg.data.source).exists():
        raise ConfigError(f"[data] source {cfg.data.source}: no such file or folder")
    if cfg.model.pretrained and not Path(cfg.model.pretrained).exists():
        raise ConfigError(f"[model] pretrained {cfg.model.pretrained}: no such file or folder")
